"""Refuse early, with a clear message, on a host the agent cannot make right."""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

from agent.contract import THRESHOLDS
from agent.errors import PreflightError
from agent.host import Host
from agent.spec import Spec
from agent.step import Context, StepResult

NAME = "preflight"

# The article's warning: a mail queue stalls when the disk is slow to sync.
FSYNC_WARN_MS = THRESHOLDS["fsync_warn_ms"]


def os_release(host: Host) -> dict[str, str]:
    out = {}
    try:
        with open(host.path("/etc/os-release")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                out[k] = v.strip('"')
    except OSError:
        pass
    return out


def port25_holder(host: Host) -> str | None:
    """The program listening on TCP 25, or None. Postfix's master is ours to manage."""
    proc = host.run(["ss", "-Hltnp", "sport = :25"], check=False)
    names = set(re.findall(r'\(\("([^"]+)"', proc.stdout))
    # Postfix's own processes on 25: master, and postscreen/smtpd that it hands sockets to.
    others = names - {"master", "postscreen", "smtpd"}
    return ", ".join(sorted(others)) or None


def fsync_latency_ms(directory: str, rounds: int = 5) -> float:
    path = os.path.join(directory, f".bpm-fsync-probe-{os.getpid()}")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            started = time.monotonic()
            for _ in range(rounds):
                os.write(fd, b"x" * 4096)
                os.fsync(fd)
            return (time.monotonic() - started) * 1000 / rounds
        finally:
            os.close(fd)
            os.unlink(path)
    except OSError:
        return 0.0


@dataclass(frozen=True)
class Facts:
    euid: int
    os_release: dict[str, str]
    port25_holder: str | None
    spool: str
    fsync_ms: float


def facts(host: Host) -> Facts:
    spool = host.path("/var/spool") if os.path.isdir(host.path("/var/spool")) else host.root
    return Facts(os.geteuid(), os_release(host), port25_holder(host), spool,
                 fsync_latency_ms(spool))


def decide(spec: Spec, f: Facts) -> StepResult:
    """Raise PreflightError for a host the agent must not touch; else the warnings."""
    if f.euid != 0:
        raise PreflightError("bulletproof-agent must run as root",
                             fix="run it with sudo or as root")
    rel = f.os_release
    if rel.get("ID") != "debian" or rel.get("VERSION_ID") != "12":
        raise PreflightError(
            f"unsupported OS: {rel.get('PRETTY_NAME', 'unknown')}", file="/etc/os-release",
            fix="use Debian 12 (bookworm); the templates target its Postfix 3.7/Dovecot 2.3")
    if "." not in spec.hostname.strip("."):
        raise PreflightError(f"hostname {spec.hostname!r} is not a fully qualified name",
                             fix="set the spec's hostname to the mail FQDN (mail.example.org)")
    if f.port25_holder:
        raise PreflightError(f"port 25 is held by {f.port25_holder}, not by our Postfix",
                             fix=f"stop and disable {f.port25_holder} before applying")
    result = StepResult(NAME, detail=f"Debian 12, fsync {f.fsync_ms:.1f} ms")
    if f.fsync_ms > FSYNC_WARN_MS:
        result.warnings.append(
            f"fsync latency {f.fsync_ms:.1f} ms on {f.spool} (> {FSYNC_WARN_MS} ms): the mail "
            "queue will stall under load; use faster storage")
    return result


def apply(ctx: Context) -> StepResult:
    # Checks only: plan and apply alike.
    if not ctx.host.live:
        return StepResult(NAME, detail=f"root {ctx.host.root}: host checks skipped")
    return decide(ctx.spec, facts(ctx.host))
