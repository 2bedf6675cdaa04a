"""The journal of an apply in progress (agent/journal.py): an apply killed (SIGKILL, no rollback)
at several points on a temp root is undone by the next run, which then converges on what a
clean apply makes; plan only reports it. And a stale policy-rc.d of ours is removed."""
import copy
import functools
import json
import os
import shutil
import signal

import pytest

from agent import __main__ as cli
from agent import engine, example, files, journal, keys, migrate
from agent.contract import JOURNAL
from agent.host import Host
from agent.packages import POLICY_MARK, POLICY_RC_D
from agent.spec import load, merge
from agent.step import Context

MAILBOX = "var/mail/vhosts/example.test/alice/Maildir"
VOLUME_MAILBOX = "srv/mail/vhosts/example.test/alice/Maildir"
MESSAGES = 12


@functools.lru_cache(maxsize=1)
def _data() -> dict:
    cert, key = keys.self_signed("mail.example.test")  # provided: every run renders the same
    return example.example(dkim_pem=example.dkim_key(1024),
                           tls={"mode": "provided", "cert_pem": cert, "key_pem": key})


def spec_file(tmp_path, name: str, **limits) -> str:
    data = copy.deepcopy(_data())
    data["limits"].update(limits)
    if limits:  # more than one file changes: main.cf, virtual_aliases
        data["aliases"]["abuse@example.test"] = ["bob@example.test"]
    return example.write(str(tmp_path / name), data)[0]


def old_host(tmp_path) -> str:
    """A root applied once, then given mail and a queue where hosts before the volume had
    them (as an old agent left them)."""
    root = str(tmp_path / "root")
    assert cli.main(["apply", "--spec", spec_file(tmp_path, "a"), "--root", root]) == 0
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(root, MAILBOX, sub))
    for i in range(MESSAGES):
        with open(os.path.join(root, MAILBOX, "cur", f"{1700000000 + i}.M{i}P1.old:2,S"), "wb") as f:
            f.write(b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i))
    with open(os.path.join(root, MAILBOX, "dovecot-uidlist"), "w") as f:
        f.write("3 V1700000000 N13 G0123456789abcdef\n")
    os.makedirs(os.path.join(root, "var/spool/postfix/deferred/A"))
    with open(os.path.join(root, "var/spool/postfix/deferred/A/A1B2C3D4E5"), "wb") as f:
        f.write(b"queued message")
    return root


def state(root: str) -> dict:
    """Every file with its mode and bytes, but the run's own records (report, backups)."""
    out = {}
    for d, dirs, names in os.walk(root):
        rel = os.path.relpath(d, root)
        if rel.startswith("var/lib/bulletproof-mail"):
            continue
        for n in names:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = (os.lstat(p).st_mode, open(p, "rb").read())
    return out


def killed(root: str, spec: str, module, name: str, when) -> None:
    """Run apply in a child that SIGKILLs itself (no rollback, no cleanup) on the first call of
    module.name for which when(args) is true: a power cut at that point."""
    pid = os.fork()
    if pid == 0:
        real = getattr(module, name)

        def fatal(*args, **kw):
            if when(args):
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kw)
        setattr(module, name, fatal)
        try:
            cli.main(["apply", "--spec", spec, "--root", root, "--json"])
        finally:
            os._exit(3)  # reached only when the kill point never came
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


def counter(n: int, pred=lambda args: True):
    calls = []

    def when(args):
        if pred(args):
            calls.append(args)
        return len(calls) == n
    return when


KILL_POINTS = {
    # mid-migration: after some copies, before any original is removed
    "copying the mail": (migrate, "_copy", counter(5)),
    # mid-migration: copies in place, some originals removed
    "removing the originals": (migrate.os, "unlink", counter(
        3, lambda a: "var/mail/vhosts" in str(a[0]) and migrate.TMP not in str(a[0]))),
    # mid-swap: the second live config file of this run being written (not a staged copy)
    "swapping the files": (files, "write_atomic", counter(
        2, lambda a: "/etc/" in a[0] and "/staging-" not in a[0])),
    # every step with undo data done, before the run ends
    "after the swap": (journal, "sync", counter(1, lambda a: any(
        r.name == "files" for r in a[0].results))),
}


