"""Mail clients the tests share: TLS toward a self-signed host, submission, IMAPS polling."""
from __future__ import annotations

import email.message
import imaplib
import smtplib
import ssl
import time
import uuid


def insecure_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the hosts under test have self-signed certificates
    return ctx


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
