"""The rules of the policy pack, as plain functions over (type, name, props, stack, config).

Kept apart from the pulumi_policy glue, so unit tests call them with a dict. What a resource
says about its region and its open ports comes from the backend that declares it (the registry,
components/backends.py); the ports allowed from agent/contract.py.
"""
from __future__ import annotations

import base64
import json
from typing import Any, Callable, Iterable, Mapping

from pulumi_policy import ReportViolation, ResourceValidationArgs, ResourceValidationPolicy
from pulumi_policy.proxy import UnknownValueError

from agent import contract
from components import backends
from components.config_rules import norwegian_regions

PROJECT_NS = "bulletproof-mail"
MIN_DKIM_BITS = 2048

# The stack the engine configured the pack for: name and config (ConfigureStack). A pack run
# through a language host (RunPlugin) gets no PULUMI_CONFIG in its environment: the config
# arrives only in ConfigureStack, of which pulumi_policy 1.21 keeps just the tags. So the request
# is captured here (tests/e2e/test_policy_pack.py proves the config is read); the URN names the
# stack too.
_STACK: dict[str, Any] = {"name": None, "config": {}}


def _capture_stack_config() -> None:
    from pulumi_policy import policy as _policy
    servicer = getattr(_policy, "_PolicyAnalyzerServicer", None)
    if servicer is None or getattr(servicer.ConfigureStack, "_bpm", False):
        return
    original = servicer.ConfigureStack

    def configure_stack(self, request, context):
        _STACK["name"] = request.stack or None
        _STACK["config"] = dict(request.config)
        return original(self, request, context)

    configure_stack._bpm = True  # type: ignore[attr-defined]
    servicer.ConfigureStack = configure_stack


_capture_stack_config()


def stack_name(urn: str) -> str:
    """urn:pulumi:STACK::project::type::name -> STACK"""
    return _STACK["name"] or urn.split("::", 1)[0].rsplit(":", 1)[-1]


def stack_config(key: str, default: Any = None) -> Any:
    value = _STACK["config"].get(f"{PROJECT_NS}:{key}")
    if value is None:
        return default
    try:
        return json.loads(value)
    except ValueError:
        return value


def _known(props: Mapping, key: str) -> Any:
    """props[key], or None while it is unknown (preview of a new resource)."""
    try:
        return props.get(key)
    except UnknownValueError:
        return None


# --- residency ------------------------------------------------------------------------------

class _Known(Mapping):
    """props, with a value not known yet (preview of a new resource) read as absent."""

    def __init__(self, props: Mapping):
        self._props = props

    def __getitem__(self, key):
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key, default=None):
        value = _wrap(_known(self._props, key))
        return default if value is None else value

    def __iter__(self):
        return iter(self._props)

    def __len__(self):
        return len(self._props)


def _wrap(value):
    if isinstance(value, Mapping):
        return _Known(value)
    if isinstance(value, (list, tuple)):
        return [_wrap(v) for v in value]
    return value


def host_region(rtype: str, props: Mapping) -> str | None:
    """Where a host or IP resource stands, as the backend that declares it says."""
    return next((r for b in backends.hosts() if (r := b.resource_region(rtype, _Known(props)))), None)


def residency_violation(rtype: str, name: str, props: Mapping, residency: str) -> str | None:
    region = host_region(rtype, props)
    known = norwegian_regions()
    if residency != "NO" or not region or region in known:
        return None
    return (f"{name}: region {region!r} is outside Norway and residency is \"NO\"; use one of "
            f"{', '.join(sorted(known))}, or set {PROJECT_NS}:residency: \"none\"")


# --- firewall -------------------------------------------------------------------------------

def allowed_ports(https: bool = False, ssh_port: int = contract.SSH_PORT) -> set[int]:
    return set(contract.public_tcp_ports(ssh_port, https))


def _port_ranges(rtype: str, props: Mapping) -> Iterable[tuple[int, int, str]]:
    """(first, last, description) of every inbound ACCEPT rule a resource declares."""
    for b in backends.hosts():
        yield from b.inbound_ports(rtype, _Known(props))


def firewall_violation(rtype: str, name: str, props: Mapping, https: bool = False) -> str | None:
    allowed = allowed_ports(https)
    extra = [desc for first, last, desc in _port_ranges(rtype, props)
             if not set(range(first, last + 1)) <= allowed]
    if not extra:
        return None
    return (f"{name}: opens {', '.join(extra)} beyond the mail and SSH ports "
            f"({', '.join(map(str, sorted(allowed)))}); remove the rule")


def _network(source: str) -> list:
    """A rule's source as networks: "*" (and Azure's "Internet", "Any") is anywhere."""
    import ipaddress
    if source in ("*", "Internet", "Any", "0.0.0.0/0", "::/0"):
        return [ipaddress.ip_network(n) for n in contract.SSH_ANYWHERE]
    try:
        return [ipaddress.ip_network(source, strict=False)]
    except ValueError:
        return []


