"""Crash safety, measured: is every message the server answered 250 for in its mailbox after a
crash? Printed as a table; a bench, not a test (bounded, no assertions).

  sudo .venv/bin/python -m bench.durability [--rounds 10] [--only a,b,c,d,agent] [--seed N]

Under steady load (inbound SMTP on 25 from the stack's bridge, and submission on 587 with
STARTTLS+AUTH, each message to one local user, each with a unique Message-ID recorded only
when the server answered 250 to the end of DATA), each round kills at a random moment:

  a  Postfix's master and every smtpd (kill -9), then Postfix started again
  b  Dovecot: every process of dovecot.service (kill -9), then started again
  c  the whole container: kill -9 of the systemd-nspawn process tree; the same host (its disk)
     booted again on the same data volume, the agent re-applied
  d  a power cut: a KVM guest (bench/kvm_guest.py; root and data disks on cache=none) killed
     with kill -9 of qemu, booted again on the same disks, the agent re-applied
  agent  bulletproof-agent apply of a changed spec (message size limit and a quota alternate)
     killed (its process group, kill -9) at a random delay between 0.2 s and the measured
     duration of such an apply; then apply again: converged = it exits 0, `status` passes and
     the live Postfix setting equals the spec's

After the rounds of a scenario the queue is flushed and drained (bounded), then the delivered
files are counted per Message-ID in the Maildirs (new/ and cur/): an accepted id found nowhere
is lost (goal 0), found more than once a duplicate. Tuned for the load client only: postscreen
allowlists the bench's own bridge address (no greet wait, no DNSBL), anvil and the per-user
outbound limit are raised so the load is never rate limited. Everything started here
(container, qemu, tap, DNS server, proxy, load threads) is stopped in a finally.
Needs root, systemd-nspawn, tinyproxy, named; for d also /dev/kvm and qemu
(kvm_guest.QEMU_HINT).
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import random
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
import uuid

import paramiko

from agent.contract import AGENT, MAIL_DIR, PENDING_DIR, QUEUE_DIR
from bench import kvm_guest
from components import agent_zipapp
from localcloud import container, process
from tests import mailclient
from tests.integration import agenthost as deploy

STACK = "bench-durability"  # --stack: another name runs a second copy beside this one
ALL = ("a", "b", "c", "d", "agent")
TITLES = {"a": "a: kill -9 Postfix master+smtpd", "b": "b: kill -9 Dovecot",
          "c": "c: kill -9 the container", "d": f"d: power cut ({kvm_guest.accelerator()[0]} guest, cache=none)",
          "agent": "agent: kill -9 apply"}
ALICE, BOB = f"alice@{deploy.DOMAIN}", f"bob@{deploy.DOMAIN}"
LOAD_S = 6.0          # load per round; the kill falls in [1, LOAD_S - 1.5]
PACE_S = 0.25         # between two messages of one load thread (~8 messages/s in all)
SERVICE_TIMEOUT = 90  # a service back after a kill
DRAIN_TIMEOUT = 240   # the queue empty after the rounds
SIZES = (10485760, 10486784)  # message_size_limit alternates between these (agent row)
QUOTAS = (100, 101)           # and alice's quota_mb
log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731


def run(d, command: str, timeout: float = 300) -> str:
    rc, out, err = d.run(command, timeout=timeout)
    if rc:
        raise RuntimeError(f"{command}: exit {rc}: {out[-1000:]} {err[-2000:]}")
    return out


def wait_for(what: str, ok, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = ok()
        except (OSError, EOFError, paramiko.SSHException, RuntimeError):
            found = None
        if found:
            return found
        time.sleep(every)
    raise TimeoutError(f"{what}: not after {timeout} s")


# --- load ------------------------------------------------------------------------------
def raw_message(sender: str, to: str, token: str) -> bytes:
    return (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: durability {token}\r\n"
            f"Message-ID: <{token}@bench.test>\r\n"
            f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n\r\n"
            f"a message of the durability bench\r\n").encode()


class Load:
    """Two threads: inbound on 25 (to alice and bob in turn) and submission on 587 (alice to
    bob). A message counts as accepted only once the server answered 250 to the end of DATA;
    any error drops the connection and the thread reconnects (every socket op has a timeout)."""

    def __init__(self, ip: str, source: str, tag: str):
        self.ip, self.source, self.tag = ip, source, tag
        self.accepted: list[str] = []
        self.errors = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(kind,), daemon=True,
                                         name=f"load-{kind}") for kind in ("in", "sub")]
        self._n = 0
        self._lock = threading.Lock()

    def _token(self, kind: str) -> str:
        with self._lock:
            self._n += 1
            return f"dur-{self.tag}-{kind}-{self._n}-{uuid.uuid4().hex[:8]}"

    def _connect(self, kind: str) -> smtplib.SMTP:
        if kind == "in":
            # A new host (after a replacement) has postscreen's first-time deferral anew.
            return mailclient.smtp_in(self.ip, self.source, deploy.HELO, timeout=10)
        s = smtplib.SMTP(self.ip, 587, local_hostname=deploy.HELO, timeout=10)
        s.starttls(context=mailclient.insecure_tls())
        s.login(ALICE, deploy.password(ALICE))
        return s

    def _loop(self, kind: str) -> None:
        smtp, turn = None, 0
        while not self.stop.is_set():
            try:
                if smtp is None:
                    smtp = self._connect(kind)
                token = self._token(kind)
                if kind == "in":
                    turn += 1
                    sender, to = deploy.OUTSIDER, (ALICE, BOB)[turn % 2]
                else:
                    sender, to = ALICE, BOB
                smtp.sendmail(sender, [to], raw_message(sender, to, token))
                with self._lock:
                    self.accepted.append(token)  # 250 to the end of DATA
            except (OSError, smtplib.SMTPException):
                with self._lock:
                    self.errors += 1
                try:
                    if smtp:
                        smtp.close()
                except OSError:
                    pass
                smtp = None
                self.stop.wait(0.3)
            self.stop.wait(PACE_S)
        if smtp:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                smtp.close()

    def start(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def finish(self, timeout: float = 30) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout)


# --- what the server holds ------------------------------------------------------------
COUNT = (f"grep -rhoaE '^Message-ID: <dur-[a-z0-9-]+' {MAIL_DIR}/{deploy.DOMAIN}/*/Maildir/new "
         f"{MAIL_DIR}/{deploy.DOMAIN}/*/Maildir/cur || true")


def queue_size(d) -> int:
    return len([line for line in run(d, "postqueue -j", 60).splitlines() if line.strip()])


def drain(d, notes: collections.Counter) -> int:
    """Flush the queue until it is empty (bounded); returns what is still queued. After a
    Dovecot crash qmgr keeps the LMTP destination suspended for minimal_backoff_time (300 s),
    which `postqueue -f` does not lift: a `postfix reload` (a new qmgr) does, as an operator
    would; counted in the notes."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    left, flushes = -1, 0
    while time.monotonic() < deadline:
        if flushes == 2:
            run(d, "postfix reload", 60)
            notes["queue released by postfix reload (LMTP destination suspended)"] += 1
        run(d, "postqueue -f", 60)
        flushes += 1
        for _ in range(10):
            left = queue_size(d)
            if left == 0:
                return 0
            time.sleep(1.5)
    return left


