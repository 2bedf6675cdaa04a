"""MailServer: the one top-level component; composes the mail host and everything around it.

Order (one-way): local cloud (bridge, DNS server, proxy, sink) -> Host + PublicIp -> keys ->
reputation preflight -> ReverseDns + MailDns -> Bootstrap (agent) -> Verification.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
from dataclasses import dataclass
from typing import Callable

import pulumi

from components import agent_spec, user_data
from components.bootstrap import Bootstrap, BootstrapArgs, agent_zipapp
from components.config import CloudflareDns, StackConfig
from components.keys import KeyPair, MailPassword
from components.local_cloud import Bridge, HostService, Machine
from components.reputation import ReputationCheck
from components.mail_dns import DnsServer, MailDns, ReverseDns, dkim_txt
from components.verification import Verification

HOST_INDEX = 10  # the VPS's address in the stack's /24 (and /64)


class PublicIp(pulumi.ComponentResource):
    """The host's public IPv4 and IPv6; on `local`, addresses from the stack's own nets."""

    def __init__(self, name: str, gateway: pulumi.Input[str], gateway6: pulumi.Input[str],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("bulletproof:mail:PublicIp", name, None, opts)
        pick = lambda gw: str(ipaddress.ip_interface(gw).network[HOST_INDEX])  # noqa: E731
        self.ipv4 = pulumi.Output.from_input(gateway).apply(pick)
        self.ipv6 = pulumi.Output.from_input(gateway6).apply(pick)
        self.register_outputs({"ipv4": self.ipv4, "ipv6": self.ipv6})


def host_spec_json(cfg: StackConfig, ipv4, ipv6, resolver, public_ip_nat: bool = False) -> pulumi.Output:
    """The agent's readable spec as canonical JSON. `resolver` ("IP:port") is what the host's
    unbound forwards to; `public_ip_nat`: the cloud translates the public addresses."""
    return pulumi.Output.all(ipv4, ipv6, resolver).apply(lambda a: agent_spec.to_json(agent_spec.public_spec(
        cfg, a[0], a[1], [a[2].replace(":", "@")], public_ip_nat=public_ip_nat)))


def infra_expectations(cfg: StackConfig, dkim: str) -> dict:
    """What tests/infra checks the host against (BPM_INFRA_EXPECT)."""
    return {"domain": cfg.domain, "hostname": cfg.fqdn, "users": [u.address for u in cfg.users],
            "dkim_txt": dkim}


@dataclass
class HostAccess:
    """What the rest of the stack needs from a host backend."""
    ipv4: pulumi.Output
    ipv6: pulumi.Output | None
    dns: DnsServer                 # where the mail records go (RFC 2136, or a dns_cloudflare.CloudflareZone)
    dns_zone: str
    dns_server_url: pulumi.Input[str]
    resolver: pulumi.Input[str]    # "IP:port" the stack's checks ask
    spec_json: pulumi.Output
    ssh_private_key: pulumi.Input[str]
    ssh_user: str
    host_id: pulumi.Input[str]
    boot_run_id: pulumi.Input[str]  # "" when no user-data runs the agent (an existing server)
    reverse_dns: bool               # the stack writes the PTRs (else the provider sets them)
    # Given the mail records, declares what must follow them before the agent runs (Azure's PTRs)
    after_records: Callable[[list], list] | None = None


class MailServer(pulumi.ComponentResource):
    def __init__(self, name: str, cfg: StackConfig, stack: str, checkout: str,
                 opts: pulumi.ResourceOptions | None = None,
                 secrets: dict[str, pulumi.Output] | None = None):
        super().__init__("bulletproof:mail:MailServer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        from localcloud import naming
        # One known_hosts per stack; the host resource empties it when it builds a new host.
        known_hosts = str(naming.stack_names(stack, checkout).runtime_dir / "known_hosts")

        # Keys and passwords: made once, kept as secrets. The DKIM key is what receivers know
        # the domain by: outside `local`, deleting it takes a deliberate `pulumi state unprotect`.
        dkim = KeyPair(f"{name}-dkim-key", "rsa", bits=2048, rotation=cfg.dkim_selector,
                       opts=child if stack == "local" else pulumi.ResourceOptions(parent=self, protect=True))
        passwords = {u.address: MailPassword(f"{name}-password-{u.address.split('@')[0]}", u.address, opts=child)
                     for u in cfg.users}
        secrets_json = pulumi.Output.all(dkim.private_key, *[p.hash for p in passwords.values()]).apply(
            lambda a: agent_spec.to_json(agent_spec.secrets(dict(zip(passwords, a[1:])), a[0])))
        zipapp = agent_zipapp()

        if cfg.backend == "ssh":
            host = existing_server(cfg, secrets or {})
        elif cfg.backend == "openstack":
            from components.cloud_openstack import openstack_host
            host = openstack_host(name, cfg, zipapp, dns_target(cfg, secrets or {}), self)
        elif cfg.backend == "azure":
            from components.cloud_azure import azure_host
            host = azure_host(name, cfg, zipapp, dns_target(cfg, secrets or {}), self)
        else:
            host = self._local_host(name, cfg, stack, checkout, known_hosts, zipapp)

        # A dirty IP stops the deploy before any record is written or the agent runs.
        reputation = ReputationCheck(f"{name}-reputation", host.ipv4, [s.site for s in cfg.dnsbl_sites],
                                     host.resolver, cfg.allow_listed_ip, opts=child)
        rdns_records = []
        if host.reverse_dns:
            rdns_records = ReverseDns(f"{name}-rdns", host.dns, cfg.fqdn, host.ipv4, host.ipv6,
                                      after=[reputation], opts=child).records
        mail_dns = MailDns(f"{name}-dns-records", host.dns, cfg.domain, cfg.hostname, host.ipv4, host.ipv6,
                           cfg.dkim_selector, dkim.public_key, cfg.dmarc_policy, cfg.dmarc_rua,
                           after=[reputation], zone=host.dns_zone, opts=child)
        records = rdns_records + list(mail_dns.records.values())
        ptrs = host.after_records(records) if host.after_records else []

        boot = Bootstrap(f"{name}-bootstrap", BootstrapArgs(
            host=host.ipv4, host_id=host.host_id, boot_run_id=host.boot_run_id,
            ssh_private_key=host.ssh_private_key, known_hosts=known_hosts,
            spec_json=host.spec_json, secrets_json=secrets_json, after=records + ptrs,
            user=host.ssh_user), opts=child)

        self.verification = None
        if cfg.verify:
            expect = dkim.public_key.apply(lambda key: json.dumps(infra_expectations(cfg, dkim_txt(key))))
            record_ids = pulumi.Output.all(*[r.id for r in records], *[r.values for r in records])
            trigger = pulumi.Output.all(host.host_id, boot.run_id, record_ids).apply(
                lambda a: hashlib.sha256(json.dumps(a, sort_keys=True, default=str).encode()).hexdigest())
            self.verification = Verification(f"{name}-verification", host.ipv4, host.ssh_private_key,
                                             known_hosts, expect, trigger,
                                             pulumi.ResourceOptions(parent=self, depends_on=[boot.run]),
                                             user=host.ssh_user)

        self.spec = host.spec_json.apply(json.loads)
        self.fqdn = cfg.fqdn
        self.ipv4, self.ipv6 = host.ipv4, host.ipv6
        self.dns_server = host.dns_server_url
        self.ssh_private_key = host.ssh_private_key
        self.ssh_user = host.ssh_user
        self.dkim_txt = dkim.public_key.apply(dkim_txt)
        self.passwords = {a: p.password for a, p in passwords.items()}
        self.records = mail_dns.records
        self.rdns = rdns_records
        self.register_outputs({"fqdn": self.fqdn, "host_ipv4": self.ipv4, "host_ipv6": self.ipv6})

    def _local_host(self, name: str, cfg: StackConfig, stack: str, checkout: str, known_hosts: str,
                    zipapp: bytes) -> HostAccess:
        """backend local: the stack's own bridge, DNS server, proxy, sink and a container."""
        child = pulumi.ResourceOptions(parent=self)
        bridge = Bridge(f"{name}-bridge", stack, checkout, opts=child)
        ip = PublicIp(f"{name}-ip", bridge.gateway, bridge.gateway6, opts=child)
        net = lambda gw: str(ipaddress.ip_interface(gw).network)  # noqa: E731
        svc = dict(stack=stack, checkout=checkout, gateway=bridge.gateway, opts=child)
        sink = HostService(f"{name}-sink", "sink", **svc, gateway6=bridge.gateway6)
        dns_server = HostService(f"{name}-dns", "dns", zones=pulumi.Output.all(
            bridge.gateway, bridge.gateway6).apply(lambda g: {
                "domain": cfg.domain, "subnet": net(g[0]), "subnet6": net(g[1])}),
            **{**svc, "opts": pulumi.ResourceOptions(parent=self, depends_on=[sink])})
        proxy = HostService(f"{name}-proxy", "proxy", **svc)
        server = DnsServer(dns_server.url, dns_server.tsig_name, dns_server.tsig_algorithm,
                           dns_server.tsig_secret)
        ssh_key = KeyPair(f"{name}-ssh-key", "ed25519", opts=child)

        # The agent's spec: readable part apart from the secrets.
        spec_json = host_spec_json(cfg, ip.ipv4, ip.ipv6, dns_server.url)

        host = Machine(f"{name}-host", {
            "stack": stack, "checkout": checkout, "host": "mail", "fqdn": cfg.fqdn,
            "region": cfg.region, "bridge": bridge.id,
            "ipv4": ip.ipv4.apply(lambda a: f"{a}/24"), "ipv6": ip.ipv6.apply(lambda a: f"{a}/64"),
            "nameserver": bridge.gateway.apply(lambda g: str(ipaddress.ip_interface(g).ip)),
            "apt_proxy_url": proxy.url, "ssh_public_key": ssh_key.public_key,
            "user_data": spec_json.apply(lambda s: base64.b64encode(user_data.compressed(s, zipapp)).decode()),
            "boot_run_id": spec_json.apply(lambda s: user_data.run_id(s, zipapp)),
            "instance_id": f"{stack}-mail", "known_hosts": known_hosts,
        }, pulumi.ResourceOptions(parent=self, depends_on=[dns_server],
                                  # user-data counts at first boot only; later changes go over SSH
                                  ignore_changes=["user_data", "boot_run_id"],
                                  custom_timeouts=pulumi.CustomTimeouts(create="10m")))
        return HostAccess(
            ipv4=ip.ipv4, ipv6=ip.ipv6, dns=server, dns_zone=cfg.domain, dns_server_url=dns_server.url,
            resolver=dns_server.url, spec_json=spec_json, ssh_private_key=ssh_key.private_key,
            ssh_user="root", host_id=host.id, boot_run_id=host.boot_run_id, reverse_dns=True)


