"""The stack's configuration, typed and validated before any resource is declared.

One declarative schema (components/schema.py, on the agent's value rules): the common keys
here, each backend's own keys in its module (components/backends.py lists them). Every problem
is reported at once, one line each, naming the key, the value and the fix, so a bad
`Pulumi.<stack>.yaml` fails `pulumi preview` before anything is touched. Last, the spec the
agent would be given is checked by the agent's own rules (agent/spec.py), so nothing the
stack accepts is refused later on the host.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Mapping

from agent import contract
from agent.contract import Checker
from components import backends, backups, config_domains, config_rules, schema
from components.config_domains import DMARC_POLICIES, DomainDns, MailDomain, User  # noqa: F401 (the config's types)
from components.config_rules import OWN_DNS_KEYS
from components.schema import Key


class ConfigError(ValueError):
    """Raised with every problem of the stack config, one per line."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("invalid stack configuration:\n  " + "\n  ".join(errors))


@dataclass(frozen=True)
class DnsblSite:
    site: str
    weight: int = 1
    filter: str = contract.DEFAULT_DNSBL_FILTER   # the answers that are listings
    dqs: bool = False                             # asked with spamhaus_dqs_key


@dataclass(frozen=True)
class StackConfig:
    backend: str
    region: str
    residency: str
    domain: str                   # the primary domain (the first of `domains`)
    hostname: str
    users: tuple[User, ...]       # every domain's
    aliases: Mapping[str, Any]    # every domain's
    dkim_selector: str            # the primary's (so are dmarc_policy and dmarc_rua)
    dmarc_policy: str
    dmarc_rua: str | None
    dnsbl_sites: tuple[DnsblSite, ...]
    dnsbl_threshold: int
    verify: bool
    allow_listed_ip: bool = False
    outbound_per_user_per_hour: int = 200
    is_local: bool = False
    host: Any = None              # the host backend's typed settings
    dns_backend: str | None = None
    dns: Any = None               # the DNS backend's typed settings (backends with own_dns)
    resolver: str | None = None   # "IP:port" the stack asks for PTR and DNSBLs (backends with own_dns)
    resolver_forwarders: tuple[str, ...] = ()  # "IP:port"s the host's unbound forwards to; (): recursion
    backup_repository: str | None = None   # the user's restic URL; None: the host's own; "none"
    backup_interval_min: int = 60
    backup_keep: Mapping[str, int] = field(default_factory=lambda: dict(backups.KEEP))
    backup_region: str | None = None
    secret_keys: frozenset[str] = field(default_factory=frozenset)
    ssh_allow_from: tuple[str, ...] = contract.SSH_ANYWHERE  # who may reach SSH
    domains: tuple[MailDomain, ...] = ()   # every mail domain, the primary first
    drop_mailboxes: tuple[str, ...] = ()   # removed domains whose mailboxes may stop being served

    @property
    def fqdn(self) -> str:
        return f"{self.hostname}.{self.domain}"


# --- readers of the structured keys ---------------------------------------------------------

def _residency(c: Checker, key: str, value):
    if isinstance(value, bool):  # unquoted NO in YAML 1.1 is the boolean false
        c.err(key, f"got the boolean {value!r}; YAML reads an unquoted NO as false, write it "
                   f"quoted: residency: \"NO\" (or \"none\" to allow any region)")
        return None
    if value not in ("NO", "none"):
        c.err(key, f"{value!r} is not supported; use \"NO\" (Norway only) or \"none\"")
        return None
    return value


