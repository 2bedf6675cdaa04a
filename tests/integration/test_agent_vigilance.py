"""Issue 6 on a real booted container: `status` checks (each made to fail, then pass again),
`report` counts against a generated traffic mix, the outbound limit per SASL user, AUTH
brute force throttled by anvil, and `make check`'s outside checks.

Traffic stays on the project's bridge: clients are extra addresses on it, the only DNS is the
test BIND, and every flood is bounded (30 AUTH attempts, a handful of messages).
"""
import base64
import json
import os
import smtplib
import time
import uuid

import pytest

from agent import keys
from localcloud import dns, rfc2136
from tests import mailclient
from tests.integration import agenthost as deploy
from tests.integration.agenthost import HELO, OUTSIDER, message, password

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(bool(deploy.tools_missing()), reason="needs systemd-nspawn, tinyproxy, named"),
]
STACK = "itest-vigil"          # its own bridge and container: never the shared itest host
OUTBOUND_LIMIT = 5
AUTH_LIMIT = 10
FLOOD_INDEX, MIX_AUTH_INDEX = 210, 211   # fresh client addresses (anvil counts per client)
ALICE, BOB, CAROL = (f"{u}@{deploy.DOMAIN}" for u in ("alice", "bob", "carol"))


def _tune(spec):
    from agent import example
    spec["users"].append({"address": CAROL, "password_hash": example.password_hash("secret-carol"),
                          "quota_mb": 100})
    spec["rate_limits"].update(outbound_per_user_per_hour=OUTBOUND_LIMIT,
                               client_auth_rate=AUTH_LIMIT)


class Ctx:
    def __init__(self, d):
        self.d, self.gw = d, str(d.bridge.ipv4.ip)
        self.tsig = dns.read_tsig(d.names.runtime_dir / "agent-dns")
        self.rev_zone = dns.reverse_zone_v4(str(d.bridge.ipv4.network))

    def upsert(self, zone, name, rtype, values):
        rfc2136.upsert(self.gw, 53, self.tsig, zone, name, rtype, values, 60)

    def delete(self, zone, name, rtype):
        rfc2136.delete(self.gw, 53, self.tsig, zone, name, rtype)

    def flush_dns(self) -> None:
        """Forget unbound's cached answers (positive and negative) so the next status sees the
        records as they are now. unbound-control over Debian's local socket, not a restart:
        a restart runs unbound-anchor first, which can stall for many seconds offline."""
        rc, out, err = self.d.run("unbound-control flush_zone . && unbound-control flush_negative"
                                  " && unbound-control flush_infra all")
        assert rc == 0, out + err

    def status(self, *thresholds) -> tuple[int, dict]:
        self.flush_dns()
        args = " ".join(f"--threshold {t}" for t in thresholds)
        rc, out, err = self.d.run(f"{deploy.AGENT} status --json {args}")
        assert out, err
        return rc, json.loads(out)

    def report(self) -> dict:
        rc, out, err = self.d.run(f"{deploy.AGENT} report --since 2h --json")
        assert rc == 0, err
        return json.loads(out)

    def source(self, index: int) -> str:
        addr = str(self.d.bridge.address(index))
        if addr not in self.d.extra_addrs:
            os.system(f"ip addr add {addr} dev {self.d.bridge.name} 2>/dev/null")
            self.d.extra_addrs.append(addr)  # deploy.down removes it
        return addr.split("/")[0]


@pytest.fixture(scope="module")
def ctx():
    d = None
    try:
        d = deploy.up(stack=STACK, log=lambda line: None, tune=_tune)
        rc, report, _, err = d.apply(d.spec, run_id="itest-vigil")
        assert rc == 0, json.dumps(report, indent=1)[-3000:] + err[-2000:]
        yield Ctx(d)
    finally:
        deploy.down(d, stack=STACK)


def levels(st: dict) -> dict:
    return {c["name"]: c["level"] for c in st["checks"]}


