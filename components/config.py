"""The stack's configuration, typed and validated before any resource is declared.

Every problem is reported at once, one line each, naming the key, the value and the fix, so a
bad `Pulumi.<stack>.yaml` fails `pulumi preview` before anything is touched.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Collection, Mapping

# Regions a host may stand in when `residency` is "NO" (Norwegian soil), per backend.
NORWEGIAN_REGIONS = {
    "no-svg1": "UpCloud, Stavanger",
    "norwayeast": "Azure, Oslo",
    "norwaywest": "Azure, Stavanger",
    "osl1": "OpenStack region in Oslo",
    "oslo": "an existing server in Oslo",
}
BACKENDS = ("local", "ssh", "openstack")
DNS_BACKENDS = ("rfc2136", "cloudflare")
RDNS_MODES = ("enforce", "warn")
# Keys that hold secrets: accepted only as Pulumi secrets (`pulumi config set --secret`).
SECRET_KEYS = ("ssh_private_key", "dns_tsig_secret")
TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1", "hmac-md5")
DMARC_POLICIES = ("none", "quarantine", "reject")
SSH_KEYS = ("ssh_host", "ssh_user", "ssh_host_ipv6", "ssh_private_key", "rdns")
RFC2136_KEYS = ("dns_server", "dns_tsig_name", "dns_tsig_algorithm", "dns_tsig_secret", "dns_zone")
CLOUDFLARE_KEYS = ("cloudflare_zone_id",)
OPENSTACK_KEYS = ("openstack_flavor", "openstack_image", "openstack_network", "openstack_floating_ip_pool",
                  "openstack_ipv6")
SSH_ONLY_KEYS = (*SSH_KEYS, *RFC2136_KEYS, "resolver")  # the keys of backend ssh (rfc2136 DNS)
# Every key a backend other than local reads (the program passes these on to load()).
BACKEND_KEYS = (*SSH_KEYS, *RFC2136_KEYS, "resolver", "dns_backend", *CLOUDFLARE_KEYS, *OPENSTACK_KEYS)

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
class SshHost:
    """backend: ssh: an existing server; its private key stays a Pulumi secret (not kept here)."""
    host: str           # its public IPv4, where the stack reaches sshd and the mail DNS points
    user: str = "root"
    ipv6: str | None = None
    rdns: str = "enforce"


@dataclass(frozen=True)
class DnsUpdate:
    """The RFC 2136 server the records go to; its TSIG secret stays a Pulumi secret."""
    server: str         # "IP:port"
    tsig_name: str
    tsig_algorithm: str
    zone: str           # the zone the mail records live in (the domain or a parent of it)
    resolver: str       # "IP:port": what the host's resolver forwards to, and the stack's checks ask


@dataclass(frozen=True)
class CloudflareDns:
    """dns_backend cloudflare: the records go to a Cloudflare zone (token: CLOUDFLARE_API_TOKEN)."""
    zone_id: str
    zone: str           # the domain: records are written by their full names
    resolver: str       # "IP:port", as in DnsUpdate


@dataclass(frozen=True)
class OpenStackHost:
    """backend openstack: credentials come from the provider's own OS_* variables / clouds.yaml."""
    flavor: str
    image: str
    network: str                       # ID of the network the host's port is on
    floating_ip_pool: str | None = None  # external network of a floating IPv4 (else the port's own)
    ipv6: bool = True                  # the network has an IPv6 subnet: AAAA + Postfix's IPv6


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
    is_local: bool = field(default=False)
    ssh: SshHost | None = None
    dns: DnsUpdate | CloudflareDns | None = None
    openstack: OpenStackHost | None = None

    @property
    def fqdn(self) -> str:
        return f"{self.hostname}.{self.domain}"


def _domain_error(key: str, value: Any) -> str | None:
    if not isinstance(value, str) or not _DOMAIN_RE.match(value):
        return (f"{key}: {value!r} is not a domain name; use lower-case labels joined by dots, "
                f"e.g. 'example.no' (or 'example.test' on the local stack)")
    return None


def _ip_port(value: Any) -> bool:
    host, _, port = str(value).rpartition(":")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return port.isdigit() and 0 < int(port) < 65536


