"""A toy host backend, whole in this one file: the registry test adds one line naming it."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components import agent_spec, schema
from components.backends import HostBackend
from components.hosts import DnsTarget, Host, HostArgs
from components.schema import Key

SERVER = "toy:index:Server"


@dataclass(frozen=True)
class Settings:
    size: str


class ToyHost(Host):
    def __init__(self, name: str, args: HostArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("bulletproof:hosts:Toy", name, None, opts)
        cfg = args.cfg
        server = pulumi.CustomResource(SERVER, f"{name}-host", {"size": cfg.host.size, "region": cfg.region,
                                                                "open_ports": [22, 25], "ip": None},
                                       opts=pulumi.ResourceOptions(parent=self))
        self.ipv4, self.ipv6 = server.id.apply(lambda _: "192.0.2.77"), None
        self.resolver = cfg.resolver
        self.dns = DnsTarget(cfg.dns_backend, {"server": cfg.dns.server, "tsig_name": cfg.dns.tsig_name,
                                               "tsig_algorithm": cfg.dns.tsig_algorithm,
                                               "tsig_secret": args.secrets["dns_tsig_secret"],
                                               "zone": cfg.dns.zone}, cfg.dns.zone, url=cfg.dns.server)
        self.spec_json = agent_spec.host_spec_json(cfg, self.ipv4, None, cfg.resolver)
        self.ssh_private_key, self.ssh_user = "-----BEGIN OPENSSH PRIVATE KEY-----\ntoy\n", "root"
        self.host_id, self.boot_run_id, self.exports = server.id, "", {"toy_size": cfg.host.size}
        self.register_outputs({})


def _ports(rtype, props):
    if rtype == SERVER:
        for port in props.get("open_ports") or []:
            yield port, port, f"tcp {port}"


BACKEND = HostBackend(
    name="toy", component=ToyHost, own_dns=True, regions={"toy-bergen": "a toy region in Bergen"},
    settings=lambda c, v: Settings(size=v["toy_size"]),
    resource_region=lambda rtype, props: props.get("region") if rtype == SERVER else None,
    inbound_ports=_ports,
    keys=(Key("toy_size", schema.choice(("small", "large"), "a toy size"), "small"),),
)
