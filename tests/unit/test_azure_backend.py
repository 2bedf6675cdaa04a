"""backend azure under pulumi mocks: graph, region guard, firewall, user-data, PTR order, no secrets."""
import base64
import gzip
import json

import pytest

from components import config
from tests.unit import cloud_mocks as cm

VM = "azure-native:compute:VirtualMachine"
NSG = "azure-native:network:NetworkSecurityGroup"
PUBLIC_IP = "azure-native:network:PublicIPAddress"
COMMAND = "command:local:Command"


def _deploy(raw: dict):
    """Run the program under mocks, recording what the PTR commands and the agent run wait for."""
    import pulumi_command.local as local
    from components import bootstrap
    waits: dict[str, list[str]] = {}

    def recording(cls):
        class Recording(cls):
            def __init__(self, *args, **kwargs):
                opts = kwargs.get("opts") or args[-1]
                name = args[0] if isinstance(args[0], str) else args[1]  # AgentRun: (provider, name, ...)
                waits[name] = sorted(r._name for r in (opts.depends_on or []))
                super().__init__(*args, **kwargs)
        return Recording

    saved = local.Command, bootstrap.AgentRun
    local.Command, bootstrap.AgentRun = recording(local.Command), recording(bootstrap.AgentRun)
    try:
        mocks, seen = cm.run(cm.load(raw))
    finally:
        local.Command, bootstrap.AgentRun = saved
    return mocks, seen, waits


@pytest.fixture(scope="module")
def deployed():
    return _deploy(cm.azure_raw())


@pytest.fixture(scope="module")
def vm(deployed):
    mocks, _, _ = deployed
    ((_, inputs),) = cm.of_type(mocks, VM)
    return inputs


def test_resource_graph(deployed):
    mocks, _, _ = deployed
    cloud = sorted((t.split(":", 1)[1], n) for t, n, _ in mocks.resources
                   if t.startswith(("azure-native:", "command:")))
    assert cloud == sorted([
        ("resources:ResourceGroup", "mail-rg"), ("network:VirtualNetwork", "mail-vnet"),
        ("network:Subnet", "mail-subnet"), ("network:NetworkSecurityGroup", "mail-nsg"),
        ("network:PublicIPAddress", "mail-ipv4"), ("network:PublicIPAddress", "mail-ipv6"),
        ("network:NetworkInterface", "mail-nic"), ("compute:VirtualMachine", "mail-host"),
        ("compute:Disk", "mail-data"),  # the mail's own disk, outliving the VM
        ("storage:StorageAccount", "mail-backups"), ("storage:BlobContainer", "mail-backups"),
        ("local:Command", "mail-ptr-ipv4"), ("local:Command", "mail-ptr-ipv6"),
    ])


def test_every_located_resource_stands_in_the_configured_region(deployed):
    mocks, _, _ = deployed
    located = {(t.rsplit(":", 1)[1], n): i.get("location") for t, n, i in mocks.resources
               if t.startswith("azure-native:")}
    # the subnet lives in its VNet, the blob container in its storage account
    assert {k for k, loc in located.items() if loc is None} == {("Subnet", "mail-subnet"),
                                                                ("BlobContainer", "mail-backups")}
    assert {loc for loc in located.values() if loc} == {"norwayeast"}


def test_every_azure_resource_passes_the_residency_policy(deployed):
    from policies import rules as policy
    mocks, _, _ = deployed
    assert [policy.residency_violation(t, n, i, "NO") for t, n, i in mocks.resources
            if t.startswith("azure-native:")] == [None] * 11
    assert "outside Norway" in policy.residency_violation(PUBLIC_IP, "ip", {"location": "westeurope"}, "NO")


@pytest.mark.parametrize("region, expected", [
    ("westeurope", "region: 'westeurope' is outside Norway"),
    ("Norway East", "region: 'Norway East' is outside Norway"),
])
def test_region_guard_refuses_a_region_outside_norway_at_config_time(region, expected):
    with pytest.raises(config.ConfigError) as err:
        cm.load(cm.azure_raw(region=region))
    assert [e for e in err.value.errors if e.startswith(expected)], err.value.errors


