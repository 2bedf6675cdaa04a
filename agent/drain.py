"""`bulletproof-agent drain`: before the host stops for good or its data volume moves.

Port 25 answers 4xx first (senders keep the mail and retry, later at the new host), then
Postfix and Dovecot stop cleanly, and the volume is synced. What was accepted is in the queue or
a mailbox on the volume. The next apply renders main.cf afresh, so a drained host that stays
is back in service after it.
"""
from __future__ import annotations

import os
import subprocess
import time

GRACE_S = 3  # sessions already past RCPT finish their DATA


def drain(run=subprocess.run) -> list[str]:
    """The steps taken, in order; a step that fails is noted and the rest still run."""
    steps = [["postconf", "-e", "smtpd_client_restrictions = defer"], ["postfix", "reload"],
             None, ["systemctl", "stop", "postfix", "postfix@-"], ["systemctl", "stop", "dovecot"]]
    done = []
    for argv in steps:
        if argv is None:
            time.sleep(GRACE_S)
            continue
        proc = run(argv, capture_output=True, text=True)
        done.append(" ".join(argv) + ("" if proc.returncode == 0 else f" (failed: {proc.stderr.strip()[:200]})"))
    os.sync()
    done.append("sync")
    return done
