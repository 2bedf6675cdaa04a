"""agent.spec: every error reported by path; newer versions refused; secrets split off."""
import copy
import functools

import pytest

from agent import example
from agent.spec import SPEC_VERSION, SpecError, load, merge, public_view, split


@functools.lru_cache(maxsize=1)
def _base() -> dict:
    return example.example(dkim_pem=example.dkim_key(1024))


@pytest.fixture
def data():
    return copy.deepcopy(_base())


def errors_of(data) -> list[str]:
    with pytest.raises(SpecError) as exc:
        load(data)
    return exc.value.errors


def test_example_spec_loads(data):
    spec = load(data)
    assert spec.hostname == "mail.example.test"
    assert [u.address for u in spec.users] == ["alice@example.test", "bob@example.test"]


def test_rfc2142_aliases_default_to_first_user(data):
    data["aliases"] = {}
    aliases = dict(load(data).aliases)
    assert aliases["postmaster@example.test"] == ("alice@example.test",)
    assert aliases["abuse@example.test"] == ("alice@example.test",)


def test_newer_version_is_refused_by_name(data):
    data["version"] = SPEC_VERSION + 1
    (msg,) = errors_of(data)
    assert msg.startswith("version:") and "newer" in msg and str(SPEC_VERSION + 1) in msg


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["users"].append({"address": "carol@other.test",
                                  "password_hash": d["users"][0]["password_hash"]}),
     "users[2].address: not an address in domain example.test"),
    (lambda d: d["users"][0].update(password_hash="{PLAIN}secret"),
     "users[0].password_hash: expected {SCHEME}hash"),
    (lambda d: d["users"][1].update(quota_mb=0), "users[1].quota_mb: must be >= 1"),
    (lambda d: d["users"].append(copy.deepcopy(d["users"][0])),
     "users[2].address: duplicate user alice@example.test"),
    (lambda d: d.update(users=[]), "users: expected a non-empty list"),
    (lambda d: d.update(domain="Not A Domain"), "domain: not a lower-case domain name"),
    (lambda d: d.update(hostname="mail"), "hostname: not a fully qualified host name"),
    (lambda d: d.update(ipv4="10.0.0.300"), "ipv4: not an IPv4 address"),
    (lambda d: d.update(ipv6="10.0.0.1"), "ipv6: not an IPv6 address"),
    (lambda d: d["dkim"].update(selector="bad selector"), "dkim.selector: not a DNS label"),
    (lambda d: d["dkim"].pop("private_key_pem"), "dkim.private_key_pem: required"),
    (lambda d: d["tls"].update(mode="letsencrypt"), "tls.mode: expected one of"),
    (lambda d: d["tls"].update(mode="provided"), "tls.cert_pem: required PEM certificate"),
    (lambda d: d["postscreen"]["dnsbl_sites"].append({"zone": "dnsbl..test"}),
     "postscreen.dnsbl_sites[1].zone: not a DNS zone"),
    (lambda d: d["postscreen"].update(allowlist=["10.0.0.0/33"]),
     "postscreen.allowlist[0]: not a CIDR network"),
    (lambda d: d["resolver"].update(forwarders=["8.8.8.8@99999"]),
     "resolver.forwarders[0]: expected IP or IP@PORT"),
    (lambda d: d["postscreen"]["dnsbl_sites"][0].update(filter="127.0.0.[2..300]"),
     "postscreen.dnsbl_sites[0].filter: not a postscreen reply filter"),
    (lambda d: d["postscreen"]["dnsbl_sites"][0].update(dqs=True), "postscreen.dqs_key: required"),
    (lambda d: d["postscreen"]["dnsbl_sites"].append({"zone": "bl.spamcop.net", "dqs": True}),
     "postscreen.dnsbl_sites[1].dqs: bl.spamcop.net has no DQS form"),
    (lambda d: d["rate_limits"].update(client_auth_rate="ten"),
     "rate_limits.client_auth_rate: expected an integer"),
    (lambda d: d["limits"].update(queue_minfree=1000), "limits.queue_minfree: must be >= 1.5"),
    (lambda d: d["features"].update(ssh_port=70000), "features.ssh_port: not a TCP port"),
    (lambda d: d.update(colour="blue"), "colour: unknown key"),
    (lambda d: d["aliases"].update({"alice@example.test": ["bob@example.test"]}),
     "is also a user"),
    (lambda d: d["aliases"].update({5: ["bob@example.test"]}), "aliases[5]: not an email address"),
    (lambda d: d["aliases"].update({"info@example.test": ["|/bin/sh@example.test"]}),
     "aliases['info@example.test'][0]: not a lower-case email address"),
    (lambda d: d["aliases"].update({"info@example.test": ["nobody@example.test"]}),
     "aliases['info@example.test'][0]: 'nobody@example.test' is neither a mailbox nor an alias"),
    (lambda d: d["aliases"].update({"a@example.test": ["b@example.test"], "b@example.test": ["a@example.test"]}),
     "aliases['a@example.test']: forwards in a loop (a@example.test -> b@example.test -> a@example.test)"),
    (lambda d: (d["aliases"].clear(), d["users"].append(dict(d["users"][0], address="abuse@example.test"))),
     "users[2].address: abuse@example.test is a role address"),
    (lambda d: d["postscreen"]["dnsbl_sites"].append({"zone": "a" * 60 + "." + "b" * 60 + "." + "c" * 60 + ".dddd.test"}),
     "postscreen.dnsbl_sites[1].zone: "),
])
def test_invalid_value_is_reported_by_path(data, mutate, expected):
    mutate(data)
    assert any(e.startswith(expected) or expected in e for e in errors_of(data)), errors_of(data)


