"""`make backup`, `make backups`, `make restore [MAILBOX=addr] [SNAPSHOT=id]`: the host's restic
backups, driven from this machine over SSH (the agent on the host does the work).

    python -m ops.backup run|snapshots|restore --stack NAME [--mailbox ADDR] [--snapshot ID]

A whole-server restore stops Postfix and Dovecot while it puts the mail back (never the queue
into a running server: it would send mail twice); one mailbox is restored live, into a folder
of its own, so clients' caches stay right.
"""
from __future__ import annotations

import argparse
import shlex
import sys

from agent import contract
from ops import stack as deployed_stack


def agent_command(action: str, mailbox: str | None = None, snapshot: str | None = None) -> str:
    argv = [contract.AGENT, "backup", action]
    if mailbox:
        argv += ["--mailbox", mailbox]
    if snapshot:
        argv += ["--snapshot", snapshot]
    return " ".join(shlex.quote(a) for a in argv)


def run_on_host(d: deployed_stack.Deployed, command: str, timeout: float = 3600):
    from components import remote
    client = remote.connect(d.host, d.private_key, user=d.user, timeout=60, known_hosts=d.known_hosts)
    try:
        return remote.run(client, command, timeout=timeout, as_root=True)
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make backup|backups|restore", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("run", "snapshots", "restore"))
    parser.add_argument("--stack", default="local")
    parser.add_argument("--mailbox", default=None)
    parser.add_argument("--snapshot", default=None)
    args = parser.parse_args(argv)
    if args.action != "restore" and (args.mailbox or args.snapshot):
        parser.error("--mailbox and --snapshot are for restore")
    try:
        d = deployed_stack.load(args.stack)
    except deployed_stack.NotDeployed as exc:
        print(f"{args.action}: {exc}", file=sys.stderr)
        return 2
    result = run_on_host(d, agent_command(args.action, args.mailbox, args.snapshot))
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.rc


if __name__ == "__main__":
    sys.exit(main())
