"""`pulumi up` of this project's local default, through the real engine, on a throwaway stack.

One deployment for the module (CI time); the tests run in file order: deploy, use the mail
server, no-op, drift, a config change, then destroy.
"""
from __future__ import annotations

import base64
import imaplib
import ipaddress
import json
import pathlib
import pwd
import re
import smtplib
import subprocess
import sys
import time
import uuid

import dkim
import dns.message
import dns.query
import pytest

from localcloud import rfc2136
from localcloud import dns as local_dns, naming, network, sink
from tests import mailclient
from tests.e2e import stack_fixture
from tests.e2e.pulumi_cli import ROOT

CONTRACT_OUTPUTS = {"domain", "fqdn", "host_ipv4", "host_ipv6", "region", "ssh_target", "ssh_private_key",
                    "dns_server", "dns_records", "dkim_selector", "dkim_txt", "mail_users", "verification",
                    "test_user", "test_password"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = stack_fixture.create(tmp_path_factory.mktemp("state"))
    try:
        s.timed("first up", "up", "--yes", "--refresh", "--skip-preview")
        yield s
    finally:
        stack_fixture.remove(s)
        print(f"\n[e2e] timings (s): {json.dumps(s.timings)}")


@pytest.fixture(scope="module")
def outs(stack):
    return stack.outputs()


def _send(outs: dict, user: str, password: str, to: str, subject: str) -> None:
    mailclient.submit(outs["host_ipv4"], user, password, to, subject, "hello from the e2e test\n")


def _dns_txt(outs: dict):
    server, port = outs["dns_server"].split(":")

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        reply = dns.query.udp(dns.message.make_query(name.decode(), "TXT"), server, port=int(port), timeout=timeout)
        return b"".join(b"".join(r.strings) for rrset in reply.answer for r in rrset)
    return lookup


def test_up_gives_a_verified_server_with_the_contract_outputs(outs):
    assert CONTRACT_OUTPUTS <= set(outs)
    assert outs["verification"]["failed"] == 0 and outs["verification"]["passed"] > 0
    assert outs["ssh_target"] == f"root@{outs['host_ipv4']}"
    assert outs["region"] == "no-svg1"
    records = outs["dns_records"]
    assert records[f"{outs['fqdn']}."]["A"] == [outs["host_ipv4"]]
    assert records[f"{outs['domain']}."]["MX"] == [f"10 {outs['fqdn']}."]


def test_mail_sent_by_a_user_is_readable_by_another_over_imaps(outs):
    passwords = outs["mail_passwords"]
    bob = "bob@" + outs["domain"]
    subject = f"e2e {uuid.uuid4().hex[:8]}"
    _send(outs, outs["test_user"], outs["test_password"], bob, subject)
    raw = mailclient.imap_find(outs["host_ipv4"], bob, passwords[bob], subject)
    assert raw is not None, "the message never reached bob's mailbox"
    assert b"hello from the e2e test" in raw


def test_outbound_mail_reaches_elsewhere_with_a_valid_dkim_signature(stack, outs):
    subject = f"outbound {uuid.uuid4().hex[:8]}"
    _send(outs, outs["test_user"], outs["test_password"], "someone@elsewhere.test", subject)
    state = naming.stack_names(stack.name, ROOT).runtime_dir / "sink"
    deadline, found = time.monotonic() + 60, None
    while time.monotonic() < deadline and not found:
        found = next((m for m in sink.messages(state) if subject.encode() in m.raw), None)
        time.sleep(1)
    assert found is not None, "the sink never received the outbound message"
    assert b"DKIM-Signature:" in found.raw
    assert dkim.verify(found.raw, dnsfunc=_dns_txt(outs)), "dkimpy rejects the signature"


def test_outbound_mail_to_an_ipv6_only_mx_leaves_from_the_hosts_own_ipv6(stack, outs):
    """Postfix sends over IPv6 from spec.ipv6 (smtp_bind_address6), the address whose PTR the
    stack wrote, not from some other address of the host."""
    names = naming.stack_names(stack.name, ROOT)
    tsig = local_dns.read_tsig(names.runtime_dir / "dns")
    server, port = outs["dns_server"].split(":")
    gateway6 = str(network.read_bridge(names).ipv6.ip)
    # v6.elsewhere.test: a domain whose only MX has only an AAAA (the sink's IPv6)
    rfc2136.upsert(server, int(port), tsig, "elsewhere.test", "mx6", "AAAA", [gateway6], 60)
    rfc2136.upsert(server, int(port), tsig, "elsewhere.test", "v6", "MX", ["10 mx6.elsewhere.test."], 60)
    try:
        subject = f"over ipv6 {uuid.uuid4().hex[:8]}"
        _send(outs, outs["test_user"], outs["test_password"], "someone@v6.elsewhere.test", subject)
        deadline, found = time.monotonic() + 60, None
        while time.monotonic() < deadline and not found:
            found = next((m for m in sink.messages(names.runtime_dir / "sink") if subject.encode() in m.raw), None)
            time.sleep(1)
        assert found is not None, "the sink never received the message sent over IPv6"
        assert ipaddress.ip_address(found.peer) == ipaddress.ip_address(outs["host_ipv6"]), found.peer
    finally:
        for name, rtype in (("v6", "MX"), ("mx6", "AAAA")):
            rfc2136.delete(server, int(port), tsig, "elsewhere.test", name, rtype)


# --- several domains: each receives and signs its own mail; forwarding with SRS -----------------

BRAND_USER, FORWARD, OUTSIDE = "carol@brand.test", "fwd@brand.test", "someone@elsewhere.test"


def _at_sink(stack, subject: str, timeout: float = 60):
    state = naming.stack_names(stack.name, ROOT).runtime_dir / "sink"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = next((m for m in sink.messages(state) if subject.encode() in m.raw), None)
        if found:
            return found
        time.sleep(1)
    return None


def _signer(raw: bytes) -> str:
    """d= of the message's (first) DKIM signature."""
    header = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].decode(errors="replace")
    found = re.search(r"DKIM-Signature:.*?\bd=([^;\s]+)", header, re.S | re.I)
    return found.group(1) if found else ""


