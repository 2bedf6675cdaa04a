"""Several mail domains under pulumi mocks: per-domain keys, records, passwords and DNS targets,
the primary keeping every resource name it had as the only domain."""
import dataclasses
import json

import pytest

from components import config
from components.dns import rfc2136
from tests.unit import cloud_mocks as cm

CF_RECORD = "cloudflare:index/dnsRecord:DnsRecord"
PRIMARY, BRAND, PARTNER = "bulletproof.test", "brand.test", "partner.test"
PARTNER_DNS = config.DomainDns("rfc2136", rfc2136.Settings(
    server="192.0.2.54:53", tsig_name="partner-updates", tsig_algorithm="hmac-sha256", zone=PARTNER))


def _user(address: str) -> config.User:
    return config.User(address=address, quota_mb=512)


def _several(cfg, partner_dns=PARTNER_DNS):
    """`cfg` (one domain) with brand.test (its DMARC reports into the primary) and partner.test
    (records on a DNS server of its own)."""
    primary = dataclasses.replace(cfg.domains[0], dmarc_rua=f"dmarc@{PRIMARY}")
    brand = config.MailDomain(BRAND, dkim_selector="b1", dmarc_policy="reject", dmarc_rua=f"dmarc@{PRIMARY}",
                              catch_all=f"carol@{BRAND}", users=(_user(f"carol@{BRAND}"), _user(f"alice@{BRAND}")),
                              aliases={f"hello@{BRAND}": (f"carol@{BRAND}",)})
    partner = config.MailDomain(PARTNER, users=(_user(f"dave@{PARTNER}"),), dns=partner_dns)
    users = tuple(u for d in (primary, brand, partner) for u in d.users)
    aliases = {**cfg.aliases, f"dmarc@{PRIMARY}": [f"alice@{PRIMARY}"], f"hello@{BRAND}": [f"carol@{BRAND}"]}
    return dataclasses.replace(cfg, domains=(primary, brand, partner), users=users, aliases=aliases,
                               dmarc_rua=f"dmarc@{PRIMARY}")


@pytest.fixture(scope="module")
def single():
    return cm.run(cm.load(cm.openstack_raw()))


@pytest.fixture(scope="module")
def several():
    cfg = _several(cm.load(cm.openstack_raw()))
    # as the program gets it: a structured secret is its JSON text
    mocks, seen = cm.run(cfg, secrets={"domain_dns_secrets": json.dumps({PARTNER: "cGFydG5lcg=="})})
    return cfg, mocks, seen


def _names(mocks) -> set[str]:
    return {name for _, name, _ in mocks.resources}


def _inputs(mocks, name: str) -> dict:
    (found,) = [i for _, n, i in mocks.resources if n == name]
    return found


def test_the_primary_keeps_every_resource_name_it_had_alone(single, several):
    _, mocks, _ = several
    assert _names(single[0]) <= _names(mocks)


def test_one_domain_declares_no_resource_of_another(single):
    names = _names(single[0])
    assert {"mail-dkim-key", "mail-dns-records", "mail-password-alice", "mail-password-bob",
            "mail-srs-secret", "mail-mailboxes"} <= names
    assert not [n for n in names if n.startswith(("mail-dkim-key-", "mail-password-alice@"))]


def test_every_other_domain_gets_its_own_key_records_and_passwords(several):
    _, mocks, _ = several
    names = _names(mocks)
    assert {f"mail-dkim-key-{BRAND}", f"mail-dkim-key-{PARTNER}", f"mail-dns-records-{BRAND}",
            f"mail-dns-records-{PARTNER}", f"mail-password-carol@{BRAND}", f"mail-password-alice@{BRAND}",
            f"mail-password-dave@{PARTNER}", "mail-password-alice"} <= names
    assert _inputs(mocks, f"mail-dkim-key-{BRAND}")["rotation"] == "b1"


def test_only_the_primary_zone_holds_the_host_address(several):
    _, mocks, _ = several
    records = {n.removeprefix("mail-dns-records-"): i for n, i in cm.of_type(mocks, CF_RECORD)}
    brand = {k.removeprefix(f"{BRAND}-"): (r["type"], r["name"]) for k, r in records.items()
             if k.startswith(f"{BRAND}-")}
    assert brand == {"mx": ("MX", BRAND), "spf": ("TXT", BRAND), "dkim": ("TXT", f"b1._domainkey.{BRAND}"),
                     "dmarc": ("TXT", f"_dmarc.{BRAND}")}
    assert records[f"{BRAND}-mx"]["content"] == f"mail.{PRIMARY}"
    assert records[f"{BRAND}-dmarc"]["content"] == f'"v=DMARC1; p=reject; rua=mailto:dmarc@{PRIMARY}"'
    assert {records[k]["type"] for k in ("a", "aaaa")} == {"A", "AAAA"}


def test_reports_into_another_of_our_domains_are_authorised_in_its_zone(several):
    _, mocks, _ = several
    records = {n: i for n, i in cm.of_type(mocks, CF_RECORD)}
    auth = records[f"mail-dns-records-report-{BRAND}"]
    assert (auth["name"], auth["content"]) == (f"{BRAND}._report._dmarc.{PRIMARY}", '"v=DMARC1"')
    # the primary reports into itself: no authorisation needed
    assert not [n for n in records if n.endswith(f"report-{PRIMARY}")]


