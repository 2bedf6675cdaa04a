"""Side effects of owned files that belong to no daemon: the running hostname, and the
aliases database Postfix reads instead of /etc/aliases."""
from __future__ import annotations

import os
import subprocess

from agent.errors import CommandError
from agent.render import DKIM_TMPFILES
from agent.step import Context, StepResult

NAME = "commands"


def decide(ctx: Context, has_aliases_db: bool) -> list[list[str]]:
    touched = ctx.touched  # the pseudo-services the files step names for these files
    todo = []
    if "daemon-reload" in touched:  # a unit drop-in changed (RequiresMountsFor the volume)
        todo.append(["systemctl", "daemon-reload"])
    if "tmpfiles" in touched:  # the milter socket's directory, before OpenDKIM restarts
        todo.append(["systemd-tmpfiles", "--create", DKIM_TMPFILES])
    if "hostname" in touched:
        todo.append(["hostname", ctx.spec.hostname])
    if "newaliases" in touched or not has_aliases_db:
        todo.append(["newaliases"])
    return todo


def apply(ctx: Context) -> StepResult:
    host = ctx.host
    if not host.live:
        return StepResult(NAME, detail="not the live root: commands not run")
    todo = decide(ctx, os.path.exists(host.path("/etc/aliases.db")))
    result = StepResult(NAME, changed=bool(todo),
                        detail=", ".join(" ".join(argv) for argv in todo) or "nothing to run")
    if not host.dry_run:
        for argv in todo:
            run(ctx, argv)
    return result


def run(ctx: Context, argv: list[str]) -> None:
    if argv[0] == "hostname":  # best effort: a container may not allow it
        ctx.host.run(argv, check=False)
        return
    try:
        ctx.host.run(argv)
    except subprocess.CalledProcessError as exc:
        file, fix = _BLAME.get(argv[0], ("", "see the tool output"))
        raise CommandError(f"{' '.join(argv)} failed", file=file,
                           tool_output=exc.stderr or exc.stdout or "",
                           fix=f"{fix}; the files of this run were put back") from exc


_BLAME = {"newaliases": ("/etc/aliases", "check the spec's aliases (see aliases(5))"),
          "systemd-tmpfiles": (DKIM_TMPFILES, "see tmpfiles.d(5)"),
          "systemctl": ("/etc/systemd/system", "see journalctl -b for what systemd refused")}
