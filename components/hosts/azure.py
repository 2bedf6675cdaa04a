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
import hashlib
import re
import shutil
from dataclasses import dataclass

import pulumi

from agent import contract
from components import agent_spec, schema, user_data
from components.backends import HostBackend
from components.hosts import (BackupTarget, Host, HostArgs, backup_section, own_dns, ssh_section,
                              warn_ssh_access)
from components.keys import KeyPair
from components.schema import Key

SSH_USER = "debian"   # Azure refuses `root` as the admin user; it gets passwordless sudo
BACKUP_CONTAINER = "mail-backups"
DATA_DISK_LUN = 0
DATA_DISK_DEVICE = f"/dev/disk/azure/scsi1/lun{DATA_DISK_LUN}"  # Azure's udev rules name it by LUN
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


def storage_account_name(stack: str, group: str) -> str:
    """3-24 lower-case letters and digits, unique in all of Azure: from the stack and its group."""
    return "bpm" + hashlib.sha256(f"{stack}\0{group}".encode()).hexdigest()[:18]


def dns_label(fqdn: str, suffix: str = "") -> str:
    """The public IP's DNS name label (unique in the region, required before a reverse FQDN)."""
    label = re.sub(r"[^a-z0-9-]", "-", f"bpm-{fqdn}")[: 60 - len(suffix)].rstrip("-")
    return label + suffix


@dataclass(frozen=True)
class Settings:
    """backend azure: credentials come from the provider's own ARM_* variables or `az login`."""
    vm_size: str
    image: tuple[str, str, str, str]   # publisher, offer, sku, version (an image URN)
    resource_group: str
    ipv6: bool = True                  # dual-stack network, public IPv6: AAAA + PTR
    data_disk_gb: int = 32             # the mail's managed disk


