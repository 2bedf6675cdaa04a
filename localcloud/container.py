"""One local host's life: per-host overlay root, seed files, boot, wait for ssh, stop.

The root is an overlayfs over the cached image (image.py), so a new host costs a few
directories. Everything a host needs at first boot is written into it before `--boot`: the
NoCloud seed (cloud-init then runs the user-data), a systemd-networkd file for `host0`, the
resolver, the apt proxy and root's authorized_keys.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv6Interface, ip_interface
from pathlib import Path

from . import image, mounts, naming, process

LEADER_TIMEOUT = 15.0
NSPAWN_RUN = Path("/run/systemd/nspawn")


class ContainerError(RuntimeError):
    pass


@dataclass(frozen=True)
class Machine:
    host: str  # the stack's short name for it, e.g. "mail"
    name: str  # the nspawn machine name (naming.machine_name)
    root: Path  # the merged overlay root as seen from the host
    nspawn_pid: int
    leader_pid: int  # the container's own systemd (PID 1 inside); the one to nsenter/signal
    ipv4: IPv4Interface


def _paths(names: naming.StackNames, host: str) -> dict[str, Path]:
    d = names.host_dir(host)
    return {k: d / k for k in ("upper", "work", "root")} | {
        "dir": d, "pid": d / "nspawn.pid", "log": d / "nspawn.log", "record": d / "machine.json"}


def _write(root: Path, rel: str, data: bytes | str, mode: int = 0o644) -> None:
    """Write a file under `root` without ever following a symlink: a link in the image
    (e.g. /etc/resolv.conf) must not turn a write into the container into one on the host."""
    parent = root
    for part in Path(rel).parent.parts:
        parent = parent / part
        if parent.is_symlink():
            raise ContainerError(f"refusing to write through symlink {parent}")
        if not parent.exists():
            parent.mkdir(mode=0o755)
    target = root / rel
    if target.is_symlink():
        target.unlink()
    data = data.encode() if isinstance(data, str) else data
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(target, mode)


def _network_file(ipv4, gateway, ipv6, nameserver) -> str:
    lines = ["# written by localcloud", "[Match]", "Name=host0", "", "[Network]",
             f"Address={ipv4}", "LinkLocalAddressing=ipv6", "IPv6AcceptRA=no"]
    if ipv6:
        lines.append(f"Address={ipv6}")
    if gateway:  # None keeps the container without any route off its own subnet
        lines.append(f"Gateway={gateway}")
    if nameserver:
        lines.append(f"DNS={nameserver}")
    return "\n".join(lines) + "\n"


def _seed(root: Path, names, host, hostname, ipv4, gateway, ipv6, nameserver, apt_proxy_url,
          authorized_keys, user_data, meta_data) -> None:
    seed = "var/lib/cloud/seed/nocloud"
    if meta_data is None and (root / seed / "meta-data").exists():
        meta_data = json.loads((root / seed / "meta-data").read_text())  # a restart: same id
    meta = meta_data or {"instance-id": f"iid-{uuid.uuid4().hex}",
                         "local-hostname": hostname or host}
    _write(root, f"{seed}/meta-data", json.dumps(meta) + "\n", 0o600)  # JSON is YAML
    # user-data may hold secrets (keys); cloud-init also accepts it gzip-compressed.
    _write(root, f"{seed}/user-data", user_data if user_data is not None else b"#cloud-config\n{}\n",
           0o600)
    # Same name as systemd's own file for nspawn's host0 (DHCP), which this one masks.
    _write(root, "etc/systemd/network/80-container-host0.network",
           _network_file(ipv4, gateway, ipv6, nameserver))
    _write(root, "etc/resolv.conf", f"nameserver {nameserver}\n" if nameserver else "")
    proxy = (f'Acquire::http::Proxy "{apt_proxy_url}";\nAcquire::https::Proxy "{apt_proxy_url}";\n'
             if apt_proxy_url else "")
    _write(root, "etc/apt/apt.conf.d/90localcloud-proxy", proxy)
    _write(root, "root/.ssh/authorized_keys", "".join(k.strip() + "\n" for k in authorized_keys),
           0o600)
    os.chmod(root / "root/.ssh", 0o700)
    short = (hostname or host).split(".")[0]
    _write(root, "etc/hostname", short + "\n")
    names_line = f"{hostname} {short}" if hostname and hostname != short else short
    _write(root, "etc/hosts", f"127.0.0.1 localhost\n::1 localhost\n{ipv4.ip} {names_line}\n")


# Downloaded .debs are kept on the machine: handed to each new host before it boots and
# collected from it when it stops. The install step still runs for real (apt checks each
# package's hash), but a repeat deploy need not fetch the packages again. Copies, not a shared
# bind mount: apt locks its archive dir, and two hosts installing at once must not collide.
APT_ARCHIVES = "var/cache/apt/archives"


def deb_cache() -> Path:
    return naming.cache_dir() / "apt-archives"


def _share_debs(src: Path, dst: Path) -> None:
    """Hard-link (or copy) every .deb of `src` that `dst` lacks; each appears whole or not at all."""
    if not src.is_dir():
        return
    dst.mkdir(parents=True, exist_ok=True)
    for deb in src.glob("*.deb"):
        target = dst / deb.name
        if target.exists():
            continue
        tmp = dst / f".{deb.name}.tmp"
        try:
            os.link(deb, tmp)
        except OSError:
            shutil.copyfile(deb, tmp)
        os.replace(tmp, target)


def start(names: naming.StackNames, host: str, *, bridge: str, ipv4: str,
          gateway: str | None = None, ipv6: str | None = None, nameserver: str | None = None,
          apt_proxy_url: str | None = None, authorized_keys: list[str] | tuple[str, ...] = (),
          user_data: bytes | None = None, meta_data: dict | None = None,
          hostname: str | None = None, image_dir: Path | None = None,
          binds: tuple[tuple[str, str], ...] = ()) -> Machine:
    """Boot host `host` of the stack, detached; returns once its systemd runs (not yet sshd:
    see wait_ssh). A host stopped without destroy keeps its disk and boots again from it.
    `binds`: (host path, path inside) pairs bind-mounted before boot (a data volume that
    outlives the host: a directory, or a block device node)."""
    if status(names, host):
        raise ContainerError(f"{host} is already running; stop it first")
    p = _paths(names, host)
    machine = names.machine(host)
    ipv4_if = IPv4Interface(ipv4)
    ipv6_if = IPv6Interface(ipv6) if ipv6 else None
    lower = image_dir or image.ensure_image()
    for key in ("upper", "work", "root"):
        p[key].mkdir(parents=True, exist_ok=True)
    if not mounts.is_mounted(p["root"]):
        mounts.mount_overlay(lower, p["upper"], p["work"], p["root"])
    try:
        _seed(p["root"], names, host, hostname, ipv4_if, gateway, ipv6_if, nameserver,
              apt_proxy_url, authorized_keys, user_data, meta_data)
        _share_debs(deb_cache(), p["upper"] / APT_ARCHIVES)
        argv = ["systemd-nspawn", f"--directory={p['root']}", f"--machine={machine}",
                "--register=no", "--keep-unit", f"--network-bridge={bridge}",
                "--resolv-conf=off", "--console=read-only",
                *(f"--bind={src}:{dst}" for src, dst in binds), "--boot"]
        pid = process.spawn(argv, p["log"], p["pid"])
        leader = _wait_leader(pid, p["log"])
    except BaseException:
        stop(names, host, timeout=5)
        raise
    record = Machine(host, machine, p["root"], pid, leader, ipv4_if)
    p["record"].write_text(json.dumps({"host": host, "machine": machine, "ipv4": str(ipv4_if),
                                       "ipv6": str(ipv6_if) if ipv6_if else None}) + "\n")
    return record


def set_authorized_keys(names: naming.StackNames, host: str, keys: list[str]) -> None:
    """Replace root's SSH keys of a host (running or stopped), in place: a key rotation needs
    no new host."""
    root = _paths(names, host)["root"]
    if not mounts.is_mounted(root):
        raise ContainerError(f"{host} has no mounted root at {root}; start it first")
    _write(root, "root/.ssh/authorized_keys", "".join(k.strip() + "\n" for k in keys), 0o600)


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and process.parent_pid(int(entry.name)) == pid:
            kids.append(int(entry.name))
    return kids


def find_leader(nspawn_pid: int) -> int | None:
    """The container's systemd: a descendant of the nspawn process that is PID 1 in a PID
    namespace other than ours. The nspawn helpers share the HOST's namespaces; entering one of
    them would act on the host, so they must never be taken for the leader."""
    own_ns = os.readlink("/proc/self/ns/pid")
    todo = [nspawn_pid]
    while todo:
        pid = todo.pop()
        try:
            nspid = next(line.split()[1:] for line in
                         Path(f"/proc/{pid}/status").read_text().splitlines()
                         if line.startswith("NSpid:"))
            ns = os.readlink(f"/proc/{pid}/ns/pid")
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
        if pid != nspawn_pid and len(nspid) > 1 and nspid[-1] == "1" and ns != own_ns:
            return pid
        todo += _children(pid)
    return None


def _wait_leader(pid: int, log: Path) -> int:
    deadline = time.monotonic() + LEADER_TIMEOUT
    while time.monotonic() < deadline:
        if not process.is_alive(pid):
            raise ContainerError(f"systemd-nspawn exited at start; {log}:\n"
                                 f"{log.read_text(errors='replace')[-3000:]}")
        leader = find_leader(pid)
        if leader:
            return leader
        time.sleep(0.1)
    raise ContainerError(f"no container systemd under nspawn {pid} after {LEADER_TIMEOUT} s")


def _nspawn_pid(names: naming.StackNames, host: str) -> int | None:
    p = _paths(names, host)
    return process.recorded(p["pid"], ["systemd-nspawn", f"--machine={names.machine(host)}",
                                       f"--directory={p['root']}"])


def status(names: naming.StackNames, host: str) -> bool:
    """True while the host's recorded nspawn process runs (and is ours, not a reused PID)."""
    return _nspawn_pid(names, host) is not None