def _secret(get, key: str, example: str, backend: str, secret_keys: Collection[str], errors: list[str]):
    value = get(key)
    if not value:
        errors.append(f"{key}: missing; backend {backend} needs it as a secret: {example}")
    elif key not in secret_keys:
        # Never echo the value: it is a secret in the wrong place.
        errors.append(f"{key}: is stored in plain text in the stack config; remove it and set it "
                      f"as a secret: {example}")
    return value


def _ssh_host(get, secret_keys: Collection[str], errors: list[str]) -> SshHost:
    """The keys of backend ssh: the existing server and the key to reach it."""
    host = get("ssh_host")
    try:
        ipaddress.IPv4Address(str(host))
    except ValueError:
        errors.append(f"ssh_host: {host!r} is not an IPv4 address; set the server's public IPv4, "
                      f"e.g. ssh_host: 192.0.2.10 (the mail A record and the PTR check use it)")
    user = get("ssh_user", "root")
    if not isinstance(user, str) or not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
        errors.append(f"ssh_user: {user!r} is not a user name; e.g. ssh_user: root (it needs root or sudo-less root rights)")
    ipv6 = get("ssh_host_ipv6")
    if ipv6 is not None:
        try:
            ipaddress.IPv6Address(str(ipv6))
        except ValueError:
            errors.append(f"ssh_host_ipv6: {ipv6!r} is not an IPv6 address; set the server's public IPv6 or leave it out")
    rdns = get("rdns", "enforce")
    if rdns not in RDNS_MODES:
        errors.append(f"rdns: {rdns!r} is not a mode; use enforce (a wrong PTR stops the deploy) or warn")
    example = "pulumi config set --secret ssh_private_key < ~/.ssh/id_ed25519"
    key = _secret(get, "ssh_private_key", example, "ssh", secret_keys, errors)
    if key and "ssh_private_key" in secret_keys and "PRIVATE KEY-----" not in str(key):
        errors.append(f"ssh_private_key: (secret) is not a PEM/OpenSSH private key; set the whole key file: {example}")
    return SshHost(host=str(host), user=user, ipv6=ipv6, rdns=rdns)


def _openstack_host(get, errors: list[str]) -> OpenStackHost:
    """The keys of backend openstack: flavor, image, network (IDs and names as the cloud has them)."""
    values = {}
    for key, example in (("openstack_flavor", "openstack_flavor: b.2c4gb (openstack flavor list)"),
                         ("openstack_image", "openstack_image: 'Debian 12' (openstack image list; Debian 12 only)"),
                         ("openstack_network", "openstack_network: 0f6e...-uuid (openstack network list; "
                                               "the network the host's port is on)")):
        value = values[key] = get(key)
        if not isinstance(value, str) or not value.strip():
            errors.append(f"{key}: {value!r} is missing; set it, e.g. {example}")
    network = values["openstack_network"]
    if isinstance(network, str) and network.strip() and not re.fullmatch(r"[0-9a-f]{8}(-?[0-9a-f]{4}){3}-?[0-9a-f]{12}", network):
        errors.append(f"openstack_network: {network!r} is not a network ID; set the UUID that "
                      f"`openstack network list` shows (a port needs the ID, not the name)")
    pool = get("openstack_floating_ip_pool")
    if pool is not None and (not isinstance(pool, str) or not pool.strip()):
        errors.append(f"openstack_floating_ip_pool: {pool!r} is not a network name; set the external "
                      f"network floating IPs come from (e.g. public) or leave it out")
    ipv6 = get("openstack_ipv6", True)
    if not isinstance(ipv6, bool):
        errors.append(f"openstack_ipv6: {ipv6!r} must be true (the network has an IPv6 subnet) or false")
    return OpenStackHost(flavor=str(values["openstack_flavor"]), image=str(values["openstack_image"]),
                         network=str(network), floating_ip_pool=pool, ipv6=ipv6)


