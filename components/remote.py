"""SSH to a mail host with paramiko: connect (bounded retries), upload atomically, run.

Used by the dynamic providers that copy the agent and its secrets to the host and run it, and
by tests. A login user other than root (Debian's cloud images give the key to `debian`) works
through `sudo -n`, so a user without passwordless sudo fails at once instead of waiting for a
password. Uploads go to a private temp dir and are installed as root, for every login user.
"""
from __future__ import annotations

import base64
import hashlib
import io
import os
import shlex
import time
from dataclasses import dataclass

import paramiko


class RemoteError(RuntimeError):
    pass


class Client(paramiko.SSHClient):
    """An SSH client that remembers its login user: put/get/run(as_root) use sudo unless root."""
    login_user = "root"


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
            timeout: float = 180, known_hosts: str | None = None) -> Client:
    """Connect, retrying while the host boots; fail after `timeout` seconds with the last error.

    Host keys: pinned at first contact in `known_hosts` (one file per stack, since a recreated
    host has new keys) and checked on every later connection: another key fails at once. A
    host the stack replaced (a new host id) is forgotten first (`forget_host`).
    """
    key = _key(private_key_pem)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        client = Client()
        if known_hosts:
            # paramiko's AutoAddPolicy re-reads the file before saving: it must exist.
            os.makedirs(os.path.dirname(known_hosts) or ".", exist_ok=True)
            os.close(os.open(known_hosts, os.O_CREAT | os.O_WRONLY, 0o600))
            client.load_host_keys(known_hosts)
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            client.connect(host, port=port, username=user, pkey=key, timeout=10,
                           allow_agent=False, look_for_keys=False, banner_timeout=20)
            client.login_user = user
            return client
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyChanged(host, known_hosts, exc.expected_key, exc.key) from exc
        except (OSError, paramiko.SSHException) as exc:
            last = exc
            client.close()
            time.sleep(2)
    raise RemoteError(f"cannot SSH to {user}@{host}:{port} within {timeout:.0f} s: {last}")


def fingerprint(key: paramiko.PKey) -> str:
    """As OpenSSH prints it: SHA256:<base64 without padding>."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


class HostKeyChanged(RemoteError):
    """The host offers another key than the one pinned at first contact."""

    def __init__(self, host: str, known_hosts: str | None, pinned: paramiko.PKey,
                 offered: paramiko.PKey):
        super().__init__(
            f"{host}: the SSH host key changed; pinned {pinned.get_name()} {fingerprint(pinned)} "
            f"(in {known_hosts}), now offered {offered.get_name()} {fingerprint(offered)}. Nothing "
            f"was sent. If you rebuilt or reinstalled this server outside the stack, check the new "
            f"key on its console (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) and then "
            f"forget the old one: ssh-keygen -R {host} -f {known_hosts}; otherwise someone may be "
            f"in the middle: do not connect.")


def forget_host(known_hosts: str, host: str) -> None:
    """Drop `host`'s keys from `known_hosts` (the host was replaced; its next key is pinned anew)."""
    if not os.path.exists(known_hosts):
        return
    keys = paramiko.HostKeys(known_hosts)
    for name in [n for n in keys.keys() if n in (host, f"[{host}]:22")]:
        del keys[name]
    keys.save(known_hosts)
    os.chmod(known_hosts, 0o600)


# root's PATH: sudo keeps the login user's (no sbin) unless its sudoers sets secure_path
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _as_root(client: paramiko.SSHClient, command: str) -> str:
    """The command as root: as is when logged in as root, else through `sudo -n`."""
    if getattr(client, "login_user", "root") == "root":
        return command
    return f"sudo -n env PATH={ROOT_PATH} sh -c {shlex.quote(command)}"


def put(client: paramiko.SSHClient, path: str, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` as root, atomically (temp file + rename), `mode` set before rename.

    The bytes go to a 0700 dir of the login user first, then are installed (owner root) as root.
    """
    tmp = f"{path}.tmp-upload"
    staging = run(client, "mktemp -d", check=True).stdout.strip()
    try:
        with client.open_sftp() as sftp:
            with sftp.open(f"{staging}/upload", "wb") as fh:
                fh.chmod(0o600)
                fh.write(data)
        q = shlex.quote
        run(client, f"install -D -o root -g root -m {mode:o} {q(staging)}/upload {q(tmp)} && "
                    f"mv -f {q(tmp)} {q(path)}", check=True, as_root=True)
    finally:
        run(client, f"rm -rf {shlex.quote(staging)}")


def get(client: paramiko.SSHClient, path: str) -> bytes | None:
    """The file's bytes (read as root), or None when it does not exist."""
    q = shlex.quote(path)
    rc, out, err = _run_bytes(client, _as_root(client, f"test -e {q} || exit 3; cat {q}"), 120)
    if rc == 3:
        return None
    if rc != 0:
        raise RemoteError(f"cannot read {path} as root: {err.decode(errors='replace').strip()}")
    return out


def _run_bytes(client: paramiko.SSHClient, command: str, timeout: float) -> tuple[int, bytes, bytes]:
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out, err = stdout.read(), stderr.read()
    return stdout.channel.recv_exit_status(), out, err


def run(client: paramiko.SSHClient, command: str, timeout: float = 900, check: bool = False,
        as_root: bool = False) -> Result:
    """Run `command` (as root through sudo -n when `as_root` and the login user is not root)."""
    if as_root:
        command = _as_root(client, command)
    rc, raw_out, raw_err = _run_bytes(client, command, timeout)
    out, err = raw_out.decode(errors="replace"), raw_err.decode(errors="replace")
    if check and rc != 0:
        raise RemoteError(f"`{command}` failed ({rc}): {err.strip() or out.strip()}")
    return Result(rc, out, err)
