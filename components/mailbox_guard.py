"""MailboxGuard: a domain that still has mailboxes is never removed by accident.

The resource holds which mailboxes each domain had at the last `up`. Its `check` runs at
preview, with the old inputs at hand, and refuses a new config in which a domain that had
mailboxes is gone, unless the domain was renamed (a domain's `previous_name`: the agent moves
its mailboxes) or is listed in `drop_mailboxes`. Dropping never deletes data: the dropped
domain's mailbox directories stay on the volume (and in the backups) until an operator deletes
them by hand.

The provider class is pickled into the state by reference (`components.mailbox_guard.
_MailboxGuardProvider`): its module and name never change (tests/unit/test_state_contract.py).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

FIX = "back up (bulletproof-agent backup run on the host), then add it to drop_mailboxes"


def removal_problems(olds: Mapping[str, Any], news: Mapping[str, Any]) -> list[str]:
    """One line per domain that had mailboxes in `olds` and would stop being served in `news`."""
    before = olds.get("domains") or {}
    after = news.get("domains") or {}
    allowed = {*after, *(news.get("renamed") or {}).values(), *(news.get("drop") or ())}
    out = []
    for domain in sorted(before):
        boxes = list(before[domain] or ())
        if boxes and domain not in allowed:
            count = f"{len(boxes)} mailbox{'es' if len(boxes) != 1 else ''}"
            out.append(f"removing the domain {domain} would stop serving its {count} "
                       f"({', '.join(sorted(boxes))}); to remove it: {FIX}; "
                       f"to rename it: set previous_name: {domain} on the new domain")
    return out


class _MailboxGuardProvider(ResourceProvider):
    serialize_as_secret_always = False  # it holds addresses only, no secret

    def check(self, olds, news):
        from pulumi.runtime import rpc
        if rpc.UNKNOWN in (news.get("domains"), news.get("drop"), news.get("renamed")):
            return CheckResult(news, [])
        # No property named: the engine would print the whole value before the reason.
        return CheckResult(news, [CheckFailure("", line) for line in removal_problems(olds or {}, news)])

    def create(self, props):
        return CreateResult(id_="mailboxes", outs=dict(props))

    def diff(self, _id, olds, news):
        keys = ("domains", "drop", "renamed")
        return DiffResult(changes=any(_plain(olds.get(k)) != _plain(news.get(k)) for k in keys), replaces=[])

    def update(self, _id, _olds, news):
        return UpdateResult(outs=dict(news))


def _plain(value):
    """Lists and dicts as the engine hands them back, compared by content."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class MailboxGuard(Resource, module="guard", name="Mailboxes"):
    """`domains`: {domain: [mailbox addresses]}; `drop`: the domains whose mailboxes may stop
    being served (drop_mailboxes); `renamed`: {new domain: its previous_name}."""

    def __init__(self, name: str, domains: Mapping[str, Sequence[str]], drop: Sequence[str] = (),
                 renamed: Mapping[str, str] | None = None, opts: pulumi.ResourceOptions | None = None):
        super().__init__(_MailboxGuardProvider(), name, {
            "domains": {d: sorted(boxes) for d, boxes in domains.items()},
            "drop": sorted(drop), "renamed": dict(renamed or {})}, opts)
