"""A renamed domain's mailboxes move to its new name (spec ``mailbox_moves``), once.

Mailboxes live at MAIL_DIR/<domain>/<user>; a rename of the domain renames that one directory
(the same filesystem: nothing is copied, Dovecot's uidlists and indexes stay, so do UIDs).
Postfix and Dovecot stop first, so no delivery recreates the old directory between the move and
the new config; the services step starts them on the new files. Both directories present is
refused before anything changes: two mail stores are never merged.
"""
from __future__ import annotations

import os

from agent import journal, migrate
from agent.contract import MAIL_DIR
from agent.durable import fsync_dir
from agent.errors import MigrationError
from agent.step import Context, StepResult

NAME = "mailbox_moves"


def decide(moves, exists) -> list[tuple[str, str]]:
    """The (old dir, new dir) renames still to do; ``exists(path)``: the host's answer."""
    todo = []
    for old, new in moves:
        src, dst = f"{MAIL_DIR}/{old}", f"{MAIL_DIR}/{new}"
        if not exists(src):
            continue  # moved already (or never had mail)
        if exists(dst):
            raise MigrationError(
                f"mailboxes of {old} are to move to {new}, but {dst} exists already: the agent "
                f"does not merge two mail stores", file=dst,
                fix=f"move the mail of one of them aside by hand (back it up first), or take "
                    f"previous_name: {old} off {new}, then re-run apply")
        todo.append((src, dst))
    return todo


def apply(ctx: Context) -> StepResult:
    host = ctx.host
    todo = decide(ctx.spec.mailbox_moves, lambda p: os.path.isdir(host.path(p)))
    if not todo:
        return StepResult(NAME, detail="no domain's mailboxes to move")
    detail = "; ".join(f"move {s} to {d}" for s, d in todo)
    touched = frozenset({"postfix", "dovecot"})
    result = StepResult(NAME, changed=True, detail=detail, services=touched)
    if host.dry_run:
        return result
    undo_data = {"moves": [[host.path(d), host.path(s)] for s, d in todo]}
    journal.note(ctx, NAME, undo_data, touched)  # before the daemons stop
    migrate.stop(host)
    for src, dst in todo:
        _rename(host.path(src), host.path(dst))
    result.undo = undo_data
    return result


def undo(ctx: Context, data: dict) -> str:
    """Rename back (files is undone first: the old config names the old domain again)."""
    migrate.stop(ctx.host)
    done = [(s, d) for s, d in data["moves"] if os.path.isdir(s) and not os.path.exists(d)]
    for src, dst in done:
        _rename(src, dst)
    return f"moved {len(done)} domains' mailboxes back"


def _rename(src: str, dst: str) -> None:
    os.rename(src, dst)
    fsync_dir(os.path.dirname(dst))