class AzureHost(Host):
    """Resource group, network, NSG, public IPs, NIC, VM; the PTR setters after the records."""

    def __init__(self, name: str, args: HostArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("bulletproof:hosts:Azure", name, None, opts)
        from pulumi_azure_native import compute, network, resources
        cfg, az, region = args.cfg, args.cfg.host, args.cfg.region
        child = self.moved(args)
        pulumi.log.warn(OUTBOUND_25_WARNING)

        group = resources.ResourceGroup(f"{name}-rg", resource_group_name=az.resource_group,
                                        location=region, opts=child)
        where = dict(resource_group_name=group.name, location=region)
        nic = self._network(name, args, network, group, where)
        self.ipv4 = self._public[4].ip_address
        self.ipv6 = self._public[6].ip_address if az.ipv6 else None
        # The mail's own disk: it outlives the VM (protected, kept when the stack is destroyed),
        # and moves to a replacement VM, which is why that VM goes first (delete_before_replace).
        self.volume = compute.Disk(f"{name}-data", **where, disk_name=f"{az.resource_group}-mail-data",
                                   creation_data=compute.CreationDataArgs(create_option="Empty"),
                                   disk_size_gb=az.data_disk_gb, sku=compute.DiskSkuArgs(name="StandardSSD_LRS"),
                                   opts=pulumi.ResourceOptions(parent=self, protect=True, retain_on_delete=True))
        self.backup = self._backups(name, args, group, region) if cfg.backup_repository != "none" else None
        warn_ssh_access(cfg, f"azure host {cfg.fqdn}")
        self.spec_json = agent_spec.host_spec_json(cfg, self.ipv4, self.ipv6, cfg.resolver_forwarders, {
            "features": {"public_ip_nat": True}, "volume": {"kind": "block", "device": DATA_DISK_DEVICE},
            **backup_section(cfg, self.backup), **ssh_section(cfg, SSH_USER)})
        self.boot_run_id = self.spec_json.apply(lambda s: user_data.run_id(s, args.zipapp))
        ssh_key = KeyPair(f"{name}-ssh-key", "ed25519", opts=self.moved(args, "pulumi-python:dynamic:Resource"))
        publisher, offer, sku, version = az.image
        vm = compute.VirtualMachine(
            f"{name}-host", **where, vm_name="mail",
            hardware_profile=compute.HardwareProfileArgs(vm_size=az.vm_size),
            storage_profile=compute.StorageProfileArgs(
                image_reference=compute.ImageReferenceArgs(publisher=publisher, offer=offer, sku=sku, version=version),
                os_disk=compute.OSDiskArgs(create_option="FromImage", delete_option="Delete",
                                           managed_disk=compute.ManagedDiskParametersArgs(
                                               storage_account_type="StandardSSD_LRS")),
                data_disks=[compute.DataDiskArgs(lun=DATA_DISK_LUN, create_option="Attach", delete_option="Detach",
                                                 managed_disk=compute.ManagedDiskParametersArgs(id=self.volume.id))]),
            network_profile=compute.NetworkProfileArgs(network_interfaces=[
                compute.NetworkInterfaceReferenceArgs(id=nic.id, primary=True, delete_option="Delete")]),
            os_profile=compute.OSProfileArgs(
                computer_name="mail", admin_username=SSH_USER,
                # the local backend's document, gzip and all (cloud-init gunzips it), base64 as Azure wants
                custom_data=pulumi.Output.all(self.spec_json, self.boot_run_id).apply(
                    lambda a: base64.b64encode(user_data.compressed(*a)).decode()),
                linux_configuration=compute.LinuxConfigurationArgs(
                    disable_password_authentication=True,
                    ssh=compute.SshConfigurationArgs(public_keys=[compute.SshPublicKeyArgs(
                        path=f"/home/{SSH_USER}/.ssh/authorized_keys", key_data=ssh_key.public_key)]))),
            # user-data counts at first boot only; later changes go over SSH (as on local). The
            # names are fixed at creation: a new hostname is set by the agent, in place.
            opts=self.moved(args, delete_before_replace=True,
                            ignore_changes=["osProfile.customData", "vmName", "osProfile.computerName"]))
        self.resolver, self.dns = cfg.resolver, own_dns(cfg, args.secrets)
        self.ssh_private_key, self.ssh_user = ssh_key.private_key, SSH_USER
        self.host_id, self.exports = vm.id, {}
        self._args = args
        self.register_outputs({"ipv4": self.ipv4})

    def _backups(self, name: str, args: HostArgs, group, region: str) -> BackupTarget:
        """A storage account and blob container in the host's region for restic, protected like
        the data disk: a backup that goes with the server is no backup."""
        from pulumi_azure_native import storage
        keep = pulumi.ResourceOptions(parent=self, protect=True, retain_on_delete=True)
        account = storage.StorageAccount(
            f"{name}-backups", resource_group_name=group.name, location=region, kind="StorageV2",
            account_name=storage_account_name(args.stack, args.cfg.host.resource_group),
            sku=storage.SkuArgs(name="Standard_LRS"), allow_blob_public_access=False,
            minimum_tls_version="TLS1_2", opts=keep)
        container = storage.BlobContainer(f"{name}-backups", account_name=account.name,
                                          resource_group_name=group.name, container_name=BACKUP_CONTAINER,
                                          public_access="None", opts=keep)
        key = storage.list_storage_account_keys_output(resource_group_name=group.name,
                                                       account_name=account.name).keys[0].value
        return BackupTarget(container.name.apply(lambda _: f"azure:{BACKUP_CONTAINER}:/"), region, pulumi.Output.secret(
            pulumi.Output.all(account.name, key).apply(lambda a: {"AZURE_ACCOUNT_NAME": a[0],
                                                                  "AZURE_ACCOUNT_KEY": a[1]})))

    def _network(self, name: str, args: HostArgs, network, group, where: dict):
        """VNet, subnet, NSG (SSH and the mail ports), static public IPs, the NIC: the NIC."""
        az, child = args.cfg.host, self.moved(args)
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
            for i, port in enumerate(contract.public_tcp_ports())
            if port != contract.SSH_PORT or _ssh_anywhere(args.cfg)]
            + ([] if _ssh_anywhere(args.cfg) else _ssh_rules(network, args.cfg)), opts=child)

        versions = (4, 6) if az.ipv6 else (4,)
        self._public = {v: network.PublicIPAddress(
            f"{name}-ipv{v}", **where, sku=network.PublicIPAddressSkuArgs(name="Standard"),
            public_ip_allocation_method="Static", public_ip_address_version=f"IPv{v}",
            dns_settings=network.PublicIPAddressDnsSettingsArgs(
                domain_name_label=dns_label(args.cfg.fqdn, "-v6" if v == 6 else "")),
            # the PTR is set by reverse_dns, once the A/AAAA records resolve
            opts=self.moved(args, ignore_changes=["dnsSettings.reverseFqdn"]))
            for v in versions}
        nic = network.NetworkInterface(f"{name}-nic", **where, network_security_group=network.NetworkSecurityGroupArgs(
            id=nsg.id), ip_configurations=[network.NetworkInterfaceIPConfigurationArgs(
                name=f"ipv{v}", primary=v == 4, private_ip_address_version=f"IPv{v}",
                private_ip_allocation_method="Dynamic", subnet=network.SubnetArgs(id=subnet.id),
                public_ip_address=network.PublicIPAddressArgs(id=ip.id)) for v, ip in self._public.items()],
            opts=child)
        return nic

    def reverse_dns(self, fqdn: str, after: list) -> list:
        """After the A/AAAA records exist: the PTR of each public IP through Azure's API."""
        import pulumi_command as command
        return [command.local.Command(
            f"{self._name}-ptr-ipv{v}", create=SET_PTR, delete=CLEAR_PTR, triggers=[ip.id],
            environment={"PUBLIC_IP_ID": ip.id, "REVERSE_FQDN": f"{fqdn}."},
            opts=self.moved(self._args, depends_on=after)) for v, ip in self._public.items()]


def _ssh_anywhere(cfg) -> bool:
    """SSH from anywhere (the default): the rule stays as it always was, source "*"."""
    return set(cfg.ssh_allow_from) == set(contract.SSH_ANYWHERE)


