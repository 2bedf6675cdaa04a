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
from components import backends, backups, config_rules, schema
from components.config_rules import OWN_DNS_KEYS
from components.schema import Key

DMARC_POLICIES = ("none", "quarantine", "reject")


class ConfigError(ValueError):
    """Raised with every problem of the stack config, one per line."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("invalid stack configuration:\n  " + "\n  ".join(errors))


@dataclass(frozen=True)
class User:
    address: str
    quota_mb: int = 1024


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
    domain: str
    hostname: str
    users: tuple[User, ...]
    aliases: Mapping[str, Any]
    dkim_selector: str
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


def _users(c: Checker, key: str, value):
    if not isinstance(value, list) or not value:
        c.err(key, "needs at least one mailbox, e.g. users: [{address: alice@example.no}]")
        return ()
    out = []
    for i, u in enumerate(value):
        path = f"{key}[{i}]"
        u = {"address": u} if isinstance(u, str) else u
        if not isinstance(u, dict):
            c.err(path, f"{u!r} is not a mapping; write {{address: name@<domain>}}")
            continue
        c.no_unknown(u, ("address", "quota_mb"), path)
        quota = u.get("quota_mb", 1024)
        if not isinstance(quota, int) or isinstance(quota, bool) or quota < 1:
            c.err(f"{path}.quota_mb", f"{quota!r} must be a positive whole number of MiB, e.g. 1024")
            continue
        out.append(User(address=u.get("address"), quota_mb=quota))
    return tuple(out)


def _aliases(c: Checker, key: str, value):
    """{alias: [targets]}, each an address (who may receive what is judged with the users, in
    config_rules.cross_checks)."""
    if not isinstance(value, dict):
        c.err(key, f"{value!r} must map an address to a mailbox, e.g. {{info@example.no: alice@example.no}}")
        return {}
    out = {}
    for alias, targets in value.items():
        path = f"{key}[{alias!r}]"
        if not contract.is_address(alias):
            c.err(path, f"{alias!r} is not an email address; an alias is name@<domain>, "
                        f"e.g. info@example.no: alice@example.no")
            continue
        listed = [targets] if isinstance(targets, str) else targets
        if not (isinstance(listed, list) and listed and all(isinstance(t, str) for t in listed)):
            c.err(path, f"{targets!r} is not an address or a list of addresses; "
                        f"e.g. {alias}: alice@example.no")
            continue
        bad = [(j, t) for j, t in enumerate(listed) if not contract.is_address(t)]
        for j, t in bad:
            c.err(f"{path}[{j}]", f"{t!r} is not an email address; an alias forwards mail to "
                                  f"addresses only (no |command, /file or :include:), e.g. alice@example.no")
        if not bad:
            out[alias] = listed
    return out


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
    Key("domain", schema.domain(), hint="set the mail domain, e.g. domain: example.no"),
    Key("hostname", schema.label("a host label", "'mail' (the FQDN is hostname.domain)"), "mail"),
    Key("users", _users, hint="needs at least one mailbox, e.g. users: [{address: alice@example.no}]"),
    Key("aliases", _aliases, {}),
    Key("dkim_selector", schema.label("a DNS label", "'s2026'"), "s1"),
    Key("dmarc_policy", schema.choice(DMARC_POLICIES, "a DMARC policy"), "quarantine"),
    Key("dmarc_rua", schema.address(), None),
    Key("dnsbl_sites", _dnsbl_sites, ()),
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
    backend = backends.host(v["backend"]) if v["backend"] else None
    used = {k.name for k in COMMON_KEYS}
    host = dns_name = dns = None
    if backend:
        host, dns_name, dns, used = config_rules.backend_settings(c, raw, v, backend, stack,
                                                                  secret_keys, used)
    config_rules.unused_keys(c, raw, used, v["backend"])
    config_rules.cross_checks(c, v)
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
        hostname=v["hostname"], users=v["users"], aliases=v["aliases"],
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
