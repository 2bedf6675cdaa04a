"""Every mail domain the host serves: its records as the host's own resolver sees them (what
Postfix and the world's MTAs see), and mail for its mailboxes accepted at RCPT. Read-only: the
SMTP probes end with QUIT before DATA, so no message is ever queued."""
import json
import shlex
import uuid

import pytest

# dnspython is on every host (the agent's own checks use it); the host's unbound answers.
_LOOKUP = """
import json, sys
import dns.resolver
r = dns.resolver.Resolver(configure=False)
r.nameservers, r.lifetime, r.cache = ["127.0.0.1"], 10, None
out = {}
for name, rtype in json.loads(sys.argv[1]):
    try:
        answer = r.resolve(name, rtype, raise_on_no_answer=False)
        out[name + "/" + rtype] = [b"".join(x.strings).decode() if rtype == "TXT" else x.to_text().lower()
                                   for x in answer]
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        out[name + "/" + rtype] = []
print(json.dumps(out))
"""

# RCPT answers on loopback port 25 (mynetworks: postscreen lets it through at once).
_RCPT = """
import json, smtplib, sys
with smtplib.SMTP("127.0.0.1", 25, local_hostname="infra-check.invalid", timeout=60) as s:
    s.ehlo()
    out = {}
    for rcpt in json.loads(sys.argv[1]):
        s.mail("")
        out[rcpt] = s.rcpt(rcpt)[0]
        s.rset()
print(json.dumps(out))
"""


def _python(host, script: str, arg) -> dict:
    cmd = host.run(f"python3 -c {shlex.quote(script)} {shlex.quote(json.dumps(arg))}")
    assert cmd.rc == 0, cmd.stderr
    return json.loads(cmd.stdout)


def _records(host, queries: list[tuple[str, str]]) -> dict:
    return _python(host, _LOOKUP, queries)


def test_every_domain_is_a_mailbox_domain_of_postfix(host, domains):
    served = host.check_output("postconf -h virtual_mailbox_domains").replace(",", " ").split()
    assert [d["name"] for d in domains if d["name"] not in served] == [], served


def test_postfix_serves_no_domain_the_stack_does_not_name(host, expect, all_domains):
    if not expect.get("domains"):
        pytest.skip("the expectations name no domain list")
    served = host.check_output("postconf -h virtual_mailbox_domains").replace(",", " ").split()
    assert sorted(served) == sorted(d["name"] for d in all_domains)


def test_every_domain_has_its_rfc2142_aliases(host, domains):
    text = host.file("/etc/postfix/virtual_aliases").content_string
    missing = [f"{role}@{d['name']}" for d in domains for role in ("postmaster", "abuse")
               if f"\n{role}@{d['name']} " not in "\n" + text]
    assert missing == []


def test_mx_of_every_domain_is_this_host(host, expect, domains):
    found = _records(host, [(d["name"], "MX") for d in domains])
    bad = {d["name"]: found[f"{d['name']}/MX"] for d in domains
           if expect["hostname"] not in [v.split()[-1].rstrip(".") for v in found[f"{d['name']}/MX"]]}
    assert bad == {}, f"MX not {expect['hostname']}"


def test_every_domain_has_one_spf_record_that_authorises_its_mx(host, domains):
    found = _records(host, [(d["name"], "TXT") for d in domains])
    spf = {d["name"]: [t for t in found[f"{d['name']}/TXT"] if t.lower().startswith("v=spf1")] for d in domains}
    assert {n: r for n, r in spf.items() if len(r) != 1 or " mx" not in f" {r[0]}"} == {}


def test_every_domain_publishes_the_key_it_signs_with(host, domains):
    found = _records(host, [(f"{d['selector']}._domainkey.{d['name']}", "TXT") for d in domains])
    for d in domains:
        published = found[f"{d['selector']}._domainkey.{d['name']}/TXT"]
        assert len(published) == 1 and published[0].startswith("v=DKIM1;"), (d["name"], published)
        if d["dkim_txt"]:
            assert "".join(published[0].split()) == "".join(d["dkim_txt"].split()), d["name"]


def test_every_domain_has_an_enforcing_or_monitoring_dmarc_record(host, domains):
    found = _records(host, [(f"_dmarc.{d['name']}", "TXT") for d in domains])
    for d in domains:
        records = [t for t in found[f"_dmarc.{d['name']}/TXT"] if t.lower().startswith("v=dmarc1")]
        assert len(records) == 1, (d["name"], records)
        tags = dict(p.strip().split("=", 1) for p in records[0].split(";") if "=" in p)
        assert tags.get("p") in ("none", "quarantine", "reject"), (d["name"], records[0])


def test_mail_for_every_mailbox_of_every_domain_is_accepted_and_has_a_mailbox(host, domains):
    wanted = [u for d in domains for u in d["users"]]
    if not wanted:
        pytest.skip("no mailboxes named")
    answers = _python(host, _RCPT, wanted)
    assert {a: c for a, c in answers.items() if c != 250} == {}
    # (loopback may relay, so a 250 alone does not say the mail stays here: the map does)
    maps = host.check_output("postconf -h virtual_mailbox_maps").replace(",", " ").split()
    missing = [a for a in wanted if not any(host.run(f"postmap -q {shlex.quote(a)} {m}").rc == 0 for m in maps)]
    assert missing == []


def test_mail_for_nobody_is_refused_unless_the_domain_has_a_catch_all(host, domains):
    probes = {f"nobody-{uuid.uuid4().hex[:8]}@{d['name']}": d["catch_all"] for d in domains}
    answers = _python(host, _RCPT, list(probes))
    assert {a: c for a, c in answers.items() if (c == 250) != bool(probes[a])} == {}, probes
