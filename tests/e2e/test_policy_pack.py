"""The CrossGuard pack in policies/ run by the real engine: `pulumi preview --policy-pack policies`.

Through our language host's RunPlugin (python -m pulumi.policy in the pack's virtualenv).
Previews only: nothing is created.
"""
import uuid

import pytest

from tests import local_stack
from tests.e2e import stack_fixture
from tests.e2e.pulumi_cli import ROOT


@pytest.fixture()
def make_stack(tmp_path_factory):
    made = []

    def make(name_prefix: str, **changes) -> stack_fixture.Stack:
        config = dict(local_stack.single_domain())
        config.update({f"bulletproof-mail:{k}": v for k, v in changes.items()})
        s = stack_fixture.create(tmp_path_factory.mktemp("state"), config,
                                 name=f"{name_prefix}-{uuid.uuid4().hex[:6]}")
        made.append(s)
        return s
    yield make
    for s in made:
        stack_fixture.remove(s, deployed=False)


def test_the_local_default_passes_every_policy(make_stack):
    stack = make_stack("e2e")
    preview = stack.run("preview", "--policy-pack", str(ROOT / "policies"), check=False)
    text = preview.stdout + preview.stderr
    assert preview.returncode == 0, text
    assert "bulletproof-mail@v0.1.0" in text and "mandatory" not in text


def test_dmarc_none_on_a_prod_stack_is_rejected_with_the_policy_message(make_stack):
    stack = make_stack("prod", dmarc_policy="none")
    preview = stack.run("preview", "--policy-pack", str(ROOT / "policies"), check=False)
    text = preview.stdout + preview.stderr
    assert preview.returncode != 0
    assert "dmarc-enforced-in-production" in text
    assert f"DMARC p=none on production stack '{stack.name}'" in text
    assert "set bulletproof-mail:dmarc_policy to quarantine or reject" in text


def test_dmarc_none_outside_prod_is_allowed(make_stack):
    stack = make_stack("e2e", dmarc_policy="none")
    preview = stack.run("preview", "--policy-pack", str(ROOT / "policies"), check=False)
    assert preview.returncode == 0, preview.stdout + preview.stderr


def test_the_pack_reads_the_stack_config_residency_none_allows_any_region(make_stack):
    """Without the stack's residency ("none") the pack would assume "NO" and reject this region:
    this proves the stack config reaches the pack (see _capture_stack_config in policies/rules.py)."""
    stack = make_stack("e2e", residency="none", region="de-fra1")
    preview = stack.run("preview", "--policy-pack", str(ROOT / "policies"), check=False)
    assert preview.returncode == 0, preview.stdout + preview.stderr
