"""System account and directories that own the mailboxes (vmail), before any config refers
to them. The mailboxes are on the data volume (agent/contract.py MAIL_DIR); vmail's id is
fixed, so another host finds them owned by its own vmail."""
from __future__ import annotations

import os
import pwd

from agent.contract import MAIL_DIR as MAIL_ROOT
from agent.host import Host
from agent.step import Context, StepResult

NAME = "accounts"
VMAIL_UID = 5000


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def decide(has_vmail: bool, base: str, base_exists: bool) -> list[str]:
    todo = [] if has_vmail else ["create user vmail"]
    return todo if base_exists else [*todo, f"create {base}"]


def apply(ctx: Context) -> StepResult:
    host = ctx.host
    if not host.live:
        return StepResult(NAME, detail="not the live root: accounts not checked")
    base = os.path.join(MAIL_ROOT, ctx.spec.domain)
    has_vmail = _has_user("vmail")
    todo = decide(has_vmail, base, os.path.isdir(host.path(base)))
    result = StepResult(NAME, changed=bool(todo),
                        detail="; ".join(todo) or "vmail and mail directories present")
    if todo and not host.dry_run:
        create(host, base, has_vmail)
    return result


def create(host: Host, base: str, has_vmail: bool) -> None:
    if not has_vmail:
        host.run(["groupadd", "--system", "--gid", str(VMAIL_UID), "vmail"], check=False)
        host.run(["useradd", "--system", "--uid", str(VMAIL_UID), "--gid", "vmail",
                  "--home-dir", MAIL_ROOT, "--no-create-home", "--shell", "/usr/sbin/nologin",
                  "vmail"])
    vmail = pwd.getpwnam("vmail")
    for d in (MAIL_ROOT, base):
        os.makedirs(host.path(d), mode=0o750, exist_ok=True)
        os.chown(host.path(d), vmail.pw_uid, vmail.pw_gid)
        os.chmod(host.path(d), 0o750)
