"""Restores: the whole server from a snapshot, or one mailbox, live, into a folder of its own.

Every refusal (an unknown mailbox, a wrong password, a missing snapshot) comes before the
first change. A whole restore writes the snapshot beside the live data first (the mail still
runs), then, with Postfix, Dovecot and the rate limiter stopped (a queue restored under a
running Postfix would send mail twice), swaps directories by rename: what was there is kept
aside, not deleted.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time

from agent import services
from agent.backup_config import PARKED
from agent.backup_jobs import Job
from agent.errors import BackupError
from agent.host import Host

# Down for a whole restore: the queue's users, and those with a socket inside it (they make
# it again at start, in the restored directory).
MAIL_SERVICES = ("dovecot", "policyd-rate-limit", "postfix")


def _run(host: Host, argv: list[str], fix: str) -> str:
    try:
        return host.run(argv, timeout=3600).stdout
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        said = getattr(exc, "stderr", "") or getattr(exc, "stdout", "") or str(exc)
        raise BackupError(f"{' '.join(argv[:2])} failed", tool_output=str(said)[-3000:],
                          fix=fix) from exc


# -- one mailbox ---------------------------------------------------------------------------
def require_user(job: Job, address: str) -> None:
    if address.lower() not in job.settings.users:
        raise BackupError(f"unknown mailbox {address}: not a user of the applied spec",
                          fix="give one of " + ", ".join(job.settings.users))


def mailbox(job: Job, snap: dict, address: str) -> dict:
    """The mailbox's Maildir as it was, imported by doveadm into "Restored <id>/...": new
    messages with new UIDs (the live ones are never reused, clients' caches stay right),
    folders and flags kept, the other mailboxes untouched."""
    host, address = job.host, address.lower()
    require_user(job, address)
    folder = f"Restored {snap['short_id']}"
    # A mask without a wildcard is echoed back whether or not it exists: ask with one.
    existing = _run(host, ["doveadm", "mailbox", "list", "-u", address, f"{folder}*"],
                    fix="is dovecot running? systemctl status dovecot").splitlines()
    if any(name == folder or name.startswith(f"{folder}/") for name in existing):
        raise BackupError(f"{address} already has a folder {folder!r}",
                          fix="rename or delete that folder first, or restore another snapshot")
    maildir = job.layout.maildir(address)
    parent = host.path(job.layout.source_of(maildir))
    tmp = tempfile.mkdtemp(prefix=f"{PARKED}restore-", dir=parent)  # never backed up
    try:
        job.restic.restore(snap["id"], tmp, [maildir])
        if not os.path.isdir(tmp + maildir):
            raise BackupError(f"mailbox {address} is not in snapshot {snap['short_id']}",
                              fix="pick an older snapshot (bulletproof-agent backup snapshots)")
        os.rename(tmp + maildir, f"{tmp}/Maildir")  # out of the snapshot's path, for vmail
        _run(host, ["chown", "-R", "vmail:vmail", tmp], fix="does the vmail user exist?")
        _run(host, ["doveadm", "import", "-u", address, "-s", f"maildir:{tmp}/Maildir",
                    folder, "all"], fix=f"see doveadm's message; a partial import is in "
                                        f"{folder!r} of {address}")
        listed = _run(host, ["doveadm", "-f", "flow", "mailbox", "status", "-u", address,
                             "messages", f"{folder}*"], fix="is dovecot running?")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    counts = [line.rpartition("messages=")[2] for line in listed.splitlines()]
    return {"ok": True, "mailbox": address, "snapshot": snap["short_id"], "folder": folder,
            "folders": len(counts), "messages": sum(int(c) for c in counts if c.isdigit())}


# -- the whole server ----------------------------------------------------------------------
def whole(job: Job, snap: dict) -> dict:
    """Every backed-up directory as the snapshot has it (queue, mailboxes with Dovecot's
    indexes and UIDs, TLS), the previous contents kept in <dir>/.bpm-pre-restore-<time>."""
    host, layout = job.host, job.layout
    if sorted(snap.get("paths") or []) != sorted(layout.sources):
        raise BackupError(f"snapshot {snap['short_id']} holds {' '.join(snap['paths'])}, not "
                          f"this host's {' '.join(layout.sources)}",
                          fix="pick a snapshot of this layout, or restore by hand (restic restore)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    t0 = time.monotonic()
    staged = {}
    try:
        for src in layout.sources:  # while the mail still runs: nothing live changes
            staged[src] = tempfile.mkdtemp(prefix=f"{PARKED}restore-", dir=host.path(src))
            job.restic.restore(snap["id"], staged[src], [src])
        with _stopped(host):
            asides = _swap(host, staged, stamp)
            _repair(host, layout)
    finally:
        for stage in staged.values():
            shutil.rmtree(stage, ignore_errors=True)
    return {"ok": True, "snapshot": snap["short_id"], "restored": list(layout.sources),
            "kept_aside": asides, "duration_s": round(time.monotonic() - t0, 1)}


@contextlib.contextmanager
def _stopped(host: Host):
    """The mail services down for the swap, started again whatever happens."""
    _run(host, ["systemctl", "stop", "postfix@-", *reversed(MAIL_SERVICES)],
         fix="see journalctl -u postfix@- -u dovecot; nothing was changed")
    if services.unit_state(host, "postfix")[0]:
        raise BackupError("Postfix still runs after systemctl stop: not restoring its queue "
                          "under it", fix="stop it (postfix stop), then restore again")
    try:
        yield
    finally:
        services.perform(host, [(s, "start") for s in MAIL_SERVICES])
        services.wait_ports(host)


# The filesystem's own (mke2fs makes it, fsck fills it): never moved aside, never replaced
# by a snapshot's copy (a rename onto it fails when it holds anything).
LOST_FOUND = "lost+found"


def _swap(host: Host, staged: dict[str, str], stamp: str) -> list[str]:
    """Move each directory's entries aside, the restored ones in; on any failure put every
    entry back where it was. Only entries are renamed, inside the directory itself (the
    staged copy and the aside are in it too): a directory that is a mount point (DATA_DIR,
    the data volume) cannot be renamed, nor can anything be renamed across its boundary."""
    moves: list[tuple[str, str]] = []
    asides = []
    try:
        for src, stage in staged.items():
            live, restored = host.path(src), stage + src
            aside = f"{live}/{PARKED}pre-restore-{stamp}"
            os.mkdir(aside, 0o700)
            asides.append(aside)
            for name in sorted(os.listdir(live)):
                if not name.startswith(PARKED) and name != LOST_FOUND:
                    os.rename(f"{live}/{name}", f"{aside}/{name}")
                    moves.append((f"{live}/{name}", f"{aside}/{name}"))
            for name in sorted(os.listdir(restored)) if os.path.isdir(restored) else []:
                if name != LOST_FOUND:
                    os.rename(f"{restored}/{name}", f"{live}/{name}")
                    moves.append((f"{restored}/{name}", f"{live}/{name}"))
    except OSError as exc:
        for old, new in reversed(moves):
            os.rename(new, old)
        for aside in asides:  # empty again: nothing of this attempt is left
            with contextlib.suppress(OSError):
                os.rmdir(aside)
        raise BackupError(f"cannot move the restored data into place: {exc}",
                          fix="everything was put back; free the directory (a mount point "
                              "or another filesystem cannot be renamed) and restore again"
                          ) from exc
    return asides


def _repair(host: Host, layout) -> None:
    """What a restore onto another filesystem (or host) needs: queue file names follow their
    inode numbers (postsuper -s), owners by name (set-permissions, vmail)."""
    _postsuper_s(host)
    _run(host, ["postfix", "set-permissions"], fix="see the message; then postfix start")
    _run(host, ["chown", "-R", "vmail:vmail", host.path(layout.mail_root)],
         fix="does the vmail user exist? re-run bulletproof-agent apply")


def _postsuper_s(host: Host) -> None:
    """postsuper -s before Postfix starts. With no postlogd running it writes its log itself,
    after dropping to the postfix user, and dies on the root-owned maillog_file: so it runs
    on a copy of the config that logs to syslog (the journal) instead."""
    conf = _run(host, ["postconf", "-n"], fix="is postfix installed?")
    tmp = tempfile.mkdtemp(prefix="bpm-postsuper-")
    try:
        with open(f"{tmp}/main.cf", "w") as f:
            f.writelines(f"{l}\n" for l in conf.splitlines() if not l.startswith("maillog_file "))
            f.write("maillog_file =\n")
        shutil.copy(host.path("/etc/postfix/master.cf"), f"{tmp}/master.cf")
        _run(host, ["postsuper", "-c", tmp, "-s"], fix="see postsuper's message; then postfix start")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