def _dnsbl_sites(c: Checker, key: str, value):
    if not isinstance(value, list):
        c.err(key, f"{value!r} must be a list, e.g. [{{site: dnsbl.test, weight: 3}}]")
        return ()
    out = []
    for i, s in enumerate(value):
        s = {"site": s} if isinstance(s, str) else s
        site, weight = (s or {}).get("site"), (s or {}).get("weight", 1)
        if not (isinstance(s, dict) and contract.is_dnsbl_zone(site) and isinstance(weight, int)
                and not isinstance(weight, bool)):
            c.err(f"{key}[{i}]", f"{s!r} needs a zone (a domain name of at most "
                                 f"{contract.DNSBL_ZONE_MAX} characters) and a whole-number "
                                 f"weight, e.g. {{site: dnsbl.test, weight: 3}}")
            continue
        if weight == 0:
            c.err(f"{key}[{i}].weight", "0 would count a listing for nothing; use a positive weight "
                                        "for a blocklist (e.g. 3) or a negative one for an allowlist")
            continue
        c.no_unknown(s, ("site", "weight", "filter"), f"{key}[{i}]")
        filt = s.get("filter")
        if filt is not None and not contract.is_dnsbl_filter(filt):
            c.err(f"{key}[{i}].filter", f"{filt!r} is not a postscreen reply filter; write d.d.d.d, "
                                        f"each d a number or [n;n..m], e.g. 127.0.0.[2..11]")
            continue
        # Every site counts only its listing codes: the known list's, or the default, which
        # leaves out 127.0.0.1 and the 127.255.255.x "blocked" answers.
        out.append(DnsblSite(site=site, weight=weight, filter=contract.dnsbl_filter(site, filt)))
    return tuple(out)


def _dqs_key(c: Checker, key: str, value):
    # Never echo the value: it is a secret.
    if not contract.is_dqs_key(value):
        c.err(key, "(secret) is not a Spamhaus DQS key (lower-case letters and digits, e.g. 26 of "
                   "them); pulumi config set --secret spamhaus_dqs_key <your key>")
        return None
    return value


def _ssh_allow_from(c: Checker, key: str, value):
    listed = [value] if isinstance(value, str) else value
    if not isinstance(listed, list) or not listed:
        c.err(key, f"{value!r} must list the networks that may reach SSH, e.g. "
                   f"ssh_allow_from: [198.51.100.0/24, 2001:db8::/48]")
        return None
    bad = [v for v in listed if not contract.is_cidr(v)]
    for v in bad:
        c.err(key, f"{v!r} is not a network in CIDR form; write it whole, without host bits, "
                   f"e.g. 198.51.100.0/24 or 203.0.113.7 (one address)")
    return None if bad else tuple(listed)


COMMON_KEYS = (
    Key("backend", schema.choice(backends.HOSTS, "a known backend"), "local"),
    Key("residency", _residency, "NO"),
    Key("region", schema.text("is not a region; set the region the host stands in, e.g. 'no-svg1'"),
        hint="set the region the host stands in, e.g. 'no-svg1'"),
    # The mail domains: `domains` (several), or the single-domain keys (config_domains.py).
    Key("domains", config_domains.read_domains, None),
    Key("domain", schema.domain(), None),
    Key("hostname", schema.label("a host label", "'mail' (the FQDN is hostname.<primary domain>)"), "mail"),
    Key("users", config_domains.read_users, None),
    Key("aliases", config_domains.read_aliases, {}),
    Key("dkim_selector", schema.label("a DNS label", "'s2026'"), "s1"),
    Key("dmarc_policy", schema.choice(DMARC_POLICIES, "a DMARC policy"), "quarantine"),
    Key("dmarc_rua", schema.address(), None),
    Key("dnsbl_sites", _dnsbl_sites, []),
    Key("dnsbl_threshold", schema.positive("", "3"), 3),
    Key("verify", schema.boolean(), True),
    Key("allow_listed_ip", schema.boolean(), False),
    # Spamhaus refuses its free mirrors to many servers; with a DQS key, the Spamhaus sites
    # (zen.spamhaus.org, ...) are asked through <key>.<list>.dq.spamhaus.net instead.
    Key("spamhaus_dqs_key", _dqs_key, None, secret=True,
        hint="pulumi config set --secret spamhaus_dqs_key <your key>"),
    Key("outbound_per_user_per_hour", schema.positive(
        " of messages per hour per authenticated user", "200"), 200),
    Key("ssh_allow_from", _ssh_allow_from, list(contract.SSH_ANYWHERE)),
    # Removing a domain that has mailboxes is refused unless it is listed here (after a backup).
    Key("drop_mailboxes", config_domains.read_names, None),
    # TSIG secrets of the domains whose zone is on an RFC 2136 server of its own.
    Key("domain_dns_secrets", config_domains.read_secrets, None, secret=True,
        hint="pulumi config set --secret --path 'domain_dns_secrets[\"brand.no\"]' 'BASE64...'"),
    *backups.KEYS,
)
def all_keys() -> list[Key]:
    """Every key any backend reads: the program passes these on to load()."""
    keys = [*COMMON_KEYS, *OWN_DNS_KEYS]
    for b in (*backends.hosts(), *backends.dns_backends()):
        keys += [k for k in b.keys if k.name not in {x.name for x in keys}]
    return keys


