"""apply / plan: run the steps in order, each ``apply(ctx) -> StepResult`` (agent/step.py);
the report gets every result.

Safety: files go live only after the staged set passes the real tools. If any step fails
(an AgentError or any other exception), every completed step that returned ``undo`` data is
undone, newest first, and the services those steps touched are restarted on the old files.
The undo data is kept in a journal while the run lasts (agent/journal.py): a run that dies
without a rollback is undone at the start of the next one.
"""
from __future__ import annotations

import time

from agent import (accounts, backup_step, commands, files, journal, keys, mailbox_moves, migrate,
                   owners, packages, preflight, services, volume)
from agent.errors import AgentError, UnexpectedError
from agent.step import Context, Step, StepResult

# volume before anything is written to the data dir; keys before files (the TLS pair);
# migrate and mailbox_moves (daemons stopped on the old config) before files; owners after files (postfix's
# tools read the live main.cf); files before commands and services (what changed); the backup
# timers last, once the mail runs.
STEPS: tuple[Step, ...] = (preflight, volume, packages, accounts, keys, migrate, mailbox_moves,
                           files, owners, commands, services, backup_step)


def execute(ctx: Context, steps: tuple[Step, ...] = STEPS) -> None:
    """Run the steps; on failure roll back and raise an AgentError (a KeyboardInterrupt or
    SystemExit is rolled back too, then passes through)."""
    started = time.monotonic()
    recovered = journal.recover(ctx, {s.NAME: s for s in steps})  # raises: nothing else runs
    if recovered:
        recovered.duration_s = time.monotonic() - started
        ctx.results.append(recovered)
        if ctx.host.dry_run and journal.read(ctx.host) is not None:
            return  # plan: apply puts the host back first; planning on it now would mislead
    for step in steps:
        started = time.monotonic()
        try:
            result = step.apply(ctx)
        except BaseException as exc:
            ctx.results.append(StepResult(step.NAME, ok=False,
                                          duration_s=time.monotonic() - started))
            rollback(ctx, steps)
            if isinstance(exc, Exception) and not isinstance(exc, AgentError):
                raise UnexpectedError.wrap(exc, step.NAME) from exc
            raise
        result.name, result.duration_s = step.NAME, time.monotonic() - started
        ctx.results.append(result)
        journal.sync(ctx)
    journal.clear(ctx.host)


def rollback(ctx: Context, steps: tuple[Step, ...] = STEPS) -> None:
    """Undo what the journal names (the completed steps and the failed one's pending change),
    newest first, best effort: one undo that fails must not stop the others. Adds a
    "rollback" result saying what happened; the journal stays when an undo failed."""
    todo = journal.entries(ctx)
    if not todo:
        return
    started = time.monotonic()
    notes, problems, restart = journal.undo(ctx, todo, {s.NAME: s for s in steps})
    ctx.results.append(StepResult("rollback", changed=True, ok=not problems and not restart,
                                  detail="; ".join(notes + problems + restart),
                                  duration_s=time.monotonic() - started))
    if not problems:
        journal.clear(ctx.host)
