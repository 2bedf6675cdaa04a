"""The policy pack's rules as plain functions (the e2e test runs them through the engine)."""
import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from policies import rules

CONTAINER = "pulumi-python:dynamic/localcloud:Container"
RECORD = "pulumi-python:dynamic/rfc2136:DnsRecord"


def _dkim_txt(bits: int) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


@pytest.mark.parametrize("region, residency, refused", [
    ("no-svg1", "NO", False), ("oslo", "NO", False), ("de-fra1", "NO", True), ("de-fra1", "none", False),
])
def test_host_region_is_held_to_residency(region, residency, refused):
    message = rules.residency_violation(CONTAINER, "mail-host", {"region": region}, residency)
    assert bool(message) == refused
    if refused:
        assert f"region {region!r} is outside Norway" in message


@pytest.mark.parametrize("rtype, props", [
    ("openstack:compute/instance:Instance", {"region": "RegionOne"}),
    ("azure-native:network:PublicIPAddress", {"location": "westeurope"}),
])
def test_each_backend_says_where_its_resources_stand(rtype, props):
    assert "is outside Norway" in rules.residency_violation(rtype, "mail-host", props, "NO")


def test_a_resource_no_backend_places_has_no_region():
    assert rules.residency_violation("random:index/randomId:RandomId", "x", {"region": "mars"}, "NO") is None


def test_a_1024_bit_dkim_key_pair_is_refused():
    assert "DKIM key of 1024 bits" in rules.dkim_violation("pulumi-python:dynamic/keys:KeyPair", "mail-dkim-key", {"algorithm": "rsa", "bits": 1024})
    assert rules.dkim_violation("pulumi-python:dynamic/keys:KeyPair", "mail-dkim-key", {"algorithm": "rsa", "bits": 2048}) is None


def test_a_published_1024_bit_dkim_record_is_refused_and_2048_passes():
    rec = {"type": "TXT", "values": [_dkim_txt(1024)]}
    assert "has 1024 bits" in rules.dkim_violation(RECORD, "mail-dns-records-dkim", rec)
    assert rules.dkim_violation(RECORD, "mail-dns-records-dkim", {"type": "TXT", "values": [_dkim_txt(2048)]}) is None


@pytest.mark.parametrize("stack, policy, refused", [
    ("prod-oslo", "none", True), ("prod", "reject", False), ("staging", "none", False),
])
def test_dmarc_none_only_refused_on_prod_stacks(stack, policy, refused):
    rec = {"type": "TXT", "values": [f"v=DMARC1; p={policy}"]}
    assert bool(rules.dmarc_violation(RECORD, "mail-dns-records-dmarc", rec, stack)) == refused


def _nsg(ports) -> dict:
    return {"securityRules": [{"direction": "Inbound", "access": "Allow", "protocol": "Tcp",
                               "destinationPortRange": str(p)} for p in ports]}


def test_firewall_rule_beyond_mail_and_ssh_is_refused():
    nsg = "azure-native:network:NetworkSecurityGroup"
    assert rules.firewall_violation(nsg, "mail-nsg", _nsg((22, 25, 465, 587, 993))) is None
    assert "Tcp 3306" in rules.firewall_violation(nsg, "mail-nsg", _nsg((22, 25, 3306)))


@pytest.mark.parametrize("first, last, refused", [(25, 25, False), (22, 22, False), (1, 65535, True)])
def test_an_openstack_ingress_rule_is_held_to_the_mail_ports(first, last, refused):
    rule = {"direction": "ingress", "protocol": "tcp", "portRangeMin": first, "portRangeMax": last}
    message = rules.firewall_violation("openstack:networking/secGroupRule:SecGroupRule", "r", rule)
    assert bool(message) == refused


def test_stack_name_comes_from_the_urn():
    assert rules.stack_name("urn:pulumi:prod-oslo::bulletproof-mail::pulumi-python:dynamic:Resource::x") == "prod-oslo"