def test_every_error_is_listed_at_once(data):
    data["domain"] = "BAD"
    data["ipv4"] = "nope"
    data["users"][1]["address"] = "bob@elsewhere.test"
    data["dkim"]["selector"] = "-x"
    errs = errors_of(data)
    assert {e.split(":")[0] for e in errs} >= {"domain", "ipv4", "dkim.selector"}
    assert len(errs) >= 3


def test_split_keeps_secrets_out_of_the_public_part(data):
    public, secrets = split(data)
    text = repr(public)
    assert "PRIVATE KEY" not in text and "SHA512-CRYPT" not in text
    assert set(secrets) == {"passwords", "dkim_private_key_pem"}
    assert load(merge(public, secrets)) == load(data)


def test_public_view_has_no_secrets(data):
    view = public_view(load(data))
    assert "PRIVATE KEY" not in repr(view) and "$6$" not in repr(view)


def test_unknown_secret_key_is_refused(data):
    public, secrets = split(data)
    secrets["root_password"] = "x"
    with pytest.raises(SpecError, match="secrets.root_password: unknown key"):
        merge(public, secrets)


def test_empty_forwarders_mean_unbound_recurses(data):
    data["resolver"]["forwarders"] = []
    assert load(data).resolver.forwarders == ()


@pytest.mark.parametrize("zone, expected", [
    ("zen.spamhaus.org", "127.0.0.[2..11]"),      # the known list's documented codes
    ("bl.unknown.example", "127.0.0.[2..254]"),   # the default: no 127.0.0.1, no 127.255.255.x
])
def test_every_dnsbl_site_gets_a_reply_filter(data, zone, expected):
    data["postscreen"]["dnsbl_sites"] = [{"zone": zone, "weight": 2}]
    assert load(data).postscreen.dnsbl_sites[0].filter == expected


def test_dqs_key_travels_in_the_secrets_file_only(data):
    data["postscreen"]["dnsbl_sites"] = [{"zone": "zen.spamhaus.org", "weight": 3, "dqs": True}]
    data["postscreen"]["dqs_key"] = "k" * 26
    public, secrets = split(data)
    assert "k" * 26 not in repr(public) and secrets["dqs_key"] == "k" * 26
    assert load(merge(public, secrets)).postscreen.dqs_key == "k" * 26
