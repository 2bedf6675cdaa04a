"""The run report (/var/lib/bulletproof-mail/state.json) and ``status``.

The report is what the Pulumi side, testinfra and a human read after a run: run id,
ok/failed with the error, each step (changed, ok, duration), versions, the DKIM TXT record.
"""
from __future__ import annotations

import datetime
import json
import os

import agent
from agent import files, packages, services
from agent.contract import CONFIG_DIR, STATE_FILE
from agent.host import Host



def build(host: Host, spec, steps, error=None, dkim_txt: str = "", started: float = 0,
          mode: str = "apply") -> dict:
    return {
        "run_id": host.run_id,
        "mode": mode,
        "status": "failed" if error else "ok",
        "error": error.as_dict() if hasattr(error, "as_dict") else (str(error) if error else None),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "changed": any(s.changed for s in steps),
        "steps": [s.as_dict() for s in steps],
        "versions": {"agent": agent.AGENT_VERSION, "spec": getattr(spec, "version", None),
                     **(packages.versions(host) if host.live else {})},
        "domain": getattr(spec, "domain", None),
        "hostname": getattr(spec, "hostname", None),
        "dkim": ({"selector": spec.dkim.selector,
                  "name": f"{spec.dkim.selector}._domainkey.{spec.domain}",
                  "txt": dkim_txt} if dkim_txt else None),
    }


def write(host: Host, report: dict) -> None:
    # The plan of a dry run is not the host's state: keep the last real report.
    if report.get("mode") != "apply":
        return
    path = host.path(STATE_FILE)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    files.write_atomic(path, (json.dumps(report, indent=2, sort_keys=True) + "\n").encode(),
                       0o600, "root", "root")


def keep_spec(host: Host, raw_public: bytes, raw_secrets: bytes | None) -> None:
    """The last applied spec stays on the host, so a human can re-apply by hand."""
    os.makedirs(host.path(CONFIG_DIR), mode=0o700, exist_ok=True)
    for name, data in (("spec.json", raw_public), ("secrets.json", raw_secrets)):
        if data is None:
            continue
        path = host.path(f"{CONFIG_DIR}/{name}")
        try:
            with open(path, "rb") as f:
                if f.read() == data and (os.stat(path).st_mode & 0o777) == 0o600:
                    continue
        except OSError:
            pass
        files.write_atomic(path, data, 0o600, "root", "root")


def _firewall(host: Host) -> str:
    """The applied spec's ssh.firewall (managed when unknown)."""
    try:
        with open(host.path(f"{CONFIG_DIR}/spec.json")) as f:
            return (json.load(f).get("ssh") or {}).get("firewall", "managed")
    except (OSError, ValueError, AttributeError):
        return "managed"


def status(host: Host) -> dict:
    try:
        with open(host.path(STATE_FILE)) as f:
            last = json.load(f)
    except (OSError, ValueError) as exc:
        last = {"status": "unknown", "error": f"no report: {exc}"}
    units = {}
    if host.live:
        for s in services.units(_firewall(host)):
            active, enabled = services.unit_state(host, s)
            units[s] = {"active": active, "enabled": enabled}
    return {"last_run": last, "services": units,
            "healthy": last.get("status") == "ok" and all(u["active"] for u in units.values())}
