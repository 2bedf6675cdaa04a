"""The data volume at DATA_DIR (spec ``volume``), in place before anything is written to it.

- mounted: DATA_DIR must already be a mount point. A bare directory there is refused, never
  written to: the mail would land on the host's own disk and go with it.
- directory: DATA_DIR is a directory of the host's disk; created if missing.
- block: wait (bounded) for the device; make ext4 on it only when blkid finds nothing on it
  (no filesystem, no partition table: a disk that holds anything is never formatted); mount
  it by filesystem UUID with a systemd mount unit that the mail daemons require
  (RequiresMountsFor, agent/render.py VOLUME_UNITS).
"""
from __future__ import annotations

import os
import shutil
import stat
import time
from dataclasses import dataclass, field

from agent import files
from agent.contract import DATA_DIR, DATA_STATE_DIR, VOLUME_LABEL
from agent.durable import read_text
from agent.errors import VolumeError
from agent.host import Host
from agent.render import HEADER
from agent.spec_model import Volume
from agent.step import Context, StepResult

NAME = "volume"
DEVICE_WAIT_S = 120.0     # a cloud disk may show up a while after boot
UUID_LINK_WAIT_S = 30.0   # udev makes /dev/disk/by-uuid/<uuid> shortly after mkfs
JOB_TIMEOUT_S = 90        # at boot: how long the mount (and the daemons) wait for the disk
MOUNT_UNIT = "/etc/systemd/system/srv-mail.mount"  # systemd-escape --path --suffix=mount DATA_DIR
WANTS_LINK = "/etc/systemd/system/local-fs.target.wants/srv-mail.mount"


@dataclass(frozen=True)
class Facts:
    exists: bool                           # DATA_DIR exists
    mounted: tuple[int, int] | None        # device number of the mount at DATA_DIR, or None
    empty: bool = True                     # DATA_DIR holds nothing a mount would hide
    device: tuple[int, int] | None = None  # block: the device's number; None: not there
    probe: dict = field(default_factory=dict)  # block: `blkid -p` of the device; {}: blank
    unit: str | None = None                # block: the mount unit on disk
    enabled: bool = False                  # block: the mount unit is wanted at boot


def mount_unit(uuid: str, device: str) -> str:
    return f"""# {HEADER}
# The data volume (spec volume.device {device}): mailboxes, Postfix queue, TLS pair.
# Not required by local-fs.target: a missing disk must not drop the host into emergency mode
# (no SSH). Postfix and Dovecot require it (RequiresMountsFor), so they stay down instead.
[Unit]
Description=bulletproof-mail data volume
Before=local-fs.target
# Bounded: a disk that never appears fails this mount, and the mail daemons, after this.
JobTimeoutSec={JOB_TIMEOUT_S}

[Mount]
What=/dev/disk/by-uuid/{uuid}
Where={DATA_DIR}
Type=ext4
Options=defaults,nodev,nosuid,noexec

[Install]
WantedBy=local-fs.target
"""


def decide(vol: Volume, f: Facts) -> list[str]:
    """What to do, in order; a VolumeError for a volume the agent must not touch."""
    if vol.kind == "directory":
        return [] if f.exists else [f"create {DATA_DIR}"]
    if vol.kind == "mounted":
        if f.mounted is None:
            raise VolumeError(
                f"{DATA_DIR} is not a mount point, but the spec says the volume is mounted there",
                file=DATA_DIR, fix=f"attach the data volume at {DATA_DIR} before the agent runs "
                "(the stack's bind mount or disk); the agent never writes the mail to a bare "
                "directory")
        return []
    return _decide_block(vol, f)


def _decide_block(vol: Volume, f: Facts) -> list[str]:
    if f.device is None:
        raise VolumeError(f"block device {vol.device} not there after {DEVICE_WAIT_S:.0f} s",
                          file=vol.device, fix="attach the data disk to the host (or correct "
                          "volume.device), then re-run apply")
    if f.mounted is not None and f.mounted != f.device:
        raise VolumeError(f"{DATA_DIR} is mounted from device {f.mounted[0]}:{f.mounted[1]}, "
                          f"not from {vol.device}", file=DATA_DIR,
                          fix=f"unmount what is at {DATA_DIR} or correct volume.device")
    todo = []
    if not f.probe:
        todo.append(f"make ext4 (label {VOLUME_LABEL}) on the blank {vol.device}")
    elif f.probe.get("TYPE") != "ext4":
        found = " ".join(f"{k}={v}" for k, v in sorted(f.probe.items()) if k != "DEVNAME")
        raise VolumeError(f"{vol.device} holds something other than ext4 ({found}); "
                          "the agent never formats a device that holds anything",
                          file=vol.device, fix="check volume.device; if the disk really is "
                          "spare, wipe it by hand (wipefs -a) and re-run apply")
    if f.mounted is None and not f.empty:
        raise VolumeError(f"{DATA_DIR} holds files on the host's own disk; mounting {vol.device} "
                          "would hide them", file=DATA_DIR,
                          fix="move them onto the volume by hand (mount it elsewhere first)")
    uuid = f.probe.get("UUID")
    if not todo and f.mounted is not None and f.enabled and f.unit == mount_unit(uuid, vol.device):
        return todo
    return todo + [f"mount {vol.device} at {DATA_DIR} by UUID ({MOUNT_UNIT})"]


