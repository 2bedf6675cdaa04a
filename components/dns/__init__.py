"""DNS backends: one module per place the mail records can be published (registered in
components/backends.py). Each defines a ComponentResource (type token `bulletproof:dns:<Name>`)
built from `DnsArgs` that declares one child resource per `Record`, and `BACKEND`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Record:
    """One RRset of the mail record set, by a key that names its resource (`<component>-<key>`)."""
    key: str
    name: str                      # relative to the domain; "@" for the apex
    type: str
    values: list                   # pulumi.Input[str] each


@dataclass
class DnsArgs:
    target: Any                    # the backend's settings (a dict of Inputs)
    domain: str
    records: list[Record]
    after: list | None = None      # what every record waits for (the reputation preflight)
