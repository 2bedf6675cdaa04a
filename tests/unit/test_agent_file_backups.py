"""The files step keeps what each apply replaced (old DKIM and TLS keys among them) under
STATE_DIR/backup/<run>: pruned after FILE_BACKUP_RETENTION_DAYS, the newest always kept."""
import os
import time

from agent import engine, files
from agent.contract import FILE_BACKUP_RETENTION_DAYS, FILE_BACKUPS_DIR
from agent.host import Host
from agent.spec import load
from agent.step import Context
from tests.unit.test_agent_steps import _data, spec_of

DAY = 86400


def _run_dir(base, name: str, age_days: float) -> str:
    path = os.path.join(base, name)
    os.makedirs(os.path.join(path, "etc/opendkim/keys"))
    open(os.path.join(path, "etc/opendkim/keys/old.private"), "w").write("key\n")
    then = time.time() - age_days * DAY
    os.utime(path, (then, then))
    return path


def test_backups_older_than_the_retention_are_pruned_but_the_newest_stays(tmp_path):
    base = str(tmp_path)
    old = _run_dir(base, "old", FILE_BACKUP_RETENTION_DAYS + 5)
    newest_but_old = _run_dir(base, "newest", FILE_BACKUP_RETENTION_DAYS + 1)
    assert files.prune_backups(base, time.time()) == [old]
    assert sorted(os.listdir(base)) == ["newest"] and os.path.isdir(newest_but_old)


def test_backups_within_the_retention_are_kept(tmp_path):
    base = str(tmp_path)
    for name, age in (("a", FILE_BACKUP_RETENTION_DAYS - 1), ("b", 2), ("c", 0)):
        _run_dir(base, name, age)
    assert files.prune_backups(base, time.time()) == []
    assert sorted(os.listdir(base)) == ["a", "b", "c"]


def test_no_backup_dir_prunes_nothing(tmp_path):
    assert files.prune_backups(str(tmp_path / "absent"), time.time()) == []


def test_an_apply_that_replaces_files_prunes_expired_backups_on_its_root(tmp_path):
    root = str(tmp_path / "root")
    engine.execute(Context(spec_of(), Host(root, run_id="first")))
    base = root + FILE_BACKUPS_DIR
    expired = _run_dir(base, "expired", FILE_BACKUP_RETENTION_DAYS + 10)
    _run_dir(base, "previous", FILE_BACKUP_RETENTION_DAYS + 9)  # the newest before this run
    changed = dict(_data(), hostname="mx.example.test")
    ctx = Context(load(changed), Host(root, run_id="second"))
    engine.execute(ctx)
    assert not os.path.exists(expired)
    assert sorted(os.listdir(base)) == ["previous", "second"]
    assert "1 backups older than" in next(r for r in ctx.results if r.name == "files").detail


def test_an_apply_that_changes_nothing_prunes_expired_backups_too(tmp_path):
    root = str(tmp_path / "root")
    engine.execute(Context(spec_of(), Host(root, run_id="first")))
    base = root + FILE_BACKUPS_DIR
    expired = _run_dir(base, "expired", FILE_BACKUP_RETENTION_DAYS + 10)
    _run_dir(base, "newest", FILE_BACKUP_RETENTION_DAYS + 9)
    ctx = Context(spec_of(), Host(root, run_id="again"))
    engine.execute(ctx)
    files_step = next(r for r in ctx.results if r.name == "files")
    assert not files_step.changed and not os.path.exists(expired)
    assert sorted(os.listdir(base)) == ["newest"]