def _lookup(outs: dict):
    from agent.checks_dns import Lookup
    server, port = outs["dns_server"].split(":")
    return Lookup(server, int(port))


def _gateway(outs: dict) -> str:
    """This machine's address on the stack's bridge: an outside MTA to the host."""
    return str(ipaddress.ip_network(f"{outs['host_ipv4']}/24", strict=False)[1])


def _inbound(outs: dict, sender: str, rcpt: str, subject: str) -> None:
    """One message to port 25 as an outside MTA would send it."""
    body = (f"From: {sender or 'MAILER-DAEMON@elsewhere.test'}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@elsewhere.test>\r\n\r\nfrom outside\r\n").encode()
    with mailclient.smtp_in(outs["host_ipv4"], _gateway(outs)) as s:
        s.sendmail(sender, [rcpt], body)


def test_each_domain_receives_mail_and_signs_its_own_with_its_own_key(stack, outs):
    passwords, alice = outs["mail_passwords"], outs["test_user"]
    assert BRAND_USER.rpartition("@")[2] in outs["mail_domains"]
    into_brand, from_brand, out = (f"{k} {uuid.uuid4().hex[:8]}" for k in ("into", "from", "out"))
    _send(outs, alice, outs["test_password"], BRAND_USER, into_brand)       # between the domains
    _send(outs, BRAND_USER, passwords[BRAND_USER], alice, from_brand)
    _send(outs, BRAND_USER, passwords[BRAND_USER], OUTSIDE, out)            # out through the sink
    got = {s: mailclient.imap_find(outs["host_ipv4"], who, passwords[who], s)
           for who, s in ((BRAND_USER, into_brand), (alice, from_brand))}
    sent = _at_sink(stack, out)
    assert got[into_brand] and got[from_brand] and sent, "a message never arrived"
    for raw, domain in ((got[into_brand], outs["domain"]), (got[from_brand], "brand.test"),
                        (sent.raw, "brand.test")):
        assert _signer(raw) == domain
        assert dkim.verify(raw, dnsfunc=_dns_txt(outs)), f"dkimpy rejects {domain}'s signature"


def test_mail_forwarded_to_another_domain_gets_an_srs_sender_that_passes_spf_and_our_signature(stack, outs):
    from agent import spf
    subject = f"forwarded {uuid.uuid4().hex[:8]}"
    _inbound(outs, "writer@elsewhere.test", FORWARD, subject)
    found = _at_sink(stack, subject)
    assert found is not None, "the forwarded message never reached the sink"
    assert found.rcpt_tos == [OUTSIDE]
    local, _, srs_domain = found.mail_from.rpartition("@")
    assert local.startswith("SRS0=") and local.endswith("=elsewhere.test=writer"), found.mail_from
    assert srs_domain == outs["domain"]
    # At the receiver: the envelope sender's SPF names the address the message came from.
    assert found.peer in (outs["host_ipv4"], outs["host_ipv6"])
    assert spf.evaluate(_lookup(outs), srs_domain, outs["host_ipv4"]).verdict == "pass"
    assert _signer(found.raw) == outs["domain"]
    assert dkim.verify(found.raw, dnsfunc=_dns_txt(outs)), "dkimpy rejects the forwarder's signature"
    stack.srs_sender = found.mail_from


