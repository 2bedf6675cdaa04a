"""backend azure: a Debian 12 VM in an Azure region (norwayeast is Oslo, norwaywest Stavanger).

Credentials come from the provider's usual places (ARM_* variables, `az login`), never from the
stack config; every resource names the configured region as its `location`, so the region guard
cannot be sidestepped by a provider default.

The public IPs are resources of their own, made before the VM, so the host's addresses are known
when its user-data (custom data) is written. They are translated to the NIC's private addresses
(not on the host), so the spec says `public_ip_nat` and Postfix binds none of them.

Reverse DNS goes through Azure's API (the public IP's `reverseFqdn`), but Azure accepts it only
once the name already resolves to the address: so it is set by the Azure CLI after the mail
records exist (a pulumi-command local.Command), and the IP resource ignores the field.

Azure blocks outbound TCP 25 on most subscription types (pay-as-you-go, free, MSDN, CSP): the
host receives mail but cannot deliver to other servers until Azure lifts the block (Enterprise
Agreement and MCA-E subscriptions are not blocked). `up` says so as a warning.
"""
from __future__ import annotations

import base64
import re

import pulumi
import pulumi_command as command
from pulumi_azure_native import compute, network, resources

from components import user_data
from components.keys import KeyPair

SSH_USER = "debian"   # Azure refuses `root` as the admin user; it gets passwordless sudo
TCP_PORTS = (22, 25, 465, 587, 993)  # SSH, SMTP, SMTPS, submission, IMAPS; no MTA-STS (443) flag yet
VNET_V4, SUBNET_V4 = "10.42.0.0/16", "10.42.1.0/24"
VNET_V6, SUBNET_V6 = "fd42:b9f:6d1::/48", "fd42:b9f:6d1:1::/64"   # private; the public IPv6 is NATed
OUTBOUND_25_WARNING = (
    "backend azure: Azure blocks outbound TCP port 25 on most subscription types (pay-as-you-go, "
    "free, MSDN, CSP). The server will receive mail but cannot deliver to other servers until "
    "Azure lifts the block for the subscription (Enterprise Agreement and MCA-E are not blocked).")
# Azure checks the name already resolves to the address: retry while the new records propagate.
SET_PTR = ('for i in 1 2 3 4 5 6 7 8 9 10; do az network public-ip update --ids "$PUBLIC_IP_ID" '
           '--reverse-fqdn "$REVERSE_FQDN" --output none && exit 0; sleep 30; done; '
           'echo "Azure refused reverse DNS $REVERSE_FQDN for $PUBLIC_IP_ID: does the name resolve '
           'to the address yet?" >&2; exit 1')
CLEAR_PTR = 'az network public-ip update --ids "$PUBLIC_IP_ID" --reverse-fqdn "" --output none'


def dns_label(fqdn: str, suffix: str = "") -> str:
    """The public IP's DNS name label (unique in the region, required before a reverse FQDN)."""
    label = re.sub(r"[^a-z0-9-]", "-", f"bpm-{fqdn}")[: 60 - len(suffix)].rstrip("-")
    return label + suffix


