"""A qemu guest for bench/durability.py: a real machine whose power can be cut (kill -9 qemu).
KVM where /dev/kvm runs a stock kernel, else TCG (see ``accelerator``).

Killing a container leaves the host's page cache intact, so it proves little about fsync; a
guest's page cache dies with qemu. Its disks are opened with ``cache=none`` (O_DIRECT on this
machine): what the guest had flushed is on this machine's disk, what it had not is gone.

The guest boots from the same cached Debian image the containers use (localcloud/image.py),
copied, with Debian's ``linux-image-amd64`` and ``udev`` installed by chroot (udev makes the
/dev/disk/by-uuid links the agent mounts the data volume by). The kernel and initrd come from
that image's /boot. Cached under ``${XDG_CACHE_HOME:-~/.cache}/bulletproof-mail/vm-images/``,
keyed by a hash of this recipe and of the container image's key. Each guest gets its own copy
of the root disk (the localcloud seed written into it by a loop mount, as a container's) and a
blank raw data disk (virtio, /dev/vdb) that the agent formats (spec volume kind block).

Network: a tap device on the stack's bridge, the guest on the mail address, no gateway: it
reaches only the bridge (DNS, the package proxy), like the containers. Needs qemu-system-x86
and qemu-utils (Debian packages), /dev/kvm, losetup, root.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from localcloud import container, image, mounts, naming, process

RECIPE_VERSION = 1
PACKAGES = ("linux-image-amd64", "udev")
ROOT_SIZE = "3G"
DATA_SIZE = 1024 * 1024 * 1024
MEMORY_MB = 1024
CPUS = 2
# Nested KVM refuses the ARCH_CAPABILITIES MSR (0x10a) that "-cpu host" sets.
KVM_CPU = "host,-arch-capabilities"
PVM_MODULE = "/sys/module/kvm_pvm"


def accelerator() -> tuple[str, str]:
    """("kvm", cpu) where /dev/kvm runs a stock kernel; ("tcg", cpu) where it is kvm-pvm
    (paravirtualised KVM without hardware virtualisation: only a PVM-enabled guest kernel boots
    there, Debian's linux-image-amd64 hangs right after decompression). TCG emulates the CPU;
    the power cut is the same: qemu and the guest's RAM die, cache=none disks keep what was
    written. BPM_GUEST_ACCEL=kvm|tcg overrides."""
    chosen = os.environ.get("BPM_GUEST_ACCEL") or ("tcg" if os.path.exists(PVM_MODULE) else "kvm")
    return (chosen, KVM_CPU if chosen == "kvm" else "max")
# net.ifnames=0: the NIC is eth0 whatever the PCI slot, so one network file matches it.
KERNEL_ARGS = "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1"
# The seed's network file matches nspawn's host0; create() copies it for the guest's eth0.
EXTRA_FILES = {"etc/fstab": "/dev/vda / ext4 errors=remount-ro 0 1\n"}
QEMU_HINT = "apt-get install --no-install-recommends qemu-system-x86 qemu-utils"


class GuestError(RuntimeError):
    pass


def tools_missing() -> list[str]:
    missing = [t for t in ("qemu-system-x86_64", "qemu-img", "losetup", "mkfs.ext4")
               if not shutil.which(t)]
    if not os.path.exists("/dev/kvm"):
        missing.append("/dev/kvm")
    return missing


def recipe_key() -> str:
    recipe = json.dumps([RECIPE_VERSION, image.image_key(), PACKAGES, ROOT_SIZE, EXTRA_FILES],
                        sort_keys=True)
    return f"debian12-vm-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}"


def cache_root() -> Path:
    return naming.cache_dir() / "vm-images"


@dataclass(frozen=True)
class VmImage:
    root_raw: Path
    kernel: Path
    initrd: Path


def _run(argv: list[str], timeout: float = 900, **kw) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if done.returncode != 0:
        raise GuestError(f"{' '.join(argv[:5])}... failed ({done.returncode}):\n"
                         f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def ensure_image(log=print) -> VmImage:
    """The cached guest image, built first when missing (a few minutes: kernel + initramfs)."""
    final = cache_root() / recipe_key()
    found = VmImage(final / "root.raw", final / "vmlinuz", final / "initrd.img")
    if all(p.exists() for p in (found.root_raw, found.kernel, found.initrd)):
        return found
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all(p.exists() for p in (found.root_raw, found.kernel, found.initrd)):
            return found
        build = cache_root() / f".build-{recipe_key()}-{os.getpid()}"
        try:
            started = time.monotonic()
            _build(build, log)
            os.rename(build / "out", final)
            log(f"kvm_guest: image {final.name} built in {time.monotonic() - started:.0f} s")
        finally:
            mounts.remove_tree(build)
        for old in cache_root().glob("debian12-vm-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    return found


def _build(build: Path, log) -> None:
    base = image.ensure_image(log=log)
    rootfs = build / "rootfs"
    out = build / "out"
    out.mkdir(parents=True)
    log(f"kvm_guest: copying {base.name} and installing {' '.join(PACKAGES)} by chroot")
    _run(["cp", "-a", str(base), str(rootfs)])
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text(image.POLICY_RC_D)
    policy.chmod(0o755)
    resolv = rootfs / "etc/resolv.conf"
    saved_resolv = resolv.read_text()
    shutil.copyfile("/etc/resolv.conf", resolv)  # the chroot's apt uses this machine's resolver
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           "LC_ALL": "C.UTF-8"}
    mounted = []
    try:
        for kind, rel in (("proc", "proc"), ("sysfs", "sys")):
            (rootfs / rel).mkdir(exist_ok=True)
            _run(["mount", "-t", kind, kind, str(rootfs / rel)])
            mounted.append(rootfs / rel)
        _run(["mount", "--bind", "/dev", str(rootfs / "dev")])
        mounted.append(rootfs / "dev")
        _run(["chroot", str(rootfs), "apt-get", "update"], env=env)
        _run(["chroot", str(rootfs), "apt-get", "install", "-y", "--no-install-recommends",
              *PACKAGES], env=env, timeout=1200)
        _run(["chroot", str(rootfs), "apt-get", "clean"], env=env)
    finally:
        for m in reversed(mounted):
            subprocess.run(["umount", "-l", str(m)], capture_output=True)
    resolv.write_text(saved_resolv)
    policy.unlink()
    shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
    (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True)
    for rel, text in EXTRA_FILES.items():
        (rootfs / rel).write_text(text)
    kernels = sorted((rootfs / "boot").glob("vmlinuz-*"))
    initrds = sorted((rootfs / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise GuestError(f"no kernel/initrd in {rootfs}/boot after installing {PACKAGES}")
    shutil.copyfile(kernels[-1], out / "vmlinuz")
    shutil.copyfile(initrds[-1], out / "initrd.img")
    log("kvm_guest: making the ext4 root disk image (mkfs.ext4 -d)")
    _run(["mkfs.ext4", "-q", "-F", "-L", "vmroot", "-d", str(rootfs), str(out / "root.raw"),
          ROOT_SIZE])


@dataclass
class Guest:
    names: naming.StackNames
    workdir: Path
    tap: str
    mac: str
    pid: int | None = None
    boots: int = 0

    @property
    def root(self) -> Path:
        return self.workdir / "root.raw"

    @property
    def data(self) -> Path:
        return self.workdir / "data.raw"

    @property
    def console(self) -> Path:
        return self.workdir / "console.log"


def tap_name(names: naming.StackNames) -> str:
    return "bt" + names.bridge[2:]  # "bt-<8 hex>", beside the bridge "bm-<8 hex>"


def create(names: naming.StackNames, workdir: str, *, bridge: str, ipv4: str, nameserver: str,
           apt_proxy_url: str, authorized_keys: list[str], hostname: str, log=print) -> Guest:
    """A new guest (not started): its own root disk with the localcloud seed, a blank data
    disk, a tap device on the bridge."""
    img = ensure_image(log=log)
    g = Guest(names, Path(workdir) / "guest", tap_name(names),
              "52:54:00:" + ":".join(hashlib.sha256(names.bridge.encode()).hexdigest()[i:i + 2]
                                     for i in (0, 2, 4)))
    g.workdir.mkdir(parents=True, exist_ok=True)
    _run(["cp", "--sparse=always", str(img.root_raw), str(g.root)])
    with open(g.data, "wb") as f:
        f.truncate(DATA_SIZE)  # blank: the agent makes the filesystem (volume kind block)
    mnt = Path(tempfile.mkdtemp(prefix="bpm-guest-root-"))
    try:
        _run(["mount", "-o", "loop", str(g.root), str(mnt)])
        try:
            container._seed(mnt, names, "mail", hostname, container.IPv4Interface(ipv4), None,
                            None, nameserver, apt_proxy_url, authorized_keys, None, None)
            host0 = mnt / "etc/systemd/network/80-container-host0.network"
            (mnt / "etc/systemd/network/80-guest-eth0.network").write_text(
                host0.read_text().replace("Name=host0", "Name=eth0"))
            container._share_debs(container.deb_cache(), mnt / container.APT_ARCHIVES)
        finally:
            _run(["umount", str(mnt)])
    finally:
        mnt.rmdir()
    subprocess.run(["ip", "link", "del", g.tap], capture_output=True)  # a leftover
    _run(["ip", "tuntap", "add", "dev", g.tap, "mode", "tap"])
    _run(["ip", "link", "set", g.tap, "master", bridge, "up"])
    return g


def start(g: Guest) -> int:
    """Boot the guest detached; returns qemu's PID (also in workdir/qemu.pid)."""
    if g.pid and process.is_alive(g.pid):
        raise GuestError(f"guest already runs (qemu {g.pid})")
    img = ensure_image()
    drive = "format=raw,if=virtio,cache=none,aio=native"
    accel, cpu = accelerator()
    argv = ["qemu-system-x86_64", "-name", f"bpm-{g.names.bridge}", "-machine", "q35",
            "-accel", "kvm" if accel == "kvm" else "tcg,thread=multi", "-cpu", cpu,
            "-m", str(MEMORY_MB), "-smp", str(CPUS),
            "-kernel", str(img.kernel), "-initrd", str(img.initrd), "-append", KERNEL_ARGS,
            "-drive", f"file={g.root},{drive}", "-drive", f"file={g.data},{drive}",
            "-netdev", f"tap,id=n0,ifname={g.tap},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={g.mac}",
            "-display", "none", "-monitor", "none", "-serial", f"file:{g.console}.{g.boots}",
            "-nodefaults", "-no-user-config"]
    g.pid = process.spawn(argv, g.workdir / "qemu.log", g.workdir / "qemu.pid")
    g.boots += 1
    time.sleep(0.5)
    if not process.is_alive(g.pid):
        raise GuestError(f"qemu exited at start: {(g.workdir / 'qemu.log').read_text()[-2000:]}")
    return g.pid


def power_cut(g: Guest) -> None:
    """kill -9 qemu: the guest's page cache and its disks' queued writes go with it."""
    if g.pid and process.is_alive(g.pid):
        os.kill(g.pid, signal.SIGKILL)
        if not process.wait_gone(g.pid, time.monotonic() + 10):
            raise GuestError(f"qemu {g.pid} outlived SIGKILL for 10 s")
    g.pid = None


def destroy(g: Guest | None) -> None:
    """Stop qemu (by its PID) and remove the tap device. Idempotent; the disks go with the
    caller's workdir."""
    if g is None:
        return
    if g.pid:
        process.terminate(g.pid, 5, signal.SIGKILL)
        g.pid = None
    subprocess.run(["ip", "link", "del", g.tap], capture_output=True)
