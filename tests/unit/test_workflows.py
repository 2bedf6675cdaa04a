"""The GitHub workflows: actionlint accepts them, and pull-request code never runs with the
stack passphrases or cloud credentials (docs/backends.md, "Previews in pull requests")."""
import pathlib
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
PREVIEW = yaml.safe_load((ROOT / ".github" / "workflows" / "preview.yml").read_text())
TRUSTED = "preview"   # the one job bound to the protected environment


@pytest.fixture(scope="module")
def actionlint() -> str:
    """Built from the Go module proxy on first use, then cached outside the checkout."""
    out = subprocess.run([str(ROOT / "tools" / "build-actionlint.sh")], capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def lint(actionlint: str, *files) -> subprocess.CompletedProcess:
    return subprocess.run([actionlint, "-no-color", *map(str, files)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def test_the_workflows_pass_actionlint(actionlint):
    assert WORKFLOWS
    out = lint(actionlint, *WORKFLOWS)
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


def test_actionlint_refuses_untrusted_input_in_a_script(actionlint, tmp_path):
    """The control: the linter does read the files it is given."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text("on: pull_request\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo \"${{ github.event.pull_request.title }}\"\n")
    out = lint(actionlint, bad)
    assert out.returncode == 1 and "potentially untrusted" in out.stdout, out.stdout


def test_no_workflow_runs_on_pull_request_target():
    for path in WORKFLOWS:
        triggers = yaml.safe_load(path.read_text()).get(True, {})  # YAML 1.1 reads `on` as true
        assert "pull_request_target" not in triggers and "workflow_run" not in triggers, path


@pytest.mark.parametrize("job", sorted(set(PREVIEW["jobs"]) - {TRUSTED}))
def test_only_the_approved_job_names_a_secret_or_the_environment(job):
    text = yaml.safe_dump(PREVIEW["jobs"][job])
    assert "secrets." not in text and "toJSON(secrets)" not in text
    assert "environment" not in PREVIEW["jobs"][job]


def test_the_preview_job_waits_for_the_protected_environment():
    job = PREVIEW["jobs"][TRUSTED]
    assert job["environment"] == "preview"
    assert job["permissions"] == {"contents": "read"}
    assert "unit" in job["needs"]


def test_the_workflow_token_is_read_only_unless_a_job_says_otherwise():
    assert PREVIEW["permissions"] == {}
    writers = {name for name, job in PREVIEW["jobs"].items()
               if any(v == "write" for v in (job.get("permissions") or {}).values())}
    assert writers == {"comment"}


def test_checkouts_keep_no_token():
    for name, job in PREVIEW["jobs"].items():
        for step in job.get("steps", []):
            if str(step.get("uses", "")).startswith("actions/checkout"):
                assert step["with"]["persist-credentials"] is False, name


def test_the_job_that_writes_to_the_pr_runs_none_of_its_code():
    steps = PREVIEW["jobs"]["comment"]["steps"]
    assert not [s for s in steps if "run" in s or str(s.get("uses", "")).startswith("actions/checkout")]