def _ssh_rules(network, cfg) -> list:
    """SSH from ssh_allow_from only: one rule per address family (a rule holds one family)."""
    import ipaddress
    rules = []
    for version, name, priority in ((4, "allow-tcp-22", 100), (6, "allow-tcp-22-v6", 120)):
        prefixes = [c for c in cfg.ssh_allow_from if ipaddress.ip_network(c).version == version]
        if prefixes:
            rules.append(network.SecurityRuleArgs(
                name=name, priority=priority, direction="Inbound", access="Allow", protocol="Tcp",
                source_address_prefixes=prefixes, source_port_range="*",
                destination_address_prefix="*", destination_port_range=str(contract.SSH_PORT)))
    return rules


def _settings(c, v) -> Settings:
    region, image = v["region"], v["azure_image"]
    if isinstance(region, str) and not re.fullmatch(r"[a-z][a-z0-9]{2,30}", region):
        c.err("region", f"{region!r} is not an Azure location name; use its short name, "
                        f"e.g. norwayeast (az account list-locations -o table)")
    parts = tuple(str(image).split(":"))
    if image is not None and (len(parts) != 4 or not all(parts) or "debian-12" not in parts[1]):
        c.err("azure_image", f"{image!r} is not a Debian 12 image URN; use publisher:offer:sku:version, "
                             f"e.g. Debian:debian-12:12-gen2:latest (the agent runs on Debian 12 only)")
    return Settings(vm_size=v["azure_vm_size"], image=parts if len(parts) == 4 else ("", "", "", ""),
                    resource_group=v["azure_resource_group"], ipv6=v["azure_ipv6"],
                    data_disk_gb=v["azure_data_disk_gb"])


def _precheck(cfg) -> list[str]:
    # Azure takes a PTR only once the name resolves: the stack sets it with the Azure CLI after
    # the records exist, so a missing CLI would fail halfway through the first `up`.
    if shutil.which("az"):
        return []
    return ["backend: 'azure' sets reverse DNS with the Azure CLI, and `az` is not on PATH; "
            "install it and sign in (`az login`, or a service principal's ARM_* variables)"]


def _region(rtype: str, props) -> str | None:
    return props.get("location") if rtype.startswith("azure-native:") else None


def _ports(rtype: str, props):
    if rtype == "azure-native:network:NetworkSecurityGroup":
        for rule in props.get("securityRules") or []:
            yield from _rule_ports(rule)
    elif rtype == "azure-native:network:SecurityRule":
        yield from _rule_ports(props)


def _ssh_rule_sources(rtype: str, props):
    rules = (props.get("securityRules") or [] if rtype == "azure-native:network:NetworkSecurityGroup"
             else [props] if rtype == "azure-native:network:SecurityRule" else [])
    for rule in rules:
        if any(first <= contract.SSH_PORT <= last for first, last, _ in _rule_ports(rule)):
            yield from rule.get("sourceAddressPrefixes") or [rule.get("sourceAddressPrefix") or "*"]


def _rule_ports(rule):
    """An NSG rule's inbound Allow port ranges ("25", "1000-2000", "*")."""
    if rule.get("direction") != "Inbound" or rule.get("access") != "Allow":
        return
    for ports in rule.get("destinationPortRanges") or [rule.get("destinationPortRange") or "*"]:
        first, _, last = ("0-65535" if ports == "*" else str(ports)).partition("-")
        yield int(first), int(last or first), f"{rule.get('protocol') or '*'} {ports}"


BACKEND = HostBackend(
    name="azure", component=AzureHost, own_dns=True, own_backups=True, settings=_settings, precheck=_precheck,
    regions={"norwayeast": "Azure, Oslo", "norwaywest": "Azure, Stavanger"},
    resource_region=_region, inbound_ports=_ports, ssh_sources=_ssh_rule_sources,
    keys=(
        Key("azure_vm_size", schema.pattern(r"[A-Za-z0-9_]+", "is not a VM size; e.g. azure_vm_size: "
                                            "Standard_B2s (az vm list-sizes -l norwayeast)"), "Standard_B2s"),
        Key("azure_image", schema.text("is not a Debian 12 image URN; e.g. Debian:debian-12:12-gen2:latest"),
            "Debian:debian-12:12-gen2:latest"),
        Key("azure_resource_group", schema.pattern(
            r"[-\w.()]{1,89}[-\w()]", "is not a resource group name; use letters, digits, '-', '_', "
            "'.', '(' or ')', e.g. bulletproof-mail-prod"), lambda v, stack: f"bulletproof-mail-{stack}"),
        Key("azure_ipv6", schema.boolean("true (dual-stack, with a public IPv6) or false"), True),
        Key("azure_data_disk_gb", schema.positive(" of GiB for the mail's disk", "32", minimum=4), 32),
    ),
    critical={"azure-native:compute:VirtualMachine": "host", "azure-native:compute:Disk": "volume",
              "azure-native:storage:BlobContainer": "volume"},
)
