"""bulletproof-mail policies: data residency and mail safety, enforced at preview time.

Every policy is mandatory: a violation fails `pulumi preview/up --policy-pack policies` before
anything is touched, with a message that names the resource, the value and the fix.
"""
import pathlib
import sys

from pulumi_policy import EnforcementLevel, PolicyPack

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import rules  # noqa: E402  (beside this file: importable by the unit tests too)

PolicyPack(
    name="bulletproof-mail",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=rules.POLICIES,
)
