"""The cloud-init user-data that runs the agent on first boot: one document for every backend.

It carries the readable spec and the first-boot command, never a secret (clouds expose
user-data through their metadata services). The command waits (bounded) for the agent and the
secrets, which the stack uploads over SSH (secrets last), then applies. The agent is not in
the document: clouds cap user-data (OpenStack at 64 KiB, some at 16 KiB). Gzip-compressed,
which cloud-init reads as is; the run id still names the agent's bytes.
"""
from __future__ import annotations

import gzip
import hashlib
import json

from agent import contract

SECRETS_WAIT_S = 900


def run_id(spec_json: str, zipapp: bytes) -> str:
    """Names one agent run: the same spec and agent give the same id (no re-run)."""
    digest = hashlib.sha256(spec_json.encode() + b"\0" + hashlib.sha256(zipapp).digest())
    return "run-" + digest.hexdigest()[:16]


def document(spec_json: str, rid: str) -> str:
    """The cloud-config of run `rid` (run_id of this spec and the agent)."""
    wait_and_apply = (
        f"chmod 0700 {contract.PENDING_DIR}; for i in $(seq {SECRETS_WAIT_S}); do "
        f"[ -s {contract.PENDING_SECRETS} ] && [ -x {contract.AGENT} ] && break; sleep 1; done; "
        f"{contract.apply_command(rid)} > {contract.FIRSTBOOT_LOG} 2>&1"
    )
    config = {
        "write_files": [{"path": contract.PENDING_SPEC, "permissions": "0600", "content": spec_json}],
        "runcmd": [["sh", "-c", wait_and_apply]],
    }
    # JSON is YAML; sorted keys keep the document byte-for-byte stable.
    return "#cloud-config\n" + json.dumps(config, sort_keys=True, indent=1) + "\n"


def compressed(spec_json: str, rid: str) -> bytes:
    return gzip.compress(document(spec_json, rid).encode(), mtime=0)
