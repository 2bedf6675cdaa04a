"""Owned files: compare with disk, show a diff, validate the new set, write atomically,
back up, roll back.

Facts (what is on disk) are read by ``changes``; ``plan`` stops after validation. Secrets
are never shown in a diff, only that they change.
"""
from __future__ import annotations

import difflib
import glob
import grp
import os
import pwd
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass

from agent import backup_config, journal, render, validate
from agent.durable import fsync_dir
from agent.contract import FILE_BACKUP_RETENTION_DAYS, FILE_BACKUPS_DIR, STATE_DIR
from agent.render import Target
from agent.step import Context, StepResult

NAME = "files"

SECRET_TEMPLATES = {"@tls_key", "@backup_password", "@srs_secret"}  # and every "@dkim_key:<domain>"
SECRET_PATHS = {"/etc/dovecot/users", backup_config.ENV_FILE}


@dataclass
class Change:
    target: Target
    new: bytes
    old: bytes | None          # None: the file does not exist yet
    content_changed: bool
    meta_changed: bool         # mode or owner differs

    @property
    def path(self) -> str:
        return self.target.path


def _ids(owner: str, group: str) -> tuple[int, int]:
    """Owner ids, falling back to root when the user does not exist (a temp --root in
    unit tests, or plan before the package that creates the user is installed)."""
    try:
        uid = pwd.getpwnam(owner).pw_uid
    except KeyError:
        uid = 0
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        gid = 0
    return uid, gid


def changes(root_path, targets: list[Target], rendered: dict[str, bytes]) -> list[Change]:
    out = []
    for t in targets:
        real = root_path(t.path)
        new = rendered[t.path]
        try:
            with open(real, "rb") as f:
                old = f.read()
            st = os.stat(real)
            uid, gid = _ids(t.owner, t.group)
            meta = stat.S_IMODE(st.st_mode) != t.mode or (st.st_uid, st.st_gid) != (uid, gid)
        except FileNotFoundError:
            old, meta = None, True
        if old != new or meta:
            out.append(Change(t, new, old, old != new, meta))
    return out


def diff(change: Change) -> list[str]:
    t = change.target
    if not change.content_changed:
        return [f"--- {t.path}: mode/owner -> {oct(t.mode)} {t.owner}:{t.group}"]
    if t.template in SECRET_TEMPLATES or t.template.startswith("@dkim_key") or t.path in SECRET_PATHS:
        return [f"--- {t.path}: secret content changes (not shown)"]
    old = (change.old or b"").decode(errors="replace").splitlines(keepends=True)
    new = change.new.decode(errors="replace").splitlines(keepends=True)
    label = t.path if change.old is not None else "/dev/null"
    return [l.rstrip("\n") for l in difflib.unified_diff(old, new, label, t.path, n=2)]


def write_atomic(real: str, data: bytes, mode: int, owner: str, group: str) -> None:
    """Write beside the target, fsync, then rename: readers see the old or the new file,
    never half of one. Mode and owner are set before the rename for the same reason."""
    d = os.path.dirname(real)
    os.makedirs(d, mode=0o755, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(real)}.bpm-new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
        uid, gid = _ids(owner, group)
        if os.geteuid() == 0:
            os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, real)
    fsync_dir(d)


def _copy_durably(src: str, dst: str) -> None:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy2(src, dst)
    st = os.stat(src)
    if os.geteuid() == 0:
        os.chown(dst, st.st_uid, st.st_gid)
    with open(dst, "rb") as f:
        os.fsync(f.fileno())
    fsync_dir(os.path.dirname(dst))


def stage(stage_dir: str, rendered: dict[str, bytes], targets: list[Target]) -> None:
    # Postfix re-reads a file whose mtime is this very second (it may be mid-write) and
    # sleeps meanwhile; backdating the staged copies saves ~2 s per validation.
    past = time.time() - 5
    for t in targets:
        write_atomic(stage_dir + t.path, rendered[t.path], t.mode, t.owner, t.group)
        os.utime(stage_dir + t.path, (past, past))


