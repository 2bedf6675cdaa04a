"""Validate a staged config set with the real tools before anything goes live.

The staging dir mirrors the live tree (STAGE/etc/postfix/main.cf ...), rendered with every
cross-file path pointing into STAGE, so each tool checks exactly the set that will go live.
A tool missing from the host (e.g. before its package is installed in ``plan``) is skipped
and reported, never silently treated as success.
"""
from __future__ import annotations

import os
import pty
import shutil
import subprocess

from agent.contract import SSHD_DROPIN, TLS_CERT, TLS_KEY
from agent.errors import ValidationError

FIXES = {
    "postfix": "check the spec values that feed main.cf/master.cf (postconf(5))",
    "dovecot": "check the spec values that feed dovecot.conf (TLS cert/key, users)",
    "opendkim": "check dkim.selector / dkim.private_key_pem",
    "unbound": "check resolver.forwarders / resolver.stub_zones",
    "nftables": "check features.ssh_port / features.https",
    "ssh": "check ssh.permit_root_login (sshd_config(5))",
    "policyd-rate-limit": "check rate_limits.outbound_per_user_per_hour",
    "tls": "tls.cert_pem / tls.key_pem must be a PEM certificate and its private key",
}


def _run(argv: list[str], timeout: float = 60) -> tuple[int, str]:
    if argv[0] == "postfix":
        return _run_on_tty(argv, timeout)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, (proc.stdout + proc.stderr)


def run_tool(argv: list[str], timeout: float = 60) -> tuple[int, str]:
    """(exit status, what the tool said); a postfix command gets a terminal to say it on."""
    return _run(argv, timeout)


def _run_on_tty(argv: list[str], timeout: float) -> tuple[int, str]:
    """The postfix command reports to stderr only when it is a terminal (otherwise to the
    log service, which may not run yet), so give it a pty and read what it says."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: every writer closed the pty
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    rc = proc.wait(timeout=timeout)
    return rc, b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


def checks(stage: str) -> list[tuple[str, str, list[str]]]:
    """(service, file checked, argv) for each tool, in a fixed order."""
    pf = f"{stage}/etc/postfix"
    return [
        ("postfix", f"{pf}/main.cf", ["postconf", "-c", pf, "-n"]),
        ("postfix", f"{pf}/master.cf", ["postconf", "-c", pf, "-M"]),
        ("postfix", f"{pf}/main.cf", ["postfix", "-c", pf, "check"]),
        ("dovecot", f"{stage}/etc/dovecot/dovecot.conf",
         ["doveconf", "-c", f"{stage}/etc/dovecot/dovecot.conf", "-n"]),
        ("opendkim", f"{stage}/etc/opendkim.conf",
         ["opendkim", "-n", "-x", f"{stage}/etc/opendkim.conf"]),
        ("unbound", f"{stage}/etc/unbound/unbound.conf.d/bulletproof.conf",
         ["unbound-checkconf", f"{stage}/etc/unbound/unbound.conf.d/bulletproof.conf"]),
        ("nftables", f"{stage}/etc/nftables.conf",
         ["nft", "-c", "-f", f"{stage}/etc/nftables.conf"]),
        # The drop-in read as a whole config: its syntax and values, with the host's keys.
        ("ssh", f"{stage}{SSHD_DROPIN}", ["sshd", "-t", "-f", f"{stage}{SSHD_DROPIN}"]),
        # Its own parser (YAML, then the limits it will enforce); exit 5 on a bad file.
        ("policyd-rate-limit", f"{stage}/etc/policyd-rate-limit.yaml",
         ["policyd-rate-limit", "--file", f"{stage}/etc/policyd-rate-limit.yaml",
          "--get-config", "limits"]),
        # Postfix and Dovecot only parse certificates when a daemon starts: check them here.
        ("tls", f"{stage}{TLS_CERT}", ["openssl", "x509", "-noout", "-in", f"{stage}{TLS_CERT}"]),
        ("tls", f"{stage}{TLS_KEY}", ["openssl", "pkey", "-noout", "-in", f"{stage}{TLS_KEY}"]),
    ]


def _complaint(service: str, rc: int, output: str) -> str | None:
    """The tool's complaint, or None when the file is accepted. Postfix tools exit 0 on
    many mistakes (unknown parameters, bad values) and only warn, so warnings count."""
    if rc != 0:
        return output or f"exit status {rc}"
    if service == "postfix":
        bad = [l for l in output.splitlines() if "warning:" in l or "fatal:" in l
               or "error:" in l]
        return "\n".join(bad) or None
    return None


def _key_mismatch(stage: str) -> str | None:
    pub = [_run(["openssl", *a])[1] for a in (
        ["x509", "-noout", "-pubkey", "-in", f"{stage}{TLS_CERT}"],
        ["pkey", "-pubout", "-in", f"{stage}{TLS_KEY}"])]
    return None if pub[0] == pub[1] else "the TLS private key does not match the certificate"


def validate(stage: str, only: set[str] | None = None, skip_tools: set[str] = frozenset()
             ) -> list[str]:
    """Raise ValidationError on the first refused file; return notes about skipped tools."""
    notes = []
    for service, path, argv in checks(stage):
        if only is not None and service not in only:
            continue
        if argv[0] in skip_tools:
            continue
        if service == "nftables" and not os.path.exists(path):
            continue  # ssh.firewall none: no ruleset of ours was rendered
        if shutil.which(argv[0]) is None:
            notes.append(f"{argv[0]} not installed: {service} config not validated")
            continue
        if argv[:2] == ["postfix", "-c"] and os.geteuid() != 0:
            notes.append("postfix check needs root: skipped")
            continue
        if argv[0] == "sshd":
            # sshd -t insists on its privilege separation dir, which ssh.service makes at start.
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        rc, out = _run(argv)
        complaint = _complaint(service, rc, out)
        if not complaint and argv[:2] == ["openssl", "pkey"]:
            complaint = _key_mismatch(stage)
        if complaint:
            live = path[len(stage):] if path.startswith(stage) else path
            raise ValidationError(
                f"{argv[0]} refused the new {service} configuration (staged copy of {live}; "
                "nothing went live)", file=live, tool_output=complaint, fix=FIXES[service])
    return notes
