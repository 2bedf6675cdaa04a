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
                 dkim_public_key: pulumi.Input[str]) -> list[Record]:
    """The records of `cfg.domain`, by key (the order is the declaration order)."""
    records = [
        Record("a", cfg.hostname, "A", [ipv4]),
        Record("mx", "@", "MX", [f"10 {cfg.fqdn}."]),
        Record("spf", "@", "TXT", ["v=spf1 mx -all"]),
        Record("dkim", f"{cfg.dkim_selector}._domainkey", "TXT",
               [pulumi.Output.from_input(dkim_public_key).apply(dkim_txt)]),
        Record("dmarc", "_dmarc", "TXT", [dmarc_txt(cfg.dmarc_policy, cfg.dmarc_rua)]),
    ]
    if ipv6 is not None:
        records.insert(1, Record("aaaa", cfg.hostname, "AAAA", [ipv6]))
    return records


def reverse_zone(ip: str) -> tuple[str, str]:
    """(zone, relative name) of the PTR for `ip`: a /24 or a /64 reverse zone."""
    ptr = ipaddress.ip_address(ip).reverse_pointer
    labels = ptr.split(".")
    cut = 1 if ipaddress.ip_address(ip).version == 4 else 16
    return ".".join(labels[cut:]), ".".join(labels[:cut])
