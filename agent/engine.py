"""apply / plan: run the steps in order, each ``apply(ctx) -> StepResult`` (agent/step.py);
the report gets every result.

Safety: files go live only after the staged set passes the real tools. If any step fails
(an AgentError or any other exception), every completed step that returned ``undo`` data is
undone, newest first, and the services those steps touched are restarted on the old files.
"""
from __future__ import annotations

import time

from agent import accounts, commands, files, keys, packages, preflight, services
from agent.errors import AgentError, UnexpectedError
from agent.step import Context, Step, StepResult

# keys before files (the TLS pair), files before commands and services (what changed).
STEPS: tuple[Step, ...] = (preflight, packages, accounts, keys, files, commands, services)


def execute(ctx: Context, steps: tuple[Step, ...] = STEPS) -> None:
    """Run the steps; on failure roll back and raise an AgentError (a KeyboardInterrupt or
    SystemExit is rolled back too, then passes through)."""
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


def rollback(ctx: Context, steps: tuple[Step, ...] = STEPS) -> None:
    """Undo the completed steps, newest first, best effort: one undo that fails must not
    stop the others. Adds a "rollback" result saying what happened."""
    by_name = {s.NAME: s for s in steps}
    done = [r for r in reversed(ctx.results) if r.undo is not None]
    if not done:
        return
    started, notes, problems = time.monotonic(), [], []
    for result in done:
        try:
            notes.append(f"{result.name}: {by_name[result.name].undo(ctx, result.undo)}")
        except Exception as exc:  # keep going: the original error is what gets reported
            problems.append(f"{result.name}: undo failed: {type(exc).__name__}: {exc}")
    restarted, failed = services.restart(ctx.host, frozenset().union(*(r.services for r in done)))
    if restarted:
        notes.append("restarted " + " ".join(restarted))
    if failed:
        problems.append("restart failed: " + " ".join(failed))
    ctx.results.append(StepResult("rollback", changed=True, ok=not problems,
                                  detail="; ".join(notes + problems),
                                  duration_s=time.monotonic() - started))
