"""Debian packages of the mail stack, installed non-interactively through apt."""
from __future__ import annotations

import os
import subprocess

from agent.errors import PackageError
from agent.host import Host
from agent.step import Context, StepResult

NAME = "packages"

PACKAGES = (
    "postfix", "postfix-policyd-spf-python", "dovecot-core", "dovecot-imapd",
    "dovecot-lmtpd", "opendkim", "opendkim-tools", "unbound", "nftables", "openssl",
    "dns-root-data",  # unbound's root hints and DNSSEC trust anchor (it recurses itself)
    "ca-certificates", "python3-dnspython", "python3-jinja2", "iproute2",
    "policyd-rate-limit",  # outbound limit per SASL user (see templates/etc/policyd-rate-limit)
    "fail2ban", "python3-systemd",  # login brute force (templates/fail2ban); Dovecot's journal
    "postsrsd",  # SRS for forwarded mail (templates/postsrsd)
)
BACKUP_PACKAGES = ("restic",)  # only with a backup section
# No daemon may start with package defaults (unbound would recurse to the real root
# servers, dovecot would open 110/143): our config goes in first, then services start.
POLICY_RC_D = "/usr/sbin/policy-rc.d"
POLICY_MARK = "# bulletproof-agent: no daemon starts during install\n"
# "No configuration": the package must not write its own main.cf that we then fight.
DEBCONF = "postfix postfix/main_mailer_type select No configuration\n"


def missing(host: Host, packages=PACKAGES) -> list[str]:
    proc = host.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\n", *packages],
                    check=False)
    installed = {line.split()[0] for line in proc.stdout.splitlines()
                 if len(line.split()) > 1 and line.split()[1].startswith("ii")}
    return [p for p in packages if p not in installed]


def versions(host: Host) -> dict[str, str]:
    proc = host.run(["dpkg-query", "-W", "-f=${Package} ${Version}\n",
                     "postfix", "dovecot-core", "opendkim", "unbound", "nftables", "restic"],
                    check=False)
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)


def apply(ctx: Context) -> StepResult:
    host = ctx.host
    if not host.live:
        return StepResult(NAME, detail="not the live root: packages not checked")
    wanted = PACKAGES + (BACKUP_PACKAGES if ctx.spec.backup else ())
    todo = missing(host, wanted)
    if not todo:
        return StepResult(NAME, detail=f"all {len(wanted)} packages installed")
    result = StepResult(NAME, changed=True, detail="install " + " ".join(todo))
    if not host.dry_run:
        install(host, todo)
    return result


def install(host: Host, todo: list[str]) -> None:
    env = {"DEBIAN_FRONTEND": "noninteractive", "NEEDRESTART_MODE": "a"}
    policy = host.path(POLICY_RC_D)
    own_policy = not os.path.exists(policy)
    try:
        if own_policy:
            with open(policy, "w") as f:
                f.write("#!/bin/sh\n" + POLICY_MARK + "exit 101\n")
            os.chmod(policy, 0o755)
        host.run(["debconf-set-selections"], input=DEBCONF, check=False)
        try:
            host.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *todo],
                     env=env, timeout=1800)
        except subprocess.CalledProcessError:
            # Stale or absent package lists (fresh image): refresh once, then retry.
            host.run(["apt-get", "update", "-q"], env=env, timeout=600)
            host.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *todo],
                     env=env, timeout=1800)
    except subprocess.CalledProcessError as exc:
        raise PackageError("apt-get failed to install the mail stack",
                           tool_output=(exc.stderr or exc.stdout or "")[-2000:],
                           fix="check the apt sources/proxy of the host, then re-run apply"
                           ) from exc
    finally:
        if own_policy and os.path.exists(policy):
            os.unlink(policy)
