"""The journal of an apply in progress (STATE_DIR/journal.json), so a run that dies (killed,
power cut) is undone by the next one.

It holds the undo data of every step that changed something (plain JSON, agent/step.py) and,
while a step is changing live state, that step's undo data too: a step calls ``note`` before
its first live change (files: after the backups, before the swap; migrate: before it stops
the daemons). Each write is fsynced, the journal is removed when the run ends, and an undo is
harmless for a change that had not happened yet. At the start of the next apply ``recover``
undoes what the journal names, newest first, and restarts the services it touched; plan only
says what apply would do. Also at the start: a policy-rc.d left by a killed apt run of ours.
"""
from __future__ import annotations

import json
import os

from agent import services
from agent.contract import JOURNAL
from agent.durable import fsync_dir, write_json
from agent.errors import RecoveryError
from agent.packages import POLICY_MARK, POLICY_RC_D
from agent.step import Context, StepResult


def read(host) -> dict | None:
    try:
        with open(host.path(JOURNAL)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError as exc:  # never torn (written beside, then renamed): someone edited it
        raise RecoveryError("the journal of an interrupted apply is unreadable", file=JOURNAL,
                            tool_output=str(exc), fix="inspect it, undo by hand what it names, "
                            "remove it, and re-run apply") from exc


def _entry(name: str, undo, services_) -> dict:
    return {"step": name, "undo": undo, "services": sorted(services_)}


def _write(ctx: Context, pending: dict | None = None) -> None:
    entries = [_entry(r.name, r.undo, r.services) for r in ctx.results if r.undo is not None]
    if pending:
        entries.append(pending)
    if ctx.host.dry_run or not entries:
        return
    write_json(ctx.host.path(JOURNAL), {"run_id": ctx.host.run_id, "pid": os.getpid(), "entries": entries})


def note(ctx: Context, step: str, undo, services_=()) -> None:
    """Before a step changes live state: how to undo it, with the completed steps'."""
    _write(ctx, _entry(step, undo, services_))


def sync(ctx: Context) -> None:
    """After a step completed: the journal holds exactly the completed steps' undo data."""
    _write(ctx)


def clear(host) -> None:
    path = host.path(JOURNAL)
    if not host.dry_run and os.path.exists(path):
        os.unlink(path)
        fsync_dir(os.path.dirname(path))


def entries(ctx: Context) -> list[dict]:
    """What a rollback of this run undoes: the journal (with the failed step's pending
    change), or in plan the completed results."""
    written = None if ctx.host.dry_run else read(ctx.host)
    if written is not None:
        return written["entries"]
    return [_entry(r.name, r.undo, r.services) for r in ctx.results if r.undo is not None]


def undo(ctx: Context, entries_: list[dict], modules: dict) -> tuple[list[str], list[str], list[str]]:
    """Undo the entries newest first, each on its own (one that fails must not stop the
    others), then restart the services they touched. Returns (notes, undo problems,
    restart problems)."""
    notes, problems = [], []
    for e in reversed(entries_):
        try:
            notes.append(f"{e['step']}: {modules[e['step']].undo(ctx, e['undo'])}")
        except Exception as exc:
            problems.append(f"{e['step']}: undo failed: {type(exc).__name__}: {exc}")
    touched = frozenset(s for e in entries_ for s in e["services"])
    restarted, failed = services.restart(ctx.host, touched)
    if restarted:
        notes.append("restarted " + " ".join(restarted))
    return notes, problems, (["restart failed: " + " ".join(failed)] if failed else [])


def recover(ctx: Context, modules: dict) -> StepResult | None:
    """At the start of a run: undo what an interrupted apply left (plan: say what apply
    would undo); deal with a stale policy-rc.d. None when there is nothing of the kind."""
    host = ctx.host
    left = read(host)
    policy = _stale_policy(host)
    if left is None and policy is None:
        return None
    result = StepResult("recover")
    if left is not None:
        steps = ", ".join(e["step"] for e in left["entries"]) or "nothing recorded"
        if host.dry_run:
            result.changed = True
            result.detail = (f"interrupted apply {left['run_id']}: apply will undo {steps} "
                             "first (the steps are planned once that is done)")
        else:
            notes, problems, restart = undo(ctx, left["entries"], modules)
            if problems:
                raise RecoveryError(
                    f"could not undo the interrupted apply {left['run_id']}",
                    file=JOURNAL, tool_output="\n".join(problems + restart),
                    fix="fix the cause shown and re-run apply (the journal is kept, so the "
                        "next run tries again)")
            clear(host)
            result.changed = True
            result.detail = f"undid the interrupted apply {left['run_id']}: " + "; ".join(notes)
            result.warnings += restart
    _policy(host, policy, result)
    return result


def _stale_policy(host) -> str | None:
    """"ours" for a policy-rc.d our package install wrote (its run was killed: no daemon
    would ever start on an upgrade), "foreign" for someone else's, None for none."""
    try:
        with open(host.path(POLICY_RC_D)) as f:
            return "ours" if POLICY_MARK in f.read() else "foreign"
    except FileNotFoundError:
        return None
    except OSError:
        return "foreign"


def _policy(host, policy: str | None, result: StepResult) -> None:
    if policy == "foreign":
        result.warnings.append(f"{POLICY_RC_D} is not ours: left alone (while it exists, package "
                               "upgrades may not restart daemons)")
    elif policy == "ours":
        verb = "would remove" if host.dry_run else "removed"
        if not host.dry_run:
            os.unlink(host.path(POLICY_RC_D))
        result.changed = True
        result.detail = "; ".join(filter(None, [result.detail, f"{verb} the {POLICY_RC_D} a "
                                                "killed package install of ours left"]))
