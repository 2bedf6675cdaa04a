"""Bring the daemons in line with the files: enable, then restart or reload only what a
changed file belongs to (or what is not running), then wait for the ports, bounded."""
from __future__ import annotations

import re
import subprocess
import time

from agent.contract import MAIL_PORTS, MAIL_LOG
from agent.errors import ServiceError
from agent.host import Host
from agent.step import Context, StepResult

NAME = "services"

# Start order: the resolver, the milter, the rate-limit policy and SRS before the MTA that uses
# them; sshd (its drop-in); firewall last, then fail2ban, whose table a firewall reload drops.
UNITS = ("unbound", "opendkim", "dovecot", "policyd-rate-limit", "postsrsd", "postfix", "ssh",
         "nftables", "fail2ban")
# postfix.service is a oneshot wrapper; the real daemon is the postfix@- instance.
ACTIVE_UNIT = {"postfix": "postfix@-"}
# Reload is enough for these when they already run (master.cf changes included);
# the others restart, which is cheap and re-reads everything.
# sshd's reload (SIGHUP) re-executes the listener only: the agent's own session stays.
RELOADABLE = {"postfix", "dovecot", "ssh"}
POSTFIX_MASTER = "/usr/lib/postfix/sbin/master"


def unit_state(host: Host, service: str) -> tuple[bool, bool]:
    unit = ACTIVE_UNIT.get(service, service)
    active = host.run(["systemctl", "is-active", "--quiet", unit], check=False).returncode == 0
    if service == "nftables":  # oneshot without RemainAfterExit semantics on some setups
        active = active or host.run(["nft", "list", "table", "inet", "filter"],
                                    check=False).returncode == 0
    if service == "postfix" and active:
        # Running as the live config says (its queue's master.pid locked)? Not so when the
        # master still runs on an old queue_directory: it must be restarted, not reloaded.
        # `master -t` exits 0 when no master holds the lock, and logs nothing.
        active = host.run([POSTFIX_MASTER, "-t"], check=False).returncode != 0
    enabled = host.run(["systemctl", "is-enabled", "--quiet", service],
                       check=False).returncode == 0
    return active, enabled


def units(firewall: str = "managed") -> tuple[str, ...]:
    """The units the agent runs: with ssh.firewall none, nftables is the server's own."""
    return tuple(u for u in UNITS if firewall == "managed" or u != "nftables")


def states(host: Host, units_: tuple[str, ...] = UNITS) -> dict[str, tuple[bool, bool]]:
    """{service: (active, enabled)}: the facts the decision is made from."""
    return {service: unit_state(host, service) for service in units_}


def decide(states_: dict[str, tuple[bool, bool]], touched: frozenset[str]
           ) -> list[tuple[str, str]]:
    """[(service, action)] with action in enable/restart/reload, in start order."""
    actions = []
    for service in (s for s in UNITS if s in states_):
        active, enabled = states_[service]
        if not enabled:
            actions.append((service, "enable"))
        if not active:
            actions.append((service, "restart"))
        elif service in touched:
            actions.append((service, "reload" if service in RELOADABLE else "restart"))
    return actions


def _journal(host: Host, unit: str) -> str:
    proc = host.run(["journalctl", "-u", unit, "-n", "15", "--no-pager", "-q"], check=False)
    return proc.stdout


def perform(host: Host, actions: list[tuple[str, str]]) -> None:
    for service, action in actions:
        # Reload the real daemon: postfix.service's own reload is /bin/true and succeeds even
        # when its instance's fails (a new queue_directory, say), so a failure would go unseen.
        unit = ACTIVE_UNIT.get(service, service) if action in ("reload", "restart") else service
        argv = ["systemctl", action, unit]
        try:
            host.run(argv, timeout=120)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            unit = ACTIVE_UNIT.get(service, service)
            raise ServiceError(f"systemctl {action} {service} failed",
                               tool_output=_journal(host, unit),
                               fix=f"see journalctl -u {unit}") from exc


def listening(host: Host) -> set[int]:
    """TCP ports in LISTEN state. Read from the kernel, not by connecting: a probe
    connection would leave "lost connection" noise in the mail log on every run."""
    out = host.run(["ss", "-Hltn"], check=False).stdout
    return {int(m) for m in re.findall(r":(\d+)\s", out)}


def wait_ports(host: Host, ports=MAIL_PORTS, timeout: float = 30.0) -> dict[int, bool]:
    deadline = time.monotonic() + timeout
    while True:
        up = listening(host)
        if set(ports) <= up or time.monotonic() > deadline:
            return {p: p in up for p in ports}
        time.sleep(0.2)


def apply(ctx: Context) -> StepResult:
    host = ctx.host
    if not host.live:
        return StepResult(NAME, detail="not the live root: services not touched")
    actions = decide(states(host, units(ctx.spec.ssh.firewall)), ctx.touched)
    result = StepResult(NAME, changed=bool(actions),
                        detail=", ".join(f"{a} {s}" for s, a in actions)
                        or "all active, nothing changed")
    if host.dry_run or not actions:
        return result
    perform(host, actions)
    ports = wait_ports(host)
    closed = [p for p, ok in ports.items() if not ok]
    if closed:
        raise ServiceError(f"ports {closed} not listening 30 s after start",
                           tool_output=_journal(host, "postfix@-") + _journal(host, "dovecot"),
                           fix=f"see {MAIL_LOG} and journalctl -u dovecot")
    return result


def restart(host: Host, touched: frozenset[str]) -> tuple[list[str], list[str]]:
    """After a rollback, put the daemons whose files changed back onto the old files, each
    on its own (one that fails must not keep the others on new config in memory).
    Returns (restarted, failed)."""
    done, failed = [], []
    if not host.live or host.dry_run:
        return done, failed
    if "daemon-reload" in touched:  # a unit drop-in was put back: systemd must see it first
        host.run(["systemctl", "daemon-reload"], check=False)
    for service in (s for s in UNITS if s in touched):
        try:
            perform(host, [(service, "restart")])
            done.append(service)
        except ServiceError:
            failed.append(service)
    return done, failed
