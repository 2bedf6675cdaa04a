"""The local cloud's providers decide what a change does: a new zone is served by the running DNS
server (reloaded in place, its records kept), a new spec never rebuilds the container."""
import pytest

from components.local_cloud import _MachineProvider, _ServiceProvider

DNS = {"kind": "dns", "stack": "s", "checkout": "/c", "gateway": "10.9.9.1/24",
       "zones": {"domain": "a.test", "subnet": "10.9.9.0/24", "subnet6": "fd00:9::/64"},
       "url": "10.9.9.1:53", "tsig_name": "k", "tsig_algorithm": "hmac-sha256", "tsig_secret": "c2Vj"}


def test_a_new_zone_updates_the_dns_server_in_place():
    news = {**DNS, "zones": {**DNS["zones"], "domain": "b.test"}, "url": None}
    diff = _ServiceProvider().diff("id", DNS, news)
    assert diff.changes and not diff.replaces


@pytest.mark.parametrize("key, value", [("gateway", "10.9.8.1/24"), ("stack", "t")])
def test_another_address_or_stack_replaces_the_dns_server(key, value):
    assert _ServiceProvider().diff("id", DNS, {**DNS, key: value}).replaces == [key]


def test_the_same_zones_change_nothing():
    assert not _ServiceProvider().diff("id", DNS, dict(DNS)).changes


def test_the_update_reconfigures_the_running_server_and_keeps_its_key(monkeypatch):
    from localcloud import dns
    seen = {}
    monkeypatch.setattr(dns, "reconfigure", lambda state, zones: seen.update(state=state, zones=zones))
    news = {**DNS, "zones": {**DNS["zones"], "domain": "b.test"}, "url": None, "tsig_secret": None}
    outs = _ServiceProvider().update("id", DNS, news).outs
    assert [z.origin for z in seen["zones"]][0] == "b.test" and str(seen["state"]).endswith("/dns")
    assert (outs["url"], outs["tsig_secret"], outs["zones"]["domain"]) == ("10.9.9.1:53", "c2Vj", "b.test")


HOST = {"stack": "s", "checkout": "/c", "host": "mail", "bridge": "bm-1", "ipv4": "10.9.9.10/24",
        "ipv6": "fd00:9::a/64", "ssh_public_key": "ssh-ed25519 AAAA", "fqdn": "mail.a.test",
        "spec_json": "{}", "boot_run_id": "run-1"}


def test_a_new_spec_never_rebuilds_the_container():
    assert not _MachineProvider().diff("id", HOST, {**HOST, "spec_json": '{"x": 1}', "boot_run_id": "run-2"}).changes


def test_a_new_address_rebuilds_the_container():
    assert _MachineProvider().diff("id", HOST, {**HOST, "ipv4": "10.9.9.11/24"}).replaces == ["ipv4"]


def test_another_mail_domain_is_a_zone_of_the_running_server(monkeypatch):
    from localcloud import dns
    seen = {}
    monkeypatch.setattr(dns, "reconfigure", lambda state, zones: seen.update(zones=zones))
    news = {**DNS, "zones": {**DNS["zones"], "extra_domains": ["brand.test"]}, "url": None}
    diff = _ServiceProvider().diff("id", DNS, news)
    assert diff.changes and not diff.replaces
    _ServiceProvider().update("id", DNS, news)
    origins = [z.origin for z in seen["zones"]]
    assert origins[:2] == ["a.test", "brand.test"] and "elsewhere.test" in origins
