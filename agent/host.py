"""The machine the agent works on, and the result every step returns.

``Host.root`` is a path prefix ("/" on a real server, a temp dir in unit tests). Steps that
act on the running system (packages, services, preflight) only do so when ``host.live``.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field



@dataclass
class StepResult:
    name: str
    changed: bool = False
    ok: bool = True
    detail: str = ""
    duration_s: float = 0.0
    diff: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = {"name": self.name, "changed": self.changed, "ok": self.ok, "detail": self.detail,
             "duration_s": round(self.duration_s, 3)}
        if self.warnings:
            d["warnings"] = self.warnings
        if self.diff:
            d["diff"] = self.diff
        return d


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
