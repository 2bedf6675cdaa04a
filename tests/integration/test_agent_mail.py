"""The agent applied to a real booted Debian 12 container; the mail behaviours of issue 3
checked with real clients (smtplib, imaplib, dkimpy). One deployed host for the module.

Needs root, systemd-nspawn, tinyproxy and named; the first run installs the mail packages in
the container through the local proxy (about a minute on a warm mirror).
"""
import io
import ipaddress
import json
import os
import smtplib
import socket
import subprocess
import sys
import time
import uuid

import dkim
import paramiko
import pytest

from agent.contract import DATA_DIR, MAIL_DIR, QUEUE_DIR, SSH_BURST, SSH_PER_MINUTE, TLS_CERT
from components import remote
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
        d = deploy.up(log=lambda line: progress("agent", line), volume=True, tune=_admin_network)
        rc, report, elapsed, err = d.apply(d.spec, run_id="itest-first")
        progress("agent", f"boot+setup {time.monotonic() - started - elapsed:.1f} s, "
                          f"first apply {elapsed:.1f} s (rc {rc})")
        assert rc == 0, json.dumps(report, indent=1)[-3000:] + err[-3000:]
        d.timings["first_apply_s"] = elapsed
        yield d
    finally:
        deploy.down(d)


def _admin_network(spec: dict) -> None:
    """SSH from the lower half of the bridge's /24 only: this machine's bridge address (.1) and
    SSH_BURST_INDEX are in it, SSH_OUTSIDER_INDEX is not. No IPv6 admin network."""
    spec["ssh"] = {"allow_from": [str(ipaddress.ip_network(f"{spec['ipv4']}/25", strict=False))]}


def smtp(host, port=25, source=None, warm=True) -> smtplib.SMTP:
    """``warm``: on 25, pass postscreen's first-time deferral first (as a real MTA retries)."""
    if port == 25 and warm:
        mailclient.pass_postscreen(host.ip, source, HELO)
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


def _rcpt_from_listed(host, source: str) -> tuple[int, bytes]:
    """RCPT from a DNSBL-listed client: postscreen refuses it before its one-time deferral
    (so no warm-up), or drops it."""
    try:
        with smtp(host, source=source, warm=False) as s:
            s.ehlo()
            s.mail(OUTSIDER)
            return s.rcpt(first_user(host))
    except smtplib.SMTPServerDisconnected:
        return 521, b"dropped"


def test_client_listed_in_test_dnsbl_is_rejected(host):
    source = str(host.bridge.address(deploy.LISTED_INDEX).ip)
    code, text = _rcpt_from_listed(host, source)
    assert code >= 500, text
    rc, out, _ = host.run(f"grep 'DNSBL rank .* for \\[{source}\\]' /var/log/mail.log")
    assert rc == 0, out


def test_client_whose_dnsbl_answer_is_a_blocked_code_is_not_rejected(host):
    # Without the reply filter postscreen counts any answer: 127.255.255.254 ("query via a
    # public resolver") would be a listing of weight 2, the threshold.
    source = str(host.bridge.address(deploy.BLOCKED_INDEX).ip)
    with smtp(host, source=source) as s:
        s.ehlo()
        s.mail(OUTSIDER)
        code, text = s.rcpt(first_user(host))
    assert code == 250, text
    rc, out, _ = host.run(f"grep 'DNSBL rank .* for \\[{source}\\]' /var/log/mail.log")
    assert rc == 1, out


def _host_answers_blocked(host, code: str | None) -> None:
    """The test DNSBL's answer for the host's own IP (None: not listed), unbound's cache flushed."""
    from agent.contract import dnsbl_query_name
    from localcloud import dns, rfc2136
    gw, tsig = str(host.bridge.ipv4.ip), dns.read_tsig(host.names.runtime_dir / "agent-dns")
    name = dnsbl_query_name(host.ip, "dnsbl.test")
    if code:
        rfc2136.upsert(gw, 53, tsig, "dnsbl.test", name, "A", [code], 60)
    else:
        rfc2136.delete(gw, 53, tsig, "dnsbl.test", name, "A")
    rc, out, err = host.run("unbound-control flush_zone dnsbl.test && unbound-control flush_negative")
    assert rc == 0, out + err


def test_status_and_report_say_the_dnsbl_refuses_our_resolver_on_a_blocked_answer(host):
    try:
        _host_answers_blocked(host, "127.255.255.254")
        _, out, err = host.run(f"{deploy.AGENT} status --json")
        (check,) = [c for c in json.loads(out)["checks"] if c["name"] == "dnsbl:dnsbl.test"]
        assert check["level"] == "warn", check
        assert check["reason"].startswith("DNSBL refuses our resolver: dnsbl.test") and "127.255.255.254" in check["reason"]
        rc, out, err = host.run(f"{deploy.AGENT} report --since 1h --json")
        assert rc == 0, err
        assert [a["kind"] for a in json.loads(out)["anomalies"]].count("DNSBL refuses our resolver") == 1
    finally:
        _host_answers_blocked(host, None)