def delivered(d) -> collections.Counter:
    out = run(d, COUNT, 300)
    return collections.Counter(line.split("<", 1)[1] for line in out.splitlines() if "<" in line)


# --- services --------------------------------------------------------------------------
def banner(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=3) as c:
            c.settimeout(5)
            return c.recv(4).startswith(b"220")
    except OSError:
        return False


def mail_up(d) -> bool:
    rc, _, _ = d.run("systemctl is-active --quiet postfix@- dovecot", timeout=30)
    return rc == 0 and banner(d.ip, 25) and banner(d.ip, 587)


def ensure_started(d, unit: str, stats: collections.Counter) -> None:
    """Give systemd a few seconds to bring `unit` back by itself; else start it (counted)."""
    try:
        wait_for(f"{unit} back by itself", lambda: mail_up(d), 8)
        stats["back by itself"] += 1
    except TimeoutError:
        d.run(f"systemctl reset-failed {unit}; systemctl start {unit}", timeout=120)
        stats["started by the bench"] += 1
    wait_for("postfix and dovecot answering", lambda: mail_up(d), SERVICE_TIMEOUT)


KILL_POSTFIX = ("python3 -c \"import os,signal\n"
                "ps=[int(p) for p in os.listdir('/proc') if p.isdigit()]\n"
                "def comm(p):\n try: return open(f'/proc/{p}/comm').read().strip()\n"
                " except OSError: return ''\n"
                "m=int(open('" + QUEUE_DIR + "/pid/master.pid').read())\n"
                "k=[m]+[p for p in ps if comm(p)=='smtpd']\n"
                "[os.kill(p,signal.SIGKILL) for p in k]\nprint(len(k))\"")


def kill_postfix(d) -> None:
    run(d, KILL_POSTFIX, 30)


