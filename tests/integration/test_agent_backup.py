"""Backups with a tested restore (issue "Mail is never lost"), on a real booted container: the
agent applied with a backup section (a local restic repository inside the container), real
mail delivered over SMTP, flags and folders set over IMAP, then backups and restores with the
agent's own commands and the mail compared file by file and over IMAP.

The mail state is on the data volume: a directory of this machine bind-mounted at DATA_DIR
(spec volume.kind mounted, as the local stack does), so the whole-server restore works on a
mount point. The backed-up directories come from the snapshot (DATA_DIR, whole), the
mailboxes from `doveadm user -f home`, the queue from `postconf -h queue_directory`.
Traffic stays on the project's bridge (a deferred message's MX is the bridge's own address,
where nothing listens). Needs root, systemd-nspawn, tinyproxy and named.
"""
import imaplib
import json
import os
import re
import time
import uuid

import pytest

from agent.contract import DATA_DIR, MAIL_DIR, QUEUE_DIR, TLS_CERT, TLS_KEY
from tests import mailclient
from tests.integration import agenthost as deploy
from tests.integration.agenthost import HELO, OUTSIDER, message, password

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(bool(deploy.tools_missing()), reason="needs systemd-nspawn, tinyproxy, named"),
]
STACK = "itest-backup"
REPO = "/srv/backup/repo"
BACKUP_PASSWORD = f"itest-{uuid.uuid4().hex}"
ALICE, BOB = (f"{u}@{deploy.DOMAIN}" for u in ("alice", "bob"))
FLAGS = {"\\Seen", "\\Flagged"}
# Dovecot's rebuildable cache: the only mail file the byte-for-byte comparison leaves out.
CACHES = ("dovecot.index.cache",)
# The queue's runtime entries: sockets, FIFOs, pid files (never backed up; the daemons make
# them again at start). Queue files (and their defer/bounce logs) are compared by content:
# `postsuper -s` renames a restored one to its new inode number.
QUEUE_RUNTIME = ("private", "public", "pid", "ratelimit")
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt", "defer", "bounce",
          "trace", "flush", "saved")
MANIFEST = r"""
import hashlib, json, os, sys
out = {}
for top in sys.argv[1:]:
    for d, dirs, names in os.walk(top):
        dirs[:] = [x for x in dirs if not x.startswith(".bpm-")]
        for n in names:
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                st = os.lstat(p)
                out[p] = [hashlib.sha256(open(p, "rb").read()).hexdigest(), st.st_uid,
                          oct(st.st_mode & 0o7777)]
print(json.dumps(out))
"""


def _tune(spec):
    spec["backup"] = {"repository": REPO, "password": BACKUP_PASSWORD, "interval_min": 60}


@pytest.fixture(scope="module")
def host():
    d = None
    try:
        d = deploy.up(stack=STACK, log=lambda line: None, tune=_tune, volume=True)
        rc, report, _, err = d.apply(d.spec, run_id="itest-backup")
        assert rc == 0, json.dumps(report, indent=1)[-3000:] + err[-2000:]
        d.put(MANIFEST.encode(), "/root/manifest.py", 0o600)
        d.saved = {}
        yield d
    finally:
        deploy.down(d, stack=STACK)


def agent(host, args: str, timeout: float = 600) -> tuple[int, str, str]:
    return host.run(f"{deploy.AGENT} backup {args}", timeout=timeout)


def manifest(host, dirs) -> dict:
    rc, out, err = host.run("python3 /root/manifest.py " + " ".join(dirs))
    assert rc == 0, err
    return json.loads(out)


def home(host, user) -> str:
    rc, out, err = host.run(f"doveadm user -f home {user}")
    assert rc == 0 and out.strip(), err
    return out.strip()


def queue_dir(host) -> str:
    return host.run("postconf -h queue_directory")[1].strip()


def imap(user) -> imaplib.IMAP4_SSL:
    c = imaplib.IMAP4_SSL(deploy_ip[0], 993, ssl_context=mailclient.insecure_tls(), timeout=30)
    c.login(user, password(user))
    return c


deploy_ip = [None]  # set by the first test: imap() needs the host's address


def folders(c) -> list[str]:
    _, rows = c.list()
    return sorted(re.match(rb'\(.*?\) "/" (.*)', r).group(1).decode().strip('"') for r in rows)