def test_dqs_site_is_asked_with_a_key_that_only_unbound_and_root_can_read(host):
    import copy
    spec = copy.deepcopy(host.spec)
    spec["postscreen"]["dnsbl_sites"] = [{"zone": "dnsbl.test", "weight": 2, "dqs": True}]
    spec["postscreen"]["dqs_key"] = deploy.DQS_KEY
    source = str(host.bridge.address(deploy.DQS_INDEX).ip)   # listed in the keyed zone only
    try:
        rc, report, _, err = host.apply(spec, run_id="itest-dqs")
        assert rc == 0, json.dumps(report, indent=1)[-3000:] + err[-2000:]
        code, text = _rcpt_from_listed(host, source)
        assert code >= 500, text
        assert deploy.DQS_KEY.encode() not in text
        rc, out, _ = host.run(f"grep 'DNSBL rank 2 for \\[{source}\\]' /var/log/mail.log")
        assert rc == 0, out
        # Every file that holds the key: not world-readable; none of Postfix's.
        rc, out, _ = host.run(f"grep -rl {deploy.DQS_KEY} /etc /var/lib/bulletproof-mail /var/log "
                              "| xargs -r stat -c '%a %U:%G %n'")
        held = {path: mode for mode, _, path in (line.split(" ", 2) for line in out.splitlines())}
        assert "/etc/unbound/bulletproof-dqs.zone" in held, out
        assert all(int(mode[-1]) & 4 == 0 for mode in held.values()), out
        assert not [p for p in held if p.startswith("/etc/postfix")], out
        # No command line holds it (a master.cf -o would); [x] keeps grep's own out of the match.
        key = deploy.DQS_KEY
        _, out, _ = host.run(f"grep -l '{key[:4]}[{key[4]}]{key[5:]}' /proc/[0-9]*/cmdline 2>/dev/null")
        assert out.strip() == "", out
    finally:
        rc, report, _, err = host.apply(host.spec, run_id="itest-dqs-undo")
        assert rc == 0, json.dumps(report, indent=1)[-3000:] + err[-2000:]


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


# --- SSH (issue 12, item 5) ---------------------------------------------------------------
def _ssh_from(host, source: str | None = None, timeout: float = 3) -> socket.socket:
    return socket.create_connection((host.ip, 22), timeout=timeout,
                                    source_address=(source, 0) if source else None)


def _bridge_addr(host, index: int) -> str:
    return str(host.bridge.address(index).ip)


def test_sshd_offers_publickey_only_no_password_or_keyboard_interactive(host):
    transport = paramiko.Transport(_ssh_from(host))
    try:
        transport.start_client(timeout=10)
        with pytest.raises(paramiko.BadAuthenticationType) as err:
            transport.auth_none("root")
        assert err.value.allowed_types == ["publickey"]
    finally:
        transport.close()


def test_a_password_login_as_root_is_refused(host):
    transport = paramiko.Transport(_ssh_from(host))
    try:
        transport.start_client(timeout=10)
        with pytest.raises(paramiko.BadAuthenticationType):
            transport.auth_password("root", "secret-alice")
    finally:
        transport.close()


def test_root_logs_in_with_its_key_through_the_deploy_path(host, tmp_path):
    client = remote.connect(host.ip, open(host.key_file).read(), timeout=20,
                            known_hosts=str(tmp_path / "known_hosts"))
    try:
        assert remote.run(client, "id -u", check=True).stdout.strip() == "0"
    finally:
        client.close()


def test_the_first_apply_reloaded_sshd_over_its_own_session(host):
    services = next(s for s in host.reports[0]["steps"] if s["name"] == "services")
    assert "reload ssh" in services["detail"] or "restart ssh" in services["detail"]
    assert host.run("true")[0] == 0  # the session the agent ran in is still there


def test_ssh_from_outside_the_admin_networks_is_dropped(host):
    with pytest.raises(socket.timeout):
        _ssh_from(host, _bridge_addr(host, deploy.SSH_OUTSIDER_INDEX)).close()


def test_ssh_from_inside_the_admin_networks_connects(host):
    with _ssh_from(host, _bridge_addr(host, deploy.SSH_BURST_INDEX)) as sock:
        assert sock.recv(64).startswith(b"SSH-2.0-")


