"""`python -m localcloud status|stop-all|purge-backups --stack NAME`: for humans, `make down`
and `make purge-backups`."""
from __future__ import annotations

import argparse
import json
import sys

from . import aptproxy, container, mounts, naming, network, process


def _status(names: naming.StackNames) -> dict:
    bridge = network.read_bridge(names)
    return {
        "stack": names.stack, "stack_id": names.stack_id, "runtime_dir": str(names.runtime_dir),
        "bridge": bridge.to_json() if bridge else None,
        "bridge_up": network.bridge_exists(names.bridge),
        "proxy_pid": aptproxy.status(names),
        "daemons": _daemons(names),
        "hosts": {h: {"machine": names.machine(h), "running": container.status(names, h)}
                  for h in container.hosts(names)},
    }


def _daemons(names: naming.StackNames) -> dict[str, int]:
    """Every daemon of the stack still running, by its PID file: all of them (proxy, DNS, sink,
    ...) are started through process.spawn, whose "PID STARTTIME" record proves the process
    is the one the stack started, so no module's own knowledge is needed to stop it."""
    found = {}
    if names.runtime_dir.exists():
        for pidfile in sorted(names.runtime_dir.glob("*/*.pid")):
            if pidfile.parent != names.hosts_dir:
                pid = process.recorded(pidfile, [])
                if pid:
                    found[str(pidfile.relative_to(names.runtime_dir))] = pid
    return found


def stop_all(names: naming.StackNames, keep_disks: bool = False) -> None:
    """Everything of the stack, in reverse order of creation: hosts (an orderly poweroff),
    the host-side daemons, the bridge; then, unless keep_disks, its runtime dir."""
    for host in container.hosts(names):
        container.stop(names, host, destroy=not keep_disks)
    aptproxy.stop(names)
    for pid in _daemons(names).values():
        process.terminate(pid, 10)
    network.remove_bridge(names)
    if not keep_disks:
        mounts.remove_tree(names.runtime_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcloud", description=__doc__)
    parser.add_argument("command", choices=["status", "stop-all", "purge-backups"])
    parser.add_argument("--stack", required=True, help="Pulumi stack name, e.g. local")
    parser.add_argument("--checkout", help="checkout path (default: this package's checkout)")
    parser.add_argument("--keep-disks", action="store_true",
                        help="stop-all: keep the hosts' disks and the stack's records")
    args = parser.parse_args(argv)
    names = naming.stack_names(args.stack, args.checkout)
    if args.command == "status":
        json.dump(_status(names), sys.stdout, indent=2)
        print()
    elif args.command == "purge-backups":
        path = naming.backups_dir(names)
        mounts.remove_tree(path)
        print(f"localcloud: backups of stack {names.stack_id} removed ({path})")
    else:
        stop_all(names, keep_disks=args.keep_disks)
        print(f"localcloud: stack {names.stack_id} stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
