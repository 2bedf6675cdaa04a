"""The agent's own errors: each names what failed, what the tool said, and how to fix it."""
from __future__ import annotations

import subprocess
import traceback


class AgentError(Exception):
    step = "agent"

    def __init__(self, message: str, *, file: str = "", tool_output: str = "", fix: str = ""):
        self.message, self.file, self.tool_output, self.fix = message, file, tool_output, fix
        super().__init__(self.describe())

    def describe(self) -> str:
        parts = [self.message]
        if self.file:
            parts.append(f"file: {self.file}")
        if self.tool_output:
            parts.append("tool said: " + self.tool_output.strip().replace("\n", "\n    "))
        if self.fix:
            parts.append(f"fix: {self.fix}")
        return "\n  ".join(parts)

    def as_dict(self) -> dict:
        return {"type": type(self).__name__, "step": self.step, "message": self.message,
                "file": self.file, "tool_output": self.tool_output.strip(), "fix": self.fix}


class PreflightError(AgentError):
    step = "preflight"


class RecoveryError(AgentError):
    """The journal of an interrupted apply could not be undone; it is kept for the next run."""
    step = "recover"


class VolumeError(AgentError):
    step = "volume"


class MigrationError(AgentError):
    step = "migrate"


class PackageError(AgentError):
    step = "packages"


class ValidationError(AgentError):
    """A staged config set was refused by the real tool; nothing went live."""
    step = "validate"


class ApplyError(AgentError):
    step = "apply"


class ServiceError(AgentError):
    step = "services"


class CommandError(AgentError):
    step = "commands"


class BackupError(AgentError):
    """A backup command refused or failed (wrong password, no such snapshot or mailbox...)."""
    step = "backup"

    def line(self) -> str:
        """The one line a refusal prints: what, the value, the fix."""
        return f"{self.message}; fix: {self.fix}" if self.fix else self.message


class UnexpectedError(AgentError):
    """Any other exception in a step (a bug, or a host state nobody foresaw): reported as a
    failed run like the others, after the same rollback."""

    @classmethod
    def wrap(cls, exc: Exception, step: str) -> "UnexpectedError":
        if isinstance(exc, subprocess.CalledProcessError):
            said = exc.stderr or exc.stdout or ""
        else:
            said = "".join(traceback.format_exception(exc))
        err = cls(f"{step}: {type(exc).__name__}: {exc}", tool_output=str(said)[-3000:],
                  fix="the files this run changed were put back; fix the cause shown "
                      "and re-run apply (a Python traceback is an agent bug: report it)")
        err.step = step
        return err
