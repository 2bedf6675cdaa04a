"""The data volume: the spec's volume section, the volume step's decisions (a mounted volume
that is no mount point is refused, ext4 is made only on a blank device), what it runs on a
faked live host, and the mail state on the volume (migrate, owners, render)."""
import copy
import functools
import json
import os
import shutil
import subprocess

import pytest

from agent import __main__ as cli
from agent import commands, example, migrate, owners, render, volume
from agent.contract import DATA_DIR, MAIL_DIR, QUEUE_DIR, VOLUME_LABEL
from agent.errors import MigrationError, VolumeError
from agent.host import Host
from agent.spec import SpecError, load, to_dict
from agent.spec_model import Volume
from agent.step import Context, StepResult


@functools.lru_cache(maxsize=1)
def _data() -> dict:
    return example.example(dkim_pem=example.dkim_key(1024))


def spec_with(vol=None):
    data = copy.deepcopy(_data())
    if vol is not None:
        data["volume"] = vol
    return load(data)


# -- the spec --------------------------------------------------------------------------------
def test_a_spec_without_volume_keeps_the_mail_in_a_directory():
    spec = spec_with()
    assert spec.volume == Volume("directory", None)
    assert load(to_dict(spec)) == spec


@pytest.mark.parametrize("vol, expected", [
    ({"kind": "disk"}, "volume.kind: expected one of mounted, directory, block, got 'disk'"),
    ({"kind": "block"}, "volume.device: required when volume.kind is block"),
    ({"kind": "mounted", "device": "/dev/sdb"}, "volume.device: only with volume.kind block"),
    ({"kind": "block", "device": "sdb"}, "volume.device: expected a device path under /dev/"),
    ({"kind": "block", "device": "/dev/../etc/passwd"}, "volume.device: expected a device path"),
    ({"kind": "block", "device": "/dev/sdb", "fs": "xfs"}, "volume.fs: unknown key"),
])
def test_a_wrong_volume_is_refused_by_path(vol, expected):
    with pytest.raises(SpecError) as err:
        spec_with(vol)
    assert any(e.startswith(expected) for e in err.value.errors), err.value.errors


def test_a_block_volume_names_its_device():
    vol = spec_with({"kind": "block", "device": "/dev/disk/azure/scsi1/lun0"}).volume
    assert (vol.kind, vol.device) == ("block", "/dev/disk/azure/scsi1/lun0")


# -- decisions -------------------------------------------------------------------------------
MOUNTED, BLOCK = Volume("mounted"), Volume("block", "/dev/vdb")
EXT4 = {"TYPE": "ext4", "UUID": "0b5e6a2c-1111-4222-8333-944445555666", "LABEL": VOLUME_LABEL}


def test_mounted_but_not_a_mount_point_is_refused():
    with pytest.raises(VolumeError, match="not a mount point") as err:
        volume.decide(MOUNTED, volume.Facts(exists=True, mounted=None))
    assert err.value.file == DATA_DIR and "never writes the mail to a bare directory" in err.value.fix
    assert volume.decide(MOUNTED, volume.Facts(exists=True, mounted=(0, 52))) == []


def test_a_directory_volume_is_created_when_missing():
    assert volume.decide(Volume(), volume.Facts(False, None)) == [f"create {DATA_DIR}"]
    assert volume.decide(Volume(), volume.Facts(True, None)) == []


def test_ext4_is_made_only_on_a_blank_device():
    blank = volume.decide(BLOCK, volume.Facts(True, None, device=(252, 16), probe={}))
    assert blank[0].startswith("make ext4") and blank[1].startswith("mount /dev/vdb")
    formatted = volume.decide(BLOCK, volume.Facts(True, None, device=(252, 16), probe=EXT4))
    assert len(formatted) == 1 and formatted[0].startswith("mount")


@pytest.mark.parametrize("probe", [{"TYPE": "xfs", "UUID": "x"}, {"PTTYPE": "gpt"},
                                   {"TYPE": "crypto_LUKS", "UUID": "y"}])
def test_a_device_holding_anything_else_is_never_formatted(probe):
    with pytest.raises(VolumeError, match="never formats"):
        volume.decide(BLOCK, volume.Facts(True, None, device=(252, 16), probe=probe))


