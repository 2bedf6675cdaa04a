"""Agent runs always converge: a failed run is applied again on the next `up`, a first boot that
never ran the agent is applied over SSH, a replaced host's new key is not taken for an attack.
The host is faked at the SSH layer (components.remote): what it runs and what it holds."""
from __future__ import annotations

import json

import pytest

from agent import contract
from components import agent_deploy, bootstrap, remote


class FakeHost:
    """A host's files and the commands the deploy runs on it; `apply` writes a report."""

    def __init__(self, state: dict | None = None, cloud_init: str = "status: done", apply_ok: bool = True,
                 boot_reports: str | None = None):
        self.files = {contract.STATE_FILE: json.dumps(state).encode()} if state else {}
        self.cloud_init, self.apply_ok, self.commands = cloud_init, apply_ok, []
        self.boot_reports = boot_reports  # the run id first boot reports once cloud-init is asked

    def run(self, _client, command, **_kw):
        self.commands.append(command)
        if command.startswith(f"{contract.AGENT} apply"):
            run_id = command.split("--run-id ")[1].split()[0]
            status = "ok" if self.apply_ok else "failed"
            self.files[contract.STATE_FILE] = json.dumps({"run_id": run_id, "status": status,
                                                          "error": None if self.apply_ok else {"message": "boom"}}).encode()
            return remote.Result(0 if self.apply_ok else 1, "", "")
        if command.startswith("cloud-init status"):
            if self.boot_reports:
                self.files[contract.STATE_FILE] = json.dumps({"run_id": self.boot_reports, "status": "ok"}).encode()
            return remote.Result(0, self.cloud_init, "")
        return remote.Result(0, "", "")

    def put(self, _client, path, data, _mode=0o600):
        self.files[path] = data

    def get(self, _client, path):
        return self.files.get(path)

    @property
    def applies(self) -> int:
        return sum(c.startswith(f"{contract.AGENT} apply") for c in self.commands)


@pytest.fixture
def fake(monkeypatch):
    def install(host: FakeHost) -> FakeHost:
        class Client:
            def close(self):
                pass
        monkeypatch.setattr(remote, "connect", lambda *a, **k: Client())
        monkeypatch.setattr(remote, "run", host.run)
        monkeypatch.setattr(remote, "put", host.put)
        monkeypatch.setattr(remote, "get", host.get)
        return host
    return install


def _deploy(boot_run_id: str = "", run_id: str = "run-1"):
    return agent_deploy.deploy(agent_deploy.Target("192.0.2.10", "key"), "{}", "{}", b"pyz", run_id,
                               boot_run_id, timeout=5)


def test_a_run_that_succeeded_is_not_applied_again(fake):
    host = fake(FakeHost(state={"run_id": "run-1", "status": "ok"}))
    assert _deploy()["status"] == "ok" and host.applies == 0


def test_a_run_that_failed_is_applied_again(fake):
    host = fake(FakeHost(state={"run_id": "run-1", "status": "failed"}))
    assert _deploy()["status"] == "ok" and host.applies == 1


def test_a_run_that_fails_again_says_the_agents_error(fake):
    fake(FakeHost(state={"run_id": "run-1", "status": "failed"}, apply_ok=False))
    with pytest.raises(agent_deploy.AgentRunError, match="boom"):
        _deploy()


def test_a_first_boot_that_never_ran_the_agent_is_applied_over_ssh(fake):
    host = fake(FakeHost(cloud_init="status: done"))  # cloud-init ended, no report of the run
    assert _deploy(boot_run_id="run-1")["status"] == "ok"
    assert host.applies == 1 and contract.PENDING_SPEC in host.files


def test_a_first_boot_that_reported_is_not_applied_again(fake):
    host = fake(FakeHost(cloud_init="status: done", boot_reports="run-1"))
    assert _deploy(boot_run_id="run-1")["status"] == "ok" and host.applies == 0


def test_a_new_host_at_the_same_address_has_its_old_key_forgotten(tmp_path, monkeypatch):
    known = tmp_path / "known_hosts"
    known.write_text("192.0.2.10 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGn5Lh4q7pX8mFlqQ4XGdcU8pZl8XuNzkJkP0G4Vv3Ke\n"
                     "192.0.2.11 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGn5Lh4q7pX8mFlqQ4XGdcU8pZl8XuNzkJkP0G4Vv3Ke\n")
    monkeypatch.setattr(bootstrap._AgentRunProvider, "_run", lambda self, props: props)
    props = {"host": "192.0.2.10", "host_id": "vm-2", "known_hosts": str(known)}
    bootstrap._AgentRunProvider().update("id", {**props, "host_id": "vm-1"}, props)
    assert known.read_text().split()[0] == "192.0.2.11" and "192.0.2.10" not in known.read_text()
