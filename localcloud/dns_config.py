"""The local DNS server's files: named.conf, zone files and TSIG keys (used by localcloud/dns.py).

Text and files only; nothing here starts or signals named. Every name that ends up in the
config or in a path is checked against a plain character set first. Whether it is a valid DNS
name is left to named's own tools, so their message is the one the caller sees.
"""

from __future__ import annotations

import grp
import ipaddress
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from . import rfc2136

TTL = 60  # low, so tests and a redeploy see changes quickly
NEGATIVE_TTL = 30  # SOA minimum: how long a "no such record" may be cached
# named drops root to this user (Debian's bind9 makes it) once its port is bound.
NAMED_USER = "bind"
# No quotes, spaces or slashes (safe in config and paths), no leading "-" (safe as an argument).
_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class DnsServerError(Exception):
    """named could not be configured, started or stopped; carries the tool's own message."""


@dataclass(frozen=True)
class ZoneSpec:
    origin: str  # "example-mail.test"
    # Records for the zone file, e.g. ("@", "MX", "10 mx.elsewhere.test."). They are written only
    # when the zone file is created; after that the zone's records change only by UPDATE.
    records: tuple[tuple[str, str, str], ...] = field(default=())


@dataclass(frozen=True)
class Grant:
    """What a key may change: `types` at exactly `name` (relative to `zone` or absolute)."""
    zone: str
    name: str
    types: tuple[str, ...] = ("TXT",)


@dataclass(frozen=True)
class KeySpec:
    """A TSIG key beside the stack's, holding only its grants (BIND `grant KEY name NAME TYPES`)."""
    name: str
    grants: tuple[Grant, ...] = ()


