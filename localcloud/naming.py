"""Names of everything localcloud creates, derived from a stack name and the checkout path.

Two clones on one machine (a developer's and CI's) with the same stack name must never share a
bridge, a container or a directory, so every name carries a hash of (stack, checkout).
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

# The checkout this package lives in; a second clone has a different path, hence other names.
DEFAULT_CHECKOUT = Path(__file__).resolve().parent.parent
RUNTIME_ROOT_ENV = "BULLETPROOF_LOCAL_RUNTIME"
DEFAULT_RUNTIME_ROOT = Path("/var/lib/bulletproof-mail-local")
BACKUP_ROOT_ENV = "BULLETPROOF_LOCAL_BACKUPS"
DEFAULT_BACKUP_ROOT = Path("/var/lib/bulletproof-mail-backups")
IFNAMSIZ = 15  # Linux interface names: 15 characters plus the NUL
# systemd-nspawn names the host end of a bridged veth "vb-<machine>"; keep that whole.
VETH_PREFIX = "vb-"
MAX_MACHINE = IFNAMSIZ - len(VETH_PREFIX)

_HOST_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _slug(text: str, limit: int) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].strip("-") or "x"


def cache_dir() -> Path:
    """Machine-wide cache (images); shared by every stack and checkout on purpose."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bulletproof-mail"


def state_home() -> Path:
    """The deploying machine's own state (XDG_STATE_HOME): known host keys and the like."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "bulletproof-mail"


def known_hosts(names: "StackNames") -> Path:
    """The host keys the deploying machine knows for the stack (any backend): one file per
    stack, since a recreated host has new keys."""
    return state_home() / names.stack_id / "known_hosts"


def runtime_root() -> Path:
    return Path(os.environ.get(RUNTIME_ROOT_ENV) or DEFAULT_RUNTIME_ROOT)


def volume_dir(volume_id: str) -> Path:
    """A local data volume: outside every stack's runtime dir (which a rebuild or a moved
    checkout leaves behind), keyed by the id the stack keeps in its state."""
    if not re.fullmatch(r"[0-9a-f]{12,32}", volume_id):
        raise ValueError(f"volume id {volume_id!r} is not a hex id")
    return runtime_root() / "volumes" / volume_id


def backups_dir(names: "StackNames") -> Path:
    """The local stack's backup repository: outside its runtime dir and its volume, kept by
    `make down` (a backup that dies with the server is no backup)."""
    return Path(os.environ.get(BACKUP_ROOT_ENV) or DEFAULT_BACKUP_ROOT) / names.stack_id


@dataclass(frozen=True)
class StackNames:
    stack: str
    checkout: Path
    key: str  # hex digest of (stack, checkout); the seed of the subnet and ULA choice
    stack_id: str  # readable and unique: "<stack slug>-<hash>"
    bridge: str
    runtime_dir: Path

    @property
    def hosts_dir(self) -> Path:
        return self.runtime_dir / "hosts"

    @property
    def proxy_dir(self) -> Path:
        return self.runtime_dir / "proxy"

    @property
    def network_file(self) -> Path:
        return self.runtime_dir / "network.json"

    def host_dir(self, host: str) -> Path:
        return self.hosts_dir / check_host(host)

    def machine(self, host: str) -> str:
        return machine_name(self, host)


def stack_names(stack: str, checkout: str | os.PathLike | None = None) -> StackNames:
    if not stack:
        raise ValueError("stack name is empty")
    path = Path(checkout).resolve() if checkout else DEFAULT_CHECKOUT
    key = _digest("stack", stack, str(path))
    stack_id = f"{_slug(stack, 24)}-{key[:8]}"
    return StackNames(
        stack=stack,
        checkout=path,
        key=key,
        stack_id=stack_id,
        bridge=f"bm-{key[:8]}",  # 11 characters, fits IFNAMSIZ
        runtime_dir=runtime_root() / stack_id,
    )


def check_host(host: str) -> str:
    """A host name as used for dirs and machine names: a DNS label, lower case."""
    if not _HOST_RE.match(host) or len(host) > 63:
        raise ValueError(f"host name {host!r} must be a DNS label: a-z, 0-9 and '-'")
    return host


def machine_name(names: StackNames, host: str) -> str:
    """nspawn machine name: readable prefix + hash of (stack key, host), <= 12 chars.

    The hash covers the full host name, so "mail-a1" and "mail-a2" differ even though the
    readable prefix is cut; 12 chars keep the veth "vb-<machine>" within IFNAMSIZ.
    """
    check_host(host)
    suffix = _digest("host", names.key, host)[:6]
    prefix = host[: MAX_MACHINE - len(suffix) - 1].rstrip("-")
    name = f"{prefix}-{suffix}"
    assert len(name) <= MAX_MACHINE
    return name
