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


D = "bulletproof.test"
LONG = ("a" * 60 + ".") * 4 + "b" * 10 + ".test"   # 259 characters


# One case per finding of the security issue (#12): each is refused by config.load, that is at
# preview before any resource exists, with one line naming the key, the value and the fix.
@pytest.mark.parametrize("changes, key, value, fix", [
    ({"users": [{"address": f"alice\n@{D}"}]}, "users[0].address", repr(f"alice\n@{D}"), "lower-case letters"),
    ({"users": [{"address": f"alice@{D}\n"}]}, "users[0].address", repr(f"alice@{D}\n"), f"use name@{D}"),
    ({"domain": f"{D}\n"}, "domain", repr(f"{D}\n"), "use lower-case labels"),
    ({"aliases": {f"postmaster@{D}": f"|/tmp/x@{D}"}}, f"aliases['postmaster@{D}'][0]", repr(f"|/tmp/x@{D}"), "no |command"),
    ({"aliases": {f"info@{D}": "/x"}}, f"aliases['info@{D}'][0]", "'/x'", "no |command, /file"),
    ({"aliases": {f"info@{D}": ":include:/etc/x"}}, f"aliases['info@{D}'][0]", "':include:/etc/x'", ":include:"),
    ({"aliases": {f"info@{D}": 5}}, f"aliases['info@{D}']", "5", "e.g. info@"),
    ({"aliases": {5: f"alice@{D}"}}, "aliases[5]", "5", "an alias is name@<domain>"),
    ({"aliases": {f"info@{D}": f"nobody@{D}"}}, f"aliases['info@{D}'][0]", repr(f"nobody@{D}"), "add it to users"),
    ({"aliases": {f"a@{D}": f"b@{D}", f"b@{D}": f"a@{D}"}}, f"aliases['a@{D}']", f"a@{D} -> b@{D} -> a@{D}", "point one of them at a mailbox"),
    ({"aliases": {f"info@{D}": f"info@{D}"}}, f"aliases['info@{D}']", f"info@{D} -> info@{D}", "point one of them at a mailbox"),
    ({"aliases": {"info@other.test": f"alice@{D}"}}, "aliases['info@other.test']", "'info@other.test'", f"use name@{D}"),
    ({"dmarc_rua": "x@example.no; p=reject"}, "dmarc_rua", "'x@example.no; p=reject'", "e.g. dmarc@"),
    ({"dmarc_policy": "none; p=reject"}, "dmarc_policy", "'none; p=reject'", "use one of none, quarantine, reject"),
    ({"users": [{"address": f"a..b@{D}"}]}, "users[0].address", repr(f"a..b@{D}"), "no empty part"),
    ({"users": [{"address": f"a.@{D}"}]}, "users[0].address", repr(f"a.@{D}"), "no leading or trailing dot"),
    ({"domain": LONG, "users": [f"alice@{LONG}"]}, "domain", "259 characters", "use a shorter one"),
    ({"hostname": "m" * 60, "domain": LONG[61:], "users": [f"alice@{LONG[61:]}"]}, "hostname", "259 characters", "use a shorter hostname"),
    ({"dnsbl_sites": [{"site": "dnsbl.test", "weight": 0}]}, "dnsbl_sites[0].weight", "0", "use a positive weight"),
    ({"users": [f"alice@{D}", f"postmaster@{D}"]}, "users[1].address", repr(f"postmaster@{D}"), "remove it from users"),
], ids=["user-newline-inside", "user-newline-at-end", "domain-newline", "alias-pipe", "alias-file",
        "alias-include", "alias-not-a-string", "alias-key-not-a-string", "alias-to-nobody-of-ours",
        "alias-loop", "alias-to-itself", "alias-of-another-domain", "rua-injection",
        "policy-injection", "double-dot", "trailing-dot", "domain-over-253", "fqdn-over-253",
        "dnsbl-weight-0", "postmaster-as-user"])
def test_a_bad_value_is_one_line_naming_key_value_and_fix(changes, key, value, fix):
    errors = errors_for(**changes)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{key}: ") and value in errors[0] and fix in errors[0], errors[0]
    assert "\n" not in errors[0]


@pytest.mark.parametrize("aliases", [
    {f"info@{D}": f"alice@{D}"},                              # a mailbox of ours
    {f"info@{D}": f"alice+info@{D}"},                         # with an extension
    {f"info@{D}": f"team@{D}", f"team@{D}": [f"alice@{D}", f"bob@{D}"]},   # another alias
    {f"info@{D}": f"postmaster@{D}"},                         # the RFC 2142 default alias
    {f"info@{D}": "someone@example.no"},                      # an address elsewhere
], ids=["mailbox", "extension", "alias", "role-alias", "external"])
def test_an_alias_may_forward_to_a_mailbox_an_alias_or_elsewhere(aliases):
    cfg = config.load({**local_stack.raw(), "aliases": aliases}, "prod")
    assert {k: list(v) for k, v in cfg.aliases.items()} == {
        k: [v] if isinstance(v, str) else v for k, v in aliases.items()}
