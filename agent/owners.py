"""Owners of the mail state on the volume, and Postfix's queue structure there.

The system users that own files on the volume get their ids from the host that made them:
vmail is fixed (5000), but postfix, postdrop and policyd-rate-limit are whatever Debian gave
them on that host. The ids last applied are recorded on the volume (OWNERS_FILE); when a
host's ids differ (a new host on an old volume) or nothing is recorded, ownership is restored:
``postfix set-permissions`` (the queue, from Postfix's own table; it also creates a missing
queue structure), the mailboxes to vmail, the rate-limit socket dir to its user. After a
queue moved to another filesystem (migrate), ``postsuper -s`` renames its files to match
their new inode numbers. Runs after files: Postfix's tools read the live main.cf.
"""
from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import tempfile

from agent import files, validate
from agent.contract import DATA_DIR, MAIL_DIR, QUEUE_DIR
from agent.errors import ApplyError
from agent.host import Host
from agent.step import Context, StepResult

NAME = "owners"
OWNERS_FILE = f"{DATA_DIR}/owners.json"
RATE_LIMIT_DIR = f"{QUEUE_DIR}/ratelimit"  # made by policyd-rate-limit, owned by its user
USERS = ("postfix", "vmail", "policyd-rate-limit")
GROUPS = ("postdrop", "vmail")


def current_ids() -> dict[str, int | None]:
    def uid(name):
        try:
            return pwd.getpwnam(name).pw_uid
        except KeyError:
            return None

    def gid(name):
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            return None
    return {**{f"user:{u}": uid(u) for u in USERS}, **{f"group:{g}": gid(g) for g in GROUPS}}


def recorded_ids(host: Host) -> dict | None:
    try:
        with open(host.path(OWNERS_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def decide(recorded: dict | None, current: dict, queue_ready: bool, queue_moved: bool
           ) -> list[str]:
    """What to restore: only what belongs to an id that differs from the recorded one (all
    of it when nothing is recorded)."""
    def differs(*keys):
        return recorded is None or any(recorded.get(k) != current[k] for k in keys)
    todo = []
    if differs("user:postfix", "group:postdrop") or not queue_ready:
        todo.append("postfix set-permissions")
    if differs("user:vmail", "group:vmail"):
        todo.append(f"chown -R vmail:vmail {MAIL_DIR}")
    if differs("user:policyd-rate-limit"):
        todo.append(f"chown policyd-rate-limit {RATE_LIMIT_DIR}")
    if queue_moved:
        todo.append("postsuper -s")
    if recorded != current:
        todo.append("record the owners' ids")
    return todo


def apply(ctx: Context) -> StepResult:
    host = ctx.host
    if not host.live:
        return StepResult(NAME, detail="not the live root: owners not checked")
    current = current_ids()
    todo = decide(recorded_ids(host), current, os.path.isdir(host.path(f"{QUEUE_DIR}/private")),
                  "postsuper" in ctx.touched)
    result = StepResult(NAME, changed=bool(todo),
                        detail="; ".join(todo) or "owners on the volume match this host")
    if not host.dry_run:
        for action in todo:
            _act(host, action, current)
    return result


def _act(host: Host, action: str, current: dict) -> None:
    if action.startswith("record"):
        files.write_atomic(host.path(OWNERS_FILE), (json.dumps(current, sort_keys=True) + "\n")
                           .encode(), 0o644, "root", "root")
        return
    if action.startswith("chown policyd-rate-limit") and not (
            os.path.isdir(host.path(RATE_LIMIT_DIR)) and current["user:policyd-rate-limit"]):
        return  # the daemon makes it when it first starts
    if action == "postfix set-permissions":
        os.makedirs(host.path(QUEUE_DIR), mode=0o755, exist_ok=True)  # postfix chdirs there
        rc, said = validate.run_tool(["postfix", "set-permissions"], timeout=1800)
    elif action == "postsuper -s":
        rc, said = repair_queue(host)
    else:
        argv = ["chown", "-R", "vmail:vmail", MAIL_DIR] if "vmail" in action else \
            ["chown", "policyd-rate-limit:policyd-rate-limit", RATE_LIMIT_DIR]
        proc = host.run(argv, check=False, timeout=1800)
        rc, said = proc.returncode, proc.stderr + proc.stdout
    if rc:
        raise ApplyError(f"{action} failed", file=QUEUE_DIR, tool_output=said,
                         fix=f"check the ownership of {DATA_DIR} (a volume from another host?) "
                             "and re-run apply")


def repair_queue(host: Host) -> tuple[int, str]:
    """``postsuper -s``, with Postfix down: postsuper then writes the log file itself, after
    dropping to the postfix user, who may not open it (a fatal error once it has renamed
    anything). So it reads a copy of main.cf that logs to syslog instead."""
    with tempfile.TemporaryDirectory(prefix="bpm-postsuper-") as conf:
        os.chmod(conf, 0o755)
        shutil.copy(host.path("/etc/postfix/main.cf"), conf)
        host.run(["postconf", "-c", conf, "-e", "maillog_file="], check=False)
        proc = host.run(["postsuper", "-c", conf, "-s"], check=False, timeout=1800)
    return proc.returncode, proc.stderr + proc.stdout