# --- status ----------------------------------------------------------------------------
def test_status_passes_on_a_correct_host(ctx):
    rc, st = ctx.status()
    assert rc == 0, st["checks"]
    got = levels(st)
    assert got.pop("tls") == "warn"  # self-signed on the local stack: a warning, never a fail
    assert set(got.values()) == {"pass"}, st["checks"]
    assert {"fcrdns", "mx", "spf", "dkim", "dmarc", "dnsbl:dnsbl.test", "ports", "queue",
            "fsync", "services"} <= set(got)


def _other_dkim_txt():
    from agent import example
    return keys.dkim_txt(example.dkim_key(1024))


# (check, break(ctx), restore(ctx)): each breaks exactly one thing the check guards.
DNS_BREAKS = {
    "fcrdns": (lambda c: c.delete(c.rev_zone, c.d.ip.rsplit(".", 1)[1], "PTR"),
               lambda c: c.upsert(c.rev_zone, c.d.ip.rsplit(".", 1)[1], "PTR",
                                  [f"mail.{deploy.DOMAIN}."])),
    "mx": (lambda c: c.upsert(deploy.DOMAIN, "@", "MX", ["10 other.elsewhere.test."]),
           lambda c: c.upsert(deploy.DOMAIN, "@", "MX", [f"10 mail.{deploy.DOMAIN}."])),
    "spf": (lambda c: c.upsert(deploy.DOMAIN, "@", "TXT", ["v=spf1 ip4:192.0.2.1 -all"]),
            lambda c: c.upsert(deploy.DOMAIN, "@", "TXT", ["v=spf1 mx -all"])),
    "dkim": (lambda c: c.upsert(deploy.DOMAIN, "s1._domainkey", "TXT", [_other_dkim_txt()]),
             lambda c: c.upsert(deploy.DOMAIN, "s1._domainkey", "TXT",
                                [keys.dkim_txt(c.d.spec["dkim"]["private_key_pem"])])),
    "dmarc": (lambda c: c.delete(deploy.DOMAIN, "_dmarc", "TXT"),
              lambda c: c.upsert(deploy.DOMAIN, "_dmarc", "TXT", ["v=DMARC1; p=quarantine"])),
    "dnsbl:dnsbl.test": (lambda c: dns.dnsbl_list(c.gw, 53, c.tsig, c.d.ip),
                         lambda c: dns.dnsbl_unlist(c.gw, 53, c.tsig, c.d.ip)),
}


@pytest.mark.parametrize("check", sorted(DNS_BREAKS))
def test_dns_check_fails_when_its_record_is_wrong_and_passes_when_fixed(ctx, check):
    breaker, restore = DNS_BREAKS[check]
    try:
        breaker(ctx)
        rc, st = ctx.status()
        failed = {n for n, lv in levels(st).items() if lv == "fail"}
        # "v=spf1 mx -all" authorizes through the MX: a wrong MX rightly breaks SPF too.
        assert rc == 1 and failed == ({check, "spf"} if check == "mx" else {check}), st["checks"]
        assert all(c["fix"] for c in st["checks"] if c["level"] == "fail")
    finally:
        restore(ctx)
    rc, st = ctx.status()
    assert rc == 0 and levels(st)[check] == "pass", st["checks"]


def test_spf_over_ten_dns_lookups_fails(ctx):
    terms = " ".join(f"a:h{i}.elsewhere.test" for i in range(11))
    try:
        ctx.upsert(deploy.DOMAIN, "@", "TXT", [f"v=spf1 {terms} mx -all"])
        _, st = ctx.status()
        spf = next(c for c in st["checks"] if c["name"] == "spf")
        assert spf["level"] == "fail" and "10 DNS lookups" in spf["reason"], spf
    finally:
        DNS_BREAKS["spf"][1](ctx)


