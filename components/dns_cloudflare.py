"""dns_backend cloudflare: the mail record set as Cloudflare DNS records (pulumi-cloudflare).

The API token comes from the provider's usual places (CLOUDFLARE_API_TOKEN, or
`pulumi config set --secret cloudflare:apiToken ...`), never from the stack's own config.
Records are written by their full names, unproxied (mail must reach the host itself), and each
TXT value as quoted <=255-byte strings, so a 2048-bit DKIM key is two strings of one record.
"""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_cloudflare as cloudflare

from localcloud.rfc2136 import split_txt

TTL = 300


@dataclass
class CloudflareZone:
    """Where the records live: a Cloudflare zone, by ID (MailDns's `server` for this backend)."""
    zone_id: str


class MailRecord(cloudflare.DnsRecord):
    """A Cloudflare record that also answers what the stack reads from a DnsRecord: fqdn, values."""

    def __init__(self, resource_name: str, fqdn: str, values: list, opts: pulumi.ResourceOptions, **args):
        super().__init__(resource_name, opts=opts, **args)
        self.fqdn, self.values = fqdn, values


def txt_content(value: str) -> str:
    """A TXT value as Cloudflare's content: quoted character-strings of at most 255 bytes."""
    quote = lambda chunk: '"' + chunk.decode().replace("\\", "\\\\").replace('"', '\\"') + '"'  # noqa: E731
    return " ".join(quote(chunk) for chunk in split_txt(value))


def record(zone: CloudflareZone, name: str, domain: str, rname: str, rtype: str, values: list,
           parent: pulumi.Resource, after: list | None) -> MailRecord:
    """One RRset: MailDns's (name relative to the domain, type, values) as Cloudflare records.

    MailDns wants one value per RRset (A, AAAA, MX, SPF, DKIM, DMARC), so one resource each.
    """
    (value,) = values
    fqdn = domain if rname == "@" else f"{rname}.{domain}"
    args: dict = {"zone_id": zone.zone_id, "name": fqdn, "type": rtype, "ttl": TTL}
    if rtype in ("A", "AAAA"):
        args.update(content=value, proxied=False)
    elif rtype == "MX":  # "10 mail.example.no." -> priority 10, content mail.example.no
        priority, target = value.split()
        args.update(content=target.rstrip("."), priority=int(priority))
    elif rtype == "TXT":
        args.update(content=pulumi.Output.from_input(value).apply(txt_content))
    else:
        raise ValueError(f"no Cloudflare mapping for {rtype} records")
    return MailRecord(name, fqdn, list(values), pulumi.ResourceOptions(parent=parent, depends_on=after), **args)
