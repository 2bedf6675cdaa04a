"""The rules of the policy pack, as plain functions over (type, name, props, stack, config).

Kept apart from the pulumi_policy glue, so unit tests call them with a dict. The regions come
from components/config.py: one list of Norwegian regions for config validation and policy.
"""
from __future__ import annotations

import base64
import json
import pathlib
import sys
from typing import Any, Callable, Iterable, Mapping

from pulumi_policy import ReportViolation, ResourceValidationArgs, ResourceValidationPolicy
from pulumi_policy.proxy import UnknownValueError

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from components.config import NORWEGIAN_REGIONS  # noqa: E402

PROJECT_NS = "bulletproof-mail"
DYNAMIC = "pulumi-python:dynamic:Resource"
SSH_PORT = 22
MAIL_PORTS = (25, 465, 587, 993)
HTTPS_PORT = 443  # only with MTA-STS (spec features.https)
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

def host_region(rtype: str, props: Mapping) -> str | None:
    """Where a host or IP resource stands: our hosts and OpenStack's carry `region`, Azure's a
    `location`, UpCloud's a `zone`."""
    if rtype == DYNAMIC or rtype.startswith("openstack:") or rtype.startswith("azure-native:"):
        return _known(props, "region") or _known(props, "location")
    if rtype.startswith("upcloud:"):
        return _known(props, "zone")
    return None


def residency_violation(rtype: str, name: str, props: Mapping, residency: str) -> str | None:
    region = host_region(rtype, props)
    if residency != "NO" or not region or region in NORWEGIAN_REGIONS:
        return None
    return (f"{name}: region {region!r} is outside Norway and residency is \"NO\"; use one of "
            f"{', '.join(sorted(NORWEGIAN_REGIONS))}, or set {PROJECT_NS}:residency: \"none\"")


# --- firewall -------------------------------------------------------------------------------

def allowed_ports(https: bool = False, ssh_port: int = SSH_PORT) -> set[int]:
    return {ssh_port, *MAIL_PORTS} | ({HTTPS_PORT} if https else set())


def _port_ranges(rtype: str, props: Mapping) -> Iterable[tuple[int, int, str]]:
    """(first, last, description) of every inbound ACCEPT rule a resource declares."""
    if rtype == "upcloud:index/serverFirewallRules:ServerFirewallRules":
        for rule in _known(props, "firewallRules") or []:
            if rule.get("direction") == "in" and rule.get("action") == "accept":
                first = int(rule.get("destinationPortStart") or 0)
                last = int(rule.get("destinationPortEnd") or 65535)
                yield first, last, f"{rule.get('protocol', 'any')} {first}-{last}"
    elif rtype == "openstack:networking/secGroupRule:SecGroupRule":
        if _known(props, "direction") == "ingress":
            first = int(_known(props, "portRangeMin") or 0)
            last = int(_known(props, "portRangeMax") or 65535)
            yield first, last, f"{_known(props, 'protocol') or 'any'} {first}-{last}"
    elif rtype == "azure-native:network:NetworkSecurityGroup":
        for rule in _known(props, "securityRules") or []:
            yield from _azure_rule(rule)
    elif rtype == "azure-native:network:SecurityRule":
        yield from _azure_rule(props)
    elif rtype == DYNAMIC and _known(props, "firewall_ports") is not None:
        for port in _known(props, "firewall_ports"):
            yield int(port), int(port), f"tcp {port}"


def _azure_rule(rule: Mapping) -> Iterable[tuple[int, int, str]]:
    """An NSG rule's inbound Allow port ranges ("25", "1000-2000", "*")."""
    if _known(rule, "direction") != "Inbound" or _known(rule, "access") != "Allow":
        return
    for ports in _known(rule, "destinationPortRanges") or [_known(rule, "destinationPortRange") or "*"]:
        first, _, last = ("0-65535" if ports == "*" else str(ports)).partition("-")
        yield int(first), int(last or first), f"{_known(rule, 'protocol') or '*'} {ports}"


def firewall_violation(rtype: str, name: str, props: Mapping, https: bool = False) -> str | None:
    allowed = allowed_ports(https)
    extra = [desc for first, last, desc in _port_ranges(rtype, props)
             if not set(range(first, last + 1)) <= allowed]
    if not extra:
        return None
    return (f"{name}: opens {', '.join(extra)} beyond the mail and SSH ports "
            f"({', '.join(map(str, sorted(allowed)))}); remove the rule")


# --- DMARC ----------------------------------------------------------------------------------

def txt_values(props: Mapping) -> list:
    """The TXT values of a record: ours carry `values`; Cloudflare's a quoted `content`."""
    values = _known(props, "values")
    if values is not None:
        return list(values)
    content = _known(props, "content")
    if isinstance(content, str) and content.startswith('"'):
        return ["".join(content.split('"')[1::2])]
    return [content] if isinstance(content, str) else []


def dmarc_tags(txt: str) -> dict[str, str]:
    return {k.strip().lower(): v.strip() for k, _, v in
            (part.partition("=") for part in txt.split(";")) if k.strip()}


def dmarc_violation(name: str, props: Mapping, stack: str) -> str | None:
    if not stack.startswith("prod") or _known(props, "type") != "TXT":
        return None
    for value in txt_values(props):
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


def dkim_violation(name: str, props: Mapping) -> str | None:
    if _known(props, "algorithm") == "rsa" and _known(props, "bits") is not None:
        bits = int(_known(props, "bits"))
        if bits < MIN_DKIM_BITS:
            return f"{name}: DKIM key of {bits} bits; use at least {MIN_DKIM_BITS} (RFC 8301)"
    if _known(props, "type") == "TXT":
        for value in txt_values(props):
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
    _policy("dmarc-enforced-in-production",
            "DMARC is not p=none on stacks named prod*.",
            lambda a: dmarc_violation(a.name, a.props, stack_name(a.urn))),
    _policy("dkim-key-2048-bits",
            "DKIM keys have at least 2048 bits.",
            lambda a: dkim_violation(a.name, a.props)),
]
