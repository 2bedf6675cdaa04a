"""`make outputs`: the stack outputs as one JSON object, secrets shown (keep it private)."""
from __future__ import annotations

import argparse
import json
import sys

from ops import stack as deployed_stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make outputs", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="local")
    args = parser.parse_args(argv)
    print("outputs: secrets are shown in clear text", file=sys.stderr)
    print(json.dumps(deployed_stack.outputs(args.stack), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
