"""Mail is never lost: on the local default, through the real engine, in file order.

A hostname change is an in-place update; a forced replacement of the host carries its data
volume (every message, its folder, flags and UID; mail that was queued is delivered after);
then the restore drill: back up while mail keeps arriving, `make down`, `make up`, restore.
"""
from __future__ import annotations

import email.utils
import json
import smtplib
import subprocess
import threading
import time
import uuid

import pytest

from localcloud import container, naming, sink
from ops import plan
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


def _resource(stack, suffix: str) -> dict:
    resources = json.loads(stack.run("stack", "export").stdout)["deployment"]["resources"]
    return next(r for r in resources if r["urn"].endswith(suffix))


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
    assert _count(before) == len(before) * MESSAGES  # every mailbox of every domain
    vhosts = list((naming.volume_dir(outs["data_volume"].rsplit("/", 1)[-1])).rglob("cur"))
    assert vhosts, "no Maildir on the data volume"


def test_a_hostname_change_is_made_in_place_and_keeps_every_message(stack, before):
    doc = stack.config()
    doc["config"]["bulletproof-mail:hostname"] = "mx"
    stack.write_config(doc)
    preview = json.loads(stack.run("preview", "--json").stdout)
    # Records named after the host are replaced (mail -> mx); the host and its volume are not.
    assert plan.dangers(preview["steps"]) == [], preview["changeSummary"]
    stack.timed("up (hostname)", "up", "--yes", "--skip-preview")
    outs = stack.outputs()
    assert outs["fqdn"] == f"mx.{outs['domain']}"
    assert _states(outs) == before


def test_a_forced_replacement_carries_every_message_and_the_queue(stack, before):
    outs = stack.outputs()
    names = naming.stack_names(stack.name, ROOT)
    host = _resource(stack, "::mail-host")
    sink.stop(names.runtime_dir / "sink")  # outbound mail waits in the queue
    try:
        subject = f"queued {uuid.uuid4().hex[:8]}"
        mailclient.submit(outs["host_ipv4"], outs["test_user"], outs["test_password"],
                          "someone@elsewhere.test", subject)
        time.sleep(2)
        stack.timed("up --replace host", "up", "--yes", "--skip-preview", "--replace", host["urn"])
    finally:
        stack.run("up", "--yes", "--skip-preview", "--refresh")  # the sink comes back
    after = stack.outputs()
    assert _resource(stack, "::mail-host")["id"] != host["id"], "the host was not replaced"
    assert _states(after) == before  # every message, folder, flag, UID and UIDVALIDITY
    # Deferred while the sink was down (next try in minutes): ask for it now.
    container.run(names, "mail", ["postqueue", "-f"], capture_output=True, text=True)
    deadline, found = time.monotonic() + 120, None
    while time.monotonic() < deadline and not found:
        found = next((m for m in sink.messages(names.runtime_dir / "sink") if subject.encode() in m.raw), None)
        time.sleep(2)
    assert found is not None, "the message queued before the replacement was never delivered"


def _make(stack, target: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """An operator command, as the user types it (`make TARGET STACK=...`)."""
    proc = subprocess.run(["make", "-s", target, f"STACK={stack.name}", *args], cwd=ROOT, env=stack.env,
                          capture_output=True, text=True, timeout=1800)
    if check:
        assert proc.returncode == 0, f"make {target}: " + proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _deliver_while(outs: dict, to: str, busy: threading.Event, sent: list) -> None:
    """Submission to `to` for as long as `busy` is set (at most 20 messages, a few a second), in
    one session (one AUTH: anvil limits AUTH per client): each subject is recorded only once the
    server has answered 250."""
    with smtplib.SMTP(outs["host_ipv4"], 587, timeout=30) as smtp:
        smtp.starttls(context=mailclient.insecure_tls())
        smtp.login(outs["test_user"], outs["test_password"])
        while busy.is_set() and len(sent) < 20:
            subject = f"during backup {len(sent)} {uuid.uuid4().hex[:6]}"
            smtp.sendmail(outs["test_user"], [to], _raw(to, subject))
            sent.append(subject)
            time.sleep(0.3)


def _snapshot_ids(stack) -> list[str]:
    out = _make(stack, "backups").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip() and line != "no snapshots yet"]


