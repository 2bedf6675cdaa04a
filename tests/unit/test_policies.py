"""The policy pack's rules as plain functions (the e2e test runs them through the engine)."""
import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from policies import rules


def _dkim_txt(bits: int) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


@pytest.mark.parametrize("region, residency, refused", [
    ("no-svg1", "NO", False), ("oslo", "NO", False), ("de-fra1", "NO", True), ("de-fra1", "none", False),
])
def test_host_region_is_held_to_residency(region, residency, refused):
    message = rules.residency_violation(rules.DYNAMIC, "mail-host", {"region": region}, residency)
    assert bool(message) == refused
    if refused:
        assert f"region {region!r} is outside Norway" in message


def test_upcloud_server_zone_counts_as_its_region():
    assert rules.residency_violation("upcloud:index/server:Server", "srv", {"zone": "fi-hel1"}, "NO")


def test_a_1024_bit_dkim_key_pair_is_refused():
    assert "DKIM key of 1024 bits" in rules.dkim_violation("mail-dkim-key", {"algorithm": "rsa", "bits": 1024})
    assert rules.dkim_violation("mail-dkim-key", {"algorithm": "rsa", "bits": 2048}) is None


def test_a_published_1024_bit_dkim_record_is_refused_and_2048_passes():
    rec = {"type": "TXT", "values": [_dkim_txt(1024)]}
    assert "has 1024 bits" in rules.dkim_violation("mail-dns-records-dkim", rec)
    assert rules.dkim_violation("mail-dns-records-dkim", {"type": "TXT", "values": [_dkim_txt(2048)]}) is None


@pytest.mark.parametrize("stack, policy, refused", [
    ("prod-oslo", "none", True), ("prod", "reject", False), ("staging", "none", False),
])
def test_dmarc_none_only_refused_on_prod_stacks(stack, policy, refused):
    rec = {"type": "TXT", "values": [f"v=DMARC1; p={policy}"]}
    assert bool(rules.dmarc_violation("mail-dns-records-dmarc", rec, stack)) == refused


def test_firewall_rule_beyond_mail_and_ssh_is_refused():
    rules_in = [{"direction": "in", "action": "accept", "protocol": "tcp",
                 "destinationPortStart": p, "destinationPortEnd": p} for p in (22, 25, 465, 587, 993)]
    ok = {"firewallRules": rules_in}
    assert rules.firewall_violation("upcloud:index/serverFirewallRules:ServerFirewallRules", "fw", ok) is None
    bad = {"firewallRules": rules_in + [{"direction": "in", "action": "accept", "protocol": "tcp",
                                         "destinationPortStart": 3306, "destinationPortEnd": 3306}]}
    assert "tcp 3306-3306" in rules.firewall_violation("upcloud:index/serverFirewallRules:ServerFirewallRules", "fw", bad)


def test_stack_name_comes_from_the_urn():
    assert rules.stack_name("urn:pulumi:prod-oslo::bulletproof-mail::pulumi-python:dynamic:Resource::x") == "prod-oslo"
