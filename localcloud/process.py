"""Detached daemons with PID files that also hold the start time, so a reused PID is not ours."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    return [str(pid), raw[raw.index("(") + 1:raw.rindex(")")]] + raw[raw.rindex(")") + 2:].split()


def start_time(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[21]) if fields else None


def parent_pid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[3]) if fields else None


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except (FileNotFoundError, ProcessLookupError):
        return []


def is_alive(pid: int) -> bool:
    """Alive and not a zombie; reaps it when it is our own exited child."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    fields = _stat_fields(pid)
    return bool(fields) and fields[2] not in ("Z", "X")


def spawn(argv: list[str], log: Path, pidfile: Path) -> int:
    """Start argv in its own session, stdio to `log`, and record "PID STARTTIME"."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    pidfile.write_text(f"{proc.pid} {start_time(proc.pid) or 0}\n")
    return proc.pid


def recorded(pidfile: Path, must_contain: list[str]) -> int | None:
    """The PID in `pidfile` if that process still runs, is the one we started (same start
    time) and its command line holds every string of `must_contain`; else None."""
    try:
        pid_text, started = pidfile.read_text().split()
        pid = int(pid_text)
    except (FileNotFoundError, ValueError):
        return None
    if not is_alive(pid) or str(start_time(pid)) != started:
        return None
    argv = cmdline(pid)
    return pid if all(any(part in arg for arg in argv) for part in must_contain) else None


def wait_gone(pid: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if not is_alive(pid):
            return True
        time.sleep(0.1)
    return not is_alive(pid)


def terminate(pid: int, timeout: float, sig: int = signal.SIGTERM) -> None:
    """`sig`, then SIGKILL when the process outlives `timeout`."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    if not wait_gone(pid, time.monotonic() + timeout):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        wait_gone(pid, time.monotonic() + 5)
