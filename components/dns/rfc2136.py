"""dns_backend rfc2136 (the default): records by RFC 2136 UPDATE with TSIG (BIND, Knot, PowerDNS,
and the local stack's own server), each an RRset resource read back by query on refresh."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi

from agent import contract
from components import schema
from components.backends import DnsBackend
from components.dns import DnsArgs, Record
from components.dns.records import reverse_zone
from components.dns_record import DnsRecord, DnsRecordArgs
from components.schema import Key
from localcloud import rfc2136

TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1", "hmac-md5")


@dataclass(frozen=True)
class Settings:
    """The RFC 2136 server the records go to; its TSIG secret stays a Pulumi secret."""
    server: str         # "IP:port"
    tsig_name: str
    tsig_algorithm: str
    zone: str           # the zone the mail records live in (the domain or a parent of it)


def _record(name: str, target: dict, rname: str, rtype: str, values, parent, after) -> DnsRecord:
    addr = pulumi.Output.from_input(target["server"])
    return DnsRecord(name, DnsRecordArgs(
        server=addr.apply(lambda a: a.rsplit(":", 1)[0]),
        port=addr.apply(lambda a: int(a.rsplit(":", 1)[1])),
        zone=target["zone"], name=rname, type=rtype, values=values, ttl=300,
        tsig_name=target["tsig_name"], tsig_algorithm=target["tsig_algorithm"],
        tsig_secret=target["tsig_secret"],
        forget_when_unreachable=target.get("forget_when_unreachable", False)),
        pulumi.ResourceOptions(parent=parent, depends_on=after))


class Rfc2136Zone(pulumi.ComponentResource):
    """The mail records of a domain as RRsets on an RFC 2136 server (`records`: by key)."""

    def __init__(self, name: str, args: DnsArgs, opts: pulumi.ResourceOptions | None = None):
        # Was bulletproof:mail:MailDns: the alias keeps every record's identity.
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            aliases=[pulumi.Alias(type_="bulletproof:mail:MailDns")]))
        super().__init__("bulletproof:dns:Rfc2136", name, None, opts)
        zone, domain = args.target["zone"], args.domain
        records = args.records
        if zone != domain:  # records of a domain inside a parent zone: absolute names
            records = [Record(r.key, f"{domain}." if r.name == "@" else f"{r.name}.{domain}.", r.type, r.values)
                       for r in records]
        # `after`: a component's depends_on does not reach its children, so each record waits
        self.records = {r.key: _record(f"{name}-{r.key}", args.target, r.name, r.type, r.values,
                                       self, args.after) for r in records}
        self.register_outputs({})


class ReverseDns(pulumi.ComponentResource):
    """PTR records: every address the host sends from -> the mail FQDN (FCrDNS)."""

    def __init__(self, name: str, target: dict, fqdn: str, ipv4: pulumi.Input[str],
                 ipv6: pulumi.Input[str] | None, after: list | None = None,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("bulletproof:mail:ReverseDns", name, None, opts)
        self.records = []
        for family, ip in (("v4", ipv4), ("v6", ipv6)):
            if ip is None:
                continue
            where = pulumi.Output.from_input(ip).apply(reverse_zone)
            self.records.append(_record(f"{name}-ptr-{family}", {**target, "zone": where[0]},
                                        where[1], "PTR", [fqdn + "."], self, after))
        self.register_outputs({})


def _settings(c, v) -> Settings:
    zone, domain = v.get("dns_zone") or v["domain"], v["domain"]
    if domain and zone and not (domain == zone or domain.endswith("." + zone)):
        c.err("dns_zone", f"{zone!r} does not contain the domain {domain!r}; set the zone the "
                          f"records go to: the domain itself or a parent of it")
    return Settings(server=v["dns_server"], tsig_name=v["dns_tsig_name"],
                    tsig_algorithm=v["dns_tsig_algorithm"], zone=zone)


def target(settings: Settings, secrets: dict) -> dict:
    """The component's target: the settings and the TSIG secret (an Output)."""
    return {"server": settings.server, "tsig_name": settings.tsig_name,
            "tsig_algorithm": settings.tsig_algorithm, "tsig_secret": secrets["dns_tsig_secret"],
            "zone": settings.zone}


class AuthoritativeLookup:
    """The operator commands' view of the records: ask the server that holds them, and the
    resolver for names outside its zone (a PTR at the provider, say)."""

    def __init__(self, server: str, zone: str, resolver: str | None = None):
        self.server, self.zone, self.resolver = server, zone.rstrip(".") + ".", resolver or server

    def __call__(self, name: str, rtype: str) -> list[str]:
        absolute = name.rstrip(".") + "."
        inside = absolute == self.zone or absolute.endswith("." + self.zone)
        host, port = contract.split_ip_port(self.server if inside else self.resolver)
        found = rfc2136.read(host, port, ".", absolute, rtype, recursive=not inside)
        return [v.rstrip(".").lower() if rtype != "TXT" else v for v in (found or ([], 0))[0]]


def lookup(outs: dict) -> AuthoritativeLookup:
    return AuthoritativeLookup(outs["dns_server"], outs.get("dns_zone") or outs["domain"],
                               outs.get("resolver"))


def _txt_values(rtype: str, props) -> list | None:
    return list(props.get("values") or []) if rtype == f"pulumi-python:{DnsRecord._resource_type_name}" else None


BACKEND = DnsBackend(
    name="rfc2136", component=Rfc2136Zone, settings=_settings, target=target, lookup=lookup,
    txt_values=_txt_values,
    keys=(
        Key("dns_server", schema.ip_port("set the RFC 2136 server that takes updates for the zone, "
                                         "e.g. dns_server: 192.0.2.53:53"),
            hint="set the RFC 2136 server that takes updates for the zone, e.g. dns_server: 192.0.2.53:53"),
        Key("dns_tsig_name", schema.text("is not a TSIG key name; e.g. dns_tsig_name: mail-updates"),
            hint="set the name of the TSIG key the DNS server allows updates with, e.g. "
                 "dns_tsig_name: mail-updates"),
        Key("dns_tsig_algorithm", schema.choice(TSIG_ALGORITHMS, "a TSIG algorithm"), "hmac-sha256"),
        Key("dns_tsig_secret", schema.text("is empty; set the TSIG key's base64 secret"), secret=True,
            hint="pulumi config set --secret dns_tsig_secret 'BASE64...'"),
        Key("dns_zone", schema.domain(), lambda v, stack: v.get("domain")),
    ),
)
