"""Mount helpers: cleanup must unmount before it deletes, or rmtree walks into a live mount."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as octal.
    return field.encode().decode("unicode_escape")


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below `path`, deepest first (the order to unmount them)."""
    base = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            point = _unescape(line.split()[4])
            if point == base or point.startswith(base.rstrip("/") + "/"):
                found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def used_as_lower(path: Path, mountinfo: str | None = None) -> bool:
    """Whether an overlay mount reads `path` as a lower layer (a container runs on it)."""
    if mountinfo is None:
        with open("/proc/self/mountinfo") as info:
            mountinfo = info.read()
    names = {str(path), os.path.realpath(path)}  # as given to mount, or resolved
    for line in mountinfo.splitlines():
        for option in line.rpartition(" - ")[2].split(" ")[-1].split(","):
            if option.startswith("lowerdir=") and names & set(map(_unescape, option[9:].split(":"))):
                return True
    return False


def is_mounted(path: Path) -> bool:
    return Path(os.path.realpath(path)) in mounts_under(path)


def mount_overlay(lower: Path, upper: Path, work: Path, target: Path) -> None:
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(target)],
                   check=True, capture_output=True, text=True)


def unmount_all(path: Path) -> None:
    """Unmount everything at or below `path`; a lazy unmount only when a plain one is refused."""
    for point in mounts_under(path):
        done = subprocess.run(["umount", str(point)], capture_output=True, text=True)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(point)], check=True, capture_output=True,
                           text=True)
    left = mounts_under(path)
    if left:
        raise RuntimeError(f"still mounted under {path}: {left}")


def remove_tree(path: Path) -> None:
    """Delete a directory tree, but only after nothing is mounted inside it."""
    if not path.exists() and not path.is_symlink():
        return
    unmount_all(path)
    shutil.rmtree(path)
