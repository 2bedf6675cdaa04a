"""Deploy timings of the local default, on a throwaway stack: prints a table.

    .venv/bin/python -m bench.stack_deploy [--cold]

--cold first removes the cached container image and the cached .debs (the toolchain stays
cached), so the first `up` includes building the image and downloading every package. Goals (issue 4): warm deploy to a verified server < 120 s,
no-op `up` < 15 s, on this 2-core machine.
"""
from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import tempfile

from localcloud import container, image
from tests.e2e import stack_fixture

GOALS = {"warm up (verified)": 120, "no-op up": 15}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="rebuild the container image first")
    args = parser.parse_args()
    if args.cold:
        shutil.rmtree(image.image_path(), ignore_errors=True)
        shutil.rmtree(container.deb_cache(), ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="bench-state-") as state:
        stack = stack_fixture.create(pathlib.Path(state))
        try:
            first = "cold up (image build)" if args.cold else "first up (verified)"
            stack.timed(first, "up", "--yes", "--refresh", "--skip-preview")
            stack.timed("preview (no changes)", "preview", "--expect-no-changes")
            stack.timed("no-op up", "up", "--yes", "--skip-preview")
            stack.run("state", "unprotect", "--all", "--yes")  # the DKIM key, outside `local`
            stack.timed("down", "destroy", "--yes", "--refresh")
            stack.timed("warm up (verified)", "up", "--yes", "--refresh", "--skip-preview")
        finally:
            stack_fixture.remove(stack)
    print(f"\n{'step':<24} {'seconds':>8} {'goal':>6} {'ratio':>6}")
    for step, secs in stack.timings.items():
        goal = GOALS.get(step)
        ratio = f"{secs / goal:.2f}" if goal else ""
        print(f"{step:<24} {secs:>8.1f} {goal or '':>6} {ratio:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