def test_certificate_check_fails_near_expiry_threshold(ctx):
    _, st = ctx.status("cert_days_fail=100000")
    assert levels(st)["tls"] == "fail"


def test_port_listening_beyond_loopback_fails_the_ports_check(ctx):
    _, out, _ = ctx.d.run("nohup python3 -m http.server 8099 --bind 0.0.0.0 >/dev/null 2>&1 & "
                          "echo $!")
    pid = int(out.strip())
    try:
        ctx.d.run("for i in $(seq 50); do ss -Hltn | grep -q ':8099 ' && break; sleep 0.1; done")
        _, st = ctx.status()
        ports = next(c for c in st["checks"] if c["name"] == "ports")
        assert ports["level"] == "fail" and "8099" in ports["reason"], ports
    finally:
        ctx.d.run(f"kill {pid}")
    ctx.d.run("for i in $(seq 50); do ss -Hltn | grep -q ':8099 ' || break; sleep 0.1; done")
    assert levels(ctx.status()[1])["ports"] == "pass"


def test_stopped_service_fails_the_services_check(ctx):
    ctx.d.run("systemctl stop opendkim")
    try:
        rc, st = ctx.status()
        assert rc == 1 and levels(st)["services"] == "fail"
    finally:
        ctx.d.run("systemctl start opendkim")
    assert levels(ctx.status()[1])["services"] == "pass"


def test_slow_fsync_is_a_warning_never_a_failure(ctx):
    rc, st = ctx.status("fsync_warn_ms=0")
    assert levels(st)["fsync"] == "warn" and rc == 0


def _submit(ctx, user: str, rcpts: list) -> list:
    """One session as `user`; per message: "ok" or (code, text) of the refusal."""
    out = []
    with smtplib.SMTP(ctx.d.ip, 587, local_hostname=HELO, timeout=30) as s:
        s.starttls(context=mailclient.insecure_tls())
        s.login(user, password(user))
        for rcpt in rcpts:
            try:
                s.sendmail(user, [rcpt], message(user, rcpt, uuid.uuid4().hex[:8]))
                out.append("ok")
            except smtplib.SMTPRecipientsRefused as exc:
                out.append(exc.recipients[rcpt])
    return out


def _wait_queue(ctx, pred, timeout=60) -> list:
    deadline = time.monotonic() + timeout
    while True:
        _, out, _ = ctx.d.run("postqueue -j")
        items = [json.loads(line) for line in out.splitlines() if line.strip()]
        if pred(items) or time.monotonic() > deadline:
            return items
        time.sleep(0.5)


def test_deferred_message_trips_the_queue_thresholds(ctx):
    # elsewhere.test's MX is the bridge gateway, where nothing listens on 25: deferred.
    assert _submit(ctx, ALICE, ["someone@elsewhere.test"]) == ["ok"]
    items = _wait_queue(ctx, lambda q: any(m["queue_name"] == "deferred" for m in q))
    try:
        assert any(m["queue_name"] == "deferred" for m in items), items
        assert levels(ctx.status()[1])["queue"] == "pass"
        assert levels(ctx.status("queue_fail=1")[1])["queue"] == "fail"
        assert levels(ctx.status("deferred_age_warn_s=0")[1])["queue"] == "warn"
    finally:
        ctx.d.run("postsuper -d ALL deferred")


# --- outbound limit and AUTH brute force -------------------------------------------------
def test_user_over_the_outbound_limit_is_refused_and_reported(ctx):
    before = ctx.report()
    results = _submit(ctx, CAROL, [BOB] * (OUTBOUND_LIMIT + 2))
    assert results[:OUTBOUND_LIMIT] == ["ok"] * OUTBOUND_LIMIT
    for code, text in results[OUTBOUND_LIMIT:]:
        assert code == 450 and b"Outbound limit reached" in text
        assert f"at most {OUTBOUND_LIMIT} messages per hour".encode() in text
    after = ctx.report()
    assert after["outbound_limited_by_user"].get(CAROL, 0) \
        - before["outbound_limited_by_user"].get(CAROL, 0) == 2
    assert any(a["kind"] == "outbound spike" and CAROL in a["detail"] for a in after["anomalies"])


