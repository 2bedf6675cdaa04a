"""The CLI and the engine on a temporary root: plan touches nothing, apply writes every file
with its mode, a second apply changes nothing, a refused config leaves the old files."""
import json
import os
import subprocess
import sys

import pytest

from agent import example
from agent.contract import TLS_CERT

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def spec_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("spec")
    return example.write(str(d), example.example(dkim_pem=example.dkim_key(1024)))


def agent(*args, cwd=REPO):
    proc = subprocess.run([sys.executable, "-m", "agent", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    return proc


def tree(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            st = os.stat(p)
            out[p] = (st.st_mtime_ns, st.st_mode, open(p, "rb").read())
    return out


def test_plan_touches_nothing(tmp_path, spec_files):
    root = tmp_path / "root"
    (root / "etc/postfix").mkdir(parents=True)
    (root / "etc/postfix/main.cf").write_text("# old\n")
    before = tree(root)
    proc = agent("plan", "--spec", spec_files[0], "--root", str(root), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert tree(root) == before
    files_step = next(s for s in report["steps"] if s["name"] == "files")
    assert files_step["changed"] is True
    assert "-# old" in files_step["diff"]
    assert not any("PRIVATE KEY" in line for line in files_step["diff"])


def test_apply_writes_files_then_second_apply_changes_nothing(tmp_path, spec_files):
    root = str(tmp_path / "root")
    first = agent("apply", "--spec", spec_files[0], "--root", root, "--json", "--run-id", "r1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert json.loads(first.stdout)["changed"] is True
    key = os.path.join(root, "etc/opendkim/keys/example.test/s1.private")
    assert oct(os.stat(key).st_mode & 0o777) == "0o600"
    assert oct(os.stat(os.path.join(root, "etc/bulletproof-mail/spec.json")).st_mode & 0o777) \
        == "0o600"
    state = json.load(open(os.path.join(root, "var/lib/bulletproof-mail/state.json")))
    assert state["run_id"] == "r1" and state["status"] == "ok"
    assert state["dkim"]["txt"].startswith("v=DKIM1; k=rsa; p=")
    second = agent("apply", "--spec", spec_files[0], "--root", root, "--json")
    report = json.loads(second.stdout)
    assert report["changed"] is False
    assert all(s["changed"] is False for s in report["steps"]), report["steps"]


def test_refused_config_keeps_the_old_files(tmp_path, spec_files):
    root = str(tmp_path / "root")
    assert agent("apply", "--spec", spec_files[0], "--root", root).returncode == 0
    before = tree(os.path.join(root, "etc"))
    data = json.load(open(spec_files[0]))
    # Passes the schema (it looks like PEM), refused by the tool (openssl) in staging.
    data["tls"] = {"mode": "provided",
                   "cert_pem": "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----"}
    secrets = json.load(open(spec_files[1]))
    secrets["tls_key_pem"] = data_key = json.load(open(spec_files[1]))["dkim_private_key_pem"]
    assert data_key
    bad, bad_secrets = tmp_path / "bad.json", tmp_path / "bad-secrets.json"
    bad.write_text(json.dumps(data))
    bad_secrets.write_text(json.dumps(secrets))
    proc = agent("apply", "--spec", str(bad), "--secrets", str(bad_secrets), "--root", root)
    assert proc.returncode == 1
    assert TLS_CERT in proc.stderr and "openssl" in proc.stderr
    after = tree(os.path.join(root, "etc"))
    assert {k: v[2] for k, v in after.items()} == {k: v[2] for k, v in before.items()}
    state = json.load(open(os.path.join(root, "var/lib/bulletproof-mail/state.json")))
    assert state["status"] == "failed" and state["error"]["step"] == "validate"


def test_invalid_spec_exits_2_listing_paths(tmp_path, spec_files):
    data = json.load(open(spec_files[0]))
    data["users"][0]["address"] = "x@elsewhere.test"
    data["ipv4"] = "bad"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    proc = agent("plan", "--spec", str(bad), "--secrets", spec_files[1], "--root",
                 str(tmp_path))
    assert proc.returncode == 2
    assert "ipv4: not an IPv4 address" in proc.stderr
    assert "users[0].password_hash: required" in proc.stderr  # hash keyed by the old address


def test_status_reports_last_run(tmp_path, spec_files):
    root = str(tmp_path / "root")
    agent("apply", "--spec", spec_files[0], "--root", root, "--run-id", "abc")
    proc = agent("status", "--root", root, "--json")
    st = json.loads(proc.stdout)
    assert st["last_run"]["run_id"] == "abc" and st["healthy"] is True
