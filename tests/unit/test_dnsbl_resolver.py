"""The resolver DNSBL operators answer, and the reply filter every DNSBL site carries: the
rendered unbound and postscreen config, checked with unbound-checkconf and postconf. Nothing
here resolves anything (no test may recurse to the internet)."""
import copy
import os
import stat

import pytest

from agent import contract, render, validate
from tests.unit.test_agent_render import _data, postconf, staged, staged_queue  # noqa: F401 (autouse)

DQS_KEY = "abcdefghijklmnopqrstuvwxyz"   # 26 characters, like a real DQS key
UNBOUND_CONF = "/etc/unbound/unbound.conf.d/bulletproof.conf"


def _unbound(stage) -> str:
    with open(stage + UNBOUND_CONF) as f:
        return f.read()


def _recursing():
    data = copy.deepcopy(_data())
    data["resolver"]["forwarders"] = []
    return data


def _dqs():
    data = copy.deepcopy(_data())
    data["postscreen"]["dnsbl_sites"] = [{"zone": "zen.spamhaus.org", "weight": 3, "dqs": True},
                                         {"zone": "bl.spamcop.net", "weight": 1}]
    data["postscreen"]["dqs_key"] = DQS_KEY
    return data


def test_without_forwarders_unbound_recurses_from_the_root_hints(tmp_path):
    _, stage = staged(tmp_path, _recursing())
    text = _unbound(stage)
    assert "forward-zone" not in text
    assert 'root-hints: "/usr/share/dns/root.hints"' in text
    assert validate.validate(stage, only={"unbound"}) == []


def test_forwarders_stay_possible_by_config(tmp_path):
    _, stage = staged(tmp_path)
    text = _unbound(stage)
    assert 'forward-zone:\n    name: "."\n    forward-addr: 10.77.0.1@53' in text
    assert "root-hints" not in text


@pytest.mark.parametrize("zone, expected", [
    ("zen.spamhaus.org", "zen.spamhaus.org=127.0.0.[2..11]*3"),
    ("bl.spamcop.net", "bl.spamcop.net=127.0.0.2*3"),
    ("bl.unknown.example", "bl.unknown.example=127.0.0.[2..254]*3"),
])
def test_every_postscreen_dnsbl_site_carries_a_reply_filter(tmp_path, zone, expected):
    data = copy.deepcopy(_data())
    data["postscreen"]["dnsbl_sites"] = [{"zone": zone, "weight": 3}]
    _, stage = staged(tmp_path, data)
    assert postconf(stage, "postscreen_dnsbl_sites") == expected


def test_a_configured_filter_wins_over_the_known_one(tmp_path):
    data = copy.deepcopy(_data())
    data["postscreen"]["dnsbl_sites"] = [{"zone": "zen.spamhaus.org", "weight": 3,
                                          "filter": "127.0.0.[2..3]"}]
    _, stage = staged(tmp_path, data)
    assert postconf(stage, "postscreen_dnsbl_sites") == "zen.spamhaus.org=127.0.0.[2..3]*3"


def test_dqs_site_is_asked_by_its_alias_and_rejects_name_the_public_list(tmp_path):
    _, stage = staged(tmp_path, _dqs())
    assert postconf(stage, "postscreen_dnsbl_sites") == (
        "zen.spamhaus.org.dqs.internal=127.0.0.[2..11]*3, bl.spamcop.net=127.0.0.2*1")
    reply_map = postconf(stage, "postscreen_dnsbl_reply_map")
    assert reply_map == f"texthash:{stage}/etc/postfix/dnsbl_reply_map"
    with open(f"{stage}/etc/postfix/dnsbl_reply_map") as f:
        lines = [line.split() for line in f if not line.startswith("#")]
    assert lines == [["zen.spamhaus.org.dqs.internal", "zen.spamhaus.org"]]
    assert validate.validate(stage, only={"postfix", "unbound"}) == []


def test_dqs_alias_zone_redirects_to_the_keyed_zone(tmp_path):
    _, stage = staged(tmp_path, _dqs())
    with open(f"{stage}/etc/unbound/bulletproof-dqs.zone") as f:
        zone = f.read()
    assert f"zen.spamhaus.org IN DNAME {DQS_KEY}.zen.dq.spamhaus.net." in zone
    assert 'auth-zone:\n    name: "dqs.internal"' in _unbound(stage)


def test_dqs_key_is_only_in_the_unbound_zone_file_which_is_not_world_readable(tmp_path):
    spec, stage = staged(tmp_path, _dqs())
    holders = []
    for t in render.targets(spec):
        with open(stage + t.path, "rb") as f:
            if DQS_KEY.encode() in f.read():
                holders.append(t)
    assert [t.path for t in holders] == ["/etc/unbound/bulletproof-dqs.zone"]
    (t,) = holders
    assert (t.mode & stat.S_IROTH, t.owner, t.group) == (0, "root", "unbound")
    assert not os.stat(stage + t.path).st_mode & stat.S_IROTH


@pytest.mark.parametrize("answers, verdict", [
    (["127.0.0.2"], "listed"),
    (["127.255.255.254"], "refused"),     # Spamhaus: query via a public resolver
    (["127.255.255.255"], "refused"),     # Spamhaus: too many queries
    (["127.0.0.1"], "refused"),           # RFC 5782: never a listing
    ([], "clean"),
])
def test_an_error_answer_is_a_refusal_never_a_listing(answers, verdict):
    assert contract.classify_dnsbl(answers, contract.dnsbl_filter("zen.spamhaus.org"))[0] == verdict


def test_local_test_dnsbl_answers_blocked_for_one_address_and_lists_the_rfc5782_test_point(tmp_path):
    import subprocess
    from localcloud import dns_config
    zone = next(z for z in dns_config.local_zones("example.test", "10.77.5.0/24", "fd00:5::/64",
                                                  "10.77.5.1") if z.origin == "dnsbl.test")
    assert ("250.5.77.10", "A", "127.255.255.254") in zone.records
    assert ("2.0.0.127", "A", "127.0.0.2") in zone.records
    path = tmp_path / "dnsbl.test.zone"
    path.write_text(dns_config.zone_file(zone, "ns.example.test", "10.77.5.1"))
    check = subprocess.run(["named-checkzone", "dnsbl.test", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
