"""Bootstrap: the agent and its spec, first boot through user-data, later runs over SSH.

The readable spec and the secrets are separate inputs, so a preview says which spec field
changed while the keys and hashes show only as [secret]; the agent itself shows as its sha256
(the provider builds the zipapp from this checkout and checks it is that one). A run is
triggered by the hash of the spec and of the agent zipapp (the run id) or by a new host;
anything else is a no-op.
"""
from __future__ import annotations

import functools
import hashlib
import pathlib
from dataclasses import dataclass

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

from components import user_data

ROOT = pathlib.Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=1)
def agent_zipapp() -> bytes:
    """The agent zipapp (reproducible: same sources, same bytes), built once per program run."""
    from components import agent_zipapp
    return agent_zipapp.build_bytes(str(ROOT))


class _AgentRunProvider(ResourceProvider):
    def create(self, props):
        return CreateResult(id_=props["run_id"], outs=self._run(props))

    def update(self, _id, olds, news):
        if olds.get("host_id") != news.get("host_id"):
            # Another machine answers at that address now: its host key is new, not an attack.
            from components import remote
            remote.forget_host(news["known_hosts"], news["host"])
        return UpdateResult(outs=self._run(news))

    def diff(self, _id, olds, news):
        keys = ("host_id", "run_id", "secrets_hash", "host")
        changed = [k for k in keys if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[])

    def _run(self, props):
        from components import agent_deploy, bootstrap

        zipapp = bootstrap.agent_zipapp()
        if hashlib.sha256(zipapp).hexdigest() != props["agent_sha256"]:
            raise agent_deploy.AgentRunError(
                "the agent in this checkout changed since the program ran (another sha256 than "
                "the one previewed); run `pulumi up` again")
        target = agent_deploy.Target(props["host"], props["ssh_private_key"],
                                     known_hosts=props["known_hosts"], user=props.get("user", "root"))
        report = agent_deploy.deploy(target, props["spec_json"], props["secrets_json"], zipapp,
                                     props["run_id"], props["boot_run_id"])
        steps = report.get("steps", [])
        return {**props, "changed_steps": sorted(s["name"] for s in steps if s.get("changed")),
                "dkim_txt": (report.get("dkim") or {}).get("txt"), "versions": report.get("versions", {})}


class AgentRun(Resource, module="agent", name="AgentRun"):
    """One applied run of the agent on the host (its report's changed steps, DKIM record)."""
    changed_steps: pulumi.Output[list]
    dkim_txt: pulumi.Output[str]


@dataclass
class BootstrapArgs:
    host: pulumi.Input[str]            # address the stack reaches the host's sshd at
    host_id: pulumi.Input[str]         # changes when the host is recreated
    boot_run_id: pulumi.Input[str]     # the run its user-data performs at first boot; "" if none
    ssh_private_key: pulumi.Input[str]
    known_hosts: str
    spec_json: pulumi.Input[str]
    secrets_json: pulumi.Input[str]
    after: list | None = None          # what the run waits for (DNS records): not inherited by children
    user: str = "root"                 # SSH user; the agent needs root rights


class Bootstrap(pulumi.ComponentResource):
    """Runs the agent on the host for the current spec and agent; outputs the agent's report."""

    def __init__(self, name: str, args: BootstrapArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("bulletproof:mail:Bootstrap", name, None, opts)
        zipapp = agent_zipapp()
        run_id = pulumi.Output.from_input(args.spec_json).apply(lambda s: user_data.run_id(s, zipapp))
        # A hash of the secrets as a plain trigger: new keys or hashes re-run the agent while the
        # preview still shows no secret (sha256 of high-entropy values reveals nothing).
        secrets_hash = pulumi.Output.unsecret(pulumi.Output.from_input(args.secrets_json).apply(
            lambda s: hashlib.sha256(s.encode()).hexdigest()[:16]))
        self.run = AgentRun(_AgentRunProvider(), f"{name}-agent", {
            "host": args.host, "host_id": args.host_id, "boot_run_id": args.boot_run_id,
            "ssh_private_key": pulumi.Output.secret(args.ssh_private_key),
            "known_hosts": args.known_hosts, "spec_json": args.spec_json,
            "secrets_json": pulumi.Output.secret(args.secrets_json), "secrets_hash": secrets_hash,
            "agent_sha256": hashlib.sha256(zipapp).hexdigest(), "run_id": run_id,
            "changed_steps": None, "dkim_txt": None, "versions": None,
            # only when not root: existing stacks keep exactly their inputs (no diff)
            **({"user": args.user} if args.user != "root" else {}),
        }, pulumi.ResourceOptions(parent=self, depends_on=args.after,
                                  aliases=[pulumi.Alias(type_="pulumi-python:dynamic:Resource")],
                                  additional_secret_outputs=["ssh_private_key", "secrets_json"],
                                  custom_timeouts=pulumi.CustomTimeouts(create="25m", update="25m")))
        self.run_id = run_id
        self.register_outputs({"run_id": run_id, "dkim_txt": self.run.dkim_txt})
