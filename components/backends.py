"""The backend registry: one line per backend, and what a backend must provide.

Config loading, `__main__.py`, the policy pack and the operator commands find the backends
here. A backend is one module (components/hosts/<name>.py or components/dns/<name>.py) that
defines `BACKEND`; it is imported only when something asks for it, and it imports its cloud SDK
only when its component is built (the Azure SDK alone takes seconds to import).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

HOSTS = {
    "local": "components.hosts.local",
    "ssh": "components.hosts.ssh",
    "openstack": "components.hosts.openstack",
    "azure": "components.hosts.azure",
}
DNS = {
    "rfc2136": "components.dns.rfc2136",
    "cloudflare": "components.dns.cloudflare",
}

# (first port, last port, description) of an inbound rule a resource declares
PortRange = tuple[int, int, str]


@dataclass(frozen=True)
class HostBackend:
    """Where the mail host runs."""
    name: str
    component: type                      # ComponentResource(name, HostArgs, opts)
    keys: tuple = ()                     # its config keys (components.schema.Key)
    # (Checker, the values read) -> its typed settings; cross-key problems go to the Checker
    settings: Callable[[Any, Mapping[str, Any]], Any] | None = None
    regions: Mapping[str, str] = field(default_factory=dict)   # the Norwegian regions it knows
    own_dns: bool = False                # records go to a DNS backend of the user's (dns_backend)
    # The host makes its own backup repository (local: a directory of this machine; Azure: a
    # blob container); else the user's restic URL (backup_repository) is required.
    own_backups: bool = False
    # Before any resource is declared: problems that stop preview, one line each.
    precheck: Callable[[Any], list[str]] | None = None
    # Policy-pack facts about the resources it declares: region, inbound port ranges.
    resource_region: Callable[[str, Mapping], str | None] = lambda rtype, props: None
    inbound_ports: Callable[[str, Mapping], Iterable[PortRange]] = lambda rtype, props: ()
    # The source networks (CIDR, "*" for anywhere) of its inbound rules that reach the SSH port.
    ssh_sources: Callable[[str, Mapping], Iterable[str]] = lambda rtype, props: ()
    # {resource type: "host" | "volume"}: what `make up` never replaces or deletes unasked
    critical: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DnsBackend:
    """Where the mail records are published (for backends with own_dns)."""
    name: str
    component: type                      # ComponentResource(name, DnsArgs, opts)
    keys: tuple = ()
    settings: Callable[[Any, Mapping[str, Any]], Any] | None = None
    # (its settings, the secret config values) -> the component's DnsArgs.target
    target: Callable[[Any, Mapping[str, Any]], Any] = lambda settings, secrets: settings
    # The operator commands' view of the published records, from the stack outputs:
    # a callable (name, rtype) -> [values] like agent.checks_dns.Lookup.
    lookup: Callable[[Mapping[str, Any]], Callable[[str, str], list[str]]] | None = None
    # Policy-pack facts: the TXT values of a record resource it declares (DMARC, DKIM checks).
    txt_values: Callable[[str, Mapping], list[str] | None] = lambda rtype, props: None


def host(name: str) -> HostBackend:
    return importlib.import_module(HOSTS[name]).BACKEND


def dns(name: str) -> DnsBackend:
    return importlib.import_module(DNS[name]).BACKEND


def hosts() -> list[HostBackend]:
    return [host(name) for name in HOSTS]


def dns_backends() -> list[DnsBackend]:
    return [dns(name) for name in DNS]
