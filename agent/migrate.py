"""Move the mail of a host deployed before the data volume onto it, once.

Before: mailboxes in /var/mail/vhosts, the queue in /var/spool/postfix. Postfix and Dovecot
are stopped first (still on their old config); every file is copied byte for byte with its
owner, mode and times (Dovecot's dovecot-uidlist and indexes move with the mail, so
UIDVALIDITY and UIDs stay), the copies are made durable, and only then are the originals
removed. Queue file names follow inode numbers, which a copy changes: the owners step has
``postsuper -s`` rename them once the new main.cf is live. The journal holds the way back
(the same move, reversed) before the daemons stop, so a run that dies midway is undone by
the next one.
"""
from __future__ import annotations

import filecmp
import os
import shutil
import stat

from agent import journal, owners
from agent.contract import CONFIG_DIR, MAIL_DIR, QUEUE_DIR
from agent.errors import MigrationError
from agent.host import Host
from agent.step import Context, StepResult

NAME = "migrate"
LEGACY_MAIL_DIR = "/var/mail/vhosts"
LEGACY_QUEUE_DIR = "/var/spool/postfix"
LEGACY_TLS_CERT = f"{CONFIG_DIR}/tls/cert.pem"  # read by keys when the volume has no pair yet
LEGACY_TLS_KEY = f"{CONFIG_DIR}/tls/key.pem"
# The queue's messages and their logs; not pid/, private/, public/ (sockets) or flush/.
QUEUE_SUBDIRS = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt", "saved",
                 "defer", "bounce", "trace")
DAEMONS = ("postfix@-", "postfix", "dovecot")
TMP = ".bpm-move-"  # a copy not yet in place; a dot name, so Maildir readers skip it


def trees() -> dict[str, list[tuple[str, str]]]:
    """{what: [(legacy dir, dir on the volume)]}"""
    return {"mail": [(LEGACY_MAIL_DIR, MAIL_DIR)],
            "queue": [(f"{LEGACY_QUEUE_DIR}/{d}", f"{QUEUE_DIR}/{d}") for d in QUEUE_SUBDIRS]}


def count_files(path: str, limit: int = 0) -> int:
    """Regular files under ``path`` (stops at ``limit`` when given)."""
    n = 0
    for dirpath, _, names in os.walk(path):
        for name in names:
            if not name.startswith(TMP) and os.path.isfile(os.path.join(dirpath, name)):
                n += 1
                if limit and n >= limit:
                    return n
    return n


def decide(legacy: dict[str, int], on_volume: dict[str, int]) -> list[str]:
    """legacy / on_volume: {"mail"|"queue": file count}. Two mail stores are never merged
    (their uidlists would clash); queue files are messages of their own, so a queue is (a
    new host's own maildrop, say, beside an old volume's queue)."""
    if legacy["mail"] and on_volume["mail"]:
        raise MigrationError(
            f"both {LEGACY_MAIL_DIR} and {MAIL_DIR} hold mail: the agent does not merge them",
            file=MAIL_DIR, fix="decide which is current (a volume from another host?), move the "
            "other aside by hand, and re-run apply")
    return [f"move {n} {what} files onto the volume" for what, n in legacy.items() if n]


def stop(host: Host) -> None:
    if host.live:
        host.run(["systemctl", "stop", *DAEMONS], timeout=180)


def running_the_old_layout(host: Host) -> bool:
    """Postfix's live config still has its queue off the volume: its master (and Dovecot) run
    on the old paths, and must stop before the new config goes live, even with nothing to
    move, or a reload would leave the old master serving the old queue."""
    if not host.live:
        return False
    proc = host.run(["postconf", "-h", "queue_directory"], check=False)
    return proc.returncode == 0 and proc.stdout.strip() not in ("", QUEUE_DIR)