def azure_host(name: str, cfg, zipapp: bytes, dns, parent: pulumi.Resource):
    """Resource group, network, NSG, public IPs, NIC, VM, and the PTR setter: a HostAccess.

    `dns`: (target for MailDns, zone, URL shown as dns_server) from the stack's DNS backend.
    """
    from components.mail_server import HostAccess, host_spec_json
    az, region = cfg.azure, cfg.region
    child = pulumi.ResourceOptions(parent=parent)
    pulumi.log.warn(OUTBOUND_25_WARNING)

    group = resources.ResourceGroup(f"{name}-rg", resource_group_name=az.resource_group,
                                    location=region, opts=child)
    where = dict(resource_group_name=group.name, location=region)
    vnet = network.VirtualNetwork(f"{name}-vnet", **where, address_space=network.AddressSpaceArgs(
        address_prefixes=[VNET_V4, *([VNET_V6] if az.ipv6 else [])]), opts=child)
    subnet = network.Subnet(f"{name}-subnet", resource_group_name=group.name,
                            virtual_network_name=vnet.name, subnet_name="mail",
                            address_prefixes=[SUBNET_V4, *([SUBNET_V6] if az.ipv6 else [])], opts=child)
    nsg = network.NetworkSecurityGroup(f"{name}-nsg", **where, security_rules=[
        network.SecurityRuleArgs(name=f"allow-tcp-{port}", priority=100 + i, direction="Inbound",
                                 access="Allow", protocol="Tcp", source_address_prefix="*",
                                 source_port_range="*", destination_address_prefix="*",
                                 destination_port_range=str(port))
        for i, port in enumerate(TCP_PORTS)], opts=child)

    versions = (4, 6) if az.ipv6 else (4,)
    public = {v: network.PublicIPAddress(
        f"{name}-ipv{v}", **where, sku=network.PublicIPAddressSkuArgs(name="Standard"),
        public_ip_allocation_method="Static", public_ip_address_version=f"IPv{v}",
        dns_settings=network.PublicIPAddressDnsSettingsArgs(
            domain_name_label=dns_label(cfg.fqdn, "-v6" if v == 6 else "")),
        # the PTR is set by the command below, once the A/AAAA records resolve
        opts=pulumi.ResourceOptions(parent=parent, ignore_changes=["dnsSettings.reverseFqdn"]))
        for v in versions}
    nic = network.NetworkInterface(f"{name}-nic", **where, network_security_group=network.NetworkSecurityGroupArgs(
        id=nsg.id), ip_configurations=[network.NetworkInterfaceIPConfigurationArgs(
            name=f"ipv{v}", primary=v == 4, private_ip_address_version=f"IPv{v}",
            private_ip_allocation_method="Dynamic", subnet=network.SubnetArgs(id=subnet.id),
            public_ip_address=network.PublicIPAddressArgs(id=ip.id)) for v, ip in public.items()],
        opts=child)

    ipv4 = public[4].ip_address
    ipv6 = public[6].ip_address if az.ipv6 else None
    spec_json = host_spec_json(cfg, ipv4, ipv6, cfg.dns.resolver, public_ip_nat=True)

    ssh_key = KeyPair(f"{name}-ssh-key", "ed25519", opts=child)
    publisher, offer, sku, version = az.image
    vm = compute.VirtualMachine(
        f"{name}-host", **where, vm_name=cfg.hostname,
        hardware_profile=compute.HardwareProfileArgs(vm_size=az.vm_size),
        storage_profile=compute.StorageProfileArgs(
            image_reference=compute.ImageReferenceArgs(publisher=publisher, offer=offer, sku=sku, version=version),
            os_disk=compute.OSDiskArgs(create_option="FromImage", delete_option="Delete",
                                       managed_disk=compute.ManagedDiskParametersArgs(
                                           storage_account_type="StandardSSD_LRS"))),
        network_profile=compute.NetworkProfileArgs(network_interfaces=[
            compute.NetworkInterfaceReferenceArgs(id=nic.id, primary=True, delete_option="Delete")]),
        os_profile=compute.OSProfileArgs(
            computer_name=cfg.hostname, admin_username=SSH_USER,
            # the local backend's document, gzip and all (cloud-init gunzips it), base64 as Azure wants
            custom_data=spec_json.apply(lambda s: base64.b64encode(user_data.compressed(s, zipapp)).decode()),
            linux_configuration=compute.LinuxConfigurationArgs(
                disable_password_authentication=True,
                ssh=compute.SshConfigurationArgs(public_keys=[compute.SshPublicKeyArgs(
                    path=f"/home/{SSH_USER}/.ssh/authorized_keys", key_data=ssh_key.public_key)]))),
        # user-data counts at first boot only; later changes go over SSH (as on local)
        opts=pulumi.ResourceOptions(parent=parent, ignore_changes=["osProfile.customData"]))

    def set_ptrs(records: list) -> list:
        """After the A/AAAA records exist: the PTR of each public IP through Azure's API."""
        return [command.local.Command(
            f"{name}-ptr-ipv{v}", create=SET_PTR, delete=CLEAR_PTR, triggers=[ip.id],
            environment={"PUBLIC_IP_ID": ip.id, "REVERSE_FQDN": f"{cfg.fqdn}."},
            opts=pulumi.ResourceOptions(parent=parent, depends_on=records)) for v, ip in public.items()]

    target, zone, url = dns
    return HostAccess(
        ipv4=ipv4, ipv6=ipv6, dns=target, dns_zone=zone, dns_server_url=url, resolver=cfg.dns.resolver,
        spec_json=spec_json, ssh_private_key=ssh_key.private_key, ssh_user=SSH_USER,
        host_id=vm.id, boot_run_id=spec_json.apply(lambda s: user_data.run_id(s, zipapp)),
        reverse_dns=False, after_records=set_ptrs)