def test_the_restore_drill(stack):
    """Back up while mail arrives, `make down` (the backups stay), `make up` (a new, empty
    server), `make restore`: every message is back byte-identical with its folder, flags and
    UID; a one-mailbox restore leaves the other mailbox untouched; bad requests change nothing."""
    outs = stack.outputs()
    ip, pw = outs["host_ipv4"], outs["mail_passwords"]
    other = next(u for u in outs["mail_users"] if u != outs["test_user"])
    busy, sent = threading.Event(), []
    busy.set()
    sender = threading.Thread(target=_deliver_while, args=(outs, other, busy, sent))
    sender.start()
    try:
        time.sleep(1)
        stack.timings["backup during mail"] = _timed(lambda: _make(stack, "backup"))
    finally:
        busy.clear()
        sender.join(120)
    assert sent, "no message was accepted during the backup"
    for subject in sent:  # delivered before the next snapshot is taken
        assert mailclient.imap_find(ip, other, pw[other], subject, timeout=60), subject
    stack.timings["backup after"] = _timed(lambda: _make(stack, "backup"))
    first, latest = _snapshot_ids(stack)[-2:]
    expected = _states(outs)
    assert _count(expected) == len(expected) * MESSAGES + len(sent)

    stack_fixture.unprotect(stack)  # a stack other than local protects its DKIM key
    stack.timings["make down"] = _timed(lambda: _make(stack, "down"))
    stack.timings["make up"] = _timed(lambda: _make(stack, "up"))
    outs = stack.outputs()  # a new stack's mailbox passwords: the restore brings the mail back
    ip, pw = outs["host_ipv4"], outs["mail_passwords"]
    assert _count(_states(outs)) == 0, "a new server after make down starts empty"
    assert _snapshot_ids(stack)[-2:] == [first, latest], "make down must keep the backups"

    # Refusals: one line each, nothing changed.
    for args, said in ((["MAILBOX=nobody@" + outs["domain"]], "unknown mailbox"),
                       (["SNAPSHOT=deadbeef"], "deadbeef")):
        proc = _make(stack, "restore", *args, check=False)
        assert proc.returncode != 0 and said in proc.stderr, proc.stderr
        assert len([l for l in proc.stderr.splitlines() if l.startswith("backup:")]) == 1, proc.stderr
    assert _count(_states(outs)) == 0

    stack.timings["restore whole"] = _timed(lambda: _make(stack, "restore"))
    assert _states(outs) == expected  # byte-identical, same folders, flags, UIDs, UIDVALIDITY

    # One mailbox from the snapshot taken while mail arrived: into a folder of its own, every
    # message whole (one of the live ones, byte for byte), the other mailbox untouched.
    untouched = mailclient.mailbox_state(ip, outs["test_user"], pw[outs["test_user"]])
    proc = _make(stack, "restore", f"MAILBOX={other}", f"SNAPSHOT={first}")
    assert f"Restored {first}" in proc.stdout, proc.stdout
    now = mailclient.mailbox_state(ip, other, pw[other])
    restored = {k: v for k, v in now.items() if k.startswith(f"Restored {first}")}
    live = {k: v for k, v in now.items() if k not in restored}
    assert live == expected[other]
    hashes = {h for f in expected[other].values() for _, h in f["messages"].values()}
    got = [h for f in restored.values() for _, h in f["messages"].values()]
    assert len(got) >= MESSAGES and set(got) <= hashes, (len(got), len(set(got) - hashes))
    assert mailclient.mailbox_state(ip, outs["test_user"], pw[outs["test_user"]]) == untouched


def _timed(fn) -> float:
    start = time.monotonic()
    fn()
    return round(time.monotonic() - start, 1)
