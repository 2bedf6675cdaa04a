"""The agent applied to a real booted Debian 12 container; the mail behaviours of issue 3
checked with real clients (smtplib, imaplib, dkimpy). One deployed host for the module.

Needs root, systemd-nspawn, tinyproxy and named; the first run installs the mail packages in
the container through the local proxy (about a minute on a warm mirror).
"""
import json
import os
import smtplib
import socket
import subprocess
import sys
import time
import uuid

import dkim
import pytest

from agent.contract import DATA_DIR, MAIL_DIR, QUEUE_DIR, TLS_CERT
from tests import mailclient
from tests.integration import agenthost as deploy
from tests.integration.agenthost import HELO, OUTSIDER, message, password

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(bool(deploy.tools_missing()), reason="needs systemd-nspawn, tinyproxy, named"),
]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def host(progress):
    d = None
    try:
        started = time.monotonic()
        d = deploy.up(log=lambda line: progress("agent", line), volume=True)
        rc, report, elapsed, err = d.apply(d.spec, run_id="itest-first")
        progress("agent", f"boot+setup {time.monotonic() - started - elapsed:.1f} s, "
                          f"first apply {elapsed:.1f} s (rc {rc})")
        assert rc == 0, json.dumps(report, indent=1)[-3000:] + err[-3000:]
        d.timings["first_apply_s"] = elapsed
        yield d
    finally:
        deploy.down(d)


def smtp(host, port=25, source=None) -> smtplib.SMTP:
    cls = smtplib.SMTP_SSL if port == 465 else smtplib.SMTP
    kw = {"context": mailclient.insecure_tls()} if port == 465 else {}
    return cls(host.ip, port, local_hostname=HELO, timeout=30,
               source_address=(source, 0) if source else None, **kw)


def imap_fetch(host, user: str, subject: str, timeout: float = 30) -> bytes | None:
    return mailclient.imap_find(host.ip, user, password(user), subject, timeout)


def first_user(host) -> str:
    return host.spec["users"][0]["address"]


def second_user(host) -> str:
    return host.spec["users"][1]["address"]


# --- SMTP on 25 ------------------------------------------------------------------------
def test_unauthenticated_client_cannot_relay(host):
    with smtp(host) as s:
        s.ehlo()
        s.mail(OUTSIDER)
        code, text = s.rcpt("victim@elsewhere.test")
    assert code == 554 and b"5.7.1" in text


def test_mail_to_unknown_local_user_is_rejected(host):
    with smtp(host) as s:
        s.ehlo()
        s.mail(OUTSIDER)
        code, text = s.rcpt(f"nobody@{deploy.DOMAIN}")
    assert code == 550


def test_vrfy_is_disabled(host):
    with smtp(host) as s:
        s.ehlo()
        code, _ = s.verify(first_user(host))
    assert code == 502


def test_mail_to_local_user_lands_in_maildir_and_is_readable_over_imaps(host):
    subject = f"inbound {uuid.uuid4().hex[:8]}"
    user = second_user(host)
    with smtp(host) as s:
        s.sendmail(OUTSIDER, [user], message(OUTSIDER, user, subject))
    assert imap_fetch(host, user, subject) is not None
    local = user.split("@")[0]
    rc, out, _ = host.run(f"grep -rl '{subject}' {MAIL_DIR}/{deploy.DOMAIN}/{local}/Maildir")
    assert rc == 0 and ("/new/" in out or "/cur/" in out), out
    # ... which is the data volume: this machine's directory, bind-mounted at DATA_DIR.
    on_volume = subprocess.run(["grep", "-rl", subject, os.path.join(
        host.volume, "vhosts", deploy.DOMAIN, local, "Maildir")], capture_output=True, text=True)
    assert on_volume.returncode == 0 and on_volume.stdout.strip(), on_volume


def test_the_queue_is_on_the_volume_and_the_daemons_require_it(host):
    assert host.run("postconf -h queue_directory")[1].strip() == QUEUE_DIR
    assert os.path.isdir(os.path.join(host.volume, "postfix", "deferred"))  # this machine's dir
    for unit in ("postfix@-", "dovecot"):
        _, out, _ = host.run(f"systemctl show -p RequiresMountsFor --value {unit}")
        assert DATA_DIR in out.split(), (unit, out)
    volume = next(s for s in host.reports[0]["steps"] if s["name"] == "volume")
    assert volume["detail"] == f"{DATA_DIR} in place (mounted)"


def test_postmaster_alias_delivers_to_a_user(host):
    subject = f"postmaster {uuid.uuid4().hex[:8]}"
    with smtp(host) as s:
        s.sendmail(OUTSIDER, [f"postmaster@{deploy.DOMAIN}"],
                   message(OUTSIDER, f"postmaster@{deploy.DOMAIN}", subject))
    assert imap_fetch(host, first_user(host), subject) is not None