def test_display_names_are_refused_even_without_residency():
    with pytest.raises(config.ConfigError) as err:
        cm.load(cm.azure_raw(region="Norway East", residency="none"))
    assert err.value.errors == ["region: 'Norway East' is not an Azure location name; use its short "
                                "name, e.g. norwayeast (az account list-locations -o table)"]


def test_firewall_opens_exactly_ssh_and_the_mail_ports_inbound(deployed):
    mocks, _, _ = deployed
    ((_, nsg),) = cm.of_type(mocks, NSG)
    rules = nsg["securityRules"]
    assert all((r["direction"], r["access"], r["protocol"]) == ("Inbound", "Allow", "Tcp") for r in rules)
    assert sorted(int(r["destinationPortRange"]) for r in rules) == [22, 25, 465, 587, 993]
    assert len({r["priority"] for r in rules}) == len(rules)  # Azure refuses equal priorities


def test_firewall_policy_passes_ours_and_rejects_an_extra_port(deployed):
    from policies import rules as policy
    mocks, _, _ = deployed
    ((name, nsg),) = cm.of_type(mocks, NSG)
    assert policy.firewall_violation(NSG, name, nsg) is None
    rdp = {"name": "rdp", "direction": "Inbound", "access": "Allow", "protocol": "Tcp",
           "destinationPortRange": "3389", "priority": 300}
    assert "opens Tcp 3389 beyond" in policy.firewall_violation(NSG, name, {"securityRules": [*nsg["securityRules"], rdp]})
    assert "opens * *" in policy.firewall_violation(
        "azure-native:network:SecurityRule", "any", {"direction": "Inbound", "access": "Allow"})
    assert policy.firewall_violation(NSG, name, {"securityRules": [{**rdp, "access": "Deny"}]}) is None


def test_the_nic_carries_both_public_ips_and_the_nsg(deployed):
    mocks, _, _ = deployed
    ((_, nic),) = cm.of_type(mocks, "azure-native:network:NetworkInterface")
    assert nic["networkSecurityGroup"] == {"id": "mail-nsg-id"}
    assert [(c["privateIPAddressVersion"], c["publicIPAddress"]["id"], c["primary"])
            for c in nic["ipConfigurations"]] == [("IPv4", "mail-ipv4-id", True), ("IPv6", "mail-ipv6-id", False)]
    ips = {n: (i["publicIPAddressVersion"], i["publicIPAllocationMethod"], i["sku"]["name"])
           for n, i in cm.of_type(mocks, PUBLIC_IP)}
    assert ips == {"mail-ipv4": ("IPv4", "Static", "Standard"), "mail-ipv6": ("IPv6", "Static", "Standard")}


def test_custom_data_is_the_local_backends_user_data_byte_for_byte(deployed, vm):
    """Local feeds its container base64(user_data.compressed(spec)); Azure gets the same string."""
    from components import user_data
    from components.bootstrap import agent_zipapp
    mocks, _, _ = deployed
    (spec_json,) = [i["spec_json"] for t, n, i in mocks.resources if n == "mail-bootstrap-agent"]
    local = base64.b64encode(user_data.compressed(spec_json, user_data.run_id(spec_json, agent_zipapp()))).decode()
    assert vm["osProfile"]["customData"] == local


def test_the_spec_holds_the_public_addresses_and_says_they_are_natted(deployed, vm):
    document = gzip.decompress(base64.b64decode(vm["osProfile"]["customData"])).decode()
    spec = json.loads(cm.spec_in(document))
    assert (spec["ipv4"], spec["ipv6"]) == (cm.AZURE_IPV4, cm.AZURE_IPV6)
    assert spec["features"] == {"public_ip_nat": True}  # Postfix must not bind them