def secret_key_names() -> tuple[str, ...]:
    return tuple(k.name for k in all_keys() if k.secret)


def load(raw: Mapping[str, Any], stack: str, secret_keys: Collection[str] = ()) -> StackConfig:
    """Validate the raw `bulletproof-mail:*` config of `stack` (keys without the namespace).

    `secret_keys`: which keys are Pulumi secrets (keys declared secret must be, or are refused).
    """
    c = Checker()
    v = schema.read_keys(c, raw, COMMON_KEYS, stack, secret_keys)
    domains = config_domains.resolve(c, raw, v)
    backend = backends.host(v["backend"]) if v["backend"] else None
    used = {k.name for k in COMMON_KEYS}
    host = dns_name = dns = None
    if backend:
        host, dns_name, dns, used = config_rules.backend_settings(c, raw, v, backend, stack,
                                                                  secret_keys, used)
    config_rules.unused_keys(c, raw, used, v["backend"])
    config_rules.cross_checks(c, v)
    domains = config_domains.check(c, domains, shorthand=not v["domains"],
                                   is_local=stack == "local" or v["backend"] == "local",
                                   drop=v["drop_mailboxes"] or (), dns_secrets=v["domain_dns_secrets"])
    if backend:
        config_rules.backup_checks(c, v, backend, secret_keys)
    sites = v["dnsbl_sites"] or ()
    if v["spamhaus_dqs_key"]:
        sites = tuple(DnsblSite(s.site, s.weight, s.filter, dqs=contract.dqs_zone(s.site, "k") is not None)
                      for s in sites)
        if not any(s.dqs for s in sites):
            c.err("spamhaus_dqs_key", "is set, but no dnsbl_sites entry has a DQS form; add one of "
                  + ", ".join(z for z, k in contract.KNOWN_DNSBLS.items() if k.dqs)
                  + " (e.g. {site: zen.spamhaus.org, weight: 3}) or remove the key")
    if c.errors:
        raise ConfigError(c.errors)
    cfg = StackConfig(
        backend=v["backend"], region=v["region"], residency=v["residency"], domain=v["domain"],
        hostname=v["hostname"], users=tuple(u for d in domains for u in d.users), aliases=v["aliases"],
        domains=domains, drop_mailboxes=v["drop_mailboxes"] or (),
        dkim_selector=v["dkim_selector"], dmarc_policy=v["dmarc_policy"], dmarc_rua=v["dmarc_rua"],
        dnsbl_sites=sites, dnsbl_threshold=v["dnsbl_threshold"], verify=v["verify"],
        allow_listed_ip=v["allow_listed_ip"],
        outbound_per_user_per_hour=v["outbound_per_user_per_hour"],
        is_local=(stack == "local" or v["backend"] == "local"), host=host,
        dns_backend=dns_name, dns=dns, resolver=v.get("resolver"),
        resolver_forwarders=v.get("resolver_forwarders") or (), secret_keys=frozenset(secret_keys),
        backup_repository=v["backup_repository"], backup_interval_min=v["backup_interval_min"],
        backup_keep=v["backup_keep"], backup_region=v["backup_region"],
        ssh_allow_from=v["ssh_allow_from"])
    errors = config_rules.agent_refuses(cfg)
    if errors:
        raise ConfigError(errors)
    return cfg
