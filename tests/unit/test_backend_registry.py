"""Adding a backend is one new file plus one registry line: a toy backend (tests/unit/toy_host.py)
is registered by that line alone, and config loading, the program's key list, the policy pack
and MailServer all pick it up. Registering the backends imports no cloud SDK."""
import subprocess
import sys

import pytest

from components import backends, config, config_rules
from tests import local_stack
from tests.unit import cloud_mocks as cm

TOY = {"backend": "toy", "region": "toy-bergen", "toy_size": "large", "resolver": "192.0.2.53:53",
       "backup_repository": "none",
       "dns_server": "192.0.2.53:53", "dns_tsig_name": "mail-updates", "dns_tsig_secret": "c2VjcmV0"}


@pytest.fixture
def toy(monkeypatch):
    # the one registry line a new backend adds
    monkeypatch.setitem(backends.HOSTS, "toy", "tests.unit.toy_host")


def _raw(**changes) -> dict:
    return {**local_stack.raw(), **TOY, **changes}


def test_its_keys_are_read_and_typed(toy):
    cfg = config.load(_raw(), "prod-toy", secret_keys=config.secret_key_names())
    assert (cfg.backend, cfg.host.size, cfg.dns_backend, cfg.dns.server) == ("toy", "large", "rfc2136", "192.0.2.53:53")


def test_its_keys_join_the_programs_key_list(toy):
    assert "toy_size" in {k.name for k in config.all_keys()}


def test_its_bad_value_is_refused_with_key_value_and_fix(toy):
    with pytest.raises(config.ConfigError) as err:
        config.load(_raw(toy_size="huge"), "prod-toy", secret_keys=config.secret_key_names())
    assert err.value.errors == ["toy_size: 'huge' is not a toy size; use one of small, large"]


def test_its_key_on_another_backend_is_refused_by_name(toy):
    with pytest.raises(config.ConfigError) as err:
        config.load({**local_stack.raw(), "toy_size": "small"}, "local")
    assert err.value.errors == ["toy_size: only used with backend: toy (backend is 'local'); "
                                "remove them or set backend: toy"]


def test_its_region_counts_as_norwegian(toy):
    assert "toy-bergen" in config_rules.norwegian_regions()


def test_the_policy_pack_reads_its_region_and_ports(toy):
    from policies import rules
    assert rules.residency_violation("toy:index:Server", "mail-host", {"region": "toy-oslo2"}, "NO")
    assert rules.residency_violation("toy:index:Server", "mail-host", {"region": "toy-bergen"}, "NO") is None
    assert "tcp 3306" in rules.firewall_violation("toy:index:Server", "mail-host", {"open_ports": [25, 3306]})


def test_mail_server_builds_it_and_publishes_its_address(toy):
    cfg = config.load(_raw(), cm.STACK, secret_keys=config.secret_key_names())
    mocks, seen = cm.run(cfg, secrets={"dns_tsig_secret": "c2VjcmV0"})
    assert [n for t, n, _ in mocks.resources if t == "toy:index:Server"] == ["mail-host"]
    assert seen["spec"]["ipv4"] == "192.0.2.77"
    records = {n: i for n, i in cm.of_type(mocks, "pulumi-python:dynamic/rfc2136:DnsRecord")}
    assert records["mail-dns-records-a"]["values"] == ["192.0.2.77"]


def test_registering_and_validating_imports_no_cloud_sdk():
    """The Azure SDK alone takes seconds to import: only a stack that uses a backend pays."""
    code = (
        "import sys\n"
        "from components import backends, config\n"
        "from policies import rules\n"
        "keys = config.all_keys(); hosts = backends.hosts(); dns = backends.dns_backends()\n"
        "rules.host_region('x', {}); rules.txt_values('x', {})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pulumi_azure_native', 'pulumi_openstack', 'pulumi_cloudflare', 'pulumi_command')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(local_stack.ROOT)).stdout
    assert out.strip() == "[]"
