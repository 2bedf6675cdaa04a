"""The step protocol: every step of apply and plan is a module with ``NAME`` and
``apply(ctx) -> StepResult``.

A step reads the host's facts, decides from them, and acts on the decision only when
``ctx.host.dry_run`` is false: plan and apply run the same code, and plan changes nothing.
A step that changed something it can put back returns ``undo`` data, and its module has
``undo(ctx, data) -> str``. The data is plain JSON (paths, names), never a closure, so a
journal can keep it across an interrupted run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Union

from agent.host import Host
from agent.spec import Spec

# What a step's undo() takes: JSON-serialisable lists/dicts of paths and names.
UndoData = Union[list, dict]


@dataclass
class StepResult:
    name: str
    changed: bool = False
    ok: bool = True
    detail: str = ""
    duration_s: float = 0.0
    diff: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Services (and service-like side effects: hostname, newaliases) whose config this
    # step changed, or would change in plan: later steps reload or restart them.
    services: frozenset[str] = frozenset()
    # How to put back what the step changed; None: it changed nothing undoable.
    undo: UndoData | None = None

    def as_dict(self) -> dict:
        d = {"name": self.name, "changed": self.changed, "ok": self.ok, "detail": self.detail,
             "duration_s": round(self.duration_s, 3)}
        if self.warnings:
            d["warnings"] = self.warnings
        if self.diff:
            d["diff"] = self.diff
        if self.services:
            d["services"] = sorted(self.services)
        return d


@dataclass
class Context:
    """What a step gets: the spec, the host, and what the earlier steps produced."""
    spec: Spec
    host: Host
    results: list[StepResult] = field(default_factory=list)  # completed steps, in order
    tls_pair: tuple[str, str] | None = None  # (cert_pem, key_pem), from keys for files
    dkim_txt: str = ""                       # from keys, for the report

    @property
    def touched(self) -> frozenset[str]:
        """The services whose config the completed steps changed."""
        return frozenset().union(*(r.services for r in self.results))


class Step(Protocol):
    NAME: str

    def apply(self, ctx: Context) -> StepResult: ...
