"""Host checks: TLS certificate, listening ports and firewall, queue, disk fsync, services.

Read-only: they look at the live system with its own tools (openssl, ss, nft, postqueue).
"""
from __future__ import annotations

import base64
import datetime
import json
import re
import subprocess
import time

from agent import preflight, services
from agent.contract import QUEUE_DIR
from agent.verdict import FAIL, PASS, WARN, Check

LOOPBACK = ("127.", "[::1]", "::1")


def _run(argv: list[str], data: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=data, capture_output=True, text=True, timeout=60)


def _postconf(name: str) -> str:
    return _run(["postconf", "-xh", name]).stdout.strip()  # -x: $myhostname expanded


def helo_name() -> str:
    return _postconf("smtp_helo_name")


def signing_key_p(facts: dict) -> str | None:
    """The p= of the key OpenDKIM actually signs with (from its KeyTable), or None."""
    try:
        with open("/etc/opendkim/KeyTable") as f:
            rows = [line.split() for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return None
    wanted = f"{facts['selector']}._domainkey.{facts['domain']}"
    for row in rows:
        if len(row) == 2 and row[0] == wanted:
            path = row[1].split(":", 2)[2]
            der = subprocess.run(["openssl", "pkey", "-in", path, "-pubout", "-outform", "DER"],
                                 capture_output=True)
            return base64.b64encode(der.stdout).decode() if der.returncode == 0 else None
    return None


def tls(facts: dict, limits: dict) -> Check:
    path = _postconf("smtpd_tls_cert_file")
    info = _run(["openssl", "x509", "-in", path, "-noout", "-enddate", "-subject", "-issuer",
                 "-ext", "subjectAltName", "-nameopt", "RFC2253"])
    if info.returncode:
        return Check("tls", FAIL, f"cannot read the certificate {path}: {info.stderr.strip()[:100]}",
                     "re-run bulletproof-agent apply, or fix tls.cert_pem")
    text = info.stdout
    end = re.search(r"notAfter=(.+)", text).group(1).strip()
    expires = datetime.datetime.strptime(end, "%b %d %H:%M:%S %Y %Z").replace(
        tzinfo=datetime.timezone.utc)
    days = (expires - datetime.datetime.now(datetime.timezone.utc)).days
    names = re.findall(r"DNS:([^,\s]+)", text)
    subject = re.search(r"subject=(.*)", text).group(1).strip()
    issuer = re.search(r"issuer=(.*)", text).group(1).strip()
    fqdn = facts["hostname"]
    if fqdn not in names and f"CN={fqdn}" not in subject.split(","):
        return Check("tls", FAIL, f"certificate is for {', '.join(names) or subject}, not {fqdn}",
                     f"issue a certificate for {fqdn}")
    if days < limits["cert_days_fail"]:
        return Check("tls", FAIL, f"certificate expires in {days} days ({end})", "renew it now")
    self_signed = subject == issuer
    if not self_signed:
        chain = _run(["openssl", "verify", "-untrusted", path, path])
        if chain.returncode:
            return Check("tls", FAIL, "certificate chain does not verify: "
                         + chain.stdout.strip().splitlines()[-1][:120],
                         "install the full chain (leaf + intermediates) as tls.cert_pem")
    if days < limits["cert_days_warn"]:
        return Check("tls", WARN, f"certificate expires in {days} days", "renew it soon")
    if self_signed:
        local = facts.get("tls_mode") == "self-signed"
        return Check("tls", WARN, f"self-signed certificate for {fqdn}, {days} days left",
                     "fine on the local stack; use a CA-issued certificate (tls.mode provided)"
                     if local else "use a CA-issued certificate")
    return Check("tls", PASS, f"valid chain for {fqdn}, {days} days left")


def listening() -> dict[int, set[str]]:
    """TCP port -> local addresses in LISTEN state (from the kernel, no probe traffic)."""
    out: dict[int, set[str]] = {}
    for line in _run(["ss", "-Hltn"]).stdout.splitlines():
        cols = line.split()
        if len(cols) >= 4:
            addr, _, port = cols[3].rpartition(":")
            out.setdefault(int(port), set()).add(addr)
    return out


def ports(facts: dict) -> Check:
    want = set(facts["tcp_ports"])
    socks = listening()
    public = {p for p, addrs in socks.items() if any(not a.startswith(LOOPBACK) for a in addrs)}
    missing, extra = sorted(want - public), sorted(public - want)
    if missing:
        return Check("ports", FAIL, f"not listening: {missing}",
                     "systemctl status postfix@- dovecot; see /var/log/mail.log")
    if extra:
        return Check("ports", FAIL, f"also listening beyond loopback: {extra}",
                     "bind the service to 127.0.0.1 or stop it")
    if facts.get("firewall", "managed") != "managed":
        return Check("ports", PASS, f"open {sorted(want)}, nothing else beyond loopback "
                                    f"(the firewall is the server's own: ssh.firewall none)")
    rules = _run(["nft", "list", "chain", "inet", "filter", "input"])
    if rules.returncode or "policy drop" not in rules.stdout:
        return Check("ports", FAIL, "the nftables input chain is missing or not policy drop",
                     "systemctl restart nftables")
    return Check("ports", PASS, f"open {sorted(want)}, nothing else beyond loopback, firewall drops")


def queue(limits: dict, now: float | None = None) -> Check:
    proc = _run(["postqueue", "-j"])
    if proc.returncode:
        return Check("queue", FAIL, f"postqueue -j failed: {proc.stderr.strip()[:100]}",
                     "is postfix running? systemctl status postfix@-")
    items = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    now = now or time.time()
    deferred = [now - m["arrival_time"] for m in items if m.get("queue_name") == "deferred"]
    oldest = max(deferred, default=0)
    reason = f"{len(items)} queued, {len(deferred)} deferred" + (
        f", oldest deferred {oldest / 60:.0f} min" if deferred else "")
    fix = "postqueue -p shows why; fix the cause, then postqueue -f"
    if len(items) >= limits["queue_fail"] or oldest >= limits["deferred_age_fail_s"]:
        return Check("queue", FAIL, reason, fix)
    if len(items) >= limits["queue_warn"] or oldest >= limits["deferred_age_warn_s"]:
        return Check("queue", WARN, reason, fix)
    return Check("queue", PASS, reason)


def fsync(limits: dict) -> Check:
    ms = preflight.fsync_latency_ms(QUEUE_DIR)
    if ms > limits["fsync_warn_ms"]:
        return Check("fsync", WARN, f"fsync {ms:.1f} ms on {QUEUE_DIR} (> "
                     f"{limits['fsync_warn_ms']} ms): the queue stalls under load",
                     "put the data volume on faster storage (SSD/NVMe, no noisy neighbours)")
    return Check("fsync", PASS, f"fsync {ms:.1f} ms")


def units(firewall: str = "managed") -> Check:
    from agent.host import Host
    host = Host()
    mine = services.units(firewall)
    down = [s for s in mine if not services.unit_state(host, s)[0]]
    if down:
        return Check("services", FAIL, f"not running: {', '.join(down)}",
                     f"systemctl restart {' '.join(down)}; journalctl -u <unit>")
    return Check("services", PASS, f"{len(mine)} services active")


def run(facts: dict, limits: dict) -> list[Check]:
    return [units(facts.get("firewall", "managed")), tls(facts, limits), ports(facts), queue(limits),
            fsync(limits)]
