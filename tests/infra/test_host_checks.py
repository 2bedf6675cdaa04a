"""The host's own morning checks (`bulletproof-agent status --json`): only fail-level results
fail; warnings (self-signed certificate on the local stack, slow fsync) are shown, not fatal."""
import json

import pytest


@pytest.fixture(scope="module")
def status(host):
    cmd = host.run("/usr/local/sbin/bulletproof-agent status --json")
    assert cmd.stdout.strip(), cmd.stderr
    return json.loads(cmd.stdout)


def test_host_checks_ran(status):
    names = {c["name"] for c in status["checks"]}
    assert {"fcrdns", "mx", "spf", "dkim", "dmarc", "tls", "ports", "queue", "fsync"} <= names


def test_no_host_check_fails(status):
    failed = [f"{c['name']}: {c['reason']} (fix: {c['fix']})"
              for c in status["checks"] if c["level"] == "fail"]
    assert failed == [], "\n".join(failed)
