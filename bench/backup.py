"""Backup numbers users size their server by, printed as a table; not a test.

  sudo .venv/bin/python -m bench.backup [--messages 10000] [--new 100]

Boots a fresh localcloud container (same deploy path as tests/integration) with a backup
section (a local restic repository inside the container) and its mail state on the data volume
(a directory of this machine bind-mounted at DATA_DIR, as the local stack does), writes N messages of ~2 KB into one
Maildir (Dovecot then indexes them), and measures: the first backup (it creates the
repository) and the repository's size, the incremental backup after 100 new messages, the
whole-server restore into an emptied mail store, and the one-mailbox restore (doveadm import).
Every step is bounded (timeouts); the container is stopped at the end, whatever happens.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from bench import print_measures
from tests.integration import agenthost as deploy

STACK = "bench-backup"
REPO = "/srv/backup/repo"
USER = f"bob@{deploy.DOMAIN}"
# Messages of ~2 KB with random bodies (what compresses and deduplicates like real mail does
# not: a worst case for the repository's size), written straight into new/ as delivery would.
WRITE = r"""
import base64, os, sys, time
maildir, n, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
now = int(time.time())
for i in range(n):
    body = base64.encodebytes(os.urandom(1400)).decode()
    msg = (f"From: <someone@elsewhere.test>\nTo: <bob@example.test>\nSubject: bench {tag} {i}\n"
           f"Message-ID: <{tag}.{i}@elsewhere.test>\n\n{body}")
    tmp = f"{maildir}/tmp/{now}.M{i}{tag}.bench"
    with open(tmp, "w") as f:
        f.write(msg)
    os.rename(tmp, f"{maildir}/new/{now}.M{i}{tag}.bench,S={len(msg)}")
"""


def run(d, command: str, timeout: float = 1800) -> str:
    rc, out, err = d.run(command, timeout=timeout)
    if rc:
        raise RuntimeError(f"{command}: exit {rc}: {err[-2000:]}")
    return out


def timed(d, command: str, timeout: float = 1800) -> tuple[float, str]:
    started = time.monotonic()
    out = run(d, command, timeout)
    return time.monotonic() - started, out


def messages(d) -> int:
    out = run(d, f"doveadm -f flow mailbox status -u {USER} messages INBOX")
    return int(out.strip().rpartition("=")[2])


def repo_mib(d) -> float:
    return int(run(d, f"du -sb {REPO}").split()[0]) / 1024 / 1024


def add(d, maildir: str, n: int, tag: str) -> None:
    run(d, f"python3 /root/bench-write.py {maildir} {n} {tag} && chown -R vmail:vmail {maildir}")
    messages(d)  # Dovecot syncs the Maildir: uidlist and indexes, as a client's login would


def bench(d, n: int, new: int) -> list[tuple[str, str]]:
    rows = []
    d.put(WRITE.encode(), "/root/bench-write.py", 0o600)
    maildir = run(d, f"doveadm user -f home {USER}").strip() + "/Maildir"
    run(d, f"doveadm mailbox status -u {USER} messages INBOX")  # creates the Maildir
    add(d, maildir, n, "a")
    rows.append((f"{n} messages of ~2 KB in one Maildir", f"{messages(d)} indexed by Dovecot"))
    secs, out = timed(d, f"{deploy.AGENT} backup run --json")
    first = json.loads(out)
    rows.append(("first backup (creates the repository)", f"{secs:.1f} s"))
    rows.append(("  files / data read", f"{first['files']} / {first['bytes'] / 2**20:.1f} MiB"))
    rows.append(("  repository size after it", f"{repo_mib(d):.1f} MiB"))
    add(d, maildir, new, "b")
    secs, out = timed(d, f"{deploy.AGENT} backup run --json")
    inc = json.loads(out)
    rows.append((f"incremental backup after {new} new messages", f"{secs:.1f} s"))
    rows.append(("  data added", f"{inc['bytes_added'] / 1024:.0f} KiB"))
    rows.append(("  repository size after it", f"{repo_mib(d):.1f} MiB"))
    mail_root = maildir.rsplit("/", 3)[0]
    run(d, f"systemctl stop postfix dovecot && rm -rf {mail_root}/* && systemctl start dovecot postfix")
    secs, out = timed(d, f"{deploy.AGENT} backup restore --json")
    whole = json.loads(out)
    rows.append(("whole-server restore into an emptied store", f"{secs:.1f} s (its own: "
                 f"{whole['duration_s']} s)"))
    rows.append(("  messages back in the mailbox", f"{messages(d)} of {n + new}"))
    secs, out = timed(d, f"{deploy.AGENT} backup restore --mailbox {USER} --json")
    rows.append(("one-mailbox restore (doveadm import, new folder)",
                 f"{secs:.1f} s, {json.loads(out)['messages']} messages"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--new", type=int, default=100)
    args = parser.parse_args()

    def tune(spec):
        spec["backup"] = {"repository": REPO, "password": "bench-backup-password"}
    d = None
    try:
        d = deploy.up(stack=STACK, log=lambda line: print(line, file=sys.stderr), tune=tune,
                      volume=True)
        rc, report, _, err = d.apply(d.spec, run_id="bench-backup")
        if rc:
            print(err, json.dumps(report.get("error")), file=sys.stderr)
            return 1
        rows = bench(d, args.messages, args.new)
    finally:
        deploy.down(d, stack=STACK)
    print_measures(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
