"""A small SPF evaluator (RFC 7208) for one question: does the domain authorize this IP,
and within the 10-DNS-lookup limit? Enough for the status check; Postfix's own policy
server (postfix-policyd-spf-python) is what judges inbound mail.

Counted as lookups (section 4.6.4): include, a, mx, ptr, exists, redirect, recursively.
Macros are not expanded (a record using them is reported, not guessed at).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

MAX_LOOKUPS = 10
_QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_COUNTED = ("include", "a", "mx", "ptr", "exists", "redirect")


class SpfError(Exception):
    def __init__(self, message: str, fix: str):
        super().__init__(message)
        self.fix = fix


@dataclass
class Result:
    verdict: str       # pass, fail, softfail, neutral
    mechanism: str     # the term that matched ("" when none did)
    lookups: int


def _record(lookup, domain: str) -> str:
    found = [t for t in lookup(domain, "TXT") if t.lower().startswith("v=spf1")]
    if len(found) != 1:
        raise SpfError(f"{domain}: {len(found)} SPF records (need exactly 1)",
                       f"publish one v=spf1 TXT record at {domain}")
    return found[0]


def _in(ip, addrs: list[str], cidr: int | None) -> bool:
    for a in addrs:
        try:
            net = ipaddress.ip_network(f"{a}/{cidr}" if cidr is not None else a, strict=False)
        except ValueError:
            continue
        if ip.version == net.version and ip in net:
            return True
    return False


def _split_cidr(arg: str) -> tuple[str, int | None]:
    if "/" in arg:
        target, _, cidr = arg.partition("/")
        return target, int(cidr.split("/")[0]) if cidr.split("/")[0] else None
    return arg, None


class _Eval:
    def __init__(self, lookup, ip: str):
        self.lookup, self.ip, self.lookups = lookup, ipaddress.ip_address(ip), 0

    def count(self, term: str) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise SpfError(f"more than {MAX_LOOKUPS} DNS lookups (at {term}): permerror",
                           "flatten includes into ip4:/ip6: terms")

    def check(self, domain: str) -> tuple[str, str]:
        record = _record(self.lookup, domain)
        if "%{" in record:
            raise SpfError(f"{domain} uses SPF macros; not evaluated", "check it with an SPF tool")
        redirect = None
        for term in record.split()[1:]:
            low = term.lower()
            if low.startswith("redirect="):
                redirect = term.split("=", 1)[1]
                continue
            if "=" in low.split(":")[0]:
                continue  # exp= and unknown modifiers do not decide anything
            qual = _QUALIFIERS.get(term[0], None)
            body = term[1:] if qual else term
            qual = qual or "pass"
            mech, _, arg = body.partition(":")
            mech = mech.lower()
            if "/" in mech:  # "a/24", "mx/24" without a domain
                mech, _, cidr_text = mech.partition("/")
                arg = f"{domain}/{cidr_text}"
            if mech in _COUNTED:
                self.count(term)
            if self.matches(mech, arg, domain, term):
                return qual, term
        if redirect:
            self.count("redirect=" + redirect)
            return self.check(redirect)
        return "neutral", ""

    def matches(self, mech: str, arg: str, domain: str, term: str) -> bool:
        if mech == "all":
            return True
        if mech in ("ip4", "ip6"):
            return _in(self.ip, [arg], None)
        if mech == "include":
            verdict, _ = self.check(arg)
            return verdict == "pass"
        if mech in ("a", "mx"):
            target, cidr = _split_cidr(arg or domain)
            hosts = [target or domain]
            if mech == "mx":
                hosts = [m.split()[-1] for m in self.lookup(target or domain, "MX")]
            rtype = "A" if self.ip.version == 4 else "AAAA"
            addrs = [a for h in hosts for a in self.lookup(h, rtype)]
            return _in(self.ip, addrs, cidr)
        if mech == "exists":
            return bool(self.lookup(arg, "A"))
        if mech == "ptr":
            return False  # deprecated (RFC 7208 5.5); never relied on here
        raise SpfError(f"unknown SPF term {term!r}: permerror", "fix the record's syntax")


def evaluate(lookup, domain: str, ip: str) -> Result:
    ev = _Eval(lookup, ip)
    verdict, term = ev.check(domain)
    return Result(verdict, term, ev.lookups)
