"""Reputation preflight: is the host's IP on a configured DNSBL? Checked before any DNS record
is written or the agent runs, so a dirty IP stops `pulumi up` instead of a mail server that
nobody accepts mail from.

Lookups go to the stack's own resolver (the local stack's BIND serves the test DNSBL zone), never
to a public resolver: DNSBLs block queries that come through shared resolvers.
"""
from __future__ import annotations

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

from agent.contract import (classify_dnsbl, dnsbl_filter, dnsbl_query_name, dnsbl_refusal_text,
                            dqs_zone)


class ListedIpError(RuntimeError):
    pass


def _ask(name: str, rtype: str, resolver: str, port: int) -> list[str]:
    query = dns.message.make_query(name, rtype)
    reply = dns.query.udp(query, resolver, port=port, timeout=5)
    if reply.rcode() == dns.rcode.NXDOMAIN:
        return []
    if reply.rcode() != dns.rcode.NOERROR:
        raise ListedIpError(f"DNSBL lookup {name} {rtype} failed: {dns.rcode.to_text(reply.rcode())}")
    return [r.to_text().strip('"') for rrset in reply.answer if rrset.rdtype == dns.rdatatype.from_text(rtype)
            for r in rrset]


def listings(ip: str, zones: list[str], resolver: str, port: int = 53, filters: dict | None = None,
             dqs_key: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """({zone: listing text}, {zone: refusal text}): a listing is an answer inside the zone's
    reply filter; another 127.x answer is the DNSBL refusing this resolver, never a listing.
    With `dqs_key`, Spamhaus zones are asked through their DQS form (named by the public zone,
    so no message holds the key)."""
    found, refused = {}, {}
    for zone in zones:
        asked = (dqs_key and dqs_zone(zone, dqs_key)) or zone
        name = dnsbl_query_name(ip, asked)
        try:
            verdict, codes = classify_dnsbl(_ask(name, "A", resolver, port),
                                            dnsbl_filter(zone, (filters or {}).get(zone)))
            if verdict == "listed":
                found[zone] = "; ".join(_ask(name, "TXT", resolver, port)) or f"listed ({codes[0]})"
        except ListedIpError as err:
            raise ListedIpError(str(err).replace(asked, zone)) from None
        except dns.exception.DNSException as err:
            raise ListedIpError(f"DNSBL lookup of {ip} on {zone} through {resolver}:{port} failed: "
                                f"{type(err).__name__}") from None
        if verdict == "refused":
            refused[zone] = dnsbl_refusal_text(zone, codes)
    return found, refused


class _ReputationProvider(ResourceProvider):
    def create(self, props):
        return CreateResult(id_=props["ip"], outs=self._check(props))

    def update(self, _id, _olds, news):
        return UpdateResult(outs=self._check(news))

    def diff(self, _id, olds, news):
        keys = ("ip", "zones", "allow_listed_ip", "resolver", "filters", "dqs_key")
        return DiffResult(changes=any(olds.get(k) != news.get(k) for k in keys), replaces=[])

    def _check(self, props):
        from components import reputation
        host, _, port = props["resolver"].rpartition(":")
        found, refused = reputation.listings(props["ip"], props["zones"], host, int(port),
                                             props.get("filters"), props.get("dqs_key"))
        if found and not props["allow_listed_ip"]:
            lines = [f"{zone}: {text}" for zone, text in sorted(found.items())]
            raise reputation.ListedIpError(
                f"the host IP {props['ip']} is listed on {len(found)} DNSBL(s): " + " | ".join(lines)
                + ". Mail from it will be refused. Ask your provider for another IP (or get it "
                  "delisted), or set `bulletproof-mail:allow_listed_ip: true` to proceed anyway.")
        return {**props, "listed": sorted(found),
                "refused": [f"DNSBL refuses our resolver: {t}" for _, t in sorted(refused.items())]}


class ReputationCheck(Resource, module="reputation", name="DnsblCheck"):
    """Fails the deploy when the host IP is on one of `zones` (unless allowed). `filters`:
    {zone: reply filter}; `dqs_key`: a secret Input (kept encrypted in the state)."""

    listed: pulumi.Output[list]
    refused: pulumi.Output[list]

    def __init__(self, name: str, ip: pulumi.Input[str], zones: list[str], resolver: pulumi.Input[str],
                 allow_listed_ip: bool, opts: pulumi.ResourceOptions | None = None,
                 filters: dict | None = None, dqs_key: pulumi.Input[str] | None = None):
        super().__init__(_ReputationProvider(), name, {
            "ip": ip, "zones": zones, "resolver": resolver, "allow_listed_ip": allow_listed_ip,
            "filters": filters or {}, "dqs_key": pulumi.Output.secret(dqs_key) if dqs_key else None,
            "listed": None, "refused": None}, opts)
