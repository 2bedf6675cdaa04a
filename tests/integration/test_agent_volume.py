"""Mail is never lost on the host side: real booted containers on one data volume (a directory
of this machine bind-mounted at /srv/mail, as the local backend does).

In order, one story: a host set up by the agent of the release before the volume (mail in
/var/mail/vhosts, a deferred message in /var/spool/postfix) is applied with this agent, which
is SIGKILLed in the middle of moving the mail; the next apply undoes that and moves it; every
old message is served with the same UIDVALIDITY and UIDs and the queued one delivered. Then
the host is replaced: a NEW container (its Postfix user has another uid) on the same volume
serves the old messages the same way and delivers what the old one had queued. Last, an apply
killed right at its file swap converges on the next run.

Needs root, systemd-nspawn, tinyproxy and named, and git (the old agent is built from
LEGACY_AGENT).
"""
import imaplib
import json
import os
import re
import subprocess
import time
import uuid

import pytest

from agent.contract import AGENT, DATA_DIR, JOURNAL, MAIL_DIR, PENDING_DIR, QUEUE_DIR
from components import agent_zipapp
from tests import mailclient
from tests.integration import agenthost as deploy
from tests.integration.agenthost import HELO, OUTSIDER, message, password

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(bool(deploy.tools_missing()), reason="needs systemd-nspawn, tinyproxy, named"),
]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The last commit whose agent keeps the mail in /var/mail/vhosts and /var/spool/postfix.
LEGACY_AGENT = "70f848e1bd26ba9038136eaa4ab149415fe51222"
ALICE, BOB = "alice@example.test", "bob@example.test"
BULK = 2000  # messages in alice's mailbox: enough for a kill to land in the middle of the move
# Runs beside the agent on the host: SIGKILL it once a copy of the move is on the volume.
KILL_MID_MOVE = """
import glob, os, sys, time
pid, deadline = int(sys.argv[1]), time.time() + 300
while time.time() < deadline:
    if glob.glob("/srv/mail/vhosts/*/*/Maildir/cur/.bpm-move-*"):
        os.kill(pid, 9); print("killed"); break
    if not os.path.exists(f"/proc/{pid}"):
        print("finished"); break
    time.sleep(0.002)
"""
KILL_AT_SWAP = """
import os, sys, time
pid, deadline = int(sys.argv[1]), time.time() + 300
while time.time() < deadline:
    try:
        if '"files"' in open("%s").read():
            os.kill(pid, 9); print("killed"); break
    except OSError:
        pass
    if not os.path.exists(f"/proc/{pid}"):
        print("finished"); break
    time.sleep(0.002)
""" % JOURNAL


def legacy_agent(workdir: str) -> str:
    src = os.path.join(workdir, "legacy-src")
    os.makedirs(src)
    archive = subprocess.run(["git", "-C", REPO, "archive", LEGACY_AGENT, "agent", "templates"],
                             capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", src], input=archive.stdout, check=True)
    return agent_zipapp.build(os.path.join(workdir, "legacy-agent.pyz"), root=src)


def mailbox(d, user: str) -> tuple[int, dict]:
    """(UIDVALIDITY, {Message-ID: (UID, flags)}) of the user's INBOX over IMAPS."""
    with imaplib.IMAP4_SSL(d.ip, 993, ssl_context=mailclient.insecure_tls(), timeout=60) as imap:
        imap.login(user, password(user))
        _, status = imap.status("INBOX", "(UIDVALIDITY)")
        validity = int(re.search(rb"UIDVALIDITY (\d+)", status[0]).group(1))
        imap.select("INBOX", readonly=True)
        _, data = imap.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    found = {}
    for item in data:
        if isinstance(item, tuple):
            uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
            flags = re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).decode()
            found[item[1].split(b":", 1)[1].strip().decode()] = (uid, flags)
    return validity, found


def send(d, rcpt: str, subject: str) -> None:
    with mailclient.smtp_in(d.ip, helo=HELO) as s:  # each new host: postscreen anew
        s.sendmail(OUTSIDER, [rcpt], message(OUTSIDER, rcpt, subject))


