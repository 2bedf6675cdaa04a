"""Put the agent's secrets (and, after first boot, the agent and its spec) on a host and apply.

First boot: cloud-init (user-data) already carries the agent and the readable spec, and waits
for the secrets file; we upload it and wait for the agent's report of that run. Later changes,
and every run on a server that booted without our user-data (backend ssh, boot_run_id ""):
we copy the agent and the spec over SSH and run it ourselves. Either way the deploy fails with
the agent's own error. A login user other than root works through `sudo -n` (components/remote).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from agent.contract import (AGENT, CONFIG_DIR, PENDING_DIR, PENDING_SECRETS,
                            PENDING_SPEC, STATE_FILE, apply_command)
from components import remote

# New specs go to pending/: the agent keeps the last *applied* pair in CONFIG_DIR (spec.json,
# secrets.json), so a refused spec never replaces the last good one.


class AgentRunError(RuntimeError):
    pass


@dataclass
class Target:
    host: str
    private_key_pem: str
    known_hosts: str | None = None
    user: str = "root"


def _state(client) -> dict | None:
    raw = remote.get(client, STATE_FILE)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def describe_error(error) -> str:
    """The agent's error (a dict with step, message, file, tool_output, fix) as text."""
    if not isinstance(error, dict):
        return str(error or "no error text in the report")
    parts = [f"{error.get('step', '?')}: {error.get('message', '')}"]
    parts += [f"{k}: {error[k]}" for k in ("file", "tool_output", "fix") if error.get(k)]
    return "\n  ".join(parts)


def _checked(state: dict) -> dict:
    if state.get("status") != "ok":
        raise AgentRunError(f"the agent failed on the host (run {state.get('run_id')}): "
                            f"{describe_error(state.get('error'))}")
    return state


def _wait_first_boot(client, run_id: str, timeout: float) -> dict | None:
    """The first-boot run's report, or None when cloud-init ended (or `timeout` passed) without
    one: a boot that never picked the run up is then applied over SSH instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _state(client)
        if state and state.get("run_id") == run_id:
            return state
        done = remote.run(client, "cloud-init status 2>/dev/null || true", as_root=True).stdout
        if "status: done" in done or "status: error" in done:
            state = _state(client)
            return state if state and state.get("run_id") == run_id else None
        time.sleep(3)
    return None


def _check_sudo(client, target: Target) -> None:
    if target.user != "root" and remote.run(client, "sudo -n true").rc != 0:
        raise AgentRunError(f"ssh_user {target.user!r} on {target.host} has no passwordless sudo "
                            f"(`sudo -n true` failed) and the agent needs root; give it a sudoers "
                            f"rule like `{target.user} ALL=(ALL) NOPASSWD:ALL` or use root")


def _apply_over_ssh(client, run_id: str, timeout: float) -> dict:
    result = remote.run(client, apply_command(run_id), timeout=timeout, as_root=True)
    state = _state(client)
    if result.rc != 0 or not state or state.get("run_id") != run_id:
        detail = (describe_error(state["error"]) if state and state.get("error")
                  else result.stderr.strip() or result.stdout.strip())
        raise AgentRunError(f"the agent failed on the host (run {run_id}): {detail}")
    return _checked(state)


def deploy(target: Target, spec_json: str, secrets_json: str, zipapp: bytes, run_id: str,
           boot_run_id: str, timeout: float = 1200) -> dict:
    """Make the host run the agent for `run_id`; return the agent's report.

    `boot_run_id` is the run its user-data performs at first boot ("" when no user-data runs
    the agent, e.g. an existing server): that run waits for the agent and the secrets, which
    only ever arrive over SSH, the secrets last. Only a run that succeeded is done: a failed
    one is applied again, and a first boot that never ran it is applied over SSH.
    """
    client = remote.connect(target.host, target.private_key_pem, user=target.user,
                            known_hosts=target.known_hosts)
    wait_boot = f"timeout {int(timeout)} cloud-init status --wait >/dev/null 2>&1 || true"
    try:
        _check_sudo(client, target)
        remote.run(client, f"install -d -m 0700 {CONFIG_DIR} {PENDING_DIR}", check=True, as_root=True)
        state = _state(client)
        if state and state.get("run_id") == run_id and state.get("status") == "ok":
            return state
        first_boot = bool(boot_run_id) and run_id == boot_run_id and state is None
        if boot_run_id and remote.run(client, f"test -e {AGENT}", as_root=True).rc == 0:
            # A first-boot run may be going with the agent we sent before: never replace an
            # agent under a running process.
            remote.run(client, wait_boot, timeout=timeout + 30, as_root=True)
        remote.put(client, AGENT, zipapp, 0o755)
        if not first_boot:
            remote.put(client, PENDING_SPEC, spec_json.encode(), 0o600)
        remote.put(client, PENDING_SECRETS, secrets_json.encode(), 0o600)
        if first_boot:
            state = _wait_first_boot(client, run_id, timeout)
            if state and state.get("status") == "ok":
                return state
            remote.put(client, PENDING_SPEC, spec_json.encode(), 0o600)  # apply it ourselves
        elif boot_run_id:  # the secrets just started a first-boot run of an older spec: let it end
            remote.run(client, wait_boot, timeout=timeout + 30, as_root=True)
        return _apply_over_ssh(client, run_id, timeout)
    finally:
        client.close()
