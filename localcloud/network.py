"""A host bridge per stack: a private /24 of its own (+ a ULA /64), and no way out.

The /24 is picked deterministically from the stack's seed, skipping anything that overlaps the
machine's routes and addresses or another stack's recorded choice; the choice is recorded in the
stack's runtime dir so it stays stable across `up`s. No forwarding and no NAT are set up: the
containers reach the host's bridge address (DNS, proxy, sink) and nothing else.
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network
from pathlib import Path
from typing import Iterable

from . import naming

IPv4_POOL = IPv4Network("10.0.0.0/8")
ULA = IPv6Network("fd00::/8")


@dataclass(frozen=True)
class Bridge:
    name: str
    ipv4: IPv4Interface  # the host's address on the bridge, e.g. 10.23.45.1/24
    ipv6: IPv6Interface  # e.g. fd12:3456:789a::1/64

    @property
    def subnet(self) -> IPv4Network:
        return self.ipv4.network

    @property
    def subnet6(self) -> IPv6Network:
        return self.ipv6.network

    def address(self, index: int) -> IPv4Interface:
        """The host's `index`-th address in the /24, with prefix (e.g. index 10 -> .10/24)."""
        if not 2 <= index <= 254:
            raise ValueError("index must be 2..254 (.1 is the host bridge)")
        return IPv4Interface(f"{self.subnet[index]}/{self.subnet.prefixlen}")

    def address6(self, index: int) -> IPv6Interface:
        return IPv6Interface(f"{self.subnet6[index]}/{self.subnet6.prefixlen}")

    def to_json(self) -> dict:
        return {"bridge": self.name, "ipv4": str(self.ipv4), "ipv6": str(self.ipv6)}


def _overlaps(net, taken: Iterable) -> bool:
    return any(net.version == t.version and net.overlaps(t) for t in taken)


def choose_subnet(seed: str, taken: Iterable = (), pool: IPv4Network = IPv4_POOL) -> IPv4Network:
    """The first free /24 of `pool`, probing from a start derived from `seed`."""
    taken = list(taken)
    count = 2 ** (24 - pool.prefixlen)
    start = int(seed, 16) % count
    for step in range(count):
        index = (start + step) % count
        net = IPv4Network((int(pool.network_address) + (index << 8), 24))
        if not _overlaps(net, taken):
            return net
    raise RuntimeError(f"no free /24 left in {pool}")


def choose_ula(seed: str, taken: Iterable = ()) -> IPv6Network:
    """A /64 in a ULA /48 whose 40-bit global ID comes from `seed` (RFC 4193 style)."""
    taken = list(taken)
    base = int(ULA.network_address) | (int(seed[-10:], 16) << 80)
    for subnet_id in range(2 ** 16):
        net = IPv6Network((base | (subnet_id << 64), 64))
        if not _overlaps(net, taken):
            return net
    raise RuntimeError("no free ULA /64")


def _ip_json(*args: str) -> list[dict]:
    out = subprocess.run(["ip", "-j", *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out or "[]")


def machine_networks(exclude_dev: str | None = None) -> list:
    """Networks in use on this machine: route destinations and interface address networks."""
    nets = []
    for family in ("-4", "-6"):
        for route in _ip_json(family, "route", "show", "table", "all"):
            dst = route.get("dst", "default")
            if dst != "default" and route.get("dev") != exclude_dev and route.get("type") in (
                    None, "unicast"):
                nets.append(ipaddress.ip_network(dst, strict=False))
    for link in _ip_json("addr"):
        if link.get("ifname") == exclude_dev:
            continue
        for info in link.get("addr_info", []):
            if info.get("scope") != "link":
                nets.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}",
                                                 strict=False))
    return [n for n in nets if not n.is_loopback and n.prefixlen > 0]


def _other_stacks(names: naming.StackNames) -> list:
    """Subnets recorded by other stacks on this machine, up or not, so two never pick one."""
    nets = []
    for record in naming.runtime_root().glob("*/network.json"):
        if record.parent != names.runtime_dir:
            data = json.loads(record.read_text())
            nets += [ipaddress.ip_interface(data["ipv4"]).network,
                     ipaddress.ip_interface(data["ipv6"]).network]
    return nets


def bridge_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def plan_bridge(names: naming.StackNames) -> Bridge:
    """The stack's bridge and addresses: the recorded choice while still free, else a new one."""
    taken = machine_networks(exclude_dev=names.bridge) + _other_stacks(names)
    if names.network_file.exists():
        data = json.loads(names.network_file.read_text())
        bridge = Bridge(names.bridge, IPv4Interface(data["ipv4"]), IPv6Interface(data["ipv6"]))
        if not _overlaps(bridge.subnet, taken) and not _overlaps(bridge.subnet6, taken):
            return bridge
    net = choose_subnet(names.key, taken)
    net6 = choose_ula(names.key, taken)
    return Bridge(names.bridge, IPv4Interface(f"{net[1]}/24"), IPv6Interface(f"{net6[1]}/64"))


def ensure_bridge(names: naming.StackNames) -> Bridge:
    """Create (or complete) the stack's bridge; idempotent."""
    names.runtime_dir.mkdir(parents=True, exist_ok=True)
    # One lock for all stacks: two stacks coming up at once must not both pick one /24.
    with open(naming.runtime_root() / ".network.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        bridge = plan_bridge(names)
        tmp = names.network_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(bridge.to_json(), indent=2) + "\n")
        tmp.rename(names.network_file)  # other stacks read it: never half-written
    if not bridge_exists(bridge.name):
        _ip("link", "add", bridge.name, "type", "bridge")
    # A router advertisement on the bridge must never give the host a route through it.
    _sysctl(f"net/ipv6/conf/{bridge.name}/accept_ra", "0")
    _sysctl(f"net/ipv4/conf/{bridge.name}/forwarding", "0")  # nothing from here is forwarded
    have = {(a["local"], a["prefixlen"]) for link in _ip_json("addr", "show", "dev", bridge.name)
            for a in link.get("addr_info", [])}
    for iface, extra in ((bridge.ipv4, []), (bridge.ipv6, ["nodad"])):
        if (str(iface.ip), iface.network.prefixlen) not in have:
            # nodad: a bridge without ports has no carrier, so DAD would keep it tentative
            # and unbindable by the DNS server.
            _ip("addr", "add", str(iface), "dev", bridge.name, *extra)
    _ip("link", "set", bridge.name, "up")
    return bridge


def remove_bridge(names: naming.StackNames) -> None:
    """Delete the stack's bridge (attached veths go with their containers); idempotent."""
    if bridge_exists(names.bridge):
        _ip("link", "del", names.bridge)


def read_bridge(names: naming.StackNames) -> Bridge | None:
    """The recorded bridge, or None when this stack never made one."""
    if not names.network_file.exists():
        return None
    data = json.loads(names.network_file.read_text())
    return Bridge(data["bridge"], IPv4Interface(data["ipv4"]), IPv6Interface(data["ipv6"]))


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _sysctl(key: str, value: str) -> None:
    Path("/proc/sys", key).write_text(value)