def test_a_domain_with_a_dns_server_of_its_own_is_written_there_with_its_key(several):
    _, mocks, _ = several
    dkim = _inputs(mocks, f"mail-dns-records-{PARTNER}-dkim")
    assert (dkim["server"], dkim["port"], dkim["zone"], dkim["tsig_name"], dkim["name"]) == (
        "192.0.2.54", 53, PARTNER, "partner-updates", "s1._domainkey")
    secret = dkim["tsig_secret"]  # a secret: the engine's wrapped form
    assert (secret.get("value") if isinstance(secret, dict) else secret) == "cGFydG5lcg=="
    assert not [n for n in _names(mocks) if n.startswith(f"mail-dns-records-{PARTNER}-a")]


def test_without_a_target_of_its_own_a_domain_uses_the_stacks_with_its_own_zone():
    cfg = _several(cm.load(cm.openstack_raw()), partner_dns=None)
    mocks, _ = cm.run(cfg)
    records = {n: i for n, i in cm.of_type(mocks, CF_RECORD)}
    assert records[f"mail-dns-records-{PARTNER}-mx"]["zoneId"] == cm.ZONE_ID
    assert records[f"mail-dns-records-{PARTNER}-mx"]["name"] == PARTNER


def test_the_guard_holds_each_domains_mailboxes(several):
    _, mocks, _ = several
    guard = _inputs(mocks, "mail-mailboxes")
    assert guard["domains"] == {PRIMARY: [f"alice@{PRIMARY}", f"bob@{PRIMARY}"],
                                BRAND: [f"alice@{BRAND}", f"carol@{BRAND}"], PARTNER: [f"dave@{PARTNER}"]}
    assert (guard["drop"], guard["renamed"]) == ([], {})


def test_the_agent_gets_every_domain_its_keys_and_the_srs_secret(several):
    _, mocks, seen = several
    spec = seen["spec"]
    assert spec["domain"] == PRIMARY
    assert spec["domains"] == [{"name": PRIMARY, "dkim_selector": "s1", "catch_all": None},
                               {"name": BRAND, "dkim_selector": "b1", "catch_all": f"carol@{BRAND}"},
                               {"name": PARTNER, "dkim_selector": "s1", "catch_all": None}]
    assert {f"postmaster@{BRAND}": [f"carol@{BRAND}"], f"abuse@{PARTNER}": [f"dave@{PARTNER}"],
            f"postmaster@{PRIMARY}": [f"alice@{PRIMARY}"]}.items() <= spec["aliases"].items()
    run = next(i for _, n, i in mocks.resources if n == "mail-bootstrap-agent")
    secrets = run["secrets_json"]
    secrets = json.loads(secrets.get("value") if isinstance(secrets, dict) else secrets)
    assert set(secrets["dkim_keys"]) == {BRAND, PARTNER}
    assert secrets["dkim_private_key_pem"] == cm.MOCK_DKIM_KEY
    assert secrets["srs_secret"] == "mock-srs-secret"
    assert set(secrets["passwords"]) == {u.address for u in several[0].users}


def test_one_domain_gives_the_spec_it_always_had(single):
    _, seen = single
    assert "domains" not in seen["spec"] and "mailbox_moves" not in seen["spec"]


def test_a_renamed_domain_moves_its_mailboxes():
    cfg = cm.load(cm.openstack_raw())
    (primary,) = cfg.domains
    brand = config.MailDomain(BRAND, previous_name="old.test", users=(_user(f"carol@{BRAND}"),))
    cfg = dataclasses.replace(cfg, domains=(primary, brand), users=(*cfg.users, *brand.users))
    mocks, seen = cm.run(cfg)
    assert seen["spec"]["mailbox_moves"] == [{"from": "old.test", "to": BRAND}]
    assert _inputs(mocks, "mail-mailboxes")["renamed"] == {BRAND: "old.test"}


def test_the_local_default_serves_two_domains_and_forwards_one_alias_out():
    from tests import local_stack
    cfg = config.load(local_stack.raw(whole=True), "local")
    assert [d.name for d in cfg.domains] == [PRIMARY, BRAND]
    assert [u.address for u in cfg.domains[1].users] == [f"carol@{BRAND}"]
    assert dict(cfg.aliases)[f"fwd@{BRAND}"] == ["someone@elsewhere.test"]
    assert "elsewhere.test" not in {d.name for d in cfg.domains}  # the rest of the internet


@pytest.mark.parametrize("whole", [False, True], ids=["one-domain", "two-domains"])
def test_the_local_bind_gets_a_zone_for_every_other_domain_only_when_there_is_one(whole):
    from tests import local_stack
    cfg = config.load(local_stack.raw(whole=whole), "local")
    mocks, _ = cm.run(cfg)
    zones = _inputs(mocks, "mail-dns")["zones"]
    assert zones == {"domain": PRIMARY, "subnet": "10.77.0.0/24", "subnet6": "fd00:77::/64",
                     **({"extra_domains": [BRAND]} if whole else {})}
    if whole:
        mx = _inputs(mocks, f"mail-dns-records-{BRAND}-mx")
        assert (mx["server"], mx["zone"], mx["name"], mx["values"]) == ("10.77.0.1", BRAND, "@", [f"10 mail.{PRIMARY}."])
