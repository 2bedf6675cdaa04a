"""The local BIND server and the RFC 2136 record code against it, for real.

named listens on 127.0.0.1 (it only binds addresses found on interfaces) on a free high port.
"""

import base64
import socket
import subprocess
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
from localcloud import rfc2136
from localcloud.rfc2136 import DnsRecordError, Tsig
from localcloud import dns as localdns

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


def start_server(request, state: Path) -> Server:
    request.addfinalizer(lambda: localdns.stop(state))  # registered first: runs even if start fails
    port = free_port(IP)
    zones = localdns.local_zones(DOMAIN, V4_NET, V6_NET, sink_ip="127.0.0.1")
    pid = localdns.start(state, IP, port, zones, tsig_name="bpm-test")
    return Server(state, port, localdns.read_tsig(state), pid)


@pytest.fixture(scope="module")
def server(request, tmp_path_factory):
    return start_server(request, tmp_path_factory.mktemp("named"))


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
    assert (tmp_path / "tsig.key").stat().st_mode & 0o777 == 0o600


def test_stop_leaves_no_process(request, tmp_path):
    started = start_server(request, tmp_path)
    assert localdns.status(tmp_path).running

    assert localdns.stop(tmp_path)
    assert not localdns.status(tmp_path).running
    assert not Path(f"/proc/{started.pid}").exists()
    assert not localdns.stop(tmp_path)  # idempotent: nothing left to stop
