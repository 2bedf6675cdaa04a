"""Writes that survive a power cut, and reads that may find nothing: the agent's own state
files (journal, backup records) and the files it renders."""
from __future__ import annotations

import json
import os


def fsync_dir(d: str) -> None:
    """Make a rename in ``d`` durable: the journal may name this file after a power cut."""
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: str, data) -> None:
    """Whole or not at all (a temporary file fsynced, renamed, the directory fsynced), root
    only: the agent's state names repositories, runs and snapshots."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path))


def read_text(path: str) -> str | None:
    """The file's text, or None when it cannot be read (absent, a directory...)."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None
