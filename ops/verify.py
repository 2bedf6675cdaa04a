"""`make verify`: run the read-only infra suite against a deployed stack's host, any time, exactly
as the Verification resource does after `up`."""
from __future__ import annotations

import argparse
import json
import sys

from components import verification
from ops import stack as deployed_stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make verify", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="local")
    args = parser.parse_args(argv)
    try:
        d = deployed_stack.load(args.stack)
    except deployed_stack.NotDeployed as exc:
        print(f"verify: {exc}", file=sys.stderr)
        return 2
    result = verification.run_suite(d.host, d.private_key, d.expectations, d.known_hosts, user=d.user)
    print(json.dumps(result, indent=2))
    return 1 if result["failed"] or not result["passed"] else 0


if __name__ == "__main__":
    sys.exit(main())
