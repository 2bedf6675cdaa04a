"""What a DNSBL answer means: the lists we know with their listing codes, postscreen's reply
filter (parsed and matched), the error codes ("blocked": the list refuses our resolver) and
the Spamhaus DQS form. Standard library only; agent/contract.py re-exports it (the one rule
set the stack and the agent share)."""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class KnownDnsbl:
    filter: str               # postscreen reply filter: the answers that are listings
    dqs: str | None = None    # the zone asked with a Spamhaus DQS key ("{key}" in it)


# The lists we know, with the answers their operators document as listings. Anything else in
# 127.0.0.0/8 is an error code (Spamhaus: 127.255.255.0/24, "your resolver is refused"), never
# a listing. dnsbl.test is the local stack's stand-in for Spamhaus (its DQS form included).
KNOWN_DNSBLS = {
    "zen.spamhaus.org": KnownDnsbl("127.0.0.[2..11]", "{key}.zen.dq.spamhaus.net"),
    "sbl.spamhaus.org": KnownDnsbl("127.0.0.[2;9]", "{key}.sbl.dq.spamhaus.net"),
    "xbl.spamhaus.org": KnownDnsbl("127.0.0.[4..7]", "{key}.xbl.dq.spamhaus.net"),
    "pbl.spamhaus.org": KnownDnsbl("127.0.0.[10;11]", "{key}.pbl.dq.spamhaus.net"),
    "bl.spamcop.net": KnownDnsbl("127.0.0.2"),
    "b.barracudacentral.org": KnownDnsbl("127.0.0.2"),
    "psbl.surriel.com": KnownDnsbl("127.0.0.2"),
    "bl.mailspike.net": KnownDnsbl("127.0.0.[2;10;11;12]"),
    "list.dnswl.org": KnownDnsbl("127.0.[2..20].[0..3]"),   # an allowlist (negative weight)
    "dnsbl.test": KnownDnsbl("127.0.0.[2..11]", "{key}.dq.dnsbl.test"),
}
# An unknown list without a filter in the config: 127.0.0.1 (RFC 5782: never listed, often the
# "error" answer) and the 127.255.255.0/24 error block do not count.
DEFAULT_DNSBL_FILTER = "127.0.0.[2..254]"
DNSBL_ERROR_CODES = {
    "127.255.255.252": "typing error in the DNSBL name",
    "127.255.255.254": "query via a public/open resolver (or one without attributable rDNS)",
    "127.255.255.255": "excessive number of queries",
}
# Where the host's unbound answers a DQS site's public name from (a DNAME to the keyed zone),
# so main.cf never holds the key: <site>.DQS_ALIAS_ZONE.
DQS_ALIAS_ZONE = "dqs.internal"


def is_dqs_key(value) -> bool:
    """A Spamhaus DQS key: lower-case letters and digits (26 of them today)."""
    return isinstance(value, str) and re.fullmatch(r"[a-z0-9]{16,63}", value) is not None


def dnsbl_filter(zone: str, configured: str | None = None) -> str:
    """The reply filter of a site: the configured one, the known list's, or the default."""
    known = KNOWN_DNSBLS.get(zone)
    return configured or (known.filter if known else DEFAULT_DNSBL_FILTER)


def dqs_zone(zone: str, key: str) -> str | None:
    """The keyed zone of a site that has a DQS form, else None."""
    known = KNOWN_DNSBLS.get(zone)
    return known.dqs.format(key=key) if known and known.dqs else None


def dqs_alias(zone: str) -> str:
    return f"{zone}.{DQS_ALIAS_ZONE}"


_FILTER_PART = re.compile(r"(\d{1,3})|\[((?:\d{1,3}(?:\.\.\d{1,3})?)(?:;\d{1,3}(?:\.\.\d{1,3})?)*)\]")


def _filter_sets(text) -> list[set[int]] | None:
    """postscreen's d.d.d.d filter (each d a number or [n;n..m]) as four sets, None if invalid."""
    parts = text.split(".") if isinstance(text, str) else []
    # "[2..11]" splits on its own dots: join the pieces back inside brackets.
    joined, buf = [], ""
    for p in parts:
        buf = f"{buf}.{p}" if buf else p
        if buf.count("[") == buf.count("]"):
            joined.append(buf)
            buf = ""
    if buf or len(joined) != 4:
        return None
    out = []
    for part in joined:
        m = _FILTER_PART.fullmatch(part)
        if not m:
            return None
        values: set[int] = set()
        for item in ([m.group(1)] if m.group(1) else m.group(2).split(";")):
            lo, _, hi = item.partition("..")
            lo_i, hi_i = int(lo), int(hi or lo)
            if not (0 <= lo_i <= hi_i <= 255):
                return None
            values |= set(range(lo_i, hi_i + 1))
        out.append(values)
    return out


def is_dnsbl_filter(value) -> bool:
    return _filter_sets(value) is not None


def filter_matches(filt: str, answer: str) -> bool:
    sets = _filter_sets(filt)
    octets = answer.split(".")
    return bool(sets) and len(octets) == 4 and all(
        o.isdigit() and int(o) in s for o, s in zip(octets, sets))


def classify_dnsbl(answers, filt: str) -> tuple[str, list[str]]:
    """("listed" | "refused" | "clean", the answers that say so). An A answer in 127.0.0.0/8
    outside the filter is the list refusing or failing to answer us, not a listing."""
    codes = [a for a in answers if a.startswith("127.")]
    listed = [a for a in codes if filter_matches(filt, a)]
    if listed:
        return "listed", listed
    return ("refused", codes) if codes else ("clean", [])


def dnsbl_refusal_text(zone: str, codes) -> str:
    meaning = "; ".join(f"{c}: {DNSBL_ERROR_CODES.get(c, 'not a listing code of this list')}"
                        for c in codes)
    return f"{zone} refuses our resolver's queries ({meaning}); its listings are not seen"
