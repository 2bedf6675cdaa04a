"""The jobs the timers run (backup, prune, check), the snapshot list, and the result file the
backup service keeps for ``status`` (agent/checks_backup.py)."""
from __future__ import annotations

import datetime
import json
import re
import time
from dataclasses import dataclass

from agent import backup_config as B
from agent.durable import write_json
from agent.errors import BackupError
from agent.host import Host
from agent.restic import NoRepository, Restic


@dataclass
class Job:
    """What every backup command works with."""
    host: Host
    settings: B.Settings
    layout: B.Layout
    restic: Restic


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def snapshot_time(restic_time: str) -> str:
    """restic's nanosecond timestamp, to the second (what Python and a human read)."""
    m = re.fullmatch(r"(.{19})(?:\.\d+)?(Z|[+-]\d\d:\d\d)", restic_time)
    return (m.group(1) + ("+00:00" if m.group(2) == "Z" else m.group(2))) if m else restic_time


def read_json(path: str, default):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def record(host: Host, result: dict) -> None:
    """The last run, and the last good one (status reports the newest snapshot's age)."""
    path = host.path(B.RESULT_FILE)
    previous = read_json(path, {})
    write_json(path, {"last": result,
                      "last_ok": result if result["ok"] else previous.get("last_ok")})


def run(job: Job) -> dict:
    """One backup of the mail; initialises the repository on the first."""
    started, t0 = now_iso(), time.monotonic()
    try:
        if job.layout.holds(job.settings.repository):
            raise BackupError(f"the repository {job.settings.repository} lies inside or above "
                              f"what is backed up ({' '.join(job.layout.sources)})",
                              fix="set backup.repository outside the mail data and apply")
        created = job.restic.open_or_init()
        s = job.restic.backup(job.layout.sources, job.layout.excludes())
    except BackupError as exc:
        record(job.host, {"ok": False, "started_at": started, "finished_at": now_iso(),
                          "duration_s": round(time.monotonic() - t0, 1), "error": exc.line()})
        raise
    result = {"ok": True, "started_at": started, "finished_at": now_iso(),
              "duration_s": round(time.monotonic() - t0, 1), "snapshot_id": s["snapshot_id"],
              "bytes_added": s["data_added"], "files": s["total_files_processed"],
              "bytes": s["total_bytes_processed"], "repository_created": created,
              "unreadable": s["unreadable"]}
    record(job.host, result)
    _remember_sizes(job.host, {s["snapshot_id"]: s["total_bytes_processed"]})
    return result


def _unlock(job: Job) -> bool:
    """Clear stale locks; False when there is no repository yet (nothing to do)."""
    try:
        job.restic.call(["unlock"])
        return True
    except NoRepository:
        return False


def prune(job: Job) -> dict:
    if not _unlock(job):
        return {"ok": True, "detail": "no repository yet: nothing to prune"}
    t0 = time.monotonic()
    removed = job.restic.forget(job.settings.keep)
    return {"ok": True, "removed": removed, "keep": vars(job.settings.keep),
            "duration_s": round(time.monotonic() - t0, 1)}


def check(job: Job) -> dict:
    if not _unlock(job):
        return {"ok": True, "detail": "no repository yet: nothing to check"}
    t0 = time.monotonic()
    said = job.restic.check()
    return {"ok": True, "detail": f"{said} (structure, and {B.CHECK_SUBSET} of the data read)",
            "duration_s": round(time.monotonic() - t0, 1)}


def _remember_sizes(host: Host, sizes: dict, keep_only=None) -> dict:
    path = host.path(B.SIZES_FILE)
    known = {**read_json(path, {}), **sizes}
    if keep_only is not None:
        known = {k: v for k, v in known.items() if k in keep_only}
    write_json(path, known)
    return known


def snapshots(job: Job) -> list[dict]:
    """[{id, short_id, time, size, host, paths}], oldest first. A size restic does not list
    (0.14) is asked once per snapshot and kept: a snapshot never changes."""
    snaps = job.restic.snapshots()
    known = read_json(job.host.path(B.SIZES_FILE), {})
    new = {s["short_id"]: job.restic.size(s["id"]) for s in snaps if s["short_id"] not in known}
    known = _remember_sizes(job.host, new, keep_only={s["short_id"] for s in snaps})
    return [{"id": s["id"], "short_id": s["short_id"], "time": snapshot_time(s["time"]),
             "size": known.get(s["short_id"]), "host": s.get("hostname"),
             "paths": s.get("paths", [])} for s in snaps]
