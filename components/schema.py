"""Declarative config keys, on the agent's rules (agent/contract.py: one rule set for what a
domain, an address, a label or a port is, whether the agent checks its spec or the stack its
config).

A `Key` names its reader, its default and whether it must be a Pulumi secret. A reader takes
the raw value and returns the typed one, or records one line naming the key, the value and the
fix and returns None. components/config.py declares the common keys, each backend its own.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Collection, Mapping

from agent import contract
from agent.contract import Checker

REQUIRED = object()
Reader = Callable[[Checker, str, Any], Any]


@dataclass(frozen=True)
class Key:
    name: str
    read: Reader
    default: Any = REQUIRED      # a value, or a callable(values read so far, stack) -> value
    secret: bool = False         # accepted only as a Pulumi secret (`pulumi config set --secret`)
    hint: str = ""               # how to set it, for a missing or misplaced value


def read_keys(c: Checker, raw: Mapping[str, Any], keys, stack: str,
              secret_keys: Collection[str], into: dict | None = None) -> dict:
    """{key: typed value} of `keys` from `raw`; every problem goes to `c`."""
    out = {} if into is None else into
    for key in keys:
        value = raw.get(key.name)
        if value is None:
            if key.default is REQUIRED:
                c.err(key.name, f"missing; {key.hint}" if key.hint else "missing")
                out[key.name] = None
                continue
            value = key.default(out, stack) if callable(key.default) else key.default
            out[key.name] = value if value is None else key.read(c, key.name, value)
            continue
        if key.secret and key.name not in secret_keys:
            # Never echo the value: it is a secret in the wrong place.
            c.err(key.name, "is stored in plain text in the stack config; remove it and set it "
                            f"as a secret: {key.hint}")
            out[key.name] = None
            continue
        out[key.name] = key.read(c, key.name, value)
    return out


# --- readers ---------------------------------------------------------------------------------

def _rule(ok: Callable[[Any], bool], problem: str) -> Reader:
    """A reader from a predicate; `problem` follows the value: "{value!r} <problem>"."""
    def read(c: Checker, key: str, value):
        if not ok(value):
            c.err(key, f"{value!r} {problem}")
            return None
        return value
    return read


def choice(choices: Collection[str], noun: str, fix: str | None = None) -> Reader:
    return _rule(lambda v: isinstance(v, str) and v in choices,
                 f"is not {noun}; {fix or 'use one of ' + ', '.join(choices)}")


def domain(example: str = "'example.no' (or 'example.test' on the local stack)") -> Reader:
    def read(c: Checker, key: str, value):
        if isinstance(value, str) and len(value) > 253:
            c.err(key, f"{value[:40]!r}... is {len(value)} characters long; a domain name has at "
                       f"most 253: use a shorter one, e.g. {example}")
            return None
        return _rule(contract.is_domain, "is not a domain name; use lower-case labels (a-z, 0-9, "
                                         "'-', at most 63 characters each) joined by dots, "
                                         f"e.g. {example}")(c, key, value)
    return read


def label(noun: str, example: str) -> Reader:
    return _rule(contract.is_label, f"is not {noun}; use e.g. {example}")


def positive(what: str, example: str, minimum: int = 1) -> Reader:
    return _rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum,
                 f"must be a positive whole number{what}, e.g. {example}")


def boolean(meaning: str = "true or false") -> Reader:
    return _rule(lambda v: isinstance(v, bool), f"must be {meaning}")


def ipv4(fix: str) -> Reader:
    return _rule(lambda v: contract.is_ip(v, 4), f"is not an IPv4 address; {fix}")


def ipv6(fix: str) -> Reader:
    return _rule(lambda v: contract.is_ip(v, 6), f"is not an IPv6 address; {fix}")


def ip_port(fix: str) -> Reader:
    return _rule(lambda v: isinstance(v, str) and contract.split_ip_port(v) is not None
                 and contract.is_ip(v.rpartition(":")[0], 4), f"is not IP:port; {fix}")


def text(problem: str) -> Reader:
    """Any non-blank string."""
    return _rule(lambda v: isinstance(v, str) and bool(v.strip()), problem)


def pattern(regex: str, problem: str) -> Reader:
    compiled = re.compile(regex)
    return _rule(lambda v: isinstance(v, str) and compiled.fullmatch(v) is not None, problem)


def address(example_domain: str = "example.no") -> Reader:
    return _rule(contract.is_address, f"is not an email address; e.g. dmarc@{example_domain}")
