"""Config cases of the resolver and the DNSBL reply filters (issue 12, item 4): the server's
unbound recurses unless forwarders are given, every DNSBL site has a filter, a Spamhaus DQS
key is a secret that reaches only the secrets file."""
import json

import pytest

from components import agent_spec, config
from tests import local_stack
from tests.unit.test_stack_config import errors_for, ssh_raw

DQS_KEY = "abcdefghijklmnopqrstuvwxyz"


def _ssh(**changes):
    keys = set(config.secret_key_names())
    return config.load(ssh_raw(**changes), "prod-oslo", secret_keys=keys)


def test_ssh_server_recurses_itself_by_default_with_the_old_resolver_key_still_valid():
    cfg = _ssh()
    assert cfg.resolver == "192.0.2.53:53" and cfg.resolver_forwarders == ()
    spec = agent_spec.public_spec(cfg, "192.0.2.10", None, list(cfg.resolver_forwarders))
    assert spec["resolver"]["forwarders"] == []


def test_a_forwarder_stays_possible_by_config():
    cfg = _ssh(resolver_forwarders=["192.0.2.99:53"])
    assert cfg.resolver_forwarders == ("192.0.2.99:53",)


def test_bad_forwarder_is_refused_with_the_way_back_to_recursion():
    with pytest.raises(config.ConfigError) as err:
        _ssh(resolver_forwarders=["dns.example:53"])
    (line,) = err.value.errors
    assert line.startswith("resolver_forwarders: ['dns.example:53'] is not a list of IP:port")
    assert "leave it out" in line


def test_forwarders_on_the_local_stack_are_refused_by_name():
    (line,) = errors_for(resolver_forwarders=["192.0.2.99:53"])
    assert line.startswith("resolver_forwarders: only used with backend")


@pytest.mark.parametrize("site, expected", [
    ({"site": "zen.spamhaus.org", "weight": 3}, "127.0.0.[2..11]"),
    ({"site": "bl.unknown.example", "weight": 1}, "127.0.0.[2..254]"),
    ({"site": "bl.unknown.example", "weight": 1, "filter": "127.0.0.[2;4]"}, "127.0.0.[2;4]"),
])
def test_every_dnsbl_site_has_a_reply_filter_in_the_spec(site, expected):
    cfg = config.load({**local_stack.raw(), "dnsbl_sites": [site]}, "local")
    spec = agent_spec.public_spec(cfg, "192.0.2.10", None, ["192.0.2.53@53"])
    assert spec["postscreen"]["dnsbl_sites"][0]["filter"] == expected


def test_bad_reply_filter_is_refused_with_key_value_and_fix():
    (line,) = errors_for(dnsbl_sites=[{"site": "zen.spamhaus.org", "filter": "127.0.0.[2..999]"}])
    assert line.startswith("dnsbl_sites[0].filter: '127.0.0.[2..999]' is not a postscreen reply filter")
    assert "e.g. 127.0.0.[2..11]" in line


def test_dqs_key_in_plain_text_is_refused_without_echoing_it():
    with pytest.raises(config.ConfigError) as err:
        config.load({**local_stack.raw(), "dnsbl_sites": [{"site": "zen.spamhaus.org"}],
                     "spamhaus_dqs_key": DQS_KEY}, "prod")
    assert any(e.startswith("spamhaus_dqs_key: is stored in plain text") for e in err.value.errors)
    assert DQS_KEY not in str(err.value)


def test_dqs_key_without_a_dqs_site_is_refused():
    with pytest.raises(config.ConfigError) as err:
        config.load({**local_stack.raw(), "dnsbl_sites": [{"site": "bl.spamcop.net"}],
                     "spamhaus_dqs_key": DQS_KEY}, "local", secret_keys={"spamhaus_dqs_key"})
    (line,) = err.value.errors
    assert line.startswith("spamhaus_dqs_key: is set, but no dnsbl_sites entry has a DQS form")


def test_dqs_key_marks_the_spamhaus_sites_and_stays_out_of_the_readable_spec():
    cfg = config.load({**local_stack.raw(), "spamhaus_dqs_key": DQS_KEY,
                       "dnsbl_sites": [{"site": "zen.spamhaus.org", "weight": 3}, {"site": "bl.spamcop.net"}]},
                      "local", secret_keys={"spamhaus_dqs_key"})
    spec = agent_spec.public_spec(cfg, "192.0.2.10", None, ["192.0.2.53@53"])
    assert [s.get("dqs", False) for s in spec["postscreen"]["dnsbl_sites"]] == [True, False]
    assert DQS_KEY not in json.dumps(spec) and DQS_KEY not in repr(cfg.dnsbl_sites)
    assert agent_spec.secrets({}, "pem", dqs_key=DQS_KEY)["dqs_key"] == DQS_KEY


def test_malformed_dqs_key_is_refused_without_echoing_it():
    bad = "Not-A-Key-" + "x" * 20
    with pytest.raises(config.ConfigError) as err:
        config.load({**local_stack.raw(), "dnsbl_sites": [{"site": "zen.spamhaus.org"}],
                     "spamhaus_dqs_key": bad}, "local", secret_keys={"spamhaus_dqs_key"})
    (line,) = err.value.errors
    assert line.startswith("spamhaus_dqs_key: (secret) is not a Spamhaus DQS key") and bad not in line