def swap_in(root_path, changes_: list[Change], backup_dir: str, note=None
            ) -> list[tuple[str, str | None]]:
    """Back up every file first, then ``note(undo)`` (the journal), then write; return the
    undo log [(real path, backup path or None)]. Undoing an entry whose file was not written
    yet is harmless, so the log is complete before the first live file changes."""
    undo = []
    for c in changes_:
        real = root_path(c.path)
        backup = backup_dir + c.path if os.path.exists(real) else None
        if backup:
            _copy_durably(real, backup)
        undo.append((real, backup))
    if note:
        note(undo)
    try:
        for c in changes_:
            write_atomic(root_path(c.path), c.new, c.target.mode, c.target.owner, c.target.group)
    except BaseException:
        rollback(undo)
        raise
    return undo


def rollback(undo: list[tuple[str, str | None]]) -> None:
    """Put back exactly what was there before (or remove what did not exist)."""
    for real, backup in reversed(undo):
        if backup is None:
            if os.path.exists(real):
                os.unlink(real)
            continue
        tmp = real + ".bpm-restore"
        _copy_durably(backup, tmp)
        os.replace(tmp, real)
        fsync_dir(os.path.dirname(real))


# -- the step ------------------------------------------------------------------------------
def apply(ctx: Context) -> StepResult:
    spec, host = ctx.spec, ctx.host
    targets = render.targets(spec)
    todo = changes(host.path, targets, render.render(spec, ctx.tls_pair))
    result = StepResult(NAME, changed=bool(todo),
                        services=frozenset(s for c in todo for s in c.target.services),
                        diff=[line for c in todo for line in diff(c)])
    result.detail = (f"{len(todo)} of {len(targets)} files change: "
                     + ", ".join(c.path for c in todo)) if todo else \
        f"all {len(targets)} files up to date"
    # Validate even for plan (it shows whether apply would be refused). Content changes
    # need it; mode-only changes don't.
    if any(c.content_changed for c in todo):
        result.warnings += _validate_staged(ctx, targets)
    if not host.dry_run:  # every apply, one that changes nothing too
        removed = prune_backups(host.path(FILE_BACKUPS_DIR), time.time())
        if removed:
            result.detail += f"; {len(removed)} backups older than " \
                             f"{FILE_BACKUP_RETENTION_DAYS} days pruned"
    if todo and not host.dry_run:
        backup = host.path(f"{FILE_BACKUPS_DIR}/{host.run_id or 'last'}")
        shutil.rmtree(backup, ignore_errors=True)
        result.undo = swap_in(host.path, todo, backup, lambda undo: journal.note(
            ctx, NAME, undo, result.services))
    return result


def prune_backups(base: str, now: float, days: int = FILE_BACKUP_RETENTION_DAYS) -> list[str]:
    """Delete the runs' backups (they hold replaced private keys) older than ``days``; the
    newest one stays whatever its age, so the last change can always be undone by hand."""
    try:
        runs = sorted((e for e in os.scandir(base) if e.is_dir(follow_symlinks=False)),
                      key=lambda e: e.stat(follow_symlinks=False).st_mtime)
    except FileNotFoundError:
        return []
    cutoff = now - days * 86400
    old = [e.path for e in runs[:-1] if e.stat(follow_symlinks=False).st_mtime < cutoff]
    for path in old:
        shutil.rmtree(path)
    return old


def _validate_staged(ctx: Context, targets: list[Target]) -> list[str]:
    """Render the complete new set into a staging copy and let the real tools check it."""
    host = ctx.host
    base = None if host.dry_run else host.path(STATE_DIR)  # plan writes nothing on the host
    if base:
        os.makedirs(base, mode=0o700, exist_ok=True)
        for old in glob.glob(os.path.join(base, "staging-*")):  # a killed run's (keys inside)
            shutil.rmtree(old, ignore_errors=True)
    staging = tempfile.mkdtemp(prefix="staging-", dir=base)
    queue = tempfile.mkdtemp(prefix="bpm-queue-")  # `postfix check` fills it
    os.chmod(queue, 0o755)  # as Postfix wants it: postsuper enters it as postfix
    try:
        stage(staging, render.render(ctx.spec, ctx.tls_pair, prefix=staging, queue_dir=queue),
              targets)
        return validate.validate(staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(queue, ignore_errors=True)


def undo(ctx: Context, data: list) -> str:
    """``data``: swap_in's [(real path, backup path or None)], as lists after JSON."""
    rollback(data)
    return f"put back {len(data)} file" + ("s" if len(data) != 1 else "")