def apply(ctx: Context) -> StepResult:
    host = ctx.host
    legacy = {w: sum(count_files(host.path(old)) for old, _ in t) for w, t in trees().items()}
    on_volume = {w: sum(count_files(host.path(new), 1) for _, new in t)
                 for w, t in trees().items()}
    todo = decide(legacy, on_volume)
    if not todo and running_the_old_layout(host):
        todo = ["the daemons run on the layout before the volume"]
    if not todo:
        return StepResult(NAME, detail="nothing to move: the mail is on the volume")
    moves = [[host.path(old), host.path(new)] for w, t in trees().items() if legacy[w]
             for old, new in t]
    touched = frozenset({"postfix", "dovecot"} | ({"postsuper"} if legacy["queue"] else set()))
    stopping = ["stop postfix and dovecot"] if host.live else []
    result = StepResult(NAME, changed=True, detail="; ".join(stopping + todo), services=touched)
    if host.dry_run:
        return result
    undo_data = {"moves": [[new, old] for old, new in moves], "queue": bool(legacy["queue"])}
    journal.note(ctx, NAME, undo_data, touched)  # before the daemons stop
    stop(host)
    for old, new in moves:
        move_tree(old, new)
    result.undo = undo_data
    return result


def undo(ctx: Context, data: dict) -> str:
    """Move the mail back (the old config is back by now: files is undone first)."""
    stop(ctx.host)
    n = sum(move_tree(src, dst) for src, dst in data["moves"])
    if data.get("queue") and ctx.host.live:
        owners.repair_queue(ctx.host)  # postsuper -s, for the old queue
    return f"moved {n} files back"


# -- moving a tree -------------------------------------------------------------------------
def move_tree(src: str, dst: str) -> int:
    """Move every file under ``src`` to the same place under ``dst``: copies beside their
    targets, synced, renamed into place, synced, then the originals removed, then the empty
    directories below ``src``. Resumable at any point: a file already in place with the same
    bytes is not copied again; a different one is an error. Returns the files moved."""
    if not os.path.isdir(src):
        return 0
    todo, dirs = _walk(src, dst)
    fresh = [(s, d) for s, d in todo if not _in_place(s, d)]
    for s, d in fresh:
        _copy(s, _tmp(d))
    os.sync()
    for _, d in fresh:
        os.rename(_tmp(d), d)
    os.sync()
    for s, _ in todo:
        os.unlink(s)
    for s_dir, d_dir, st in reversed(dirs):
        os.utime(d_dir, ns=(st.st_atime_ns, st.st_mtime_ns))
        if s_dir != src and not os.listdir(s_dir):
            os.rmdir(s_dir)
    os.sync()
    return len(todo)


def _walk(src: str, dst: str) -> tuple[list, list]:
    todo, dirs = [], []
    for dirpath, dirnames, names in os.walk(src):
        target = os.path.normpath(os.path.join(dst, os.path.relpath(dirpath, src)))
        st = os.lstat(dirpath)
        if not os.path.isdir(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.mkdir(target)
            _own_like(target, st)
        dirs.append((dirpath, target, st))
        for name in names + [n for n in dirnames if os.path.islink(os.path.join(dirpath, n))]:
            path = os.path.join(dirpath, name)
            if name.startswith(TMP):  # a copy of an interrupted move: its original is intact
                os.unlink(path)
            elif stat.S_ISREG(os.lstat(path).st_mode) or os.path.islink(path):
                todo.append((path, os.path.join(target, name)))
    return todo, dirs


def _tmp(path: str) -> str:
    return os.path.join(os.path.dirname(path), TMP + os.path.basename(path))


def _in_place(s: str, d: str) -> bool:
    if not os.path.lexists(d):
        return False
    if os.path.islink(s) or os.path.islink(d):
        same = os.path.islink(s) and os.path.islink(d) and os.readlink(s) == os.readlink(d)
    else:
        same = filecmp.cmp(s, d, shallow=False)
    if not same:
        raise MigrationError(f"{d} exists and differs from {s}", file=d,
                             fix="compare the two by hand, keep the right one, re-run apply")
    return True


def _copy(s: str, tmp: str) -> None:
    st = os.lstat(s)
    if os.path.lexists(tmp):
        os.unlink(tmp)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(s), tmp)
    else:
        shutil.copyfile(s, tmp)
    _own_like(tmp, st)


def _own_like(path: str, st: os.stat_result) -> None:
    """Owner first (chown clears set-id bits), then mode and times."""
    if os.geteuid() == 0:
        os.lchown(path, st.st_uid, st.st_gid)
    if not os.path.islink(path):
        os.chmod(path, stat.S_IMODE(st.st_mode))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
