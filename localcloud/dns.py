"""The local stack's authoritative DNS: a real BIND 9 run by us, one per state directory.

It serves the mail domain, its reverse zones, a test DNSBL and "elsewhere" (the rest of the
internet, whose MX is the sink). Records are changed by RFC 2136 UPDATE signed with a per-stack
TSIG key, through the same client as the stack's records (localcloud/rfc2136.py).
It binds to one address only and neither recurses nor forwards: nothing leaves the machine.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Optional, Union

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from . import process, rfc2136


TTL = 60  # low, so tests and a redeploy see changes quickly
NEGATIVE_TTL = 30  # SOA minimum: how long a "no such record" may be cached
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class DnsServerError(Exception):
    """named could not be configured, started or stopped; carries the tool's own message."""


@dataclass(frozen=True)
class ZoneSpec:
    origin: str  # "example-mail.test"
    # Initial records as zone-file text, e.g. ("@", "MX", "10 mx.elsewhere.test.")
    records: tuple[tuple[str, str, str], ...] = field(default=())


class DnsServerStatus(NamedTuple):
    running: bool
    pid: Optional[int]
    address: Optional[str]  # "IP:port"


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


def local_zones(domain: str, ipv4_network: str, ipv6_network: str, sink_ip: str,
                dnsbl: str = "dnsbl.test", elsewhere: str = "elsewhere.test") -> list[ZoneSpec]:
    """The zones the local stack needs; the stack's own records come later, by UPDATE."""
    return [
        ZoneSpec(domain),
        ZoneSpec(reverse_zone_v4(ipv4_network)),
        ZoneSpec(reverse_zone_v6(ipv6_network)),
        ZoneSpec(dnsbl),
        ZoneSpec(elsewhere, (("@", "MX", f"10 mx.{elsewhere}."), ("mx", "A", sink_ip))),
    ]


def start(state_dir: Union[str, Path], listen_ipv4: str, port: int, zones: list[ZoneSpec],
          tsig_name: str, ns_name: Optional[str] = None) -> int:
    """Write config, key and zones into state_dir, start named, wait until it answers: its PID.

    listen_ipv4 must sit on an interface: 127.0.0.1 in tests, the stack's bridge address.

    Zone files are written fresh on every start (journals removed): a restarted server serves
    exactly its spec, and the records on top are the stack's to restore (refresh notices).
    """
    state = Path(state_dir).resolve()
    (state / "zones").mkdir(parents=True, exist_ok=True)
    if status(state).running:
        raise DnsServerError(f"named already runs for {state} (pid {status(state).pid}); "
                             "stop it first")
    _check_listen_address(listen_ipv4, port)
    ns_name = (ns_name or f"ns.{zones[0].origin}").rstrip(".")
    _ensure_tsig_key(state, tsig_name)
    conf = state / "named.conf"
    conf.write_text(_named_conf(state, listen_ipv4, port, zones, tsig_name))
    _check(["named-checkconf", str(conf)], "named-checkconf")
    for zone in zones:
        zone_file = state / "zones" / f"{zone.origin}.zone"
        zone_file.write_text(_zone_file(zone, ns_name, listen_ipv4))
        Path(f"{zone_file}.jnl").unlink(missing_ok=True)
        _check(["named-checkzone", "-q", zone.origin, str(zone_file)],
               f"named-checkzone {zone.origin}")

    (state / "named.json").write_text(json.dumps({"address": f"{listen_ipv4}:{port}",
                                                   "zones": [z.origin for z in zones]}))
    # -f: foreground, so the PID is named's own; -4: we listen on IPv4 only.
    pid = process.spawn(["named", "-f", "-4", "-c", str(conf)], state / "named.out",
                        state / "named.pid")
    _wait_until_serving(pid, state, listen_ipv4, port, zones[0].origin)
    return pid


def stop(target: Union[int, str, Path], timeout: float = STOP_TIMEOUT) -> bool:
    """Stop named by PID, or the PID recorded in a state dir: SIGTERM, SIGKILL at the deadline.

    Returns whether a process was stopped; stopping what is not running is not an error.
    """
    # By state dir, only the very process we started counts: a PID reused later is left alone.
    pid = target if isinstance(target, int) else _running_pid(Path(target))
    if pid is None or not process.is_alive(pid):
        return False
    process.terminate(pid, timeout)  # SIGKILL at the deadline: `make down` must not hang
    return True


def status(state_dir: Union[str, Path]) -> DnsServerStatus:
    state = Path(state_dir)
    pid = _running_pid(state)
    try:
        address = json.loads((state / "named.json").read_text())["address"]
    except (OSError, ValueError, KeyError):
        address = None
    return DnsServerStatus(pid is not None, pid, address)


def read_tsig(state_dir: Union[str, Path]) -> rfc2136.Tsig:
    """(name, algorithm, secret) of the key named trusts for updates."""
    text = (Path(state_dir) / "tsig.key").read_text()
    match = re.search(r'key\s+"([^"]+)"\s*{\s*algorithm\s+([\w-]+);\s*secret\s+"([^"]+)";', text)
    if not match:
        raise DnsServerError(f"{state_dir}/tsig.key: no key found; delete it to generate a new one")
    return rfc2136.Tsig(*match.groups())