def queue(d) -> list[dict]:
    _, out, _ = d.run("postqueue -j")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def defer_one(d, rcpt: str) -> str:
    """A message for a local user deferred in the queue (Dovecot's LMTP down meanwhile)."""
    subject = f"queued {uuid.uuid4().hex[:8]}"
    assert d.run("systemctl stop dovecot")[0] == 0
    try:
        send(d, rcpt, subject)
        deadline = time.monotonic() + 60
        while not any(m["queue_name"] == "deferred" for m in queue(d)):
            assert time.monotonic() < deadline, queue(d)
            time.sleep(0.5)
    finally:
        assert d.run("systemctl start dovecot")[0] == 0
    return subject


def flushed(d, user: str, subject: str) -> bytes | None:
    d.run("postqueue -f")
    return mailclient.imap_find(d.ip, user, password(user), subject, timeout=60)


def killed_apply(d, watcher: str) -> str:
    """Start an apply of the pending spec beside ``watcher``, which SIGKILLs it; what it saw."""
    d.put(watcher.encode(), "/root/watch.py", 0o644)
    _, out, _ = d.run(
        f"{AGENT} apply --spec {PENDING_DIR}/spec.json --secrets {PENDING_DIR}/secrets.json "
        "--json --run-id killed >/root/killed.json 2>&1 & python3 /root/watch.py $!; wait",
        timeout=600)
    return out.strip()


def why(report: dict, err: str) -> str:
    return json.dumps(report.get("error"), indent=1) + err[-2000:]


def steps(report: dict) -> dict:
    return {s["name"]: s for s in report["steps"]}


@pytest.fixture(scope="module")
def story(progress):
    d = None
    try:
        d = deploy.up(log=lambda line: progress("volume", line), volume=True)
        yield d, {}
    finally:
        deploy.down(d)


def test_a_host_of_the_release_before_the_volume(story):
    d, seen = story
    d.put(open(legacy_agent(d.workdir), "rb").read(), AGENT, 0o755)
    old_spec = {k: v for k, v in d.spec.items() if k != "volume"}
    rc, report, _, err = d.apply(old_spec, run_id="legacy")
    assert rc == 0, why(report, err)
    send(d, ALICE, "first")
    assert mailclient.imap_find(d.ip, ALICE, password(ALICE), "first") is not None
    maildir = f"/var/mail/vhosts/{deploy.DOMAIN}/alice/Maildir"
    rc, _, err = d.run(f"""python3 -c '
import os
for i in range({BULK}):
    path = "{maildir}/new/1700000000.M%dP1.old" % i
    with open(path, "w") as f:
        f.write("Message-ID: <bulk-%d@example.test>\\r\\nSubject: bulk %d\\r\\n\\r\\n" % (i, i)
                + "x" * 2000 + "\\r\\n")
    os.chown(path, 5000, 5000)
'""")
    assert rc == 0, err
    with imaplib.IMAP4_SSL(d.ip, 993, ssl_context=mailclient.insecure_tls()) as imap:
        imap.login(ALICE, password(ALICE))
        imap.select("INBOX")
        imap.uid("STORE", "1:50", "+FLAGS", r"(\Seen \Flagged)")
    seen["alice"] = mailbox(d, ALICE)
    assert len(seen["alice"][1]) == BULK + 1
    seen["queued"] = defer_one(d, BOB)
    assert d.run("find /var/spool/postfix/deferred -type f | grep -q .")[0] == 0


def test_an_apply_killed_mid_move_is_undone_and_the_mail_moved_by_the_next(story, progress):
    d, seen = story
    deploy_agent = agent_zipapp.build(os.path.join(d.workdir, "bulletproof-agent.pyz"))
    d.put(open(deploy_agent, "rb").read(), AGENT, 0o755)
    d.send_spec(d.spec)
    assert killed_apply(d, KILL_MID_MOVE) == "killed"
    assert d.run(f"test -s {JOURNAL}")[0] == 0
    rc, report, elapsed, err = d.apply(d.spec, run_id="after-kill")
    assert rc == 0, why(report, err)
    by = steps(report)
    assert report["steps"][0]["name"] == "recover", report["steps"][0]
    assert "undid the interrupted apply killed" in by["recover"]["detail"]
    assert re.search(r"move \d+ mail files onto the volume; move 2 queue files",  # + its log
                     by["migrate"]["detail"]), by["migrate"]
    assert "postsuper -s" in by["owners"]["detail"]  # the queue file names to their new inodes
    progress("volume", f"apply after the kill {elapsed:.1f} s: {by['recover']['duration_s']:.1f} s "
                       f"undoing, {by['migrate']['duration_s']:.1f} s moving "
                       f"({by['migrate']['detail']})")
    on_volume = os.path.join(d.volume, "vhosts", deploy.DOMAIN, "alice", "Maildir", "cur")
    assert len(os.listdir(on_volume)) >= BULK  # on this machine's directory: the volume
    assert d.run("find /var/mail/vhosts -type f | grep -q .")[0] == 1  # nothing left behind
    assert d.run(f"test ! -e {JOURNAL}")[0] == 0