def test_a_burst_of_new_ssh_connections_beyond_the_limit_is_dropped(host):
    """One source may open SSH_BURST new connections at once (then SSH_PER_MINUTE a minute);
    the next ones are dropped while other sources still connect."""
    source, opened = _bridge_addr(host, deploy.SSH_BURST_INDEX), 0
    started = time.monotonic()
    for _ in range(SSH_BURST + 100):
        try:
            sock = _ssh_from(host, source, timeout=1)
        except OSError:  # the SYN was dropped
            break
        with sock:  # wait for sshd's banner, or its backlog fills and sshd drops, not nftables
            sock.settimeout(10)
            assert sock.recv(8) == b"SSH-2.0-"
        opened += 1
    refill = (time.monotonic() - started) * SSH_PER_MINUTE / 60  # the bucket refills meanwhile
    assert SSH_BURST - 1 <= opened <= SSH_BURST + refill + 2
    _ssh_from(host).close()  # this machine's own address is another source: not limited


def test_a_changed_host_key_is_refused_before_anything_is_sent(host, tmp_path):
    known = tmp_path / "known_hosts"
    impostor = paramiko.Ed25519Key.from_private_key(io.StringIO(_new_pem()))
    pinned = paramiko.HostKeys()
    pinned.add(host.ip, impostor.get_name(), impostor)
    pinned.save(str(known))
    with pytest.raises(remote.HostKeyChanged) as err:
        remote.connect(host.ip, open(host.key_file).read(), timeout=20, known_hosts=str(known))
    assert remote.fingerprint(impostor) in str(err.value) and "ssh-keygen -R" in str(err.value)


def test_firewall_none_leaves_the_servers_own_ruleset_alone(host):
    """ssh.firewall none (an existing server's own rules): a spec whose ruleset would change
    under `managed` leaves nftables untouched: the server's own table stays loaded."""
    before = host.run("sha256sum /etc/nftables.conf")[1]
    spec = json.loads(json.dumps(host.spec))
    spec["ssh"] = {"allow_from": ["0.0.0.0/0"], "firewall": "none"}
    assert host.run("nft add table inet site && nft add chain inet site mine")[0] == 0
    try:
        rc, report, _, _ = host.apply(spec, run_id="itest-firewall-none")
        assert rc == 0, report
        assert host.run("nft list chain inet site mine")[0] == 0
        assert host.run("sha256sum /etc/nftables.conf")[1] == before
        services = next(s for s in report["steps"] if s["name"] == "services")
        assert "nftables" not in services["detail"]
    finally:
        host.run("nft delete table inet site")
        rc, report, _, _ = host.apply(host.spec, run_id="itest-firewall-managed")
        assert rc == 0, report


def _new_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()).decode()


# --- several domains -------------------------------------------------------------------
def _with_domain(host, name: str, moved_from: str | None = None) -> dict:
    """The module's spec plus a second domain `name` with carol's mailbox (its own DKIM key)."""
    from agent import example
    spec = json.loads(json.dumps(host.spec))
    spec["users"].append({"address": f"carol@{name}", "quota_mb": 100,
                          "password_hash": example.password_hash(password(f"carol@{name}"))})
    spec["domains"] = [{"name": spec["domain"], "dkim_selector": spec["dkim"]["selector"]},
                       {"name": name, "dkim_selector": "s1", "private_key_pem": example.dkim_key(1024)}]
    if moved_from:
        spec["mailbox_moves"] = [{"from": moved_from, "to": name}]
    return spec


def test_a_renamed_domain_keeps_its_mail_and_serves_it_under_the_new_name(host):
    subject = f"before the rename {uuid.uuid4().hex[:8]}"
    try:
        rc, report, _, _ = host.apply(_with_domain(host, "old.test"), run_id="itest-domain-old")
        assert rc == 0, report
        with smtp(host) as s:
            s.sendmail(OUTSIDER, ["carol@old.test"], message(OUTSIDER, "carol@old.test", subject))
        assert imap_fetch(host, "carol@old.test", subject) is not None
        renamed = _with_domain(host, "new.test", moved_from="old.test")
        rc, report, _, _ = host.apply(renamed, run_id="itest-domain-renamed")
        assert rc == 0, report
        moves = next(s for s in report["steps"] if s["name"] == "mailbox_moves")
        assert moves["changed"] and "old.test" in moves["detail"], moves
        assert host.run(f"test -e {MAIL_DIR}/old.test")[0] != 0
        # Same mailbox, same message, under the new address (Dovecot's UIDs moved with it).
        assert imap_fetch(host, "carol@new.test", subject) is not None
        rc, report, _, _ = host.apply(renamed, run_id="itest-domain-again")  # done once only
        assert rc == 0 and not next(s for s in report["steps"] if s["name"] == "mailbox_moves")["changed"]
    finally:
        rc, report, _, _ = host.apply(host.spec, run_id="itest-domain-restore")
        assert rc == 0, report
        host.run(f"rm -rf {MAIL_DIR}/new.test {MAIL_DIR}/old.test")


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


# The SMTP protocol closed and login brute force (issue 12), on this module's host.
from tests.integration.attacks import *  # noqa: E402,F401,F403
