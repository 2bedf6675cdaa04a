"""The mail log parser and report on real lines captured from a container (Postfix 3.7,
Debian 12): tests/unit/data/mail.log holds 3 submissions then 2 refused by the outbound
limit, 15 bad AUTH sessions throttled by anvil, and a mix (inbound, relay, unknown user,
SPF, DNSBL, PREGREET, a deferred and a bounced submission)."""
import datetime
import os

import pytest

from agent import maillog, mailreport, report_html

LOG = os.path.join(os.path.dirname(__file__), "data", "mail.log")
NOW = datetime.datetime(2026, 11, 25)


@pytest.fixture(scope="module")
def rep():
    return mailreport.build(LOG, mailreport.parse_since("7d"), now=NOW, queue_size=1)


@pytest.mark.parametrize("key, expected", [
    ("received", 6), ("submitted", 5), ("sent", 5), ("sent_local", 5), ("sent_remote", 0),
    ("deferred", 1), ("bounced", 1), ("rejected", 7), ("auth_failed", 9), ("auth_throttled", 21),
])
def test_counts(rep, key, expected):
    assert rep["counts"][key] == expected


def test_rejected_by_reason(rep):
    assert rep["rejected_by_reason"] == {"outbound rate limit": 2, "relay": 1, "unknown user": 1,
                                         "SPF": 1, "DNSBL": 1, "PREGREET": 1}


def test_outbound_limit_hits_are_attributed_to_the_sender(rep):
    assert rep["outbound_limited_by_user"] == {"alice@example.test": 2}


def test_failed_and_throttled_auth_by_client(rep):
    assert rep["auth_failed_by_client"] == {"10.120.72.1": 9}
    assert rep["auth_throttled_by_client"] == {"10.120.72.1": 21}


def test_top_rejected_clients(rep):
    assert rep["top_rejected_clients"][0] == {"client": "10.120.72.1", "count": 5}


def test_anomalies_flag_brute_force_and_outbound_limit(rep):
    kinds = {a["kind"] for a in rep["anomalies"]}
    assert kinds == {"auth brute force", "outbound spike"}


def test_since_excludes_older_lines():
    later = NOW + datetime.timedelta(days=30)
    rep = mailreport.build(LOG, mailreport.parse_since("1h"), now=later, queue_size=0)
    assert rep["counts"]["received"] == 0 and rep["anomalies"] == []


def test_deferred_spike_and_queue_growth_are_flagged():
    events = [maillog.Event(NOW, "deferred", key=f"q{i}:r") for i in range(6)]
    rep = mailreport.summarize(events, NOW - datetime.timedelta(hours=1), NOW, queue_size=80)
    assert {a["kind"] for a in rep["anomalies"]} == {"deferred spike", "queue growth"}


def test_retried_delivery_counts_once():
    line = ("Nov 24 23:21:38 mail postfix/smtp[5094]: EE1681143C9: to=<later@elsewhere.test>, "
            "relay=none, delay=0.14, delays=0.1/0.03/0/0, dsn=4.4.1, status=deferred (refused)")
    events = [maillog.parse_line(line, NOW)] * 3
    rep = mailreport.summarize(events, NOW - datetime.timedelta(days=1), NOW, queue_size=0)
    assert rep["counts"]["deferred"] == 1


def test_year_is_inferred_for_syslog_stamps():
    assert maillog.parse_time("Dec 31 23:59:59", datetime.datetime(2027, 1, 1)).year == 2026


@pytest.mark.parametrize("text", ["24", "1y", ""])
def test_bad_since_is_refused(text):
    with pytest.raises(ValueError):
        mailreport.parse_since(text)


def test_html_is_self_contained_with_svg_chart(rep, tmp_path):
    out = tmp_path / "r.html"
    report_html.write(str(out), rep)
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and html.count("<rect") >= 3
    assert "src=" not in html and "<link" not in html and "<script" not in html


def test_text_report_lists_anomalies(rep):
    assert "ANOMALY auth brute force" in mailreport.text(rep)


def test_report_names_a_dnsbl_that_refuses_our_resolver_and_counts_no_reject():
    from agent import checks, checks_dns
    site = checks.dnsbl_site({"zone": "zen.spamhaus.org"})
    lookup = lambda name, rtype: ["127.255.255.254"] if rtype == "A" else []  # noqa: E731
    found = checks_dns.dnsbl(lookup, "192.0.2.10", site)
    plain = mailreport.build(LOG, mailreport.parse_since("7d"), now=NOW, queue_size=1)
    rep = mailreport.build(LOG, mailreport.parse_since("7d"), now=NOW, queue_size=1,
                           dnsbl_checks=[found])
    (anomaly,) = [a for a in rep["anomalies"] if a["kind"] == "DNSBL refuses our resolver"]
    assert "zen.spamhaus.org" in anomaly["detail"] and "127.255.255.254" in anomaly["detail"]
    assert "ANOMALY DNSBL refuses our resolver: zen.spamhaus.org" in mailreport.text(rep)
    assert rep["counts"] == plain["counts"] and rep["rejected_by_reason"] == plain["rejected_by_reason"]


# Lines of a real Postfix 3.7.11 container under the raw-SMTP attacks (tests/integration/attacks.py).
@pytest.mark.parametrize("line, client, reason", [
    ("Dec 02 16:52:48 mail postfix/smtpd[5282]: D1A1E984299: reject: END-OF-MESSAGE from "
     "unknown[10.43.133.220]: bare <LF> received; from=<someone@elsewhere.test> "
     "to=<alice@example.test> proto=ESMTP helo=<client.elsewhere.test>",
     "10.43.133.220", "bare newline (SMTP smuggling)"),
    ("Dec 02 16:52:51 mail postfix/smtpd[5282]: improper command pipelining after MAIL from "
     "unknown[10.43.133.220]: RCPT TO:<alice@example.test>\\r\\n", "10.43.133.220", "pipelining"),
    ("Dec 02 16:53:01 mail postfix/postscreen[5280]: COMMAND PIPELINING from [10.43.133.221]:49879 "
     "after EHLO: MAIL FROM:<someone@elsewhere.test>\\r\\nRCPT TO:<alice@example.test>\\r\\n",
     "10.43.133.221", "pipelining"),
    ("Dec 02 16:52:54 mail postfix/postscreen[5280]: NON-SMTP COMMAND from [10.43.133.222]:59257 "
     "after CONNECT: GET / HTTP/1.0", "10.43.133.222", "non-SMTP command"),
    ("Dec 02 16:52:51 mail postfix/postscreen[5280]: BARE NEWLINE from [10.43.133.224]:42423 after "
     "EHLO client.elsewhere.test", "10.43.133.224", "bare newline"),
])
def test_protocol_attacks_are_counted_as_rejects_with_their_reason(line, client, reason):
    ev = maillog.parse_line(line, NOW)
    assert (ev.kind, ev.client, ev.reason) == ("reject", client, reason)
