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
        [u.address, f"{spec.domain}/{u.local_part}/"] for u in users]
    assert [line.split(" ", 1) for line in entries(text["/etc/postfix/virtual_aliases"])] == [
        [alias, ", ".join(targets)] for alias, targets in spec.aliases]
    for alias, targets in spec.aliases:
        assert all(" " not in t and "," not in t for t in (alias, *targets)), (alias, targets)
    assert [line.split(" ", 1) for line in entries(text["/etc/postfix/sender_login"])] == (
        expected_sender_login(spec))
    # /etc/aliases (local delivery): root's mail goes to addresses only, never a command,
    # a file or an include.
    postmaster = dict(spec.aliases).get(f"postmaster@{spec.domain}", (users[0].address,))
    assert entries(text["/etc/aliases"]) == ["postmaster: root", "root: " + ", ".join(postmaster)]
    assert not any(t.startswith(("|", "/", ":include:")) or '"' in t for t in postmaster)
    record = f"{spec.dkim.selector}._domainkey.{spec.domain}"
    key_path = f"/etc/opendkim/keys/{spec.domain}/{spec.dkim.selector}.private"
    assert entries(text["/etc/opendkim/KeyTable"]) == [
        f"{record} {spec.domain}:{spec.dkim.selector}:{key_path}"]
    assert entries(text["/etc/opendkim/SigningTable"]) == [f"*@{spec.domain} {record}"]
    assert key_path in files, sorted(files)
    assert text["/etc/mailname"] == spec.domain + "\n"
    assert text["/etc/hostname"] == spec.hostname + "\n"
    params = main_cf(text["/etc/postfix/main.cf"])
    assert set(params) == reference_parameters(bool(spec.postscreen.dnsbl_sites))
    assert (params["myhostname"], params["mydomain"], params["virtual_mailbox_domains"]) == (
        spec.hostname, spec.domain, spec.domain)
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
