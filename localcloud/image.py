"""The cached Debian 12 image every local host boots from (the overlayfs lower layer).

Built once per machine with debootstrap, then cloud-init installed by chroot. The cache key
holds IMAGE_VERSION and a hash of the recipe, so changing the recipe builds a new image
instead of booting a stale one. The Debian mirror comes from the host's own apt
configuration at run time; no registry host name is written here.
"""
from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from . import mounts, naming

IMAGE_VERSION = 1
SUITE = "bookworm"
INCLUDE = ("systemd,systemd-sysv,dbus,openssh-server,iproute2,python3,python3-jinja2,"
           "ca-certificates")
CHROOT_PACKAGES = ("cloud-init",)
CLOUD_CFG = """\
# localcloud: the seed is a NoCloud dir written before boot; the network is configured by
# systemd-networkd from a file localcloud writes, so cloud-init must not touch it.
datasource_list: [ NoCloud, None ]
network: {config: disabled}
# minbase has no generated locales: cloud-init's default en_US.UTF-8 would fail its locale step
locale: false
ssh_genkeytypes: [ed25519, ecdsa, rsa]
"""
# Host keys are made on the first boot of each container, not shared from the image.
SSH_KEYGEN_DROPIN = "[Service]\nExecStartPre=/usr/bin/ssh-keygen -A\n"
# Static files of the image, written after the packages; part of the cache key.
IMAGE_FILES = {
    "etc/cloud/cloud.cfg.d/90-localcloud.cfg": CLOUD_CFG,
    "etc/systemd/system/ssh.service.d/localcloud-keygen.conf": SSH_KEYGEN_DROPIN,
    "etc/default/locale": "LANG=C.UTF-8\n",
    # debootstrap copied the host's resolver config; each container gets its own.
    "etc/resolv.conf": "# written per container by localcloud\n",
    "etc/hostname": "",
    "etc/machine-id": "",  # empty: systemd makes a fresh one per container
}
POLICY_RC_D = "#!/bin/sh\n# localcloud: no daemon starts inside the build chroot\nexit 101\n"


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None


def host_apt_sources() -> list[AptSource]:
    """`deb` entries of the host's apt config (deb822 .sources and one-line .list)."""
    found: list[AptSource] = []
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in Path(path).read_text().split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                if line.strip() and not line.startswith(("#", " ", "\t")) and ":" in line:
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                for uri in fields.get("uris", "").split():
                    found.append(AptSource(uri, tuple(fields.get("suites", "").split()),
                                           tuple(fields.get("components", "main").split()),
                                           fields.get("signed-by")))
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        if os.path.exists(path):
            for line in Path(path).read_text().splitlines():
                words = line.split("#")[0].split()
                if len(words) >= 3 and words[0] == "deb":
                    words = [w for w in words[1:] if not w.startswith("[")]  # drop [options]
                    found.append(AptSource(words[0], (words[1],), tuple(words[2:]), None))
    return found


def host_mirror(suite: str = SUITE) -> str:
    for source in host_apt_sources():
        if suite in source.suites:
            return source.uri
    raise RuntimeError(f"no `deb` source for suite {suite!r} in the host's apt configuration "
                       "(/etc/apt/sources.list*); localcloud takes its mirror from there")


def mirror_hosts() -> list[str]:
    """Host names of the host's apt sources: the only sites the package proxy lets through."""
    return sorted({urlsplit(s.uri).hostname for s in host_apt_sources() if urlsplit(s.uri).hostname})


def image_key() -> str:
    recipe = json.dumps([SUITE, INCLUDE, CHROOT_PACKAGES, IMAGE_FILES], sort_keys=True)
    return f"debian12-v{IMAGE_VERSION}-{hashlib.sha256(recipe.encode()).hexdigest()[:8]}"


def images_dir() -> Path:
    return naming.cache_dir() / "images"


def image_path() -> Path:
    return images_dir() / image_key()


