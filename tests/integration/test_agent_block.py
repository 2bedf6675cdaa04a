"""The block volume kind on a real booted container: a loop device of this machine handed to
the container (its device node bind-mounted) stands in for a cloud disk. The agent formats it
(blank), mounts it by UUID with its mount unit, and the mail lands on it; a NEW container on
the same device mounts it without formatting it and serves the old messages.

The container has no udev: a thread here makes the /dev/disk/by-uuid link udev would make (in a
directory of this machine bind-mounted at the container's /dev/disk/by-uuid).
Needs root, systemd-nspawn, tinyproxy, named and losetup.
"""
import os
import shutil
import subprocess
import threading
import uuid

import pytest

from agent.contract import DATA_DIR, VOLUME_LABEL
from tests import mailclient
from tests.integration import agenthost as deploy
from tests.integration.agenthost import password
from tests.integration.test_agent_volume import ALICE, mailbox, send, steps, why

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(bool(deploy.tools_missing()) or not shutil.which("losetup"),
                       reason="needs systemd-nspawn, tinyproxy, named, losetup"),
]
SIZE = 256 * 1024 * 1024


class FakeUdev(threading.Thread):
    """Makes by-uuid/<uuid> -> the device once a filesystem shows up on it (polls blkid)."""

    def __init__(self, device: str, links: str):
        super().__init__(daemon=True)
        self.device, self.links, self.done = device, links, threading.Event()

    def run(self):
        while not self.done.wait(0.1):
            found = subprocess.run(["blkid", "-p", "-s", "UUID", "-o", "value", self.device],
                                   capture_output=True, text=True).stdout.strip()
            if found and not os.path.lexists(os.path.join(self.links, found)):
                os.symlink(self.device, os.path.join(self.links, found))


@pytest.fixture(scope="module")
def block(progress):
    d, device, udev = None, None, None
    try:
        d = deploy.up(log=lambda line: progress("block", line))
        backing = os.path.join(d.workdir, "disk.img")
        with open(backing, "wb") as f:
            f.truncate(SIZE)
        device = subprocess.run(["losetup", "--find", "--show", backing], capture_output=True,
                                text=True, check=True).stdout.strip()
        links = deploy.volume_dir(d, "by-uuid")
        udev = FakeUdev(device, links)
        udev.start()
        binds = ((device, device), (links, "/dev/disk/by-uuid"))
        d.spec["volume"] = {"kind": "block", "device": device}
        deploy.replace(d, "mail", binds)
        yield d, device, binds
    finally:
        if udev:
            udev.done.set()
        deploy.down(d)
        if device:
            subprocess.run(["losetup", "-d", device], capture_output=True)


def test_a_blank_device_is_formatted_mounted_by_uuid_and_holds_the_mail(block):
    d, device, _ = block
    rc, report, elapsed, err = d.apply(d.spec, run_id="block-first")
    assert rc == 0, why(report, err)
    assert steps(report)["volume"]["detail"].startswith(f"make ext4 (label {VOLUME_LABEL})")
    _, out, _ = d.run(f"findmnt -n -o SOURCE,FSTYPE,LABEL {DATA_DIR}")
    assert out.split() == [device, "ext4", VOLUME_LABEL], out
    assert d.run("systemctl is-active srv-mail.mount")[0] == 0
    assert d.run("systemctl is-enabled srv-mail.mount")[0] == 0
    send(d, ALICE, "on the block volume")
    assert mailclient.imap_find(d.ip, ALICE, password(ALICE), "on the block volume")
    assert d.run(f"grep -rl 'on the block volume' {DATA_DIR}/vhosts")[0] == 0
    rc, report, _, _ = d.apply(d.spec, run_id="block-again")
    assert rc == 0 and report["changed"] is False, steps(report)["volume"]


def test_a_new_host_on_the_device_mounts_it_unformatted_and_serves_the_mail(block):
    d, device, binds = block
    before = mailbox(d, ALICE)
    deploy.replace(d, "mail2", binds)
    rc, report, _, err = d.apply(d.spec, run_id="block-new-host")
    assert rc == 0, why(report, err)
    detail = steps(report)["volume"]["detail"]
    assert "make ext4" not in detail and detail.startswith(f"mount {device}"), detail
    assert mailbox(d, ALICE) == before
    subject = f"second host {uuid.uuid4().hex[:8]}"
    send(d, ALICE, subject)
    assert mailclient.imap_find(d.ip, ALICE, password(ALICE), subject)
