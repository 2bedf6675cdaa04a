"""Stack config validation: each bad value is refused with a line naming key, value and fix."""
import pytest

from components import config, config_rules
from tests import local_stack


def errors_for(**changes) -> list[str]:
    raw = {**local_stack.raw(), **changes}
    with pytest.raises(config.ConfigError) as err:
        config.load(raw, "prod")
    return err.value.errors


def test_committed_local_stack_config_is_valid():
    cfg = config.load(local_stack.raw(), "local")
    assert cfg.fqdn == "mail.bulletproof.test"
    assert cfg.region in config_rules.norwegian_regions()
    assert [u.address for u in cfg.users] == ["alice@bulletproof.test", "bob@bulletproof.test"]


@pytest.mark.parametrize("changes, expected", [
    ({"domain": "not a domain"}, "domain: 'not a domain' is not a domain name"),
    ({"region": "us-east-1"}, "region: 'us-east-1' is outside Norway"),
    ({"backend": "cloudy"}, "backend: 'cloudy' is not a known backend"),
    ({"users": [{"address": "eve@elsewhere.test"}]}, "users[0].address: 'eve@elsewhere.test' is not an address in domain 'bulletproof.test'"),
    ({"residency": False}, "residency: got the boolean False; YAML reads an unquoted NO as false"),
    ({"outbound_per_user_per_hour": 0}, "outbound_per_user_per_hour: 0 must be a positive whole number"),
    ({"dmarc_policy": "maybe"}, "dmarc_policy: 'maybe' is not a DMARC policy"),
    ({"users": [{"address": "a@bulletproof.test", "quota_mb": -1}]}, "users[0].quota_mb: -1 must be a positive"),
])
def test_bad_value_is_refused_with_key_value_and_fix(changes, expected):
    errors = errors_for(**changes)
    assert len(errors) == 1
    assert errors[0].startswith(expected.split(":")[0] + ":")
    assert expected in errors[0]


def test_every_error_is_listed_at_once():
    errors = errors_for(domain="x", region="mars-1", backend="nope")
    assert {e.split(":")[0] for e in errors} >= {"domain", "region", "backend"}


def test_any_region_allowed_when_residency_is_none():
    cfg = config.load({**local_stack.raw(), "residency": "none", "region": "eu-west-1"}, "dev")
    assert cfg.region == "eu-west-1"


def ssh_raw(**changes) -> dict:
    return {**local_stack.raw(), "backend": "ssh", "region": "oslo", "ssh_host": "192.0.2.10",
            "ssh_private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n",
            "dns_server": "192.0.2.53:53", "dns_tsig_name": "mail-updates", "dns_tsig_secret": "c2VjcmV0",
            "resolver": "192.0.2.53:53", "backup_repository": "none", **changes}


def test_ssh_backend_config_is_accepted_with_its_secrets_as_secrets():
    cfg = config.load(ssh_raw(), "prod-oslo", secret_keys=config.secret_key_names())
    assert (cfg.host.host, cfg.host.user, cfg.host.rdns) == ("192.0.2.10", "root", "enforce")
    assert (cfg.dns.server, cfg.dns.zone, cfg.dns.tsig_algorithm) == ("192.0.2.53:53", "bulletproof.test", "hmac-sha256")


def test_ssh_backend_refuses_a_secret_in_plain_text_without_echoing_it():
    with pytest.raises(config.ConfigError) as err:
        config.load(ssh_raw(), "prod-oslo", secret_keys=("ssh_private_key",))
    assert err.value.errors == [
        "dns_tsig_secret: is stored in plain text in the stack config; remove it and set it as a secret: "
        "pulumi config set --secret dns_tsig_secret 'BASE64...'"]


@pytest.mark.parametrize("changes, expected", [
    ({"ssh_host": "mail.example.no"}, "ssh_host: 'mail.example.no' is not an IPv4 address"),
    ({"rdns": "ignore"}, "rdns: 'ignore' is not a mode; use enforce"),
    ({"dns_server": "192.0.2.53"}, "dns_server: '192.0.2.53' is not IP:port"),
    ({"dns_zone": "other.no"}, "dns_zone: 'other.no' does not contain the domain 'bulletproof.test'"),
    ({"region": "de-fra1"}, "region: 'de-fra1' is outside Norway"),
])
def test_ssh_backend_bad_value_is_refused_with_key_value_and_fix(changes, expected):
    with pytest.raises(config.ConfigError) as err:
        config.load(ssh_raw(**changes), "prod-oslo", secret_keys=config.secret_key_names())
    assert [e for e in err.value.errors if expected in e], err.value.errors


def test_ssh_keys_on_the_local_backend_are_refused_by_name():
    with pytest.raises(config.ConfigError) as err:
        config.load({**local_stack.raw(), "ssh_host": "192.0.2.10"}, "local")
    assert err.value.errors[0].startswith("ssh_host: only used with backend: ssh")


@pytest.mark.parametrize("changes, expected", [
    ({"dnsbl_sites": [{"site": "dnsbl.test", "weight": 0}]}, "dnsbl_sites[0].weight: must not be 0"),
    ({"users": [{"address": "postmaster@bulletproof.test"}]}, "aliases['postmaster@bulletproof.test']: is also a user"),
    ({"aliases": {"|/tmp/x@bulletproof.test": "alice@bulletproof.test"}}, "aliases['|/tmp/x@bulletproof.test']: "),
], ids=["dnsbl-weight-0", "postmaster-as-user", "alias-pipe"])
def test_what_the_agent_would_refuse_is_refused_before_any_resource(changes, expected):
    """The spec built from the config goes through the agent's own rules at load time, so the
    host never refuses what the stack accepted (after the bridge, DNS server and proxy exist)."""
    errors = errors_for(**changes)
    assert len(errors) == 1 and errors[0].startswith(expected), errors


@pytest.mark.parametrize("changes, expected", [
    ({"domain": "bulletproof.test\n"}, "domain: 'bulletproof.test\\n' is not a domain name"),
    ({"users": [{"address": "alice\n@bulletproof.test"}]}, "users[0].address: 'alice\\n@bulletproof.test' is not"),
    ({"users": [{"address": "a..b@bulletproof.test"}]}, "users[0].address: 'a..b@bulletproof.test' is not"),
    ({"aliases": {"info@bulletproof.test": 5}}, "aliases['info@bulletproof.test']: 5 is not an address"),
    ({"dmarc_rua": "x@example.no; p=reject"}, "dmarc_rua: 'x@example.no; p=reject' is not an email address"),
], ids=["domain-newline", "user-newline", "double-dot", "alias-int", "rua-injection"])
def test_a_value_matches_its_rule_as_a_whole_string(changes, expected):
    errors = errors_for(**changes)
    assert len(errors) == 1 and errors[0].startswith(expected), errors
