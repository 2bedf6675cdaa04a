"""Verification: the read-only testinfra suite (tests/infra) run against the deployed host.

It runs whenever an `up` changed the host, its records or its spec (its `trigger` input); a red
result fails the deploy and names the failed checks. `make verify` (ops/verify.py) runs the same
suite by hand.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

ROOT = pathlib.Path(__file__).resolve().parents[1]


class VerificationError(RuntimeError):
    pass


def infra_expectations(domain: str, fqdn: str, users: list[str], dkim_txt: str,
                       domains: list[dict] | None = None) -> dict:
    """What tests/infra checks the host against (BPM_INFRA_EXPECT). `domains`: per mail domain
    {name, selector, dkim_txt, users, ...}, the primary first (absent: the one `domain`)."""
    return {"domain": domain, "hostname": fqdn, "users": list(users), "dkim_txt": dkim_txt,
            **({"domains": list(domains)} if domains else {})}


def run_suite(host: str, private_key_pem: str, expect: dict, known_hosts: str,
              user: str = "root") -> dict:
    """Run tests/infra against user@host; return {passed, failed, failures: [names]}."""
    with tempfile.TemporaryDirectory(prefix="bpm-verify-") as tmp:
        tmpdir = pathlib.Path(tmp)
        key = tmpdir / "id"
        key.write_text(private_key_pem.strip() + "\n")
        key.chmod(0o600)
        ssh_config = tmpdir / "ssh_config"
        ssh_config.write_text(
            f"Host {host}\n  User {user}\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {known_hosts}\n  StrictHostKeyChecking accept-new\n"
            f"  BatchMode yes\n  ConnectTimeout 10\n")
        (tmpdir / "expect.json").write_text(json.dumps(expect))
        junit = tmpdir / "junit.xml"
        env = {**os.environ, "BPM_INFRA_EXPECT": str(tmpdir / "expect.json")}
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", str(ROOT / "tests" / "infra"), "-q", "-p", "no:cacheprovider",
             f"--hosts=ssh://{host}", f"--ssh-config={ssh_config}", f"--junitxml={junit}",
             *(["--sudo"] if user != "root" else [])],  # checks read root-only files
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        if not junit.exists():
            raise VerificationError(f"the infra suite did not run:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
        cases = ET.parse(junit).getroot().iter("testcase")
        failures, passed = [], 0
        for case in cases:
            if case.find("failure") is not None or case.find("error") is not None:
                failures.append(case.get("name"))
            elif case.find("skipped") is None:
                passed += 1
    return {"passed": passed, "failed": len(failures), "failures": failures}


class _VerificationProvider(ResourceProvider):
    def create(self, props):
        return CreateResult(id_=props["trigger"][:16], outs=self._verify(props))

    def update(self, _id, _olds, news):
        return UpdateResult(outs=self._verify(news))

    def diff(self, _id, olds, news):
        return DiffResult(changes=olds.get("trigger") != news.get("trigger"), replaces=[])

    def _verify(self, props):
        from components import verification
        result = verification.run_suite(props["host"], props["ssh_private_key"],
                                        json.loads(props["expect_json"]), props["known_hosts"],
                                        user=props.get("user", "root"))
        if not result["passed"] and not result["failed"]:
            raise verification.VerificationError(f"verification: no check ran against {props['host']}")
        if result["failed"]:
            raise verification.VerificationError(
                f"verification: {result['failed']} check(s) failed on {props['host']}: "
                + ", ".join(result["failures"]))
        return {**props, "passed": result["passed"], "failed": 0}


class Verification(Resource, module="verification", name="InfraSuite"):
    passed: pulumi.Output[int]
    failed: pulumi.Output[int]

    def __init__(self, name: str, host: pulumi.Input[str], ssh_private_key: pulumi.Input[str],
                 known_hosts: str, expect_json: pulumi.Input[str], trigger: pulumi.Input[str],
                 opts: pulumi.ResourceOptions | None = None, user: str = "root"):
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
            additional_secret_outputs=["ssh_private_key"],
            custom_timeouts=pulumi.CustomTimeouts(create="20m", update="20m")))
        super().__init__(_VerificationProvider(), name, {
            "host": host, "ssh_private_key": pulumi.Output.secret(ssh_private_key),
            "known_hosts": known_hosts, "expect_json": expect_json, "trigger": trigger,
            "passed": None, "failed": None,
            # only when not root: existing stacks keep exactly their inputs (no diff)
            **({"user": user} if user != "root" else {})}, opts)