def test_no_secret_in_custom_data(vm):
    document = gzip.decompress(base64.b64decode(vm["osProfile"]["customData"])).decode()
    for secret in (cm.MOCK_SSH_KEY, cm.MOCK_DKIM_KEY, "mock-mailbox-password", "$6$mock-hash",
                   "mock-ssh-private", "mock-dkim-private", "PRIVATE KEY"):
        assert secret not in document


def test_the_vm_takes_the_stack_key_for_a_sudo_user_and_no_password(vm):
    os_profile = vm["osProfile"]
    assert os_profile["adminUsername"] == "debian" and "adminPassword" not in os_profile
    linux = os_profile["linuxConfiguration"]
    assert linux["disablePasswordAuthentication"] is True
    ((key),) = linux["ssh"]["publicKeys"]
    assert key["path"] == "/home/debian/.ssh/authorized_keys" and key["keyData"].startswith("ssh-ed25519 ")
    assert vm["storageProfile"]["imageReference"] == {
        "publisher": "Debian", "offer": "debian-12", "sku": "12-gen2", "version": "latest"}


def test_ptrs_are_set_after_the_records_and_before_the_agent_runs(deployed):
    mocks, _, waits = deployed
    for v, record in (("ipv4", "mail-dns-records-a"), ("ipv6", "mail-dns-records-aaaa")):
        assert record in waits[f"mail-ptr-{v}"], waits
        assert f"mail-ptr-{v}" in waits["mail-bootstrap-agent"], waits
    commands = dict(cm.of_type(mocks, COMMAND))
    assert commands["mail-ptr-ipv4"]["environment"] == {"PUBLIC_IP_ID": "mail-ipv4-id",
                                                        "REVERSE_FQDN": "mail.bulletproof.test."}
    assert "--reverse-fqdn \"$REVERSE_FQDN\"" in commands["mail-ptr-ipv4"]["create"]
    assert "--reverse-fqdn \"\"" in commands["mail-ptr-ipv4"]["delete"]


def test_without_ipv6_there_is_one_public_ip_and_no_aaaa(deployed):
    mocks, seen, _ = _deploy(cm.azure_raw(azure_ipv6=False))
    assert [n for n, _ in cm.of_type(mocks, PUBLIC_IP)] == ["mail-ipv4"]
    assert [n for n, _ in cm.of_type(mocks, COMMAND)] == ["mail-ptr-ipv4"]
    assert seen["spec"]["ipv6"] is None
    assert not [n for t, n, _ in mocks.resources if n == "mail-dns-records-aaaa"]


@pytest.mark.parametrize("changes, expected", [
    ({"azure_image": "Canonical:ubuntu-24_04-lts:server:latest"}, "azure_image: 'Canonical:ubuntu-24_04-lts:server:latest' is not a Debian 12 image URN"),
    ({"azure_vm_size": "B2s please"}, "azure_vm_size: 'B2s please' is not a VM size"),
    ({"azure_ipv6": "yes"}, "azure_ipv6: 'yes' must be true"),
    ({"azure_resource_group": "rg/mail"}, "azure_resource_group: 'rg/mail' is not a resource group name"),
    ({"openstack_flavor": "b.2c4gb"}, "openstack_flavor: only used with backend: openstack"),
    ({"resolver": None}, "resolver: missing; set the DNS resolver"),
])
def test_bad_azure_config_is_refused_with_one_line(changes, expected):
    raw = {k: v for k, v in cm.azure_raw(**changes).items() if v is not None}
    with pytest.raises(config.ConfigError) as err:
        cm.load(raw)
    assert len(err.value.errors) == 1 and err.value.errors[0].startswith(expected), err.value.errors


def test_azure_keys_are_refused_on_another_backend():
    with pytest.raises(config.ConfigError) as err:
        cm.load({**cm.openstack_raw(), "azure_vm_size": "Standard_B2s"})
    assert err.value.errors == ["azure_vm_size: only used with backend: azure (backend is 'openstack'); "
                                "remove them or set backend: azure"]