def test_client_talking_before_the_banner_is_rejected_by_postscreen(host):
    source = str(host.bridge.address(deploy.PREGREET_INDEX).ip)
    greet_wait = host.spec["postscreen"]["greet_wait_s"]
    with socket.create_connection((host.ip, 25), timeout=30, source_address=(source, 0)) as c:
        c.sendall(f"EHLO {HELO}\r\n".encode())  # before the 220 banner is complete
        time.sleep(greet_wait + 1)
        c.sendall(f"MAIL FROM:<{OUTSIDER}>\r\nRCPT TO:<{first_user(host)}>\r\n".encode())
        data = b""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and b"5.5.1" not in data:
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
    assert b"5.5.1" in data or b"521" in data, data
    rc, out, _ = host.run(f"grep 'PREGREET.*\\[{source}\\]' /var/log/mail.log")
    assert rc == 0, out


def test_client_listed_in_test_dnsbl_is_rejected(host):
    source = str(host.bridge.address(deploy.LISTED_INDEX).ip)
    try:
        with smtp(host, source=source) as s:
            s.ehlo()
            s.mail(OUTSIDER)
            code, text = s.rcpt(first_user(host))
    except smtplib.SMTPServerDisconnected:
        code, text = 521, b"dropped"
    assert code >= 500, text
    rc, out, _ = host.run(f"grep 'DNSBL rank .* for \\[{source}\\]' /var/log/mail.log")
    assert rc == 0, out


# --- submission ------------------------------------------------------------------------
def test_submission_offers_no_auth_before_starttls(host):
    with smtp(host, 587) as s:
        s.ehlo()
        assert not s.has_extn("auth")
        assert s.has_extn("starttls")
        s.starttls(context=mailclient.insecure_tls())
        s.ehlo()
        assert s.has_extn("auth")


@pytest.mark.parametrize("port", [587, 465])
def test_auth_works_for_a_spec_user(host, port):
    with smtp(host, port) as s:
        if port == 587:
            s.starttls(context=mailclient.insecure_tls())
        code, _ = s.login(first_user(host), password(first_user(host)))
    assert code == 235


@pytest.mark.parametrize("port", [587, 465])
def test_wrong_password_fails(host, port):
    with smtp(host, port) as s:
        if port == 587:
            s.starttls(context=mailclient.insecure_tls())
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login(first_user(host), "wrong-password")


def test_authenticated_user_cannot_send_as_another_user(host):
    with smtp(host, 587) as s:
        s.starttls(context=mailclient.insecure_tls())
        s.login(first_user(host), password(first_user(host)))
        s.mail(second_user(host))
        code, text = s.rcpt(OUTSIDER)
    assert code == 553 and b"5.7.1" in text


def test_mail_from_authenticated_user_carries_a_valid_dkim_signature(host):
    subject = f"signed {uuid.uuid4().hex[:8]}"
    sender, rcpt = first_user(host), second_user(host)
    with smtp(host, 587) as s:
        s.starttls(context=mailclient.insecure_tls())
        s.login(sender, password(sender))
        s.sendmail(sender, [rcpt], message(sender, rcpt, subject))
    raw = imap_fetch(host, rcpt, subject)
    assert raw is not None and b"DKIM-Signature:" in raw
    txt = host.reports[0]["dkim"]["txt"].encode()
    name = host.reports[0]["dkim"]["name"].encode() + b"."

    def dnsfunc(qname, timeout=5):
        return txt if qname == name else None
    assert dkim.verify(raw, dnsfunc=dnsfunc)


def _submit(host, sender: str, rcpt: str, subject: str) -> int:
    """One submission on 587: 250, or the first refusal's code."""
    try:
        with smtp(host, 587) as s:
            s.starttls(context=mailclient.insecure_tls())
            s.login(sender, password(sender))
            s.sendmail(sender, [rcpt], message(sender, rcpt, subject))
    except smtplib.SMTPResponseException as exc:
        return exc.smtp_code
    except smtplib.SMTPRecipientsRefused as exc:
        return exc.recipients[rcpt][0]
    return 250


def _wait_for_listener(host, path: str, timeout: float = 30) -> None:
    rc, _, _ = host.run(f"for i in $(seq {int(timeout * 10)}); do ss -Hlx | grep -qF ' {path} ' "
                        f"&& exit 0; sleep 0.1; done; exit 1")
    assert rc == 0, f"nothing listens on {path} after {timeout} s"


def test_submission_waits_while_opendkim_is_down_and_flows_signed_once_it_is_back(host):
    """milter_default_action = tempfail: no milter, no mail (4xx); never sent unsigned."""
    sender, rcpt = first_user(host), second_user(host)
    sock = "/run/opendkim/opendkim.sock"
    down = f"while down {uuid.uuid4().hex[:8]}"
    assert host.run("systemctl stop opendkim")[0] == 0  # returns once the daemon is gone
    try:
        code = _submit(host, sender, rcpt, down)
    finally:
        host.run("systemctl start opendkim")
    _wait_for_listener(host, sock)
    assert 400 <= code < 500, code
    back = f"once back {uuid.uuid4().hex[:8]}"
    assert _submit(host, sender, rcpt, back) == 250
    raw = imap_fetch(host, rcpt, back)
    assert raw is not None and b"DKIM-Signature:" in raw
    assert imap_fetch(host, rcpt, down, timeout=2) is None


