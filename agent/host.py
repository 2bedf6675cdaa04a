"""The machine the agent works on.

``Host.root`` is a path prefix ("/" on a real server, a temp dir in unit tests). Steps that
act on the running system (preflight, packages, accounts, commands, services) only do so
when ``host.live``.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass


@dataclass
class Host:
    root: str = "/"
    dry_run: bool = False  # plan: read facts, decide, change nothing
    run_id: str = ""

    @property
    def live(self) -> bool:
        return os.path.realpath(self.root) == "/"

    def path(self, p: str) -> str:
        return os.path.join(self.root, p.lstrip("/"))

    def run(self, argv: list[str], *, check: bool = True, timeout: float = 600,
            env: dict | None = None, input: str | None = None) -> subprocess.CompletedProcess:
        full_env = dict(os.environ, **(env or {}))
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env=full_env, input=input)
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, argv, proc.stdout, proc.stderr)
        return proc
