"""dns_backend cloudflare: the mail record set as Cloudflare DNS records (pulumi-cloudflare).

The API token comes from the provider's usual places (CLOUDFLARE_API_TOKEN, or
`pulumi config set --secret cloudflare:apiToken ...`), never from the stack's own config.
Records are written by their full names, unproxied (mail must reach the host itself), and each
TXT value as quoted <=255-byte strings, so a 2048-bit DKIM key is two strings of one record.
The SDK is imported only when records are declared.
"""
from __future__ import annotations

import functools
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

import dns.exception
import pulumi

from components import schema
from components.backends import DnsBackend
from components.dns import DnsArgs
from components.schema import Key
from localcloud.rfc2136 import split_txt

TTL = 300
RECORD_TYPE = "cloudflare:index/dnsRecord:DnsRecord"
API = "https://api.cloudflare.com/client/v4"
API_ENV = "CLOUDFLARE_API_BASE"   # another base URL (a test's local fake of the API)


@dataclass(frozen=True)
class Settings:
    zone_id: str
    zone: str           # the domain: records are written by their full names


def txt_content(value: str) -> str:
    """A TXT value as Cloudflare's content: quoted character-strings of at most 255 bytes."""
    quote = lambda chunk: '"' + chunk.decode().replace("\\", "\\\\").replace('"', '\\"') + '"'  # noqa: E731
    return " ".join(quote(chunk) for chunk in split_txt(value))


def unquote(content: str) -> str:
    """Cloudflare's TXT content back to the value: '"a" "b"' -> 'ab' (our values hold no quotes)."""
    return "".join(content.split('"')[1::2]) if content.startswith('"') else content


@functools.cache
def _record_class():
    import pulumi_cloudflare as cloudflare

    class MailRecord(cloudflare.DnsRecord):
        """A Cloudflare record that also answers what the stack reads of a record: fqdn, values."""

        def __init__(self, resource_name: str, fqdn: str, values: list, opts, **args):
            super().__init__(resource_name, opts=opts, **args)
            self.fqdn, self.values = fqdn, values
    return MailRecord


class CloudflareZone(pulumi.ComponentResource):
    """The mail records of a domain in a Cloudflare zone, one resource per RRset (`records`)."""

    def __init__(self, name: str, args: DnsArgs, opts: pulumi.ResourceOptions | None = None):
        # Was bulletproof:mail:MailDns: the alias keeps every record's identity.
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            aliases=[pulumi.Alias(type_="bulletproof:mail:MailDns")]))
        super().__init__("bulletproof:dns:Cloudflare", name, None, opts)
        self.records = {r.key: self._record(f"{name}-{r.key}", args, r.name, r.type, r.values)
                        for r in args.records}
        self.register_outputs({})

    def _record(self, name: str, args: DnsArgs, rname: str, rtype: str, values: list):
        (value,) = values  # the mail record set holds one value per RRset
        fqdn = args.domain if rname == "@" else f"{rname}.{args.domain}"
        props: dict = {"zone_id": args.target.zone_id, "name": fqdn, "type": rtype, "ttl": TTL}
        if rtype in ("A", "AAAA"):
            props.update(content=value, proxied=False)
        elif rtype == "MX":  # "10 mail.example.no." -> priority 10, content mail.example.no
            priority, target = value.split()
            props.update(content=target.rstrip("."), priority=int(priority))
        elif rtype == "TXT":
            props.update(content=pulumi.Output.from_input(value).apply(txt_content))
        else:
            raise ValueError(f"no Cloudflare mapping for {rtype} records")
        return _record_class()(name, fqdn, list(values),
                               pulumi.ResourceOptions(parent=self, depends_on=args.after), **props)


class ApiLookup:
    """The operator commands' view of the records: Cloudflare's API for names in the zone, the
    resolver for the rest (the PTR lives with the address's owner)."""

    def __init__(self, zone_id: str, zone: str, resolver: str, token: str | None = None):
        from components.dns.rfc2136 import AuthoritativeLookup
        self.zone_id, self.zone = zone_id, zone.rstrip(".")
        self.token = token if token is not None else os.environ.get("CLOUDFLARE_API_TOKEN", "")
        self.server = f"cloudflare:{zone_id}"
        self._resolver = AuthoritativeLookup(resolver, ".", resolver)

    def __call__(self, name: str, rtype: str) -> list[str]:
        name = name.rstrip(".").lower()
        if not (name == self.zone or name.endswith("." + self.zone)):
            return self._resolver(name, rtype)
        query = urllib.parse.urlencode({"name": name, "type": rtype})
        request = urllib.request.Request(
            f"{os.environ.get(API_ENV, API)}/zones/{self.zone_id}/dns_records?{query}",
            headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=15) as reply:
                body = json.load(reply)
        except urllib.error.HTTPError as err:  # the API explains itself in the body
            body = json.loads(err.read() or b"{}")
        except (OSError, ValueError) as err:
            raise dns.exception.DNSException(f"Cloudflare API: {err}") from err
        if not body.get("success"):
            messages = "; ".join(e.get("message", "") for e in body.get("errors", []))
            raise dns.exception.DNSException(f"Cloudflare API: {messages or body}")
        out = []
        for rec in body.get("result", []):
            if rtype == "TXT":
                out.append(unquote(rec["content"]))
            elif rtype == "MX":
                out.append(f"{rec.get('priority', 0)} {rec['content'].rstrip('.').lower()}")
            else:
                out.append(rec["content"].rstrip(".").lower())
        return out


def lookup(outs: dict) -> ApiLookup:
    return ApiLookup(outs["dns_server"].removeprefix("cloudflare:"), outs["domain"], outs["resolver"])


def _txt_values(rtype: str, props) -> list | None:
    if rtype != RECORD_TYPE:
        return None
    content = props.get("content")
    return [unquote(content)] if isinstance(content, str) else []


BACKEND = DnsBackend(
    name="cloudflare", component=CloudflareZone, lookup=lookup, txt_values=_txt_values,
    settings=lambda c, v: Settings(zone_id=v["cloudflare_zone_id"], zone=v["domain"]),
    keys=(Key("cloudflare_zone_id", schema.pattern(
        r"[0-9a-f]{32}", "is not a Cloudflare zone ID; copy the 32 hex digits of 'Zone ID' from the "
                         "zone's overview page in the Cloudflare dashboard"),
        hint="copy the 32 hex digits of 'Zone ID' from the zone's overview page"),),
)