# --- IMAP and ports --------------------------------------------------------------------
def test_imap_plaintext_port_is_closed(host):
    with pytest.raises(OSError):
        socket.create_connection((host.ip, 143), timeout=3).close()


@pytest.mark.parametrize("port", [22, 25, 465, 587, 993])
def test_intended_port_answers(host, port):
    socket.create_connection((host.ip, port), timeout=3).close()  # raises when nothing answers


@pytest.mark.parametrize("port", [110, 143, 53, 8891, 24, 4190, 8953, 953, 10023])
def test_other_port_does_not_answer(host, port):
    with pytest.raises(OSError):
        socket.create_connection((host.ip, port), timeout=2).close()


# --- apply behaviour -------------------------------------------------------------------
def test_second_apply_reports_zero_changes_and_restarts_nothing(host):
    pid_before = host.run("systemctl show -p MainPID --value dovecot")[1]
    rc, report, elapsed, _ = host.apply(run_id="itest-second")
    assert rc == 0
    assert [s["name"] for s in report["steps"] if s["changed"]] == []
    assert host.run("systemctl show -p MainPID --value dovecot")[1] == pid_before
    host.timings["noop_apply_s"] = elapsed


def test_broken_spec_fails_rolls_back_and_mail_still_flows(host):
    broken = json.loads(json.dumps(host.spec))
    broken["tls"] = {"mode": "provided", "key_pem": broken["dkim"]["private_key_pem"],
                     "cert_pem": "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----"}
    main_cf = host.run(f"sha256sum /etc/postfix/main.cf {TLS_CERT}")[1]
    rc, report, _, err = host.apply(broken, run_id="itest-broken")
    assert rc == 1 and report["status"] == "failed"
    assert report["error"]["file"] == TLS_CERT
    assert host.run(f"sha256sum /etc/postfix/main.cf {TLS_CERT}")[1] == main_cf
    subject = f"after broken {uuid.uuid4().hex[:8]}"
    with smtp(host) as s:
        s.sendmail(OUTSIDER, [first_user(host)], message(OUTSIDER, first_user(host), subject))
    assert imap_fetch(host, first_user(host), subject) is not None
    # The applied spec on the host is still the last good one.
    rc, report, _, _ = host.apply(host.spec, run_id="itest-restore")
    assert rc == 0 and report["changed"] is False


def test_status_reports_services_active(host):
    rc, out, _ = host.run(f"{deploy.AGENT} status --json")
    st = json.loads(out)
    assert rc == 0 and st["healthy"], st
    assert st["last_run"]["run_id"] == "itest-restore"


# Holds unbound's port so its restart fails (bounded: it exits by itself after 300 s).
_BLOCK_PORT_53 = ("import socket, time\n"
                  "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('127.0.0.1', 53))\n"
                  "t = socket.socket(); t.bind(('127.0.0.1', 53)); t.listen()\n"
                  "time.sleep(300)\n")


def test_a_service_that_fails_to_start_rolls_back_to_the_last_good_files(host):
    """Valid config, but the daemon cannot start (its port is taken): the run fails naming the
    service, the old files are back, and once the port is free the last good state runs again."""
    conf = "/etc/unbound/unbound.conf.d/bulletproof.conf"
    before = host.run(f"sha256sum {conf}")[1]
    changed = json.loads(json.dumps(host.spec))
    changed["resolver"]["forwarders"] = [*changed["resolver"]["forwarders"], "127.0.0.2@53"]
    host.run("systemctl stop unbound")
    rc, out, _ = host.run(f"nohup python3 -c \"{_BLOCK_PORT_53}\" >/dev/null 2>&1 & echo $!")
    blocker = out.strip()
    assert rc == 0 and blocker.isdigit()
    try:
        rc, report, _, _ = host.apply(changed, run_id="itest-service-fails")
        assert rc == 1 and report["status"] == "failed"
        assert report["error"]["step"] == "services" and "unbound" in report["error"]["message"], report["error"]
        assert host.run(f"sha256sum {conf}")[1] == before  # rolled back
    finally:
        host.run(f"kill {blocker}")
    assert host.run("systemctl restart unbound")[0] == 0
    subject = f"after failed start {uuid.uuid4().hex[:8]}"
    with smtp(host) as s:
        s.sendmail(OUTSIDER, [first_user(host)], message(OUTSIDER, first_user(host), subject))
    assert imap_fetch(host, first_user(host), subject) is not None
    rc, report, _, _ = host.apply(host.spec, run_id="itest-recovered")
    assert rc == 0 and report["changed"] is False  # the files on the host are the good ones


def test_infra_suite_passes_against_the_host(host, tmp_path):
    """tests/infra is the read-only check for any deployed host; run it here as it would
    run against production."""
    expect = tmp_path / "expect.json"
    expect.write_text(json.dumps({"domain": deploy.DOMAIN,
                                  "hostname": host.spec["hostname"],
                                  "users": [u["address"] for u in host.spec["users"]]}))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/infra",
         f"--hosts=paramiko://root@{host.ip}", f"--ssh-identity-file={host.key_file}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, BPM_INFRA_EXPECT=str(expect)))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
