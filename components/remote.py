"""SSH to a mail host with paramiko: connect (bounded retries), upload atomically, run.

Used by the dynamic providers that copy the agent and its secrets to the host and run it, and
by tests. pulumi-command's provider plugin cannot be built here (see README), so this is the
small piece of it we need.
"""
from __future__ import annotations

import io
import os
import posixpath
import shlex
import time
from dataclasses import dataclass

import paramiko


class RemoteError(RuntimeError):
    pass


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str


def _key(private_key_pem: str) -> paramiko.PKey:
    text = private_key_pem.strip() + "\n"
    for kind in (paramiko.Ed25519Key, paramiko.RSAKey, paramiko.ECDSAKey):
        try:
            return kind.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise RemoteError("the SSH private key is neither Ed25519, RSA nor ECDSA")


def connect(host: str, private_key_pem: str, user: str = "root", port: int = 22,
            timeout: float = 180, known_hosts: str | None = None) -> paramiko.SSHClient:
    """Connect, retrying while the host boots; fail after `timeout` seconds with the last error.

    Host keys: trust on first use, remembered in `known_hosts` (one file per stack and host,
    since a recreated host has new keys).
    """
    key = _key(private_key_pem)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        client = paramiko.SSHClient()
        if known_hosts:
            # paramiko's AutoAddPolicy re-reads the file before saving: it must exist.
            os.makedirs(os.path.dirname(known_hosts) or ".", exist_ok=True)
            os.close(os.open(known_hosts, os.O_CREAT | os.O_WRONLY, 0o600))
            client.load_host_keys(known_hosts)
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            client.connect(host, port=port, username=user, pkey=key, timeout=10,
                           allow_agent=False, look_for_keys=False, banner_timeout=20)
            return client
        except paramiko.BadHostKeyException as exc:
            raise RemoteError(f"{host} presents another host key than before ({known_hosts}): "
                              f"if the host was rebuilt, remove its line there") from exc
        except (OSError, paramiko.SSHException) as exc:
            last = exc
            client.close()
            time.sleep(2)
    raise RemoteError(f"cannot SSH to {user}@{host}:{port} within {timeout:.0f} s: {last}")


def put(client: paramiko.SSHClient, path: str, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` atomically (temp file + rename), with `mode` set before rename."""
    run(client, f"mkdir -p {shlex.quote(posixpath.dirname(path))}", check=True)
    tmp = f"{path}.tmp-upload"
    with client.open_sftp() as sftp:
        with sftp.open(tmp, "wb") as fh:
            fh.chmod(mode)
            fh.write(data)
        sftp.posix_rename(tmp, path)


def get(client: paramiko.SSHClient, path: str) -> bytes | None:
    with client.open_sftp() as sftp:
        try:
            with sftp.open(path, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None


def run(client: paramiko.SSHClient, command: str, timeout: float = 900, check: bool = False) -> Result:
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode(errors="replace")
    err = stderr.read().decode(errors="replace")
    rc = stdout.channel.recv_exit_status()
    if check and rc != 0:
        raise RemoteError(f"`{command}` failed ({rc}): {err.strip() or out.strip()}")
    return Result(rc, out, err)
