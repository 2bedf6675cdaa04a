"""bulletproof-agent backup run | prune | check | snapshots | restore [--mailbox ADDR]
                         [--snapshot ID|latest] [--json] [--spec FILE]

run: one backup now (the hourly timer runs this); prune: forget past the retention, prune;
check: the repository's structure and a part of its data; snapshots: id, time, size;
restore: the whole server, or with --mailbox one mailbox into a folder "Restored <id>".

Exit status: 0 ok, 1 failed or refused (one line: what, the value, the fix; a refusal
changes nothing), 2 the command line is wrong or the applied spec has no backup section.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import subprocess
import sys

from agent import accounts, backup_jobs, backup_restore
from agent import backup_config as B
from agent.contract import CONFIG_DIR, QUEUE_DIR, TLS_CERT, is_address
from agent.errors import AgentError, BackupError
from agent.host import Host
from agent.restic import Restic

ACTIONS = ("run", "prune", "check", "snapshots", "restore")


def _snapshot_arg(value: str) -> str:
    if value == "latest" or re.fullmatch(r"[0-9a-f]{4,64}", value):
        return value
    raise argparse.ArgumentTypeError(f"{value!r}: expected a snapshot id (hex) or latest")


def _address_arg(value: str) -> str:
    if is_address(value.lower()):
        return value.lower()
    raise argparse.ArgumentTypeError(f"{value!r}: not an email address")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bulletproof-agent backup", description=__doc__.split("\n")[0])
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--spec", default=f"{CONFIG_DIR}/spec.json",
                   help="the applied spec (its public part; default %(default)s)")
    p.add_argument("--mailbox", type=_address_arg, metavar="ADDR",
                   help="restore: only this mailbox, into a folder of its own")
    p.add_argument("--snapshot", type=_snapshot_arg, metavar="ID|latest",
                   help="restore: which snapshot (default latest)")
    return p


def queue_dir(host: Host) -> str:
    """Postfix's own word for where its queue is."""
    try:
        out = host.run(["postconf", "-h", "queue_directory"], check=False).stdout.strip()
    except OSError:
        out = ""
    return out or QUEUE_DIR


def load_job(spec_path: str, host: Host, runner=subprocess.run) -> backup_jobs.Job:
    """From the applied spec's public part and the restic environment apply wrote."""
    try:
        with open(spec_path) as f:
            public = json.load(f)
    except (OSError, ValueError) as exc:
        raise BackupError(f"no applied spec at {spec_path} ({exc})",
                          fix="run bulletproof-agent apply first") from exc
    settings = B.settings(public)
    if settings is None:
        raise BackupError(f"backups are not configured: {spec_path} has no backup section",
                          fix="add a backup section to the spec and backup_password to "
                              "secrets.json, then apply")
    try:
        with open(host.path(B.ENV_FILE)) as f:
            env = B.read_env(f.read())
    except OSError as exc:
        raise BackupError(f"cannot read the restic environment {B.ENV_FILE} ({exc.strerror})",
                          fix="run this as root; re-run bulletproof-agent apply") from exc
    layout = B.Layout(accounts.MAIL_ROOT, queue_dir(host), os.path.dirname(TLS_CERT))
    return backup_jobs.Job(host, settings, layout, Restic(env, settings.repository, runner))


def act(job: backup_jobs.Job, args) -> dict | list:
    if args.action == "run":
        return backup_jobs.run(job)
    if args.action == "prune":
        return backup_jobs.prune(job)
    if args.action == "check":
        return backup_jobs.check(job)
    if args.action == "snapshots":
        return backup_jobs.snapshots(job)
    if args.mailbox:
        backup_restore.require_user(job, args.mailbox)  # before the repository is asked
    snap = job.restic.find(args.snapshot or "latest")
    if args.mailbox:
        return backup_restore.mailbox(job, snap, args.mailbox)
    return backup_restore.whole(job, snap)


def _locked(host: Host):
    """One backup command at a time on this host: the timers' jobs and a restore queue up."""
    os.makedirs(host.path(os.path.dirname(B.LOCK_FILE)), exist_ok=True)
    lock = open(host.path(B.LOCK_FILE), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("waiting for the backup command already running to end", file=sys.stderr)
        fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def text(action: str, r) -> str:
    """One line per result (the journal of the timers' services keeps it)."""
    mib = 1024 * 1024
    if action == "snapshots":
        rows = [f"{s['short_id']}  {s['time']}  {(s['size'] or 0) / mib:10.1f} MiB  "
                f"{' '.join(s['paths'])}" for s in r]
        return "\n".join(rows) or "no snapshots yet"
    if action == "run":
        note = "; repository created" if r["repository_created"] else ""
        note += f"; {len(r['unreadable'])} files changed while read (in the next snapshot)" \
            if r["unreadable"] else ""
        return (f"snapshot {r['snapshot_id']}: {r['files']} files, {r['bytes'] / mib:.1f} MiB, "
                f"{r['bytes_added'] / mib:.2f} MiB added, {r['duration_s']} s{note}")
    if action == "prune":
        return r.get("detail") or (f"removed {r['removed']} snapshots, kept " + ", ".join(
            f"{v} {k}" for k, v in r["keep"].items()) + f" ({r['duration_s']} s)")
    if "mailbox" in r:
        return (f"restored {r['messages']} messages of {r['mailbox']} from snapshot "
                f"{r['snapshot']} into {r['folder']!r} ({r['folders']} folders)")
    if "restored" in r:
        return (f"restored {' '.join(r['restored'])} from snapshot {r['snapshot']} in "
                f"{r['duration_s']} s; what was there is kept in {' '.join(r['kept_aside'])}")
    return r["detail"]


def main(argv=None, host: Host | None = None, runner=subprocess.run) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.action != "restore" and (args.mailbox or args.snapshot):
        p.error("--mailbox and --snapshot go with restore")
    host = host or Host()
    try:
        job = load_job(args.spec, host, runner)
    except BackupError as exc:
        return _fail(exc, args.json, 2)
    lock = _locked(host)
    try:
        result = act(job, args)
    except AgentError as exc:
        return _fail(exc, args.json, 1)
    except OSError as exc:  # a directory missing or unwritable on this host
        return _fail(BackupError(f"{args.action}: {exc}", fix="see the path named; "
                                 "re-run bulletproof-agent apply"), args.json, 1)
    finally:
        lock.close()
    print(json.dumps(result, indent=2, sort_keys=True) if args.json else text(args.action, result))
    return 0


def _fail(exc: AgentError, as_json: bool, code: int) -> int:
    if as_json:
        print(json.dumps({"status": "failed", "error": exc.as_dict()}, indent=2, sort_keys=True))
    else:
        line = exc.line() if isinstance(exc, BackupError) else exc.message
        print(f"backup: {line}", file=sys.stderr)
        if exc.tool_output:
            print("  " + exc.tool_output.strip().replace("\n", "\n  "), file=sys.stderr)
    return code
