"""Postfix's own log (maillog_file = /var/log/mail.log) -> events, one per line that counts.

Formats are those of Postfix 3.7 on Debian 12 (fixture: tests/unit/data/mail.log, captured
from a real container). Lines that do not count (TLS, connect/disconnect...) give None.

Event kinds: received (a message entered the queue over SMTP), sent / deferred / bounced
(one per recipient delivery attempt), reject (with a reason), auth_failed, auth_throttled.
"""
from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

_HEAD = re.compile(r"^(?P<ts>\w{3} [ \d]\d \d\d:\d\d:\d\d) (?P<host>\S+) "
                   r"(?P<prog>[\w/.-]+)(?:\[\d+\])?: (?P<msg>.*)$")
_CLIENT = re.compile(r"\S*\[(?P<ip>[0-9a-fA-F.:]+)\]")
_QID = r"(?P<qid>[0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,})"
_RECEIVED = re.compile(_QID + r": client=(?P<client>\S+?)(?:, sasl_method=\w+, "
                       r"sasl_username=(?P<user>\S+))?$")
_DELIVERY = re.compile(_QID + r": to=<(?P<rcpt>[^>]*)>,.* relay=(?P<relay>[^,]+),.*"
                       r" status=(?P<status>sent|deferred|bounced)")
# NOQUEUE before DATA; a queue id, and no reply code, at END-OF-MESSAGE (a bare <LF> refused).
_REJECT = re.compile(r"(?:NOQUEUE|[0-9A-Za-z]+): reject: [\w-]+ from (?P<client>\S+?): "
                     r"(?:(?P<code>\d{3}) )?(?P<text>.*?); from=<(?P<sender>[^>]*)>")
_AUTH_FAILED = re.compile(r"warning: (?P<client>\S+?): SASL \S+ authentication failed")
_AUTH_RATE = re.compile(r"warning: AUTH command rate limit exceeded: \d+ from (?P<client>\S+) ")
_RATE = re.compile(r"warning: (?P<what>Connection|Connection count|Message delivery request|"
                   r"Recipient address|New TLS session) (?:rate )?limit exceeded: \d+ from "
                   r"(?P<client>\S+) ")
_PREGREET = re.compile(r"PREGREET \d+ after \S+ from \[(?P<ip>[^\]]+)\]:(?P<port>\d+)")
_DNSBL = re.compile(r"DNSBL rank \d+ for \[(?P<ip>[^\]]+)\]:(?P<port>\d+)")
# postscreen's after-220 tests (docs/smtp.md): the client failed one of them.
_AFTER_220 = re.compile(r"(?P<test>COMMAND PIPELINING|NON-SMTP COMMAND|BARE NEWLINE) from "
                        r"\[(?P<ip>[^\]]+)\]:(?P<port>\d+)")
# smtpd_forbid_unauth_pipelining: a command sent before the reply to the last one.
_PIPELINING = re.compile(r"improper command pipelining after \S+ from (?P<client>\S+?):")

# Reject text -> reason, first match wins (most specific first).
REASONS = (
    ("Outbound limit reached", "outbound rate limit"),
    ("blocked using", "DNSBL"),
    ("Relay access denied", "relay"),
    ("User unknown", "unknown user"),
    ("SPF", "SPF"),
    ("not owned by user", "sender login mismatch"),
    ("not logged in", "sender login mismatch"),
    ("Helo command rejected", "HELO"),
    ("Domain not found", "unknown domain"),
    ("Protocol error", "protocol"),
    ("bare <LF> received", "bare newline (SMTP smuggling)"),
)
# postscreen's after-220 tests, as reasons.
AFTER_220_REASONS = {"COMMAND PIPELINING": "pipelining", "NON-SMTP COMMAND": "non-SMTP command",
                     "BARE NEWLINE": "bare newline"}


@dataclass
class Event:
    time: datetime.datetime
    kind: str
    client: str = ""       # IP address
    reason: str = ""
    user: str = ""         # SASL user or envelope sender of an authenticated session
    relay: str = ""
    key: str = ""          # de-duplication key (queue id + recipient for deliveries)


def parse_time(ts: str, now: datetime.datetime) -> datetime.datetime:
    """Syslog stamps have no year: take this year, or last year if that lies in the future."""
    t = datetime.datetime.strptime(f"{now.year} {ts}", "%Y %b %d %H:%M:%S")
    if t > now + datetime.timedelta(days=1):
        t = t.replace(year=now.year - 1)
    return t


def _ip(client: str) -> str:
    m = _CLIENT.search(client)
    return m.group("ip") if m else client


def reason_of(text: str) -> str:
    for needle, reason in REASONS:
        if needle in text:
            return reason
    return "other"


def parse_line(line: str, now: datetime.datetime) -> Event | None:
    head = _HEAD.match(line.rstrip("\n"))
    if not head:
        return None
    msg, prog = head.group("msg"), head.group("prog")
    t = parse_time(head.group("ts"), now)
    if prog.endswith("/postscreen"):
        # postscreen's own NOQUEUE lines are the consequence of these; counted once here.
        # One session may fail several tests (a pregreet, then pipelining): the key makes
        # it one reject, under the first reason.
        m = _PREGREET.search(msg) or _DNSBL.search(msg)
        if m:
            return Event(t, "reject", m.group("ip"), "PREGREET" if "PREGREET" in msg else "DNSBL",
                         key=f"postscreen:{m.group('ip')}:{m.group('port')}")
        m = _AFTER_220.search(msg)
        if m:
            return Event(t, "reject", m.group("ip"), AFTER_220_REASONS[m.group("test")],
                         key=f"postscreen:{m.group('ip')}:{m.group('port')}")
        return None
    if not prog.startswith("postfix"):
        return None
    m = _RECEIVED.match(msg)
    if m:
        return Event(t, "received", _ip(m.group("client")), user=m.group("user") or "",
                     key=m.group("qid"))
    m = _DELIVERY.search(msg)
    if m:
        return Event(t, m.group("status"), relay=m.group("relay"),
                     key=f"{m.group('qid')}:{m.group('rcpt')}")
    m = _REJECT.search(msg)
    if m:
        reason = reason_of(m.group("text"))
        user = m.group("sender") if reason == "outbound rate limit" else ""
        return Event(t, "reject", _ip(m.group("client")), reason, user=user)
    m = _PIPELINING.search(msg)
    if m:
        return Event(t, "reject", _ip(m.group("client")), "pipelining")
    m = _AUTH_FAILED.search(msg)
    if m:
        return Event(t, "auth_failed", _ip(m.group("client")))
    m = _AUTH_RATE.search(msg)
    if m:
        return Event(t, "auth_throttled", _ip(m.group("client")), "AUTH rate limit")
    m = _RATE.search(msg)
    if m:
        return Event(t, "reject", _ip(m.group("client")), f"{m.group('what').lower()} rate limit")
    return None


def events(path: str, since: datetime.datetime, now: datetime.datetime | None = None):
    now = now or datetime.datetime.now()
    with open(path, errors="replace") as f:
        for line in f:
            ev = parse_line(line, now)
            if ev and ev.time >= since:
                yield ev