def kill_dovecot(d) -> None:
    run(d, "systemctl kill --signal=KILL dovecot", 30)  # every process of the unit at once


def kill_container(d) -> None:
    """kill -9 of the nspawn process tree (the container's init takes its namespace along)."""
    pid = container._nspawn_pid(d.names, d.host)
    if not pid:
        raise RuntimeError("the container is not running")
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += container._children(p)
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if not process.wait_gone(pid, time.monotonic() + 15):
        raise RuntimeError(f"nspawn {pid} outlived SIGKILL")


# --- rounds ---------------------------------------------------------------------------
@dataclasses.dataclass
class Row:
    scenario: str
    rounds: int = 0
    accepted: int = 0
    delivered: int = 0
    lost: int = 0
    duplicates: int = 0
    killed: int = 0
    converged: int = 0
    notes: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    lost_ids: list = dataclasses.field(default_factory=list)


def load_round(d, row: Row, source: str, kill, tag: str) -> Load:
    load = Load(d.ip, source, tag).start()
    try:
        time.sleep(random.uniform(1.0, LOAD_S - 1.5))
        kill()
        time.sleep(max(0.0, LOAD_S - 1.0))  # the load goes on against the dead service
    finally:
        load.finish()
    return load


def count(d, row: Row, accepted: list[str]) -> None:
    left = drain(d, row.notes)
    if left:
        row.notes[f"{left} still queued after {DRAIN_TIMEOUT} s"] += 1
        _, queue, _ = d.run("postqueue -p | tail -n 30; grep -E 'status=(deferred|bounced)' "
                            "/var/log/mail.log | tail -n 10", timeout=60)
        log(f"{row.scenario}: still queued:\n{queue}")
    found = delivered(d)
    row.accepted = len(accepted)
    row.delivered = sum(1 for t in accepted if found[t])
    row.lost_ids = [t for t in accepted if not found[t]]
    row.lost = len(row.lost_ids)
    row.duplicates = sum(found[t] - 1 for t in accepted if found[t] > 1)


def reconnect(d, host: str = "", binds=(), pyz: str = "") -> None:
    """After a reboot: ssh again, wait for cloud-init (and the agent there)."""
    wait_for("ssh", lambda: container.wait_ssh(d.ip, timeout=5) is not None, 180)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(d.ip, username="root", pkey=d.boot_args["key"], timeout=10,
                   allow_agent=False, look_for_keys=False)
    d.ssh = client
    d.run("cloud-init status --wait", timeout=300)


def reapply(d, row: Row, run_id: str) -> None:
    rc, report, _, err = d.apply(run_id=run_id)
    if rc:
        row.notes[f"re-apply failed: {json.dumps(report.get('error'))[:200]}"] += 1
        log(f"{run_id}: re-apply rc {rc}: {json.dumps(report.get('error'))} {err[-1500:]}")
    wait_for("postfix and dovecot answering", lambda: mail_up(d), SERVICE_TIMEOUT)


def scenario_service(d, name: str, rounds: int, source: str) -> Row:
    row, accepted = Row(name), []
    kill, unit = {"a": (kill_postfix, "postfix@-"), "b": (kill_dovecot, "dovecot")}[name]
    for i in range(rounds):
        load = load_round(d, row, source, lambda: kill(d), f"{name}{i}")
        accepted += load.accepted
        ensure_started(d, unit, row.notes)
        row.rounds += 1
        log(f"{name} round {i + 1}/{rounds}: {len(load.accepted)} accepted, "
            f"{load.errors} client errors")
    count(d, row, accepted)
    return row


def scenario_container(d, rounds: int, source: str, pyz: str) -> Row:
    row, accepted = Row("c"), []
    for i in range(rounds):
        load = load_round(d, row, source, lambda: kill_container(d), f"c{i}")
        accepted += load.accepted
        d.ssh.close()
        container.stop(d.names, d.host)  # only cleanup now: unmount its root, keep its disk
        deploy.boot(d, d.host, d.binds(), agent_pyz=pyz)  # the same host, same volume
        reapply(d, row, f"bench-c{i}")
        row.rounds += 1
        log(f"c round {i + 1}/{rounds}: {len(load.accepted)} accepted, {load.errors} client errors")
    count(d, row, accepted)
    return row


def agent_spec(d, i: int) -> dict:
    spec = json.loads(json.dumps(d.spec))
    spec["limits"]["message_size_limit"] = SIZES[i % 2]
    spec["users"][0]["quota_mb"] = QUOTAS[i % 2]
    return spec


