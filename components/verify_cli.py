"""`make verify`: run the read-only infra suite against a deployed stack's host, any time.

Reads the stack's outputs through the pulumi CLI (so it needs the stack's passphrase like any
other command) and runs tests/infra exactly as the Verification resource does after `up`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from components import verification


def stack_outputs(stack: str) -> dict:
    out = subprocess.run(["pulumi", "--non-interactive", "stack", "output", "--json", "--show-secrets",
                          "--stack", stack], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make verify", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="local")
    args = parser.parse_args(argv)
    outs = stack_outputs(args.stack)
    if "host_ipv4" not in outs:
        print(f"verify: stack {args.stack} has no deployed host (run `make up` first)", file=sys.stderr)
        return 2
    from localcloud import naming
    import pathlib
    checkout = pathlib.Path(__file__).resolve().parents[1]
    known_hosts = str(naming.stack_names(args.stack, checkout).runtime_dir / "known_hosts")
    expect = {"domain": outs["domain"], "hostname": outs["fqdn"], "users": outs["mail_users"],
              "dkim_txt": outs["dkim_txt"]}
    user, _, host = outs["ssh_target"].partition("@")
    result = verification.run_suite(host, outs["ssh_private_key"], expect, known_hosts, user=user)
    print(json.dumps(result, indent=2))
    return 1 if result["failed"] or not result["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