# -- facts ---------------------------------------------------------------------------------
def mount_at(path: str) -> tuple[int, int] | None:
    """The device number of the mount at ``path`` (the topmost), or None: not a mount point.
    From mountinfo, not st_dev: a bind mount of a directory of the same filesystem counts."""
    real, found = os.path.realpath(path), None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4].encode().decode("unicode_escape") == real:
                major, minor = fields[2].split(":")
                found = (int(major), int(minor))
    return found


def device_number(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.major(st.st_rdev), os.minor(st.st_rdev)) if stat.S_ISBLK(st.st_mode) else None


def wait_device(path: str, timeout: float) -> tuple[int, int] | None:
    deadline = time.monotonic() + timeout
    while (found := device_number(path)) is None and time.monotonic() < deadline:
        time.sleep(1)
    return found


def probe(host: Host, device: str) -> dict:
    """``blkid -p`` (the device itself, not the cache): {} only when it finds nothing at all."""
    proc = host.run(["blkid", "-p", "-o", "export", device], check=False)
    if proc.returncode == 2 and not proc.stderr.strip():
        return {}
    if proc.returncode != 0:
        raise VolumeError(f"blkid could not probe {device}", file=device,
                          tool_output=proc.stderr + proc.stdout, fix="check the device")
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def facts(host: Host, vol: Volume) -> Facts:
    data = host.path(DATA_DIR)
    exists = os.path.isdir(data)
    base = Facts(exists, mount_at(data) if exists else None,
                 not exists or not os.listdir(data))
    if vol.kind != "block":
        return base
    device = wait_device(host.path(vol.device), DEVICE_WAIT_S)
    return Facts(base.exists, base.mounted, base.empty, device,
                 probe(host, vol.device) if device else {},
                 read_text(host.path(MOUNT_UNIT)), os.path.lexists(host.path(WANTS_LINK)))


# -- acting ----------------------------------------------------------------------------------
def make_filesystem(host: Host, device: str) -> None:
    # No -F, and an empty stdin: should mke2fs itself find anything on the device, its
    # "Proceed anyway?" is answered no.
    proc = host.run(["mkfs.ext4", "-q", "-L", VOLUME_LABEL, device], check=False, input="",
                    timeout=1800)
    if proc.returncode:
        raise VolumeError(f"mkfs.ext4 on {device} failed", file=device,
                          tool_output=proc.stderr + proc.stdout, fix="check the device")
    if shutil.which("udevadm"):  # udev makes the by-uuid link (none in a container)
        host.run(["udevadm", "settle", "--timeout=30"], check=False, timeout=60)


def mount(host: Host, device: str) -> None:
    uuid = probe(host, device).get("UUID", "")
    link = f"/dev/disk/by-uuid/{uuid}"
    deadline = time.monotonic() + UUID_LINK_WAIT_S
    while uuid and not os.path.exists(host.path(link)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not uuid or not os.path.exists(host.path(link)):
        raise VolumeError(f"no {link} for {device}", file=device,
                          fix="udev makes that link: check `udevadm info` of the device")
    files.write_atomic(host.path(MOUNT_UNIT), mount_unit(uuid, device).encode(), 0o644,
                       "root", "root")
    for argv in (["systemctl", "daemon-reload"], ["systemctl", "enable", "srv-mail.mount"],
                 ["systemctl", "start", "srv-mail.mount"]):
        proc = host.run(argv, check=False, timeout=JOB_TIMEOUT_S + 60)
        if proc.returncode:
            log = host.run(["journalctl", "-u", "srv-mail.mount", "-n", "20", "--no-pager"],
                           check=False).stdout
            raise VolumeError(f"{' '.join(argv)} failed", file=MOUNT_UNIT,
                              tool_output=proc.stderr + log, fix="see journalctl -u srv-mail.mount")
    if mount_at(host.path(DATA_DIR)) != device_number(host.path(device)):
        raise VolumeError(f"{device} is not mounted at {DATA_DIR} after starting the unit",
                          file=MOUNT_UNIT, fix="see journalctl -u srv-mail.mount")


def apply(ctx: Context) -> StepResult:
    host, vol = ctx.host, ctx.spec.volume
    if vol.kind == "block" and not host.live:
        return StepResult(NAME, detail="not the live root: block device not touched")
    todo = decide(vol, facts(host, vol))
    result = StepResult(NAME, changed=bool(todo), detail="; ".join(todo) or
                        f"{DATA_DIR} in place ({vol.kind})")
    if host.dry_run:
        return result
    for action in todo:
        if action.startswith("make ext4"):
            make_filesystem(host, vol.device)
        elif action.startswith("mount"):
            mount(host, vol.device)
    os.makedirs(host.path(DATA_STATE_DIR), mode=0o755, exist_ok=True)  # DATA_DIR too
    os.chmod(host.path(DATA_DIR), 0o755)  # vmail and postfix must reach their trees
    return result
