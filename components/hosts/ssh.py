"""backend ssh: a Debian 12 server that already runs (a VPS you rent); the stack manages its mail
stack, its DNS records, and checks its reverse DNS.

No user-data: the agent goes over SSH. The stack never replaces this server (it did not make
it). Its provider sets the PTR: checked here before any resource is declared (FCrDNS).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi

from agent import contract
from components import agent_spec, rdns_check, schema
from components.backends import HostBackend
from components.hosts import (Host, HostArgs, backup_section, configured_backups, own_dns,
                              ssh_section, warn_ssh_access)
from components.schema import Key

RDNS_MODES = ("enforce", "warn")


@dataclass(frozen=True)
class Settings:
    """backend ssh: an existing server; its private key stays a Pulumi secret (not kept here)."""
    host: str           # its public IPv4, where the stack reaches sshd and the mail DNS points
    user: str = "root"
    ipv6: str | None = None
    rdns: str = "enforce"
    firewall: str = "managed"   # managed: the stack's nftables ruleset; none: the server's own


class SshHost(Host):
    def __init__(self, name: str, args: HostArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("bulletproof:hosts:Ssh", name, None, opts)
        cfg, ssh = args.cfg, args.cfg.host
        self.ipv4 = pulumi.Output.from_input(ssh.host)
        self.ipv6 = pulumi.Output.from_input(ssh.ipv6) if ssh.ipv6 else None
        self.resolver = cfg.resolver
        self.dns = own_dns(cfg, args.secrets)
        # the server's own disk holds the mail: the stack never replaces this server
        self.backup = configured_backups(cfg, args.secrets)
        warn_ssh_access(cfg, f"ssh host {ssh.host}", replaces_rules=ssh.firewall == "managed")
        self.spec_json = agent_spec.host_spec_json(cfg, ssh.host, ssh.ipv6, cfg.resolver_forwarders, {
            "volume": {"kind": "directory"}, **backup_section(cfg, self.backup),
            **ssh_section(cfg, ssh.user, ssh.firewall)})
        self.ssh_private_key, self.ssh_user = args.secrets["ssh_private_key"], ssh.user
        self.host_id, self.boot_run_id = f"ssh:{ssh.user}@{ssh.host}", ""
        self.exports = {}
        self.register_outputs({"ipv4": self.ipv4})


def _private_key(c, key: str, value):
    # Never echo the value: it is a secret.
    if not isinstance(value, str) or "PRIVATE KEY-----" not in value:
        c.err(key, "(secret) is not a PEM/OpenSSH private key; set the whole key file: "
                   "pulumi config set --secret ssh_private_key < ~/.ssh/id_ed25519")
        return None
    return value


def _precheck(cfg) -> list[str]:
    """The provider sets the PTR of an existing server: check it before any resource exists."""
    ssh = cfg.host
    try:
        rdns_check.enforce(cfg.fqdn, [a for a in (ssh.host, ssh.ipv6) if a], cfg.resolver, ssh.rdns)
    except rdns_check.RdnsError as err:
        return err.problems
    return []


def _ipv6(c, key: str, value):
    try:
        ipaddress.IPv6Address(str(value))
    except ValueError:
        c.err(key, f"{value!r} is not an IPv6 address; set the server's public IPv6 or leave it out")
        return None
    return value


BACKEND = HostBackend(
    name="ssh", component=SshHost, own_dns=True, precheck=_precheck,
    regions={"oslo": "an existing server in Oslo"},
    settings=lambda c, v: Settings(host=v["ssh_host"], user=v["ssh_user"], ipv6=v["ssh_host_ipv6"],
                                   rdns=v["rdns"], firewall=v["firewall"]),
    keys=(
        Key("ssh_host", schema.ipv4("set the server's public IPv4, e.g. ssh_host: 192.0.2.10 (the "
                                    "mail A record and the PTR check use it)"),
            hint="set the server's public IPv4, e.g. ssh_host: 192.0.2.10"),
        Key("ssh_user", schema.pattern(r"[a-z_][a-z0-9_-]{0,31}", "is not a user name; e.g. ssh_user: "
                                       "root (it needs root or passwordless sudo)"), "root"),
        Key("ssh_host_ipv6", _ipv6, None),
        Key("ssh_private_key", _private_key, secret=True,
            hint="pulumi config set --secret ssh_private_key < ~/.ssh/id_ed25519"),
        Key("rdns", schema.choice(RDNS_MODES, "a mode", "use enforce (a wrong PTR stops the deploy) "
                                                        "or warn"), "enforce"),
        Key("firewall", schema.choice(contract.FIREWALL_MODES, "a firewall mode",
                                      "use managed (the stack's nftables ruleset replaces the "
                                      "server's) or none (the server keeps its own rules)"), "managed"),
    ),
)
