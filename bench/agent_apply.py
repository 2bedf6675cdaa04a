"""Numbers users size their server by (issue 3), printed as a table; not a timed test.

  sudo .venv/bin/python -m bench.agent_apply [--noop-runs 5]

Boots a fresh localcloud container (same deploy path as tests/integration), then measures:
first apply (packages through the local proxy; the proxy does not cache, so "warm" means
the mirror side), no-change re-apply (goal < 2 s), idle RSS of the mail services together,
and the zipapp size.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from components import agent_zipapp
from bench import print_measures
from tests.integration import agenthost as deploy

UNITS = ("postfix@-.service", "dovecot.service", "opendkim.service", "unbound.service")
RSS_SCRIPT = r"""
import glob, json, os
total = {}
for unit in %r:
    kb = 0
    for procs in glob.glob(f"/sys/fs/cgroup/**/{unit}/cgroup.procs", recursive=True):
        for pid in open(procs).read().split():
            try:
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith("VmRSS:"):
                        kb += int(line.split()[1])
            except OSError:
                pass
    total[unit] = kb
print(json.dumps(total))
""" % (UNITS,)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--noop-runs", type=int, default=5)
    parser.add_argument("--settle-s", type=float, default=10.0)
    args = parser.parse_args()
    rows = []
    d = None
    try:
        started = time.monotonic()
        d = deploy.up(stack="bench-agent", log=lambda line: print(line, file=sys.stderr))
        rows.append(("boot container to ssh", f"{d.timings['boot_to_ssh_s']:.1f} s"))
        rows.append(("setup (bridge, proxy, dns, boot, upload)",
                     f"{time.monotonic() - started:.1f} s"))
        rc, report, first, err = d.apply(d.spec, run_id="bench-first")
        if rc:
            print(err, report, file=sys.stderr)
            return 1
        steps = {s["name"]: s["duration_s"] for s in report["steps"]}
        rows.append(("first apply (wall, via ssh)", f"{first:.1f} s"))
        rows.append(("  of which packages (apt through proxy)", f"{steps['packages']:.1f} s"))
        rows.append(("  of which files+validation", f"{steps['files']:.2f} s"))
        rows.append(("  of which services start", f"{steps['services']:.2f} s"))
        noop, internal = [], []
        for i in range(args.noop_runs):
            rc, report, elapsed, _ = d.apply(run_id=f"bench-noop-{i}")
            assert rc == 0 and not report["changed"], report
            noop.append(elapsed)
            internal.append(report["duration_s"])
        rows.append((f"no-change re-apply, median of {len(noop)} (wall, via ssh)",
                     f"{statistics.median(noop):.2f} s (goal < 2 s)"))
        rows.append(("  agent's own duration, median", f"{statistics.median(internal):.2f} s"))
        time.sleep(args.settle_s)
        d.put(RSS_SCRIPT.encode(), "/root/bpm-rss.py", 0o600)
        rss = json.loads(d.run("python3 /root/bpm-rss.py")[1])
        for unit, kb in rss.items():
            rows.append((f"idle RSS {unit}", f"{kb / 1024:.1f} MiB"))
        rows.append(("idle RSS mail services together", f"{sum(rss.values()) / 1024:.1f} MiB"))
    finally:
        deploy.down(d, stack="bench-agent")
    size = len(agent_zipapp.build_bytes())
    rows.append(("zipapp size", f"{size / 1024:.1f} KiB ({size} bytes)"))
    print_measures(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