def ssh_source_violation(rtype: str, name: str, props: Mapping, allow_from) -> str | None:
    """A rule reaching the SSH port from beyond ssh_allow_from (a hand-added rule, say)."""
    import ipaddress
    allowed = [ipaddress.ip_network(c) for c in allow_from]
    sources = [s for b in backends.hosts() for s in b.ssh_sources(rtype, _Known(props))]
    wider = [s for s in sources if not _network(s) or not all(
        any(n.version == a.version and n.subnet_of(a) for a in allowed) for n in _network(s))]
    if not wider:
        return None
    return (f"{name}: lets {', '.join(wider)} reach SSH (port {contract.SSH_PORT}), beyond "
            f"{PROJECT_NS}:ssh_allow_from ({', '.join(map(str, allow_from))}); remove the rule or "
            f"add the network to ssh_allow_from")


# --- DMARC ----------------------------------------------------------------------------------

def txt_values(rtype: str, props: Mapping) -> list:
    """The TXT values of a record resource, as the DNS backend that declares it reads them."""
    for b in backends.dns_backends():
        values = b.txt_values(rtype, _Known(props))
        if values is not None:
            return values
    return []


def dmarc_tags(txt: str) -> dict[str, str]:
    return {k.strip().lower(): v.strip() for k, _, v in
            (part.partition("=") for part in txt.split(";")) if k.strip()}


def dmarc_violation(rtype: str, name: str, props: Mapping, stack: str) -> str | None:
    if not stack.startswith("prod") or _known(props, "type") != "TXT":
        return None
    for value in txt_values(rtype, props):
        if isinstance(value, str) and value.startswith("v=DMARC1"):
            if dmarc_tags(value).get("p", "none").lower() == "none":
                return (f"{name}: DMARC p=none on production stack {stack!r} ({value!r}) only monitors; "
                        f"set {PROJECT_NS}:dmarc_policy to quarantine or reject")
    return None


# --- DKIM -----------------------------------------------------------------------------------

def rsa_bits_of_dkim_txt(txt: str) -> int | None:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_der_public_key
    tags = dmarc_tags(txt)  # DKIM key records use the same tag=value; syntax
    if not tags.get("p"):
        return None
    key = load_der_public_key(base64.b64decode("".join(tags["p"].split())))
    return key.key_size if isinstance(key, rsa.RSAPublicKey) else None


def dkim_violation(rtype: str, name: str, props: Mapping) -> str | None:
    if _known(props, "algorithm") == "rsa" and _known(props, "bits") is not None:
        bits = int(_known(props, "bits"))
        if bits < MIN_DKIM_BITS:
            return f"{name}: DKIM key of {bits} bits; use at least {MIN_DKIM_BITS} (RFC 8301)"
    if _known(props, "type") == "TXT":
        for value in txt_values(rtype, props):
            if isinstance(value, str) and value.startswith("v=DKIM1"):
                bits = rsa_bits_of_dkim_txt(value)
                if bits is not None and bits < MIN_DKIM_BITS:
                    return (f"{name}: the published DKIM key has {bits} bits; rotate to a key of at "
                            f"least {MIN_DKIM_BITS} bits (a new dkim_selector makes a new key)")
    return None


# --- glue -----------------------------------------------------------------------------------

def _policy(name: str, description: str, check: Callable[[ResourceValidationArgs], str | None]):
    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        message = check(args)
        if message:
            report(message)
    return ResourceValidationPolicy(name=name, description=description, validate=validate)


POLICIES = [
    _policy("data-residency-norway",
            "With residency \"NO\", hosts and IPs stand only in known Norwegian regions.",
            lambda a: residency_violation(a.resource_type, a.name, a.props,
                                          stack_config("residency", "NO"))),
    _policy("firewall-mail-and-ssh-only",
            "Inbound firewall rules open only SSH and the mail ports (443 with MTA-STS).",
            lambda a: firewall_violation(a.resource_type, a.name, a.props)),
    _policy("ssh-from-admin-networks-only",
            "Inbound rules reach SSH only from the networks in ssh_allow_from.",
            lambda a: ssh_source_violation(a.resource_type, a.name, a.props,
                                           stack_config("ssh_allow_from", list(contract.SSH_ANYWHERE)))),
    _policy("dmarc-enforced-in-production",
            "DMARC is not p=none on stacks named prod*.",
            lambda a: dmarc_violation(a.resource_type, a.name, a.props, stack_name(a.urn))),
    _policy("dkim-key-2048-bits",
            "DKIM keys have at least 2048 bits.",
            lambda a: dkim_violation(a.resource_type, a.name, a.props)),
]