def test_a_bounce_to_the_srs_sender_goes_back_to_the_original_sender(stack, outs):
    srs = getattr(stack, "srs_sender", None)
    assert srs, "the forwarding test found no SRS sender"
    subject = f"bounce {uuid.uuid4().hex[:8]}"
    _inbound(outs, "", srs, subject)
    found = _at_sink(stack, subject)
    assert found is not None and found.rcpt_tos == ["writer@elsewhere.test"], found
    with pytest.raises(smtplib.SMTPRecipientsRefused):  # a forged SRS address is not ours
        _inbound(outs, "", "SRS0=xxxx=AB=elsewhere.test=writer@" + outs["domain"], subject)


def test_the_exported_state_holds_the_tsig_secret_only_as_ciphertext(stack):
    tsig = local_dns.read_tsig(naming.stack_names(stack.name, ROOT).runtime_dir / "dns")
    exported = stack.run("stack", "export").stdout
    assert tsig.secret not in exported
    records = [r for r in json.loads(exported)["deployment"]["resources"]
               if r["type"].endswith("rfc2136:DnsRecord")]
    assert records and all("ciphertext" in r["outputs"]["tsig_secret"] for r in records)
    # The pickled provider (plain: it captures nothing) holds no secret either.
    assert all(tsig.secret.encode() not in base64.b64decode(r["outputs"]["__provider"])
               for r in records)


def _ids(pid: int) -> tuple[str, str]:
    status = dict(line.split(":", 1) for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines())
    return status["Uid"].split()[0], status["Uid"].split()[1]


@pytest.mark.parametrize("service, user", [("dns", local_dns.NAMED_USER), ("sink", sink.SINK_USER)])
def test_the_local_clouds_daemons_run_unprivileged(stack, service, user):
    state = naming.stack_names(stack.name, ROOT).runtime_dir / service
    pid = (local_dns.status(state) if service == "dns" else sink.status(state)).pid
    uid = str(pwd.getpwnam(user).pw_uid)
    assert pid and _ids(pid) == (uid, uid)  # real and effective


def test_second_up_changes_nothing(stack):
    stack.timed("preview (no changes)", "preview", "--expect-no-changes")
    up = stack.timed("no-op up", "up", "--yes", "--skip-preview")
    assert "unchanged" in up.stdout and "created" not in up.stdout.split("Resources:")[-1]


def _changed_resources(preview: str) -> set[str]:
    """Names of the resources a `preview --diff` would touch (its `~`/`+`/`-` step headers)."""
    lines = preview.splitlines()
    changed = set()
    for i, line in enumerate(lines):
        if re.match(r"^\s*(\+-|[~+-])\s+[\w:/.-]+: \((update|create|delete|replace|create-replacement|delete-replaced)\)", line):
            urn = next((ln for ln in lines[i + 1:i + 4] if "[urn=" in ln), "")
            changed.add(urn.strip().rstrip("]").rsplit("::", 1)[-1])
    return changed


def _primary_get(doc: dict, key: str):
    """A key of the primary domain: its `domains:` entry, or the single-domain key."""
    listed = doc["config"].get("bulletproof-mail:domains")
    return listed[0][key] if listed else doc["config"][f"bulletproof-mail:{key}"]


def _primary_set(doc: dict, key: str, value) -> None:
    listed = doc["config"].get("bulletproof-mail:domains")
    if listed:
        listed[0][key] = value
    else:
        doc["config"][f"bulletproof-mail:{key}"] = value


