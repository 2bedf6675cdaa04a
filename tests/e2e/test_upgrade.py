"""A stack deployed by an earlier release moves to this code without losing a resource.

A URN is what Pulumi knows a resource by; a new type or parent is a delete and a create unless
the old URN is declared (`aliases`), and for the host a replacement means its mail is gone. So:
deploy the local default with the code of UPGRADE_FROM, put this checkout's files in its place
(as `git pull` would), preview (0 to replace, 0 to delete), `up`, and preview again (no changes).
"""
from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter

import pytest

from tests import local_stack
from tests.e2e import stack_fixture
from tests.e2e.pulumi_cli import ROOT

# The last commit before backends became plug-in components (every resource moved or was renamed).
UPGRADE_FROM = "844477e"
LOSSES = {"replace", "create-replacement", "delete-replaced", "delete", "discard"}


def _files(rev: str | None) -> list[str]:
    """The tracked files of `rev`, or of the working tree (with new, untracked ones)."""
    args = ["ls-tree", "-r", "--name-only", rev] if rev else ["ls-files", "--cached", "--others", "--exclude-standard"]
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout.split()


def _checkout_old(path) -> None:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", UPGRADE_FROM], capture_output=True)
    assert archive.returncode == 0, f"commit {UPGRADE_FROM} is not in this clone: {archive.stderr.decode()}"
    subprocess.run(["tar", "-x", "-C", str(path)], input=archive.stdout, check=True)
    (path / ".venv").symlink_to(ROOT / ".venv")  # the same locked dependencies


def _pull_this_code(path) -> None:
    """The checkout becomes this code, in place: files gone from the tree go, the rest is copied."""
    now = set(_files(None))
    for old in set(_files(UPGRADE_FROM)) - now:
        (path / old).unlink(missing_ok=True)
    for name in now:
        if (ROOT / name).is_file():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, path / name)


def _steps(preview: subprocess.CompletedProcess) -> Counter:
    """Resources by what the preview would do to them (same, update, create, replace, ...)."""
    return Counter(json.loads(preview.stdout)["changeSummary"])


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory):
    checkout = tmp_path_factory.mktemp("upgrade") / "bulletproof-mail"
    checkout.mkdir()
    _checkout_old(checkout)
    # The old code knows one domain (the single-domain keys): the local default's primary.
    stack = stack_fixture.create(tmp_path_factory.mktemp("state"), local_stack.single_domain(),
                                 checkout=checkout)
    try:
        stack.timed("up (old code)", "up", "--yes", "--skip-preview")
        before = stack.outputs()
        _pull_this_code(checkout)
        yield stack, before, stack.timed("preview (new code)", "preview", "--json")
    finally:
        stack_fixture.remove(stack)
        print(f"\n[e2e] upgrade timings (s): {json.dumps(stack.timings)}")


def test_the_preview_replaces_and_deletes_nothing(upgraded):
    _, _, preview = upgraded
    steps = _steps(preview)
    assert not LOSSES & set(steps), steps
    assert steps["same"] > 20, steps  # the moved and renamed resources are found under their old URNs


def test_up_moves_the_stack_and_leaves_nothing_to_do(upgraded):
    stack, before, _ = upgraded
    up = stack.timed("up (new code)", "up", "--yes", "--skip-preview")
    summary = up.stdout.split("Resources:")[-1]
    assert "replaced" not in summary and "deleted" not in summary, summary
    after = stack.outputs()
    assert (after["host_ipv4"], after["dkim_txt"], after["mail_passwords"]) == (
        before["host_ipv4"], before["dkim_txt"], before["mail_passwords"])
    assert after["verification"]["failed"] == 0
    stack.run("preview", "--expect-no-changes")
