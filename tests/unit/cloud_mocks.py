"""Runs MailServer for a non-local stack under pulumi.runtime.set_mocks: no cloud is reached.

Components are imported only after set_mocks, as Pulumi requires. Every registered resource is
recorded as (type, name, inputs), inputs with the engine's (camelCase) property names.
"""
from __future__ import annotations

import pathlib

import pulumi

from tests import local_stack

ROOT = pathlib.Path(__file__).resolve().parents[2]
STACK = "prod-oslo"
IPV4, IPV6, FLOATING_IPV4 = "192.0.2.10", "2001:db8::10", "198.51.100.7"
AZURE_IPV4, AZURE_IPV6 = "203.0.113.25", "2001:db8:4a::25"
MOCK_SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nmock-ssh-private\n-----END OPENSSH PRIVATE KEY-----\n"
MOCK_DKIM_KEY = "-----BEGIN PRIVATE KEY-----\nmock-dkim-private\n-----END PRIVATE KEY-----\n"
# A 2048-bit key's base64 is 392 characters: its DKIM TXT record needs two 255-byte strings.
MOCK_DKIM_PUBLIC = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + "A" * 348
ZONE_ID = "0123456789abcdef0123456789abcdef"
MOCK_STORAGE_KEY = "bW9jay1zdG9yYWdlLWtleQ=="
BACKUP_REPOSITORY = "sftp:backup@192.0.2.20:/srv/restic/mail"


def openstack_raw(**changes) -> dict:
    return {**local_stack.raw(), "backend": "openstack", "region": "osl1", "dmarc_policy": "reject",
            "openstack_flavor": "b.2c4gb", "openstack_image": "Debian 12",
            "openstack_network": "0f6e1c2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b",
            "dns_backend": "cloudflare", "cloudflare_zone_id": ZONE_ID, "resolver": "192.0.2.53:53",
            "backup_repository": BACKUP_REPOSITORY, "backup_password": "mock-backup-password",
            "backup_region": "oslo", **changes}


def azure_raw(**changes) -> dict:
    return {**local_stack.raw(), "backend": "azure", "region": "norwayeast", "dmarc_policy": "reject",
            "dns_backend": "cloudflare", "cloudflare_zone_id": ZONE_ID, "resolver": "192.0.2.53:53",
            **changes}


class Mocks(pulumi.runtime.Mocks):
    def __init__(self):
        self.resources: list[tuple[str, str, dict]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        inputs = dict(args.inputs)
        self.resources.append((args.typ, args.name, inputs))
        outs = dict(inputs)
        if args.typ.startswith("pulumi-python:dynamic"):
            if inputs.get("algorithm") == "rsa":
                outs.update(private_key=MOCK_DKIM_KEY, public_key=MOCK_DKIM_PUBLIC)
            elif inputs.get("algorithm") == "ed25519":
                outs.update(private_key=MOCK_SSH_KEY, public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAImock")
            elif args.typ.endswith(":Bridge"):  # the local backend's
                outs.update(gateway="10.77.0.1/24", gateway6="fd00:77::1/64")
            elif inputs.get("kind") == "dns":
                outs.update(url="10.77.0.1:53", tsig_name="mock-key", tsig_algorithm="hmac-sha256",
                            tsig_secret="bW9jaw==")
            elif "purpose" in inputs:
                outs.update(secret=f"mock-{inputs['purpose']}-secret")
            elif "account" in inputs:
                outs.update(password="mock-mailbox-password", hash="{SHA512-CRYPT}$6$mock-hash")
        elif args.typ == "openstack:networking/port:Port":
            outs["allFixedIps"] = [IPV4, IPV6]
        elif args.typ == "openstack:networking/floatingIp:FloatingIp":
            outs["address"] = FLOATING_IPV4
        elif args.typ == "azure-native:network:PublicIPAddress":
            outs["ipAddress"] = AZURE_IPV6 if inputs["publicIPAddressVersion"] == "IPv6" else AZURE_IPV4
        elif args.typ == "azure-native:resources:ResourceGroup":
            outs["name"] = inputs["resourceGroupName"]
        return f"{args.name}-id", outs

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "azure-native:storage:listStorageAccountKeys":
            return {"keys": [{"keyName": "key1", "value": MOCK_STORAGE_KEY, "permissions": "FULL"}]}
        return {}


def load(raw: dict):
    """The config as the program loads it, its secret keys (backup_password...) as secrets."""
    from components import config
    return config.load(raw, STACK, secret_keys=[k for k in config.secret_key_names() if k in raw])


def run(cfg, secrets: dict | None = None) -> tuple[Mocks, dict]:
    """Declare MailServer for `cfg`; return the mocks and the resolved spec JSON and records.
    `secrets`: the secret config values (plain strings), as the program passes them on."""
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project="bulletproof-mail", stack=STACK, preview=False)
    from components.mail_server import MailServer  # after set_mocks

    seen: dict = {}

    @pulumi.runtime.test
    def declare():
        server = MailServer("mail", cfg, STACK, str(ROOT), "/nonexistent/known_hosts",
                            secrets={k: pulumi.Output.secret(v) for k, v in
                                     {"backup_password": "mock-backup-password", **(secrets or {})}.items()})
        seen["server"] = server
        return pulumi.Output.all(server.spec, server.host.ipv4, server.host.ipv6).apply(
            lambda a: seen.update(spec=a[0], ipv4=a[1], ipv6=a[2]))

    declare()
    return mocks, seen


def of_type(mocks: Mocks, typ: str) -> list[tuple[str, dict]]:
    return [(name, inputs) for t, name, inputs in mocks.resources if t == typ]


def spec_in(document: str) -> str:
    """The spec file's content as written into a cloud-config document."""
    import json
    from agent import contract
    config_doc = json.loads(document.split("\n", 1)[1])
    (spec_file,) = [f for f in config_doc["write_files"] if f["path"] == contract.PENDING_SPEC]
    return spec_file["content"]
