"""backend local (the default): a Debian 12 container on this machine stands in for a VPS.

The stack makes its own bridge, BIND (the mail zone, both reverse zones, written with TSIG),
package proxy, SMTP sink and the container, and writes the PTRs itself: whoever owns the
address sets its reverse DNS, and here that is the stack.
"""
from __future__ import annotations

import ipaddress

import pulumi

from components import agent_spec, user_data
from components.backends import HostBackend
from agent import contract
from components.hosts import BackupTarget, DnsTarget, Host, HostArgs, backup_section, ssh_section
from components.keys import KeyPair
from components.local_cloud import Bridge, DnsServer, Machine, PackageProxy, SmtpSink, Volume
from localcloud import naming

HOST_INDEX = 10  # the VPS's address in the stack's /24 (and /64)
# The type every dynamic resource had before each got a name of its own.
_DYNAMIC = "pulumi-python:dynamic:Resource"


class PublicIp(pulumi.ComponentResource):
    """The host's public IPv4 and IPv6: on `local`, addresses from the stack's own nets."""

    def __init__(self, name: str, gateway: pulumi.Input[str], gateway6: pulumi.Input[str],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("bulletproof:mail:PublicIp", name, None, opts)
        pick = lambda gw: str(ipaddress.ip_interface(gw).network[HOST_INDEX])  # noqa: E731
        self.ipv4 = pulumi.Output.from_input(gateway).apply(pick)
        self.ipv6 = pulumi.Output.from_input(gateway6).apply(pick)
        self.register_outputs({"ipv4": self.ipv4, "ipv6": self.ipv6})


class LocalHost(Host):
    def __init__(self, name: str, args: HostArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("bulletproof:hosts:Local", name, None, opts)
        cfg, stack, checkout = args.cfg, args.stack, args.checkout
        bridge = Bridge(f"{name}-bridge", stack, checkout, opts=self.moved(args, _DYNAMIC))
        ip = PublicIp(f"{name}-ip", bridge.gateway, bridge.gateway6, opts=self.moved(args))
        net = lambda gw: str(ipaddress.ip_interface(gw).network)  # noqa: E731
        svc = dict(stack=stack, checkout=checkout, gateway=bridge.gateway)
        sink = SmtpSink(f"{name}-sink", **svc, gateway6=bridge.gateway6, opts=self.moved(args, _DYNAMIC))
        # Every mail domain without a DNS target of its own has a zone here; the key only when
        # there are other domains, so a one-domain stack's server keeps exactly its inputs.
        extra = [d.name for d in cfg.domains[1:] if d.dns is None]
        dns = DnsServer(f"{name}-dns", **svc, zones=pulumi.Output.all(
            bridge.gateway, bridge.gateway6).apply(lambda g: {
                "domain": cfg.domain, "subnet": net(g[0]), "subnet6": net(g[1]),
                **({"extra_domains": extra} if extra else {})}),
            opts=self.moved(args, _DYNAMIC, depends_on=[sink]))
        proxy = PackageProxy(f"{name}-proxy", **svc, opts=self.moved(args, _DYNAMIC))
        ssh_key = KeyPair(f"{name}-ssh-key", "ed25519", opts=self.moved(args, _DYNAMIC))
        # The mail outlives the container: a directory of its own, keyed by an id in the state.
        self.volume = Volume(f"{name}-volume", stack, opts=pulumi.ResourceOptions(parent=self))

        self.ipv4, self.ipv6 = ip.ipv4, ip.ipv6
        self.resolver = dns.url
        self.dns = DnsTarget("rfc2136", {"server": dns.url, "tsig_name": dns.tsig_name,
                                         "tsig_algorithm": dns.tsig_algorithm,
                                         "tsig_secret": dns.tsig_secret, "zone": cfg.domain,
                                         # its records go when it stops (refresh forgets them)
                                         "forget_when_unreachable": True},
                             cfg.domain, url=dns.url)
        # Backups: a repository on this machine, mounted into the host (make down keeps it).
        self.backup = (BackupTarget(f"{contract.BACKUP_DIR}/repo", cfg.region)
                       if cfg.backup_repository != "none" else None)
        self.spec_json = agent_spec.host_spec_json(cfg, ip.ipv4, ip.ipv6, dns.url, {
            "volume": {"kind": "mounted"}, **backup_section(cfg, self.backup),
            **ssh_section(cfg, "root")})
        boot_run_id = self.spec_json.apply(lambda s: user_data.run_id(s, args.zipapp))
        machine = Machine(f"{name}-host", {
            "stack": stack, "checkout": checkout, "host": "mail", "fqdn": cfg.fqdn,
            "region": cfg.region, "bridge": bridge.id,
            "ipv4": ip.ipv4.apply(lambda a: f"{a}/24"), "ipv6": ip.ipv6.apply(lambda a: f"{a}/64"),
            "nameserver": bridge.gateway.apply(lambda g: str(ipaddress.ip_interface(g).ip)),
            "apt_proxy_url": proxy.url, "ssh_public_key": ssh_key.public_key,
            "spec_json": self.spec_json, "boot_run_id": boot_run_id,
            "instance_id": f"{stack}-mail", "known_hosts": args.known_hosts,
            "volume": self.volume.path, "backups": str(naming.backups_dir(naming.stack_names(stack, checkout))),
        }, self.moved(args, _DYNAMIC, depends_on=[dns], delete_before_replace=True,  # the volume moves
                      custom_timeouts=pulumi.CustomTimeouts(create="10m")))
        self.ssh_private_key, self.ssh_user = ssh_key.private_key, "root"
        self.host_id, self.boot_run_id = machine.id, machine.boot_run_id
        self._args = args
        self.exports = {"data_volume": self.volume.path}
        self.register_outputs({"ipv4": self.ipv4, "ipv6": self.ipv6})

    def reverse_dns(self, fqdn: str, after: list) -> list:
        from components.dns.rfc2136 import ReverseDns
        return ReverseDns(f"{self._name}-rdns", self.dns.settings, fqdn, self.ipv4, self.ipv6,
                          after=after, opts=self.moved(self._args)).records


def _region(rtype: str, props) -> str | None:
    return props.get("region") if rtype == f"pulumi-python:{Machine._resource_type_name}" else None


BACKEND = HostBackend(
    name="local", component=LocalHost, own_backups=True,
    regions={"no-svg1": "UpCloud, Stavanger"},  # the region the local stand-in plays
    resource_region=_region,
    critical={f"pulumi-python:{Machine._resource_type_name}": "host",
              f"pulumi-python:{Volume._resource_type_name}": "volume"},
)
