"""What a rendered file set must say about a spec, read back the way the tools read it: one
entry per line, exactly the fields expected, nothing the spec did not ask for.

Shared by the property tests (arbitrary strings through the loaders) and the real-tool check.
"""
from __future__ import annotations

import functools
import re

from agent import render
from agent.spec import Spec, load

TLS = ("-----BEGIN CERTIFICATE-----\nplaceholder\n-----END CERTIFICATE-----\n",
       "-----BEGIN PRIVATE KEY-----\nplaceholder\n-----END PRIVATE KEY-----\n")
_PARAM = re.compile(r"([a-z0-9_-]+) =(?: (.*))?")


def entries(text: str) -> list[str]:
    """The lines a map or table reader sees: no blank lines, no comments."""
    return [line for line in text.split("\n") if line and not line.startswith("#")]


def main_cf(text: str) -> dict[str, str]:
    """{parameter: value} as postconf reads main.cf (indented lines continue the value); a
    line of any other shape fails the test."""
    params: dict[str, str] = {}
    last = None
    for line in text.split("\n"):
        if not line.strip() or line.startswith("#"):
            continue
        if line[0] in " \t" and last:
            params[last] += " " + line.strip()
            continue
        m = _PARAM.fullmatch(line)
        assert m, f"main.cf line is not 'name = value': {line!r}"
        assert m.group(1) not in params, f"main.cf sets {m.group(1)} twice"
        last = m.group(1)
        params[last] = m.group(2) or ""
    return {name: value.strip() for name, value in params.items()}


@functools.lru_cache(maxsize=2)
def reference_parameters(with_dnsbl: bool) -> frozenset:
    """The parameters main.cf sets for the example spec: any spec sets exactly these."""
    from agent import example
    data = example.example(dkim_pem=TLS[1])
    if not with_dnsbl:
        data["postscreen"]["dnsbl_sites"] = []
    return frozenset(main_cf(render.render(load(data), TLS)["/etc/postfix/main.cf"].decode()))


@functools.lru_cache(maxsize=1)
def reference_dovecot_lines() -> int:
    from agent import example
    data = example.example(dkim_pem=TLS[1])
    return len(render.render(load(data), TLS)["/etc/dovecot/dovecot.conf"].decode().split("\n"))


def expected_sender_login(spec: Spec) -> list[list[str]]:
    users = [u.address for u in spec.users]
    lines = [[u, u] for u in users]
    for alias, targets in spec.aliases:
        owners = [t for t in targets if t in users]
        if owners:
            lines.append([alias, ", ".join(owners)])
    return lines


def check(spec: Spec, files: dict[str, bytes]) -> None:
    """Every file that carries a value of the spec says exactly that value, once."""
    text = {path: content.decode() for path, content in files.items()}
    users = spec.users
    # Dovecot's passwd-file: 7 fields separated by ':', then the extra fields (one here).
    lines = entries(text["/etc/dovecot/users"])
    assert len(lines) == len(users), lines
    for line, u in zip(lines, users):
        assert line.split(":", 7) == [u.address, u.password_hash, "", "", "", "", "",
                                      f"userdb_quota_rule=*:storage={u.quota_mb}M"], line
    assert [line.split(" ") for line in entries(text["/etc/postfix/virtual_mailboxes"])] == [
        [u.address, f"{u.address.rpartition('@')[2]}/{u.local_part}/"] for u in users]
    # Targets in other domains go through the second pass's map (forward_targets).
    forwarded = dict(line.split(" ", 1) for line in entries(text["/etc/postfix/forward_targets"]))
    aliases = [line.split(" ", 1) for line in entries(text["/etc/postfix/virtual_aliases"])]
    expected = [[alias, ", ".join(targets)] for alias, targets in spec.aliases]
    for m in spec.domains:  # a catch-all: every mailbox to itself first (Postfix's rule)
        if m.catch_all:
            expected += [[u.address, u.address] for u in users if u.address.endswith("@" + m.name)]
            expected.append([f"@{m.name}", m.catch_all])
    assert [[a, ", ".join(forwarded.get(t, t) for t in v.split(", "))] for a, v in aliases] == expected
    assert all(t.rpartition("@")[2] not in spec.domain_names for t in forwarded.values())
    for alias, targets in spec.aliases:
        assert all(" " not in t and "," not in t for t in (alias, *targets)), (alias, targets)
    assert [line.split(" ", 1) for line in entries(text["/etc/postfix/sender_login"])] == (
        expected_sender_login(spec))
    # /etc/aliases (local delivery): root's mail goes to addresses only, never a command,
    # a file or an include.
    postmaster = dict(spec.aliases).get(f"postmaster@{spec.domain}", (users[0].address,))
    assert entries(text["/etc/aliases"]) == ["postmaster: root", "root: " + ", ".join(postmaster)]
    assert not any(t.startswith(("|", "/", ":include:")) or '"' in t for t in postmaster)
    # One key per domain, each signing its own domain; forwarded mail: the primary's.
    domains = spec.domains or ()
    records = [(m.name, m.dkim_selector, f"{m.dkim_selector}._domainkey.{m.name}",
                f"/etc/opendkim/keys/{m.name}/{m.dkim_selector}.private") for m in domains]
    assert records[0][:2] == (spec.domain, spec.dkim.selector)
    assert entries(text["/etc/opendkim/KeyTable"]) == [
        f"{record} {name}:{selector}:{path}" for name, selector, record, path in records]
    assert entries(text["/etc/opendkim/SigningTable"]) == [
        *(f"*@{name} {record}" for name, _, record, _ in records), f"* {records[0][2]}"]
    for m, (_, _, _, path) in zip(domains, records):
        assert files[path].decode().strip() == m.private_key_pem.strip()
    assert text["/etc/mailname"] == spec.domain + "\n"
    assert text["/etc/hostname"] == spec.hostname + "\n"
    params = main_cf(text["/etc/postfix/main.cf"])
    assert set(params) == reference_parameters(bool(spec.postscreen.dnsbl_sites))
    assert (params["myhostname"], params["mydomain"], params["virtual_mailbox_domains"]) == (
        spec.hostname, spec.domain, ", ".join(spec.domain_names))
    if spec.postscreen.dnsbl_sites:
        assert params["postscreen_dnsbl_sites"].split(", ") == [
            f"{s.zone}{'=' + s.filter if s.filter else ''}*{s.weight}"
            for s in spec.postscreen.dnsbl_sites]
    dovecot = text["/etc/dovecot/dovecot.conf"].split("\n")
    assert len(dovecot) == reference_dovecot_lines()
    assert [line for line in dovecot if "postmaster_address" in line] == [
        f"  postmaster_address = postmaster@{spec.domain}"]


def dmarc_tags(txt: str) -> list[tuple[str, str]]:
    """The tags of a DMARC record in order, as RFC 7489 reads them ('; ' separated)."""
    return [tuple(part.split("=", 1)) for part in txt.split("; ")]
