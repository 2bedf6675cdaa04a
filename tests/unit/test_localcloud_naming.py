"""localcloud names and subnet choice: pure functions, no root needed."""
from ipaddress import IPv4Network, IPv6Network

import pytest

from localcloud import naming, network


def test_names_are_deterministic():
    assert naming.stack_names("local", "/src/a") == naming.stack_names("local", "/src/a")


@pytest.mark.parametrize("attr", ["key", "stack_id", "bridge", "runtime_dir"])
def test_two_checkouts_never_share_a_name(attr):
    a = naming.stack_names("local", "/home/dev/bulletproof-mail")
    b = naming.stack_names("local", "/builds/ci/bulletproof-mail")
    assert getattr(a, attr) != getattr(b, attr)


@pytest.mark.parametrize("stack", ["local", "a-very-long-stack-name-for-ci-runs-of-branches"])
def test_bridge_name_fits_an_interface_name(stack):
    assert len(naming.stack_names(stack, "/x").bridge) <= naming.IFNAMSIZ


@pytest.mark.parametrize("host", ["mail", "backup-mx-number-two", "a"])
def test_machine_name_leaves_room_for_the_veth_prefix(host):
    name = naming.stack_names("local", "/x").machine(host)
    assert len(naming.VETH_PREFIX + name) <= naming.IFNAMSIZ


def test_machine_names_differ_for_hosts_with_a_common_prefix():
    names = naming.stack_names("local", "/x")
    assert names.machine("backup-mx-1") != names.machine("backup-mx-2")


def test_machine_names_differ_between_checkouts():
    host = "mail"
    assert (naming.stack_names("local", "/a").machine(host)
            != naming.stack_names("local", "/b").machine(host))


@pytest.mark.parametrize("host", ["Mail", "mail_1", "-mail", "mail.example.test", ""])
def test_host_name_must_be_a_dns_label(host):
    with pytest.raises(ValueError):
        naming.check_host(host)


def test_cache_dir_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert naming.cache_dir() == tmp_path / "bulletproof-mail"


def test_runtime_dir_lives_under_the_runtime_root(monkeypatch, tmp_path):
    monkeypatch.setenv(naming.RUNTIME_ROOT_ENV, str(tmp_path))
    names = naming.stack_names("local", "/x")
    assert names.runtime_dir.parent == tmp_path


SEED = naming.stack_names("local", "/x").key


def test_subnet_choice_is_deterministic():
    assert network.choose_subnet(SEED) == network.choose_subnet(SEED)


def test_subnet_is_a_private_slash_24_of_the_pool():
    net = network.choose_subnet(SEED)
    assert net.prefixlen == 24 and net.subnet_of(network.IPv4_POOL) and net.is_private


@pytest.mark.parametrize("taken_prefix", [24, 16, 8 + 4])
def test_subnet_skips_an_overlapping_route(taken_prefix):
    first = network.choose_subnet(SEED)
    taken = first.supernet(new_prefix=taken_prefix)
    chosen = network.choose_subnet(SEED, [taken])
    assert not chosen.overlaps(taken)


def test_subnet_ignores_other_address_families():
    first = network.choose_subnet(SEED)
    assert network.choose_subnet(SEED, [IPv6Network("fd00::/8")]) == first


def test_full_pool_is_an_error():
    pool = IPv4Network("10.9.0.0/23")
    with pytest.raises(RuntimeError):
        network.choose_subnet(SEED, [pool], pool=pool)


def test_different_seeds_spread_over_the_pool():
    seeds = [naming.stack_names(f"s{i}", "/x").key for i in range(20)]
    assert len({network.choose_subnet(s) for s in seeds}) == 20


def test_ula_is_a_slash_64_in_fd00_slash_8():
    net = network.choose_ula(SEED)
    assert net.prefixlen == 64 and net.subnet_of(IPv6Network("fd00::/8"))


def test_ula_skips_a_taken_prefix():
    first = network.choose_ula(SEED)
    assert network.choose_ula(SEED, [first]) != first


def test_bridge_addresses_are_in_its_subnets():
    bridge = network.Bridge("bm-x", network.IPv4Interface("10.1.2.1/24"),
                            network.IPv6Interface("fd01:2:3::1/64"))
    assert str(bridge.address(10)) == "10.1.2.10/24"
    assert str(bridge.address6(10)) == "fd01:2:3::a/64"
    with pytest.raises(ValueError):
        bridge.address(1)