def test_block_refusals():
    with pytest.raises(VolumeError, match="not there after"):
        volume.decide(BLOCK, volume.Facts(True, None, device=None))
    with pytest.raises(VolumeError, match="mounted from device 8:1"):
        volume.decide(BLOCK, volume.Facts(True, (8, 1), device=(252, 16), probe=EXT4))
    with pytest.raises(VolumeError, match="would hide them"):
        volume.decide(BLOCK, volume.Facts(True, None, empty=False, device=(252, 16), probe=EXT4))


def test_a_mounted_block_volume_with_its_unit_needs_nothing():
    unit = volume.mount_unit(EXT4["UUID"], "/dev/vdb")
    done = volume.Facts(True, (252, 16), device=(252, 16), probe=EXT4, unit=unit, enabled=True)
    assert volume.decide(BLOCK, done) == []
    stale = volume.Facts(True, (252, 16), device=(252, 16), probe=EXT4, unit="old", enabled=True)
    assert volume.decide(BLOCK, stale)[0].startswith("mount")


def test_the_mount_unit_mounts_by_uuid_without_nofail_and_bounded():
    unit = volume.mount_unit(EXT4["UUID"], "/dev/vdb")
    assert f"What=/dev/disk/by-uuid/{EXT4['UUID']}\n" in unit and f"Where={DATA_DIR}\n" in unit
    assert "nofail" not in unit.replace("no nofail", "") and "JobTimeoutSec=" in unit
    assert "Type=ext4" in unit and "WantedBy=local-fs.target" in unit
    if shutil.which("systemd-escape"):
        name = subprocess.run(["systemd-escape", "--path", "--suffix=mount", DATA_DIR],
                              capture_output=True, text=True, check=True).stdout.strip()
        assert volume.MOUNT_UNIT.endswith("/" + name)


def test_mount_at_reads_mountinfo(tmp_path):
    assert volume.mount_at("/") is not None
    assert volume.mount_at(str(tmp_path)) is None


# -- the step on a faked live host -----------------------------------------------------------
class FakeLive(Host):
    def __init__(self, tmp_path, probes, dry_run=False):
        super().__init__(root=str(tmp_path), dry_run=dry_run)
        self.probes, self.ran, self.inputs = list(probes), [], []

    @property
    def live(self):
        return True

    def run(self, argv, *, check=True, input=None, **kw):
        self.ran.append(list(argv))
        self.inputs.append(input)
        if argv[:2] == ["blkid", "-p"]:
            found = self.probes.pop(0) if len(self.probes) > 1 else self.probes[0]
            out = "".join(f"{k}={v}\n" for k, v in found.items())
            return subprocess.CompletedProcess(argv, 0 if found else 2, out, "")
        return subprocess.CompletedProcess(argv, 0, "", "")


@pytest.fixture
def block_host(tmp_path, monkeypatch):
    """The device is there; the mount shows up once systemctl started the unit."""
    def make(probes, dry_run=False):
        host = FakeLive(tmp_path, probes, dry_run)
        (tmp_path / "dev/disk/by-uuid").mkdir(parents=True, exist_ok=True)
        (tmp_path / f"dev/disk/by-uuid/{EXT4['UUID']}").touch()
        monkeypatch.setattr(volume, "device_number", lambda path: (252, 16))
        monkeypatch.setattr(volume, "mount_at", lambda path: (252, 16) if any(
            a[:2] == ["systemctl", "start"] for a in host.ran) else None)
        return host
    return make


def test_a_blank_device_is_formatted_then_mounted_by_uuid(block_host, tmp_path):
    host = block_host([{}, EXT4])
    result = volume.apply(Context(spec_with({"kind": "block", "device": "/dev/vdb"}), host))
    mkfs = [a for a in host.ran if a[0] == "mkfs.ext4"]
    assert mkfs == [["mkfs.ext4", "-q", "-L", VOLUME_LABEL, "/dev/vdb"]]  # never -F
    assert host.inputs[host.ran.index(mkfs[0])] == ""  # a prompt of mke2fs is answered no
    unit = (tmp_path / volume.MOUNT_UNIT.lstrip("/")).read_text()
    assert f"What=/dev/disk/by-uuid/{EXT4['UUID']}" in unit
    assert ["systemctl", "enable", "srv-mail.mount"] in host.ran
    assert ["systemctl", "start", "srv-mail.mount"] in host.ran
    assert result.changed and (tmp_path / "srv/mail/state").is_dir()


