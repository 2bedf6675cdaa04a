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

import pulumi
import pulumi_openstack as openstack

from components import user_data
from components.keys import KeyPair

SSH_USER = "debian"   # the login user of Debian's cloud images, which gets the key pair
TCP_PORTS = (22, 25, 465, 587, 993)  # SSH, SMTP, SMTPS, submission, IMAPS; no MTA-STS (443) flag yet


def cloud_user_data(spec_json: str, zipapp: bytes) -> str:
    """The local backend's user-data (user_data.compressed) as the text cloud-init reads.

    Nova takes user_data as a string (the provider base64-encodes it), and gzip bytes are not
    valid text; cloud-init gunzips the local one first, so both run the same document.
    """
    return gzip.decompress(user_data.compressed(spec_json, zipapp)).decode()


def _first(ips: list[str], version: int) -> str | None:
    return next((ip for ip in ips or [] if (":" in ip) == (version == 6)), None)


def openstack_host(name: str, cfg, zipapp: bytes, dns, parent: pulumi.Resource):
    """Security group + rules, port, floating IPv4 (optional), key pair, server: a HostAccess.

    `dns`: (target for MailDns, zone, URL shown as dns_server) from the stack's DNS backend.
    """
    from components.mail_server import HostAccess, host_spec_json
    os_cfg, region = cfg.openstack, cfg.region
    child = pulumi.ResourceOptions(parent=parent)

    group = openstack.networking.SecGroup(f"{name}-secgroup", name=f"{cfg.fqdn}-mail", region=region,
                                          description="bulletproof-mail: SSH and mail ports only", opts=child)
    for ethertype, anywhere in (("IPv4", "0.0.0.0/0"), ("IPv6", "::/0")):
        for port in TCP_PORTS:
            openstack.networking.SecGroupRule(
                f"{name}-allow-{port}-{ethertype.lower()}", direction="ingress", ethertype=ethertype,
                protocol="tcp", port_range_min=port, port_range_max=port, remote_ip_prefix=anywhere,
                security_group_id=group.id, region=region, opts=child)
    port = openstack.networking.Port(f"{name}-port", network_id=os_cfg.network, admin_state_up=True,
                                     security_group_ids=[group.id], region=region, opts=child)
    if os_cfg.floating_ip_pool:
        ipv4 = openstack.networking.FloatingIp(f"{name}-ipv4", pool=os_cfg.floating_ip_pool,
                                               port_id=port.id, region=region, opts=child).address
    else:
        ipv4 = port.all_fixed_ips.apply(lambda ips: _first(ips, 4))
    ipv6 = None
    if os_cfg.ipv6:
        def v6(ips):
            if not _first(ips, 6):
                raise ValueError(f"openstack_network {os_cfg.network}: the port got no IPv6 address; "
                                 f"use a network with an IPv6 subnet or set openstack_ipv6: false")
            return _first(ips, 6)
        ipv6 = port.all_fixed_ips.apply(v6)

    ssh_key = KeyPair(f"{name}-ssh-key", "ed25519", opts=child)
    key_pair = openstack.compute.Keypair(f"{name}-keypair", name=f"{cfg.fqdn}-bootstrap",
                                         public_key=ssh_key.public_key, region=region, opts=child)

    spec_json = host_spec_json(cfg, ipv4, ipv6, cfg.dns.resolver)
    server = openstack.compute.Instance(
        f"{name}-host", name=cfg.fqdn, region=region, flavor_name=os_cfg.flavor,
        image_name=os_cfg.image, key_pair=key_pair.name,
        networks=[openstack.compute.InstanceNetworkArgs(port=port.id)],
        user_data=spec_json.apply(lambda s: cloud_user_data(s, zipapp)),
        # user-data counts at first boot only; later changes go over SSH (as on local)
        opts=pulumi.ResourceOptions(parent=parent, ignore_changes=["userData"]))
    target, zone, url = dns
    return HostAccess(
        ipv4=ipv4, ipv6=ipv6, dns=target, dns_zone=zone, dns_server_url=url, resolver=cfg.dns.resolver,
        spec_json=spec_json, ssh_private_key=ssh_key.private_key, ssh_user=SSH_USER,
        host_id=server.id, boot_run_id=spec_json.apply(lambda s: user_data.run_id(s, zipapp)),
        reverse_dns=False)
