"""A throwaway stack of this project, deployed by the real engine with state of its own.

Its config is the local stack's (so it is what `make up` deploys), under another stack name:
names of bridges and containers derive from the stack, so it never touches the user's `local`.
"""
from __future__ import annotations

import pathlib
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

import yaml

from tests import local_stack
from tests.e2e.pulumi_cli import ROOT, outputs, pulumi, tools_env


@dataclass
class Stack:
    name: str
    env: dict
    timings: dict = field(default_factory=dict)
    checkout: pathlib.Path = ROOT  # the project the program runs from (its names derive from it)

    @property
    def config_file(self) -> pathlib.Path:
        return self.checkout / f"Pulumi.{self.name}.yaml"

    def run(self, *args: str, check: bool = True, timeout: int = 1800) -> subprocess.CompletedProcess:
        return pulumi([*args, "--stack", self.name], self.checkout, self.env, check=check, timeout=timeout)

    def timed(self, label: str, *args: str, **kw) -> subprocess.CompletedProcess:
        start = time.monotonic()
        try:
            return self.run(*args, **kw)
        finally:
            self.timings[label] = round(time.monotonic() - start, 1)

    def outputs(self) -> dict:
        return outputs(self.checkout, self.env, self.name)

    def config(self) -> dict:
        return yaml.safe_load(self.config_file.read_text())

    def write_config(self, doc: dict) -> None:
        self.config_file.write_text(yaml.safe_dump(doc, sort_keys=False))


def create(state_dir: pathlib.Path, config: dict | None = None, name: str | None = None,
           checkout: pathlib.Path = ROOT) -> Stack:
    stack = Stack(name or f"e2e-{uuid.uuid4().hex[:6]}", tools_env(state_dir), checkout=checkout)
    stack.run("stack", "init", "--secrets-provider", "passphrase")
    doc = stack.config()  # holds the new stack's encryptionsalt
    doc["config"] = dict(local_stack.config() if config is None else config)
    stack.write_config(doc)
    return stack


def unprotect(stack: Stack) -> None:
    """Stacks other than `local` protect their DKIM key; a throwaway stack lifts that to destroy."""
    stack.run("state", "unprotect", "--all", "--yes", check=False)


def remove(stack: Stack, deployed: bool = True, purge_backups: bool = True) -> None:
    """Destroy everything of the stack, its backups too (a throwaway stack's), even after a
    failed test; idempotent."""
    try:
        if deployed:
            unprotect(stack)
            stack.run("destroy", "--yes", "--refresh", check=False)
            for command in ("stop-all", *(("purge-backups",) if purge_backups else ())):
                subprocess.run([sys.executable, "-m", "localcloud", command, "--stack", stack.name,
                                "--checkout", str(stack.checkout)], cwd=ROOT, check=False, capture_output=True)
        stack.run("stack", "rm", "--yes", "--force", check=False)
    finally:
        stack.config_file.unlink(missing_ok=True)