def _dns(get, backend: str, domain: str, secret_keys: Collection[str], errors: list[str]):
    """Where the records go: an RFC 2136 server (TSIG) or a Cloudflare zone; and the resolver."""
    resolver = get("resolver")
    if not _ip_port(resolver):
        errors.append(f"resolver: {resolver!r} is not IP:port; set the DNS resolver the server uses "
                      f"(its unbound forwards to it; the stack asks it for the PTR and DNSBLs), "
                      f"e.g. resolver: 192.0.2.53:53")
    dns_backend = get("dns_backend", "rfc2136")
    if dns_backend not in DNS_BACKENDS:
        errors.append(f"dns_backend: {dns_backend!r} is not a DNS backend; use one of {', '.join(DNS_BACKENDS)}")
        return None
    other = CLOUDFLARE_KEYS if dns_backend == "rfc2136" else RFC2136_KEYS
    present = [k for k in other if get(k) is not None]
    if present:
        errors.append(f"{', '.join(present)}: not used with dns_backend: {dns_backend}; remove them")
    if dns_backend == "cloudflare":
        zone_id = get("cloudflare_zone_id")
        if not isinstance(zone_id, str) or not re.fullmatch(r"[0-9a-f]{32}", zone_id):
            errors.append(f"cloudflare_zone_id: {zone_id!r} is not a Cloudflare zone ID; copy the 32 hex "
                          f"digits of 'Zone ID' from the zone's overview page in the Cloudflare dashboard")
        return CloudflareDns(zone_id=str(zone_id), zone=domain, resolver=str(resolver))

    _secret(get, "dns_tsig_secret", "pulumi config set --secret dns_tsig_secret 'BASE64...'", backend,
            secret_keys, errors)
    server = get("dns_server")
    if not _ip_port(server):
        errors.append(f"dns_server: {server!r} is not IP:port; set the RFC 2136 server that takes "
                      f"updates for the zone, e.g. dns_server: 192.0.2.53:53")
    tsig_name = get("dns_tsig_name")
    if not isinstance(tsig_name, str) or not tsig_name:
        errors.append(f"dns_tsig_name: {tsig_name!r} is missing; set the name of the TSIG key the DNS "
                      f"server allows updates with, e.g. dns_tsig_name: mail-updates")
    algorithm = get("dns_tsig_algorithm", "hmac-sha256")
    if algorithm not in TSIG_ALGORITHMS:
        errors.append(f"dns_tsig_algorithm: {algorithm!r} is not a TSIG algorithm; use one of {', '.join(TSIG_ALGORITHMS)}")
    zone = get("dns_zone", domain)
    if domain and (_domain_error("dns_zone", zone) or not (domain == zone or domain.endswith("." + str(zone)))):
        errors.append(f"dns_zone: {zone!r} does not contain the domain {domain!r}; set the zone the "
                      f"records go to: the domain itself or a parent of it")
    return DnsUpdate(server=str(server), tsig_name=str(tsig_name), tsig_algorithm=str(algorithm),
                     zone=str(zone or domain), resolver=str(resolver))


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

    ssh = dns = openstack = None
    if backend == "ssh":
        ssh = _ssh_host(get, secret_keys, errors)
    elif backend == "openstack":
        openstack = _openstack_host(get, errors)
    for keys, owner in ((SSH_KEYS, "ssh"), (OPENSTACK_KEYS, "openstack")):
        present = [k for k in keys if get(k) is not None]
        if present and backend != owner:
            errors.append(f"{', '.join(present)}: only used with backend: {owner} (backend is {backend!r}); "
                          f"remove them or set backend: {owner}")
    if backend in ("ssh", "openstack"):
        dns = _dns(get, backend, domain, secret_keys, errors)
    else:
        present = [k for k in (*RFC2136_KEYS, "resolver", "dns_backend", *CLOUDFLARE_KEYS) if get(k) is not None]
        if present:
            errors.append(f"{', '.join(present)}: only used with backend: ssh or openstack (backend is "
                          f"{backend!r}; local runs its own DNS server); remove them")

    if errors:
        raise ConfigError(errors)
    return StackConfig(
        backend=backend, region=region, residency=residency, domain=domain, hostname=hostname,
        users=tuple(users), aliases=dict(aliases), dkim_selector=selector, dmarc_policy=dmarc,
        dmarc_rua=rua, dnsbl_sites=tuple(sites), dnsbl_threshold=threshold, verify=verify,
        allow_listed_ip=allow_listed,
        is_local=(stack == "local" or backend == "local"),
        ssh=ssh, dns=dns, openstack=openstack,
    )
