"""The reputation preflight counts only a list's listing codes: an error answer ("blocked":
the DNSBL refuses the resolver) is reported, never a reason to stop the deploy. A DQS key is
used in the query name and never appears in a message."""
import pytest

from components import reputation
from components.reputation import _ReputationProvider

IP = "192.0.2.10"
DQS_KEY = "abcdefghijklmnopqrstuvwxyz"


def _answers(table):
    """A stand-in resolver: {query name: A answers} (the name must match exactly)."""
    def ask(name, rtype, resolver, port):
        if rtype == "TXT":
            return ["spam seen"] if name in table else []
        return table.get(name, [])
    return ask


def _props(**changes):
    return {"ip": IP, "zones": ["zen.spamhaus.org"], "resolver": "192.0.2.53:53",
            "allow_listed_ip": False, "filters": {}, "dqs_key": None, **changes}


@pytest.mark.parametrize("code", ["127.255.255.254", "127.255.255.255", "127.255.255.252"])
def test_blocked_answer_does_not_stop_the_deploy_and_is_reported(monkeypatch, code):
    monkeypatch.setattr(reputation, "_ask", _answers({"10.2.0.192.zen.spamhaus.org.": [code]}))
    outs = _ReputationProvider()._check(_props())
    assert outs["listed"] == []
    (line,) = outs["refused"]
    assert line.startswith("DNSBL refuses our resolver: zen.spamhaus.org") and code in line


def test_listing_code_stops_the_deploy(monkeypatch):
    monkeypatch.setattr(reputation, "_ask", _answers({"10.2.0.192.zen.spamhaus.org.": ["127.0.0.4"]}))
    with pytest.raises(reputation.ListedIpError, match="listed on 1 DNSBL"):
        _ReputationProvider()._check(_props())


def test_configured_filter_decides_what_a_listing_is(monkeypatch):
    monkeypatch.setattr(reputation, "_ask", _answers({"10.2.0.192.bl.unknown.example.": ["127.0.0.4"]}))
    outs = _ReputationProvider()._check(_props(zones=["bl.unknown.example"],
                                               filters={"bl.unknown.example": "127.0.0.2"}))
    assert outs["listed"] == [] and outs["refused"]


def test_dqs_key_is_asked_but_never_shown(monkeypatch):
    keyed = f"10.2.0.192.{DQS_KEY}.zen.dq.spamhaus.net."
    monkeypatch.setattr(reputation, "_ask", _answers({keyed: ["127.0.0.2"]}))
    with pytest.raises(reputation.ListedIpError) as err:
        _ReputationProvider()._check(_props(dqs_key=DQS_KEY))
    assert "zen.spamhaus.org: spam seen" in str(err.value) and DQS_KEY not in str(err.value)


def test_failed_lookup_names_the_public_zone_not_the_key(monkeypatch):
    def fail(name, rtype, resolver, port):
        raise reputation.ListedIpError(f"DNSBL lookup {name} {rtype} failed: SERVFAIL")
    monkeypatch.setattr(reputation, "_ask", fail)
    with pytest.raises(reputation.ListedIpError) as err:
        _ReputationProvider()._check(_props(dqs_key=DQS_KEY))
    assert DQS_KEY not in str(err.value) and "zen.spamhaus.org" in str(err.value)
