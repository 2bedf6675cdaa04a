"""What the mail DNS is: the record set of a mail domain (A/AAAA, MX, SPF, DKIM, DMARC), whatever
backend publishes it, and where a PTR of an address lives."""
from __future__ import annotations

import ipaddress

import pulumi

from components.dns import Record


def dkim_txt(public_key_b64: str) -> str:
    return f"v=DKIM1; k=rsa; p={public_key_b64}"


def dmarc_txt(policy: str, rua: str | None) -> str:
    return f"v=DMARC1; p={policy}" + (f"; rua=mailto:{rua}" if rua else "")


def mail_records(cfg, ipv4: pulumi.Input[str], ipv6: pulumi.Input[str] | None,
                 dkim_public_key: pulumi.Input[str], domain=None) -> list[Record]:
    """The records of one mail domain (`domain`, a MailDomain; default the primary), by key (the
    order is the declaration order). Only the primary's zone holds the host's A/AAAA."""
    d = domain or cfg.domains[0]
    primary = d.name == cfg.domain
    records = [
        Record("mx", "@", "MX", [f"10 {cfg.fqdn}."]),
        Record("spf", "@", "TXT", ["v=spf1 mx -all"]),
        Record("dkim", f"{d.dkim_selector}._domainkey", "TXT",
               [pulumi.Output.from_input(dkim_public_key).apply(dkim_txt)]),
        Record("dmarc", "_dmarc", "TXT", [dmarc_txt(d.dmarc_policy, d.dmarc_rua)]),
    ]
    if primary:
        records[:0] = [Record("a", cfg.hostname, "A", [ipv4]),
                       *([Record("aaaa", cfg.hostname, "AAAA", [ipv6])] if ipv6 is not None else [])]
    # Another of our domains sends its DMARC reports here: RFC 7489 7.1 wants this zone to say so.
    records += [Record(f"report-{other}", f"{other}._report._dmarc", "TXT", ["v=DMARC1"])
                for other in report_senders(cfg, d.name)]
    return records


def report_senders(cfg, domain: str) -> list[str]:
    """Our other domains whose DMARC rua is an address in `domain` (external reports authorised)."""
    return [d.name for d in cfg.domains
            if d.name != domain and d.dmarc_rua and d.dmarc_rua.rpartition("@")[2].lower() == domain.lower()]


def reverse_zone(ip: str) -> tuple[str, str]:
    """(zone, relative name) of the PTR for `ip`: a /24 or a /64 reverse zone."""
    ptr = ipaddress.ip_address(ip).reverse_pointer
    labels = ptr.split(".")
    cut = 1 if ipaddress.ip_address(ip).version == 4 else 16
    return ".".join(labels[cut:]), ".".join(labels[:cut])
