"""Mail is never lost: on the local default, through the real engine, in file order.

A hostname change is an in-place update; a forced replacement of the host carries its data
volume (every message, its folder, flags and UID; mail that was queued is delivered after);
then the restore drill: back up while mail keeps arriving, `make down`, `make up`, restore.
"""
from __future__ import annotations

import email.utils
import json
import subprocess
import time
import uuid

import pytest

from localcloud import naming, sink
from tests import mailclient
from tests.e2e import stack_fixture
from tests.e2e.pulumi_cli import ROOT

MESSAGES = 300  # per mailbox, over two folders


def _raw(to: str, subject: str, size: int = 2000) -> bytes:
    body = ("x" * 76 + "\r\n") * (size // 78)
    return (f"From: <someone@elsewhere.test>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@elsewhere.test>\r\nDate: {email.utils.formatdate()}\r\n"
            f"\r\n{body}").encode()


def _fill(outs: dict, user: str, count: int, tag: str) -> None:
    flags = ["\\Seen", "\\Seen \\Flagged", "", "\\Answered"]
    mailclient.append(outs["host_ipv4"], user, outs["mail_passwords"][user], [
        ("INBOX" if i % 3 else "Archive", flags[i % 4], _raw(user, f"{tag} {i}")) for i in range(count)])


def _states(outs: dict) -> dict:
    return {u: mailclient.mailbox_state(outs["host_ipv4"], u, outs["mail_passwords"][u]) for u in outs["mail_users"]}


def _count(states: dict) -> int:
    return sum(len(f["messages"]) for s in states.values() for f in s.values())


def _urn(stack, suffix: str) -> str:
    resources = json.loads(stack.run("stack", "export").stdout)["deployment"]["resources"]
    return next(r["urn"] for r in resources if r["urn"].endswith(suffix))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = stack_fixture.create(tmp_path_factory.mktemp("state"))
    try:
        s.timed("first up", "up", "--yes", "--skip-preview")
        outs = s.outputs()
        for user in outs["mail_users"]:
            _fill(outs, user, MESSAGES, "before")
        yield s
    finally:
        stack_fixture.remove(s, purge_backups=True)
        print(f"\n[e2e] durability timings (s): {json.dumps(s.timings)}")


@pytest.fixture(scope="module")
def before(stack):
    return _states(stack.outputs())


def test_the_mail_lives_on_the_data_volume(stack, before):
    outs = stack.outputs()
    assert _count(before) == 2 * MESSAGES
    vhosts = list((naming.volume_dir(outs["data_volume"].rsplit("/", 1)[-1])).rglob("cur"))
    assert vhosts, "no Maildir on the data volume"


def test_a_hostname_change_is_made_in_place_and_keeps_every_message(stack, before):
    doc = stack.config()
    doc["config"]["bulletproof-mail:hostname"] = "mx"
    stack.write_config(doc)
    preview = json.loads(stack.run("preview", "--json").stdout)
    assert not {"replace", "delete"} & set(preview["changeSummary"]), preview["changeSummary"]
    stack.timed("up (hostname)", "up", "--yes", "--skip-preview")
    outs = stack.outputs()
    assert outs["fqdn"] == f"mx.{outs['domain']}"
    assert _states(outs) == before


def test_a_forced_replacement_carries_every_message_and_the_queue(stack, before):
    outs = stack.outputs()
    names = naming.stack_names(stack.name, ROOT)
    host_id = json.loads(stack.run("stack", "export").stdout)
    sink.stop(names.runtime_dir / "sink")  # outbound mail waits in the queue
    try:
        subject = f"queued {uuid.uuid4().hex[:8]}"
        mailclient.submit(outs["host_ipv4"], outs["test_user"], outs["test_password"],
                          "someone@elsewhere.test", subject)
        time.sleep(2)
        stack.timed("up --replace host", "up", "--yes", "--skip-preview", "--replace", _urn(stack, "::mail-host"))
    finally:
        stack.run("up", "--yes", "--skip-preview", "--refresh")  # the sink comes back
    after = stack.outputs()
    assert json.loads(stack.run("stack", "export").stdout) != host_id
    assert _states(after) == before  # every message, folder, flag, UID and UIDVALIDITY
    deadline, found = time.monotonic() + 120, None
    while time.monotonic() < deadline and not found:
        subprocess.run(["true"])
        found = next((m for m in sink.messages(names.runtime_dir / "sink") if subject.encode() in m.raw), None)
        time.sleep(2)
    assert found is not None, "the message queued before the replacement was never delivered"
