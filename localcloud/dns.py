"""The local stack's authoritative DNS: a real BIND 9 run by us, one per state directory.

It serves the mail domain, its reverse zones, a test DNSBL and "elsewhere" (the rest of the
internet, whose MX is the sink). Records are changed by RFC 2136 UPDATE signed with a per-stack
TSIG key, through the same client as the stack's records (localcloud/rfc2136.py); extra keys
may hold narrow grants (e.g. one ACME challenge TXT name).
start() runs a fresh server serving exactly its spec; reconfigure() changes the zones and keys
of a running one in place, keeping every record added by UPDATE (named.conf is rewritten, zone
files are only ever created, never rewritten, and journals are kept).
It binds to one address only and neither recurses nor forwards: nothing leaves the machine.
Once its port is bound, named runs as NAMED_USER (`-u`): the state dir and its zones are that
user's group's to write (journals, log), the keys root's and readable by that group only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import NamedTuple, Optional, Sequence, Union

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode

from agent.contract import dnsbl_query_name

from . import dns_config, process, rfc2136
# Re-exported: callers build specs through this module (components/local_cloud.py does).
from .dns_config import (DNSBL_BLOCKED_CODE, NAMED_USER, TTL, DnsServerError, Grant,  # noqa: F401
                         KeySpec, ZoneSpec, local_zones, reverse_zone_v4, reverse_zone_v6)

START_TIMEOUT = 15.0  # also bounds a reconfigure
STOP_TIMEOUT = 10.0


class DnsServerStatus(NamedTuple):
    running: bool
    pid: Optional[int]
    address: Optional[str]  # "IP:port"
    zones: tuple[str, ...] = ()  # origins in the current named.conf
    keys: tuple[KeySpec, ...] = ()  # extra keys (the stack key is always there)


def start(state_dir: Union[str, Path], listen_ipv4: str, port: int, zones: Sequence[ZoneSpec],
          tsig_name: str, ns_name: Optional[str] = None, keys: Sequence[KeySpec] = ()) -> int:
    """Write config, keys and zones into state_dir, start named, wait until it answers: its PID.

    listen_ipv4 must sit on an interface: 127.0.0.1 in tests, the stack's bridge address.

    Zone files are written fresh on every start (journals removed): a restarted server serves
    exactly its spec, and the records on top are the stack's to restore (refresh notices).
    """
    state = Path(state_dir).resolve()
    (state / "zones").mkdir(parents=True, exist_ok=True)
    if status(state).running:
        raise DnsServerError(f"named already runs for {state} (pid {status(state).pid}); "
                             "stop it first")
    if not zones:
        raise DnsServerError("start needs at least one zone (its NS name defaults from the first)")
    _check_listen_address(listen_ipv4, port)
    served = {"address": f"{listen_ipv4}:{port}", "tsig_name": tsig_name,
              "ns_name": (ns_name or f"ns.{zones[0].origin}").rstrip(".")}
    token = _configure(state, served, zones, keys, fresh=zones)
    for zone in zones:
        Path(f"{dns_config.zone_path(state, zone.origin)}.jnl").unlink(missing_ok=True)
    _record(state, served, zones, keys)
    _hand_over(state)
    log_start = _log_size(state)
    # -f: foreground, so the PID is named's own; -4: we listen on IPv4 only; -u: root only for
    # what needs it (binding the port).
    pid = process.spawn(["named", "-f", "-4", "-u", NAMED_USER, "-c", str(state / "named.conf")],
                        state / "named.out", state / "named.pid")
    try:
        _wait_until_serving(pid, state, served["address"], token, zones, (), log_start)
    except DnsServerError:
        stop(pid)
        raise
    return pid


def reconfigure(state_dir: Union[str, Path], zones: Sequence[ZoneSpec],
                keys: Sequence[KeySpec] = ()) -> None:
    """Make the running server serve exactly `zones` and trust exactly `keys` (beside the stack
    key), without a restart and without losing a record added by UPDATE.

    Zones new to it get a zone file; existing zone files and journals are left as they are
    (their ZoneSpec.records are not applied again). Removed zones stop being served; their files
    stay. A config that named's tools or named itself reject raises DnsServerError and leaves
    the running server and named.conf as they were.
    """
    state = Path(state_dir).resolve()
    pid = _running_pid(state)
    if pid is None:
        raise DnsServerError(f"named does not run for {state}; start it first")
    served = _served(state)
    fresh = [z for z in zones if not dns_config.zone_path(state, z.origin).exists()]
    old_conf = (state / "named.conf").read_text()
    token = _configure(state, served, zones, keys, fresh)
    # SIGHUP is `rndc reload` (there is no rndc channel, see named.conf): named rereads named.conf
    # and reloads only zone files changed on disk; we change none, so updated zones keep their data.
    log_start = _log_size(state)
    os.kill(pid, signal.SIGHUP)
    removed = [o for o in served["zones"] if o not in {z.origin for z in zones}]
    try:
        _wait_until_serving(pid, state, served["address"], token, zones, removed, log_start)
    finally:
        if _version(served["address"]) == token:  # named runs the new config
            _record(state, served, zones, keys)
        else:  # named kept the old config (or is gone): so does the disk
            (state / "named.conf").write_text(old_conf)
            for zone in fresh:  # created a moment ago and never served
                dns_config.zone_path(state, zone.origin).unlink(missing_ok=True)


def ensure(state_dir: Union[str, Path], listen_ipv4: str, port: int, zones: Sequence[ZoneSpec],
           tsig_name: str, ns_name: Optional[str] = None, keys: Sequence[KeySpec] = ()) -> int:
    """start() when named is not running; otherwise reconfigure() it when zones or keys differ.
    Its PID. The address and the stack key of a running server cannot change in place."""
    now = status(state_dir)
    if not now.running:
        return start(state_dir, listen_ipv4, port, zones, tsig_name, ns_name, keys)
    served = _served(Path(state_dir).resolve())
    if (served["address"], served["tsig_name"]) != (f"{listen_ipv4}:{port}", tsig_name):
        raise DnsServerError(f"named for {state_dir} serves {served['address']} with key "
                             f"{served['tsig_name']!r}; stop it to change address or stack key")
    if now.zones != tuple(z.origin for z in zones) or now.keys != tuple(keys):
        reconfigure(state_dir, zones, keys)
    return now.pid


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
        served = json.loads((state / "named.json").read_text())
    except (OSError, ValueError):
        served = {}
    keys = tuple(KeySpec(k["name"], tuple(Grant(g["zone"], g["name"], tuple(g["types"]))
                                          for g in k["grants"])) for k in served.get("keys", ()))
    return DnsServerStatus(pid is not None, pid, served.get("address"),
                           tuple(served.get("zones", ())), keys)


def read_tsig(state_dir: Union[str, Path], name: Optional[str] = None) -> rfc2136.Tsig:
    """(name, algorithm, secret) of the stack key, or of the extra key `name`."""
    state = Path(state_dir)
    stack_key = dns_config.read_key(state / "tsig.key")
    if name is None or name == stack_key.name:
        return stack_key
    return dns_config.read_key(dns_config.key_path(state, name, stack_key.name))


def dnsbl_list(server: str, port: int, tsig: rfc2136.Tsig, ip: str, zone: str = "dnsbl.test",
               reason: str = "listed by the local test DNSBL") -> None:
    """List an IPv4 address the way real DNSBLs do: A 127.0.0.2 and a TXT reason."""
    name = dnsbl_query_name(ip, zone)
    rfc2136.upsert(server, port, tsig, zone, name, "A", ["127.0.0.2"], TTL)
    rfc2136.upsert(server, port, tsig, zone, name, "TXT", [reason], TTL)


def dnsbl_unlist(server: str, port: int, tsig: rfc2136.Tsig, ip: str,
                 zone: str = "dnsbl.test") -> None:
    name = dnsbl_query_name(ip, zone)
    rfc2136.delete(server, port, tsig, zone, name, "A")
    rfc2136.delete(server, port, tsig, zone, name, "TXT")


def _configure(state: Path, served: dict, zones: Sequence[ZoneSpec], keys: Sequence[KeySpec],
               fresh: Sequence[ZoneSpec]) -> str:
    """Generate missing keys, then check and install config and `fresh` zone files: the token."""
    for name in [served["tsig_name"], *(k.name for k in keys)]:
        dns_config.ensure_key(dns_config.key_path(state, name, served["tsig_name"]), name)
    ip, port = served["address"].rsplit(":", 1)
    token = f"config-{secrets.token_hex(6)}"
    conf = dns_config.named_conf(state, ip, int(port), zones, served["tsig_name"], keys, token)
    dns_config.install(state, conf, {z.origin: dns_config.zone_file(z, served["ns_name"], ip)
                                     for z in fresh})
    return token


def _hand_over(state: Path) -> None:
    """What named writes as NAMED_USER: the state dir and zones/ (journals, the log and its
    rotation, session.key) by group; files an earlier named wrote as root become its own. The
    keys (those of a server that ran as root included): root's, group-readable."""
    gid = dns_config.named_gid()
    if gid is None:
        raise DnsServerError(f"there is no user {NAMED_USER!r} for named to run as; "
                             "install Debian's bind9 package (it creates the user)")
    uid = pwd.getpwnam(NAMED_USER).pw_uid
    for parent in state.parents:  # named, unprivileged, reopens its files by absolute paths
        st = parent.stat()
        if not st.st_mode & (0o100 if st.st_uid == uid else 0o010 if st.st_gid == gid else 0o001):
            raise DnsServerError(f"named runs as {NAMED_USER!r}, who may not enter {parent} "
                                 f"(mode {st.st_mode & 0o7777:o}): put its state dir where "
                                 "others may enter (the stack's runtime dir is)")
    for directory in (state, state / "zones"):
        os.chown(directory, 0, gid)
        os.chmod(directory, 0o770)
    written = [*state.glob("named.log*"), *state.glob("session.key"), *state.glob("managed-keys*"),
               *state.glob("*.mkeys*"), *(state / "zones").glob("*.jnl")]
    for path in written:
        os.chown(path, uid, gid)
    for key in [state / "tsig.key", *(state / "keys").glob("*.key")]:
        if key.exists():
            dns_config.readable_by_named(key)


