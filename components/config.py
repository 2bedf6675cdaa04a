"""The stack's configuration, typed and validated before any resource is declared.

Every problem is reported at once, one line each, naming the key, the value and the fix, so a
bad `Pulumi.<stack>.yaml` fails `pulumi preview` before anything is touched.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Collection, Mapping

from components.config_backends import (  # noqa: F401 (BACKEND_KEYS, SECRET_KEYS re-exported)
    AZURE_KEYS, BACKEND_KEYS, CLOUDFLARE_KEYS, OPENSTACK_KEYS, RFC2136_KEYS, SECRET_KEYS, SSH_KEYS,
    AzureHost, CloudflareDns, DnsUpdate, OpenStackHost, SshHost, _azure_host, _dns,
    _openstack_host, _ssh_host)

# Regions a host may stand in when `residency` is "NO" (Norwegian soil), per backend.
NORWEGIAN_REGIONS = {
    "no-svg1": "UpCloud, Stavanger",
    "norwayeast": "Azure, Oslo",
    "norwaywest": "Azure, Stavanger",
    "osl1": "OpenStack region in Oslo",
    "oslo": "an existing server in Oslo",
}
BACKENDS = ("local", "ssh", "openstack", "azure")
CLOUD_BACKENDS = ("ssh", "openstack", "azure")  # bring their own DNS and resolver
DMARC_POLICIES = ("none", "quarantine", "reject")

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})+$")
_LOCAL_PART_RE = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,63}$")


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



@dataclass(frozen=True)
class StackConfig:
    backend: str
    region: str
    residency: str
    domain: str
    hostname: str
    users: tuple[User, ...]
    aliases: Mapping[str, str]
    dkim_selector: str
    dmarc_policy: str
    dmarc_rua: str | None
    dnsbl_sites: tuple[DnsblSite, ...]
    dnsbl_threshold: int
    verify: bool
    allow_listed_ip: bool = False
    outbound_per_user_per_hour: int = 200
    is_local: bool = field(default=False)
    ssh: SshHost | None = None
    dns: DnsUpdate | CloudflareDns | None = None
    openstack: OpenStackHost | None = None
    azure: AzureHost | None = None

    @property
    def fqdn(self) -> str:
        return f"{self.hostname}.{self.domain}"


def _domain_error(key: str, value: Any) -> str | None:
    if not isinstance(value, str) or not _DOMAIN_RE.match(value):
        return (f"{key}: {value!r} is not a domain name; use lower-case labels joined by dots, "
                f"e.g. 'example.no' (or 'example.test' on the local stack)")
    return None




def load(raw: Mapping[str, Any], stack: str, secret_keys: Collection[str] = ()) -> StackConfig:
    """Validate the raw `bulletproof-mail:*` config of `stack` (keys without the namespace).

    `secret_keys`: which keys are Pulumi secrets (SECRET_KEYS must be, or they are refused).
    """
    errors: list[str] = []
    get = raw.get

    backend = get("backend", "local")
    if backend not in BACKENDS:
        errors.append(f"backend: {backend!r} is not a known backend; use one of {', '.join(BACKENDS)}")

    residency = get("residency", "NO")
    if isinstance(residency, bool):
        # Unquoted NO in YAML 1.1 is the boolean false.
        errors.append(f"residency: got the boolean {residency!r}; YAML reads an unquoted NO as false, "
                      f"write it quoted: residency: \"NO\" (or \"none\" to allow any region)")
    elif residency not in ("NO", "none"):
        errors.append(f"residency: {residency!r} is not supported; use \"NO\" (Norway only) or \"none\"")

    region = get("region")
    if not isinstance(region, str) or not region:
        errors.append("region: missing; set the region the host stands in, e.g. 'no-svg1'")
    elif residency == "NO" and region not in NORWEGIAN_REGIONS:
        known = ", ".join(f"{k} ({v})" for k, v in NORWEGIAN_REGIONS.items())
        errors.append(f"region: {region!r} is outside Norway and residency is \"NO\"; "
                      f"use one of {known}, or set residency: \"none\"")

    domain = get("domain")
    if (e := _domain_error("domain", domain)):
        errors.append(e)
        domain = ""
    hostname = get("hostname", "mail")
    if not isinstance(hostname, str) or not re.fullmatch(_LABEL, hostname):
        errors.append(f"hostname: {hostname!r} is not a host label; use e.g. 'mail' (the FQDN is hostname.domain)")

    users: list[User] = []
    raw_users = get("users", [])
    if not isinstance(raw_users, list) or not raw_users:
        errors.append("users: needs at least one mailbox, e.g. users: [{address: alice@" + (domain or "example.no") + "}]")
        raw_users = []
    for i, u in enumerate(raw_users):
        key = f"users[{i}]"
        if isinstance(u, str):
            u = {"address": u}
        if not isinstance(u, dict):
            errors.append(f"{key}: {u!r} is not a mapping; write {{address: name@{domain}}}")
            continue
        address = u.get("address", "")
        local, _, dom = str(address).partition("@")
        if domain and (not _LOCAL_PART_RE.match(local) or dom != domain):
            errors.append(f"{key}.address: {address!r} is not an address in domain {domain!r}; "
                          f"use name@{domain}")
            continue
        quota = u.get("quota_mb", 1024)
        if not isinstance(quota, int) or isinstance(quota, bool) or quota < 1:
            errors.append(f"{key}.quota_mb: {quota!r} must be a positive whole number of MiB, e.g. 1024")
            continue
        users.append(User(address=address, quota_mb=quota))
    if len({u.address for u in users}) != len(users):
        errors.append("users: the same address is listed twice; list each mailbox once")

    aliases = get("aliases", {}) or {}
    if not isinstance(aliases, dict):
        errors.append(f"aliases: {aliases!r} must map an address to a mailbox, e.g. {{info@{domain}: alice@{domain}}}")
        aliases = {}

    selector = get("dkim_selector", "s1")
    if not isinstance(selector, str) or not re.fullmatch(_LABEL, selector):
        errors.append(f"dkim_selector: {selector!r} is not a DNS label; use e.g. 's2026'")

    dmarc = get("dmarc_policy", "quarantine")
    if dmarc not in DMARC_POLICIES:
        errors.append(f"dmarc_policy: {dmarc!r} is not a DMARC policy; use one of {', '.join(DMARC_POLICIES)}")
    rua = get("dmarc_rua")
    if rua is not None and not (isinstance(rua, str) and "@" in rua):
        errors.append(f"dmarc_rua: {rua!r} is not an address for aggregate reports; e.g. dmarc@{domain}")

    sites: list[DnsblSite] = []
    for i, s in enumerate(get("dnsbl_sites", []) or []):
        if isinstance(s, str):
            s = {"site": s}
        site, weight = (s or {}).get("site"), (s or {}).get("weight", 1)
        if _domain_error("", site) or not isinstance(weight, int) or isinstance(weight, bool):
            errors.append(f"dnsbl_sites[{i}]: {s!r} needs a zone and a whole-number weight, e.g. {{site: dnsbl.test, weight: 3}}")
            continue
        sites.append(DnsblSite(site=site, weight=weight))
    threshold = get("dnsbl_threshold", 3)
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
        errors.append(f"dnsbl_threshold: {threshold!r} must be a positive whole number, e.g. 3")

    verify = get("verify", True)
    if not isinstance(verify, bool):
        errors.append(f"verify: {verify!r} must be true or false")

    allow_listed = get("allow_listed_ip", False)
    if not isinstance(allow_listed, bool):
        errors.append(f"allow_listed_ip: {allow_listed!r} must be true or false")

    outbound = get("outbound_per_user_per_hour", 200)
    if not isinstance(outbound, int) or isinstance(outbound, bool) or outbound < 1:
        errors.append(f"outbound_per_user_per_hour: {outbound!r} must be a positive whole number of "
                      f"messages per hour per authenticated user, e.g. 200")

    ssh = dns = openstack = azure = None
    if backend == "ssh":
        ssh = _ssh_host(get, secret_keys, errors)
    elif backend == "openstack":
        openstack = _openstack_host(get, errors)
    elif backend == "azure":
        azure = _azure_host(get, region, stack, errors)
    for keys, owner in ((SSH_KEYS, "ssh"), (OPENSTACK_KEYS, "openstack"), (AZURE_KEYS, "azure")):
        present = [k for k in keys if get(k) is not None]
        if present and backend != owner:
            errors.append(f"{', '.join(present)}: only used with backend: {owner} (backend is {backend!r}); "
                          f"remove them or set backend: {owner}")
    if backend in CLOUD_BACKENDS:
        dns = _dns(get, backend, domain, secret_keys, errors)
    else:
        present = [k for k in (*RFC2136_KEYS, "resolver", "dns_backend", *CLOUDFLARE_KEYS) if get(k) is not None]
        if present:
            errors.append(f"{', '.join(present)}: only used with backend: {', '.join(CLOUD_BACKENDS)} (backend is "
                          f"{backend!r}; local runs its own DNS server); remove them")

    if errors:
        raise ConfigError(errors)
    return StackConfig(
        backend=backend, region=region, residency=residency, domain=domain, hostname=hostname,
        users=tuple(users), aliases=dict(aliases), dkim_selector=selector, dmarc_policy=dmarc,
        dmarc_rua=rua, dnsbl_sites=tuple(sites), dnsbl_threshold=threshold, verify=verify,
        allow_listed_ip=allow_listed, outbound_per_user_per_hour=outbound,
        is_local=(stack == "local" or backend == "local"),
        ssh=ssh, dns=dns, openstack=openstack, azure=azure,
    )
