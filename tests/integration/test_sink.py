"""The SMTP sink that plays `elsewhere.test`, spoken to with smtplib as a real client would."""

import ipaddress
import os
import pwd
import random
import smtplib
import socket
from email.message import EmailMessage
from pathlib import Path

import pytest

from localcloud import sink

pytestmark = pytest.mark.integration


def free_address() -> tuple[str, int]:
    # Any 127/8 address works for a Python listener; a random one keeps parallel runs apart.
    ip = f"127.0.0.{random.randint(2, 254)}"
    with socket.socket() as probe:
        probe.bind((ip, 0))
        return ip, probe.getsockname()[1]


@pytest.fixture
def running_sink(request, tmp_path):
    request.addfinalizer(lambda: sink.stop(tmp_path))
    ip, port = free_address()
    pid = sink.start(tmp_path, ip, port)
    return tmp_path, ip, port, pid


def test_message_is_recorded_with_its_envelope(running_sink):
    state, ip, port, _ = running_sink
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example-mail.test", "b@elsewhere.test", "sink test"
    msg.set_content("hello\n.starts with a dot\n")

    with smtplib.SMTP(ip, port, timeout=10) as client:
        client.ehlo("mail.example-mail.test")
        refused = client.send_message(msg, from_addr="bounce@example-mail.test",
                                      to_addrs=["b@elsewhere.test", "c@elsewhere.test"])

    assert refused == {}
    (received,) = sink.messages(state)
    assert received.mail_from == "bounce@example-mail.test"
    assert received.rcpt_tos == ["b@elsewhere.test", "c@elsewhere.test"]
    assert b"Subject: sink test" in received.raw
    assert b"\n.starts with a dot" in received.raw  # dot-stuffing undone


def test_bounce_with_null_sender_is_accepted(running_sink):
    state, ip, port, _ = running_sink
    with smtplib.SMTP(ip, port, timeout=10) as client:
        client.sendmail("<>", ["postmaster@elsewhere.test"], b"Subject: bounce\r\n\r\nreturned\r\n")
    assert [(m.mail_from, m.rcpt_tos) for m in sink.messages(state)] == [("", ["postmaster@elsewhere.test"])]


def test_rcpt_before_mail_is_refused(running_sink):
    _, ip, port, _ = running_sink
    with smtplib.SMTP(ip, port, timeout=10) as client:
        client.ehlo()
        assert client.rcpt("b@elsewhere.test")[0] == 503


@pytest.mark.skipif(os.geteuid() != 0, reason="drops root only when started as root")
def test_runs_as_nobody_once_its_port_is_bound(running_sink):
    state, ip, port, pid = running_sink
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    nobody = pwd.getpwnam(sink.SINK_USER)
    assert status["Uid"].split() == [str(nobody.pw_uid)] * 4
    assert status["Gid"].split() == [str(nobody.pw_gid)] * 4
    assert status["Groups"].split() == []
    with smtplib.SMTP(ip, port, timeout=10) as client:  # and still keeps what it receives
        client.sendmail("a@example-mail.test", ["b@elsewhere.test"], b"Subject: unprivileged\r\n\r\nx\r\n")
    assert [m.raw.split(b"\r\n")[0] for m in sink.messages(state)] == [b"Subject: unprivileged"]


def test_stop_leaves_no_process(running_sink):
    state, _, _, pid = running_sink
    assert sink.stop(state)
    assert not Path(f"/proc/{pid}").exists()
    assert not sink.stop(state)  # idempotent


def test_listens_on_ipv6_too_and_records_each_peer(request, tmp_path):
    request.addfinalizer(lambda: sink.stop(tmp_path))
    ip, port = free_address()
    sink.start(tmp_path, ip, port, ipv6="::1")
    for host, subject in ((ip, "over v4"), ("::1", "over v6")):
        with smtplib.SMTP(host, port, timeout=10) as client:
            client.sendmail("a@example-mail.test", ["b@elsewhere.test"], f"Subject: {subject}\r\n\r\nx\r\n".encode())
    received = [(ipaddress.ip_address(m.peer), m.raw.split(b"\r\n")[0]) for m in sink.messages(tmp_path)]
    assert [(a.version, a.is_loopback, first) for a, first in received] == [
        (4, True, b"Subject: over v4"), (6, True, b"Subject: over v6")]
