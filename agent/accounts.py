"""System account and directories that own the mailboxes (vmail), before any config refers
to them."""
from __future__ import annotations

import os
import pwd

from agent.host import Host, StepResult
from agent.spec import Spec

VMAIL_UID = 5000
MAIL_ROOT = "/var/mail/vhosts"


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def apply(spec: Spec, host: Host) -> StepResult:
    result = StepResult("accounts")
    if not host.live:
        result.detail = "not the live root: accounts not checked"
        return result
    todo = []
    if not _has_user("vmail"):
        todo.append("create user vmail")
    base = os.path.join(MAIL_ROOT, spec.domain)
    if not os.path.isdir(base):
        todo.append(f"create {base}")
    result.detail = "; ".join(todo) or "vmail and mail directories present"
    result.changed = bool(todo)
    if host.dry_run or not todo:
        return result
    if not _has_user("vmail"):
        host.run(["groupadd", "--system", "--gid", str(VMAIL_UID), "vmail"], check=False)
        host.run(["useradd", "--system", "--uid", str(VMAIL_UID), "--gid", "vmail",
                  "--home-dir", MAIL_ROOT, "--no-create-home", "--shell", "/usr/sbin/nologin",
                  "vmail"])
    vmail = pwd.getpwnam("vmail")
    for d in (MAIL_ROOT, base):
        os.makedirs(d, mode=0o750, exist_ok=True)
        os.chown(d, vmail.pw_uid, vmail.pw_gid)
        os.chmod(d, 0o750)
    return result