def test_the_moved_mail_keeps_uidvalidity_uids_and_flags(story):
    d, seen = story
    assert mailbox(d, ALICE) == seen["alice"]


def test_the_message_queued_before_the_move_is_delivered(story):
    d, seen = story
    assert [m["queue_name"] for m in queue(d)] == ["deferred"]
    assert flushed(d, BOB, seen["queued"]) is not None
    assert queue(d) == []


def test_a_new_host_on_the_old_volume_serves_the_mail_and_delivers_the_queue(story):
    d, seen = story
    seen["alice"] = mailbox(d, ALICE)
    seen["bob"] = mailbox(d, BOB)
    seen["queued"] = defer_one(d, ALICE)
    seen["cert"] = d.run(f"sha256sum {DATA_DIR}/tls/cert.pem")[1].split()[0]
    old_ids = json.load(open(os.path.join(d.volume, "owners.json")))  # on this machine
    deploy.replace(d, "mail2", d.binds())
    # The old host's postfix uid taken on this one: the volume's queue has a stranger's owner.
    assert d.run(f"useradd --system --no-create-home --uid {old_ids['user:postfix']} "
                 "bpm-uid-taken")[0] == 0
    rc, report, _, err = d.apply(d.spec, run_id="new-host")
    assert rc == 0, why(report, err)
    by = steps(report)
    assert by["migrate"]["changed"] is False and by["keys"]["detail"] == "self-signed pair kept"
    assert "postfix set-permissions" in by["owners"]["detail"], by["owners"]
    assert d.run(f"sha256sum {DATA_DIR}/tls/cert.pem")[1].split()[0] == seen["cert"]
    assert mailbox(d, ALICE)[0] == seen["alice"][0]
    assert mailbox(d, BOB) == seen["bob"]
    assert flushed(d, ALICE, seen["queued"]) is not None
    assert mailbox(d, ALICE)[1].items() >= seen["alice"][1].items()  # the old UIDs, and one more
    subject = f"on the new host {uuid.uuid4().hex[:8]}"
    send(d, BOB, subject)
    assert mailclient.imap_find(d.ip, BOB, password(BOB), subject) is not None
    assert d.run(f"stat -c %U {QUEUE_DIR}/active {MAIL_DIR}/{deploy.DOMAIN}")[1].split() == \
        ["postfix", "vmail"]
    new_ids = json.load(open(os.path.join(d.volume, "owners.json")))
    assert new_ids["user:postfix"] != old_ids["user:postfix"]


def test_an_apply_killed_at_its_file_swap_converges_on_the_next_run(story):
    d, _ = story
    changed = json.loads(json.dumps(d.spec))
    changed["limits"]["message_size_limit"] = 5242880
    d.send_spec(changed)
    assert killed_apply(d, KILL_AT_SWAP) == "killed"
    rc, report, _, err = d.apply(changed, run_id="converge")
    assert rc == 0, why(report, err)
    assert report["steps"][0]["name"] == "recover" and "files" in report["steps"][0]["detail"]
    assert d.run("postconf -h message_size_limit")[1].strip() == "5242880"
    rc, report, _, _ = d.apply(changed, run_id="converged")
    assert rc == 0 and report["changed"] is False
    subject = f"after the kill {uuid.uuid4().hex[:8]}"
    send(d, ALICE, subject)
    assert mailclient.imap_find(d.ip, ALICE, password(ALICE), subject) is not None
    rc, out, _ = d.run(f"{AGENT} status --json")
    assert json.loads(out)["healthy"], out