def imap_state(user) -> dict:
    """{folder: (UIDVALIDITY, [(UID, flags, subject)])} over IMAP, read-only."""
    out = {}
    with imap(user) as c:
        for name in folders(c):
            typ, exists = c.select(f'"{name}"', readonly=True)
            if typ != "OK":
                continue
            validity = int(c.response("UIDVALIDITY")[1][0])
            data = c.fetch("1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1] \
                if int(exists[0]) else []
            rows = []
            for item in data:
                if isinstance(item, tuple):
                    uid = int(re.search(rb"UID (\d+)", item[0]).group(1))
                    flags = set(re.search(rb"FLAGS \(([^)]*)\)", item[0]).group(1).decode().split())
                    subject = item[1].decode().strip().partition(": ")[2]
                    rows.append((uid, sorted(flags - {"\\Recent"}), subject))
            out[name] = (validity, sorted(rows))
    return out


def deliver(host, user, subject):
    with mailclient.smtp_in(host.ip, helo=HELO) as s:
        s.sendmail(OUTSIDER, [user], message(OUTSIDER, user, subject))
    assert mailclient.imap_find(host.ip, user, password(user), subject) is not None


def one_line(err: str) -> str:
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    return lines[0]


def mail_dirs(host) -> list[str]:
    """The directories the backups hold, as the newest snapshot names them."""
    rc, out, err = agent(host, "snapshots --json")
    assert rc == 0, err
    return json.loads(out)[-1]["paths"]


# --- apply -------------------------------------------------------------------------------
def test_apply_enables_the_timers_and_keeps_the_secrets_root_only(host):
    deploy_ip[0] = host.ip
    volume = next(s for s in host.reports[0]["steps"] if s["name"] == "volume")
    assert volume["detail"] == f"{DATA_DIR} in place (mounted)", volume
    assert queue_dir(host) == QUEUE_DIR and home(host, BOB).startswith(f"{MAIL_DIR}/")
    for timer in ("bulletproof-backup", "bulletproof-backup-prune", "bulletproof-backup-check"):
        rc, out, _ = host.run(f"systemctl is-enabled {timer}.timer; systemctl is-active {timer}.timer")
        assert rc == 0 and out.split() == ["enabled", "active"], (timer, out)
    rc, out, _ = host.run("systemctl show -p TimersCalendar -p Persistent bulletproof-backup.timer")
    assert "OnCalendar=*-*-* *:00:00" in out and "Persistent=yes" in out, out
    rc, out, _ = host.run("stat -c '%a %U %n' /etc/bulletproof-mail/backup/*")
    assert sorted(out.split("\n")[:2]) == ["600 root /etc/bulletproof-mail/backup/password",
                                           "600 root /etc/bulletproof-mail/backup/restic.env"], out
    rc, out, _ = host.run("cat /etc/bulletproof-mail/spec.json; ps -eo args")
    assert BACKUP_PASSWORD not in out and REPO in out


def test_status_is_in_its_grace_period_before_the_first_backup(host):
    rc, out, _ = host.run(f"{deploy.AGENT} status --json")
    (check,) = [c for c in json.loads(out)["checks"] if c["name"] == "backup"]
    assert check["level"] == "pass" and "no snapshot yet" in check["reason"], check


# --- backup, and one mailbox restored live --------------------------------------------------
def _populate(host):
    for i in range(2):
        deliver(host, ALICE, f"alice msg {i}")
    for i in range(3):
        deliver(host, BOB, f"bob msg {i}")
    with imap(BOB) as c:
        c.select("INBOX")
        assert c.store("1", "+FLAGS", "(\\Seen \\Flagged)")[0] == "OK"
        assert c.create("Work")[0] == "OK"
        assert c.copy("2", "Work")[0] == "OK"
        c.select("Work")
        assert c.store("1", "+FLAGS", "(\\Seen \\Flagged)")[0] == "OK"
    # A message held in the queue (its MX is the bridge's address, where nothing listens).
    mailclient.submit(host.ip, ALICE, password(ALICE), OUTSIDER, "held in the queue")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and '"deferred"' not in host.run("postqueue -j")[1]:
        time.sleep(0.5)
    assert host.run("postsuper -h ALL deferred")[0] == 0
    assert '"hold"' in host.run("postqueue -j")[1]


def test_backup_then_one_mailbox_restore_brings_a_deleted_message_back(host):
    _populate(host)
    before_imap = {u: imap_state(u) for u in (ALICE, BOB)}
    rc, out, err = agent(host, "run --json")
    assert rc == 0, err
    first = json.loads(out)
    assert first["repository_created"] is True and first["bytes_added"] > 0
    dirs = mail_dirs(host)
    assert dirs == [DATA_DIR]  # the data volume, whole: mail, queue, TLS pair, owners
    # Nothing touched the store since the backup: this is what the snapshot holds.
    host.saved.update(snapshot=first["snapshot_id"], imap=before_imap, dirs=dirs,
                      files=manifest(host, dirs))

    alice_before = manifest(host, [home(host, ALICE)])
    with imap(BOB) as c:  # the flagged message in Work, deleted for good
        c.select("Work")
        c.store("1", "+FLAGS", "(\\Deleted)")
        c.expunge()
    bob_inbox = imap_state(BOB)["INBOX"]
    rc, out, err = agent(host, "restore --mailbox bob@example.test --snapshot latest")
    assert rc == 0, err
    folder = f"Restored {first['snapshot_id']}"
    assert f"into '{folder}'" in out, out

    after = imap_state(BOB)
    assert after[f"{folder}/Work"][1] and [(f, s) for _, f, s in after[f"{folder}/Work"][1]] \
        == [(sorted(FLAGS), "bob msg 1")]
    assert after["Work"][1] == []                       # the live folder is untouched
    assert after["INBOX"] == bob_inbox                  # same UIDVALIDITY, UIDs, flags
    restored_inbox = {s: f for _, f, s in after[f"{folder}/INBOX"][1]}
    assert restored_inbox == {"bob msg 0": sorted(FLAGS), "bob msg 1": [], "bob msg 2": []}
    assert after[f"{folder}/Work"][0] != after["Work"][0]  # its own UIDs, never the live ones
    assert manifest(host, [home(host, ALICE)]) == alice_before  # the other mailbox: untouched
    assert not [n for n in os.listdir(host.volume) if n.startswith(".bpm-")]  # staging removed


# --- refusals ----------------------------------------------------------------------------
def _untouched(host) -> tuple:
    pids = host.run("systemctl show -p MainPID --value postfix@- dovecot")[1]
    repo = host.run(f"find {REPO} -type f | sort | xargs sha256sum")[1]
    return manifest(host, host.saved["dirs"]), pids, repo


def test_wrong_password_missing_snapshot_unknown_mailbox_each_one_line_nothing_changed(host):
    before = _untouched(host)
    pw = "/etc/bulletproof-mail/backup/password"
    assert host.run(f"cp -p {pw} {pw}.good && echo wrong-password-123 > {pw}")[0] == 0
    try:
        for args in ("restore", "run", "snapshots"):
            rc, _, err = agent(host, args)
            assert rc == 1 and one_line(err) == (
                f"backup: wrong repository password for {REPO}; fix: set backup_password in "
                "secrets.json to the password this repository was created with, then apply")
    finally:
        assert host.run(f"mv {pw}.good {pw}")[0] == 0
    rc, _, err = agent(host, "restore --snapshot deadbeef")
    assert rc == 1 and one_line(err).startswith(
        f"backup: snapshot deadbeef not found in {REPO}; fix: `bulletproof-agent backup "
        "snapshots` lists them")
    rc, _, err = agent(host, "restore --mailbox carol@example.test")
    assert rc == 1 and one_line(err) == (
        "backup: unknown mailbox carol@example.test: not a user of the applied spec; fix: give "
        "one of alice@example.test, bob@example.test")
    assert _untouched(host) == before  # the mail, the daemons, the repository (not re-created)


# --- the whole server ----------------------------------------------------------------------
def _comparable(files: dict, queue: str) -> tuple[dict, list]:
    """(path -> [sha, uid, mode]) without the caches and the queue's runtime entries, and the
    queue files apart: [(queue, sha, uid, mode)]."""
    skip = tuple(f"{queue}/{d}/" for d in QUEUE_RUNTIME)
    queued = tuple(f"{queue}/{d}/" for d in QUEUES)
    keep = {p: v for p, v in files.items()
            if os.path.basename(p) not in CACHES and not p.startswith(skip + queued)}
    held = sorted((p[len(queue) + 1:].split("/")[0], *v) for p, v in files.items()
                  if p.startswith(queued))
    return keep, held


def mount_of(host, path) -> str:
    """The mount at ``path`` (its source and target), "" when ``path`` is no mount point."""
    return host.run(f"findmnt -n -o SOURCE,TARGET --mountpoint {path}")[1].strip()


def test_whole_server_restore_into_an_emptied_store_is_byte_identical(host, progress):
    queue, saved = queue_dir(host), host.saved
    mail_root = os.path.dirname(os.path.dirname(home(host, BOB)))
    mount = mount_of(host, DATA_DIR)
    assert mount, f"{DATA_DIR} is no mount point"  # rename across it is impossible
    # Emptied: the mailboxes, the held message, the volume's record of its owners; and a file
    # the snapshot does not have, at the volume's top.
    assert host.run(f"systemctl stop postfix dovecot && rm -rf {mail_root}/* "
                    f"{queue}/hold/* {DATA_DIR}/owners.json && echo later > {DATA_DIR}/stray "
                    "&& systemctl start dovecot postfix")[0] == 0
    assert host.run(f"ls -A {mail_root}")[1].strip() == ""
    rc, out, err = agent(host, f"restore --snapshot {saved['snapshot']}")
    assert rc == 0, err
    assert f"restored {DATA_DIR} from snapshot {saved['snapshot']}" in out, out
    restored = manifest(host, saved["dirs"])  # before any IMAP client touches the indexes
    # Swapped inside the volume, which stays the same mount: what was there is kept aside on
    # it (this machine's directory), nothing of the restore is left beside it.
    assert mount_of(host, DATA_DIR) == mount
    (aside,) = [n for n in os.listdir(host.volume) if n.startswith(".bpm-")]
    assert aside.startswith(".bpm-pre-restore-") and f"{DATA_DIR}/{aside}" in out, out
    assert open(os.path.join(host.volume, aside, "stray")).read() == "later\n"
    assert not os.path.exists(os.path.join(host.volume, "stray"))
    assert os.path.isdir(os.path.join(host.volume, "vhosts", deploy.DOMAIN, "bob", "Maildir"))
    want, want_held = _comparable(saved["files"], queue)
    got, got_held = _comparable(restored, queue)
    assert sorted(set(want) ^ set(got)) == []
    assert {f"{DATA_DIR}/owners.json", TLS_CERT, TLS_KEY} <= set(got)  # the volume's top too
    assert {p: v for p, v in got.items() if want[p] != v} == {}
    assert got_held == want_held and [q[0] for q in got_held].count("hold") == 1
    caches = [p for p in restored if os.path.basename(p) in CACHES]
    progress("backup", f"whole restore: {len(got)} files identical by path, sha256, owner and "
                       f"mode; {len(got_held)} queue files by content; left out: "
                       f"{len(caches)} {'/'.join(CACHES)}")
    assert imap_state(ALICE) == saved["imap"][ALICE]
    assert imap_state(BOB) == saved["imap"][BOB]        # UIDVALIDITY, UIDs and flags as before
    held = [json.loads(l) for l in host.run("postqueue -j")[1].splitlines()]
    assert [(m["queue_name"], m["recipients"][0]["address"]) for m in held] == [("hold", OUTSIDER)]
    deliver(host, BOB, f"after the restore {uuid.uuid4().hex[:6]}")  # and the mail flows


# --- the jobs the timers run ---------------------------------------------------------------
def test_a_stale_lock_of_a_killed_run_is_cleared_by_the_next_job(host):
    # A backup reading a FIFO nobody writes to holds its lock until it is killed (by its PID).
    holder = ("set -a; . /etc/bulletproof-mail/backup/restic.env; set +a; "
              "f=$(mktemp -u); mkfifo $f; "
              "restic backup --stdin --stdin-filename held <$f >/dev/null 2>&1 & pid=$!; "
              "exec 3>$f; "
              f"for i in $(seq 100); do ls {REPO}/locks | grep -q . && break; sleep 0.2; done; "
              f"kill -9 $pid; wait $pid; exec 3>&-; rm -f $f; ls {REPO}/locks")
    rc, out, _ = host.run(holder)
    assert out.split(), "the killed run left no lock to clear"
    rc, _, err = agent(host, "check")  # an exclusive lock: refused by restic without unlock
    assert rc == 0, err
    assert host.run(f"ls {REPO}/locks")[1].strip() == ""


def test_the_timers_services_run_backup_prune_and_check(host):
    for unit in ("bulletproof-backup", "bulletproof-backup-prune", "bulletproof-backup-check"):
        rc, out, err = host.run(f"systemctl start {unit}.service", timeout=900)
        assert rc == 0, host.run(f"journalctl -u {unit} -n 20 --no-pager")[1]
    rc, out, _ = host.run("cat /var/lib/bulletproof-mail/backup.json")
    last = json.loads(out)["last"]
    assert last["ok"] and last["snapshot_id"] and last["duration_s"] >= 0
    rc, out, _ = agent(host, "snapshots --json")
    snaps = json.loads(out)
    assert rc == 0 and snaps and all(s["id"] and s["time"] and s["size"] > 0 for s in snaps)
    assert last["snapshot_id"] in [s["short_id"] for s in snaps]


def test_status_reports_the_newest_snapshot_and_fails_when_it_is_old(host):
    rc, out, _ = host.run(f"{deploy.AGENT} status --json")
    (check,) = [c for c in json.loads(out)["checks"] if c["name"] == "backup"]
    assert check["level"] == "pass" and "newest snapshot" in check["reason"], check
    state = "/var/lib/bulletproof-mail/backup.json"
    old = ("import json, sys; p = sys.argv[1]; d = json.load(open(p)); "
           "d['last_ok']['finished_at'] = '2000-01-01T00:00:00+00:00'; "
           "json.dump(d, open(p, 'w'))")
    assert host.run(f"cp -p {state} {state}.keep && python3 -c \"{old}\" {state}")[0] == 0
    try:
        rc, out, _ = host.run(f"{deploy.AGENT} status --json")
        (check,) = [c for c in json.loads(out)["checks"] if c["name"] == "backup"]
        assert rc == 1 and check["level"] == "fail" and check["fix"], check
    finally:
        host.run(f"mv {state}.keep {state}")
