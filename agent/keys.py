"""Key material: the TLS pair (provided, or self-signed once and then kept) and the DKIM
public TXT record derived from the spec's private key. Uses the openssl CLI, a Debian
package, so the agent needs no Python crypto library."""
from __future__ import annotations

import base64
import os
import subprocess
import tempfile

from agent.durable import read_text
from agent.errors import ApplyError
from agent.contract import TLS_CERT as CERT, TLS_KEY as KEY
from agent.host import Host
from agent.migrate import LEGACY_TLS_CERT, LEGACY_TLS_KEY
from agent.spec import Spec
from agent.step import Context, StepResult

NAME = "keys"


def _openssl(args: list[str], data: str | None = None) -> str:
    proc = subprocess.run(["openssl", *args], input=data, capture_output=True, text=True)
    if proc.returncode:
        raise ApplyError(f"openssl {args[0]} failed", tool_output=proc.stderr,
                         fix="check the PEM data in the spec")
    return proc.stdout


def _cert_matches(cert: str, key: str, hostname: str) -> bool:
    """Keep an existing self-signed pair only if it is for this hostname and still valid
    for 30 days; otherwise a renamed host would keep presenting the old name."""
    try:
        subject = _openssl(["x509", "-noout", "-subject", "-nameopt", "multiline"], cert)
        _openssl(["x509", "-noout", "-checkend", str(30 * 86400)], cert)
        pub_cert = _openssl(["x509", "-noout", "-pubkey"], cert)
        pub_key = _openssl(["pkey", "-pubout"], key)
    except ApplyError:
        return False
    return f"commonName                = {hostname}" in subject and pub_cert == pub_key


def self_signed(hostname: str) -> tuple[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        _openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
                  "-days", "825", "-subj", f"/CN={hostname}",
                  "-addext", f"subjectAltName=DNS:{hostname}",
                  "-keyout", key, "-out", cert])
        return read_text(cert), read_text(key)


def tls_pair(spec: Spec, host: Host) -> tuple[tuple[str, str], bool, str]:
    """((cert_pem, key_pem), generated?, what happened). Plan generates a missing pair too,
    in memory only, so the staged set can be validated; the files step writes it."""
    if spec.tls.mode == "provided":
        return (spec.tls.cert_pem, spec.tls.key_pem), False, "provided by the spec"
    for cert_path, key_path in ((CERT, KEY), (LEGACY_TLS_CERT, LEGACY_TLS_KEY)):
        cert, key = read_text(host.path(cert_path)), read_text(host.path(key_path))
        if cert and key and _cert_matches(cert, key, spec.hostname):
            # One made before the data volume moves onto it (the files step writes it there).
            return (cert, key), False, "self-signed pair kept" + (
                "" if cert_path == CERT else f" (from {cert_path})")
    verb = "would be generated" if host.dry_run else "generated"
    return self_signed(spec.hostname), True, f"self-signed pair {verb} for {spec.hostname}"


def apply(ctx: Context) -> StepResult:
    """Produces ctx.tls_pair and ctx.dkim_txt; writes nothing itself."""
    ctx.tls_pair, generated, detail = tls_pair(ctx.spec, ctx.host)
    ctx.dkim_txt = dkim_txt(ctx.spec.dkim.private_key_pem)
    return StepResult(NAME, changed=generated, detail=detail)


def dkim_txt(private_key_pem: str) -> str:
    """The DNS TXT value publishing the DKIM public key (RFC 6376 section 3.6.1)."""
    der = subprocess.run(["openssl", "pkey", "-pubout", "-outform", "DER"],
                         input=private_key_pem.encode(), capture_output=True)
    if der.returncode:
        raise ApplyError("cannot derive the DKIM public key", tool_output=der.stderr.decode(),
                         fix="dkim.private_key_pem must be an RSA private key in PEM")
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der.stdout).decode()
