"""A complete example spec (the format by example), used by tests, benches and docs.

``python -m agent.example OUTDIR`` writes OUTDIR/spec.json + OUTDIR/secrets.json (0600) with a
fresh DKIM key and the password "secret-<localpart>" for each user.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from agent import spec as S


def dkim_key(bits: int = 2048) -> str:
    return subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                           f"rsa_keygen_bits:{bits}"], capture_output=True, text=True,
                          check=True).stdout


def password_hash(password: str) -> str:
    """Dovecot's {SHA512-CRYPT}, made with openssl (no Python crypt module needed)."""
    out = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password,
                         capture_output=True, text=True, check=True).stdout.strip()
    return "{SHA512-CRYPT}" + out


def example(domain: str = "example.test", ipv4: str = "10.77.0.2",
            dns_server: str = "10.77.0.1", users=("alice", "bob"), dkim_pem: str | None = None,
            **overrides) -> dict:
    data = {
        "version": S.SPEC_VERSION,
        "domain": domain,
        "hostname": f"mail.{domain}",
        "ipv4": ipv4,
        "ipv6": None,
        "users": [{"address": f"{u}@{domain}", "password_hash": password_hash(f"secret-{u}"),
                   "quota_mb": 100} for u in users],
        "aliases": {f"postmaster@{domain}": [f"{users[0]}@{domain}"]},
        "dkim": {"selector": "s1", "private_key_pem": dkim_pem or dkim_key()},
        "tls": {"mode": "self-signed"},
        "postscreen": {"dnsbl_sites": [{"zone": "dnsbl.test", "weight": 2}],
                       "dnsbl_threshold": 2, "allowlist": [], "greet_wait_s": 3},
        "resolver": {"forwarders": [f"{dns_server}@53"], "stub_zones": [],
                     "insecure_domains": ["test"], "max_negative_ttl_s": 5},
        "rate_limits": {"client_connection_rate": 300, "client_message_rate": 300,
                        "client_auth_rate": 100, "client_connection_count": 50},
        "limits": {"message_size_limit": 10485760, "queue_minfree": 20971520},
        "features": {"https": False, "spf_policy": True, "ssh_port": 22},
    }
    data.update(overrides)
    return data


def write(outdir: str, data: dict) -> tuple[str, str]:
    public, secrets = S.split(data)
    os.makedirs(outdir, exist_ok=True)
    paths = (os.path.join(outdir, "spec.json"), os.path.join(outdir, "secrets.json"))
    for path, content in zip(paths, (public, secrets)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(content, f, indent=2, sort_keys=True)
            f.write("\n")
    return paths


if __name__ == "__main__":
    print("\n".join(write(sys.argv[1], example())))
