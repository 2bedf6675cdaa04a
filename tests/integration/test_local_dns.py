"""The local BIND server and the RFC 2136 record code against it, for real.

named listens on 127.0.0.1 (it only binds addresses found on interfaces) on a free high port.
"""

import base64
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

import dkim
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from components.dns_record import DnsRecordProvider
from localcloud import dns_config, process, rfc2136
from localcloud.rfc2136 import DnsRecordError, Tsig
from localcloud import dns as localdns
from localcloud.dns import DnsServerError, Grant, KeySpec, ZoneSpec

pytestmark = pytest.mark.integration

IP = "127.0.0.1"
DOMAIN = "example-mail.test"
V4_NET, V6_NET = "10.77.5.0/24", "fd12:3456:789a:1::/64"
V4_ZONE, V6_ZONE = localdns.reverse_zone_v4(V4_NET), localdns.reverse_zone_v6(V6_NET)


class Server(NamedTuple):
    state: Path
    port: int
    tsig: Tsig
    pid: int


def free_port(ip: str) -> int:
    """A port free for both UDP and TCP (DNS needs both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((ip, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((ip, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


ZONES = localdns.local_zones(DOMAIN, V4_NET, V6_NET, sink_ip="127.0.0.1")


def start_server(request, state: Path) -> Server:
    request.addfinalizer(lambda: localdns.stop(state))  # registered first: runs even if start fails
    port = free_port(IP)
    zones = ZONES
    pid = localdns.start(state, IP, port, zones, tsig_name="bpm-test")
    return Server(state, port, localdns.read_tsig(state), pid)


def _state_dir(request) -> Path:
    # named runs as NAMED_USER, who may not enter pytest's tmp dirs (0700): one in /tmp itself.
    state = Path(tempfile.mkdtemp(prefix="bpm-named-"))
    request.addfinalizer(lambda: shutil.rmtree(state, ignore_errors=True))
    return state


@pytest.fixture
def tmp_path(request):
    """Here: a state dir named can use (see _state_dir)."""
    return _state_dir(request)


@pytest.fixture(scope="module")
def server(request):
    return start_server(request, _state_dir(request))


def query(server: Server, name: str, rtype: str) -> dns.message.Message:
    q = dns.message.make_query(name, rtype)
    return dns.query.tcp(q, IP, port=server.port, timeout=5)


V6_HOST = "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0"  # ::10 inside the /64, as nibbles

RECORDS = [
    pytest.param(DOMAIN, "mail", "A", ["10.77.5.10"], ["10.77.5.11", "10.77.5.12"], id="A"),
    pytest.param(DOMAIN, "mail", "AAAA", ["fd12:3456:789a:1::10"], ["fd12:3456:789a:1::11"], id="AAAA"),
    pytest.param(DOMAIN, "@", "MX", ["10 mail.example-mail.test"], ["20 mx2.example-mail.test."], id="MX"),
    pytest.param(DOMAIN, "www", "CNAME", ["mail.example-mail.test"], ["mx2.example-mail.test"], id="CNAME"),
    pytest.param(DOMAIN, "@", "TXT", ["v=spf1 mx -all"], ["v=spf1 ip4:10.77.5.10 -all"], id="TXT"),
    pytest.param(DOMAIN, "_dmarc", "TXT", ["v=DMARC1; p=reject"], ["v=DMARC1; p=quarantine; pct=50"],
                 id="TXT-quotes-and-semicolons"),
    pytest.param(V4_ZONE, "10", "PTR", ["mail.example-mail.test"], ["mx2.example-mail.test"], id="PTR-v4"),
    pytest.param(V6_ZONE, V6_HOST, "PTR", ["mail.example-mail.test"], ["mx2.example-mail.test"], id="PTR-v6"),
]


@pytest.mark.parametrize("zone, name, rtype, first, second", RECORDS)
def test_record_is_created_updated_and_deleted(server, zone, name, rtype, first, second):
    args = (IP, server.port, server.tsig, zone, name, rtype)
    rfc2136.upsert(*args, first, 60)
    assert rfc2136.read(IP, server.port, zone, name, rtype) == (rfc2136.normalise(rtype, first), 60)

    rfc2136.upsert(*args, second, 120)  # replaces the whole RRset, not adds to it
    assert rfc2136.read(IP, server.port, zone, name, rtype) == (rfc2136.normalise(rtype, second), 120)

    rfc2136.delete(*args)
    assert rfc2136.read(IP, server.port, zone, name, rtype) is None


def test_deleting_a_missing_record_is_not_an_error(server):
    rfc2136.delete(IP, server.port, server.tsig, DOMAIN, "never-existed", "A")


@pytest.fixture(scope="module")
def dkim_key():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    return private, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


def test_dkim_key_is_served_as_255_byte_strings_and_reads_back_whole(server, dkim_key):
    _, txt = dkim_key
    rfc2136.upsert(IP, server.port, server.tsig, DOMAIN, "s1._domainkey", "TXT", [txt], 60)

    assert rfc2136.read(IP, server.port, DOMAIN, "s1._domainkey", "TXT") == ([txt], 60)
    (rdata,) = query(server, f"s1._domainkey.{DOMAIN}", "TXT").answer[0]
    assert len(rdata.strings) == 2 and all(len(s) <= 255 for s in rdata.strings)


def test_dkim_signature_verifies_against_the_served_key(server, dkim_key):
    private, txt = dkim_key
    rfc2136.upsert(IP, server.port, server.tsig, DOMAIN, "s2._domainkey", "TXT", [txt], 60)
    message = b"From: a@example-mail.test\r\nTo: b@elsewhere.test\r\nSubject: hi\r\n\r\nhello\r\n"
    signed = dkim.sign(message, b"s2", DOMAIN.encode(), private, include_headers=[b"from", b"to", b"subject"])

    def from_our_server(name, timeout=5):  # dkimpy asks this instead of a resolver
        found = rfc2136.read(IP, server.port, DOMAIN, name.decode().rstrip("."), "TXT")
        return found[0][0].encode() if found else None

    assert dkim.verify(signed + message, dnsfunc=from_our_server)


@pytest.mark.parametrize("tsig, refusal", [
    (None, "REFUSED"),
    (Tsig("no-such-key", "hmac-sha256", "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="), "NOTAUTH"),
    ("wrong-secret", "NOTAUTH"),
], ids=["unsigned", "unknown-key", "wrong-secret"])
def test_update_without_the_stack_key_is_refused(server, tsig, refusal):
    if tsig == "wrong-secret":
        tsig = server.tsig._replace(secret="c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=")
    with pytest.raises(DnsRecordError, match=refusal):
        rfc2136.upsert(IP, server.port, tsig, DOMAIN, "intruder", "A", ["10.77.5.66"], 60)
    assert rfc2136.read(IP, server.port, DOMAIN, "intruder", "A") is None


def nsupdate(server: Server, script: str) -> None:
    key = f"{server.tsig.algorithm}:{server.tsig.name}:{server.tsig.secret}"
    commands = f"server {IP} {server.port}\nzone {DOMAIN}\n{script}\nsend\n"
    subprocess.run(["nsupdate", "-y", key], input=commands, text=True, check=True, timeout=20)


def test_record_changed_by_hand_is_seen_by_read(server):
    rfc2136.upsert(IP, server.port, server.tsig, DOMAIN, "drift", "A", ["10.77.5.20"], 60)
    nsupdate(server, f"update delete drift.{DOMAIN} A\nupdate add drift.{DOMAIN} 300 A 10.77.5.99")
    assert rfc2136.read(IP, server.port, DOMAIN, "drift", "A") == (["10.77.5.99"], 300)


@pytest.fixture
def provider_props(server):
    return {"server": IP, "port": server.port, "zone": DOMAIN, "name": "prov", "type": "A",
            "values": ["10.77.5.30"], "ttl": 60, "tsig_name": server.tsig.name,
            "tsig_algorithm": server.tsig.algorithm, "tsig_secret": server.tsig.secret}


def test_provider_read_reports_drift_and_a_vanished_record(server, provider_props):
    provider = DnsRecordProvider()
    created = provider.create(provider_props)
    assert created.id == f"prov.{DOMAIN}./A" and created.outs["values"] == ["10.77.5.30"]

    nsupdate(server, f"update delete prov.{DOMAIN} A\nupdate add prov.{DOMAIN} 60 A 10.77.5.31")
    drifted = provider.read(created.id, created.outs)
    assert drifted.id == created.id and drifted.outs["values"] == ["10.77.5.31"]
    assert provider.diff(created.id, drifted.outs, provider_props).changes  # `up` would restore it

    provider.update(created.id, drifted.outs, provider_props)
    assert rfc2136.read(IP, server.port, DOMAIN, "prov", "A") == (["10.77.5.30"], 60)

    provider.delete(created.id, created.outs)
    assert provider.read(created.id, created.outs).id == ""  # refresh drops it from the state


def test_provider_read_forgets_a_record_whose_server_is_gone(provider_props, monkeypatch):
    monkeypatch.setattr(rfc2136, "TIMEOUT", 0.5)
    gone = {**provider_props, "port": free_port(IP)}  # nothing listens there
    assert DnsRecordProvider().read(f"prov.{DOMAIN}./A", gone).id == ""


def test_dnsbl_listing_is_visible_to_dig_and_unlisting_removes_it(server):
    def dig(rtype):
        out = subprocess.run(["dig", f"@{IP}", "-p", str(server.port), "+short", "+norecurse", "+tcp",
                              "4.3.2.1.dnsbl.test", rtype], capture_output=True, text=True, timeout=20)
        return out.stdout.strip()

    localdns.dnsbl_list(IP, server.port, server.tsig, "1.2.3.4", reason="test listing")
    assert (dig("A"), dig("TXT")) == ("127.0.0.2", '"test listing"')

    localdns.dnsbl_unlist(IP, server.port, server.tsig, "1.2.3.4")
    assert (dig("A"), dig("TXT")) == ("", "")


def test_server_is_authoritative_only(server):
    printed = subprocess.run(["named-checkconf", "-p", str(server.state / "named.conf")],
                             capture_output=True, text=True, check=True).stdout
    config = " ".join(printed.split())  # named's effective config, whitespace collapsed
    for setting in ("recursion no;", "forwarders { };", 'allow-transfer { "none"; };', "notify no;"):
        assert setting in config


def test_unknown_zone_is_refused_not_resolved(server):
    # Safe to ask: with recursion off named answers from its own zones or refuses.
    assert query(server, "mail.not-ours.test", "A").rcode() == dns.rcode.REFUSED


def test_tsig_key_is_private_and_kept_across_restarts(request, tmp_path):
    first = start_server(request, tmp_path)
    localdns.stop(tmp_path)
    second = start_server(request, tmp_path)
    assert second.tsig == first.tsig
    key = (tmp_path / "tsig.key").stat()
    # Root's, readable by named's group only (named rereads it on a reload, unprivileged).
    assert (key.st_mode & 0o777, key.st_uid, key.st_gid) == (0o640, 0, dns_config.named_gid())


def _ids(pid: int) -> tuple[list[str], list[str]]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return status["Uid"].split(), status["Gid"].split()


def test_named_runs_as_its_own_user_not_root(server):
    uid, gid = pwd.getpwnam(localdns.NAMED_USER).pw_uid, dns_config.named_gid()
    assert _ids(server.pid) == ([str(uid)] * 4, [str(gid)] * 4)  # real, effective, saved, fs


def test_unprivileged_named_journals_an_update(server):
    rfc2136.upsert(IP, server.port, server.tsig, DOMAIN, "journaled", "A", ["10.77.5.77"], 60)
    assert rfc2136.read(IP, server.port, DOMAIN, "journaled", "A") == (["10.77.5.77"], 60)
    journal = Path(f"{dns_config.zone_path(server.state, DOMAIN)}.jnl").stat()
    assert journal.st_uid == pwd.getpwnam(localdns.NAMED_USER).pw_uid


def test_stop_leaves_no_process(request, tmp_path):
    started = start_server(request, tmp_path)
    assert localdns.status(tmp_path).running

    assert localdns.stop(tmp_path)
    assert not localdns.status(tmp_path).running
    assert not Path(f"/proc/{started.pid}").exists()
    assert not localdns.stop(tmp_path)  # idempotent: nothing left to stop


# Reconfiguring a running server: each test gets its own, since it changes what is served.

def serves(server: Server, zone: str) -> bool:
    answer = query(server, zone, "SOA")
    return answer.rcode() == dns.rcode.NOERROR and bool(answer.answer)


def same_process(server: Server, started_at: int) -> bool:
    return localdns.status(server.state).pid == server.pid and process.start_time(server.pid) == started_at


def test_adding_a_zone_keeps_every_updated_record_and_the_process(request, tmp_path, dkim_key):
    srv = start_server(request, tmp_path)
    started_at = process.start_time(srv.pid)
    added = [(DOMAIN, "mail", "A", ["10.77.5.10"]), (DOMAIN, "s1._domainkey", "TXT", [dkim_key[1]]),
             (V4_ZONE, "10", "PTR", ["mail.example-mail.test."])]
    for zone, name, rtype, values in added:
        rfc2136.upsert(IP, srv.port, srv.tsig, zone, name, rtype, values, 60)
    zone_file = dns_config.zone_path(tmp_path, DOMAIN)
    before = zone_file.read_bytes()

    localdns.reconfigure(tmp_path, [*ZONES, ZoneSpec("added.test", (("www", "A", "10.77.5.40"),))])

    assert same_process(srv, started_at)  # reloaded, not restarted
    for zone, name, rtype, values in added:
        assert rfc2136.read(IP, srv.port, zone, name, rtype) == (rfc2136.normalise(rtype, values), 60)
    assert zone_file.read_bytes() == before and Path(f"{zone_file}.jnl").exists()
    assert rfc2136.read(IP, srv.port, "added.test", "www", "A") == (["10.77.5.40"], 60)
    rfc2136.upsert(IP, srv.port, srv.tsig, "added.test", "mx", "A", ["10.77.5.41"], 60)  # stack key
    assert "added.test" in localdns.status(tmp_path).zones


ACME_NAME = f"_acme-challenge.mail.{DOMAIN}."
ACME = KeySpec("acme-mail", (Grant(DOMAIN, ACME_NAME, ("TXT",)),))


def test_extra_key_may_write_exactly_its_one_txt_name(request, tmp_path):
    srv = start_server(request, tmp_path)
    started_at = process.start_time(srv.pid)
    localdns.reconfigure(tmp_path, ZONES, [ACME])
    acme = localdns.read_tsig(tmp_path, "acme-mail")
    assert acme.name == "acme-mail" and acme.secret != srv.tsig.secret
    assert (tmp_path / "keys" / "acme-mail.key").stat().st_mode & 0o777 == 0o640  # root:bind

    rfc2136.upsert(IP, srv.port, acme, DOMAIN, ACME_NAME, "TXT", ["token-1"], 60)
    assert rfc2136.read(IP, srv.port, DOMAIN, ACME_NAME, "TXT") == (["token-1"], 60)
    for zone, name, rtype, value in [(DOMAIN, f"_acme-challenge.www.{DOMAIN}.", "TXT", "x"),
                                     (DOMAIN, "@", "TXT", "v=spf1 +all"), (DOMAIN, ACME_NAME, "A", "10.77.5.66"),
                                     (DOMAIN, f"x.{ACME_NAME}", "TXT", "x"), (V4_ZONE, "66", "PTR", "evil.test.")]:
        with pytest.raises(DnsRecordError, match="REFUSED"):
            rfc2136.upsert(IP, srv.port, acme, zone, name, rtype, [value], 60)
        assert rfc2136.read(IP, srv.port, zone, name, rtype) is None
    rfc2136.delete(IP, srv.port, acme, DOMAIN, ACME_NAME, "TXT")  # an ACME client cleans up
    assert rfc2136.read(IP, srv.port, DOMAIN, ACME_NAME, "TXT") is None

    rfc2136.upsert(IP, srv.port, srv.tsig, DOMAIN, "mail", "A", ["10.77.5.10"], 60)  # stack key: all
    assert localdns.status(tmp_path).keys == (ACME,) and same_process(srv, started_at)

    localdns.reconfigure(tmp_path, ZONES)  # the key is dropped: named no longer knows it
    with pytest.raises(DnsRecordError, match="NOTAUTH"):
        rfc2136.upsert(IP, srv.port, acme, DOMAIN, ACME_NAME, "TXT", ["token-2"], 60)
    localdns.reconfigure(tmp_path, ZONES, [ACME])  # generated once: back with the same secret
    assert localdns.read_tsig(tmp_path, "acme-mail") == acme


@pytest.mark.parametrize("zones, keys, message", [
    ([*ZONES, ZoneSpec("bad..name")], [], "not a valid name"),
    (ZONES, [KeySpec("acme-mail", (Grant(DOMAIN, ACME_NAME, ("NOTATYPE",)),))], "not a valid type"),
    ([*ZONES, ZoneSpec("broken.test", (("www", "A", "not-an-address"),))], [], "bad dotted quad"),
], ids=["invalid-zone-name", "invalid-record-type", "invalid-zone-record"])
def test_bad_reconfigure_leaves_the_server_as_it_was(request, tmp_path, zones, keys, message):
    srv = start_server(request, tmp_path)
    rfc2136.upsert(IP, srv.port, srv.tsig, DOMAIN, "mail", "A", ["10.77.5.10"], 60)
    conf, served = (tmp_path / "named.conf").read_text(), localdns.status(tmp_path)

    with pytest.raises(DnsServerError, match=message):  # named's tools' own words
        localdns.reconfigure(tmp_path, zones, keys)

    assert (tmp_path / "named.conf").read_text() == conf and localdns.status(tmp_path) == served
    assert sorted(p.name for p in (tmp_path / "zones").iterdir() if not p.name.endswith(".jnl")) == \
        sorted(f"{z.origin}.zone" for z in ZONES)
    assert all(serves(srv, z.origin) for z in ZONES)
    assert rfc2136.read(IP, srv.port, DOMAIN, "mail", "A") == (["10.77.5.10"], 60)


def test_config_named_itself_rejects_is_rolled_back(request, tmp_path, monkeypatch):
    srv = start_server(request, tmp_path)
    conf = (tmp_path / "named.conf").read_text()
    monkeypatch.setattr(dns_config, "_check", lambda *_: None)  # as if the checks had missed it

    with pytest.raises(DnsServerError, match="rejected the new config.*not a valid name"):
        localdns.reconfigure(tmp_path, [*ZONES, ZoneSpec("bad..name")])

    assert (tmp_path / "named.conf").read_text() == conf
    assert not dns_config.zone_path(tmp_path, "bad..name").exists()
    assert localdns.status(tmp_path).pid == srv.pid and all(serves(srv, z.origin) for z in ZONES)


def test_removed_zone_is_no_longer_served_and_comes_back_with_its_records(request, tmp_path):
    srv = start_server(request, tmp_path)
    localdns.dnsbl_list(IP, srv.port, srv.tsig, "1.2.3.4")
    kept = [z for z in ZONES if z.origin != "dnsbl.test"]

    localdns.reconfigure(tmp_path, kept)
    assert query(srv, "dnsbl.test", "SOA").rcode() == dns.rcode.REFUSED
    assert all(serves(srv, z.origin) for z in kept) and "dnsbl.test" not in localdns.status(tmp_path).zones
    assert dns_config.zone_path(tmp_path, "dnsbl.test").exists()  # its file stays

    localdns.reconfigure(tmp_path, ZONES)  # file and journal were kept, so the listing is back
    assert rfc2136.read(IP, srv.port, "dnsbl.test", "4.3.2.1", "A") == (["127.0.0.2"], 60)


def test_reconfigure_needs_a_running_server(tmp_path):
    with pytest.raises(DnsServerError, match="does not run"):
        localdns.reconfigure(tmp_path, ZONES)


def test_ensure_starts_then_reconfigures_in_place(request, tmp_path):
    request.addfinalizer(lambda: localdns.stop(tmp_path))
    port = free_port(IP)
    pid = localdns.ensure(tmp_path, IP, port, ZONES, "bpm-test")
    assert localdns.ensure(tmp_path, IP, port, ZONES, "bpm-test") == pid  # nothing to change
    assert localdns.ensure(tmp_path, IP, port, ZONES, "bpm-test", keys=[ACME]) == pid
    assert localdns.status(tmp_path).keys == (ACME,)
    with pytest.raises(DnsServerError, match="stop it to change"):
        localdns.ensure(tmp_path, IP, free_port(IP), ZONES, "bpm-test")
