"""bulletproof-agent apply | plan | status | report | drain  [--spec FILE] [--secrets FILE] [--json]
                   [--run-id ID] [--root DIR] [--threshold NAME=VALUE] [--since 24h] [--html FILE]
bulletproof-agent backup run | prune | check | snapshots | restore ...  (agent/backup_cli.py)

Exit status: 0 ok, 1 the run failed (nothing half-applied: see the message), 2 the spec or
the command line is invalid.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import time
import uuid

import subprocess

from agent.errors import AgentError
from agent.contract import CONFIG_DIR, MAIL_LOG
from agent.host import Host
from agent.spec import SpecError, load, merge
from agent.step import Context

DEFAULT_SPEC = f"{CONFIG_DIR}/spec.json"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bulletproof-agent", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=("apply", "plan", "status", "report", "drain"))
    p.add_argument("--spec", default=DEFAULT_SPEC, help="spec JSON (default %(default)s)")
    p.add_argument("--secrets", help="secrets JSON (default: secrets.json beside the spec, "
                   "if present)")
    p.add_argument("--run-id", default="", help="recorded in the report")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--root", default="/", help="act on this root dir instead of / (tests)")
    p.add_argument("--threshold", action="append", default=[], metavar="NAME=VALUE",
                   help="status: override a check threshold (see agent/checks.py)")
    p.add_argument("--since", default="24h", help="report: period, e.g. 90m, 24h, 7d")
    p.add_argument("--html", metavar="FILE", help="report: also write a self-contained HTML file")
    p.add_argument("--log", default=MAIL_LOG, help="report: the Postfix log")
    return p


def _status(host: Host, args) -> int:
    from agent import checks, report, verdict
    st = report.status(host)
    try:
        limits = checks.parse_thresholds(args.threshold)
    except ValueError as exc:
        print(f"status: {exc}", file=sys.stderr)
        return 2
    try:
        facts = checks.facts_from_spec(checks.load_public_spec(args.spec))
        found = checks.run_all(facts, limits) if host.live else []
    except (OSError, ValueError, KeyError) as exc:  # never applied: say so, as a failure
        found = [verdict.Check("spec", verdict.FAIL, f"no applied spec ({args.spec}): {exc}",
                              "run bulletproof-agent apply first")]
    st["checks"] = [c.as_dict() for c in found]
    st["summary"] = verdict.summary(found)
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True))
    else:
        print(f"last run {st['last_run'].get('run_id', '-')}: {st['last_run'].get('status')}")
        print(verdict.table(found))
    return 0 if st["healthy"] and not st["summary"]["fail"] else 1


def _report(args) -> int:
    from agent import mailreport
    try:
        since = mailreport.parse_since(args.since)
    except ValueError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return 2
    rep = mailreport.build(args.log, since, dnsbl_checks=_dnsbl_checks(args.spec))
    if args.html:
        from agent import report_html
        report_html.write(args.html, rep)
    print(json.dumps(rep, indent=2, sort_keys=True) if args.json else mailreport.text(rep))
    return 0


def _dnsbl_checks(spec_path: str) -> list:
    """The DNSBL checks of the applied spec through the local unbound ([] before any apply)."""
    from agent import checks, checks_dns
    try:
        facts = checks.facts_from_spec(checks.load_public_spec(spec_path))
    except (OSError, ValueError, KeyError):
        return []
    import dns.exception
    lookup, out = checks_dns.Lookup("127.0.0.1"), []
    for site in facts["dnsbl_sites"]:
        try:
            out.append(checks_dns.dnsbl(lookup, facts["ipv4"], site))
        except dns.exception.DNSException:  # unbound down: `status` says so; the log still counts
            continue
    return out


def _read_spec(args) -> tuple:
    with open(args.spec, "rb") as f:
        raw_public = f.read()
    secrets_path = args.secrets or os.path.join(os.path.dirname(os.path.abspath(args.spec)),
                                                "secrets.json")
    raw_secrets = None
    if args.secrets or os.path.exists(secrets_path):
        with open(secrets_path, "rb") as f:
            raw_secrets = f.read()
    try:
        data = merge(json.loads(raw_public), json.loads(raw_secrets) if raw_secrets else None)
    except ValueError as exc:
        if isinstance(exc, SpecError):
            raise
        raise SpecError([f"(file): not valid JSON: {exc}"]) from exc
    return load(data), raw_public, raw_secrets


def _print_human(rep: dict, plan: bool) -> None:
    for s in rep["steps"]:
        mark = "FAILED" if not s["ok"] else ("changed" if s["changed"] else "ok")
        print(f"{s['name']:<10} {mark:<8} {s['duration_s']:6.2f}s  {s['detail']}")
        for w in s.get("warnings", []):
            print(f"  warning: {w}")
        if plan:
            for line in s.get("diff", []):
                print(f"    {line}")
    if rep.get("dkim"):
        print(f"DKIM TXT {rep['dkim']['name']}: {rep['dkim']['txt']}")
    if rep["error"]:
        err = rep["error"]
        print(f"\nFAILED in {err.get('step')}: {err.get('message')}", file=sys.stderr)
        for key in ("file", "tool_output", "fix"):
            if err.get(key):
                print(f"  {key}: {err[key]}", file=sys.stderr)
    else:
        print("\n" + ("plan: " if plan else "") + ("changes" if rep["changed"] else "no changes"))


def _ensure_jinja2(host: Host) -> None:
    """The one library the agent needs is a Debian package; on a fresh host install it
    first, so the first boot needs a single command."""
    try:
        import jinja2  # noqa: F401
    except ImportError:
        if not (host.live and os.geteuid() == 0):
            raise
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if subprocess.run(["apt-get", "install", "-y", "-q", "python3-jinja2"],
                          env=env, stdout=sys.stderr).returncode:
            subprocess.run(["apt-get", "update", "-q"], env=env, check=True, stdout=sys.stderr)
            subprocess.run(["apt-get", "install", "-y", "-q", "python3-jinja2"], env=env, stdout=sys.stderr,
                           check=True)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["backup"]:  # its own command line; needs no jinja2
        from agent import backup_cli
        return backup_cli.main(argv[1:])
    args = _parser().parse_args(argv)
    host = Host(root=args.root, dry_run=args.command == "plan",
                run_id=args.run_id or uuid.uuid4().hex[:12])
    _ensure_jinja2(host)
    from agent import engine, report  # after jinja2 is there
    if args.command == "status":
        return _status(host, args)
    if args.command == "report":
        return _report(args)
    if args.command == "drain":
        from agent import drain
        with open(host.path("/run/bulletproof-agent.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # never under a running apply
            print("\n".join(drain.drain()))
        return 0
    try:
        spec, raw_public, raw_secrets = _read_spec(args)
    except (SpecError, OSError) as exc:
        msg = str(exc)
        print(json.dumps({"status": "invalid", "error": msg, "steps": []}) if args.json else msg,
              file=sys.stdout if args.json else sys.stderr)
        return 2
    lock = None
    if not host.dry_run:  # two applies at once (cloud-init and SSH) must not interleave
        os.makedirs(host.path("/run"), exist_ok=True)
        lock = open(host.path("/run/bulletproof-agent.lock"), "w")
        fcntl.flock(lock, fcntl.LOCK_EX)
    ctx = Context(spec, host)
    error = None
    started = time.monotonic()
    try:
        engine.execute(ctx)
    except AgentError as exc:  # the engine turns any other exception into one
        error = exc
    rep = report.build(host, spec, ctx.results, error, ctx.dkim_txt, started,
                       mode="plan" if host.dry_run else "apply")
    rep["duration_s"] = round(time.monotonic() - started, 3)
    report.write(host, rep)
    if error is None and not host.dry_run:
        report.keep_spec(host, raw_public, raw_secrets)
    if args.json:
        print(json.dumps(rep, indent=2, sort_keys=True))
    else:
        _print_human(rep, host.dry_run)
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