def converged(d, spec: dict, run_id: str) -> tuple[bool, str]:
    rc, report, _, err = d.apply(spec, run_id=run_id)
    if rc:
        return False, f"apply rc {rc}: {json.dumps(report.get('error'))[:300]}"
    rc, out, _ = d.run(f"{AGENT} status --json", timeout=300)
    if rc:
        try:
            failed = [c["name"] for c in json.loads(out)["checks"] if c["status"] == "fail"]
        except (ValueError, KeyError):
            failed = out[-300:]
        return False, f"status rc {rc}: {failed}"
    live = run(d, "postconf -h message_size_limit").strip()
    if live != str(spec["limits"]["message_size_limit"]):
        return False, f"live message_size_limit {live}"
    return True, ""


def scenario_agent(d, rounds: int, source: str) -> Row:
    row, accepted = Row("agent"), []
    started = time.monotonic()
    rc, report, _, err = d.apply(agent_spec(d, 1), run_id="bench-agent-measure")
    duration = time.monotonic() - started
    if rc:
        raise RuntimeError(f"apply of the changed spec failed: {report.get('error')} {err}")
    row.notes[f"a changing apply takes {duration:.1f} s"] += 1
    load = Load(d.ip, source, "agent").start()
    try:
        for i in range(rounds):
            spec = agent_spec(d, i)
            d.send_spec(spec)
            _, out, _ = d.ssh.exec_command(
                f"exec setsid sh -c 'echo $$ > /run/bpm-apply.pid; exec {AGENT} apply --spec "
                f"{PENDING_DIR}/spec.json --secrets {PENDING_DIR}/secrets.json --json "
                f"--run-id bench-killed-{i} >/dev/null 2>&1'", timeout=600)
            delay = random.uniform(0.2, duration)
            time.sleep(delay)
            verdict = run(d, "p=$(cat /run/bpm-apply.pid); if kill -0 $p 2>/dev/null; then "
                             "kill -9 -- -$p; echo killed; else echo finished; fi").strip()
            out.channel.recv_exit_status()
            row.killed += verdict == "killed"
            ok, why = converged(d, spec, f"bench-next-{i}")
            recovered = any(s["name"] == "recover" for s in d.reports[-1].get("steps", []))
            row.notes["the next run undid a journal"] += recovered
            row.converged += ok
            if not ok:
                row.notes[why] += 1
            row.rounds += 1
            log(f"agent round {i + 1}/{rounds}: {verdict} after {delay:.1f} s, next run "
                f"{'converged' if ok else 'FAILED: ' + why}"
                f"{', journal undone' if recovered else ''}")
    finally:
        load.finish()
    accepted += load.accepted
    wait_for("postfix and dovecot answering", lambda: mail_up(d), SERVICE_TIMEOUT)
    count(d, row, accepted)
    return row


def scenario_power_cut(d, rounds: int, source: str, pyz: str, guests: list) -> Row:
    """The container stopped; a KVM guest on the mail address with a blank data disk (put in
    ``guests`` at once, for the caller's finally)."""
    row, accepted = Row("d"), []
    d.ssh.close()
    container.stop(d.names, d.host)
    subprocess.run(["ip", "neigh", "flush", "dev", d.bridge.name], capture_output=True)
    a = d.boot_args
    guest = kvm_guest.create(d.names, d.workdir, bridge=d.bridge.name,
                             ipv4=str(d.bridge.address(deploy.HOST_INDEX)), nameserver=a["gw"],
                             apt_proxy_url=a["proxy_url"], authorized_keys=[a["public"]],
                             hostname=f"mail.{deploy.DOMAIN}", log=log)
    guests.append(guest)
    vm = dataclasses.replace(d, ssh=None, reports=[], host="guest",
                             spec=dict(d.spec, volume={"kind": "block", "device": "/dev/vdb"}))
    try:
        kvm_guest.start(guest)
        reconnect(vm)
        vm.put(open(pyz, "rb").read(), AGENT, 0o755)
        started = time.monotonic()
        rc, report, _, err = vm.apply(vm.spec, run_id="bench-d-first")
        if rc:
            raise RuntimeError(f"first apply in the guest failed: {report.get('error')} {err}")
        log(f"d: guest up, first apply {time.monotonic() - started:.0f} s")
        wait_for("postfix and dovecot answering", lambda: mail_up(vm), SERVICE_TIMEOUT)
        for i in range(rounds):
            load = load_round(vm, row, source, lambda: kvm_guest.power_cut(guest), f"d{i}")
            accepted += load.accepted
            vm.ssh.close()
            kvm_guest.start(guest)
            reconnect(vm)
            reapply(vm, row, f"bench-d{i}")
            row.rounds += 1
            log(f"d round {i + 1}/{rounds}: {len(load.accepted)} accepted, "
                f"{load.errors} client errors")
        count(vm, row, accepted)
    except BaseException:
        if guest.console.with_suffix(f".log.{guest.boots - 1}").exists():
            log(guest.console.with_suffix(f".log.{guest.boots - 1}").read_text()[-3000:])
        raise
    finally:
        if vm.ssh:
            vm.ssh.close()
    return row