def machine(names: naming.StackNames, host: str) -> Machine | None:
    """The running host's record, or None."""
    pid = _nspawn_pid(names, host)
    leader = find_leader(pid) if pid else None
    if not leader:
        return None
    data = json.loads(_paths(names, host)["record"].read_text())
    return Machine(host, data["machine"], _paths(names, host)["root"], pid, leader,
                   IPv4Interface(data["ipv4"]))


def hosts(names: naming.StackNames) -> list[str]:
    """Hosts of the stack that have a directory (running or stopped)."""
    return sorted(d.name for d in names.hosts_dir.iterdir()) if names.hosts_dir.exists() else []


def wait_ssh(ip: str, timeout: float = 60, port: int = 22) -> float:
    """Poll until an SSH banner answers on ip:port; returns the seconds it took."""
    started = time.monotonic()
    host = str(ip_interface(ip).ip) if "/" in str(ip) else str(ip)
    while time.monotonic() - started < timeout:
        try:
            with socket.create_connection((host, port), timeout=2) as conn:
                conn.settimeout(2)
                if conn.recv(4).startswith(b"SSH-"):
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"no ssh on {host}:{port} after {timeout} s")


def stop(names: naming.StackNames, host: str, timeout: float = 20, destroy: bool = False) -> None:
    """Power the host off (SIGRTMIN+4 to its systemd), SIGKILL when it outlives `timeout`;
    then unmount its root, and with `destroy` delete its directories. Idempotent."""
    p = _paths(names, host)
    pid = _nspawn_pid(names, host)
    if pid:
        leader = find_leader(pid)
        if leader:
            os.kill(leader, signal.SIGRTMIN + 4)  # systemd: orderly poweroff
        if not process.wait_gone(pid, time.monotonic() + (timeout if leader else 0)):
            if leader and process.is_alive(leader):
                # SIGKILL to a PID namespace's init takes every process inside with it.
                os.kill(leader, signal.SIGKILL)
            process.terminate(pid, 5, signal.SIGKILL)
    p["pid"].unlink(missing_ok=True)
    _share_debs(p["upper"] / APT_ARCHIVES, deb_cache())
    _remove_nspawn_leftovers(names.machine(host), p["root"])
    if p["dir"].exists():
        mounts.unmount_all(p["dir"])
    if destroy:
        mounts.remove_tree(p["dir"])


def _remove_nspawn_leftovers(machine_name: str, root: Path) -> None:
    """nspawn removes these itself only where /run is a tmpfs; on this kind of host it is not,
    and they would pile up, one per boot."""
    mounts.remove_tree(NSPAWN_RUN / "propagate" / machine_name)
    if root.exists():
        st = root.stat()
        (NSPAWN_RUN / "locks" / f"inode-{st.st_dev}:{st.st_ino}").unlink(missing_ok=True)


def run(names: naming.StackNames, host: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
    """Run argv inside the running host (diagnostics), in all of its namespaces."""
    found = machine(names, host)
    if not found:
        raise ContainerError(f"{host} is not running")
    if os.readlink(f"/proc/{found.leader_pid}/ns/pid") == os.readlink("/proc/self/ns/pid"):
        raise ContainerError(f"pid {found.leader_pid} is in the host's namespace; refusing")
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(["nsenter", "-t", str(found.leader_pid), "-m", "-u", "-i", "-n", "-p",
                           "--", *argv], **kw)
