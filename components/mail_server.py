"""MailServer: the one top-level component; composes the mail host and everything around it.

Order (one-way): keys -> Host (backend: its machine, addresses, SSH access) -> reputation
preflight -> mail records (DNS backend) + reverse DNS (the host backend) -> Bootstrap (agent)
-> Verification.
"""
from __future__ import annotations

import hashlib
import json

import pulumi

from components import agent_spec, backends, backups
from components.backups import Repository
from components.bootstrap import Bootstrap, BootstrapArgs, agent_zipapp
from components.dns import DnsArgs
from components.dns.records import dkim_txt, mail_records
from components.hosts import DnsTarget, HostArgs, domain_dns
from components.keys import KeyPair, MailPassword, RandomSecret
from components.mailbox_guard import MailboxGuard
from components.placement import Placement
from components.reputation import ReputationCheck
from components.verification import Verification, infra_expectations

# Before every dynamic resource got a type name of its own, all had this one.
_DYNAMIC = pulumi.Alias(type_="pulumi-python:dynamic:Resource")


class MailServer(pulumi.ComponentResource):
    def __init__(self, name: str, cfg, stack: str, checkout: str, known_hosts: str,
                 secrets: dict[str, pulumi.Output] | None = None,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("bulletproof:mail:MailServer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        renamed = pulumi.ResourceOptions(parent=self, aliases=[_DYNAMIC])

        # Keys and passwords: made once, kept as secrets. A DKIM key is what receivers know
        # its domain by: outside `local`, deleting it takes a deliberate `pulumi state unprotect`.
        # The primary domain's resources keep the names they had before there were several.
        primary = cfg.domains[0]
        keep = pulumi.ResourceOptions.merge(renamed, pulumi.ResourceOptions(protect=stack != "local"))
        dkims = {d.name: KeyPair(dkim_key_name(name, d.name, primary.name), "rsa", bits=2048,
                                 rotation=d.dkim_selector, opts=keep) for d in cfg.domains}
        dkim = dkims[primary.name]
        passwords = {u.address: MailPassword(password_name(name, u.address, primary.name), u.address,
                                             opts=renamed) for u in cfg.users}
        srs = RandomSecret(f"{name}-srs-secret", "srs", opts=child)
        # A domain that still has mailboxes is not removed unasked (refused at preview).
        guard = MailboxGuard(f"{name}-mailboxes", {d.name: [u.address for u in d.users] for d in cfg.domains},
                             drop=cfg.drop_mailboxes,
                             renamed={d.name: d.previous_name for d in cfg.domains if d.previous_name},
                             opts=child)
        zipapp = agent_zipapp()

        # Another backend or region is refused at preview: the data volume could not follow.
        placement = Placement(f"{name}-placement", cfg.backend, cfg.region, opts=child)
        backend = backends.host(cfg.backend)
        host = backend.component(name, HostArgs(cfg, stack, checkout, known_hosts, zipapp,
                                                secrets or {}, moved_from=self),
                                   opts=pulumi.ResourceOptions(parent=self, depends_on=[placement, guard]))

        secrets_json = self._secrets(cfg, dkims, passwords, srs, host, secrets or {})
        if host.backup is not None:  # where the backups go: for the policy pack's residency rule
            Repository(f"{name}-backups", host.backup.repository, host.backup.region, opts=child)

        # A dirty IP stops the deploy before any record is written or the agent runs.
        reputation = ReputationCheck(f"{name}-reputation", host.ipv4, [s.site for s in cfg.dnsbl_sites],
                                     host.resolver, cfg.allow_listed_ip, opts=renamed,
                                     filters={s.site: s.filter for s in cfg.dnsbl_sites},
                                     dqs_key=secrets.get("spamhaus_dqs_key") if secrets else None)
        # A list that answers "blocked" protects nothing: say so at deploy (not a listing).
        reputation.refused.apply(lambda r: [pulumi.log.warn(line, reputation) for line in r or []])
        self.dns_targets: dict[str, DnsTarget] = {}
        zones = {}
        for d in cfg.domains:
            target = host.dns if d is primary else domain_dns(host.dns, d, secrets or {})
            self.dns_targets[d.name] = target
            zones[d.name] = backends.dns(target.backend).component(
                f"{name}-dns-records" + ("" if d is primary else f"-{d.name}"), DnsArgs(
                    target.settings, d.name, mail_records(cfg, host.ipv4, host.ipv6, dkims[d.name].public_key, d),
                    after=[reputation, guard]), opts=child)
        records = [r for z in zones.values() for r in z.records.values()]
        ptrs = host.reverse_dns(cfg.fqdn, after=[reputation, *records])
        # the records the stack publishes (PTRs first, as before: the verification trigger hashes them)
        published = [p for p in ptrs if hasattr(p, "fqdn")] + records

        boot = Bootstrap(f"{name}-bootstrap", BootstrapArgs(
            host=host.ipv4, host_id=host.host_id, boot_run_id=host.boot_run_id,
            ssh_private_key=host.ssh_private_key, known_hosts=known_hosts,
            spec_json=host.spec_json, secrets_json=secrets_json, after=[*records, *ptrs, guard],
            user=host.ssh_user), opts=child)

        self.dkim_txts = pulumi.Output.all(*[k.public_key for k in dkims.values()]).apply(
            lambda keys: {d: dkim_txt(k) for d, k in zip(dkims, keys)})
        self.verification = (self._verification(name, cfg, host, boot, published, known_hosts)
                             if cfg.verify else None)
        self.host, self.fqdn = host, cfg.fqdn
        self.spec = host.spec_json.apply(json.loads)
        self.dkim_txt = dkim.public_key.apply(dkim_txt)
        self.guard = guard
        self.passwords = {a: p.password for a, p in passwords.items()}
        self.records = published
        self.register_outputs({"fqdn": self.fqdn, "host_ipv4": host.ipv4, "host_ipv6": host.ipv6})

    def _verification(self, name: str, cfg, host, boot, published: list, known_hosts: str):
        """The infra suite against the host, whenever the host, its records or its run change."""
        expect = self.dkim_txts.apply(lambda txts: json.dumps(infra_expectations(
            cfg.domain, cfg.fqdn, [u.address for u in cfg.users], txts[cfg.domain],
            domains=domain_expectations(cfg, txts))))
        record_ids = pulumi.Output.all(*[r.id for r in published], *[r.values for r in published])
        trigger = pulumi.Output.all(host.host_id, boot.run_id, record_ids).apply(
            lambda a: hashlib.sha256(json.dumps(a, sort_keys=True, default=str).encode()).hexdigest())
        return Verification(f"{name}-verification", host.ipv4, host.ssh_private_key, known_hosts, expect,
                            trigger, pulumi.ResourceOptions(parent=self, depends_on=[boot.run], aliases=[_DYNAMIC]),
                            user=host.ssh_user)

    @staticmethod
    def _secrets(cfg, dkims: dict, passwords: dict, srs, host, secrets: dict) -> pulumi.Output:
        """The secrets file the agent gets over SSH: hashes, the DKIM keys, the SRS secret, the
        backup password."""
        backup = host.backup
        password = (secrets.get("backup_password") or (backups.LOCAL_PASSWORD if cfg.is_local else None)
                    if backup is not None else None)
        dqs_key = secrets.get("spamhaus_dqs_key")
        domains = list(dkims)  # the primary first
        hashes = 4 + len(domains)  # where the password hashes start in the list below
        return pulumi.Output.all(password, backup.env if backup else None, dqs_key, srs.secret,
                                 *[k.private_key for k in dkims.values()],
                                 *[p.hash for p in passwords.values()]).apply(
            lambda a: agent_spec.to_json(agent_spec.secrets(
                dict(zip(passwords, a[hashes:])), a[4], a[0], a[1], dqs_key=a[2],
                dkim_keys=dict(zip(domains[1:], a[5:hashes])), srs_secret=a[3])))


def dkim_key_name(name: str, domain: str, primary: str) -> str:
    return f"{name}-dkim-key" if domain == primary else f"{name}-dkim-key-{domain}"


def password_name(name: str, address: str, primary: str) -> str:
    """The primary's mailboxes by local part (as before there were several domains), the
    others by address."""
    local, _, domain = address.rpartition("@")
    return f"{name}-password-{local}" if domain == primary else f"{name}-password-{address}"


def domain_expectations(cfg, dkim_txts: dict) -> list[dict]:
    """Per domain, what the infra suite checks: its records and its mailboxes."""
    return [{"name": d.name, "selector": d.dkim_selector, "dkim_txt": dkim_txts[d.name],
             "users": [u.address for u in d.users], "dmarc_policy": d.dmarc_policy,
             "catch_all": d.catch_all} for d in cfg.domains]
