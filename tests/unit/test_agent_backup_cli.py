"""bulletproof-agent backup: the command line, the refusals (one line, nothing changed), the jobs
and restores against a fake restic and a fake host on a temporary root, the status check and
the apply step's decisions."""
import errno
import json
import os
import posixpath
import subprocess

import pytest

from agent import backup_cli, backup_restore, backup_step, checks_backup
from agent import backup_config as B
from agent import restic as R
from agent.contract import DATA_DIR, MAIL_DIR, QUEUE_DIR, TLS_CERT
from agent.errors import BackupError
from agent.host import Host
from agent.verdict import FAIL, PASS, WARN

from agent.migrate import LEGACY_MAIL_DIR, LEGACY_QUEUE_DIR, LEGACY_TLS_CERT

REPO = "/srv/backup/repo"
USERS = ("alice@example.test", "bob@example.test")
TLS_DIR = posixpath.dirname(TLS_CERT)
# The mail, the queue and the TLS pair all on the data volume: DATA_DIR is backed up whole.
SNAP = {"id": "abcd1234" + "0" * 56, "short_id": "abcd1234", "time": "2026-01-02T03:04:05.123456789Z",
        "paths": [DATA_DIR], "hostname": "mail"}
# Where they were before the data volume (three directories backed up each): another layout.
LEGACY_DIRS = (LEGACY_MAIL_DIR, LEGACY_QUEUE_DIR, posixpath.dirname(LEGACY_TLS_CERT))
SUMMARY = {"message_type": "summary", "snapshot_id": "abcd1234", "data_added": 2048,
           "total_files_processed": 3, "total_bytes_processed": 6144}


class FakeHost(Host):
    """A temporary root whose commands are recorded, and answered from ``answers``."""
    def __init__(self, root, answers=None):
        super().__init__(root=str(root))
        self.calls, self.answers = [], answers or {}

    def run(self, argv, *, check=True, timeout=600, env=None, input=None):
        self.calls.append(list(argv))
        rc, out = self.answers.get(tuple(argv[:2]), (1 if argv[1:2] == ["is-active"] else 0, ""))
        if check and rc:
            raise subprocess.CalledProcessError(rc, argv, out, "failed")
        return subprocess.CompletedProcess(argv, rc, out, "")


class FakeRestic:
    """subprocess.run for restic: answers by subcommand; records argv and environment."""
    def __init__(self, **answers):
        self.answers, self.calls, self.envs = answers, [], []

    def __call__(self, argv, **kw):
        self.calls.append(argv[1:])
        self.envs.append(kw["env"])
        answer = self.answers.get(argv[1], (0, "", ""))
        return subprocess.CompletedProcess(argv, *(answer(argv) if callable(answer) else answer))

    def commands(self):
        return [c[0] for c in self.calls]


WRONG_PW = (1, "", "Fatal: wrong password or no key found\n")
NO_REPO = (1, "", f"Fatal: unable to open config file: stat {REPO}/config: no such file or "
                  f"directory\nIs there a repository at the following location?\n{REPO}\n")


@pytest.fixture
def root(tmp_path):
    spec = {"domain": "example.test", "users": [{"address": u} for u in USERS],
            "backup": {"repository": REPO, "interval_min": 60}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = tmp_path / B.ENV_FILE.lstrip("/")
    env.parent.mkdir(parents=True)
    env.write_text(f"# x\nRESTIC_REPOSITORY={REPO}\nRESTIC_PASSWORD_FILE={B.PASSWORD_FILE}\n")
    return tmp_path


def at(root, path: str):
    """``path`` of the host, under the temporary root."""
    return root / path.lstrip("/")


def cli(root, argv, restic, host=None):
    host = host or FakeHost(root)
    rc = backup_cli.main([*argv, "--spec", str(root / "spec.json")], host=host, runner=restic)
    return rc, host


def lines(text):
    return [l for l in text.splitlines() if l.strip()]


# -- the command line ----------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["restore", "--snapshot", "not-hex!"],
                                  ["restore", "--mailbox", "not an address"],
                                  ["run", "--mailbox", "alice@example.test"],
                                  ["snapshots", "--snapshot", "latest"], ["rewind"]])
