"""DNS records managed by RFC 2136 UPDATE with TSIG (BIND, Knot, PowerDNS, the local server).

Plain functions first (`upsert`, `delete`, `read`), then a Pulumi dynamic provider on top.

Dynamic providers are pickled into the state. This pulumi version pickles the provider class
by reference (`components.dns_record.DnsRecordProvider`), so editing this module does not show
up as a diff on every record; the provider process imports it from the project root (its cwd).
Keep the module free of import-time side effects and of project imports.
"""

from __future__ import annotations

from dataclasses import dataclass
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
import pulumi
import pulumi.dynamic

SUPPORTED_TYPES = ("A", "AAAA", "CNAME", "MX", "PTR", "TXT")
TXT_CHUNK = 255  # RFC 1035: one character-string holds at most 255 bytes
TIMEOUT = 5.0
# Changing one of these addresses a different RRset, so the old one must go: replace.
REPLACE_KEYS = ("zone", "name", "type")
UPDATE_KEYS = ("values", "ttl", "server", "port", "tsig_name", "tsig_algorithm", "tsig_secret")

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


def read(server: str, port: int, zone: str, name: str,
         rtype: str) -> Optional[tuple[list[str], int]]:
    """Ask the authoritative server itself (no resolver, no cache): (normalised values, ttl)."""
    target = fqdn(zone, name)
    rdtype = dns.rdatatype.from_text(rtype.upper())
    query = dns.message.make_query(target, rdtype, use_edns=0, payload=1232)
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


def record_diff(olds: dict, news: dict) -> tuple[list[str], list[str]]:
    """(changed keys, keys forcing a replacement) between stored outputs and new inputs."""
    def same(key: str) -> bool:
        old, new = olds.get(key), news.get(key)
        try:
            if key == "values":
                return normalise(news["type"], old or []) == normalise(news["type"], new or [])
            if key == "name":
                return fqdn(olds["zone"], old) == fqdn(news["zone"], new)
            if key in ("zone", "type"):
                return str(old).rstrip(".").lower() == str(new).rstrip(".").lower()
            if key in ("ttl", "port"):
                return int(old) == int(new)
        except (ValueError, TypeError, KeyError, DnsRecordError, dns.exception.DNSException):
            pass  # unknown during preview, or unparsable: compare as given
        return old == new

    changed = [k for k in REPLACE_KEYS + UPDATE_KEYS if not same(k)]
    return changed, [k for k in changed if k in REPLACE_KEYS]


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


class DnsRecordProvider(pulumi.dynamic.ResourceProvider):
    """CRUD for one RRset. Small on purpose: it is what the state records as `__provider`."""

    serialize_as_secret_always = False  # it captures no secret; the TSIG secret is an input

    def check(self, _olds, news):
        from pulumi.runtime import rpc  # preview passes values not known yet as this marker

        failures = []
        rtype, values = news.get("type"), news.get("values")
        if rtype == rpc.UNKNOWN:
            return pulumi.dynamic.CheckResult(news, failures)
        if str(rtype).upper() not in SUPPORTED_TYPES:
            failures.append(pulumi.dynamic.CheckFailure("type", f"use one of {SUPPORTED_TYPES}"))
        elif values != rpc.UNKNOWN and all(
                isinstance(v, (str, list, tuple)) and v != rpc.UNKNOWN for v in (values or [])):
            try:
                if not values:
                    raise DnsRecordError("at least one value is needed")
                normalise(rtype, values)
            except (DnsRecordError, dns.exception.DNSException, ValueError) as err:
                failures.append(pulumi.dynamic.CheckFailure("values", f"{rtype}: {err}"))
        return pulumi.dynamic.CheckResult(news, failures)

    def create(self, props):
        outs = self._write(props)
        return pulumi.dynamic.CreateResult(f"{outs['fqdn']}/{outs['type']}", outs)

    def update(self, _id, _olds, news):
        return pulumi.dynamic.UpdateResult(self._write(news))

    def delete(self, _id, props):
        delete(props["server"], props["port"], _tsig(props), props["zone"], props["name"],
               props["type"])

    def diff(self, _id, olds, news):
        changed, replaces = record_diff(olds, news)
        # Delete first: a name holds one RRset per type and a CNAME cannot sit beside others.
        return pulumi.dynamic.DiffResult(changes=bool(changed), replaces=replaces,
                                         delete_before_replace=True)

    def read(self, id_, props):
        try:
            live = read(props["server"], props["port"], props["zone"], props["name"], props["type"])
        except DnsServerUnreachable:
            # The local server is gone after a reboot: the record went with it. Safe to forget,
            # since create is an idempotent upsert; `up` restarts the server, then re-creates.
            live = None
        if live is None:  # gone: refresh drops it from the state and the next `up` re-creates it
            return pulumi.dynamic.ReadResult("", {})
        values, ttl = live
        # The TSIG secret stays in the outputs (delete needs it); the engine keeps it secret.
        return pulumi.dynamic.ReadResult(id_, {**props, "values": values, "ttl": ttl})

    def _write(self, props):
        upsert(props["server"], props["port"], _tsig(props), props["zone"], props["name"],
               props["type"], props["values"], props["ttl"])
        return {**props, "type": props["type"].upper(),
                "values": normalise(props["type"], props["values"]),
                "fqdn": fqdn(props["zone"], props["name"]).to_text()}


def _tsig(props: dict) -> Tsig:
    return Tsig(props["tsig_name"], props["tsig_algorithm"], props["tsig_secret"])


@dataclass
class DnsRecordArgs:
    server: pulumi.Input[str]
    port: pulumi.Input[int]
    zone: pulumi.Input[str]
    name: pulumi.Input[str]  # relative to the zone; "@" for the apex
    type: pulumi.Input[str]
    values: pulumi.Input[Sequence[pulumi.Input[str]]]
    tsig_name: pulumi.Input[str]
    tsig_secret: pulumi.Input[str]
    tsig_algorithm: pulumi.Input[str] = "hmac-sha256"
    ttl: pulumi.Input[int] = 300


class DnsRecord(pulumi.dynamic.Resource, module="rfc2136", name="DnsRecord"):
    """One RRset on an RFC 2136 server; `pulumi refresh` reads it back from the server."""

    fqdn: pulumi.Output[str]
    values: pulumi.Output[list]
    ttl: pulumi.Output[int]

    def __init__(self, resource_name: str, args: DnsRecordArgs,
                 opts: Optional[pulumi.ResourceOptions] = None) -> None:
        props = {
            "server": args.server, "port": args.port, "zone": args.zone, "name": args.name,
            "type": args.type, "values": args.values, "ttl": args.ttl,
            "tsig_name": args.tsig_name, "tsig_algorithm": args.tsig_algorithm,
            "tsig_secret": pulumi.Output.secret(args.tsig_secret),
            "fqdn": None,  # computed by the provider
        }
        # The provider cannot handle secrets itself; this keeps the output copy encrypted too.
        secret_opts = pulumi.ResourceOptions(additional_secret_outputs=["tsig_secret"])
        super().__init__(DnsRecordProvider(), resource_name, props,
                         pulumi.ResourceOptions.merge(opts, secret_opts))
