"""`bulletproof-agent status`: what a mail admin checks every morning, as pass/warn/fail.

Each check returns one ``Check`` with a one-line reason and, unless it passed, the fix.
Only ``fail`` makes ``status`` exit 1 (and fails a deploy's verification): a self-signed
certificate on the local stack or a slow disk is worth a warning, not a stopped deploy.

The DNS checks (checks_dns) ask the host's own unbound; the host checks (checks_host) read
the live system. Both take their facts from the applied spec's public part, so ``status``
needs no secrets.
"""
from __future__ import annotations

import json

from agent import contract
from agent.verdict import Check

# Thresholds, overridable with `status --threshold NAME=VALUE` (tests make checks trip).
THRESHOLDS = contract.THRESHOLDS


def facts_from_spec(public: dict) -> dict:
    """What the checks need from the applied spec (its public part)."""
    feats = public.get("features") or {}
    return {
        "domain": public["domain"], "hostname": public["hostname"],
        "ipv4": public["ipv4"], "ipv6": public.get("ipv6"),
        "selector": (public.get("dkim") or {}).get("selector", "s1"),
        # every domain but the primary (the one above): [{name, selector}]
        "other_domains": [{"name": m["name"], "selector": m.get("dkim_selector", "s1")}
                          for m in (public.get("domains") or [])[1:]],
        "dnsbl_sites": [dnsbl_site(s) for s in (public.get("postscreen") or {}).get("dnsbl_sites", [])],
        "tls_mode": (public.get("tls") or {}).get("mode", "self-signed"),
        "tcp_ports": list(contract.public_tcp_ports(feats.get("ssh_port", contract.SSH_PORT),
                                                    bool(feats.get("https")))),
        "backup": public.get("backup"),
        "firewall": (public.get("ssh") or {}).get("firewall", "managed"),
    }


def dnsbl_site(site: dict) -> dict:
    """A spec site as the DNSBL check asks it: its public name, the zone unbound is asked
    (a DQS site's alias) and the reply filter (older specs carry none: the same default)."""
    zone = site["zone"]
    return {"zone": zone, "query": contract.dqs_alias(zone) if site.get("dqs") else zone,
            "filter": contract.dnsbl_filter(zone, site.get("filter"))}


def run_all(facts: dict, thresholds: dict | None = None, nameserver: str = "127.0.0.1",
            port: int = 53) -> list[Check]:
    from agent import checks_backup, checks_dns, checks_host
    limits = {**THRESHOLDS, **(thresholds or {})}
    dns = checks_dns.Lookup(nameserver, port)
    out = checks_dns.run(dns, facts, helo=checks_host.helo_name(),
                         dkim_p=checks_host.signing_key_p(facts),
                         dkim_p_of=lambda name, selector: checks_host.signing_key_p(
                             {"domain": name, "selector": selector}))
    out += checks_host.run(facts, limits)
    return out + checks_backup.run(facts, limits)


def parse_thresholds(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        name, _, value = item.partition("=")
        if name not in THRESHOLDS or not value:
            raise ValueError(f"--threshold {item!r}: expected NAME=VALUE with NAME one of "
                             + ", ".join(THRESHOLDS))
        out[name] = type(THRESHOLDS[name])(value)
    return out


def load_public_spec(path: str) -> dict:
    with open(path) as f:
        return json.load(f)
