"""The config rules that span keys: a backend's own keys, keys used with the wrong backend,
region and residency, and the agent's verdict on the spec (the domains' own rules:
components/config_domains.py).
"""
from __future__ import annotations

from typing import Any, Collection, Mapping

from agent import contract
from agent.contract import Checker
from components import backends, schema
from components.schema import Key

# Backends that bring their own DNS: where the records go, and what the host resolves with.
OWN_DNS_KEYS = (
    Key("dns_backend", schema.choice(backends.DNS, "a DNS backend"), "rfc2136"),
    Key("resolver", schema.ip_port("set the DNS resolver this machine asks for the server's PTR "
                                   "and its DNSBL reputation at deploy, e.g. resolver: 192.0.2.53:53"),
        hint="set the DNS resolver this machine asks for the server's PTR and DNSBLs, e.g. "
             "resolver: 192.0.2.53:53"),
    # The server's own unbound recurses itself unless told to forward: DNSBL operators refuse
    # (or answer "blocked" to) queries that come through shared public resolvers.
    Key("resolver_forwarders", lambda c, k, v: _forwarders(c, k, v), None),
)


def _forwarders(c: Checker, key: str, value):
    listed = [value] if isinstance(value, str) else value
    if not isinstance(listed, list) or not listed or not all(
            isinstance(f, str) and contract.split_ip_port(f) for f in listed):
        c.err(key, f"{value!r} is not a list of IP:port; e.g. resolver_forwarders: [192.0.2.53:53], "
                   f"or leave it out so the server's unbound recurses itself (what DNSBLs answer)")
        return ()
    return tuple(listed)


def norwegian_regions() -> dict[str, str]:
    """Every region a registered backend knows on Norwegian soil."""
    return {r: where for b in backends.hosts() for r, where in b.regions.items()}


def backend_settings(c: Checker, raw: Mapping[str, Any], v: dict, backend: backends.HostBackend,
                     stack: str, secret_keys: Collection[str], used: set[str]):
    """(host settings, DNS backend name, DNS settings, the key names now used)."""
    used = used | {k.name for k in backend.keys}
    values = schema.read_keys(c, raw, backend.keys, stack, secret_keys, into=v)
    dns_name = dns = None
    if backend.own_dns:
        values = schema.read_keys(c, raw, OWN_DNS_KEYS, stack, secret_keys, into=values)
        used |= {k.name for k in OWN_DNS_KEYS}
        dns_name = values["dns_backend"]
        if not dns_name:  # unknown: its keys cannot be judged
            used |= {k.name for b in backends.dns_backends() for k in b.keys}
        else:
            dns_backend = backends.dns(dns_name)
            used |= {k.name for k in dns_backend.keys}
            for other in backends.dns_backends():
                present = [k.name for k in other.keys if other is not dns_backend
                           and k.name not in used and raw.get(k.name) is not None]
                if present:
                    c.err(", ".join(present), f"not used with dns_backend: {dns_name}; remove them")
                    used |= set(present)
            values = schema.read_keys(c, raw, dns_backend.keys, stack, secret_keys, into=values)
            dns = dns_backend.settings(c, values) if dns_backend.settings else None
    host = backend.settings(c, values) if backend.settings else None
    return host, dns_name, dns, used


def unused_keys(c: Checker, raw: Mapping[str, Any], used: set[str], backend: str | None) -> None:
    """A key of another backend is a mistake worth a line, not silence."""
    if backend is None:
        return
    owners: dict[tuple[str, ...], list[str]] = {}
    own_dns = tuple(b.name for b in backends.hosts() if b.own_dns)
    dns_keys = [k.name for k in OWN_DNS_KEYS] + [k.name for b in backends.dns_backends() for k in b.keys]
    for name in raw:
        if name in used or raw.get(name) is None:
            continue
        who = tuple(b.name for b in backends.hosts() if name in {k.name for k in b.keys})
        if not who and name in dns_keys:
            who = own_dns
        if who:
            owners.setdefault(who, []).append(name)
    for who, names in owners.items():
        if set(who) == set(own_dns) and len(who) > 1:
            c.err(", ".join(names), f"only used with backend: {', '.join(who)} (backend is "
                                    f"{backend!r}; {backend} runs its own DNS server); remove them")
        else:
            c.err(", ".join(names), f"only used with backend: {', '.join(who)} (backend is "
                                    f"{backend!r}); remove them or set backend: {who[0]}")


def cross_checks(c: Checker, v: dict) -> None:
    region, residency = v["region"], v["residency"]
    known = norwegian_regions()
    if isinstance(region, str) and residency == "NO" and region not in known:
        c.err("region", f"{region!r} is outside Norway and residency is \"NO\"; use one of "
                        + ", ".join(f"{k} ({w})" for k, w in known.items())
                        + ", or set residency: \"none\"")
    _name_lengths(c, v)


def _name_lengths(c: Checker, v: dict) -> None:
    """The host's name fits in DNS (253 characters); each domain's DKIM and DMARC names are
    checked with the domains (config_domains.py)."""
    domain = v["domain"]
    if not isinstance(domain, str):
        return
    for key, relative in (("hostname", v.get("hostname")),):
        if isinstance(relative, str) and len(relative) + 1 + len(domain) > 253:
            c.err(key, f"{relative}.{domain[:20]}... would be {len(relative) + 1 + len(domain)} "
                       f"characters, over DNS's 253; use a shorter {key}")
            return


def backup_checks(c: Checker, v: dict, backend: backends.HostBackend, secret_keys: Collection[str]) -> None:
    """Backups off the host, on every backend: its own repository, or one the user names."""
    repo = v["backup_repository"]
    if repo is None and not backend.own_backups:
        c.err("backup_repository", f"missing; backend {backend.name} makes no backup repository of "
                                   f"its own: set a restic repository off the host (e.g. "
                                   f"sftp:backup@192.0.2.20:/srv/restic/mail), or none to run without backups")
    if repo in (None, "none"):
        return
    if "backup_password" not in secret_keys:
        c.err("backup_password", "missing; a repository needs a password you keep (without it no "
                                 "one can read the backups): pulumi config set --secret backup_password ...")
    known = norwegian_regions()
    region = v["backup_region"]
    if v["residency"] == "NO" and region not in known:
        c.err("backup_region", f"{region!r} is not a Norwegian region and residency is \"NO\": say where "
                               f"the repository stands, one of {', '.join(known)}")


# Where a spec path comes from in the stack config (the agent names spec paths).
_SPEC_TO_CONFIG = (("postscreen.dnsbl_sites", "dnsbl_sites"), ("postscreen.dnsbl_threshold", "dnsbl_threshold"),
                   ("dkim.selector", "dkim_selector"),
                   ("rate_limits.outbound_per_user_per_hour", "outbound_per_user_per_hour"),
                   ("ssh.allow_from", "ssh_allow_from"))


def agent_refuses(cfg) -> list[str]:
    """What the agent would refuse in the spec built from `cfg`, as config lines (addresses
    are placeholders: the host's are not known before its resources exist)."""
    from agent.spec import SpecError
    from components import agent_spec
    try:
        agent_spec.public_spec(cfg, "192.0.2.1", "2001:db8::1", ["192.0.2.53@53"])
    except SpecError as err:
        lines = []
        for line in err.errors:
            for spec_path, key in _SPEC_TO_CONFIG:
                line = line.replace(spec_path, key, 1) if line.startswith(spec_path) else line
            lines.append(f"{line} (the agent refuses this; fix the key it names)")
        return lines
    return []