def reverse_zone_v4(network: str) -> str:
    """"10.77.5.0/24" -> "5.77.10.in-addr.arpa" (only whole octets delegate cleanly)."""
    net = ipaddress.IPv4Network(network)
    if net.prefixlen % 8:
        raise DnsServerError(f"{network}: an IPv4 reverse zone needs a /8, /16 or /24")
    octets = str(net.network_address).split(".")[: net.prefixlen // 8]
    return ".".join(reversed(octets)) + ".in-addr.arpa"


def reverse_zone_v6(network: str) -> str:
    """"fd12:3456:789a:1::/64" -> nibble-format zone under ip6.arpa."""
    net = ipaddress.IPv6Network(network)
    if net.prefixlen % 4:
        raise DnsServerError(f"{network}: an IPv6 reverse zone needs a prefix length divisible by 4")
    nibbles = net.network_address.exploded.replace(":", "")[: net.prefixlen // 4]
    return ".".join(reversed(nibbles)) + ".ip6.arpa"


# The test DNSBL plays Spamhaus: this address of the stack's /24 gets the "query via a public
# resolver" error code, which must never count as a listing (postscreen, preflight, checks).
DNSBL_BLOCKED_INDEX = 250
DNSBL_BLOCKED_CODE = "127.255.255.254"


def dnsbl_test_records(ipv4_network: str) -> tuple[tuple[str, str, str], ...]:
    """RFC 5782's test point 127.0.0.2 (listed) and one address answered "blocked"."""
    blocked = str(ipaddress.IPv4Network(ipv4_network)[DNSBL_BLOCKED_INDEX])
    blocked_name = ".".join(reversed(blocked.split(".")))
    return (("2.0.0.127", "A", "127.0.0.2"), ("2.0.0.127", "TXT", '"RFC 5782 test point"'),
            (blocked_name, "A", DNSBL_BLOCKED_CODE))


def local_zones(domain: str, ipv4_network: str, ipv6_network: str, sink_ip: str,
                dnsbl: str = "dnsbl.test", elsewhere: str = "elsewhere.test",
                extra_domains: Sequence[str] = ()) -> list[ZoneSpec]:
    """The zones the local stack needs; the stack's own records come later, by UPDATE.
    `extra_domains`: the stack's other mail domains, each an empty zone of its own (after the
    primary's, which names the server: ns.<domain>)."""
    if elsewhere in extra_domains or dnsbl in extra_domains:
        raise DnsServerError(f"{elsewhere} and {dnsbl} are the local cloud's own zones; "
                             "name the mail domain otherwise")
    return [
        ZoneSpec(domain),
        *(ZoneSpec(d) for d in extra_domains if d != domain),
        ZoneSpec(reverse_zone_v4(ipv4_network)),
        ZoneSpec(reverse_zone_v6(ipv6_network)),
        ZoneSpec(dnsbl, dnsbl_test_records(ipv4_network)),
        ZoneSpec(elsewhere, (("@", "MX", f"10 mx.{elsewhere}."), ("mx", "A", sink_ip))),
    ]


def zone_path(state: Path, origin: str) -> Path:
    return state / "zones" / f"{_plain('zone name', origin)}.zone"


def key_path(state: Path, name: str, stack_key: str) -> Path:
    """The stack key lives in tsig.key (as before); extra keys in keys/NAME.key."""
    return state / "tsig.key" if name == stack_key else state / "keys" / f"{_plain('key name', name)}.key"


def ensure_key(path: Path, name: str) -> None:
    """Generate the key once (tsig-keygen), 0600; an existing file is kept and must match."""
    if path.exists():  # kept: whoever holds the secret must keep matching
        if read_key(path).name != name:
            raise DnsServerError(f"{path} holds key {read_key(path).name!r}, not {name!r}; "
                                 "delete the file to generate a new key")
        return
    out = subprocess.run(["tsig-keygen", "-a", "hmac-sha256", name], capture_output=True, text=True)
    if out.returncode:
        raise DnsServerError(f"tsig-keygen: {out.stderr.strip()}")
    path.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(out.stdout)
    readable_by_named(path)


def named_gid() -> int | None:
    try:
        return grp.getgrnam(NAMED_USER).gr_gid
    except KeyError:
        return None


def readable_by_named(path: Path) -> None:
    """A key file: root's, readable by named's group (it rereads the keys on a reload, as
    NAMED_USER); nobody else's. Its directory likewise (keys/ or the state dir)."""
    gid = named_gid()
    if gid is None or os.geteuid() != 0:
        return
    os.chown(path, 0, gid)
    os.chmod(path, 0o640)
    if path.parent.name == "keys":
        os.chown(path.parent, 0, gid)
        os.chmod(path.parent, 0o750)


def read_key(path: Path) -> rfc2136.Tsig:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DnsServerError(f"{path}: no such key; reconfigure the server with it first") from None
    match = re.search(r'key\s+"([^"]+)"\s*{\s*algorithm\s+([\w-]+);\s*secret\s+"([^"]+)";', text)
    if not match:
        raise DnsServerError(f"{path}: no key found; delete it to generate a new one")
    return rfc2136.Tsig(*match.groups())


def named_conf(state: Path, ip: str, port: int, zones: Sequence[ZoneSpec], stack_key: str,
               keys: Sequence[KeySpec], token: str) -> str:
    """The whole config; `token` answers version.bind, so a reload can be seen to have taken."""
    policies = _policies(zones, stack_key, keys)
    includes = "".join(f'include "{key_path(state, k, stack_key)}";\n'
                       for k in [stack_key, *(k.name for k in keys)])
    zone_blocks = "".join(
        f'zone "{z.origin}" {{\n  type primary;\n  file "zones/{z.origin}.zone";\n'
        f'  journal "zones/{z.origin}.zone.jnl";\n'
        f'  update-policy {{ {" ".join(policies[z.origin])} }};\n}};\n' for z in zones)
    return f"""# Generated by localcloud/dns_config.py; rewritten on every start and reconfigure.
options {{
  directory "{state}";
  pid-file none;             # named.pid is ours: it also holds the start time (process.py)
  session-keyfile "{state}/session.key";   # the default under /run/named may not exist here
  managed-keys-directory "{state}";
  listen-on port {port} {{ {ip}; }};
  listen-on-v6 {{ none; }};
  recursion no;              # authoritative only: never resolves names for anyone
  forwarders {{ }};
  allow-query {{ any; }};
  allow-transfer {{ none; }};
  notify no;
  check-integrity no;        # records arrive one UPDATE at a time, in any order (an MX before its A)
  dnssec-validation no;      # nothing is resolved, so no trust anchors are needed
  version "{token}"; hostname none; server-id none;   # the token, not BIND's version
}};
controls {{ }};              # no rndc channel: several instances must not fight over port 953
{includes}logging {{
  channel to_file {{ file "{state}/named.log" versions 2 size 5m; print-time yes; severity info; }};
  category default {{ to_file; }};
  category lame-servers {{ null; }};
}};
{zone_blocks}"""


def _policies(zones: Sequence[ZoneSpec], stack_key: str,
              keys: Sequence[KeySpec]) -> dict[str, list[str]]:
    """update-policy rules per zone: the stack key may change anything, extra keys their grants."""
    stack = _plain("key name", stack_key)
    policies = {_plain("zone name", z.origin): [f'grant "{stack}" zonesub ANY;'] for z in zones}
    by_name = {z.rstrip(".").lower(): z for z in policies}
    for key in keys:
        if key.name == stack_key:
            raise DnsServerError(f"key {key.name!r} is the stack's own key; give the extra key another name")
        for grant in key.grants:
            zone = by_name.get(grant.zone.rstrip(".").lower())
            if zone is None:
                raise DnsServerError(f"key {key.name!r} has a grant in zone {grant.zone!r}, "
                                     "which is not served; add the zone or drop the grant")
            try:
                name = rfc2136.fqdn(zone, grant.name).to_text()
            except rfc2136.DnsRecordError as err:
                raise DnsServerError(f"key {key.name!r}: {err}") from err
            types = " ".join(_plain("record type", t) for t in grant.types)
            policies[zone].append(f'grant "{_plain("key name", key.name)}" name '
                                  f'"{_plain("grant name", name)}" {types};')
    return policies


def zone_file(zone: ZoneSpec, ns_name: str, ns_ip: str) -> str:
    origin = zone.origin.rstrip(".") + "."
    serial = int(time.time())
    lines = [f"$ORIGIN {origin}", f"$TTL {TTL}",
             f"@ IN SOA {ns_name}. hostmaster.{origin} {serial} 3600 600 86400 {NEGATIVE_TTL}",
             f"@ IN NS {ns_name}."]
    if (ns_name + ".").endswith("." + origin) or ns_name + "." == origin:
        lines.append(f"{ns_name}. IN A {ns_ip}")  # glue for a name server inside this zone
    lines += [f"{name} IN {rtype} {value}" for name, rtype, value in zone.records]
    return "\n".join(lines) + "\n"


def install(state: Path, conf: str, new_zones: dict[str, str]) -> None:
    """Check `conf` and the new zone files (origin -> text) with named's tools; only when all
    pass do they replace named.conf and get their places. A failed check changes nothing live."""
    live = state / "named.conf"
    staged = {_new(live): live, **{_new(zone_path(state, o)): zone_path(state, o) for o in new_zones}}
    try:
        _new(live).write_text(conf)
        _check(["named-checkconf", str(_new(live))], "named-checkconf")
        for origin, text in new_zones.items():
            _new(zone_path(state, origin)).write_text(text)
            _check(["named-checkzone", origin, str(_new(zone_path(state, origin)))],
                   f"named-checkzone {origin}")
    except BaseException:
        for new in staged:
            new.unlink(missing_ok=True)
        raise
    for new, path in reversed(staged.items()):  # named.conf last: it names the zone files
        os.replace(new, path)


def _new(path: Path) -> Path:
    return path.with_name(path.name + ".new")


def _check(cmd: list[str], tool: str) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise DnsServerError(f"{tool} failed: {(out.stdout + out.stderr).strip()}")


def _plain(what: str, text: str) -> str:
    if not _PLAIN.fullmatch(text):
        raise DnsServerError(f"{what} {text!r}: use only letters, digits, '-', '_' and '.'")
    return text
