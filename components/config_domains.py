"""The mail domains of the stack: `domains:` (one entry per domain, the primary first), or the
single-domain keys (domain, users, aliases, dkim_selector, dmarc_policy, dmarc_rua) as shorthand
for one entry. Both read into the same MailDomain tuple, so moving a stack from one form to the
other with the same content changes nothing.

Who may receive what is one rule set for the whole stack (agent/contract.py): an alias target in
one of our domains is a mailbox or an alias of ours, anything else is an address elsewhere, and
nothing forwards in a loop.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from agent import contract
from agent.contract import Checker
from components import schema

DMARC_POLICIES = ("none", "quarantine", "reject")
SHORTHAND_KEYS = ("domain", "users", "aliases", "dkim_selector", "dmarc_policy", "dmarc_rua")
DNS_BACKENDS = ("rfc2136", "cloudflare")
TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1", "hmac-md5")
_ENTRY_KEYS = ("name", "dkim_selector", "dmarc_policy", "dmarc_rua", "catch_all", "previous_name",
               "dns", "users", "aliases")
_EXAMPLE = "domains: [{name: example.no, users: [{address: alice@example.no}]}]"
LOCAL_CLOUD_ZONES = ("elsewhere.test", "dnsbl.test")  # localcloud/dns_config.local_zones' own


@dataclass(frozen=True)
class User:
    address: str
    quota_mb: int = 1024


@dataclass(frozen=True)
class DomainDns:
    """Where a domain's zone is, when it is not the stack's own DNS target."""
    backend: str        # "rfc2136" | "cloudflare"
    settings: Any       # components.dns.rfc2136.Settings or components.dns.cloudflare.Settings


@dataclass(frozen=True)
class MailDomain:
    name: str
    dkim_selector: str = "s1"
    dmarc_policy: str = "quarantine"
    dmarc_rua: str | None = None
    catch_all: str | None = None       # where mail to an unknown local part goes
    previous_name: str | None = None   # renamed from: its mailboxes move here
    users: tuple[User, ...] = ()
    aliases: Mapping[str, Any] = field(default_factory=dict)
    dns: DomainDns | None = None       # None: the stack's own DNS target, zone = the name


# --- readers ---------------------------------------------------------------------------------

def read_users(c: Checker, key: str, value, required: bool = True):
    if value is None or value == []:
        if required:
            c.err(key, "needs at least one mailbox, e.g. users: [{address: alice@example.no}]")
        return ()
    if not isinstance(value, list):
        c.err(key, f"{value!r} must be a list of mailboxes, e.g. users: [{{address: alice@example.no}}]")
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


def read_aliases(c: Checker, key: str, value):
    """{alias: [targets]}, each an address (who may receive what is judged in `check`)."""
    if value is None:
        return {}
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


def read_domains(c: Checker, key: str, value):
    """The raw `domains:` list -> MailDomain entries (their cross-domain rules are in `check`)."""
    if not isinstance(value, list) or not value:
        c.err(key, f"{value!r} must list the mail domains, the primary first, e.g. {_EXAMPLE}")
        return ()
    out = []
    for i, entry in enumerate(value):
        path = f"{key}[{i}]"
        entry = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict):
            c.err(path, f"{entry!r} is not a mapping; write {{name: example.no, users: [...]}}")
            continue
        c.no_unknown(entry, _ENTRY_KEYS, path)
        name = entry.get("name")
        if name is None:
            c.err(f"{path}.name", "missing; set the domain, e.g. name: example.no")
            continue
        if schema.domain()(c, f"{path}.name", name) is None:
            continue
        got = {k: entry.get(k, d) for k, d in (("dkim_selector", "s1"), ("dmarc_policy", "quarantine"))}
        if not contract.is_label(got["dkim_selector"]):
            c.err(f"{path}.dkim_selector", f"{got['dkim_selector']!r} is not a DNS label; use e.g. 's2026'")
        if got["dmarc_policy"] not in DMARC_POLICIES:
            c.err(f"{path}.dmarc_policy", f"{got['dmarc_policy']!r} is not a DMARC policy; use one of "
                                          + ", ".join(DMARC_POLICIES))
        for opt in ("dmarc_rua", "catch_all"):
            if entry.get(opt) is not None and not contract.is_address(entry[opt]):
                c.err(f"{path}.{opt}", f"{entry[opt]!r} is not an email address; e.g. {opt.split('_')[0]}@{name}")
        previous = entry.get("previous_name")
        if previous is not None:
            schema.domain()(c, f"{path}.previous_name", previous)
        out.append(MailDomain(
            name=name, dkim_selector=got["dkim_selector"], dmarc_policy=got["dmarc_policy"],
            dmarc_rua=entry.get("dmarc_rua"), catch_all=entry.get("catch_all"), previous_name=previous,
            users=read_users(c, f"{path}.users", entry.get("users"), required=False),
            aliases=read_aliases(c, f"{path}.aliases", entry.get("aliases")),
            dns=_domain_dns(c, f"{path}.dns", entry.get("dns"), name)))
    return tuple(out)


def _cloudflare_zone_id(c: Checker, key: str, value):
    from components.dns import cloudflare
    return next(k for k in cloudflare.BACKEND.keys if k.name == "cloudflare_zone_id").read(c, key, value)


def _domain_dns(c: Checker, path: str, value, name: str) -> DomainDns | None:
    """A domain's own zone: `{backend: rfc2136, server, tsig_name, tsig_algorithm, zone}` (its TSIG
    secret in domain_dns_secrets) or `{backend: cloudflare, zone_id}` (the provider's token)."""
    if value is None:
        return None
    from components.dns import cloudflare, rfc2136  # the backends' settings types
    if not isinstance(value, dict) or value.get("backend") not in DNS_BACKENDS:
        c.err(path, f"{value!r} must name its backend, one of {', '.join(DNS_BACKENDS)}, e.g. "
                    f"dns: {{backend: rfc2136, server: 192.0.2.53:53, tsig_name: mail-updates}}")
        return None
    if value["backend"] == "cloudflare":
        c.no_unknown(value, ("backend", "zone_id"), path)
        zone_id = _cloudflare_zone_id(c, f"{path}.zone_id", value.get("zone_id"))  # cloudflare's own rule
        if zone_id is None:
            return None
        return DomainDns("cloudflare", cloudflare.Settings(zone_id=zone_id, zone=name))
    c.no_unknown(value, ("backend", "server", "tsig_name", "tsig_algorithm", "zone"), path)
    server, tsig = value.get("server"), value.get("tsig_name")
    algorithm, zone = value.get("tsig_algorithm", "hmac-sha256"), value.get("zone", name)
    ok = True
    if not (isinstance(server, str) and contract.split_ip_port(server)):
        c.err(f"{path}.server", f"{server!r} is not IP:port; set the RFC 2136 server that takes "
                                f"updates for the zone, e.g. server: 192.0.2.53:53")
        ok = False
    if not (isinstance(tsig, str) and tsig.strip()):
        c.err(f"{path}.tsig_name", f"{tsig!r} is not a TSIG key name; e.g. tsig_name: mail-updates")
        ok = False
    if algorithm not in TSIG_ALGORITHMS:
        c.err(f"{path}.tsig_algorithm", f"{algorithm!r} is not a TSIG algorithm; use one of "
                                        + ", ".join(TSIG_ALGORITHMS))
        ok = False
    if not (contract.is_domain(zone) and (zone == name or name.endswith("." + zone))):
        c.err(f"{path}.zone", f"{zone!r} does not contain the domain {name!r}; set the zone the "
                              f"records go to: the domain itself or a parent of it")
        ok = False
    return DomainDns("rfc2136", rfc2136.Settings(server=server, tsig_name=tsig, tsig_algorithm=algorithm,
                                                 zone=zone)) if ok else None


def read_names(c: Checker, key: str, value):
    listed = [value] if isinstance(value, str) else value
    if not isinstance(listed, list) or not all(isinstance(d, str) and contract.is_domain(d) for d in listed):
        c.err(key, f"{value!r} must list domain names, e.g. drop_mailboxes: [old.example.no]")
        return ()
    return tuple(listed)


def read_secrets(c: Checker, key: str, value):
    # Never echo the values: they are secrets.
    if not (isinstance(value, dict) and all(isinstance(k, str) and isinstance(s, str) and s
                                            for k, s in value.items())):
        c.err(key, "(secret) must map each domain with its own rfc2136 dns to its TSIG secret, e.g. "
                   "pulumi config set --secret --path 'domain_dns_secrets[\"brand.no\"]' 'BASE64...'")
        return {}
    return dict(value)


# --- the two forms, and the rules across domains ---------------------------------------------

def resolve(c: Checker, raw: Mapping[str, Any], v: dict) -> tuple[MailDomain, ...]:
    """The stack's domains from whichever form `raw` uses; fills the shorthand keys of `v` with
    the primary's values (and users/aliases with every domain's), which the other rules read."""
    if v.get("domains"):
        both = [k for k in SHORTHAND_KEYS if raw.get(k) is not None]
        if both:
            c.err(", ".join(both), "given together with domains; move them into the domains entry "
                                   "they belong to (the primary is the first) or remove domains")
        domains = v["domains"]
        primary = domains[0]
        v.update(domain=primary.name, dkim_selector=primary.dkim_selector,
                 dmarc_policy=primary.dmarc_policy, dmarc_rua=primary.dmarc_rua,
                 users=tuple(u for d in domains for u in d.users),
                 aliases={a: t for d in domains for a, t in d.aliases.items()})
        return domains
    if raw.get("domains") is not None:  # given, but unreadable: already reported
        return ()
    if v.get("domain") is None:
        if raw.get("domain") is None:
            c.err("domain", f"missing; set the mail domain, e.g. domain: example.no (or several: {_EXAMPLE})")
        return ()
    if v.get("users") is None and raw.get("users") is None:
        c.err("users", "needs at least one mailbox, e.g. users: [{address: alice@example.no}]")
    return (MailDomain(name=v["domain"], dkim_selector=v["dkim_selector"], dmarc_policy=v["dmarc_policy"],
                       dmarc_rua=v["dmarc_rua"], users=tuple(v.get("users") or ()),
                       aliases=dict(v.get("aliases") or {})),)


def check(c: Checker, domains: tuple[MailDomain, ...], shorthand: bool, is_local: bool,
          drop: tuple[str, ...], dns_secrets: Mapping[str, str] | None) -> tuple[MailDomain, ...]:
    """Every rule across domains; returns the domains with only their valid users (a bad one is
    reported already and must not be judged again as an alias target)."""
    where = ((lambda i, key: {"name": "domain"}.get(key, key)) if shorthand
             else (lambda i, key: f"domains[{i}].{key}"))
    names = [d.name for d in domains]
    for i, d in enumerate(domains):
        if names.index(d.name) != i:
            c.err(where(i, "name"), f"{d.name!r} is listed twice; list each domain once, with all its "
                                    f"users and aliases")
    seen = set(names)
    domains = tuple(d for i, d in enumerate(domains) if names.index(d.name) == i)  # the rest is reported
    cleaned, all_users = [], []
    for i, d in enumerate(domains):
        users = []
        for j, u in enumerate(d.users):
            problem = _user_problem(u.address, d.name, seen)
            if problem:
                c.err(f"{where(i, 'users')}[{j}].address", problem)
            else:
                users.append(u)
        all_users += users
        cleaned.append(dataclasses.replace(d, users=tuple(users)))
        _own_checks(c, d, i, where, seen, is_local, dns_secrets)
    if not all_users and not shorthand and domains:
        c.err("domains", f"no domain has a mailbox; give one at least, e.g. {_EXAMPLE}")
    addresses = [u.address for u in all_users]
    dup = sorted({a for a in addresses if addresses.count(a) > 1})
    if dup:
        c.err(where(0, "users") if shorthand else "domains",
              f"{', '.join(dup)} listed twice; list each mailbox once")
    if all_users and len(all_users) == sum(len(d.users) for d in domains):
        _alias_checks(c, domains, where, all_users)
    for name in drop:
        if name in seen:
            c.err("drop_mailboxes", f"{name!r} is still one of the domains; remove it from domains "
                                    f"(to stop serving it) or from drop_mailboxes")
    for name in sorted(set(dns_secrets or {}) - {d.name for d in domains if d.dns is not None}):
        c.err("domain_dns_secrets", f"has a secret for {name!r}, which has no dns of its own; remove it "
                                    f"or give that domain a dns entry")
    return tuple(cleaned)


def _user_problem(address, domain: str, ours: set[str]) -> str | None:
    local, _, dom = str(address).partition("@")
    if not isinstance(address, str) or dom != domain:
        move = (f"; list it under the domain {dom!r}" if dom in ours else "")
        return f"{address!r} is not an address in domain {domain!r}; use name@{domain}{move}"
    if not contract.is_local_part(local):
        return (f"{address!r}: {local!r} is not a mailbox name; use lower-case letters, digits and "
                f"_ + = - in dot-separated parts (no empty part, no leading or trailing dot)")
    if local in contract.ROLE_LOCAL_PARTS:
        return (f"{address!r} is a role address (RFC 2142), an alias of a person: remove it from users "
                f"(it goes to the first user), or choose who reads it: aliases: {{{address}: [name@{domain}]}}")
    return None


def _own_checks(c: Checker, d: MailDomain, i: int, where, ours: set[str], is_local: bool,
                dns_secrets: Mapping[str, str] | None) -> None:
    if d.previous_name is not None and d.previous_name in ours:
        c.err(where(i, "previous_name"), f"{d.previous_name!r} is still one of the domains; a rename "
                                         f"names the domain this one was before, no longer listed")
    if is_local and d.name in LOCAL_CLOUD_ZONES:
        c.err(where(i, "name"), f"{d.name!r} is one of the local cloud's own zones (the rest of the "
                                f"internet, the test DNSBL); name the mail domain otherwise, e.g. brand.test")
    if d.dns is not None and is_local:
        c.err(where(i, "dns"), "the local stack's own DNS server holds every local domain; remove it")
    elif d.dns is not None and d.dns.backend == "rfc2136" and d.name not in (dns_secrets or {}):
        c.err("domain_dns_secrets", f"has no TSIG secret for {d.name!r}; pulumi config set --secret "
                                    f"--path 'domain_dns_secrets[\"{d.name}\"]' 'BASE64...'")
    for key, relative in (("dkim_selector", f"{d.dkim_selector}._domainkey"), ("name", "_dmarc")):
        if len(relative) + 1 + len(d.name) > 253:
            c.err(where(i, key), f"{relative}.{d.name[:20]}... would be {len(relative) + 1 + len(d.name)} "
                                 f"characters, over DNS's 253; use a shorter {key}")
            return


def _alias_checks(c: Checker, domains: tuple[MailDomain, ...], where, users) -> None:
    """An alias (or catch-all) forwards to mailboxes of ours, other aliases of ours or addresses
    elsewhere, never in a loop (the agent's rules: agent/contract.py)."""
    names = [d.name for d in domains]
    mailboxes = {u.address for u in users}
    every = {a: t for d in domains for a, t in d.aliases.items()}
    known = {**contract.role_aliases_of(names, [u.address for u in users]), **every}
    fix = f"use one of {', '.join(sorted(mailboxes))}, another alias, or add it to users"
    for i, d in enumerate(domains):
        for alias, targets in d.aliases.items():
            path = f"{where(i, 'aliases')}[{alias!r}]"
            dom = alias.rpartition("@")[2]
            if dom != d.name:
                move = f"; list it under the domain {dom!r}" if dom in names else ""
                c.err(path, f"{alias!r} is not an address in domain {d.name!r}; use name@{d.name}{move}")
                continue
            if alias in mailboxes:
                c.err(path, f"{alias!r} is also a user; an address is a mailbox or an alias: remove it "
                            f"from users or from aliases")
                continue
            for j, target in enumerate(targets):
                problem = contract.alias_target_problem(target, names, mailboxes, known)
                if problem:
                    c.err(f"{path}[{j}]", f"{target!r} {problem}; {fix}")
        if d.catch_all is not None:
            problem = contract.alias_target_problem(d.catch_all, names, mailboxes, known)
            if problem:
                c.err(where(i, "catch_all"), f"{d.catch_all!r} {problem}; {fix}")
    for loop in contract.alias_loops(known):
        owner = next((i for i, d in enumerate(domains) if loop[0] in d.aliases), 0)
        c.err(f"{where(owner, 'aliases')}[{loop[0]!r}]", f"forwards in a loop ({' -> '.join(loop)}), so "
                                                         f"its mail reaches no one; point one of them at a mailbox")
