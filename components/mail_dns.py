"""The mail DNS records (A/AAAA, MX, SPF, DKIM, DMARC) and the reverse DNS, each a resource.

Records go to an RFC 2136 server (DnsServer, the default) or a hosted zone (dns_cloudflare).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi

from components.dns_record import DnsRecord, DnsRecordArgs


@dataclass
class DnsServer:
    """Where the records live: an RFC 2136 server and its TSIG key (secret)."""
    address: pulumi.Input[str]  # "IP:port"
    tsig_name: pulumi.Input[str]
    tsig_algorithm: pulumi.Input[str]
    tsig_secret: pulumi.Input[str]


def _record(name: str, server: DnsServer, zone, rname, rtype: str, values, parent,
            after: list | None) -> DnsRecord:
    addr = pulumi.Output.from_input(server.address)
    return DnsRecord(name, DnsRecordArgs(
        server=addr.apply(lambda a: a.rsplit(":", 1)[0]),
        port=addr.apply(lambda a: int(a.rsplit(":", 1)[1])),
        zone=zone, name=rname, type=rtype, values=values, ttl=300,
        tsig_name=server.tsig_name, tsig_algorithm=server.tsig_algorithm,
        tsig_secret=server.tsig_secret), pulumi.ResourceOptions(parent=parent, depends_on=after))


def dkim_txt(public_key_b64: str) -> str:
    return f"v=DKIM1; k=rsa; p={public_key_b64}"


def reverse_zone(ip: str) -> tuple[str, str]:
    """(zone, relative name) of the PTR for `ip`: a /24 or a /64 reverse zone."""
    ptr = ipaddress.ip_address(ip).reverse_pointer
    labels = ptr.split(".")
    cut = 1 if ipaddress.ip_address(ip).version == 4 else 16
    return ".".join(labels[cut:]), ".".join(labels[:cut])


class ReverseDns(pulumi.ComponentResource):
    """PTR records: every address the host sends from -> the mail FQDN (FCrDNS)."""

    def __init__(self, name: str, server: DnsServer, fqdn: str, ipv4: pulumi.Input[str],
                 ipv6: pulumi.Input[str] | None, after: list | None = None,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("bulletproof:mail:ReverseDns", name, None, opts)
        self.records = []
        for family, ip in (("v4", ipv4), ("v6", ipv6)):
            if ip is None:
                continue
            where = pulumi.Output.from_input(ip).apply(reverse_zone)
            self.records.append(_record(f"{name}-ptr-{family}", server, where[0], where[1], "PTR",
                                        [fqdn + "."], self, after))
        self.register_outputs({})


class MailDns(pulumi.ComponentResource):
    """A/AAAA of the host, MX, SPF, DKIM and DMARC of the domain.

    `server`: a DnsServer (RFC 2136) or a dns_cloudflare.CloudflareZone.
    """

    def __init__(self, name: str, server, domain: str, hostname: str,
                 ipv4: pulumi.Input[str], ipv6: pulumi.Input[str] | None, dkim_selector: str,
                 dkim_public_key: pulumi.Input[str], dmarc_policy: str, dmarc_rua: str | None,
                 after: list | None = None, opts: pulumi.ResourceOptions | None = None,
                 zone: str | None = None):
        super().__init__("bulletproof:mail:MailDns", name, None, opts)
        dmarc = f"v=DMARC1; p={dmarc_policy}" + (f"; rua=mailto:{dmarc_rua}" if dmarc_rua else "")
        wanted = [
            ("a", hostname, "A", [ipv4]),
            ("mx", "@", "MX", [f"10 {hostname}.{domain}."]),
            ("spf", "@", "TXT", ["v=spf1 mx -all"]),
            ("dkim", f"{dkim_selector}._domainkey", "TXT",
             [pulumi.Output.from_input(dkim_public_key).apply(dkim_txt)]),
            ("dmarc", "_dmarc", "TXT", [dmarc]),
        ]
        if ipv6 is not None:
            wanted.insert(1, ("aaaa", hostname, "AAAA", [ipv6]))
        if not isinstance(server, DnsServer):  # a hosted zone (Cloudflare): records by full name
            from components import dns_cloudflare
            self.records = {key: dns_cloudflare.record(server, f"{name}-{key}", domain, rname, rtype, values,
                                                       self, after)
                            for key, rname, rtype, values in wanted}
            self.register_outputs({})
            return
        zone = zone or domain
        if zone != domain:  # records of a domain inside a parent zone: absolute names
            wanted = [(k, f"{domain}." if r == "@" else f"{r}.{domain}.", t, v) for k, r, t, v in wanted]
        # `after`: resources every record waits for (a component's depends_on does not reach its children)
        self.records = {key: _record(f"{name}-{key}", server, zone, rname, rtype, values, self, after)
                        for key, rname, rtype, values in wanted}
        self.register_outputs({})