def ensure_image(log=print) -> Path:
    """The cached image, built first when missing. A lock file makes concurrent callers wait
    for one build instead of racing two debootstraps."""
    final = image_path()
    if (final / "etc/os-release").exists():
        return final
    images_dir().mkdir(parents=True, exist_ok=True)
    with open(images_dir() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "etc/os-release").exists():  # another caller built it while we waited
            return final
        for stale in images_dir().glob(".build-*"):  # left by a crashed build; we hold the lock
            mounts.remove_tree(stale)
        build = images_dir() / f".build-{image_key()}-{os.getpid()}"
        try:
            started = time.monotonic()
            _build(build, log)
            os.rename(build, final)  # atomic: a half-built image is never seen as the image
            log(f"localcloud: image {final.name} built in {time.monotonic() - started:.0f} s")
        finally:
            mounts.remove_tree(build)
        for old in prune_images(keep=final):
            log(f"localcloud: removed the old image {old.name}")
    return final


def prune_images(keep: Path, mountinfo: str | None = None) -> list[Path]:
    """Delete the images of older recipes (about 270 MB each) that no running container uses:
    a new recipe makes new hosts, and a host that still runs keeps its image. Caller holds the lock."""
    removed = []
    for old in sorted(images_dir().glob("debian12-*")):
        if old != keep and old.is_dir() and not mounts.used_as_lower(old, mountinfo):
            mounts.remove_tree(old)
            removed.append(old)
    return removed


def _run(argv: list[str], **kw) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, **kw)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... failed ({done.returncode}):\n"
                           f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def _write(root: Path, rel: str, text: str, mode: int = 0o644) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)
    path.chmod(mode)


def _sources_file() -> str:
    """The host's Debian `deb` sources for this suite family, as one deb822 file."""
    stanzas = []
    for s in host_apt_sources():
        suites = [x for x in s.suites if x == SUITE or x.startswith(SUITE + "-")]
        if suites:
            lines = ["Types: deb", f"URIs: {s.uri}", f"Suites: {' '.join(suites)}",
                     f"Components: {' '.join(s.components)}"]
            if s.signed_by and s.signed_by.startswith("/usr/share/keyrings/"):
                lines.append(f"Signed-By: {s.signed_by}")
            stanzas.append("\n".join(lines))
    return "\n\n".join(stanzas) + "\n"


def _build(root: Path, log) -> None:
    mounts.remove_tree(root)
    root.mkdir(parents=True)
    log(f"localcloud: debootstrap {SUITE} into {root} (takes a minute or two)")
    _run(["debootstrap", "--variant=minbase", f"--include={INCLUDE}", SUITE, str(root),
          host_mirror()])
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    _write(root, "etc/apt/sources.list.d/debian.sources", _sources_file())
    # policy-rc.d stops package scripts from starting daemons in the chroot (they would run
    # on the host's network and PID namespace); removed again before the image is final.
    _write(root, "usr/sbin/policy-rc.d", POLICY_RC_D, 0o755)
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           "LC_ALL": "C.UTF-8"}
    (root / "proc").mkdir(exist_ok=True)
    _run(["mount", "-t", "proc", "proc", str(root / "proc")])
    try:
        _run(["chroot", str(root), "apt-get", "update"], env=env)
        _run(["chroot", str(root), "apt-get", "install", "-y", "--no-install-recommends",
              *CHROOT_PACKAGES], env=env)
        _run(["chroot", str(root), "apt-get", "clean"], env=env)
        _run(["chroot", str(root), "systemctl", "enable", "ssh", "systemd-networkd"], env=env)
    finally:
        mounts.unmount_all(root / "proc")
    (root / "usr/sbin/policy-rc.d").unlink()
    for rel, text in IMAGE_FILES.items():
        _write(root, rel, text)
    for key in root.glob("etc/ssh/ssh_host_*"):
        key.unlink()
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)
