"""bulletproof-mail policies: data residency and mail safety, enforced at preview time.

Every policy is mandatory: a violation fails `pulumi preview/up --policy-pack policies` before
anything is touched, with a message that names the resource, the value and the fix.
"""
import pathlib
import sys

from pulumi_policy import EnforcementLevel, PolicyPack

# The pack runs from policies/; its rules read the project's registry and contract.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from policies import rules  # noqa: E402

PolicyPack(
    name="bulletproof-mail",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=rules.POLICIES,
)