def _bad_auth(ip: str, source: str) -> int:
    """One connection, one AUTH PLAIN with a wrong password: the reply code."""
    token = base64.b64encode(f"\0{ALICE}\0wrong-password".encode()).decode()
    with smtplib.SMTP(ip, 587, local_hostname=HELO, timeout=30, source_address=(source, 0)) as s:
        s.starttls(context=mailclient.insecure_tls())
        s.ehlo(HELO)
        code, _ = s.docmd("AUTH", f"PLAIN {token}")
    return code


def test_auth_flood_is_throttled_and_reported(ctx):
    source = ctx.source(FLOOD_INDEX)
    # anvil's throttle is under test here, not fail2ban's ban (tests/integration/attacks.py),
    # which would refuse the connections after a few failures.
    assert ctx.d.run(f"fail2ban-client set postfix-sasl addignoreip {source}")[0] == 0
    try:
        codes = [_bad_auth(ctx.d.ip, source) for _ in range(30)]
    finally:
        ctx.d.run(f"fail2ban-client set postfix-sasl delignoreip {source}")
    failed, throttled = codes.count(535), sum(400 <= c < 500 for c in codes)
    assert failed <= AUTH_LIMIT and throttled >= 30 - AUTH_LIMIT - 1, codes
    assert failed + throttled == 30, codes
    rep = ctx.report()
    assert rep["auth_failed_by_client"][source] == failed
    assert rep["auth_throttled_by_client"][source] == throttled
    assert any(a["kind"] == "auth brute force" and source in a["detail"] for a in rep["anomalies"])


# --- report: a known traffic mix, counted exactly ----------------------------------------
def _inbound(ctx, rcpt, sender=OUTSIDER, source=None, warm=True):
    if warm:  # postscreen's first-time deferral (a listed client is refused before it)
        mailclient.pass_postscreen(ctx.d.ip, source, HELO)
    with smtplib.SMTP(ctx.d.ip, 25, local_hostname=HELO, timeout=30,
                      source_address=(source, 0) if source else None) as s:
        s.ehlo()
        s.mail(sender)
        code, _ = s.rcpt(rcpt)
        if code == 250:
            s.data(message(sender, rcpt, uuid.uuid4().hex[:8]))
        return code


def _dnsbl_listed_client(ctx):
    source = str(ctx.d.bridge.address(deploy.LISTED_INDEX).ip)
    try:
        return _inbound(ctx, ALICE, source=source, warm=False)
    except smtplib.SMTPServerDisconnected:
        return 521


def _pregreet(ctx):
    import socket
    source = ctx.source(212)
    with socket.create_connection((ctx.d.ip, 25), timeout=30, source_address=(source, 0)) as c:
        c.sendall(f"EHLO {HELO}\r\n".encode())  # before the banner is complete
        deadline = time.monotonic() + ctx.d.spec["postscreen"]["greet_wait_s"] + 3
        while time.monotonic() < deadline:  # read until postscreen gives its verdict
            c.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                if not c.recv(4096):
                    break
            except OSError:
                break


