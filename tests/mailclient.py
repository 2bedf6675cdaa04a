"""Mail clients the tests share: TLS toward a self-signed host, submission, IMAPS polling."""
from __future__ import annotations

import email.message
import imaplib
import smtplib
import socket
import ssl
import time
import uuid


def insecure_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the hosts under test have self-signed certificates
    return ctx


def pass_postscreen(ip: str, source: str | None = None, helo: str = "client.elsewhere.test",
                    timeout: float = 30) -> bool:
    """Make a client address known to postscreen before it sends mail to port 25.

    postscreen's after-220 tests (pipelining, non-SMTP command, bare newline) cannot hand a
    session over to smtpd: a new client is answered 450 at RCPT once and must reconnect, as a
    real MTA does. One well-behaved session up to RCPT passes them (postscreen logs PASS NEW);
    a client that passed already is handed to smtpd, which announces PIPELINING, and nothing
    is sent. True when this call did the pass. Without a fresh address a new host has an empty
    postscreen cache too, so call it after every (re)deploy; it is cheap when passed."""
    with smtplib.SMTP(ip, 25, local_hostname=helo, timeout=timeout,
                      source_address=(source, 0) if source else None) as s:
        s.ehlo()
        if s.has_extn("pipelining"):
            return False  # smtpd, not postscreen: passed already
        s.mail("")
        code, text = s.rcpt("postmaster")
        if code != 450:
            raise AssertionError(f"postscreen answered {code} {text!r}, not its one-time 450")
    return True


def smtp_in(ip: str, source: str | None = None, helo: str = "client.elsewhere.test",
            timeout: float = 30) -> smtplib.SMTP:
    """An SMTP session on port 25 as an outside MTA, past postscreen's first-time deferral."""
    pass_postscreen(ip, source, helo, timeout)
    return smtplib.SMTP(ip, 25, local_hostname=helo, timeout=timeout,
                        source_address=(source, 0) if source else None)


def submit(ip: str, user: str, password: str, to: str, subject: str,
           body: str = "hello from the tests\n") -> None:
    """Send as `user` through submission (587, STARTTLS, AUTH)."""
    msg = email.message.EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = user, to, subject
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@{user.partition('@')[2]}>"
    msg.set_content(body)
    with smtplib.SMTP(ip, 587, timeout=30) as smtp:
        smtp.starttls(context=insecure_tls())
        smtp.login(user, password)
        smtp.send_message(msg)


class _SourcedIMAP(imaplib.IMAP4_SSL):
    """IMAPS from a chosen client address (imaplib has no source_address)."""

    def __init__(self, ip: str, source: str, timeout: float):
        self._source = source
        super().__init__(ip, 993, ssl_context=insecure_tls(), timeout=timeout)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self.host, self.port), timeout,
                                        source_address=(self._source, 0))
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


def imap_login(ip: str, user: str, password: str, source: str, timeout: float = 30) -> bool:
    """One IMAPS login from ``source``: True if accepted, False if refused; OSError when the
    connection itself fails (e.g. the address is banned)."""
    with _SourcedIMAP(ip, source, timeout) as imap:
        try:
            imap.login(user, password)
        except imaplib.IMAP4.error:
            return False
        return True


def imap_find(ip: str, user: str, password: str, subject: str, timeout: float = 30) -> bytes | None:
    """Bounded poll of the user's INBOX over IMAPS: the newest message with this subject."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with imaplib.IMAP4_SSL(ip, 993, ssl_context=insecure_tls(), timeout=30) as imap:
            imap.login(user, password)
            imap.select("INBOX", readonly=True)
            _, ids = imap.search(None, "SUBJECT", f'"{subject}"')
            if ids[0]:
                _, data = imap.fetch(ids[0].split()[-1], "(RFC822)")
                return data[0][1]
        time.sleep(0.5)
    return None


def _imap(ip: str, user: str, password: str) -> imaplib.IMAP4_SSL:
    imap = imaplib.IMAP4_SSL(ip, 993, ssl_context=insecure_tls(), timeout=60)
    imap.login(user, password)
    return imap


def append(ip: str, user: str, password: str, messages: list[tuple[str, str, bytes]]) -> None:
    """IMAP APPEND (folder, flags, raw message) for each, creating folders as needed: many
    messages with their flags and folders in seconds, past SMTP's rate limits."""
    with _imap(ip, user, password) as imap:
        folders = {f for f, _, _ in messages}
        for folder in folders - {"INBOX"}:
            imap.create(folder)
        for folder, flags, raw in messages:
            typ, data = imap.append(folder, flags or None, None, raw)
            assert typ == "OK", (typ, data)


def mailbox_state(ip: str, user: str, password: str) -> dict:
    """{folder: {"uidvalidity": n, "messages": {uid: (sorted flags, sha256 of the message)}}}:
    what a mail client sees, and what must survive a host replacement or a restore."""
    import hashlib
    import re
    state = {}
    with _imap(ip, user, password) as imap:
        _, listing = imap.list()
        for line in listing:
            folder = line.decode().rsplit(' "', 1)[-1].rstrip('"') if line.decode().endswith('"') \
                else line.decode().rsplit(" ", 1)[-1]
            if "\\noselect" in line.decode().partition(")")[0].lower():
                continue  # a parent that holds folders, not messages (e.g. "Restored <id>")
            typ, said = imap.select(f'"{folder}"', readonly=True)
            assert typ == "OK", (folder, said)
            _, validity = imap.response("UIDVALIDITY")
            messages = {}
            _, data = imap.uid("FETCH", "1:*", "(FLAGS RFC822)")
            for part in data:
                if not isinstance(part, tuple):
                    continue
                head = part[0].decode()
                uid = int(re.search(r"UID (\d+)", head).group(1))
                flags = tuple(sorted(re.search(r"FLAGS \(([^)]*)\)", head).group(1).split()))
                messages[uid] = (flags, hashlib.sha256(part[1]).hexdigest())
            state[folder] = {"uidvalidity": int(validity[0]), "messages": messages}
    return state
