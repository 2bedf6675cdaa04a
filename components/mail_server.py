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
from components.hosts import HostArgs
from components.keys import KeyPair, MailPassword
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

        # Keys and passwords: made once, kept as secrets. The DKIM key is what receivers know
        # the domain by: outside `local`, deleting it takes a deliberate `pulumi state unprotect`.
        dkim = KeyPair(f"{name}-dkim-key", "rsa", bits=2048, rotation=cfg.dkim_selector,
                       opts=pulumi.ResourceOptions.merge(renamed, pulumi.ResourceOptions(
                           protect=stack != "local")))
        passwords = {u.address: MailPassword(f"{name}-password-{u.address.split('@')[0]}", u.address,
                                             opts=renamed) for u in cfg.users}
        zipapp = agent_zipapp()

        # Another backend or region is refused at preview: the data volume could not follow.
        placement = Placement(f"{name}-placement", cfg.backend, cfg.region, opts=child)
        backend = backends.host(cfg.backend)
        host = backend.component(name, HostArgs(cfg, stack, checkout, known_hosts, zipapp,
                                                secrets or {}, moved_from=self),
                                   opts=pulumi.ResourceOptions(parent=self, depends_on=[placement]))

        secrets_json = self._secrets(cfg, dkim, passwords, host, secrets or {})
        if host.backup is not None:  # where the backups go: for the policy pack's residency rule
            Repository(f"{name}-backups", host.backup.repository, host.backup.region, opts=child)

        # A dirty IP stops the deploy before any record is written or the agent runs.
        reputation = ReputationCheck(f"{name}-reputation", host.ipv4, [s.site for s in cfg.dnsbl_sites],
                                     host.resolver, cfg.allow_listed_ip, opts=renamed,
                                     filters={s.site: s.filter for s in cfg.dnsbl_sites},
                                     dqs_key=secrets.get("spamhaus_dqs_key") if secrets else None)
        # A list that answers "blocked" protects nothing: say so at deploy (not a listing).
        reputation.refused.apply(lambda r: [pulumi.log.warn(line, reputation) for line in r or []])
        dns = backends.dns(host.dns.backend).component(f"{name}-dns-records", DnsArgs(
            host.dns.settings, cfg.domain, mail_records(cfg, host.ipv4, host.ipv6, dkim.public_key),
            after=[reputation]), opts=child)
        ptrs = host.reverse_dns(cfg.fqdn, after=[reputation, *dns.records.values()])
        # the records the stack publishes (PTRs first, as before: the verification trigger hashes them)
        published = [p for p in ptrs if hasattr(p, "fqdn")] + list(dns.records.values())

        boot = Bootstrap(f"{name}-bootstrap", BootstrapArgs(
            host=host.ipv4, host_id=host.host_id, boot_run_id=host.boot_run_id,
            ssh_private_key=host.ssh_private_key, known_hosts=known_hosts,
            spec_json=host.spec_json, secrets_json=secrets_json, after=[*dns.records.values(), *ptrs],
            user=host.ssh_user), opts=child)

        self.verification = (self._verification(name, cfg, host, dkim, boot, published, known_hosts)
                             if cfg.verify else None)
        self.host, self.fqdn = host, cfg.fqdn
        self.spec = host.spec_json.apply(json.loads)
        self.dkim_txt = dkim.public_key.apply(dkim_txt)
        self.passwords = {a: p.password for a, p in passwords.items()}
        self.records = published
        self.register_outputs({"fqdn": self.fqdn, "host_ipv4": host.ipv4, "host_ipv6": host.ipv6})

    def _verification(self, name: str, cfg, host, dkim, boot, published: list, known_hosts: str):
        """The infra suite against the host, whenever the host, its records or its run change."""
        expect = dkim.public_key.apply(lambda key: json.dumps(infra_expectations(
            cfg.domain, cfg.fqdn, [u.address for u in cfg.users], dkim_txt(key))))
        record_ids = pulumi.Output.all(*[r.id for r in published], *[r.values for r in published])
        trigger = pulumi.Output.all(host.host_id, boot.run_id, record_ids).apply(
            lambda a: hashlib.sha256(json.dumps(a, sort_keys=True, default=str).encode()).hexdigest())
        return Verification(f"{name}-verification", host.ipv4, host.ssh_private_key, known_hosts, expect,
                            trigger, pulumi.ResourceOptions(parent=self, depends_on=[boot.run], aliases=[_DYNAMIC]),
                            user=host.ssh_user)

    @staticmethod
    def _secrets(cfg, dkim, passwords: dict, host, secrets: dict) -> pulumi.Output:
        """The secrets file the agent gets over SSH: hashes, the DKIM key, the backup password."""
        backup = host.backup
        password = (secrets.get("backup_password") or (backups.LOCAL_PASSWORD if cfg.is_local else None)
                    if backup is not None else None)
        dqs_key = secrets.get("spamhaus_dqs_key")
        return pulumi.Output.all(dkim.private_key, password, backup.env if backup else None, dqs_key,
                                 *[p.hash for p in passwords.values()]).apply(
            lambda a: agent_spec.to_json(agent_spec.secrets(dict(zip(passwords, a[4:])), a[0], a[1], a[2],
                                                            dqs_key=a[3])))