def dns_target(cfg: StackConfig, secrets: dict[str, pulumi.Output]) -> tuple:
    """(MailDns target, zone, URL shown as the dns_server output) of the stack's DNS backend."""
    if isinstance(cfg.dns, CloudflareDns):
        from components.dns_cloudflare import CloudflareZone
        return CloudflareZone(cfg.dns.zone_id), cfg.dns.zone, f"cloudflare:{cfg.dns.zone_id}"
    return (DnsServer(cfg.dns.server, cfg.dns.tsig_name, cfg.dns.tsig_algorithm, secrets["dns_tsig_secret"]),
            cfg.dns.zone, cfg.dns.server)


def existing_server(cfg: StackConfig, secrets: dict[str, pulumi.Output]) -> HostAccess:
    """backend ssh: a server that already runs (no user-data: the agent goes over SSH), DNS on
    the user's RFC 2136 server, reverse DNS set by the provider (checked by rdns_check)."""
    ssh, dns_cfg = cfg.ssh, cfg.dns  # the PTRs were checked before the program declared anything
    spec_json = host_spec_json(cfg, ssh.host, ssh.ipv6, dns_cfg.resolver)
    server, zone, url = dns_target(cfg, secrets)
    return HostAccess(
        ipv4=pulumi.Output.from_input(ssh.host),
        ipv6=pulumi.Output.from_input(ssh.ipv6) if ssh.ipv6 else None,
        dns=server, dns_zone=zone, dns_server_url=url, resolver=dns_cfg.resolver,
        spec_json=spec_json, ssh_private_key=secrets["ssh_private_key"], ssh_user=ssh.user,
        host_id=f"ssh:{ssh.user}@{ssh.host}", boot_run_id="", reverse_dns=False)
