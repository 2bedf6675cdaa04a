"""`make check` and `make verify` cover every mail domain of a deployed stack (from its outputs)."""
import pytest

from ops import check
from ops import stack as deployed_stack

FQDN, IP, P = "mail.z.test", "192.0.2.10", "MIIBIjANBgkq"
# sorted by key, as `pulumi stack output` gives a mapping back: the primary is not first
SETTINGS = {"b.test": {"dns_backend": "rfc2136", "dns_server": "192.0.2.54:53", "dns_zone": "b.test",
                       "dkim_selector": "b1", "catch_all": "carol@b.test"},
            "z.test": {"dns_backend": "rfc2136", "dns_server": "192.0.2.53:53", "dns_zone": "z.test",
                       "dkim_selector": "s1", "catch_all": None}}
OUTS = {"domain": "z.test", "fqdn": FQDN, "host_ipv4": IP, "host_ipv6": None, "ssh_target": f"root@{IP}",
        "dns_backend": "rfc2136", "dns_server": "192.0.2.53:53", "dns_zone": "z.test", "resolver": "192.0.2.53:53",
        "dkim_selector": "s1", "dkim_txt": f"v=DKIM1; k=rsa; p={P}", "mail_users": ["alice@z.test", "carol@b.test"],
        "domain_settings": SETTINGS, "dkim_txts": {"z.test": f"v=DKIM1; k=rsa; p={P}", "b.test": f"v=DKIM1; k=rsa; p={P}B"},
        "mail_domains": ["z.test", "b.test"]}
RECORDS = {("b.test", "MX"): [f"10 {FQDN}"], ("b.test", "TXT"): ["v=spf1 mx -all"],
           ("b1._domainkey.b.test", "TXT"): [f"v=DKIM1; k=rsa; p={P}B"],
           ("_dmarc.b.test", "TXT"): ["v=DMARC1; p=reject"], (FQDN, "A"): [IP]}


def test_the_outputs_give_every_domain_with_its_users_and_dns():
    d = deployed_stack.Deployed("s", OUTS)
    assert [(x["name"], x["users"], x["dns_server"]) for x in d.domains] == [
        ("z.test", ["alice@z.test"], "192.0.2.53:53"), ("b.test", ["carol@b.test"], "192.0.2.54:53")]
    assert [x["catch_all"] for x in d.expectations["domains"]] == [None, "carol@b.test"]


def test_a_stack_from_before_several_domains_keeps_its_expectations():
    old = {k: v for k, v in OUTS.items() if k not in ("domain_settings", "dkim_txts")}
    assert "domains" not in deployed_stack.Deployed("s", old).expectations


@pytest.fixture
def asked(monkeypatch):
    seen = []

    def lookup_for(self, domain=None):
        seen.append(domain and domain["dns_server"])
        return lambda name, rtype: RECORDS.get((name.rstrip("."), rtype), [])
    monkeypatch.setattr(deployed_stack.Deployed, "dns_lookup", lookup_for)
    return seen


def test_another_domain_is_checked_where_its_records_are(asked):
    found = check.domain_checks(deployed_stack.Deployed("s", OUTS), deployed_stack.Deployed("s", OUTS).domains[1])
    assert {c.name: c.level for c in found} == {"outside:mx:b.test": "pass", "outside:spf:b.test": "pass",
                                                "outside:dkim:b.test": "pass", "outside:dmarc:b.test": "pass"}
    assert asked == ["192.0.2.54:53"]


def test_a_missing_record_of_another_domain_fails_its_check_alone(asked, monkeypatch):
    monkeypatch.delitem(RECORDS, ("_dmarc.b.test", "TXT"))
    found = check.domain_checks(deployed_stack.Deployed("s", OUTS), deployed_stack.Deployed("s", OUTS).domains[1])
    assert [c.name for c in found if c.level == "fail"] == ["outside:dmarc:b.test"]
