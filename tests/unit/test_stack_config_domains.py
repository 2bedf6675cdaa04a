"""Several mail domains (`domains:`) and the single-domain shorthand: the same content is the same
config, and each bad input is one line naming the key, the value and the fix."""
import pytest

from components import config

BASE = {"backend": "local", "region": "no-svg1", "residency": "NO", "hostname": "mail"}
SHORT = {"domain": "bulletproof.test", "dkim_selector": "s1", "dmarc_policy": "quarantine",
         "users": [{"address": "alice@bulletproof.test", "quota_mb": 512}],
         "aliases": {"info@bulletproof.test": ["alice@bulletproof.test"]}}
PRIMARY = {"name": "bulletproof.test", "dkim_selector": "s1", "dmarc_policy": "quarantine",
           "users": [{"address": "alice@bulletproof.test", "quota_mb": 512}],
           "aliases": {"info@bulletproof.test": ["alice@bulletproof.test"]}}
BRAND = {"name": "brand.test", "dkim_selector": "b1", "dmarc_policy": "reject",
         "dmarc_rua": "dmarc@bulletproof.test",
         "users": [{"address": "carol@brand.test"}],
         "aliases": {"hello@brand.test": ["carol@brand.test", "alice@bulletproof.test"],
                     "fwd@brand.test": ["someone@elsewhere.test"]}}


def load(stack: str = "local", secret_keys=(), **raw):
    return config.load({**BASE, **raw}, stack, secret_keys)


def errors_for(*domains, **raw) -> list[str]:
    with pytest.raises(config.ConfigError) as err:
        load(**({"domains": list(domains)} if domains else {}), **raw)
    return err.value.errors


def test_the_shorthand_is_one_domain_with_the_same_content():
    short, listed = load(**SHORT), load(domains=[PRIMARY])
    assert short == listed
    assert short.domains == (config.MailDomain(
        name="bulletproof.test", dkim_selector="s1", dmarc_policy="quarantine",
        users=(config.User("alice@bulletproof.test", 512),),
        aliases={"info@bulletproof.test": ["alice@bulletproof.test"]}),)


def test_several_domains_keep_the_primary_in_the_old_fields_and_everything_in_users_and_aliases():
    cfg = load(domains=[PRIMARY, BRAND])
    assert [d.name for d in cfg.domains] == ["bulletproof.test", "brand.test"]
    assert (cfg.domain, cfg.fqdn, cfg.dkim_selector, cfg.dmarc_policy) == (
        "bulletproof.test", "mail.bulletproof.test", "s1", "quarantine")
    assert [u.address for u in cfg.users] == ["alice@bulletproof.test", "carol@brand.test"]
    assert set(cfg.aliases) == {"info@bulletproof.test", "hello@brand.test", "fwd@brand.test"}
    brand = cfg.domains[1]
    assert (brand.dkim_selector, brand.dmarc_policy, brand.dmarc_rua) == ("b1", "reject", "dmarc@bulletproof.test")


def test_a_domain_without_mailboxes_is_kept_for_its_aliases_and_catch_all():
    old = {"name": "old.test", "catch_all": "alice@bulletproof.test"}
    cfg = load(domains=[PRIMARY, old])
    assert cfg.domains[1].catch_all == "alice@bulletproof.test" and cfg.domains[1].users == ()


@pytest.mark.parametrize("domains, expected", [
    ([PRIMARY, PRIMARY], "domains[1].name: 'bulletproof.test' is listed twice"),
    ([PRIMARY, {**BRAND, "users": [{"address": "dave@elsewhere.test"}]}],
     "domains[1].users[0].address: 'dave@elsewhere.test' is not an address in domain 'brand.test'"),
    ([PRIMARY, {**BRAND, "aliases": {"sales@elsewhere.test": ["carol@brand.test"]}}],
     "domains[1].aliases['sales@elsewhere.test']: 'sales@elsewhere.test' is not an address in domain 'brand.test'"),
    ([PRIMARY, {**BRAND, "aliases": {"hello@brand.test": ["nobody@brand.test"]}}],
     "domains[1].aliases['hello@brand.test'][0]: 'nobody@brand.test' is neither a mailbox nor an alias of brand.test"),
    ([{**PRIMARY, "aliases": {"b@bulletproof.test": ["a@brand.test"]}},
      {**BRAND, "aliases": {"a@brand.test": ["b@bulletproof.test"]}}],
     "forwards in a loop (a@brand.test -> b@bulletproof.test -> a@brand.test)"),
    ([PRIMARY, {**BRAND, "catch_all": "ghost@bulletproof.test"}],
     "domains[1].catch_all: 'ghost@bulletproof.test' is neither a mailbox nor an alias of bulletproof.test"),
    ([PRIMARY, {**BRAND, "aliases": {"x@brand.test": ["|/bin/sh"]}}],
     "domains[1].aliases['x@brand.test'][0]: '|/bin/sh' is not an email address"),
    ([PRIMARY, {**BRAND, "dmarc_policy": "maybe"}], "domains[1].dmarc_policy: 'maybe' is not a DMARC policy"),
    ([PRIMARY, {**BRAND, "color": "red"}], "domains[1]"),
    ([PRIMARY, {**BRAND, "name": "Not A Domain"}], "domains[1].name: 'Not A Domain' is not a domain name"),
    ([PRIMARY, {**BRAND, "previous_name": "bulletproof.test"}],
     "domains[1].previous_name: 'bulletproof.test' is still one of the domains"),
    ([PRIMARY, {**BRAND, "name": "elsewhere.test", "users": [], "aliases": {}}],
     "domains[1].name: 'elsewhere.test' is one of the local cloud's own zones"),
    ([PRIMARY, {**BRAND, "dns": {"backend": "rfc2136", "server": "192.0.2.53:53", "tsig_name": "k"}}],
     "domains[1].dns: the local stack's own DNS server holds every local domain"),
])
def test_bad_domains_give_one_line_each(domains, expected):
    errors = errors_for(*domains)
    assert len(errors) == 1, errors
    assert expected in errors[0]


