"""backend openstack: a server in an OpenStack region (e.g. a Norwegian provider's Oslo region).

Credentials come from the provider's usual places (OS_* variables or clouds.yaml/OS_CLOUD),
never from the stack config; every resource names the configured region explicitly, so the
region guard cannot be sidestepped by OS_REGION_NAME.

The port (and the floating IPv4, if any) is made before the server, so the host's addresses
are known when its user-data is written: the spec in the user-data already holds them. The
security group opens inbound only SSH and the mail ports. Neither this SDK (pulumi-openstack
5.5.x) nor Designate's API through it sets the PTR of an address: ask the provider (see
docs/backends.md); the agent's FCrDNS check reports a wrong one.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass

import pulumi

from agent import contract
from components import agent_spec, schema, user_data
from components.backends import HostBackend
from components.hosts import (Host, HostArgs, backup_section, configured_backups, own_dns,
                              ssh_section, warn_ssh_access)
from components.keys import KeyPair
from components.schema import Key

SSH_USER = "debian"   # the login user of Debian's cloud images, which gets the key pair
RULE = "openstack:networking/secGroupRule:SecGroupRule"


@dataclass(frozen=True)
class Settings:
    """backend openstack: credentials come from the provider's own OS_* variables / clouds.yaml."""
    flavor: str
    image: str
    network: str                       # ID of the network the host's port is on
    floating_ip_pool: str | None = None  # external network of a floating IPv4 (else the port's own)
    ipv6: bool = True                  # the network has an IPv6 subnet: AAAA + Postfix's IPv6
    volume_gb: int = 20                # the mail's Cinder volume


def cloud_user_data(spec_json: str, rid: str) -> str:
    """The local backend's user-data (user_data.compressed) as the text cloud-init reads.

    Nova takes user_data as a string (the provider base64-encodes it), and gzip bytes are not
    valid text; cloud-init gunzips the local one first, so both run the same document.
    """
    return gzip.decompress(user_data.compressed(spec_json, rid)).decode()


def _ssh_sources(cidrs, ethertype: str) -> list[str]:
    """ssh_allow_from's networks of one family, as the security group writes them."""
    import ipaddress
    version = 6 if ethertype == "IPv6" else 4
    return [str(ipaddress.ip_network(c)) for c in cidrs if ipaddress.ip_network(c).version == version]


def _first(ips: list[str], version: int) -> str | None:
    return next((ip for ip in ips or [] if (":" in ip) == (version == 6)), None)


