"""The SMTP protocol closed (issue 12, item 2), proved on the real host of test_agent_mail.py,
which imports these tests so they share its deployed host (no deployment of their own).

Raw SMTP over a socket, never smtplib (it would fix the line endings under test): each attack
class of Postfix 3.7's smuggling page and postscreen's after-220 tests gets the exact refusal
(reply and log line) and no message queued or delivered. Then login brute force: fail2ban
blocks a client address after repeated failures on IMAP and on submission, never ssh.

Every client is a fresh address on the stack's bridge (postscreen, anvil and fail2ban remember
addresses); ``down`` removes them.
"""
from __future__ import annotations

import base64
import smtplib
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from agent.contract import MAIL_DIR, MAIL_LOG
from tests import mailclient
from tests.integration import agenthost as deploy
from tests.integration.agenthost import HELO, OUTSIDER, password

SMTPD_CLIENT = 220                   # passes postscreen once, then speaks to smtpd
FRESH = {"pipelining": 221, "get": 222, "connect": 223, "bare_newline": 224}
# Inside the SSH admin network (the lower /25, test_agent_mail): the ssh test then shows
# fail2ban's ban, not the admin filter.
IMAP_GUESSER, SUBMISSION_GUESSER, HONEST = 112, 113, 114


class RawSMTP:
    """Bytes exactly as given; replies read whole (multi-line), every read bounded."""

    def __init__(self, ip: str, source: str, timeout: float = 15):
        self.sock = socket.create_connection((ip, 25), timeout=timeout, source_address=(source, 0))
        self.buf = b""

    def reply(self) -> bytes:
        """The next complete reply ("250-a\\r\\n250 b"), or b"" once the server hung up."""
        while True:
            lines = self.buf.split(b"\r\n")
            for i, line in enumerate(lines[:-1]):
                if line[3:4] == b" " or len(line) == 3:
                    self.buf = b"\r\n".join(lines[i + 1:])
                    return b"\r\n".join(lines[:i + 1])
            try:
                data = self.sock.recv(4096)
            except ConnectionResetError:
                data = b""
            if not data:
                return b""
            self.buf += data

    def say(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        return self.reply()

    def close(self) -> None:
        self.sock.close()


def mail_log(host, needle: str) -> str:
    rc, out, _ = host.run(f"grep -F -- {needle!r} {MAIL_LOG}")
    return out if rc == 0 else ""


def stored(host, marker: str) -> str:
    """Mailbox files (any user) or queue entries that hold ``marker``: none for a refusal."""
    _, files, _ = host.run(f"grep -rlF -- {marker!r} {MAIL_DIR}")
    _, queue, _ = host.run("postqueue -j")
    return files + "".join(line for line in queue.splitlines() if marker in line)


@pytest.fixture(scope="module")
def smtpd_client(host) -> str:
    source = deploy.client_address(host, SMTPD_CLIENT)
    mailclient.pass_postscreen(host.ip, source, HELO)
    return source


def rcpt_of() -> str:
    return f"alice@{deploy.DOMAIN}"


def _open_data(host, source: str, rcpt: str) -> RawSMTP:
    """A session with smtpd up to DATA's 354."""
    c = RawSMTP(host.ip, source)
    assert c.reply().startswith(b"220 ")
    ehlo = c.say(f"EHLO {HELO}\r\n".encode())
    assert b"PIPELINING" in ehlo, ehlo  # smtpd, not postscreen
    assert c.say(f"MAIL FROM:<{OUTSIDER}>\r\n".encode()).startswith(b"250")
    assert c.say(f"RCPT TO:<{rcpt}>\r\n".encode()).startswith(b"250")
    assert c.say(b"DATA\r\n").startswith(b"354")
    return c


def _smuggling(marker: str, end_of_outer: bytes) -> bytes:
    """The published exploit: a message whose body "ends" in a non-standard end-of-data,
    followed by a second, spoofed transaction."""
    return (f"Subject: outer {marker}\r\n\r\nouter\r\n".encode() + end_of_outer
            + b"MAIL FROM:<admin@" + deploy.DOMAIN.encode() + b">\r\n"
            + f"RCPT TO:<{rcpt_of()}>\r\nDATA\r\nSubject: smuggled {marker}\r\n\r\n"
              "smuggled\r\n.\r\n".encode())


# --- smtpd: bare <LF>, smuggling, pipelining, BDAT --------------------------------------
@pytest.mark.parametrize("end_of_outer", [b"\n.\n", b"\n.\r\n", b"\r\n.\n"],
                         ids=["LF.LF", "LF.CRLF", "CRLF.LF"])
def test_smuggling_with_a_bare_lf_end_of_data_is_refused(host, smtpd_client, end_of_outer):
    marker = uuid.uuid4().hex[:10]
    c = _open_data(host, smtpd_client, rcpt_of())
    try:
        answer = c.say(_smuggling(marker, end_of_outer))
    finally:
        c.close()
    assert answer == f"550 5.5.2 mail.{deploy.DOMAIN} Error: bare <LF> received".encode()
    assert f"[{smtpd_client}]: bare <LF> received" in mail_log(host, "END-OF-MESSAGE")
    assert stored(host, marker) == ""


def test_bare_lf_inside_data_is_refused(host, smtpd_client):
    marker = uuid.uuid4().hex[:10]
    c = _open_data(host, smtpd_client, rcpt_of())
    try:
        answer = c.say(f"Subject: {marker}\r\n\r\nline one\nline two\r\n.\r\n".encode())
    finally:
        c.close()
    assert answer.startswith(b"550 5.5.2 ") and b"bare <LF> received" in answer
    assert stored(host, marker) == ""


def test_bare_cr_neither_ends_data_nor_reaches_the_mailbox(host, smtpd_client):
    """Postfix never reads a bare <CR> as a line end: "<CR>.<CR>" smuggles nothing. It stores
    it as a space, so no bare <CR> leaves this host toward a server that would."""
    marker = uuid.uuid4().hex[:10]
    c = _open_data(host, smtpd_client, rcpt_of())
    try:
        answer = c.say(_smuggling(marker, b"\r.\r"))
    finally:
        c.close()
    assert answer.startswith(b"250 2.0.0 Ok: queued as "), answer  # one message: the outer
    raw = mailclient.imap_find(host.ip, rcpt_of(), password(rcpt_of()), f"outer {marker}")
    assert raw is not None and b"\r" not in raw.replace(b"\r\n", b"")
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert b"MAIL FROM:<admin@" in body and b"Subject: smuggled" in body, raw  # mere text
    assert mailclient.imap_find(host.ip, rcpt_of(), password(rcpt_of()),
                                f"smuggled {marker}", timeout=1) is None


def test_commands_pipelined_without_pipelining_are_refused(host, smtpd_client):
    """HELO does not negotiate PIPELINING: a second command before the reply hangs up."""
    c = RawSMTP(host.ip, smtpd_client)
    try:
        assert c.reply().startswith(b"220 ")
        assert c.say(f"HELO {HELO}\r\n".encode()).startswith(b"250")
        answer = c.say(f"MAIL FROM:<{OUTSIDER}>\r\nRCPT TO:<{rcpt_of()}>\r\n".encode())
        assert answer == b"554 5.5.0 Error: SMTP protocol synchronization"
        assert c.reply() == b""  # disconnected
    finally:
        c.close()
    assert f"improper command pipelining after MAIL from unknown[{smtpd_client}]" \
        in mail_log(host, "improper command pipelining after MAIL")


def test_message_sent_before_the_354_reply_is_refused(host, smtpd_client):
    marker = uuid.uuid4().hex[:10]
    c = RawSMTP(host.ip, smtpd_client)
    try:
        c.reply()
        c.say(f"EHLO {HELO}\r\n".encode())
        c.say(f"MAIL FROM:<{OUTSIDER}>\r\n".encode())
        c.say(f"RCPT TO:<{rcpt_of()}>\r\n".encode())
        answer = c.say(f"DATA\r\nSubject: {marker}\r\n\r\nearly\r\n.\r\n".encode())
    finally:
        c.close()
    assert answer == b"554 5.5.0 Error: SMTP protocol synchronization"
    assert f"improper command pipelining after DATA from unknown[{smtpd_client}]" \
        in mail_log(host, "improper command pipelining after DATA")
    assert stored(host, marker) == ""


def test_bdat_is_not_offered_nor_accepted(host, smtpd_client):
    c = RawSMTP(host.ip, smtpd_client)
    try:
        c.reply()
        ehlo = c.say(f"EHLO {HELO}\r\n".encode())
        c.say(f"MAIL FROM:<{OUTSIDER}>\r\n".encode())
        c.say(f"RCPT TO:<{rcpt_of()}>\r\n".encode())
        answer = c.say(b"BDAT 10 LAST\r\n0123456789")
    finally:
        c.close()
    assert b"CHUNKING" not in ehlo
    assert answer == b"521 5.5.1 Error: command not implemented"  # and hung up


# --- postscreen's after-220 tests: a fresh client each ----------------------------------
def _fresh(host, kind: str) -> tuple[str, RawSMTP]:
    source = deploy.client_address(host, FRESH[kind])
    c = RawSMTP(host.ip, source, timeout=host.spec["postscreen"]["greet_wait_s"] + 15)
    assert c.reply().endswith(f"220 mail.{deploy.DOMAIN} ESMTP".encode())  # after greet wait
    return source, c


def test_pipelining_to_postscreen_is_refused(host):
    source, c = _fresh(host, "pipelining")
    try:
        c.sock.sendall(f"EHLO {HELO}\r\nMAIL FROM:<{OUTSIDER}>\r\nRCPT TO:<{rcpt_of()}>\r\n".encode())
        answers = [c.reply() for _ in range(3)]
    finally:
        c.close()
    assert b"PIPELINING" not in answers[0]  # postscreen never offers it
    assert answers[2] == b"550 5.5.1 Protocol error"
    assert f"COMMAND PIPELINING from [{source}]" in mail_log(host, "COMMAND PIPELINING")
    assert f"PASS NEW [{source}]" not in mail_log(host, "PASS NEW")


@pytest.mark.parametrize("kind, command", [("get", "GET / HTTP/1.0"),
                                           ("connect", "CONNECT mx.elsewhere.test:25 HTTP/1.0")])
def test_non_smtp_command_is_dropped_by_postscreen(host, kind, command):
    source, c = _fresh(host, kind)
    try:
        answer = c.say(f"{command}\r\n".encode())
        after = c.reply()
    finally:
        c.close()
    assert answer == b"521 5.7.0 Error: I can break rules, too. Goodbye."
    assert after == b""  # hung up
    assert f"NON-SMTP COMMAND from [{source}]" in mail_log(host, f"after CONNECT: {command}")


def test_bare_newline_to_postscreen_is_refused(host):
    source, c = _fresh(host, "bare_newline")
    try:
        c.say(f"EHLO {HELO}\n".encode())
        c.say(f"MAIL FROM:<{OUTSIDER}>\r\n".encode())
        answer = c.say(f"RCPT TO:<{rcpt_of()}>\r\n".encode())
    finally:
        c.close()
    assert answer == b"550 5.5.1 Protocol error"
    assert f"BARE NEWLINE from [{source}]" in mail_log(host, "BARE NEWLINE")


def test_a_new_client_is_deferred_once_then_delivers(host):
    """The cost of the after-220 tests to a legitimate first-time sender: one 450."""
    source = deploy.client_address(host, HONEST)
    assert mailclient.pass_postscreen(host.ip, source, HELO) is True   # 450 at RCPT
    assert f"PASS NEW [{source}]" in mail_log(host, "PASS NEW")
    subject = f"after deferral {uuid.uuid4().hex[:8]}"
    with mailclient.smtp_in(host.ip, source, HELO) as s:
        s.sendmail(OUTSIDER, [rcpt_of()], deploy.message(OUTSIDER, rcpt_of(), subject))
    assert mailclient.imap_find(host.ip, rcpt_of(), password(rcpt_of()), subject) is not None


# --- login brute force: fail2ban ---------------------------------------------------------
def _maxretry(host, jail: str) -> int:
    rc, out, err = host.run(f"fail2ban-client get {jail} maxretry")
    assert rc == 0, err
    return int(out.strip())


def _refused(ip: str, source: str, port: int, timeout: float = 20) -> bool:
    """Bounded poll: True once a connection from ``source`` to ``port`` is refused."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((ip, port), timeout=3, source_address=(source, 0)).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.5)
    return False


def _bad_submission_auth(ip: str, source: str) -> int:
    token = base64.b64encode(f"\0{rcpt_of()}\0wrong-password".encode()).decode()
    with smtplib.SMTP(ip, 587, local_hostname=HELO, timeout=30, source_address=(source, 0)) as s:
        s.starttls(context=mailclient.insecure_tls())
        s.ehlo(HELO)
        return s.docmd("AUTH", f"PLAIN {token}")[0]


def _banned(host, jail: str, index: int, attempt):
    """``maxretry`` failed logins at once (Dovecot delays each failure, not the next
    connection) from a fresh address; yields it, unbans it afterwards."""
    source = deploy.client_address(host, index)
    n = _maxretry(host, jail)
    try:
        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(lambda _: attempt(source), range(n)))
        yield source, results
    finally:
        host.run(f"fail2ban-client set {jail} unbanip {source}")


@pytest.fixture(scope="module")
def imap_guesser(host):
    user = rcpt_of()
    yield from _banned(host, "dovecot", IMAP_GUESSER,
                       lambda src: mailclient.imap_login(host.ip, user, "wrong-password", src))


@pytest.fixture(scope="module")
def submission_guesser(host):
    yield from _banned(host, "postfix-sasl", SUBMISSION_GUESSER,
                       lambda src: _bad_submission_auth(host.ip, src))


def test_repeated_imap_login_failures_block_the_address(host, imap_guesser):
    source, results = imap_guesser
    assert results == [False] * len(results)
    assert _refused(host.ip, source, 993)
    _, out, _ = host.run("fail2ban-client status dovecot")
    assert source in out


def test_repeated_submission_auth_failures_block_the_address(host, submission_guesser):
    source, codes = submission_guesser
    assert codes == [535] * len(codes)
    assert _refused(host.ip, source, 587) and _refused(host.ip, source, 465, timeout=3)
    _, out, _ = host.run("fail2ban-client status postfix-sasl")
    assert source in out


def test_a_banned_address_still_reaches_ssh(host, imap_guesser):
    source, _ = imap_guesser
    assert _refused(host.ip, source, 993)
    socket.create_connection((host.ip, 22), timeout=5, source_address=(source, 0)).close()


def test_another_address_logs_in_while_one_is_banned(host, imap_guesser):
    assert _refused(host.ip, imap_guesser[0], 993)
    honest = deploy.client_address(host, HONEST)
    assert mailclient.imap_login(host.ip, rcpt_of(), password(rcpt_of()), honest) is True


# What test_agent_mail.py imports: the tests and the fixtures they need.
__all__ = sorted(n for n in dir() if n.startswith("test_")) + [
    "smtpd_client", "imap_guesser", "submission_guesser"]
