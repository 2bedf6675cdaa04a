"""The last step of apply: the backup timers on, systemd reloaded when their units changed (the
files step wrote them); without a backup section, the timers off and their files gone (the
repository itself is never touched)."""
from __future__ import annotations

import os
import subprocess

from agent import backup_config as B
from agent import backup_jobs, durable
from agent.errors import ServiceError
from agent.host import Host
from agent.step import Context, StepResult

NAME = "backup"


def timer_states(host: Host) -> dict[str, tuple[bool, bool]]:
    """{timer: (enabled, active)}"""
    def ok(*argv):
        return host.run(["systemctl", *argv], check=False).returncode == 0
    return {t: (ok("is-enabled", "--quiet", t), ok("is-active", "--quiet", t))
            for t in B.TIMERS}


def leftovers(host: Host) -> list[str]:
    return [p for p in (*B.UNIT_FILES, B.ENV_FILE, B.PASSWORD_FILE)
            if os.path.exists(host.path(p))]


def decide(configured: bool, units_changed: bool, timers: dict[str, tuple[bool, bool]],
           files_left: list[str]) -> list[tuple[str, ...]]:
    """[(action, *args)] with action in daemon-reload, enable, disable, remove."""
    if configured:
        todo = [("daemon-reload",)] if units_changed else []
        return todo + [("enable", t) for t, (on, up) in timers.items() if not (on and up)]
    todo = [("disable", t) for t, (on, up) in timers.items() if on or up]
    return todo + ([("remove", *files_left), ("daemon-reload",)] if files_left else [])


def perform(host: Host, todo: list[tuple[str, ...]]) -> None:
    for action, *names in todo:
        if action == "remove":
            for path in names:
                os.unlink(host.path(path))
            continue
        argv = ["systemctl", action, *(["--now"] if action in ("enable", "disable") else []),
                *names]
        try:
            host.run(argv, timeout=120)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise ServiceError(f"{' '.join(argv)} failed",
                               tool_output=getattr(exc, "stderr", "") or str(exc),
                               fix=f"see systemctl status {' '.join(names)}") from exc


def apply(ctx: Context) -> StepResult:
    host, backup = ctx.host, ctx.spec.backup
    if not host.live:
        return StepResult(NAME, detail="not the live root: timers not touched")
    states = timer_states(host)
    todo = decide(backup is not None, "systemd" in ctx.touched, states,
                  [] if backup else leftovers(host))
    detail = "; ".join(" ".join(a) for a in todo) or (
        f"timers on, every {backup.interval_min} min" if backup else "no backup section")
    result = StepResult(NAME, changed=bool(todo), detail=detail)
    if host.dry_run:
        return result
    perform(host, todo)
    enabled = host.path(B.ENABLED_FILE)
    if backup and not os.path.exists(enabled):  # the start of status' grace period
        durable.write_json(enabled, {"enabled_at": backup_jobs.now_iso()})
    elif not backup and os.path.exists(enabled):
        os.unlink(enabled)
    return result