def test_a_formatted_device_is_mounted_never_formatted(block_host):
    host = block_host([EXT4])
    volume.apply(Context(spec_with({"kind": "block", "device": "/dev/vdb"}), host))
    assert not any(a[0].startswith("mkfs") for a in host.ran)
    assert ["systemctl", "start", "srv-mail.mount"] in host.ran


def test_plan_of_a_blank_device_only_probes(block_host, tmp_path):
    host = block_host([{}], dry_run=True)
    result = volume.apply(Context(spec_with({"kind": "block", "device": "/dev/vdb"}), host))
    assert result.changed and "make ext4" in result.detail
    assert all(a[0] == "blkid" for a in host.ran)
    assert not (tmp_path / volume.MOUNT_UNIT.lstrip("/")).exists()


def test_apply_with_a_mounted_volume_that_is_not_mounted_writes_nothing(tmp_path, capsys):
    data = copy.deepcopy(_data())
    data["volume"] = {"kind": "mounted"}
    spec_file, _ = example.write(str(tmp_path / "spec"), data)
    root = tmp_path / "root"
    (root / DATA_DIR.lstrip("/")).mkdir(parents=True)  # the bare mount point directory
    assert cli.main(["apply", "--spec", spec_file, "--root", str(root), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["error"]["step"] == "volume" and "not a mount point" in report["error"]["message"]
    assert os.listdir(root / DATA_DIR.lstrip("/")) == [] and not (root / "etc").exists()


# -- migrate: moving a tree ------------------------------------------------------------------
def _tree(root) -> dict:
    out = {}
    for d, dirs, names in os.walk(root):
        for n in names + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
            p = os.path.join(d, n)
            st = os.lstat(p)
            data = os.readlink(p) if os.path.islink(p) else open(p, "rb").read()
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_uid, st.st_mtime_ns, data)
    return out


def _mailbox(base):
    cur = os.path.join(base, "example.test/alice/Maildir/cur")
    os.makedirs(cur)
    for i in range(5):
        p = os.path.join(cur, f"17000000{i}.M1P1.host:2,S")
        with open(p, "wb") as f:
            f.write(os.urandom(1000))
        os.utime(p, ns=(1_600_000_000_000_000_000 + i, 1_600_000_000_000_000_000 + i))
        if os.geteuid() == 0:
            os.chown(p, 5000, 5000)
    with open(os.path.join(base, "example.test/alice/Maildir/dovecot-uidlist"), "w") as f:
        f.write("3 V1600000000 N6\n")
    os.symlink("Maildir", os.path.join(base, "example.test/alice/mail"))


def test_move_tree_keeps_bytes_owner_mode_and_times(tmp_path):
    src, dst = str(tmp_path / "old"), str(tmp_path / "new")
    _mailbox(src)
    before = _tree(src)
    assert migrate.move_tree(src, dst) == 7
    assert _tree(dst) == before and _tree(src) == {} and os.path.isdir(src)


def test_move_tree_resumes_after_an_interruption(tmp_path):
    src, dst = str(tmp_path / "old"), str(tmp_path / "new")
    _mailbox(src)
    before = _tree(src)
    cur = "example.test/alice/Maildir/cur"
    name = sorted(os.listdir(os.path.join(src, cur)))[0]
    os.makedirs(os.path.join(dst, cur))
    shutil.copy2(os.path.join(src, cur, name), os.path.join(dst, cur, name))  # in place already
    with open(os.path.join(dst, cur, migrate.TMP + "half"), "w") as f:
        f.write("a copy cut short")
    with open(os.path.join(src, cur, migrate.TMP + "x"), "w") as f:
        f.write("left by a move the other way")
    migrate.move_tree(src, dst)
    after = _tree(dst)
    assert {k: v[3] for k, v in after.items() if migrate.TMP not in k} == \
        {k: v[3] for k, v in before.items() if migrate.TMP not in k}
    assert _tree(src) == {}


def test_move_tree_never_overwrites_a_different_file(tmp_path):
    src, dst = str(tmp_path / "old"), str(tmp_path / "new")
    _mailbox(src)
    os.makedirs(os.path.join(dst, "example.test/alice/Maildir"))
    with open(os.path.join(dst, "example.test/alice/Maildir/dovecot-uidlist"), "w") as f:
        f.write("3 V999 N1\n")
    with pytest.raises(MigrationError, match="differs"):
        migrate.move_tree(src, dst)
    assert len(_tree(src)) == 7  # nothing removed (5 messages, the uidlist, a symlink)


def test_migrate_never_merges_two_mail_stores():
    with pytest.raises(MigrationError, match="both /var/mail/vhosts and /srv/mail/vhosts hold"):
        migrate.decide({"mail": 3, "queue": 0}, {"mail": 1, "queue": 0})
    assert migrate.decide({"mail": 3, "queue": 2}, {"mail": 0, "queue": 0}) == [
        "move 3 mail files onto the volume", "move 2 queue files onto the volume"]
    assert migrate.decide({"mail": 0, "queue": 0}, {"mail": 9, "queue": 1}) == []
    assert migrate.decide({"mail": 0, "queue": 1}, {"mail": 9, "queue": 4}) == [
        "move 1 queue files onto the volume"]  # a queue's messages stand alone: merged


def test_migrate_and_its_undo_on_a_temp_root(tmp_path):
    root = str(tmp_path)
    _mailbox(os.path.join(root, "var/mail/vhosts"))
    os.makedirs(os.path.join(root, "var/spool/postfix/deferred/4"))
    with open(os.path.join(root, "var/spool/postfix/deferred/4/4A5B6C"), "w") as f:
        f.write("queued")
    before = _tree(root)
    ctx = Context(spec_with(), Host(root))
    result = migrate.apply(ctx)
    assert result.services == {"postfix", "dovecot", "postsuper"}
    assert migrate.count_files(os.path.join(root, MAIL_DIR.lstrip("/"))) == 6
    assert os.path.exists(os.path.join(root, QUEUE_DIR.lstrip("/"), "deferred/4/4A5B6C"))
    assert migrate.apply(Context(spec_with(), Host(root))).changed is False  # idempotent
    assert os.path.exists(os.path.join(root, "var/lib/bulletproof-mail/journal.json"))  # noted
    assert migrate.undo(ctx, json.loads(json.dumps(result.undo))) == "moved 8 files back"
    assert {k: v for k, v in _tree(root).items() if not k.startswith("var/lib/")} == before


# -- owners ----------------------------------------------------------------------------------
IDS = {"user:postfix": 103, "group:postdrop": 106, "user:vmail": 5000, "group:vmail": 5000,
       "user:policyd-rate-limit": 102}


def test_owners_are_restored_only_when_the_ids_differ():
    assert owners.decide(IDS, IDS, queue_ready=True, queue_moved=False) == []
    new_host = dict(IDS, **{"user:postfix": 104})
    assert owners.decide(IDS, new_host, True, False) == [
        "postfix set-permissions", "record the owners' ids"]
    fresh = owners.decide(None, IDS, False, False)
    assert fresh[0] == "postfix set-permissions" and f"chown -R vmail:vmail {MAIL_DIR}" in fresh
    assert owners.decide(IDS, IDS, False, True) == ["postfix set-permissions", "postsuper -s"]


# -- the files that name the volume ----------------------------------------------------------
def test_the_daemons_require_the_volume_and_keep_their_state_on_it():
    spec = spec_with()
    out = render.render(spec, ("CERT", "KEY"))
    main_cf, dovecot = out["/etc/postfix/main.cf"].decode(), out["/etc/dovecot/dovecot.conf"].decode()
    assert f"queue_directory = {QUEUE_DIR}\n" in main_cf
    assert f"home={MAIL_DIR}/%d/%n" in dovecot and f"{QUEUE_DIR}/private/dovecot-lmtp" in dovecot
    assert f'SOCKET: "{QUEUE_DIR}/ratelimit/policy"' in out["/etc/policyd-rate-limit.yaml"].decode()
    for unit in ("postfix@-.service", "dovecot.service"):
        dropin = out[f"/etc/systemd/system/{unit}.d/bulletproof-volume.conf"].decode()
        assert f"[Unit]\nRequiresMountsFor={DATA_DIR}\n" in dropin
    assert "/srv/mail/tls/cert.pem" in out and "/srv/mail/tls/key.pem" in out


def test_a_changed_drop_in_reloads_systemd_first():
    ctx = Context(spec_with(), Host("/nonexistent"),
                  results=[StepResult("files", services=frozenset({"daemon-reload", "newaliases"}))])
    assert commands.decide(ctx, has_aliases_db=True)[0] == ["systemctl", "daemon-reload"]
