"""backend openstack under pulumi mocks: graph, region guard, firewall, user-data, no secrets."""
import gzip
import json

import pytest

from components import config
from tests.unit import cloud_mocks as cm

INSTANCE = "openstack:compute/instance:Instance"
RULE = "openstack:networking/secGroupRule:SecGroupRule"


@pytest.fixture(scope="module")
def deployed():
    cfg = cm.load(cm.openstack_raw())
    return cm.run(cfg)


@pytest.fixture(scope="module")
def server_user_data(deployed):
    mocks, _ = deployed
    ((_, inputs),) = cm.of_type(mocks, INSTANCE)
    return inputs["userData"]


def test_resource_graph_is_group_rules_port_keypair_server(deployed):
    mocks, _ = deployed
    cloud = sorted((t, n) for t, n, _ in mocks.resources if t.startswith("openstack:"))
    rules = [(RULE, f"mail-allow-{p}-{v}") for p in (22, 25, 465, 587, 993) for v in ("ipv4", "ipv6")]
    assert cloud == sorted([
        ("openstack:networking/secGroup:SecGroup", "mail-secgroup"),
        *rules,
        ("openstack:networking/port:Port", "mail-port"),
        ("openstack:compute/keypair:Keypair", "mail-keypair"),
        (INSTANCE, "mail-host"),
        ("openstack:blockstorage/volume:Volume", "mail-data"),  # the mail's own volume
        ("openstack:compute/volumeAttach:VolumeAttach", "mail-data-attach"),
    ])


def test_every_cloud_resource_names_the_configured_region(deployed):
    mocks, _ = deployed
    regions = {inputs.get("region") for t, _, inputs in mocks.resources if t.startswith("openstack:")}
    assert regions == {"osl1"}


def test_region_guard_refuses_a_region_outside_norway_at_config_time():
    with pytest.raises(config.ConfigError) as err:
        cm.load(cm.openstack_raw(region="RegionOne"))
    assert [e for e in err.value.errors if e.startswith("region: 'RegionOne' is outside Norway")], err.value.errors


def test_firewall_opens_exactly_ssh_and_the_mail_ports_for_both_families(deployed):
    mocks, _ = deployed
    rules = [inputs for _, inputs in cm.of_type(mocks, RULE)]
    assert all(r["direction"] == "ingress" and r["protocol"] == "tcp" for r in rules)
    assert all(r["portRangeMin"] == r["portRangeMax"] for r in rules)
    opened = {(r["ethertype"], r["portRangeMin"]) for r in rules}
    assert opened == {(f, p) for f in ("IPv4", "IPv6") for p in (22, 25, 465, 587, 993)}


def test_firewall_rules_pass_the_policy_pack(deployed):
    from policies import rules as policy
    mocks, _ = deployed
    assert [policy.firewall_violation(RULE, n, i) for n, i in cm.of_type(mocks, RULE)] == [None] * 10


def test_user_data_is_the_local_backends_document_byte_for_byte(deployed, server_user_data):
    """The spec the agent run gets, through the local backend's user_data.compressed(): same bytes
    as the server's user-data once cloud-init has gunzipped the local one (Nova takes text)."""
    from components import user_data
    from components.bootstrap import agent_zipapp
    mocks, _ = deployed
    (spec_json,) = [i["spec_json"] for t, n, i in mocks.resources if n == "mail-bootstrap-agent"]
    local = user_data.compressed(spec_json, user_data.run_id(spec_json, agent_zipapp()))
    assert gzip.decompress(local) == server_user_data.encode("utf-8")


def test_user_data_spec_already_holds_the_hosts_addresses(server_user_data):
    spec = json.loads(cm.spec_in(server_user_data))
    assert (spec["ipv4"], spec["ipv6"]) == (cm.IPV4, cm.IPV6)


def test_no_secret_in_user_data(server_user_data):
    for secret in (cm.MOCK_SSH_KEY, cm.MOCK_DKIM_KEY, "mock-mailbox-password", "$6$mock-hash",
                   "mock-ssh-private", "mock-dkim-private", "PRIVATE KEY"):
        assert secret not in server_user_data


def test_server_boots_with_the_stack_generated_ssh_key(deployed):
    mocks, _ = deployed
    ((_, keypair),) = cm.of_type(mocks, "openstack:compute/keypair:Keypair")
    ((_, server),) = cm.of_type(mocks, INSTANCE)
    assert keypair["publicKey"].startswith("ssh-ed25519 ")
    assert server["keyPair"] == keypair["name"]
    assert server["networks"] == [{"port": "mail-port-id"}]


def test_floating_ip_pool_gives_the_floating_ipv4_to_the_spec():
    cfg = cm.load(cm.openstack_raw(openstack_floating_ip_pool="public"))
    mocks, seen = cm.run(cfg)
    ((_, fip),) = cm.of_type(mocks, "openstack:networking/floatingIp:FloatingIp")
    assert (fip["pool"], fip["portId"]) == ("public", "mail-port-id")
    assert seen["spec"]["ipv4"] == cm.FLOATING_IPV4


@pytest.mark.parametrize("changes, expected", [
    ({"openstack_flavor": None}, "openstack_flavor: missing; set it, e.g. openstack_flavor: b.2c4gb"),
    ({"openstack_network": "public"}, "openstack_network: 'public' is not a network ID"),
    ({"openstack_ipv6": "yes"}, "openstack_ipv6: 'yes' must be true"),
    ({"ssh_host": "192.0.2.10"}, "ssh_host: only used with backend: ssh"),
])
def test_bad_openstack_config_is_refused_with_one_line(changes, expected):
    raw = {k: v for k, v in cm.openstack_raw(**changes).items() if v is not None}
    with pytest.raises(config.ConfigError) as err:
        cm.load(raw)
    assert len(err.value.errors) == 1 and err.value.errors[0].startswith(expected), err.value.errors

