"""A check's verdict: pass, warn or fail, with a one-line reason and, unless it passed, the
fix. What `bulletproof-agent status` and `make check` print."""
from __future__ import annotations

from dataclasses import dataclass

PASS, WARN, FAIL = "pass", "warn", "fail"
LEVELS = (PASS, WARN, FAIL)


@dataclass
class Check:
    name: str
    level: str
    reason: str
    fix: str = ""

    def as_dict(self) -> dict:
        return {"name": self.name, "level": self.level, "reason": self.reason, "fix": self.fix}


def summary(checks: list[Check]) -> dict:
    return {level: sum(c.level == level for c in checks) for level in LEVELS}


def table(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"{c.level.upper():<5} {c.name:<22} {c.reason}")
        if c.fix and c.level != PASS:
            lines.append(f"{'':<28}fix: {c.fix}")
    s = summary(checks)
    lines.append(f"\n{s[PASS]} pass, {s[WARN]} warn, {s[FAIL]} fail")
    return "\n".join(lines)
