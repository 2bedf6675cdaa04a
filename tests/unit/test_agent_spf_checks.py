"""SPF evaluation and the DNS checks against a fake resolver (a dict of records)."""
import pytest

from agent import checks, checks_dns, spf, verdict

IP = "10.77.0.2"


class FakeDns:
    def __init__(self, records):
        self.records, self.server = records, "fake:53"

    def __call__(self, name, rtype):
        return list(self.records.get((name.rstrip("."), rtype), []))


BASE = {
    ("example.test", "MX"): ["10 mail.example.test"],
    ("mail.example.test", "A"): [IP],
    ("example.test", "TXT"): ["v=spf1 mx -all"],
    ("2.0.77.10.in-addr.arpa", "PTR"): ["mail.example.test"],
    ("_dmarc.example.test", "TXT"): ["v=DMARC1; p=quarantine"],
    ("s1._domainkey.example.test", "TXT"): ["v=DKIM1; k=rsa; p=AAAA"],
}


def fake(**changes):
    recs = dict(BASE)
    for (name, rtype), value in changes.get("set", {}).items():
        recs[(name, rtype)] = value
    return FakeDns(recs)


@pytest.mark.parametrize("record, verdict, lookups", [
    ("v=spf1 mx -all", "pass", 1),
    ("v=spf1 ip4:10.77.0.0/24 -all", "pass", 0),
    ("v=spf1 a:mail.example.test -all", "pass", 1),
    ("v=spf1 ip4:192.0.2.1 -all", "fail", 0),
    ("v=spf1 ip4:192.0.2.1 ~all", "softfail", 0),
    ("v=spf1 include:inc.example.test -all", "pass", 1),
    ("v=spf1 redirect=inc.example.test", "pass", 1),
])
def test_spf_verdicts(record, verdict, lookups):
    dns = fake(set={("example.test", "TXT"): [record],
                    ("inc.example.test", "TXT"): [f"v=spf1 ip4:{IP} -all"]})
    result = spf.evaluate(dns, "example.test", IP)
    assert (result.verdict, result.lookups) == (verdict, lookups)


def test_spf_over_ten_lookups_is_an_error():
    terms = " ".join(f"a:h{i}.example.test" for i in range(11))
    with pytest.raises(spf.SpfError, match="10 DNS lookups"):
        spf.evaluate(fake(set={("example.test", "TXT"): [f"v=spf1 {terms} -all"]}),
                     "example.test", IP)


def test_spf_lookups_count_through_includes():
    dns = fake(set={("example.test", "TXT"): ["v=spf1 include:a.test -all"],
                    ("a.test", "TXT"): ["v=spf1 " + " ".join(f"a:x{i}.test" for i in range(10))
                                        + " -all"]})
    with pytest.raises(spf.SpfError):
        spf.evaluate(dns, "example.test", IP)


FACTS = {"domain": "example.test", "hostname": "mail.example.test", "ipv4": IP, "ipv6": None,
         "selector": "s1", "dnsbl_sites": [checks.dnsbl_site({"zone": "dnsbl.test"})]}


def run(dns, helo="mail.example.test", p="AAAA"):
    return {c.name: c for c in checks_dns.run(dns, FACTS, helo, p)}


def test_correct_records_all_pass():
    assert {n: c.level for n, c in run(fake()).items()} == dict.fromkeys(
        ["fcrdns", "mx", "spf", "dkim", "dmarc", "dnsbl:dnsbl.test"], "pass")


# "v=spf1 mx" depends on the MX and A records: keep SPF out of the way when breaking those.
SPF_BY_IP = {("example.test", "TXT"): [f"v=spf1 ip4:{IP} -all"]}


@pytest.mark.parametrize("name, changes, helo, p", [
    ("fcrdns", {("2.0.77.10.in-addr.arpa", "PTR"): []}, "mail.example.test", "AAAA"),
    ("fcrdns", {("2.0.77.10.in-addr.arpa", "PTR"): ["other.test"]}, "mail.example.test", "AAAA"),
    ("fcrdns", {("mail.example.test", "A"): ["10.0.0.9"], **SPF_BY_IP}, "mail.example.test",
     "AAAA"),
    ("fcrdns", {}, "localhost", "AAAA"),
    ("mx", {("example.test", "MX"): ["10 other.test"], **SPF_BY_IP}, "mail.example.test", "AAAA"),
    ("spf", {("example.test", "TXT"): ["v=spf1 -all"]}, "mail.example.test", "AAAA"),
    ("spf", {("example.test", "TXT"): []}, "mail.example.test", "AAAA"),
    ("dkim", {}, "mail.example.test", "BBBB"),
    ("dkim", {("s1._domainkey.example.test", "TXT"): []}, "mail.example.test", "AAAA"),
    ("dmarc", {("_dmarc.example.test", "TXT"): []}, "mail.example.test", "AAAA"),
    ("dnsbl:dnsbl.test", {("2.0.77.10.dnsbl.test", "A"): ["127.0.0.2"]}, "mail.example.test",
     "AAAA"),
])
def test_each_dns_check_fails_alone(name, changes, helo, p):
    found = run(fake(set=changes), helo, p)
    assert {n for n, c in found.items() if c.level == verdict.FAIL} == {name}
    assert found[name].fix


@pytest.mark.parametrize("code", ["127.255.255.254", "127.255.255.255", "127.255.255.252"])
def test_dnsbl_refusing_our_resolver_is_a_warning_not_a_listing(code):
    found = run(fake(set={("2.0.77.10.dnsbl.test", "A"): [code]}))["dnsbl:dnsbl.test"]
    assert found.level == verdict.WARN and "DNSBL refuses our resolver" in found.reason
    assert code in found.reason and found.fix


def test_dqs_site_is_checked_through_its_alias_under_its_public_name():
    facts = {**FACTS, "dnsbl_sites": [checks.dnsbl_site({"zone": "zen.spamhaus.org", "dqs": True})]}
    dns = fake(set={("2.0.77.10.zen.spamhaus.org.dqs.internal", "A"): ["127.0.0.4"]})
    found = {c.name: c for c in checks_dns.run(dns, facts, "mail.example.test", "AAAA")}
    assert found["dnsbl:zen.spamhaus.org"].level == verdict.FAIL


def test_dmarc_p_none_is_a_warning():
    found = run(fake(set={("_dmarc.example.test", "TXT"): ["v=DMARC1; p=none"]}))
    assert found["dmarc"].level == verdict.WARN


def test_thresholds_parse_and_refuse_unknown_names():
    assert checks.parse_thresholds(["queue_fail=1", "fsync_warn_ms=0.5"]) == {
        "queue_fail": 1, "fsync_warn_ms": 0.5}
    with pytest.raises(ValueError):
        checks.parse_thresholds(["nope=1"])


def test_table_shows_fix_only_for_problems():
    text = verdict.table([verdict.Check("a", "pass", "fine", "unused"),
                         verdict.Check("b", "fail", "broken", "do this")])
    assert "fix: do this" in text and "unused" not in text and "1 pass, 0 warn, 1 fail" in text
