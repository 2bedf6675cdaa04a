"""The local DNS server's config text and the checks on zone and key specs (no named needed)."""
from pathlib import Path

import pytest

from localcloud.dns_config import DnsServerError, Grant, KeySpec, ZoneSpec, named_conf

STATE = Path("/var/lib/test/dns")
ZONES = [ZoneSpec("example.test"), ZoneSpec("5.77.10.in-addr.arpa")]
ACME = KeySpec("acme", (Grant("example.test", "_acme-challenge.mail", ("TXT",)),))


def conf(zones=ZONES, keys=(ACME,)):
    return named_conf(STATE, "127.0.0.1", 5353, zones, "stack-key", keys, "config-1")


def zone_block(text, origin):
    return text[text.index(f'zone "{origin}"'):].split("};\n}", 1)[0]


def test_stack_key_may_change_every_zone_and_an_extra_key_only_its_grant():
    text = conf()
    for zone in ZONES:
        assert 'grant "stack-key" zonesub ANY;' in zone_block(text, zone.origin)
    assert 'grant "acme" name "_acme-challenge.mail.example.test." TXT;' in zone_block(text, "example.test")
    assert '"acme"' not in zone_block(text, "5.77.10.in-addr.arpa")
    assert f'include "{STATE}/tsig.key";' in text and f'include "{STATE}/keys/acme.key";' in text
    assert 'version "config-1";' in text and "recursion no;" in text


@pytest.mark.parametrize("zones, keys, message", [
    (ZONES, [KeySpec("acme", (Grant("other.test", "x", ("TXT",)),))], "not served"),
    (ZONES, [KeySpec("acme", (Grant("example.test", "x.elsewhere.test.", ("TXT",)),))], "outside zone"),
    (ZONES, [KeySpec("stack-key")], "stack's own key"),
    ([ZoneSpec('evil"; };')], [], "zone name"),
    ([ZoneSpec("../../etc")], [], "zone name"),
    ([ZoneSpec("-x")], [], "zone name"),
    (ZONES, [KeySpec("a/b")], "key name"),
    (ZONES, [KeySpec("acme", (Grant("example.test", "x", ("TXT; };",)),))], "record type"),
], ids=["grant-zone-not-served", "grant-name-outside-zone", "stack-key-name", "quote-in-zone",
        "slash-in-zone", "option-like-zone", "slash-in-key", "junk-in-type"])
def test_bad_specs_are_refused_before_named_sees_them(zones, keys, message):
    with pytest.raises(DnsServerError, match=message):
        conf(zones, keys)


def test_local_zones_serve_every_mail_domain_after_the_primary():
    from localcloud.dns_config import local_zones
    one = [z.origin for z in local_zones("a.test", "10.77.5.0/24", "fd00:5::/64", "10.77.5.1")]
    two = [z.origin for z in local_zones("a.test", "10.77.5.0/24", "fd00:5::/64", "10.77.5.1",
                                         extra_domains=("brand.test",))]
    assert two == [one[0], "brand.test", *one[1:]]


@pytest.mark.parametrize("domain", ["elsewhere.test", "dnsbl.test"])
def test_a_mail_domain_may_not_be_a_zone_of_the_local_cloud_itself(domain):
    from localcloud.dns_config import local_zones
    with pytest.raises(DnsServerError, match="local cloud's own zones"):
        local_zones("a.test", "10.77.5.0/24", "fd00:5::/64", "10.77.5.1", extra_domains=(domain,))