@pytest.fixture(scope="module")
def converged(tmp_path_factory):
    """What one clean apply of spec b makes of the old host."""
    tmp = tmp_path_factory.mktemp("clean")
    root = old_host(tmp)
    assert cli.main(["apply", "--spec", spec_file(tmp, "b", message_size_limit=5242880),
                     "--root", root]) == 0
    return state(root)


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_a_killed_apply_is_undone_by_the_next_run_which_converges(tmp_path, point, converged,
                                                                  capsys):
    root = old_host(tmp_path)
    before = state(root)
    spec = spec_file(tmp_path, "b", message_size_limit=5242880)
    killed(root, spec, *KILL_POINTS[point])
    left = json.load(open(os.path.join(root, JOURNAL.lstrip("/"))))
    assert left["entries"] and state(root) != before
    if point == "swapping the files":  # main.cf is new, virtual_aliases not yet
        changed = {p for p, v in state(root).items() if p.startswith("etc/") and before.get(p) != v}
        assert changed == {"etc/postfix/main.cf"}, changed

    interrupted = state(root)
    capsys.readouterr()
    assert cli.main(["plan", "--spec", spec, "--root", root, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["steps"][0]["name"] == "recover" and "apply will undo" in plan["steps"][0]["detail"]
    assert state(root) == interrupted  # plan only reports

    secrets = json.load(open(os.path.join(os.path.dirname(spec), "secrets.json")))
    ctx = Context(load(merge(json.load(open(spec)), secrets)), Host(root))
    recovered = journal.recover(ctx, {m.NAME: m for m in engine.STEPS})
    assert "undid the interrupted apply" in recovered.detail
    assert state(root) == before  # exactly the host before the killed run
    assert not os.path.exists(os.path.join(root, JOURNAL.lstrip("/")))

    killed(root, spec, *KILL_POINTS[point])  # and again, then a whole run
    capsys.readouterr()
    assert cli.main(["apply", "--spec", spec, "--root", root, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"][0]["name"] == "recover" and report["status"] == "ok"
    assert state(root) == converged
    assert not os.path.exists(os.path.join(root, JOURNAL.lstrip("/")))


def test_a_run_killed_while_recovering_is_recovered_by_the_next(tmp_path, converged):
    root = old_host(tmp_path)
    spec = spec_file(tmp_path, "b", message_size_limit=5242880)
    killed(root, spec, *KILL_POINTS["after the swap"])
    # The recovery itself dies while moving the mail back: the journal stays.
    killed(root, spec, migrate, "_copy", counter(4, lambda a: "var/mail/vhosts" in a[1]))
    assert os.path.exists(os.path.join(root, JOURNAL.lstrip("/")))
    assert cli.main(["apply", "--spec", spec, "--root", root]) == 0
    assert state(root) == converged


def test_no_journal_is_left_by_a_run_that_ends(tmp_path):
    root = old_host(tmp_path)
    assert cli.main(["apply", "--spec", spec_file(tmp_path, "b", message_size_limit=5242880),
                     "--root", root]) == 0
    assert not os.path.exists(os.path.join(root, JOURNAL.lstrip("/")))
    assert migrate.count_files(os.path.join(root, "var/mail/vhosts")) == 0
    assert len(os.listdir(os.path.join(root, VOLUME_MAILBOX, "cur"))) == MESSAGES


# -- a stale policy-rc.d -----------------------------------------------------------------------
def _with_policy(tmp_path, text: str) -> tuple[str, str]:
    root = str(tmp_path / "root")
    os.makedirs(os.path.join(root, "usr/sbin"))
    policy = os.path.join(root, POLICY_RC_D.lstrip("/"))
    with open(policy, "w") as f:
        f.write(text)
    return root, policy


def test_a_stale_policy_rc_d_of_ours_is_removed_at_the_start(tmp_path, capsys):
    root, policy = _with_policy(tmp_path, "#!/bin/sh\n" + POLICY_MARK + "exit 101\n")
    spec = spec_file(tmp_path, "a")
    assert cli.main(["plan", "--spec", spec, "--root", root, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert os.path.exists(policy) and "would remove" in plan["steps"][0]["detail"]
    assert cli.main(["apply", "--spec", spec, "--root", root, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["steps"][0]
    assert first["name"] == "recover" and first["changed"] and POLICY_RC_D in first["detail"]
    assert not os.path.exists(policy)


def test_a_policy_rc_d_not_ours_is_left_with_a_warning(tmp_path, capsys):
    root, policy = _with_policy(tmp_path, "#!/bin/sh\n# the admin's own\nexit 101\n")
    assert cli.main(["apply", "--spec", spec_file(tmp_path, "a"), "--root", root, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["steps"][0]
    assert first["name"] == "recover" and not first["changed"]
    assert "not ours" in first["warnings"][0] and os.path.exists(policy)


def test_an_unreadable_journal_stops_the_run_and_is_kept(tmp_path, capsys):
    root = str(tmp_path / "root")
    path = os.path.join(root, JOURNAL.lstrip("/"))
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write("{not json")
    assert cli.main(["apply", "--spec", spec_file(tmp_path, "a"), "--root", root, "--json"]) == 1
    err = json.loads(capsys.readouterr().out)["error"]
    assert err["step"] == "recover" and err["file"] == JOURNAL and err["fix"]
    assert os.path.exists(path) and not os.path.exists(os.path.join(root, "etc/postfix"))
    shutil.rmtree(root)
