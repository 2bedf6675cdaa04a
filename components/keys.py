"""Key pairs and passwords generated once by small dynamic providers and kept as secrets.

No tls/random provider plugins exist on this machine, so these stand in for them. Each value is
made in `create` only: an unchanged config never regenerates it, so a preview with nothing
changed shows nothing. The provider classes are pickled into the state by reference: their
module and names never change (tests/unit/test_state_contract.py).
"""
from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider


class _KeyPairProvider(ResourceProvider):
    """RSA (DKIM) or Ed25519 (SSH) key pair; a change of any input makes a new pair."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        from cryptography.hazmat.primitives import serialization as ser
        from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

        if props["algorithm"] == "rsa":
            key = rsa.generate_private_key(public_exponent=65537, key_size=int(props["bits"]))
            private = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
            public = key.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
            import base64
            public_text = base64.b64encode(public).decode()
        else:
            key = ed25519.Ed25519PrivateKey.generate()
            private = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH, ser.NoEncryption())
            public_text = key.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH).decode()
        import hashlib
        return CreateResult(
            id_=hashlib.sha256(public_text.encode()).hexdigest()[:16],
            outs={**props, "private_key": private.decode(), "public_key": public_text},
        )

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in ("algorithm", "bits", "rotation") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=False)


class KeyPair(Resource, module="keys", name="KeyPair"):
    """A key pair: `public_key` in the clear, `private_key` a secret.

    `rotation` is any string whose change makes a new pair (the DKIM selector, for example).
    """

    private_key: pulumi.Output[str]
    public_key: pulumi.Output[str]

    def __init__(self, name: str, algorithm: str, bits: int = 0, rotation: str = "",
                 opts: pulumi.ResourceOptions | None = None):
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["private_key"]))
        super().__init__(_KeyPairProvider(), name, {
            "algorithm": algorithm, "bits": bits, "rotation": rotation,
            "private_key": None, "public_key": None,
        }, opts)


class _PasswordProvider(ResourceProvider):
    """A random password and its SHA512-CRYPT hash (Dovecot's passwd-file scheme)."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        import crypt  # noqa: deprecated in 3.11 but present; the hash format is what Dovecot reads
        import secrets

        password = secrets.token_urlsafe(18)
        hashed = "{SHA512-CRYPT}" + crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512, rounds=100000))
        return CreateResult(id_=secrets.token_hex(8),
                            outs={**props, "password": password, "hash": hashed})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = olds.get("account") != news.get("account")
        return DiffResult(changes=changed, replaces=["account"] if changed else [])


class MailPassword(Resource, module="keys", name="MailPassword"):
    """A mailbox password generated once; both the password and its hash are secrets."""

    password: pulumi.Output[str]
    hash: pulumi.Output[str]

    def __init__(self, name: str, account: str, opts: pulumi.ResourceOptions | None = None):
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["password", "hash"]))
        super().__init__(_PasswordProvider(), name,
                         {"account": account, "password": None, "hash": None}, opts)


class _SecretProvider(ResourceProvider):
    """A random secret (32 bytes, URL-safe base64), made once; a new `purpose` makes a new one."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        import secrets
        return CreateResult(id_=secrets.token_hex(8), outs={**props, "secret": secrets.token_urlsafe(32)})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = olds.get("purpose") != news.get("purpose")
        return DiffResult(changes=changed, replaces=["purpose"] if changed else [])


class RandomSecret(Resource, module="keys", name="RandomSecret"):
    """A secret generated once and kept in the state (e.g. the SRS signing secret)."""

    secret: pulumi.Output[str]

    def __init__(self, name: str, purpose: str, opts: pulumi.ResourceOptions | None = None):
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["secret"]))
        super().__init__(_SecretProvider(), name, {"purpose": purpose, "secret": None}, opts)
