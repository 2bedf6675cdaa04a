"""FCrDNS of an existing server: its provider sets the PTR, the stack checks it before deploying.

Receivers refuse or score down mail from an IP whose reverse name does not lead back to it
(forward-confirmed reverse DNS). The stack publishes the A/AAAA of the mail FQDN itself, so the
PTR of every address must name exactly that FQDN. Checked in the program, at preview and up,
before any resource is touched; the message gives the exact record to ask the provider for.
"""
from __future__ import annotations

import ipaddress

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pulumi


class RdnsError(RuntimeError):
    """The PTR of an address does not name the mail FQDN; one line per address."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def wanted_record(ip: str, fqdn: str) -> str:
    """The PTR record, in zone-file text, that makes `ip` forward-confirm to `fqdn`."""
    return f"{ipaddress.ip_address(ip).reverse_pointer}. IN PTR {fqdn.rstrip('.')}."


def ptr_names(ip: str, resolver: str, timeout: float = 5) -> list[str]:
    host, _, port = resolver.rpartition(":")
    query = dns.message.make_query(ipaddress.ip_address(ip).reverse_pointer + ".", "PTR")
    try:
        reply = dns.query.udp(query, host, port=int(port), timeout=timeout)
    except (OSError, dns.exception.DNSException) as exc:
        raise RdnsError([f"rdns: cannot ask the resolver {resolver} for the PTR of {ip} ({exc}); "
                         f"check bulletproof-mail:resolver"]) from exc
    if reply.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        raise RdnsError([f"rdns: the resolver {resolver} answered {dns.rcode.to_text(reply.rcode())} for "
                         f"the PTR of {ip}; check bulletproof-mail:resolver"])
    return sorted(r.target.to_text() for rrset in reply.answer if rrset.rdtype == dns.rdatatype.PTR
                  for r in rrset)


def problems(fqdn: str, addresses: list[str], resolver: str) -> list[str]:
    out = []
    want = fqdn.rstrip(".").lower() + "."
    for ip in addresses:
        names = ptr_names(ip, resolver)
        if [n.lower() for n in names] == [want]:
            continue
        seen = f"is {', '.join(names)}" if names else "is not set (no PTR record)"
        out.append(f"rdns: the reverse DNS of {ip} {seen}, not the mail FQDN {want}; ask your provider "
                   f"to set exactly this record: {wanted_record(ip, fqdn)} "
                   f"(or set bulletproof-mail:rdns: warn to deploy anyway)")
    return out


def enforce(fqdn: str, addresses: list[str], resolver: str, mode: str) -> None:
    """Raise RdnsError (mode enforce) or warn (mode warn) when a PTR is not the mail FQDN."""
    found = problems(fqdn, addresses, resolver)
    if found and mode == "enforce":
        raise RdnsError(found)
    for line in found:
        pulumi.log.warn(line)