def dnsbl_list(server: str, port: int, tsig: rfc2136.Tsig, ip: str, zone: str = "dnsbl.test",
               reason: str = "listed by the local test DNSBL") -> None:
    """List an IPv4 address the way real DNSBLs do: A 127.0.0.2 and a TXT reason."""
    name = _dnsbl_name(ip)
    rfc2136.upsert(server, port, tsig, zone, name, "A", ["127.0.0.2"], TTL)
    rfc2136.upsert(server, port, tsig, zone, name, "TXT", [reason], TTL)


def dnsbl_unlist(server: str, port: int, tsig: rfc2136.Tsig, ip: str,
                 zone: str = "dnsbl.test") -> None:
    name = _dnsbl_name(ip)
    rfc2136.delete(server, port, tsig, zone, name, "A")
    rfc2136.delete(server, port, tsig, zone, name, "TXT")


def _dnsbl_name(ip: str) -> str:
    return ".".join(reversed(str(ipaddress.IPv4Address(ip)).split(".")))


def _ensure_tsig_key(state: Path, tsig_name: str) -> None:
    key_file = state / "tsig.key"
    if key_file.exists():  # kept: the stack's state and the key must keep matching
        if read_tsig(state).name != tsig_name:
            raise DnsServerError(f"{key_file} holds key {read_tsig(state).name!r}, not "
                                 f"{tsig_name!r}; delete the file to generate a new key")
        return
    out = subprocess.run(["tsig-keygen", "-a", "hmac-sha256", tsig_name],
                         capture_output=True, text=True)
    if out.returncode:
        raise DnsServerError(f"tsig-keygen: {out.stderr.strip()}")
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(out.stdout)


def _named_conf(state: Path, ip: str, port: int, zones: list[ZoneSpec], tsig_name: str) -> str:
    zone_blocks = "".join(
        f'zone "{z.origin}" {{\n  type primary;\n  file "zones/{z.origin}.zone";\n'
        f'  journal "zones/{z.origin}.zone.jnl";\n'
        f'  update-policy {{ grant "{tsig_name}" zonesub ANY; }};\n}};\n' for z in zones)
    return f"""# Generated by localcloud/dns.py; rewritten on every start.
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
  version none; hostname none; server-id none;
}};
controls {{ }};              # no rndc channel: several instances must not fight over port 953
include "{state}/tsig.key";
logging {{
  channel to_file {{ file "{state}/named.log" versions 2 size 5m; print-time yes; severity info; }};
  category default {{ to_file; }};
  category lame-servers {{ null; }};
}};
{zone_blocks}"""


def _zone_file(zone: ZoneSpec, ns_name: str, ns_ip: str) -> str:
    origin = zone.origin.rstrip(".") + "."
    serial = int(time.time())
    lines = [f"$ORIGIN {origin}", f"$TTL {TTL}",
             f"@ IN SOA {ns_name}. hostmaster.{origin} {serial} 3600 600 86400 {NEGATIVE_TTL}",
             f"@ IN NS {ns_name}."]
    if (ns_name + ".").endswith("." + origin) or ns_name + "." == origin:
        lines.append(f"{ns_name}. IN A {ns_ip}")  # glue for a name server inside this zone
    lines += [f"{name} IN {rtype} {value}" for name, rtype, value in zone.records]
    return "\n".join(lines) + "\n"


def _check_listen_address(ip: str, port: int) -> None:
    """Fail fast where named would start but silently serve nothing."""
    # named listens only on addresses it finds on interfaces, not on all of 127/8.
    addrs = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout
    if f" {ip}/" not in addrs:
        raise DnsServerError(f"{ip} is on no interface; use 127.0.0.1 or the stack's bridge address")
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((ip, port))
            except OSError as err:
                raise DnsServerError(f"{ip}:{port} is taken ({err.strerror}); "
                                     "pick another port") from err


def _check(cmd: list[str], tool: str) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise DnsServerError(f"{tool} failed: {(out.stdout + out.stderr).strip()}")


def _wait_until_serving(pid: int, state: Path, ip: str, port: int, zone: str) -> None:
    """Bounded poll until named answers the first zone's SOA authoritatively."""
    query = dns.message.make_query(zone, dns.rdatatype.SOA)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not process.is_alive(pid):
            raise DnsServerError(f"named exited: {_log_tail(state)}")
        try:
            answer = dns.query.udp(query, ip, port=port, timeout=0.3)
            if answer.rcode() == dns.rcode.NOERROR and answer.answer:
                return
        except (OSError, dns.exception.DNSException):
            pass
        time.sleep(0.1)
    stop(pid)
    raise DnsServerError(f"named did not answer on {ip}:{port} within {START_TIMEOUT}s: "
                         f"{_log_tail(state)}")


def _log_tail(state: Path, lines: int = 15) -> str:
    text = ""
    for name in ("named.out", "named.log"):
        path = state / name
        if path.exists():
            text += path.read_text(errors="replace")
    return "\n".join(text.splitlines()[-lines:]) or "(no log)"


def _running_pid(state: Path) -> Optional[int]:
    return process.recorded(state / "named.pid", ["named", str(state.resolve() / "named.conf")])