def test_report_counts_match_a_generated_traffic_mix(ctx):
    ctx.upsert("elsewhere.test", "spf-fail", "TXT", ["v=spf1 -all"])
    ctx.upsert("elsewhere.test", "spf-fail", "MX", ["10 mx.elsewhere.test."])
    before = ctx.report()
    mix_auth = ctx.source(MIX_AUTH_INDEX)
    assert _inbound(ctx, ALICE) == 250                                    # received, sent
    assert _inbound(ctx, BOB) == 250                                      # received, sent
    assert _inbound(ctx, "victim@elsewhere.test") == 554                  # relay
    assert _inbound(ctx, f"nobody@{deploy.DOMAIN}") == 550                # unknown user
    assert _inbound(ctx, f"ghost@{deploy.DOMAIN}") == 550                 # unknown user
    assert _inbound(ctx, ALICE, sender="x@spf-fail.elsewhere.test") == 550  # SPF
    assert _dnsbl_listed_client(ctx) >= 500                               # DNSBL
    _pregreet(ctx)                                                        # PREGREET
    assert [_bad_auth(ctx.d.ip, mix_auth) for _ in range(3)] == [535] * 3  # failed AUTH
    # received + deferred; received + bounced (+ the bounce notice delivered to alice)
    assert _submit(ctx, ALICE, ["later@elsewhere.test", "x@nx.elsewhere.test"]) == ["ok", "ok"]
    want = {"received": 4, "submitted": 2, "sent": 3, "deferred": 1, "bounced": 1,
            "rejected": 6, "auth_failed": 3}
    reasons = {"relay": 1, "unknown user": 2, "SPF": 1, "DNSBL": 1, "PREGREET": 1}
    deadline = time.monotonic() + 60
    while True:  # deliveries are asynchronous: poll, bounded, until the counts settle
        after = ctx.report()
        got = {k: after["counts"][k] - before["counts"][k] for k in want}
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(1)
    ctx.d.run("postsuper -d ALL deferred")
    assert got == want
    got_reasons = {r: after["rejected_by_reason"].get(r, 0) - before["rejected_by_reason"].get(r, 0)
                   for r in reasons}
    assert got_reasons == reasons
    assert after["auth_failed_by_client"][mix_auth] == 3


def test_html_report_is_self_contained_with_an_hourly_chart(ctx):
    rc, out, err = ctx.d.run(f"{deploy.AGENT} report --since 2h --html /tmp/report.html "
                             "&& cat /tmp/report.html")
    assert rc == 0, err
    html = out[out.index("<!DOCTYPE html>"):]
    assert "<svg" in html and "<rect" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "src=" not in html and "<link" not in html


# --- make check, from the outside ---------------------------------------------------------
def _deployed(ctx):
    """The host as the operator commands see a deployed stack (its outputs)."""
    from ops.stack import Deployed
    with open(ctx.d.key_file) as f:
        key = f.read()
    return Deployed(STACK, {"host_ipv4": ctx.d.ip, "dns_backend": "rfc2136", "dns_server": f"{ctx.gw}:53",
                            "resolver": f"{ctx.gw}:53", "domain": deploy.DOMAIN,
                            "fqdn": f"mail.{deploy.DOMAIN}", "dkim_selector": "s1",
                            "dkim_txt": keys.dkim_txt(ctx.d.spec["dkim"]["private_key_pem"]),
                            "ssh_target": f"root@{ctx.d.ip}", "ssh_private_key": key})


def test_outside_checks_pass_and_merge_the_host_side(ctx):
    from ops import check
    ctx.flush_dns()
    found = check.run(_deployed(ctx))
    by = {c.name: c for c in found}
    assert [c.as_dict() for c in found if c.level == "fail"] == []
    assert by["outside:relay"].level == "pass" and "554" in by["outside:relay"].reason
    assert by["outside:port 143"].level == "pass" and by["outside:port 25"].level == "pass"
    assert by["outside:fcrdns"].level == "pass" and by["host:tls"].level == "warn"
    assert "host:queue" in by and "host:dnsbl:dnsbl.test" in by


def test_outside_checks_fail_on_a_missing_dmarc_record(ctx):
    from ops import check
    try:
        ctx.delete(deploy.DOMAIN, "_dmarc", "TXT")
        found = check.dns_checks(_deployed(ctx))
        assert {c.name for c in found if c.level == "fail"} == {"outside:dmarc"}
    finally:
        DNS_BREAKS["dmarc"][1](ctx)
