"""The placement guard: a change the data volume cannot follow is refused at preview.

A host can be replaced and keep its mail while its volume can move to the new one: the same
backend, the same region. Another backend or region is another disk in another place: there
is no way to carry the mail there in one `up`. The way is a backup, a new stack, a restore.
"""
from __future__ import annotations

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, DiffResult, Resource, ResourceProvider

MOVE_HOWTO = ("the data volume cannot follow: back up (make backup STACK=...), deploy a new stack "
              "there, restore into it (make restore STACK=<new>), then retire this one; or set "
              "it back to {old!r}")


class _PlacementProvider(ResourceProvider):
    def check(self, olds, news):
        failures = [CheckFailure(key, f"{key}: {olds[key]!r} -> {news[key]!r}: "
                                      + MOVE_HOWTO.format(old=olds[key]))
                    for key in ("backend", "region") if olds.get(key) and olds.get(key) != news.get(key)]
        return CheckResult(news, failures)

    def create(self, props):
        return CreateResult(id_=f"{props['backend']}:{props['region']}", outs=props)

    def diff(self, _id, olds, news):
        return DiffResult(changes=False, replaces=[])


class Placement(Resource, module="guard", name="Placement"):
    """Where the mail lives (backend, region), as deployed; a change of it fails preview."""

    def __init__(self, name: str, backend: str, region: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__(_PlacementProvider(), name, {"backend": backend, "region": region}, opts)
