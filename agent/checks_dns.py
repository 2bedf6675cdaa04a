"""DNS checks: FCrDNS, MX, SPF, DKIM, DMARC and the DNSBLs, through one given resolver.

On the host that resolver is the local unbound (what Postfix itself sees); from the outside
(components/outside_checks.py) it is the stack's DNS server. dnspython only (a Debian package).
"""
from __future__ import annotations

import ipaddress

import dns.exception
import dns.resolver
import dns.reversename

from agent.verdict import FAIL, PASS, WARN, Check
from agent.contract import classify_dnsbl, dnsbl_query_name, dnsbl_refusal_text
from agent import spf


class Lookup:
    """A resolver that answers [] for "no such name/record" and raises only on failure."""

    def __init__(self, nameserver: str, port: int = 53, timeout: float = 5.0):
        self.r = dns.resolver.Resolver(configure=False)
        self.r.nameservers, self.r.port = [nameserver], port
        self.r.lifetime = timeout
        self.r.cache = None  # each status run must see the records as they are now
        self.server = f"{nameserver}:{port}"

    def __call__(self, name: str, rtype: str) -> list[str]:
        try:
            answer = self.r.resolve(name, rtype, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        if rtype == "TXT":
            return [b"".join(r.strings).decode(errors="replace") for r in answer]
        return [r.to_text().rstrip(".").lower() for r in answer]


def _err(name: str, exc: Exception, lookup: Lookup) -> Check:
    return Check(name, FAIL, f"DNS lookup failed via {lookup.server}: {type(exc).__name__}: {exc}",
                 "check that unbound runs and reaches the stack's DNS server")


def fcrdns(lookup: Lookup, ip: str, fqdn: str, helo: str) -> Check:
    name = "fcrdns" + ("" if ipaddress.ip_address(ip).version == 4 else "6")
    ptrs = lookup(dns.reversename.from_address(ip).to_text(), "PTR")
    if not ptrs:
        return Check(name, FAIL, f"no PTR record for {ip}",
                     f"ask the IP's owner (the provider) to set PTR {ip} -> {fqdn}")
    if fqdn not in ptrs:
        return Check(name, FAIL, f"PTR of {ip} is {', '.join(ptrs)}, not {fqdn}",
                     f"set the PTR of {ip} to {fqdn}")
    forward = lookup(fqdn, "A" if name == "fcrdns" else "AAAA")
    if ip not in forward:
        return Check(name, FAIL, f"{fqdn} resolves to {', '.join(forward) or 'nothing'}, not {ip}",
                     f"publish {fqdn} {'A' if name == 'fcrdns' else 'AAAA'} {ip}")
    if helo.rstrip(".").lower() != fqdn:
        return Check(name, FAIL, f"Postfix says HELO {helo}, but PTR/A name {fqdn}",
                     "set smtp_helo_name/myhostname to the FQDN (spec hostname)")
    return Check(name, PASS, f"{ip} -> {fqdn} -> {ip}, HELO {helo}")


def mx(lookup: Lookup, domain: str, fqdn: str) -> Check:
    targets = [t.split()[-1] for t in lookup(domain, "MX")]
    if not targets:
        return Check("mx", FAIL, f"{domain} has no MX record", f"publish {domain} MX 10 {fqdn}.")
    if fqdn not in targets:
        return Check("mx", FAIL, f"MX of {domain} is {', '.join(targets)}, not this host {fqdn}",
                     f"publish {domain} MX 10 {fqdn}.")
    return Check("mx", PASS, f"{domain} MX -> {fqdn}")


def spf_check(lookup: Lookup, domain: str, ip: str) -> Check:
    records = [t for t in lookup(domain, "TXT") if t.lower().startswith("v=spf1")]
    if not records:
        return Check("spf", FAIL, f"{domain} has no SPF record", f'publish {domain} TXT "v=spf1 mx -all"')
    if len(records) > 1:
        return Check("spf", FAIL, f"{domain} has {len(records)} SPF records (RFC 7208: permerror)",
                     "keep exactly one v=spf1 TXT record")
    try:
        result = spf.evaluate(lookup, domain, ip)
    except spf.SpfError as exc:
        return Check("spf", FAIL, f"SPF of {domain}: {exc}", exc.fix)
    if result.verdict != "pass":
        return Check("spf", FAIL, f"SPF of {domain} gives {result.verdict} for {ip}: {records[0]}",
                     f"authorize the host: add `mx` or `ip4:{ip}` before the all")
    return Check("spf", PASS, f"{ip} authorized ({result.mechanism}), "
                              f"{result.lookups} of {spf.MAX_LOOKUPS} DNS lookups")


def dkim(lookup: Lookup, domain: str, selector: str, signing_p: str | None) -> Check:
    name = f"{selector}._domainkey.{domain}"
    records = [t for t in lookup(name, "TXT") if "p=" in t]
    if not records:
        return Check("dkim", FAIL, f"no DKIM key published at {name}",
                     "publish the TXT from the agent report (dkim.txt)")
    tags = dict(part.strip().split("=", 1) for part in records[0].split(";") if "=" in part)
    published = "".join(tags.get("p", "").split())
    if signing_p is None:
        return Check("dkim", FAIL, "cannot read the key OpenDKIM signs with",
                     "check /etc/opendkim/KeyTable and the key file it names")
    if published != signing_p:
        return Check("dkim", FAIL, f"{name} publishes another key than OpenDKIM signs with",
                     "republish the TXT from the agent report (or rotate the selector)")
    return Check("dkim", PASS, f"{name} matches the signing key")


def dmarc(lookup: Lookup, domain: str) -> Check:
    records = [t for t in lookup(f"_dmarc.{domain}", "TXT") if t.lower().startswith("v=dmarc1")]
    if not records:
        return Check("dmarc", FAIL, f"no DMARC record at _dmarc.{domain}",
                     f'publish _dmarc.{domain} TXT "v=DMARC1; p=quarantine"')
    tags = {k.strip().lower(): v.strip() for k, _, v in
            (part.partition("=") for part in records[0].split(";")) if k.strip()}
    policy = tags.get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return Check("dmarc", FAIL, f"DMARC record without a valid p= tag: {records[0]}",
                     "set p=quarantine or p=reject")
    if policy == "none":
        return Check("dmarc", WARN, "DMARC policy p=none: spoofed mail is still delivered",
                     "move to p=quarantine once reports look clean")
    return Check("dmarc", PASS, f"p={policy}" + (f", rua={tags['rua']}" if "rua" in tags else ""))


def dnsbl(lookup: Lookup, ip: str, site: dict) -> Check:
    """`site`: {zone, query, filter} (agent/checks.py dnsbl_site). An answer outside the filter
    is the list refusing our resolver (a warning: its listings are not seen), never a listing."""
    zone = site["zone"]
    name = dnsbl_query_name(ip, site["query"])
    verdict, codes = classify_dnsbl(lookup(name, "A"), site["filter"])
    if verdict == "listed":
        text = "; ".join(lookup(name, "TXT")) or codes[0]
        return Check(f"dnsbl:{zone}", FAIL, f"{ip} is listed on {zone}: {text}",
                     f"follow {zone}'s delisting procedure; find and stop what sent spam")
    if verdict == "refused":
        return Check(f"dnsbl:{zone}", WARN, f"DNSBL refuses our resolver: {dnsbl_refusal_text(zone, codes)}",
                     "let the host's unbound recurse itself (no resolver_forwarders through a "
                     "public resolver), or use the list's keyed service (Spamhaus DQS: spamhaus_dqs_key)")
    return Check(f"dnsbl:{zone}", PASS, f"{ip} not listed")


def run(lookup: Lookup, facts: dict, helo: str, dkim_p: str | None, dkim_p_of=None) -> list[Check]:
    """`dkim_p`: the primary's signing key; `dkim_p_of(domain, selector)`: another domain's
    (facts["other_domains"], each checked as `<check>:<domain>`)."""
    steps = [("fcrdns", lambda: fcrdns(lookup, facts["ipv4"], facts["hostname"], helo))]
    if facts.get("ipv6"):
        steps.append(("fcrdns6", lambda: fcrdns(lookup, facts["ipv6"], facts["hostname"], helo)))
    steps += [("mx", lambda: mx(lookup, facts["domain"], facts["hostname"])),
              ("spf", lambda: spf_check(lookup, facts["domain"], facts["ipv4"])),
              ("dkim", lambda: dkim(lookup, facts["domain"], facts["selector"], dkim_p)),
              ("dmarc", lambda: dmarc(lookup, facts["domain"]))]
    for m in facts.get("other_domains") or []:
        name, sel = m["name"], m["selector"]
        p = dkim_p_of(name, sel) if dkim_p_of else None
        steps += [(f"mx:{name}", lambda name=name: mx(lookup, name, facts["hostname"])),
                  (f"spf:{name}", lambda name=name: spf_check(lookup, name, facts["ipv4"])),
                  (f"dkim:{name}", lambda name=name, sel=sel, p=p: dkim(lookup, name, sel, p)),
                  (f"dmarc:{name}", lambda name=name: dmarc(lookup, name))]
    steps += [(f"dnsbl:{s['zone']}", (lambda s=s: dnsbl(lookup, facts["ipv4"], s)))
              for s in facts["dnsbl_sites"]]
    out = []
    for name, fn in steps:
        try:
            check = fn()
        except dns.exception.DNSException as exc:
            check = _err(name, exc, lookup)
        if ":" in name and not name.startswith("dnsbl:"):
            check.name = name  # another domain's: its name says which
        out.append(check)
    return out