class OpenStackHost(Host):
    """Security group + rules, port, floating IPv4 (optional), key pair, server."""

    def __init__(self, name: str, args: HostArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("bulletproof:hosts:OpenStack", name, None, opts)
        import pulumi_openstack as openstack
        cfg, os_cfg, region = args.cfg, args.cfg.host, args.cfg.region
        child = self.moved(args)

        group = openstack.networking.SecGroup(f"{name}-secgroup", name=f"{cfg.fqdn}-mail", region=region,
                                              description="bulletproof-mail: SSH and mail ports only", opts=child)
        warn_ssh_access(cfg, f"openstack host {cfg.fqdn}")
        for ethertype, anywhere in (("IPv4", "0.0.0.0/0"), ("IPv6", "::/0")):
            for port in contract.public_tcp_ports():
                sources = _ssh_sources(cfg.ssh_allow_from, ethertype) if port == contract.SSH_PORT else [anywhere]
                for i, source in enumerate(sources):
                    # The first keeps the name the rule always had; a new source replaces
                    # the rule, never the server.
                    suffix = f"-{i + 1}" if i else ""
                    openstack.networking.SecGroupRule(
                        f"{name}-allow-{port}-{ethertype.lower()}{suffix}", direction="ingress",
                        ethertype=ethertype, protocol="tcp", port_range_min=port, port_range_max=port,
                        remote_ip_prefix=source, security_group_id=group.id, region=region, opts=child)
        port = openstack.networking.Port(f"{name}-port", network_id=os_cfg.network, admin_state_up=True,
                                         security_group_ids=[group.id], region=region, opts=child)
        if os_cfg.floating_ip_pool:
            self.ipv4 = openstack.networking.FloatingIp(f"{name}-ipv4", pool=os_cfg.floating_ip_pool,
                                                        port_id=port.id, region=region, opts=child).address
        else:
            self.ipv4 = port.all_fixed_ips.apply(lambda ips: _first(ips, 4))

        def ipv6(ips):
            if not _first(ips, 6):
                raise ValueError(f"openstack_network {os_cfg.network}: the port got no IPv6 address; "
                                 f"use a network with an IPv6 subnet or set openstack_ipv6: false")
            return _first(ips, 6)
        self.ipv6 = port.all_fixed_ips.apply(ipv6) if os_cfg.ipv6 else None

        ssh_key = KeyPair(f"{name}-ssh-key", "ed25519", opts=self.moved(args, "pulumi-python:dynamic:Resource"))
        # Named once, not after the hostname (a key pair cannot be renamed): the key matters at
        # the first boot only, so the server never follows a change of it.
        key_pair = openstack.compute.Keypair(f"{name}-keypair", name=f"bulletproof-mail-{args.stack}",
                                             public_key=ssh_key.public_key, region=region,
                                             opts=self.moved(args, ignore_changes=["name"]))
        # The mail's own volume: it outlives the server (protected, kept when the stack is
        # destroyed) and moves to a replacement, which is why that one goes first.
        self.volume = openstack.blockstorage.Volume(
            f"{name}-data", name=f"bulletproof-mail-{args.stack}-data", size=os_cfg.volume_gb,
            region=region, opts=pulumi.ResourceOptions(parent=self, protect=True, retain_on_delete=True))
        device = self.volume.id.apply(lambda vid: f"/dev/disk/by-id/virtio-{vid[:20]}")  # Nova's serial
        self.backup = configured_backups(cfg, args.secrets)
        self.spec_json = agent_spec.host_spec_json(cfg, self.ipv4, self.ipv6, cfg.resolver_forwarders, {
            "volume": {"kind": "block", "device": device}, **backup_section(cfg, self.backup),
            **ssh_section(cfg, SSH_USER)})
        self.boot_run_id = self.spec_json.apply(lambda s: user_data.run_id(s, args.zipapp))
        server = openstack.compute.Instance(
            f"{name}-host", name=cfg.fqdn, region=region, flavor_name=os_cfg.flavor,
            image_name=os_cfg.image, key_pair=key_pair.name,
            networks=[openstack.compute.InstanceNetworkArgs(port=port.id)],
            user_data=pulumi.Output.all(self.spec_json, self.boot_run_id).apply(lambda a: cloud_user_data(*a)),
            # user-data counts at first boot only; later changes go over SSH (as on local)
            opts=self.moved(args, delete_before_replace=True, ignore_changes=["userData", "keyPair"]))
        openstack.compute.VolumeAttach(f"{name}-data-attach", instance_id=server.id, volume_id=self.volume.id,
                                       region=region, opts=pulumi.ResourceOptions(parent=self))
        self.resolver, self.dns = cfg.resolver, own_dns(cfg, args.secrets)
        self.ssh_private_key, self.ssh_user = ssh_key.private_key, SSH_USER
        self.host_id, self.exports = server.id, {}
        self.register_outputs({"ipv4": self.ipv4})


def _settings(c, v) -> Settings:
    return Settings(flavor=v["openstack_flavor"], image=v["openstack_image"],
                    network=v["openstack_network"], floating_ip_pool=v["openstack_floating_ip_pool"],
                    ipv6=v["openstack_ipv6"], volume_gb=v["openstack_volume_gb"])


def _region(rtype: str, props) -> str | None:
    return props.get("region") if rtype.startswith("openstack:") else None


def _ports(rtype: str, props):
    if rtype == RULE and props.get("direction") == "ingress":
        first, last = int(props.get("portRangeMin") or 0), int(props.get("portRangeMax") or 65535)
        yield first, last, f"{props.get('protocol') or 'any'} {first}-{last}"


def _ssh_rule_sources(rtype: str, props):
    if rtype == RULE and props.get("direction") == "ingress":
        first, last = int(props.get("portRangeMin") or 0), int(props.get("portRangeMax") or 65535)
        if first <= contract.SSH_PORT <= last:
            yield props.get("remoteIpPrefix") or "*"


BACKEND = HostBackend(
    name="openstack", component=OpenStackHost, own_dns=True, settings=_settings,
    regions={"osl1": "OpenStack region in Oslo"},
    resource_region=_region, inbound_ports=_ports, ssh_sources=_ssh_rule_sources,
    keys=(
        Key("openstack_flavor", schema.text("is missing; set it, e.g. openstack_flavor: b.2c4gb (openstack flavor list)"),
            hint="set it, e.g. openstack_flavor: b.2c4gb (openstack flavor list)"),
        Key("openstack_image", schema.text("is missing; set it, e.g. openstack_image: 'Debian 12' "
                                           "(openstack image list; Debian 12 only)"),
            hint="set it, e.g. openstack_image: 'Debian 12' (openstack image list; Debian 12 only)"),
        Key("openstack_network", schema.pattern(
            r"[0-9a-f]{8}(-?[0-9a-f]{4}){3}-?[0-9a-f]{12}", "is not a network ID; set the UUID that "
            "`openstack network list` shows (a port needs the ID, not the name)"),
            hint="set it, e.g. openstack_network: 0f6e...-uuid (openstack network list; the network "
                 "the host's port is on)"),
        Key("openstack_floating_ip_pool", schema.text(
            "is not a network name; set the external network floating IPs come from (e.g. public) "
            "or leave it out"), None),
        Key("openstack_ipv6", schema.boolean("true (the network has an IPv6 subnet) or false"), True),
        Key("openstack_volume_gb", schema.positive(" of GiB for the mail's volume", "20", minimum=1), 20),
    ),
    critical={"openstack:compute/instance:Instance": "host", "openstack:blockstorage/volume:Volume": "volume"},
)
