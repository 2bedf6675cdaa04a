"""`make check`, `make verify` and `make outputs` on a stack whose records are in Cloudflare: the
operator commands run outside the Pulumi program, so they read the records through Cloudflare's
API, here a fake of it on loopback (HTTP), and names outside the zone through the resolver
(a fake one on loopback answering the PTR)."""
from __future__ import annotations

import http.server
import json
import socket
import threading
import urllib.parse

import dns.message
import dns.rrset
import pytest

from components.dns import cloudflare
from ops import check, outputs as ops_outputs, stack as deployed_stack, verify

ZONE_ID, TOKEN = "0123456789abcdef0123456789abcdef", "test-token"
DOMAIN, FQDN, IP = "example.no", "mail.example.no", "192.0.2.10"
DKIM_P = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + "B" * 348


def _records(dmarc: str = "v=DMARC1; p=reject") -> list[dict]:
    return [
        {"type": "A", "name": FQDN, "content": IP},
        {"type": "MX", "name": DOMAIN, "content": FQDN, "priority": 10},
        {"type": "TXT", "name": DOMAIN, "content": cloudflare.txt_content("v=spf1 mx -all")},
        {"type": "TXT", "name": f"s1._domainkey.{DOMAIN}",
         "content": cloudflare.txt_content(f"v=DKIM1; k=rsa; p={DKIM_P}")},
        {"type": "TXT", "name": f"_dmarc.{DOMAIN}", "content": cloudflare.txt_content(dmarc)},
    ]


class _Api(http.server.BaseHTTPRequestHandler):
    records: list[dict] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        url = urllib.parse.urlparse(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        ok = (self.headers.get("Authorization") == f"Bearer {TOKEN}"
              and url.path == f"/client/v4/zones/{ZONE_ID}/dns_records")
        body = ({"success": True, "errors": [], "result": [
            r for r in self.records if r["name"] == q.get("name") and r["type"] == q.get("type")]}
                if ok else {"success": False, "errors": [{"code": 10000, "message": "Authentication error"}]})
        data = json.dumps(body).encode()
        self.send_response(200 if ok else 403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def api(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    _Api.records = _records()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(cloudflare.API_ENV, f"http://127.0.0.1:{server.server_port}/client/v4")
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TOKEN)
    yield _Api
    server.shutdown()
    server.server_close()


@pytest.fixture
def resolver():
    """A resolver on loopback that knows one PTR: IP -> FQDN."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except OSError:
                continue
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            name = query.question[0].name.to_text()
            if name == "10.2.0.192.in-addr.arpa.":
                reply.answer.append(dns.rrset.from_text(name, 60, "IN", "PTR", f"{FQDN}."))
            else:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            sock.sendto(reply.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    sock.close()


def _outputs(resolver: str) -> dict:
    return {"backend": "openstack", "domain": DOMAIN, "fqdn": FQDN, "host_ipv4": IP, "host_ipv6": None,
            "ssh_target": f"debian@{IP}", "ssh_private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nk\n",
            "dns_backend": "cloudflare", "dns_server": f"cloudflare:{ZONE_ID}", "dns_zone": DOMAIN,
            "resolver": resolver, "dkim_selector": "s1", "dkim_txt": f"v=DKIM1; k=rsa; p={DKIM_P}",
            "mail_users": [f"alice@{DOMAIN}"]}


def test_make_check_reads_the_published_records_through_cloudflares_api(api, resolver):
    found = {c.name: c for c in check.dns_checks(deployed_stack.Deployed("prod-oslo", _outputs(resolver)))}
    assert {n: c.level for n, c in found.items()} == {
        "outside:fcrdns": "pass", "outside:mx": "pass", "outside:spf": "pass", "outside:dkim": "pass",
        "outside:dmarc": "pass"}, [c.as_dict() for c in found.values()]


def test_a_record_missing_in_cloudflare_fails_its_check_alone(api, resolver):
    api.records = [r for r in _records() if not r["name"].startswith("_dmarc")]
    found = check.dns_checks(deployed_stack.Deployed("prod-oslo", _outputs(resolver)))
    assert {c.name for c in found if c.level == "fail"} == {"outside:dmarc"}


def test_a_refused_api_token_is_a_failed_check_that_says_so(api, resolver, monkeypatch):
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", "wrong")
    found = {c.name: c for c in check.dns_checks(deployed_stack.Deployed("prod-oslo", _outputs(resolver)))}
    assert found["outside:mx"].level == "fail" and "Authentication error" in found["outside:mx"].reason


def test_make_verify_runs_the_suite_as_the_login_user_with_the_stacks_key(monkeypatch):
    monkeypatch.setattr(deployed_stack, "outputs", lambda stack: _outputs("192.0.2.53:53"))
    seen = {}
    monkeypatch.setattr(verify.verification, "run_suite", lambda host, key, expect, known_hosts, user:
                        seen.update(host=host, key=key, expect=expect, known_hosts=known_hosts, user=user)
                        or {"passed": 3, "failed": 0, "failures": []})
    assert verify.main(["--stack", "prod-oslo"]) == 0
    assert (seen["host"], seen["user"], seen["key"].startswith("-----BEGIN")) == (IP, "debian", True)
    assert seen["expect"] == {"domain": DOMAIN, "hostname": FQDN, "users": [f"alice@{DOMAIN}"],
                              "dkim_txt": f"v=DKIM1; k=rsa; p={DKIM_P}"}
    assert seen["known_hosts"].endswith("/known_hosts") and "/bulletproof-mail/prod-oslo-" in seen["known_hosts"]


def test_make_outputs_prints_the_outputs_as_one_object(monkeypatch, capsys):
    monkeypatch.setattr(deployed_stack, "outputs", lambda stack: _outputs("192.0.2.53:53"))
    assert ops_outputs.main(["--stack", "prod-oslo"]) == 0
    assert json.loads(capsys.readouterr().out)["dns_server"] == f"cloudflare:{ZONE_ID}"
