"""Config of the backends other than `local`: an existing server over SSH, OpenStack, Azure,
and where their DNS records go (RFC 2136 or Cloudflare). Same rules as components/config.py: every
problem one line naming the key, the value and the fix; secrets only as Pulumi secrets.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Collection

DNS_BACKENDS = ("rfc2136", "cloudflare")
RDNS_MODES = ("enforce", "warn")
# Keys that hold secrets: accepted only as Pulumi secrets (`pulumi config set --secret`).
SECRET_KEYS = ("ssh_private_key", "dns_tsig_secret")
TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1", "hmac-md5")
SSH_KEYS = ("ssh_host", "ssh_user", "ssh_host_ipv6", "ssh_private_key", "rdns")
RFC2136_KEYS = ("dns_server", "dns_tsig_name", "dns_tsig_algorithm", "dns_tsig_secret", "dns_zone")
CLOUDFLARE_KEYS = ("cloudflare_zone_id",)
OPENSTACK_KEYS = ("openstack_flavor", "openstack_image", "openstack_network", "openstack_floating_ip_pool",
                  "openstack_ipv6")
AZURE_KEYS = ("azure_vm_size", "azure_image", "azure_resource_group", "azure_ipv6")
# Every key a backend other than local reads (the program passes these on to load()).
BACKEND_KEYS = (*SSH_KEYS, *RFC2136_KEYS, "resolver", "dns_backend", *CLOUDFLARE_KEYS, *OPENSTACK_KEYS,
                *AZURE_KEYS)


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
class AzureHost:
    """backend azure: credentials come from the provider's own ARM_* variables or `az login`."""
    vm_size: str
    image: tuple[str, str, str, str]   # publisher, offer, sku, version (an image URN)
    resource_group: str
    ipv6: bool = True                  # dual-stack network, public IPv6: AAAA + PTR


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


def _azure_host(get, region: Any, stack: str, errors: list[str]) -> AzureHost:
    """The keys of backend azure: VM size, Debian 12 image URN, resource group, IPv6."""
    if isinstance(region, str) and not re.fullmatch(r"[a-z][a-z0-9]{2,30}", region):
        errors.append(f"region: {region!r} is not an Azure location name; use its short name, "
                      f"e.g. norwayeast (az account list-locations -o table)")
    size = get("azure_vm_size", "Standard_B2s")
    if not isinstance(size, str) or not re.fullmatch(r"[A-Za-z0-9_]+", size):
        errors.append(f"azure_vm_size: {size!r} is not a VM size; e.g. azure_vm_size: Standard_B2s "
                      f"(az vm list-sizes -l norwayeast)")
    image = get("azure_image", "Debian:debian-12:12-gen2:latest")
    parts = tuple(str(image).split(":"))
    if not isinstance(image, str) or len(parts) != 4 or not all(parts) or "debian-12" not in parts[1]:
        errors.append(f"azure_image: {image!r} is not a Debian 12 image URN; use publisher:offer:sku:version, "
                      f"e.g. Debian:debian-12:12-gen2:latest (the agent runs on Debian 12 only)")
        parts = ("", "", "", "")
    group = get("azure_resource_group", f"bulletproof-mail-{stack}")
    if not isinstance(group, str) or not re.fullmatch(r"[-\w.()]{1,89}[-\w()]", group):
        errors.append(f"azure_resource_group: {group!r} is not a resource group name; use letters, "
                      f"digits, '-', '_', '.', '(' or ')', e.g. bulletproof-mail-prod")
    ipv6 = get("azure_ipv6", True)
    if not isinstance(ipv6, bool):
        errors.append(f"azure_ipv6: {ipv6!r} must be true (dual-stack, with a public IPv6) or false")
    return AzureHost(vm_size=str(size), image=parts, resource_group=str(group), ipv6=ipv6)  # type: ignore[arg-type]


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
    from components.config import _domain_error  # the one domain rule; imported late (cycle)
    if domain and (_domain_error("dns_zone", zone) or not (domain == zone or domain.endswith("." + str(zone)))):
        errors.append(f"dns_zone: {zone!r} does not contain the domain {domain!r}; set the zone the "
                      f"records go to: the domain itself or a parent of it")
    return DnsUpdate(server=str(server), tsig_name=str(tsig_name), tsig_algorithm=str(algorithm),
                     zone=str(zone or domain), resolver=str(resolver))
