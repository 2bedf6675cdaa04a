"""`bulletproof-agent report`: the mail log of a period, counted and judged.

Counts (deliveries per recipient, each delivery attempt line once), rejects by reason, top
rejected clients, failed AUTH by client, per-hour series for the chart, and anomalies: what
a human should look at today.
"""
from __future__ import annotations

import collections
import datetime
import json
import re
import subprocess

from agent import maillog

# Anomaly thresholds (per period unless said otherwise).
AUTH_BRUTE_FORCE = 10        # failed AUTH from one client
DEFERRED_SPIKE_RATIO = 0.2   # deferred / (sent + deferred + bounced)
DEFERRED_SPIKE_MIN = 5
QUEUE_GROWTH = 50            # messages in the queue now
OUTBOUND_SPIKE = 3.0         # last hour vs the average hour of the period
OUTBOUND_SPIKE_MIN = 20


def parse_since(text: str) -> datetime.timedelta:
    m = re.fullmatch(r"(\d+)\s*([mhd])", text.strip())
    if not m:
        raise ValueError(f"--since {text!r}: expected a number and m/h/d, e.g. 90m, 24h, 7d")
    n, unit = int(m.group(1)), m.group(2)
    return datetime.timedelta(minutes=n) if unit == "m" else (
        datetime.timedelta(hours=n) if unit == "h" else datetime.timedelta(days=n))


