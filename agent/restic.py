"""restic 0.14 (Debian 12's package) as the backup commands use it.

The password reaches restic through RESTIC_PASSWORD_FILE and the backend's credentials through
the environment, both from the root-only files apply writes: never a command line, never a log.
Errors name the repository as the readable spec does (without credentials).

What 0.14 lacks, and how this copes:
- exit codes for "no repository", "wrong password", "locked" (0.17): told apart by message;
- snapshot sizes in ``snapshots --json`` (0.17): ``restic stats`` once per snapshot, cached;
- ``restore --delete`` (0.17): a whole restore swaps directories (agent/backup_restore.py);
- removing stale locks itself, ``--retry-lock`` (0.16): ``restic unlock`` (stale locks only:
  dead processes on this host, or older than 30 min) before each job, and one job at a time
  on this host (agent/backup_cli.py's lock).
"""
from __future__ import annotations

import json
import os
import re
import subprocess

from agent.backup_config import CHECK_SUBSET, TAG
from agent.errors import BackupError
from agent.spec_model import Keep

CHECK_FIX = "see what restic said; bulletproof-agent backup check verifies the repository"


class NoRepository(BackupError):
    pass


def classify(command: str, label: str, said: str) -> BackupError:
    """restic's failure as the agent's error: what, the repository, the fix (and what restic
    said, unless the one line says it all)."""
    said = said.strip()
    if "wrong password or no key found" in said:
        return BackupError(f"wrong repository password for {label}",
                           fix="set backup_password in secrets.json to the password this "
                               "repository was created with, then apply")
    if "Is there a repository at the following location?" in said:
        return NoRepository(f"no restic repository at {label}",
                            fix="the first `bulletproof-agent backup run` creates it; "
                                "check backup.repository and the backend's credentials")
    if "already locked" in said:
        return BackupError(f"the repository {label} is locked by another restic run",
                           tool_output=said, fix="wait for it to end; a lock left by a killed "
                           "run is removed by the next `bulletproof-agent backup run`")
    return BackupError(f"restic {command} failed for {label}", tool_output=said[-3000:],
                       fix=CHECK_FIX)


class Restic:
    def __init__(self, env: dict[str, str], label: str, runner=subprocess.run):
        self.env = env          # the environment file's variables
        self.label = label      # the repository as the readable spec names it
        self.runner = runner    # subprocess.run, or a fake in the unit tests

    def call(self, args: list[str], timeout: float | None = 600, ok=(0,)
             ) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
        env.update(self.env)
        try:
            proc = self.runner(["restic", *args], capture_output=True, text=True, env=env,
                               timeout=timeout)
        except FileNotFoundError as exc:
            raise BackupError("restic is not installed",
                              fix="re-run bulletproof-agent apply (it installs restic)") from exc
        except subprocess.TimeoutExpired as exc:
            raise BackupError(f"restic {args[0]} gave no answer in {timeout:.0f} s from "
                              f"{self.label}", fix="check the network to the repository"
                              ) from exc
        if proc.returncode not in ok:
            raise classify(args[0], self.label, proc.stderr or proc.stdout)
        return proc

    def open_or_init(self) -> bool:
        """Open the repository, clearing stale locks; create it when there is none (True).
        A wrong password is an error, never a new repository, and `init` itself refuses a
        location that holds one."""
        try:
            self.call(["unlock"])
            return False
        except NoRepository:
            self.call(["init"])
            return True

    def backup(self, sources, excludes) -> dict:
        """The run's summary; ``unreadable`` lists files that vanished while read (a flag
        change renames a Maildir file): they are in the next snapshot."""
        args = ["backup", "--json", "--quiet", "--tag", TAG,
                *(f"--exclude={e}" for e in excludes), *sources]
        proc = self.call(args, timeout=None, ok=(0, 3))  # 3: saved, some files unreadable
        lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
        summary = next((l for l in reversed(lines) if l.get("message_type") == "summary"), None)
        if summary is None:
            raise BackupError(f"restic backup to {self.label} printed no summary",
                              tool_output=proc.stderr[-3000:], fix=CHECK_FIX)
        summary["unreadable"] = [l for l in proc.stderr.splitlines() if l.strip()][:20] \
            if proc.returncode == 3 else []
        return summary

    def snapshots(self) -> list[dict]:
        """The agent's snapshots, oldest first."""
        out = self.call(["snapshots", "--json", "--tag", TAG]).stdout
        return sorted(json.loads(out or "[]"), key=lambda s: s["time"])

    def find(self, wanted: str) -> dict:
        """The snapshot ``wanted`` names (an id or its prefix, or "latest")."""
        snaps = self.snapshots()
        found = snaps[-1:] if wanted == "latest" else [s for s in snaps
                                                       if s["id"].startswith(wanted)]
        if len(found) == 1:
            return found[0]
        what = "no snapshot yet" if wanted == "latest" else (
            f"snapshot {wanted} not found" if not found else f"snapshot id {wanted} is ambiguous")
        raise BackupError(f"{what} in {self.label}",
                          fix="`bulletproof-agent backup snapshots` lists them; give one's "
                              "id or latest")

    def size(self, snapshot_id: str) -> int:
        """Bytes of the files in the snapshot (what a restore writes)."""
        return int(json.loads(self.call(["stats", "--json", snapshot_id]).stdout)["total_size"])

    def restore(self, snapshot_id: str, target: str, include: list[str]) -> None:
        self.call(["restore", snapshot_id, "--target", target,
                   *(f"--include={p}" for p in include)], timeout=None)

    def forget(self, keep: Keep) -> int:
        """Drop the snapshots past the retention and prune their data; the number dropped.
        Grouped by host and tag, not by path: moving the data keeps one history."""
        policy = [f"--keep-{n}={v}" for n, v in vars(keep).items() if v]
        proc = self.call(["forget", "--json", "--prune", "--tag", TAG, "--group-by",
                          "host,tags", *policy], timeout=None)
        first = next((l for l in proc.stdout.splitlines() if l.startswith("[")), "[]")
        return sum(len(g.get("remove") or []) for g in json.loads(first))

    def check(self) -> str:
        proc = self.call(["check", f"--read-data-subset={CHECK_SUBSET}"], timeout=None)
        return (re.findall(r"no errors were found", proc.stdout) or ["checked"])[0]
