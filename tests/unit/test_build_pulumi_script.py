"""tools/build-pulumi.sh with a fake `go` and `pulumi`: one line per stage on the terminal, the
tools' output in the logs, a failure that says where to look. No network, no real build."""
import os
import pathlib
import subprocess
import textwrap

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "tools" / "build-pulumi.sh"
VERSION = "v3.274.1"
DOWNLOADS = 300

# Every binary the fake go "builds" is this fake pulumi, so the built CLI can install the plugin.
FAKE_PULUMI = textwrap.dedent("""\
    #!/bin/bash
    case "$1" in
      version) echo "@VERSION@" ;;
      plugin)  # plugin install resource command 1.2.1 --reinstall --file FILE
        file=""; while [ $# -gt 0 ]; do [ "$1" = --file ] && file=$2; shift; done
        echo "[resource plugin command-1.2.1] installing from $file" >&2
        if [ -n "${FAKE_PULUMI_FAIL:-}" ]; then echo "error: plugin install went wrong" >&2; exit 3; fi
        d=$PULUMI_HOME/plugins/resource-command-v1.2.1
        mkdir -p "$d" && cp "$file" "$d/pulumi-resource-command" ;;
    esac
    """)

FAKE_GO = textwrap.dedent("""\
    #!/bin/bash
    set -eu
    echo "$*" >> "$FAKE_GO_CALLS"
    if [ "$1" = -C ]; then cd "$2"; shift 2; fi
    cmd=$1; shift
    case $cmd in
      list) echo "$FAKE_SDK" ;;
      build)
        out=""; while [ $# -gt 0 ]; do [ "$1" = -o ] && out=$2; shift; done
        for i in $(seq @DOWNLOADS@); do echo "go: downloading example.com/mod$i v1.0.$i" >&2; done
        if [ "${FAKE_GO_FAIL:-}" = "$(basename "$PWD")" ]; then
          for i in $(seq 30); do echo "./main.go:$i:2: undefined: thing$i" >&2; done
          exit 2
        fi
        if [ "${FAKE_GO_SLOW:-}" = "$(basename "$PWD")" ]; then sleep "$FAKE_GO_SLEEP"; fi
        cp "$FAKE_PULUMI" "$out" ;;
      *) echo "fake go: unexpected $cmd" >&2; exit 9 ;;
    esac
    """).replace("@DOWNLOADS@", str(DOWNLOADS))


def fake_pulumi(path, version):
    path.write_text(FAKE_PULUMI.replace("@VERSION@", version))
    path.chmod(0o755)
    return path


@pytest.fixture
def env(tmp_path):
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "go").write_text(FAKE_GO)
    (fake / "go").chmod(0o755)
    # Too old to be used, and it hides any real pulumi in /usr/bin.
    fake_pulumi(fake / "pulumi", "v3.0.0")
    sdk = tmp_path / "sdk"
    for script in ("python/cmd/pulumi-language-python-exec", "python/dist/pulumi-resource-pulumi-python"):
        (sdk / script).parent.mkdir(parents=True, exist_ok=True)
        (sdk / script).write_text("#!/bin/sh\n")
    return {
        "PATH": f"{fake}:/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "FAKE_GO_CALLS": str(tmp_path / "go-calls"),
        "FAKE_SDK": str(sdk),
        "FAKE_PULUMI": str(fake_pulumi(tmp_path / "built-pulumi", VERSION)),
    }


def run(env, **extra):
    return subprocess.run([str(SCRIPT)], env={**env, **extra}, capture_output=True, text=True,
                          timeout=60)


def paths(env):
    top = pathlib.Path(env["XDG_CACHE_HOME"]) / "bulletproof-mail" / f"pulumi-{VERSION}"
    return top / "bin", top / "logs"


def builds(env):
    calls = pathlib.Path(env["FAKE_GO_CALLS"])
    return [c for c in calls.read_text().splitlines() if " build " in c] if calls.exists() else []


