"""apply / plan: preflight -> packages -> accounts -> keys -> files (staged, validated,
swapped) -> services -> checks. Every step yields a StepResult; the report gets them all.

Safety: files go live only after the staged set passes the real tools; if anything after
the swap fails (a service refuses to start), the previous files are put back and the
services that were touched are restarted on them.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time

from agent import accounts, files, keys, packages, preflight, render, services, validate
from agent.errors import AgentError
from agent.contract import STATE_DIR
from agent.host import Host, StepResult
from agent.spec import Spec


class Run:
    def __init__(self, spec: Spec, host: Host):
        self.spec, self.host = spec, host
        self.steps: list[StepResult] = []
        self.dkim_txt = ""

    def step(self, name: str, fn, *args) -> StepResult:
        started = time.monotonic()
        try:
            result = fn(*args)
        except AgentError:
            self.steps.append(StepResult(name, ok=False, duration_s=time.monotonic() - started))
            raise
        result.name = name
        result.duration_s = time.monotonic() - started
        self.steps.append(result)
        return result

    # -- the whole run ---------------------------------------------------------------
    def execute(self) -> None:
        spec, host = self.spec, self.host
        self.step("preflight", preflight.apply, spec, host)
        self.step("packages", packages.apply, spec, host)
        self.step("accounts", accounts.apply, spec, host)
        tls_holder = {}
        self.step("keys", self._keys, tls_holder)
        result = self.step("files", self._files, tls_holder["pair"])
        changed_services = result.changed_services  # type: ignore[attr-defined]
        undo = result.undo  # type: ignore[attr-defined]
        try:
            self.step("commands", self._commands, changed_services)
            self.step("services", services.apply, host, changed_services)
        except AgentError:
            if undo and not host.dry_run:
                files.rollback(undo)
                # Bring touched daemons back onto the old files; best effort.
                restore = [(s, "restart") for s in services.UNITS if s in changed_services]
                try:
                    services.perform(host, restore)
                except AgentError:
                    pass
            raise

    def _keys(self, holder: dict) -> StepResult:
        pair, detail = keys.tls_pair(self.spec, self.host)
        holder["pair"] = pair
        self.dkim_txt = keys.dkim_txt(self.spec.dkim.private_key_pem)
        return StepResult("keys", changed=" generated" in detail or "would" in detail,
                          detail=detail)

    def _files(self, tls_pair) -> StepResult:
        spec, host = self.spec, self.host
        targets = render.targets(spec)
        live = render.render(spec, tls_pair)
        todo = files.changes(host.path, targets, live)
        result = StepResult("files", changed=bool(todo))
        result.changed_services = {s for c in todo for s in c.target.services}
        result.undo = []
        result.diff = [line for c in todo for line in files.diff(c)]
        result.detail = (f"{len(todo)} of {len(targets)} files change: "
                         + ", ".join(c.path for c in todo)) if todo else \
            f"all {len(targets)} files up to date"
        if not todo:
            return result
        # Validate the complete new set in a staging copy, even for plan (it shows
        # whether apply would be refused). Content-only changes need it; mode-only don't.
        if any(c.content_changed for c in todo):
            base = host.path(STATE_DIR) if not host.dry_run else None
            if base:
                os.makedirs(base, mode=0o700, exist_ok=True)
            stage = tempfile.mkdtemp(prefix="staging-", dir=base)
            try:
                files.stage(stage, render.render(spec, tls_pair, prefix=stage), targets)
                result.warnings += validate.validate(stage)
            finally:
                shutil.rmtree(stage, ignore_errors=True)
        if host.dry_run:
            return result
        backup = host.path(f"{STATE_DIR}/backup/{host.run_id or 'last'}")
        shutil.rmtree(backup, ignore_errors=True)
        result.undo = files.swap_in(host.path, todo, backup)
        return result

    def _commands(self, changed: set[str]) -> StepResult:
        """Side effects of files that belong to no daemon."""
        host, done = self.host, []
        result = StepResult("commands")
        if not host.live:
            return result
        if "hostname" in changed:
            done.append(f"hostname {self.spec.hostname}")
            if not host.dry_run:
                host.run(["hostname", self.spec.hostname], check=False)
        if "newaliases" in changed or not os.path.exists("/etc/aliases.db"):
            done.append("newaliases")
            if not host.dry_run:
                host.run(["newaliases"])
        result.changed, result.detail = bool(done), ", ".join(done) or "nothing to run"
        return result
