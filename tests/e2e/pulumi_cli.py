"""Runs the real `pulumi` CLI for the e2e tests with state of their own, never the user's."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]


def tools_env(state_dir: pathlib.Path, passphrase: str = "e2e-passphrase") -> dict[str, str]:
    """The Makefile's environment (toolchain on PATH, no downloads) with a throwaway backend."""
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "tools"], check=True, capture_output=True, text=True)
    del out
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "bulletproof-mail"
    bin_dir = next(cache.glob("pulumi-v*/bin"))
    env = dict(os.environ)
    env.update({
        "PATH": f"{bin_dir}:{ROOT / '.venv/bin'}:{env['PATH']}",
        "PULUMI_BACKEND_URL": f"file://{state_dir}",
        "PULUMI_HOME": str(cache / "pulumi-home"),
        "PULUMI_CONFIG_PASSPHRASE": passphrase,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
    })
    state_dir.mkdir(parents=True, exist_ok=True)
    return env


def pulumi(args: list[str], cwd: pathlib.Path, env: dict[str, str], check: bool = True,
           timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(["pulumi", "--non-interactive", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"pulumi {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def outputs(cwd: pathlib.Path, env: dict[str, str], stack: str) -> dict:
    return json.loads(pulumi(["stack", "output", "--json", "--show-secrets", "--stack", stack], cwd, env).stdout)
