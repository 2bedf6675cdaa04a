"""Stack config validation: each bad value is refused with a line naming key, value and fix."""
import pathlib

import pytest
import yaml

from components import config

ROOT = pathlib.Path(__file__).resolve().parents[2]


def local_raw() -> dict:
    doc = yaml.safe_load((ROOT / "Pulumi.local.yaml").read_text())
    return {k.split(":", 1)[1]: v for k, v in doc["config"].items()}


def errors_for(**changes) -> list[str]:
    raw = {**local_raw(), **changes}
    with pytest.raises(config.ConfigError) as err:
        config.load(raw, "prod")
    return err.value.errors


def test_committed_local_stack_config_is_valid():
    cfg = config.load(local_raw(), "local")
    assert cfg.fqdn == "mail.bulletproof.test"
    assert cfg.region in config.NORWEGIAN_REGIONS
    assert [u.address for u in cfg.users] == ["alice@bulletproof.test", "bob@bulletproof.test"]


@pytest.mark.parametrize("changes, expected", [
    ({"domain": "not a domain"}, "domain: 'not a domain' is not a domain name"),
    ({"region": "us-east-1"}, "region: 'us-east-1' is outside Norway"),
    ({"backend": "cloudy"}, "backend: 'cloudy' is not a known backend"),
    ({"users": [{"address": "eve@elsewhere.test"}]}, "users[0].address: 'eve@elsewhere.test' is not an address in domain 'bulletproof.test'"),
    ({"residency": False}, "residency: got the boolean False; YAML reads an unquoted NO as false"),
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
    cfg = config.load({**local_raw(), "residency": "none", "region": "eu-west-1"}, "dev")
    assert cfg.region == "eu-west-1"