def _queue_size() -> int | None:
    try:
        out = subprocess.run(["postqueue", "-j"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return sum(1 for line in out.stdout.splitlines() if line.strip()) if not out.returncode else None


def summarize(events, since: datetime.datetime, now: datetime.datetime,
              queue_size: int | None = None) -> dict:
    counts = collections.Counter()
    reasons, rejected_by, auth_by = (collections.Counter() for _ in range(3))
    throttled_by, outbound_limited = collections.Counter(), collections.Counter()
    submitted_by = collections.Counter()
    hours: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    seen = set()
    last_hour = now - datetime.timedelta(hours=1)
    submitted_last_hour = 0
    for ev in events:
        hour = ev.time.strftime("%Y-%m-%d %H:00")
        if ev.kind in ("sent", "deferred", "bounced"):
            if (ev.kind, ev.key) in seen:  # a retry of the same recipient counts once
                continue
            seen.add((ev.kind, ev.key))
            counts[ev.kind] += 1
            if ev.kind == "sent":
                hours[hour]["sent"] += 1
                counts["sent_local" if _is_local(ev.relay) else "sent_remote"] += 1
        elif ev.kind == "received":
            counts["received"] += 1
            hours[hour]["received"] += 1
            if ev.user:
                counts["submitted"] += 1
                submitted_by[ev.user] += 1
                submitted_last_hour += ev.time >= last_hour
        elif ev.kind == "reject":
            if ev.key and (ev.kind, ev.key) in seen:  # one postscreen session, one reject
                continue
            seen.add((ev.kind, ev.key))
            counts["rejected"] += 1
            hours[hour]["rejected"] += 1
            reasons[ev.reason] += 1
            rejected_by[ev.client] += 1
            if ev.user:
                outbound_limited[ev.user] += 1
        elif ev.kind == "auth_failed":
            counts["auth_failed"] += 1
            auth_by[ev.client] += 1
        elif ev.kind == "auth_throttled":
            counts["auth_throttled"] += 1
            throttled_by[ev.client] += 1
    period_h = max((now - since).total_seconds() / 3600, 1.0)
    rep = {
        "since": since.isoformat(timespec="seconds"), "until": now.isoformat(timespec="seconds"),
        "counts": {k: counts[k] for k in ("received", "submitted", "sent", "sent_local",
                                          "sent_remote", "deferred", "bounced", "rejected",
                                          "auth_failed", "auth_throttled")},
        "rejected_by_reason": dict(reasons.most_common()),
        "top_rejected_clients": [{"client": c, "count": n} for c, n in rejected_by.most_common(10)],
        "auth_failed_by_client": dict(auth_by.most_common()),
        "auth_throttled_by_client": dict(throttled_by.most_common()),
        "outbound_limited_by_user": dict(outbound_limited.most_common()),
        "submitted_by_user": dict(submitted_by.most_common()),
        "hourly": [{"hour": h, **{k: hours[h][k] for k in ("received", "rejected", "sent")}}
                   for h in sorted(hours)],
        "queue_size": queue_size,
    }
    rep["anomalies"] = anomalies(rep, submitted_last_hour, period_h)
    return rep


def _is_local(relay: str) -> bool:
    """Dovecot over LMTP (a unix socket in the queue dir) or Postfix's own local delivery."""
    return "[private/" in relay or relay in ("local", "virtual")


def anomalies(rep: dict, submitted_last_hour: int, period_h: float) -> list[dict]:
    out, c = [], rep["counts"]
    for client, n in rep["auth_failed_by_client"].items():
        throttled = rep["auth_throttled_by_client"].get(client, 0)
        if n >= AUTH_BRUTE_FORCE or throttled:
            out.append({"kind": "auth brute force", "detail":
                        f"{client}: {n} failed AUTH, {throttled} throttled by anvil"})
    for client, throttled in rep["auth_throttled_by_client"].items():
        if client not in rep["auth_failed_by_client"]:
            out.append({"kind": "auth brute force", "detail": f"{client}: {throttled} throttled"})
    attempts = c["sent"] + c["deferred"] + c["bounced"]
    if c["deferred"] >= DEFERRED_SPIKE_MIN and c["deferred"] > DEFERRED_SPIKE_RATIO * attempts:
        out.append({"kind": "deferred spike",
                    "detail": f"{c['deferred']} of {attempts} deliveries deferred"})
    if rep["queue_size"] is not None and rep["queue_size"] >= QUEUE_GROWTH:
        out.append({"kind": "queue growth", "detail": f"{rep['queue_size']} messages queued"})
    average = c["submitted"] / period_h
    if submitted_last_hour >= OUTBOUND_SPIKE_MIN and submitted_last_hour > OUTBOUND_SPIKE * average:
        out.append({"kind": "outbound spike", "detail":
                    f"{submitted_last_hour} submitted in the last hour (average {average:.1f})"})
    for user, n in rep["outbound_limited_by_user"].items():
        out.append({"kind": "outbound spike", "detail": f"{user} hit the outbound limit {n} times"})
    return out


def dnsbl_refusals(checks: list) -> list[dict]:
    """The DNSBLs that answer our resolver with an error code (agent/checks_dns.py): postscreen
    silently gets no listings from them, so the report says it (an anomaly, never a reject)."""
    return [{"kind": "DNSBL refuses our resolver", "detail": c.reason.split(": ", 1)[-1]}
            for c in checks if c.name.startswith("dnsbl:") and "refuses our resolver" in c.reason]


def build(log: str, since: datetime.timedelta, now: datetime.datetime | None = None,
          queue_size: int | None = None, dnsbl_checks: list | None = None) -> dict:
    """`dnsbl_checks`: the host's DNSBL checks now (agent/checks_dns.py), for the refusals."""
    now = now or datetime.datetime.now()
    start = now - since
    try:
        evs = list(maillog.events(log, start, now))
    except OSError as exc:
        raise SystemExit(f"report: cannot read {log}: {exc.strerror}")
    rep = summarize(evs, start, now, _queue_size() if queue_size is None else queue_size)
    refused = dnsbl_refusals(dnsbl_checks or [])
    rep["dnsbl_refused"] = [r["detail"] for r in refused]
    rep["anomalies"] += refused
    return rep


def text(rep: dict) -> str:
    c = rep["counts"]
    lines = [f"mail report {rep['since']} .. {rep['until']}",
             f"received {c['received']} (submitted by users {c['submitted']}), delivered "
             f"{c['sent']} (local {c['sent_local']}, remote {c['sent_remote']}), deferred "
             f"{c['deferred']}, bounced {c['bounced']}, rejected {c['rejected']}",
             f"failed AUTH {c['auth_failed']}, AUTH throttled {c['auth_throttled']}"]
    for title, data in (("rejected by reason", rep["rejected_by_reason"]),
                        ("failed AUTH by client", rep["auth_failed_by_client"]),
                        ("outbound limit hits by user", rep["outbound_limited_by_user"])):
        if data:
            lines.append(f"{title}: " + ", ".join(f"{k} {v}" for k, v in data.items()))
    if rep["top_rejected_clients"]:
        lines.append("top rejected clients: " + ", ".join(
            f"{x['client']} {x['count']}" for x in rep["top_rejected_clients"]))
    lines += [f"ANOMALY {a['kind']}: {a['detail']}" for a in rep["anomalies"]] or ["no anomalies"]
    return "\n".join(lines)


if __name__ == "__main__":  # debugging aid: python -m agent.mailreport LOG
    import sys
    print(json.dumps(build(sys.argv[1], parse_since("3650d"), queue_size=0), indent=2))