def test_make_preview_names_exactly_the_changed_resources_and_hides_secrets(stack, outs):
    original = stack.config_file.read_text()
    doc = stack.config()
    _primary_set(doc, "dmarc_policy", "reject")
    stack.write_config(doc)
    try:
        proc = subprocess.run(["make", "-s", "preview", f"STACK={stack.name}"], cwd=ROOT, env=stack.env,
                              capture_output=True, text=True, timeout=600)
    finally:
        stack.config_file.write_text(original)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the record, and the verification that re-checks the records; nothing else (an agent edited
    # by someone else between `up` and this preview would add mail-bootstrap-agent: re-run)
    assert _changed_resources(proc.stdout) == {"mail-dns-records-dmarc", "mail-verification"}, proc.stdout
    assert '"v=DMARC1; p=quarantine" => "v=DMARC1; p=reject"' in proc.stdout
    tsig = local_dns.read_tsig(naming.stack_names(stack.name, ROOT).runtime_dir / "dns")
    # (the key column is as wide as the record's longest input name)
    assert re.search(r"tsig_secret +: \[secret\]", proc.stdout) and tsig.secret not in proc.stdout


def test_a_record_edited_by_hand_is_seen_by_refresh_and_restored_by_up(stack, outs):
    names = naming.stack_names(stack.name, ROOT)
    tsig = local_dns.read_tsig(names.runtime_dir / "dns")
    server, port = outs["dns_server"].split(":")
    rfc2136.upsert(server, int(port), tsig, outs["domain"], "@", "MX", ["10 evil.elsewhere.test."], 300)
    refresh = stack.run("refresh", "--yes", "--diff")
    assert "evil.elsewhere.test" in refresh.stdout
    stack.run("up", "--yes", "--skip-preview")
    assert rfc2136.read(server, int(port), outs["domain"], "@", "MX")[0] == [f"10 {outs['fqdn']}."]


def test_adding_a_user_previews_exactly_that_and_applies_without_a_new_host(stack, outs):
    doc = stack.config()
    dave = f"dave@{outs['domain']}"
    _primary_set(doc, "users", [*_primary_get(doc, "users"), {"address": dave, "quota_mb": 256}])
    stack.write_config(doc)
    preview = stack.run("preview", "--diff").stdout
    summary = preview.split("Resources:")[-1]
    # one new password, the agent run and the verification updated; no host rebuilt (the user
    # lists are diffed by position, brand.test's after the primary's: look at the new password)
    assert "+ 1 to create" in summary and "replace" not in summary, summary
    assert "::mail-password-dave]" in preview and re.search(rf'account\s*:\s*"{dave}"', preview), preview
    stack.run("up", "--yes", "--skip-preview")
    after = stack.outputs()
    assert after["host_ipv4"] == outs["host_ipv4"]
    with imaplib.IMAP4_SSL(after["host_ipv4"], 993, ssl_context=mailclient.insecure_tls(), timeout=30) as imap:
        assert imap.login(dave, after["mail_passwords"][dave])[0] == "OK"


def test_narrowing_ssh_allow_from_previews_an_agent_run_and_no_new_host(stack, outs):
    doc = stack.config()
    admins = str(ipaddress.ip_network(f"{outs['host_ipv4']}/24", strict=False))
    stack.write_config({**doc, "config": {**doc["config"], "bulletproof-mail:ssh_allow_from": [admins]}})
    try:
        preview = stack.run("preview", "--diff").stdout
    finally:
        stack.write_config(doc)
    summary = preview.split("Resources:")[-1]
    assert "replace" not in summary and "to create" not in summary and "to delete" not in summary, summary
    assert f"\"{admins}\"" in preview and "mail-bootstrap-agent" in preview


def test_a_listed_host_ip_stops_up_with_the_list_and_the_fix(stack, outs):
    names = naming.stack_names(stack.name, ROOT)
    tsig = local_dns.read_tsig(names.runtime_dir / "dns")
    server, port = outs["dns_server"].split(":")
    local_dns.dnsbl_list(server, int(port), tsig, outs["host_ipv4"], reason="spam trap hit, e2e")
    resources = json.loads(stack.run("stack", "export").stdout)["deployment"]["resources"]
    urn = next(r["urn"] for r in resources if r["urn"].endswith("::mail-reputation"))
    failed = stack.run("up", "--yes", "--skip-preview", "--replace", urn, check=False)
    text = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert f"the host IP {outs['host_ipv4']} is listed on 1 DNSBL(s): dnsbl.test: spam trap hit, e2e" in text
    assert "allow_listed_ip: true" in text
    assert stack.outputs()["host_ipv4"] == outs["host_ipv4"]  # the running server was left alone

    doc = stack.config()
    doc["config"]["bulletproof-mail:allow_listed_ip"] = True
    stack.write_config(doc)
    stack.run("up", "--yes", "--skip-preview")
    local_dns.dnsbl_unlist(server, int(port), tsig, outs["host_ipv4"])


def test_destroy_leaves_nothing_running(stack):
    names = naming.stack_names(stack.name, ROOT)
    stack_fixture.unprotect(stack)  # outside `local` the DKIM key is protected
    stack.run("destroy", "--yes", "--refresh")
    subprocess.run([sys.executable, "-m", "localcloud", "stop-all", "--stack", stack.name], cwd=ROOT, check=True)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert names.stack_id not in ps and names.machine("mail") not in ps
    assert not pathlib.Path(f"/sys/class/net/{names.bridge}").exists()
