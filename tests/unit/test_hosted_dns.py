"""dns_backend cloudflare under pulumi mocks: the same mail record set as Cloudflare records."""
import pytest

from components import config
from tests.unit import cloud_mocks as cm

RECORD = "cloudflare:index/dnsRecord:DnsRecord"


@pytest.fixture(scope="module")
def records():
    mocks, _ = cm.run(cm.load(cm.openstack_raw()))
    return {name.removeprefix("mail-dns-records-"): inputs for name, inputs in cm.of_type(mocks, RECORD)}, mocks


def _unquote(content: str) -> list[str]:
    """'"a" "b"' -> ['a', 'b'] (our values carry no quotes or backslashes)."""
    return [part for part in content.split('"')[1::2]]


def test_record_set_is_a_aaaa_mx_spf_dkim_dmarc_in_the_zone(records):
    recs, _ = records
    assert {k: (r["type"], r["name"]) for k, r in recs.items()} == {
        "a": ("A", "mail.bulletproof.test"), "aaaa": ("AAAA", "mail.bulletproof.test"),
        "mx": ("MX", "bulletproof.test"), "spf": ("TXT", "bulletproof.test"),
        "dkim": ("TXT", "s1._domainkey.bulletproof.test"), "dmarc": ("TXT", "_dmarc.bulletproof.test")}
    assert {r["zoneId"] for r in recs.values()} == {cm.ZONE_ID}


def test_no_rfc2136_record_is_declared_with_the_hosted_backend(records):
    _, mocks = records
    assert not [n for t, n, i in mocks.resources if t == "pulumi-python:dynamic:Resource" and "tsig_name" in i]


def test_address_records_point_at_the_host_unproxied(records):
    recs, _ = records
    assert (recs["a"]["content"], recs["aaaa"]["content"]) == (cm.IPV4, cm.IPV6)
    assert recs["a"]["proxied"] is False and recs["aaaa"]["proxied"] is False


def test_mx_names_the_mail_host_with_priority_10(records):
    recs, _ = records
    assert (recs["mx"]["content"], recs["mx"]["priority"]) == ("mail.bulletproof.test", 10)


def test_spf_and_dmarc_are_quoted_txt(records):
    recs, _ = records
    assert recs["spf"]["content"] == '"v=spf1 mx -all"'
    assert recs["dmarc"]["content"] == '"v=DMARC1; p=reject"'


def test_dkim_key_is_split_into_strings_of_at_most_255_bytes(records):
    recs, _ = records
    parts = _unquote(recs["dkim"]["content"])
    assert len(parts) == 2 and all(len(p.encode()) <= 255 for p in parts)
    assert "".join(parts) == f"v=DKIM1; k=rsa; p={cm.MOCK_DKIM_PUBLIC}"


def test_rfc2136_stays_the_default_dns_backend():
    raw = {k: v for k, v in cm.openstack_raw().items() if k not in ("dns_backend", "cloudflare_zone_id")}
    raw.update(dns_server="192.0.2.53:53", dns_tsig_name="mail-updates", dns_tsig_secret="c2VjcmV0")
    cfg = config.load(raw, cm.STACK, secret_keys=config.secret_key_names())
    assert cfg.dns_backend == "rfc2136" and cfg.dns.server == "192.0.2.53:53"


@pytest.mark.parametrize("changes, expected", [
    ({"cloudflare_zone_id": "example.no"}, "cloudflare_zone_id: 'example.no' is not a Cloudflare zone ID"),
    ({"dns_backend": "route53"}, "dns_backend: 'route53' is not a DNS backend"),
    ({"dns_server": "192.0.2.53:53"}, "dns_server: not used with dns_backend: cloudflare"),
])
def test_bad_hosted_dns_config_is_refused_with_one_line(changes, expected):
    with pytest.raises(config.ConfigError) as err:
        cm.load(cm.openstack_raw(**changes))
    assert len(err.value.errors) == 1 and err.value.errors[0].startswith(expected), err.value.errors


def test_hosted_dns_keys_on_the_local_backend_are_refused_by_name(local_raw):
    with pytest.raises(config.ConfigError) as err:
        config.load({**local_raw, "dns_backend": "cloudflare"}, "local")
    assert err.value.errors == ["dns_backend: only used with backend: ssh, openstack, azure (backend is 'local'; "
                                "local runs its own DNS server); remove them"]


def test_policy_pack_reads_dmarc_of_a_cloudflare_record():
    from policies import rules as policy
    props = {"type": "TXT", "name": "_dmarc.example.no", "content": '"v=DMARC1; p=none"'}
    assert "DMARC p=none" in policy.dmarc_violation("cloudflare:index/dnsRecord:DnsRecord", "mail-dns-records-dmarc", props, "prod-oslo")