# --- table -----------------------------------------------------------------------------
def table(rows: list[Row]) -> str:
    head = ("scenario", "rounds", "accepted (250)", "delivered", "lost", "duplicates",
            "applies killed / converged next run")
    lines = [head]
    for r in rows:
        agent = f"{r.killed} / {r.converged}" if r.scenario == "agent" else "-"
        lines.append((TITLES[r.scenario], str(r.rounds), str(r.accepted), str(r.delivered),
                      str(r.lost), str(r.duplicates), agent))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    for r in rows:
        for note, n in r.notes.items():
            if n:
                out.append(f"  {r.scenario}: {note}" + (f" ({n}x)" if n > 1 else ""))
        if r.lost_ids:
            out.append(f"  {r.scenario}: LOST {', '.join(r.lost_ids[:20])}")
    return "\n".join(out)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--only", default=",".join(ALL), help="comma-separated of " + ",".join(ALL))
    parser.add_argument("--stack", default=STACK, help="localcloud stack name (%(default)s)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (kill moments)")
    args = parser.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if bad := [s for s in only if s not in ALL]:
        parser.error(f"unknown scenario {bad}; choose from {','.join(ALL)}")
    if "d" in only and (missing := kvm_guest.tools_missing()):
        parser.error(f"scenario d needs {missing}: {kvm_guest.QEMU_HINT}")
    if missing := deploy.tools_missing():
        parser.error(f"needs {missing}")
    random.seed(args.seed)
    # SIGTERM (e.g. timeout(1)) unwinds like Ctrl-C, so the finally stops what was started.
    signal.signal(signal.SIGTERM, _interrupt)

    def tune(spec):
        # The load client only: no postscreen tests, no rate limit ever in the way.
        spec["postscreen"]["allowlist"] = [f"{gw}/32"]
        spec["rate_limits"].update(client_connection_rate=100000, client_message_rate=100000,
                                   client_connection_count=1000,
                                   outbound_per_user_per_hour=1000000)

    started = time.monotonic()
    rows, d, guests = [], None, []
    gw = None
    try:
        names = deploy.naming.stack_names(args.stack)
        bridge = deploy.network.ensure_bridge(names)
        gw = str(bridge.ipv4.ip)
        d = deploy.up(stack=args.stack, log=log, tune=tune, volume=True)
        rc, report, elapsed, err = d.apply(d.spec, run_id="bench-durability-first")
        if rc:
            log(f"first apply failed: {json.dumps(report.get('error'))} {err[-2000:]}")
            return 1
        log(f"host up, first apply {elapsed:.0f} s")
        pyz = os.path.join(d.workdir, "bulletproof-agent.pyz")
        if not os.path.exists(pyz):
            agent_zipapp.build(pyz)
        wait_for("postfix and dovecot answering", lambda: mail_up(d), SERVICE_TIMEOUT)
        done = {}
        for name in ("a", "b", "c", "agent", "d"):  # d last: it stops the container
            if name not in only:
                continue
            s = time.monotonic()
            try:
                if name in ("a", "b"):
                    done[name] = scenario_service(d, name, args.rounds, gw)
                elif name == "c":
                    done[name] = scenario_container(d, args.rounds, gw, pyz)
                elif name == "agent":
                    done[name] = scenario_agent(d, args.rounds, gw)
                else:
                    done[name] = scenario_power_cut(d, args.rounds, gw, pyz, guests)
            except Exception as exc:  # the other rows still count; this one says why
                log(f"{name}: FAILED: {type(exc).__name__}: {exc}")
                done[name] = Row(name)
                done[name].notes[f"FAILED: {type(exc).__name__}: {str(exc)[:300]}"] += 1
                if name in ("c", "d"):
                    break  # the host is in an unknown state: the rest would measure nothing
            log(f"{name}: done in {time.monotonic() - s:.0f} s")
        rows = [done[n] for n in ALL if n in done]
    finally:
        for guest in guests:
            kvm_guest.destroy(guest)
        deploy.down(d, stack=args.stack)
    print(table(rows))
    print(f"({args.rounds} rounds requested, {time.monotonic() - started:.0f} s in all)")
    return 0 if rows and all(r.lost == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