def test_cold_run_prints_one_line_per_stage_start_and_end(env):
    r = run(env)
    bin_dir, logs = paths(env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{bin_dir}\n"
    lines = r.stderr.splitlines()
    assert all(line.startswith("build-pulumi: ") for line in lines), r.stderr
    starts = [line for line in lines if "; log: " in line]
    ends = [line for line in lines if ": done in " in line]
    assert len(starts) == len(ends) == 4 == len(lines) / 2, r.stderr
    for line, estimate, log in zip(starts, ["(about 6-8 min cold", "(30 s-1 min cold",
                                            "(45 s-2 min cold", "(a few seconds;"],
                                   ["pulumi-cli", "pulumi-language-python",
                                    "pulumi-command-provider", "plugin-install"]):
        assert estimate in line and line.endswith(f"; log: {logs}/{log}.log)")
    assert "go: downloading" not in r.stderr
    for name in ("pulumi", "pulumi-language-python", "pulumi-language-python-exec",
                 "pulumi-resource-pulumi-python"):
        assert os.access(bin_dir / name, os.X_OK), name


def test_the_logs_hold_the_tools_output(env):
    assert run(env).returncode == 0
    _, logs = paths(env)
    for name in ("pulumi-cli", "pulumi-language-python", "pulumi-command-provider"):
        text = (logs / f"{name}.log").read_text()
        assert text.count("go: downloading") == DOWNLOADS
    assert "installing from" in (logs / "plugin-install.log").read_text()


def test_warm_run_is_silent_and_builds_nothing(env):
    assert run(env).returncode == 0
    before = len(builds(env))
    r = run(env)
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout == f"{paths(env)[0]}\n"
    assert len(builds(env)) == before == 3


def test_plugin_goes_into_pulumi_home(env, tmp_path):
    home = tmp_path / "pulumi-home"
    assert run(env, PULUMI_HOME=str(home)).returncode == 0
    assert (home / "plugins/resource-command-v1.2.1/pulumi-resource-command").is_file()


@pytest.mark.parametrize("stage, what, extra", [
    ("pulumi-cli", "the pulumi CLI", {"FAKE_GO_FAIL": "pulumi-cli"}),
    ("pulumi-language-python", "language host", {"FAKE_GO_FAIL": "pulumi-language-python"}),
    ("pulumi-command-provider", "command provider", {"FAKE_GO_FAIL": "pulumi-command-provider"}),
    ("plugin-install", "installing resource plugin", {"FAKE_PULUMI_FAIL": "1"}),
])
def test_a_failure_names_the_stage_the_log_and_its_tail(env, stage, what, extra):
    r = run(env, **extra)
    _, logs = paths(env)
    log = logs / f"{stage}.log"
    assert r.returncode != 0
    assert r.stdout == ""
    failed = [line for line in r.stderr.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and what in failed[0] and str(log) in failed[0], r.stderr
    tail = log.read_text().splitlines()[-20:]
    shown = r.stderr.split(failed[0] + "\n", 1)[1].splitlines()
    assert shown == ["  | " + line for line in tail]
    assert "go: downloading example.com/mod1 " not in r.stderr  # only the tail


def test_a_failed_build_is_retried_next_time(env):
    assert run(env, FAKE_GO_FAIL="pulumi-language-python").returncode != 0
    r = run(env)
    assert r.returncode == 0
    assert "building our Python language host" in r.stderr
    assert "building the pulumi CLI" not in r.stderr  # that one had succeeded


def test_a_long_stage_has_a_sparse_heartbeat(env):
    r = run(env, BUILD_PULUMI_HEARTBEAT="1", FAKE_GO_SLOW="pulumi-cli", FAKE_GO_SLEEP="2.5")
    assert r.returncode == 0, r.stderr
    beats = [line for line in r.stderr.splitlines() if "still running" in line]
    assert 1 <= len(beats) <= 3, r.stderr
    assert all("building the pulumi CLI" in line and "so far" in line for line in beats)


def test_a_pulumi_on_path_at_least_the_pinned_version_wins(env, tmp_path):
    newer = tmp_path / "newer"
    newer.mkdir()
    fake_pulumi(newer / "pulumi", "v3.280.0")
    r = run(env, PATH=f"{newer}:{env['PATH']}")
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[0] == f"build-pulumi: using {newer / 'pulumi'} (v3.280.0)"
    assert "building the pulumi CLI" not in r.stderr
    assert (paths(env)[0] / "pulumi").resolve() == newer / "pulumi"
    assert not any("pulumi-cli" in call for call in builds(env))
