"""`make up` says what it will do before doing it: a replaced host or a deleted data volume is
never applied without a preview that says so in plain words, and a CONFIRM.

    python -m ops.plan --stack NAME [--confirm replace-host,delete-volume]

Runs `pulumi preview --json --refresh`, prints one line per resource it changes, and exits 3
when the preview replaces a host or deletes a volume that CONFIRM does not name.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from components import backends

LOSES = {"delete", "replace", "delete-replaced", "discard"}
HOW = {
    "host": ("REPLACE the mail host {name} ({why}). Its mail stays on the data volume, which "
             "moves to the new host: port 25 answers 4xx while it moves (senders retry), then "
             "the agent applies there", "replace-host"),
    "volume": ("DELETE the data volume {name}: every mailbox and queued message on it is lost. "
               "Back up first (make backup)", "delete-volume"),
}


def critical_types() -> dict[str, str]:
    """{resource type: "host" | "volume"} of every registered backend."""
    return {t: kind for b in backends.hosts() for t, kind in b.critical.items()}


def dangers(steps: list[dict]) -> list[tuple[str, str]]:
    """[(the line to print, the confirmation it needs)] for the steps that lose a host or a volume."""
    kinds, out = critical_types(), []
    for step in steps:
        state = step.get("newState") or step.get("oldState") or {}
        kind = kinds.get(state.get("type", ""))
        if not kind or step.get("op") not in LOSES or (kind == "host" and step["op"] == "delete"):
            continue  # a host deleted with its stack (make down) is what was asked for
        text, confirm = HOW[kind]
        why = ", ".join(step.get("replaceReasons") or step.get("diffReasons") or []) or "a replace"
        name = step.get("urn", "").rsplit("::", 1)[-1]
        out.append((text.format(name=name, why=f"because {why} changed"), confirm))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make up", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="local")
    parser.add_argument("--confirm", default="", help="comma-separated: replace-host, delete-volume")
    args = parser.parse_args(argv)
    proc = subprocess.run(["pulumi", "--non-interactive", "preview", "--json", "--refresh",
                           "--stack", args.stack], capture_output=True, text=True)
    try:
        preview = json.loads(proc.stdout)
    except ValueError:
        sys.stderr.write(proc.stdout + proc.stderr)
        return proc.returncode or 1
    if proc.returncode:
        for d in preview.get("diagnostics", []):
            if d.get("severity") == "error":
                print(d.get("message", "").strip(), file=sys.stderr)
        return proc.returncode
    summary = ", ".join(f"{n} to {op}" for op, n in sorted(preview.get("changeSummary", {}).items()) if op != "same")
    print(f"up: {summary or 'no changes'}", file=sys.stderr)
    confirmed = {c.strip() for c in args.confirm.split(",") if c.strip()}
    missing = []
    for line, confirm in dangers(preview.get("steps", [])):
        print(f"up: this would {line}.", file=sys.stderr)
        if confirm not in confirmed:
            missing.append(confirm)
    if missing:
        print(f"up: nothing done; to go ahead: make up CONFIRM={','.join(sorted(set(missing)))}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
