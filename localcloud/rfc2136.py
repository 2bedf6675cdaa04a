"""An RFC 2136 client: DNS UPDATE with TSIG, and authoritative reads (BIND, Knot, PowerDNS).

Plain functions over dnspython, no Pulumi: the local DNS server's set-up (localcloud/dns.py)
and the stack's record provider (components/dns_record.py) both write records with them.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Union

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.tsig
import dns.update

SUPPORTED_TYPES = ("A", "AAAA", "CNAME", "MX", "PTR", "TXT")
TXT_CHUNK = 255  # RFC 1035: one character-string holds at most 255 bytes
TIMEOUT = 5.0
TxtValue = Union[str, Sequence[str]]  # one TXT record: a string, or its character-strings


class Tsig(NamedTuple):
    name: str
    algorithm: str  # e.g. "hmac-sha256"
    secret: str  # base64, as tsig-keygen writes it


class DnsRecordError(Exception):
    """An UPDATE or query the server refused or could not answer; says which and the fix."""


class DnsServerUnreachable(DnsRecordError):
    """No answer at all: the server is not running (or not reachable) at that address."""


def split_txt(value: TxtValue) -> list[bytes]:
    """One TXT record as <=255-byte strings (a 2048-bit DKIM key needs two)."""
    data = value.encode() if isinstance(value, str) else b"".join(s.encode() for s in value)
    if not data:
        return [b""]
    return [data[i : i + TXT_CHUNK] for i in range(0, len(data), TXT_CHUNK)]


def normalise(rtype: str, values: Sequence[TxtValue]) -> list[str]:
    """Canonical, sorted text of an RRset, so a read after a write compares equal.

    TXT: the joined string (how it was split is transport detail). Others: dnspython's
    canonical text, with targets taken as absolute (`mail.example.test` == `mail.example.test.`).
    """
    rtype = rtype.upper()
    if rtype == "TXT":
        return sorted({b"".join(split_txt(v)).decode() for v in values})
    return sorted({_rdata(rtype, v).to_text() for v in values})


def fqdn(zone: str, name: str) -> dns.name.Name:
    """`name` relative to `zone` ("@" is the apex); an absolute or zone-suffixed name as is."""
    origin = dns.name.from_text(zone)
    text = name.strip()
    if text in ("", "@"):
        return origin
    lowered = text.rstrip(".").lower()
    zone_text = origin.to_text(omit_final_dot=True).lower()
    if text.endswith(".") or lowered == zone_text or lowered.endswith("." + zone_text):
        full = dns.name.from_text(text.rstrip(".") + ".")
    else:
        full = dns.name.from_text(text, origin=origin)
    if not full.is_subdomain(origin):
        raise DnsRecordError(f"{full} is outside zone {origin}: use a name inside the zone")
    return full


def upsert(server: str, port: int, tsig: Optional[Tsig], zone: str, name: str, rtype: str,
           values: Sequence[TxtValue], ttl: int) -> None:
    """Make the RRset exactly `values` (one UPDATE, so readers never see a half-written set)."""
    target = fqdn(zone, name)
    update = _update_message(zone, tsig)
    update.replace(target, int(ttl), *[_rdata(rtype, v) for v in values])
    _send(update, server, port, f"upsert {rtype} {target}")


def delete(server: str, port: int, tsig: Optional[Tsig], zone: str, name: str, rtype: str) -> None:
    """Remove the RRset; deleting one that is already gone is not an error (idempotent)."""
    target = fqdn(zone, name)
    update = _update_message(zone, tsig)
    update.delete(target, dns.rdatatype.from_text(rtype.upper()))
    _send(update, server, port, f"delete {rtype} {target}")


def read(server: str, port: int, zone: str, name: str, rtype: str,
         recursive: bool = False) -> Optional[tuple[list[str], int]]:
    """Ask the authoritative server itself (no resolver, no cache): (normalised values, ttl).
    `recursive`: ask a resolver instead (recursion desired)."""
    target = fqdn(zone, name)
    rdtype = dns.rdatatype.from_text(rtype.upper())
    query = dns.message.make_query(target, rdtype, use_edns=0, payload=1232)
    if not recursive:
        query.flags &= ~dns.flags.RD  # an authoritative answer, not a recursive one
    try:
        response, _ = dns.query.udp_with_fallback(query, server, port=int(port), timeout=TIMEOUT)
    except (OSError, dns.exception.Timeout) as err:
        raise DnsServerUnreachable(f"query {rtype} {target} at {server}:{port}: {err}; "
                                   "is the DNS server running?") from err
    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return None
    if rcode != dns.rcode.NOERROR:
        raise DnsRecordError(f"query {rtype} {target} at {server}:{port}: "
                             f"{dns.rcode.to_text(rcode)}; does the server serve zone {zone}?")
    try:
        rrset = response.find_rrset(response.answer, target, dns.rdataclass.IN, rdtype)
    except KeyError:
        return None
    return normalise(rtype, [_rdata_text(rtype, r) for r in rrset]), rrset.ttl


def _rdata(rtype: str, value: TxtValue) -> dns.rdata.Rdata:
    rtype = rtype.upper()
    if rtype not in SUPPORTED_TYPES:
        raise DnsRecordError(f"record type {rtype} is not supported; use one of {SUPPORTED_TYPES}")
    if rtype == "TXT":  # built from bytes, so quotes and semicolons need no zone-file escaping
        return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, split_txt(value))
    return dns.rdata.from_text(dns.rdataclass.IN, rtype, value, origin=dns.name.root,
                               relativize=False)


def _rdata_text(rtype: str, rdata: dns.rdata.Rdata) -> TxtValue:
    if rtype.upper() == "TXT":
        return [s.decode() for s in rdata.strings]
    return rdata.to_text()


def _update_message(zone: str, tsig: Optional[Tsig]) -> dns.update.UpdateMessage:
    keyring = dns.tsig.Key(tsig.name, tsig.secret, tsig.algorithm) if tsig else None
    return dns.update.UpdateMessage(zone, keyring=keyring)


def _send(update: dns.update.UpdateMessage, server: str, port: int, what: str) -> None:
    # TCP: a DKIM key makes the message larger than a safe UDP payload.
    try:
        response = dns.query.tcp(update, server, port=int(port), timeout=TIMEOUT)
    except dns.tsig.PeerError as err:  # the server answered NOTAUTH with a TSIG error
        raise DnsRecordError(f"{what} at {server}:{port}: NOTAUTH ({type(err).__name__}): the "
                             "server does not accept this TSIG key; check its name and secret") from err
    except (OSError, dns.exception.Timeout) as err:
        raise DnsServerUnreachable(f"{what} at {server}:{port}: {err}; "
                                   "is the DNS server running?") from err
    except dns.exception.DNSException as err:
        raise DnsRecordError(f"{what} at {server}:{port}: {err}") from err
    rcode = response.rcode()
    if rcode != dns.rcode.NOERROR:
        raise DnsRecordError(f"{what} at {server}:{port}: {dns.rcode.to_text(rcode)}; the zone's "
                             "update-policy must grant this TSIG key (unsigned updates are refused)")
