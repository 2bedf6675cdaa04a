"""The backup check of ``status``: the newest snapshot's age and the last run's result, from
the file the backup service writes (no repository access: status stays fast and offline).

Warn when the newest snapshot is older than twice the interval, fail past
``backup_age_fail_s`` (24 h; never below twice the interval). A new host gets a grace period:
no snapshot yet is a warning, not a failure, for two intervals after apply enabled backups.
"""
from __future__ import annotations

import datetime
import time

from agent import backup_config as B
from agent.backup_jobs import read_json
from agent.host import Host
from agent.verdict import FAIL, PASS, WARN, Check

FIX = "journalctl -u bulletproof-backup; then bulletproof-agent backup run"


def _epoch(iso: str | None) -> float | None:
    try:
        return datetime.datetime.fromisoformat(iso).timestamp()
    except (TypeError, ValueError):
        return None


def _age(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"


def decide(interval_min: int, result: dict, enabled_at: str | None, timers_down: list[str],
           fail_s: float, now: float) -> Check:
    if timers_down:
        return Check("backup", FAIL, f"not active: {', '.join(timers_down)}",
                     "systemctl enable --now " + " ".join(timers_down) + ", or re-run apply")
    warn_s = 2 * interval_min * 60
    fail_s = max(fail_s, warn_s)
    last, good = result.get("last") or {}, result.get("last_ok") or {}
    failed = "" if last.get("ok", True) else f"; last run failed: {last.get('error', '?')}"
    newest = _epoch(good.get("finished_at"))
    if newest is None:
        since = _epoch(enabled_at)
        waited = now - since if since else None
        if waited is not None and waited <= warn_s:
            return Check("backup", WARN if failed else PASS,
                         f"no snapshot yet (backups enabled {_age(waited)} ago, every "
                         f"{interval_min} min){failed}", FIX if failed else "")
        return Check("backup", FAIL, "no snapshot since backups were enabled"
                     + (f" {_age(waited)} ago" if waited is not None else "") + failed, FIX)
    age = now - newest
    reason = (f"newest snapshot {good.get('snapshot_id')} {_age(age)} old, "
              f"{good.get('bytes_added', 0) / 1024 / 1024:.1f} MiB added in "
              f"{good.get('duration_s')} s{failed}")
    if age > fail_s:
        return Check("backup", FAIL, reason, FIX)
    if age > warn_s or failed:
        return Check("backup", WARN, reason, FIX)
    return Check("backup", PASS, reason)


def run(facts: dict, limits: dict, host: Host | None = None) -> list[Check]:
    """[] when the applied spec has no backup section."""
    backup = facts.get("backup")
    if not backup:
        return []
    host = host or Host()
    down = [t for t in B.TIMERS
            if host.run(["systemctl", "is-active", "--quiet", t], check=False).returncode]
    return [decide(int(backup.get("interval_min", 60)),
                   read_json(host.path(B.RESULT_FILE), {}),
                   read_json(host.path(B.ENABLED_FILE), {}).get("enabled_at"), down,
                   limits["backup_age_fail_s"], time.time())]