def test_a_user_listed_under_another_of_our_domains_is_told_where_it_belongs():
    errors = errors_for(PRIMARY, {**BRAND, "users": [{"address": "dave@bulletproof.test"}]})
    assert errors == ["domains[1].users[0].address: 'dave@bulletproof.test' is not an address in domain "
                      "'brand.test'; use name@brand.test; list it under the domain 'bulletproof.test'"]


def test_the_same_mailbox_in_two_entries_is_refused():
    errors = errors_for({**PRIMARY, "users": PRIMARY["users"] * 2}, BRAND)
    assert errors == ["domains: alice@bulletproof.test listed twice; list each mailbox once"]


def test_both_forms_at_once_are_refused_naming_the_shorthand_keys():
    errors = errors_for(PRIMARY, domain="bulletproof.test", users=SHORT["users"])
    assert errors == ["domain, users: given together with domains; move them into the domains entry "
                      "they belong to (the primary is the first) or remove domains"]


def test_neither_form_names_both():
    errors = errors_for()
    assert len(errors) == 1 and errors[0].startswith("domain: missing; set the mail domain")
    assert "domains: [{name: example.no" in errors[0]


def test_a_domain_still_served_cannot_be_dropped():
    errors = errors_for(PRIMARY, BRAND, drop_mailboxes=["brand.test"])
    assert errors == ["drop_mailboxes: 'brand.test' is still one of the domains; remove it from domains "
                      "(to stop serving it) or from drop_mailboxes"]
    assert load(domains=[PRIMARY], drop_mailboxes=["brand.test"]).drop_mailboxes == ("brand.test",)


def test_a_domain_on_its_own_dns_server_needs_its_tsig_secret_as_a_secret():
    ssh = {"backend": "ssh", "region": "oslo", "ssh_host": "192.0.2.10",
           "ssh_private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n",
           "dns_server": "192.0.2.53:53", "dns_tsig_name": "mail-updates", "dns_tsig_secret": "c2VjcmV0",
           "resolver": "192.0.2.53:53", "backup_repository": "none"}
    own = {**BRAND, "dns": {"backend": "rfc2136", "server": "198.51.100.53:53", "tsig_name": "brand"}}
    secrets = config.secret_key_names()
    with pytest.raises(config.ConfigError) as missing:
        load("prod", secrets, domains=[PRIMARY, own], **ssh)
    assert missing.value.errors == ["domain_dns_secrets: has no TSIG secret for 'brand.test'; pulumi config set --secret "
                      "--path 'domain_dns_secrets[\"brand.test\"]' 'BASE64...'"]
    cfg = load("prod", secrets, domains=[PRIMARY, own], domain_dns_secrets={"brand.test": "c2Vj"}, **ssh)
    assert cfg.domains[0].dns is None
    assert (cfg.domains[1].dns.backend, cfg.domains[1].dns.settings.zone,
            cfg.domains[1].dns.settings.server) == ("rfc2136", "brand.test", "198.51.100.53:53")
    with pytest.raises(config.ConfigError) as plain:
        load("prod", [s for s in secrets if s != "domain_dns_secrets"], domains=[PRIMARY, own],
             domain_dns_secrets={"brand.test": "c2Vj"}, **ssh)
    assert any(e.startswith("domain_dns_secrets: is stored in plain text") for e in plain.value.errors)
    assert all("c2Vj" not in e for e in plain.value.errors)
