"""`make check`: the morning checks of a deployed stack, from the outside and from the host.

    python -m ops.check --stack NAME [--json]

From here: the public ports answer (and the others do not), an outside relay attempt is
refused with 554, and FCrDNS / MX / SPF / DKIM / DMARC (of every mail domain) as the stack's
DNS backend publishes them (its authoritative server, or its API; names outside the zone through the resolver). From
the host, over SSH: `bulletproof-agent status --json` (services, TLS, ports as the host sees
them, queue, fsync, DNSBLs through its own resolver). Exit 1 only on fail-level results;
warnings (a self-signed certificate on the local stack, a slow disk) are printed and pass.
"""
from __future__ import annotations

import argparse
import json
import smtplib
import socket
import sys

from agent import checks_dns, contract, verdict
from agent.verdict import FAIL, PASS, Check
from ops import stack as deployed_stack

RELAY_FROM, RELAY_TO = "check@elsewhere.test", "relay-test@elsewhere.test"


def port_checks(ip: str, ssh_port: int = contract.SSH_PORT, timeout: float = 3.0) -> list[Check]:
    out = []
    for port in contract.public_tcp_ports(ssh_port):
        try:
            socket.create_connection((ip, port), timeout=timeout).close()
            out.append(Check(f"outside:port {port}", PASS, "open"))
        except OSError as exc:
            out.append(Check(f"outside:port {port}", FAIL, f"not reachable: {exc}",
                             "check the service and the firewall (nftables)"))
    for port in contract.LOCAL_ONLY_PORTS:
        try:
            socket.create_connection((ip, port), timeout=timeout).close()
            out.append(Check(f"outside:port {port}", FAIL, "answers from outside",
                             "this port must stay on loopback or be closed"))
        except OSError:
            out.append(Check(f"outside:port {port}", PASS, "closed"))
    return out


def relay_check(ip: str, helo: str = "check.elsewhere.test") -> Check:
    try:
        # postscreen answers a client it has not seen 450 once (its after-220 tests cannot
        # hand the session to smtpd): reconnect once, as a real MTA retries.
        for _ in range(2):
            with smtplib.SMTP(ip, 25, local_hostname=helo, timeout=30) as s:
                s.ehlo()
                s.mail(RELAY_FROM)
                code, text = s.rcpt(RELAY_TO)
            if code != 450:
                break
    except (OSError, smtplib.SMTPException) as exc:
        return Check("outside:relay", FAIL, f"SMTP conversation failed: {exc}",
                     f"is port 25 reachable? see {contract.MAIL_LOG}")
    if code == 554:
        return Check("outside:relay", PASS, f"refused: {code} {text.decode(errors='replace')[:60]}")
    return Check("outside:relay", FAIL, f"relay to {RELAY_TO} answered {code}, not 554",
                 "smtpd_relay_restrictions must end in reject_unauth_destination")


def dns_checks(d: deployed_stack.Deployed) -> list[Check]:
    outs = d.outputs
    facts = {"domain": outs["domain"], "hostname": outs["fqdn"], "ipv4": outs["host_ipv4"],
             "ipv6": outs.get("host_ipv6"), "selector": outs.get("dkim_selector", "s1"),
             "dnsbl_sites": []}  # DNSBLs: asked by the host, through its own resolver
    published = outs.get("dkim_txt", "")
    p = dict(part.strip().split("=", 1) for part in published.split(";") if "=" in part).get("p")
    # From outside, the HELO name is the host's FQDN by construction (the host side checks
    # Postfix's real smtp_helo_name).
    found = checks_dns.run(d.dns_lookup(), facts, helo=outs["fqdn"], dkim_p=p)
    for c in found:
        c.name = f"outside:{c.name}"
    return found + [c for domain in d.domains[1:] for c in domain_checks(d, domain)]


def domain_checks(d: deployed_stack.Deployed, domain: dict) -> list[Check]:
    """MX, SPF, DKIM and DMARC of another mail domain, from where its records are published."""
    import dns.exception
    lookup, name, fqdn = d.dns_lookup(domain), domain["name"], d.outputs["fqdn"]
    p = dict(part.strip().split("=", 1) for part in (domain["dkim_txt"] or "").split(";") if "=" in part).get("p")
    steps = [("mx", lambda: checks_dns.mx(lookup, name, fqdn)),
             ("spf", lambda: checks_dns.spf_check(lookup, name, d.outputs["host_ipv4"])),
             ("dkim", lambda: checks_dns.dkim(lookup, name, domain["selector"], p)),
             ("dmarc", lambda: checks_dns.dmarc(lookup, name))]
    out = []
    for kind, step in steps:
        try:
            c = step()
        except dns.exception.DNSException as exc:
            c = Check(kind, FAIL, f"DNS lookup failed: {type(exc).__name__}: {exc}",
                      f"check the DNS server that holds {name}")
        c.name = f"outside:{kind}:{name}"
        out.append(c)
    return out


def host_checks(d: deployed_stack.Deployed) -> list[Check]:
    from components import remote
    try:
        client = remote.connect(d.host, d.private_key, user=d.user, timeout=30, known_hosts=d.known_hosts)
    except remote.RemoteError as exc:
        return [Check("host:ssh", FAIL, str(exc), "is the host up? make up")]
    try:
        res = remote.run(client, contract.STATUS_COMMAND, timeout=120, as_root=True)
    finally:
        client.close()
    try:
        status = json.loads(res.stdout)
    except ValueError:
        return [Check("host:status", FAIL, f"bulletproof-agent status said: "
                      f"{(res.stderr or res.stdout).strip()[:200]}", "re-run make up")]
    return [Check(f"host:{c['name']}", c["level"], c["reason"], c.get("fix", ""))
            for c in status.get("checks", [])]


def run(d: deployed_stack.Deployed) -> list[Check]:
    return port_checks(d.host) + [relay_check(d.host)] + dns_checks(d) + host_checks(d)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make check", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="local")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        found = run(deployed_stack.load(args.stack))
    except deployed_stack.NotDeployed as exc:
        print(f"check: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"checks": [c.as_dict() for c in found],
                          "summary": verdict.summary(found)}, indent=2))
    else:
        print(verdict.table(found))
    return 1 if any(c.level == FAIL for c in found) else 0


if __name__ == "__main__":
    sys.exit(main())