def _record(state: Path, served: dict, zones: Sequence[ZoneSpec], keys: Sequence[KeySpec]) -> None:
    (state / "named.json").write_text(json.dumps({
        **served, "zones": [z.origin for z in zones], "keys": [dataclasses.asdict(k) for k in keys]}))


def _served(state: Path) -> dict:
    """named.json; a server started before it held tsig_name and ns_name gets today's defaults."""
    served = json.loads((state / "named.json").read_text())
    served.setdefault("tsig_name", dns_config.read_key(state / "tsig.key").name)
    served.setdefault("ns_name", f"ns.{served['zones'][0]}".rstrip("."))
    return served


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


def _wait_until_serving(pid: int, state: Path, address: str, token: str,
                        zones: Sequence[ZoneSpec], removed: Sequence[str], log_start: int) -> None:
    """Bounded poll until named runs the config with `token`, answers every zone's SOA
    authoritatively and no longer answers for the removed zones (named.log read from log_start)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not process.is_alive(pid):
            raise DnsServerError(f"named exited: {_log_tail(state)}")
        rejected = _reload_failure(state, log_start)
        if rejected:
            raise DnsServerError(f"named rejected the new config: {rejected}")
        if (_version(address) == token and all(_authoritative(address, z.origin) for z in zones)
                and not any(_authoritative(address, origin) for origin in removed)):
            return
        time.sleep(0.1)
    raise DnsServerError(f"named did not serve its zones on {address} within {START_TIMEOUT}s: "
                         f"{_log_tail(state)}")


def _ask(address: str, name: str, rdtype: str, rdclass: str = "IN") -> Optional[dns.message.Message]:
    ip, port = address.rsplit(":", 1)
    query = dns.message.make_query(name, rdtype, rdclass)
    query.flags &= ~dns.flags.RD
    try:
        return dns.query.udp(query, ip, port=int(port), timeout=0.3)
    except (OSError, dns.exception.DNSException):
        return None


def _authoritative(address: str, origin: str) -> bool:
    answer = _ask(address, origin, "SOA")
    return bool(answer and answer.rcode() == dns.rcode.NOERROR and answer.answer
                and answer.flags & dns.flags.AA)


def _version(address: str) -> Optional[str]:
    """The token of the config named runs (named.conf sets it as the version.bind answer)."""
    answer = _ask(address, "version.bind", "TXT", "CH")
    try:
        return answer.answer[0][0].strings[0].decode() if answer else None
    except (IndexError, AttributeError):
        return None


def _log_size(state: Path) -> int:
    try:
        return (state / "named.log").stat().st_size
    except FileNotFoundError:
        return 0


def _reload_failure(state: Path, start: int) -> Optional[str]:
    """named's own words when it refused a config (it then keeps running the old one)."""
    try:
        with open(state / "named.log", "rb") as log:
            log.seek(start if start <= os.fstat(log.fileno()).st_size else 0)  # 0: rotated
            lines = log.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    for i, line in enumerate(lines):
        if "reloading configuration failed" in line:
            return " / ".join(lines[max(0, i - 3): i + 1])
    return None


def _log_tail(state: Path, lines: int = 15) -> str:
    text = ""
    for name in ("named.out", "named.log"):
        path = state / name
        if path.exists():
            text += path.read_text(errors="replace")
    return "\n".join(text.splitlines()[-lines:]) or "(no log)"


def _running_pid(state: Path) -> Optional[int]:
    return process.recorded(state / "named.pid", ["named", str(state.resolve() / "named.conf")])