def test_a_wrong_command_line_exits_2(root, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli(root, argv, FakeRestic())
    assert exc.value.code == 2


def test_without_a_backup_section_it_says_so_in_one_line(root, capsys):
    (root / "spec.json").write_text(json.dumps({"users": []}))
    rc, _ = cli(root, ["run"], restic := FakeRestic())
    err = lines(capsys.readouterr().err)
    assert rc == 2 and len(err) == 1 and "has no backup section; fix: add a backup" in err[0]
    assert restic.calls == []


# -- the refusals: one line, exit 1, nothing changed ---------------------------------------
def test_wrong_password_is_one_line_and_nothing_is_stopped(root, capsys):
    rc, host = cli(root, ["restore"], restic := FakeRestic(snapshots=WRONG_PW))
    (err,) = lines(capsys.readouterr().err)
    assert rc == 1 and err == (f"backup: wrong repository password for {REPO}; fix: set "
                               "backup_password in secrets.json to the password this repository "
                               "was created with, then apply")
    assert restic.commands() == ["snapshots"] and host.calls[1:] == []  # only postconf


def test_missing_snapshot_is_one_line_and_nothing_is_restored(root, capsys):
    restic = FakeRestic(snapshots=(0, json.dumps([SNAP]), ""))
    rc, host = cli(root, ["restore", "--snapshot", "deadbeef"], restic)
    (err,) = lines(capsys.readouterr().err)
    assert rc == 1 and err.startswith(f"backup: snapshot deadbeef not found in {REPO}; fix: "
                                      "`bulletproof-agent backup snapshots` lists them")
    assert "restore" not in restic.commands() and host.calls[1:] == []


def test_unknown_mailbox_is_refused_before_the_repository_is_asked(root, capsys):
    rc, host = cli(root, ["restore", "--mailbox", "carol@example.test"], restic := FakeRestic())
    (err,) = lines(capsys.readouterr().err)
    assert rc == 1 and err == ("backup: unknown mailbox carol@example.test: not a user of the "
                               "applied spec; fix: give one of alice@example.test, "
                               "bob@example.test")
    assert restic.calls == [] and host.calls[1:] == []


def test_refusals_in_json_carry_message_and_fix(root, capsys):
    rc, _ = cli(root, ["restore", "--json"], FakeRestic(snapshots=WRONG_PW))
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["status"] == "failed"
    assert out["error"]["message"] == f"wrong repository password for {REPO}"
    assert out["error"]["fix"].startswith("set backup_password")


# -- backup run ----------------------------------------------------------------------------
def backup_ok(argv):
    return 0, json.dumps({"message_type": "status"}) + "\n" + json.dumps(SUMMARY) + "\n", ""


def test_first_backup_creates_the_repository_and_records_the_result(root, capsys):
    restic = FakeRestic(unlock=NO_REPO, backup=backup_ok)
    rc, _ = cli(root, ["run"], restic)
    assert rc == 0 and restic.commands() == ["unlock", "init", "backup"]
    assert "repository created" in capsys.readouterr().out
    result = json.loads((root / B.RESULT_FILE.lstrip("/")).read_text())
    assert result["last"] == result["last_ok"]
    assert {k: result["last"][k] for k in ("ok", "snapshot_id", "bytes_added")} == \
        {"ok": True, "snapshot_id": "abcd1234", "bytes_added": 2048}
    assert oct(os.stat(root / B.RESULT_FILE.lstrip("/")).st_mode & 0o777) == "0o600"


def test_a_wrong_password_never_creates_a_repository(root, capsys):
    rc, _ = cli(root, ["run"], restic := FakeRestic(unlock=WRONG_PW))
    assert rc == 1 and restic.commands() == ["unlock"]
    last = json.loads((root / B.RESULT_FILE.lstrip("/")).read_text())
    assert last["last"]["ok"] is False and "wrong repository password" in last["last"]["error"]
    assert last["last_ok"] is None


def test_backup_gets_its_password_from_the_file_never_the_command_line(root, capsys):
    restic = FakeRestic(backup=backup_ok)
    cli(root, ["run"], restic)
    backup = restic.calls[-1]
    assert restic.envs[-1]["RESTIC_PASSWORD_FILE"] == B.PASSWORD_FILE
    assert not [a for a in backup if "password" in a.lower()]
    excludes = [a.split("=", 1)[1] for a in backup if a.startswith("--exclude=")]
    last_option = max(i for i, a in enumerate(backup) if a.startswith("-"))
    assert backup[last_option + 1:] == [DATA_DIR]          # the data volume, whole
    assert f"{MAIL_DIR}/*/*/Maildir/tmp" in excludes      # half-delivered messages
    assert f"{MAIL_DIR}/*/*/Maildir/.*/tmp" in excludes
    for runtime in ("private/*", "public/*", "pid/*", "ratelimit"):  # the daemons' sockets
        assert f"{QUEUE_DIR}/{runtime}" in excludes
    assert f"{DATA_DIR}/.bpm-*" in excludes               # what a restore parks beside it


def test_files_that_vanish_while_read_are_a_note_not_a_failure(root, capsys):
    restic = FakeRestic(backup=lambda a: (3, json.dumps(SUMMARY), "error: lstat x: no such file"))
    rc, _ = cli(root, ["run"], restic)
    assert rc == 0 and "1 files changed while read" in capsys.readouterr().out


@pytest.mark.parametrize("repo", [f"{MAIL_DIR}/repo", f"{DATA_DIR}/restic",
                                  posixpath.dirname(DATA_DIR)])
def test_a_local_repository_inside_the_mail_is_refused(root, capsys, repo):
    (root / "spec.json").write_text(json.dumps({"users": [], "backup": {"repository": repo}}))
    rc, _ = cli(root, ["run"], restic := FakeRestic())
    assert rc == 1 and restic.calls == []
    assert "lies inside or above what is backed up" in capsys.readouterr().err


def test_layout_backs_up_the_data_volume_whole_once_everything_is_there():
    legacy = B.Layout(*LEGACY_DIRS)
    assert legacy.sources == LEGACY_DIRS
    volume = B.Layout(MAIL_DIR, QUEUE_DIR, TLS_DIR)
    assert volume.sources == (DATA_DIR,)
    assert f"{DATA_DIR}/vhosts/*/*/Maildir/tmp" in volume.excludes()
    assert f"{DATA_DIR}/.bpm-*" in volume.excludes()
    assert volume.maildir("bob@example.test") == f"{DATA_DIR}/vhosts/example.test/bob/Maildir"


# -- snapshots, prune ----------------------------------------------------------------------
def test_snapshots_json_lists_id_time_size_asking_each_size_once(root, capsys):
    restic = FakeRestic(snapshots=(0, json.dumps([SNAP]), ""),
                        stats=(0, json.dumps({"total_size": 6144}), ""))
    for _ in range(2):
        assert cli(root, ["snapshots", "--json"], restic)[0] == 0
    (snap,) = json.loads(capsys.readouterr().out.split("\n]\n")[0] + "\n]")
    assert (snap["id"], snap["time"], snap["size"]) == (SNAP["id"], "2026-01-02T03:04:05+00:00",
                                                        6144)
    assert restic.commands() == ["snapshots", "stats", "snapshots"]


def test_prune_keeps_the_retention_by_host_and_tag(root, capsys):
    forget = (0, json.dumps([{"remove": [SNAP], "keep": []}]) + "\n", "")
    restic = FakeRestic(forget=forget)
    assert cli(root, ["prune"], restic)[0] == 0
    args = restic.calls[-1]
    assert args[:3] == ["forget", "--json", "--prune"]
    assert {"--keep-hourly=24", "--keep-daily=7", "--keep-weekly=4", "--keep-monthly=6"} <= \
        set(args) and "host,tags" in args
    assert "removed 1 snapshots" in capsys.readouterr().out


def test_prune_and_check_before_the_first_backup_have_nothing_to_do(root, capsys):
    for action in ("prune", "check"):
        restic = FakeRestic(unlock=NO_REPO)
        assert cli(root, [action], restic)[0] == 0 and restic.commands() == ["unlock"]


def test_restic_errors_name_the_repository_and_keep_what_it_said():
    err = R.classify("backup", REPO, "Fatal: unable to create lock in backend: repository is "
                                     "already locked exclusively by PID 7")
    assert err.message == f"the repository {REPO} is locked by another restic run"
    assert "PID 7" in err.tool_output
    other = R.classify("check", REPO, "Fatal: repository contains errors")
    assert other.message == f"restic check failed for {REPO}" and other.tool_output


# -- restores on a temporary root ----------------------------------------------------------
def restores_into(tree: dict):
    """restic restore: write ``tree`` (path in the snapshot -> content) under the target."""
    def answer(argv):
        target = argv[argv.index("--target") + 1]
        includes = [a.split("=", 1)[1] for a in argv if a.startswith("--include=")]
        for path, data in tree.items():
            if any(path.startswith(i + "/") for i in includes):
                os.makedirs(os.path.dirname(target + path), exist_ok=True)
                open(target + path, "w").write(data)
        return 0, "", ""
    return answer


def job_for(root, restic, host):
    return backup_cli.load_job(str(root / "spec.json"), host, restic)


def on_a_mount_point(root, monkeypatch):
    """DATA_DIR as a mount point: os.rename across its boundary fails (EXDEV), and the mount
    point itself cannot be renamed (EBUSY). Returns the renames made, (old, new)."""
    top, real, done = str(at(root, DATA_DIR)), os.rename, []

    def rename(old, new):
        old, new = os.fspath(old), os.fspath(new)
        if top in (old, new):
            raise OSError(errno.EBUSY, "Device or resource busy", old)
        if not all(p.startswith(top + "/") for p in (old, new)):
            raise OSError(errno.EXDEV, "Invalid cross-device link", old)
        real(old, new)
        done.append((old, new))
    monkeypatch.setattr(backup_restore.os, "rename", rename)
    return done


def live_server(root):
    """The data volume as it is now: mail that arrived after the snapshot, the queue, the
    TLS pair, the filesystem's own lost+found (never swapped); Postfix's master.cf."""
    cur = at(root, f"{MAIL_DIR}/example.test/bob/Maildir/cur")
    cur.mkdir(parents=True)
    (cur / "newer").write_text("arrived after the snapshot")
    for d in (f"{QUEUE_DIR}/hold", TLS_DIR, f"{DATA_DIR}/lost+found", "/etc/postfix"):
        at(root, d).mkdir(parents=True, exist_ok=True)
    at(root, f"{DATA_DIR}/lost+found/#1234").write_text("fsck's")
    at(root, f"{DATA_DIR}/stray").write_text("made after the snapshot")
    at(root, "/etc/postfix/master.cf").write_text("# master.cf\n")
    return cur


SNAP_TREE = {f"{MAIL_DIR}/example.test/bob/Maildir/cur/m1": "old mail",
             f"{QUEUE_DIR}/hold/ABC": "queued", TLS_CERT: "c", f"{DATA_DIR}/owners.json": "{}",
             f"{DATA_DIR}/lost+found/#99": "the snapshot's"}


def test_whole_restore_swaps_in_the_snapshot_with_the_mail_stopped(root, monkeypatch):
    monkeypatch.setattr(backup_restore.services, "wait_ports", lambda host: {})
    live = live_server(root)
    renames = on_a_mount_point(root, monkeypatch)
    host = FakeHost(root)
    restic = FakeRestic(restore=restores_into(SNAP_TREE))
    result = backup_restore.whole(job_for(root, restic, host), SNAP)
    assert restic.calls[-1][-1] == f"--include={DATA_DIR}"
    assert (live / "m1").read_text() == "old mail" and not (live / "newer").exists()
    assert at(root, f"{QUEUE_DIR}/hold/ABC").read_text() == "queued"
    assert at(root, TLS_CERT).read_text() == "c"
    assert at(root, f"{DATA_DIR}/owners.json").read_text() == "{}"
    assert not at(root, f"{DATA_DIR}/stray").exists()
    assert os.listdir(at(root, f"{DATA_DIR}/lost+found")) == ["#1234"]  # the filesystem's
    # What was there is kept aside on the volume itself: renamed, never copied.
    (aside,) = result["kept_aside"]
    assert os.path.dirname(aside) == str(at(root, DATA_DIR))
    assert os.path.basename(aside).startswith(f"{B.PARKED}pre-restore-")
    assert open(f"{aside}/vhosts/example.test/bob/Maildir/cur/newer").read() == \
        "arrived after the snapshot"
    assert open(f"{aside}/stray").read() == "made after the snapshot"
    assert renames and all(n.startswith(str(at(root, DATA_DIR)) + "/") for r in renames for n in r)
    assert not [n for n in os.listdir(at(root, DATA_DIR)) if n.startswith(".bpm-restore")]
    cmds = [" ".join(c[:2]) for c in host.calls]
    stop, start = cmds.index("systemctl stop"), cmds.index("systemctl start")
    (postsuper,) = [c for c in host.calls if c[0] == "postsuper"]
    assert postsuper[-1] == "-s"  # renames queue files to their new inode numbers
    assert stop < cmds.index("postsuper -c") < cmds.index("postfix set-permissions") < start
    assert host.calls[stop][2:] == ["postfix@-", "postfix", "policyd-rate-limit", "dovecot"]
    (chown,) = [c for c in host.calls if c[0] == "chown"]
    assert chown == ["chown", "-R", "vmail:vmail", str(at(root, MAIL_DIR))]


def test_a_whole_restore_that_cannot_swap_puts_everything_back(root, monkeypatch):
    monkeypatch.setattr(backup_restore.services, "wait_ports", lambda host: {})
    live = live_server(root)
    before = sorted(os.path.relpath(os.path.join(d, n), root) for d, _, names
                    in os.walk(at(root, DATA_DIR)) for n in names)
    renames = on_a_mount_point(root, monkeypatch)
    real = backup_restore.os.rename

    def fails_on_tls(old, new):
        if os.path.basename(old) == "tls" and B.PARKED + "restore-" in old:
            raise OSError(errno.EIO, "Input/output error", old)
        real(old, new)
    monkeypatch.setattr(backup_restore.os, "rename", fails_on_tls)
    host = FakeHost(root)
    with pytest.raises(BackupError, match="cannot move the restored data into place"):
        backup_restore.whole(job_for(root, FakeRestic(restore=restores_into(SNAP_TREE)), host),
                             SNAP)
    after = sorted(os.path.relpath(os.path.join(d, n), root) for d, _, names
                   in os.walk(at(root, DATA_DIR)) for n in names)
    assert renames and after == before and (live / "newer").exists()
    assert not [n for n in os.listdir(at(root, DATA_DIR)) if n.startswith(B.PARKED)]
    cmds = [" ".join(c[:2]) for c in host.calls]
    assert "systemctl start" in cmds and "postsuper -c" not in cmds  # the mail runs again


def test_whole_restore_refuses_a_snapshot_of_another_layout(root):
    other = {**SNAP, "paths": list(LEGACY_DIRS)}  # taken before the mail moved to the volume
    host = FakeHost(root)
    with pytest.raises(BackupError, match=f"holds {' '.join(LEGACY_DIRS)}, not this host's "
                                          f"{DATA_DIR}"):
        backup_restore.whole(job_for(root, restic := FakeRestic(), host), other)
    assert host.calls[1:] == [] and restic.calls == []


def test_mailbox_restore_imports_into_a_folder_of_its_own(root):
    maildir = f"{MAIL_DIR}/example.test/bob/Maildir"
    at(root, maildir).mkdir(parents=True)
    host = FakeHost(root, {("doveadm", "-f"): (0, "mailbox=Restored abcd1234/INBOX messages=2\n"
                                                  "mailbox=Restored abcd1234/Work messages=1\n")})
    restic = FakeRestic(restore=restores_into({f"{maildir}/cur/m1:2,FS": "x",
                                               f"{maildir}/.Work/cur/m2:2,S": "y"}))
    result = backup_restore.mailbox(job_for(root, restic, host), SNAP, "bob@example.test")
    (imp,) = [c for c in host.calls if c[:2] == ["doveadm", "import"]]
    assert imp[:5] == ["doveadm", "import", "-u", "bob@example.test", "-s"]
    # Staged on the volume (never backed up: a .bpm- name), not on the host's disk.
    assert imp[5].startswith(f"maildir:{at(root, DATA_DIR)}/{B.PARKED}restore-")
    assert imp[6:] == ["Restored abcd1234", "all"]
    assert (result["messages"], result["folders"]) == (3, 2)
    assert restic.calls[0][-1] == f"--include={maildir}"
    assert not [n for n in os.listdir(at(root, DATA_DIR)) if n.startswith(".bpm")]


def test_mailbox_restore_refuses_an_existing_restored_folder(root):
    host = FakeHost(root, {("doveadm", "mailbox"): (0, "Restored abcd1234x\nRestored abcd1234\n")})
    with pytest.raises(BackupError, match="already has a folder 'Restored abcd1234'"):
        backup_restore.mailbox(job_for(root, restic := FakeRestic(), host), SNAP,
                               "bob@example.test")
    assert restic.calls == []


def test_a_mailbox_missing_from_the_snapshot_is_one_clear_error(root):
    at(root, MAIL_DIR).mkdir(parents=True)
    with pytest.raises(BackupError, match="mailbox bob@example.test is not in snapshot abcd1234"):
        backup_restore.mailbox(job_for(root, FakeRestic(), FakeHost(root)), SNAP,
                               "bob@example.test")


# -- status and the apply step -------------------------------------------------------------
NOW = 1_800_000_000.0


def iso(ts):
    import datetime
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat()


def ok_at(ts):
    return {"ok": True, "finished_at": iso(ts), "snapshot_id": "abcd1234", "bytes_added": 0,
            "duration_s": 1.0}


@pytest.mark.parametrize("result, enabled_ago, down, level", [
    ({}, 30 * 60, [], PASS),                          # new host, within the grace period
    ({}, 3 * 3600, [], FAIL),                         # past two intervals, still nothing
    ({"last": {"ok": False, "error": "x"}}, 600, [], WARN),
    ({"last_ok": ok_at(NOW - 1800)}, None, [], PASS),
    ({"last_ok": ok_at(NOW - 3 * 3600)}, None, [], WARN),  # older than twice the interval
    ({"last_ok": ok_at(NOW - 25 * 3600)}, None, [], FAIL),  # past 24 h
    ({"last_ok": ok_at(NOW - 1800), "last": {"ok": False, "error": "x"}}, None, [], WARN),
    ({"last_ok": ok_at(NOW - 60)}, None, ["bulletproof-backup.timer"], FAIL),
])
def test_status_backup_levels(result, enabled_ago, down, level):
    enabled = iso(NOW - enabled_ago) if enabled_ago else None
    check = checks_backup.decide(60, result, enabled, down, 86400, NOW)
    assert check.level == level, check


def test_a_daily_backup_is_not_failed_at_25_hours():
    check = checks_backup.decide(1440, {"last_ok": ok_at(NOW - 25 * 3600)}, None, [], 86400, NOW)
    assert check.level == PASS


def test_apply_step_turns_timers_on_and_off():
    off = {t: (False, False) for t in B.TIMERS}
    on = {t: (True, True) for t in B.TIMERS}
    assert backup_step.decide(True, True, off, []) == \
        [("daemon-reload",), *[("enable", t) for t in B.TIMERS]]
    assert backup_step.decide(True, False, on, []) == []
    assert backup_step.decide(False, False, on, ["/x"]) == \
        [*[("disable", t) for t in B.TIMERS], ("remove", "/x"), ("daemon-reload",)]
    assert backup_step.decide(False, False, off, []) == []
