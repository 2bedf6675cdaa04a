"""The Pulumi engine built from the module proxy runs a Python program for real."""
import pathlib
import textwrap

import pytest

from tests.e2e.pulumi_cli import ROOT, outputs, pulumi, tools_env

PROGRAM = textwrap.dedent("""
    import pulumi
    from pulumi.dynamic import CreateResult, Resource, ResourceProvider

    class Adder(ResourceProvider):
        def create(self, props):
            return CreateResult(id_="sum", outs={**props, "total": props["a"] + props["b"]})

    class Sum(Resource):
        def __init__(self, name, a, b):
            super().__init__(Adder(), name, {"a": a, "b": b, "total": None})

    cfg = pulumi.Config()
    s = Sum("s", cfg.require_int("a"), 2)
    pulumi.export("total", s.total)
    pulumi.export("token", cfg.require_secret("token"))
""")


@pytest.fixture
def project(tmp_path: pathlib.Path):
    (tmp_path / "Pulumi.yaml").write_text(
        f"name: engine-e2e\nruntime:\n  name: python\n  options:\n    virtualenv: {ROOT / '.venv'}\n")
    (tmp_path / "__main__.py").write_text(PROGRAM)
    env = tools_env(tmp_path / "state")
    pulumi(["stack", "init", "e2e"], tmp_path, env)
    yield tmp_path, env
    pulumi(["destroy", "--yes", "--stack", "e2e"], tmp_path, env, check=False)


def test_cli_is_the_pinned_version(project):
    cwd, env = project
    assert pulumi(["version"], cwd, env).stdout.strip() == "v3.274.1"


def test_python_program_deploys_previews_clean_and_destroys(project):
    cwd, env = project
    pulumi(["config", "set", "a", "40", "--stack", "e2e"], cwd, env)
    pulumi(["config", "set", "--secret", "token", "t0ps3cret", "--stack", "e2e"], cwd, env)
    up = pulumi(["up", "--yes", "--stack", "e2e"], cwd, env)
    assert "2 created" in up.stdout
    assert outputs(cwd, env, "e2e") == {"total": 42, "token": "t0ps3cret"}
    state = (cwd / "state").rglob("e2e.json")
    assert all("t0ps3cret" not in p.read_text() for p in state), "a secret config value is in plain state"
    pulumi(["preview", "--expect-no-changes", "--stack", "e2e"], cwd, env)
    down = pulumi(["destroy", "--yes", "--stack", "e2e"], cwd, env)
    assert "2 deleted" in down.stdout
