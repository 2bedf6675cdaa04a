"""Host backends: one module per place a mail host can run (registered in components/backends.py).

Each module defines a ComponentResource subclass of `Host` (type token `bulletproof:hosts:<Name>`)
built from `HostArgs`, and `BACKEND`, its entry for the registry: config keys, prechecks, the
Norwegian regions it knows and its policy-pack facts.
"""
from __future__ import annotations

import json

from dataclasses import dataclass, field
from typing import Any

import pulumi


@dataclass
class HostArgs:
    cfg: Any                       # components.config.StackConfig (host settings in cfg.host)
    stack: str
    checkout: str
    known_hosts: str               # the deploying machine's per-stack known_hosts
    zipapp: bytes                  # the agent, for the run id in first-boot user-data
    secrets: dict[str, pulumi.Output] = field(default_factory=dict)  # secret config values
    # The MailServer the host's resources were children of before backends had components of
    # their own: their old URNs, so that moving them into the component replaces nothing.
    moved_from: pulumi.Resource | None = None


@dataclass
class DnsTarget:
    """Where the mail records go: a DNS backend (registry name) and its settings (Outputs allowed)."""
    backend: str
    settings: Any
    zone: str                      # the zone the records go to (the domain or a parent of it)
    url: pulumi.Input[str]         # shown as the dns_server output


def own_dns(cfg, secrets: dict) -> DnsTarget:
    """The DNS backend the user configured (dns_backend), for the backends with own_dns."""
    from components import backends
    backend = backends.dns(cfg.dns_backend)
    url = cfg.dns.server if cfg.dns_backend == "rfc2136" else f"{cfg.dns_backend}:{cfg.dns.zone_id}"
    return DnsTarget(cfg.dns_backend, backend.target(cfg.dns, secrets), cfg.dns.zone, url=url)


def domain_dns(stack_dns: DnsTarget, domain, secrets: dict) -> DnsTarget:
    """Where a non-primary domain's records go: its own `dns` (an RFC 2136 server's TSIG secret
    from the secret domain_dns_secrets; a Cloudflare zone through the provider's token), or the
    stack's own DNS target with the domain as zone."""
    import dataclasses

    from components import backends
    if domain.dns is None:
        settings = stack_dns.settings
        settings = ({**settings, "zone": domain.name} if isinstance(settings, dict)
                    else dataclasses.replace(settings, zone=domain.name))
        return DnsTarget(stack_dns.backend, settings, domain.name, url=stack_dns.url)
    given = secrets.get("domain_dns_secrets")
    # A structured secret reaches the program as its JSON text.
    secret = (pulumi.Output.from_input(given).apply(
        lambda all_: (json.loads(all_) if isinstance(all_, str) else all_ or {}).get(domain.name))
              if given is not None else None)
    name, settings = domain.dns.backend, domain.dns.settings
    target = backends.dns(name).target(settings, {"dns_tsig_secret": secret})
    url = settings.server if name == "rfc2136" else f"{name}:{settings.zone_id}"
    return DnsTarget(name, target, settings.zone, url=url)


@dataclass
class BackupTarget:
    """Where the host's backups go: a restic repository, the region it stands in (residency),
    and the environment its backend needs (a secret Output, or None)."""
    repository: pulumi.Input[str]
    region: pulumi.Input[str]
    env: Any = None


def configured_backups(cfg, secrets: dict) -> BackupTarget | None:
    """The user's repository (backup_repository), for the backends that make none of their own."""
    if cfg.backup_repository in (None, "none"):
        return None
    return BackupTarget(cfg.backup_repository, cfg.backup_region or cfg.region, secrets.get("backup_env"))


def backup_section(cfg, target: BackupTarget | None) -> dict:
    """The spec's backup section, when the host has a repository."""
    if target is None:
        return {}
    return {"backup": {"repository": target.repository, "interval_min": cfg.backup_interval_min,
                       "keep": dict(cfg.backup_keep)}}


def ssh_section(cfg, login_user: str, firewall: str = "managed") -> dict:
    """The spec's ssh section: who may reach sshd, root by key only (or not at all when the
    stack logs in as a sudo user), and whose firewall it is."""
    return {"ssh": {"allow_from": list(cfg.ssh_allow_from), "firewall": firewall,
                    "permit_root_login": "prohibit-password" if login_user == "root" else "no"}}


def warn_ssh_access(cfg, where: str, replaces_rules: bool = False) -> None:
    """Preview warnings: SSH open to the world on a real server; a ruleset the stack replaces."""
    from agent import contract
    if not cfg.is_local and set(contract.SSH_ANYWHERE) & set(cfg.ssh_allow_from):
        pulumi.log.warn(f"{where}: SSH is open to the whole internet (ssh_allow_from: "
                        f"{', '.join(cfg.ssh_allow_from)}); keys only, but narrow it to your admin "
                        f"networks: pulumi config set --path 'ssh_allow_from[0]' 198.51.100.0/24")
    if replaces_rules:
        pulumi.log.warn(f"{where}: firewall: managed replaces the server's whole nftables ruleset "
                        f"(flush ruleset) with the stack's; set firewall: none to keep its own rules")


class Host(pulumi.ComponentResource):
    """What MailServer needs from every host backend; subclasses set these in their constructor."""

    ipv4: pulumi.Output
    ipv6: pulumi.Output | None
    resolver: pulumi.Input[str]     # "IP:port" the stack's checks ask (DNSBLs, PTR)
    dns: DnsTarget
    spec_json: pulumi.Output        # the agent's readable spec for this host
    ssh_private_key: pulumi.Input[str]
    ssh_user: str
    host_id: pulumi.Input[str]      # changes when the host is recreated
    boot_run_id: pulumi.Input[str]  # the run its user-data performs at first boot; "" if none
    exports: dict                   # stack outputs only this backend has
    backup: BackupTarget | None = None  # where its backups go (None: no backups)

    def reverse_dns(self, fqdn: str, after: list) -> list:
        """PTRs of the host's addresses -> `fqdn`, after `after` (the mail records): resources
        the agent waits for. [] where the provider sets them (checked by the agent's FCrDNS check)."""
        return []

    def moved(self, args: HostArgs, old_type: str | None = None,
              **options) -> pulumi.ResourceOptions:
        """Options of a child that lived under the MailServer (and maybe had another type)."""
        aliases = []
        if args.moved_from is not None:
            aliases = [pulumi.Alias(parent=args.moved_from, **({"type_": old_type} if old_type else {}))]
        elif old_type:
            aliases = [pulumi.Alias(type_=old_type)]
        return pulumi.ResourceOptions(parent=self, aliases=aliases, **options)
