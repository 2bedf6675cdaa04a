"""bulletproof-mail: load the validated stack config, build one MailServer, export outputs."""
import json
import pathlib
import shutil
import sys

import pulumi

from components import config, rdns_check
from components.mail_server import MailServer


def _records_by_name(records: list) -> dict:
    """[(fqdn, type, values)] -> {fqdn: {type: values}}"""
    out: dict = {}
    for fqdn, rtype, values in records:
        out.setdefault(fqdn, {})[rtype] = values
    return out


stack = pulumi.get_stack()
_cfg = pulumi.Config()
_KEYS = ("backend", "region", "residency", "domain", "hostname", "users", "aliases", "dkim_selector",
         "dmarc_policy", "dmarc_rua", "dnsbl_sites", "dnsbl_threshold", "verify", "allow_listed_ip",
         "outbound_per_user_per_hour", *config.BACKEND_KEYS)
# Config keys that are Pulumi secrets; the program passes them on only as secret Outputs.
_SECRETS = [k for k in _KEYS if pulumi.runtime.is_config_secret(f"{pulumi.get_project()}:{k}")]


def _value(key: str):
    """Structured values arrive as JSON text, plain strings as themselves."""
    # The runtime's view, not Config.get: no "read a secret as plain text" warning for secrets,
    # whose plain values serve validation only.
    raw = pulumi.runtime.get_config(f"{pulumi.get_project()}:{key}")
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return raw


try:
    cfg = config.load({k: v for k in _KEYS if (v := _value(k)) is not None}, stack, _SECRETS)
except config.ConfigError as err:
    # One clear line per problem, before any resource is declared.
    for line in err.errors:
        pulumi.log.error(line)
    sys.exit(32)  # the launcher's "already told the user" exit code: no Python traceback

if cfg.backend == "ssh":
    # The provider sets the PTR of an existing server: check it before any resource is declared.
    try:
        rdns_check.enforce(cfg.fqdn, [a for a in (cfg.ssh.host, cfg.ssh.ipv6) if a], cfg.dns.resolver,
                           cfg.ssh.rdns)
    except rdns_check.RdnsError as err:
        for line in err.problems:
            pulumi.log.error(line)
        sys.exit(32)

if cfg.backend == "azure" and not shutil.which("az"):
    # Azure takes a PTR only once the name resolves: the stack sets it with the Azure CLI after
    # the records exist, so a missing CLI would fail halfway through the first `up`.
    pulumi.log.error("backend: 'azure' sets reverse DNS with the Azure CLI, and `az` is not on PATH; "
                     "install it and sign in (`az login`, or a service principal's ARM_* variables)")
    sys.exit(32)

mail = MailServer("mail", cfg, stack, str(pathlib.Path(__file__).resolve().parent),
                  secrets={k: _cfg.require_secret(k) for k in config.SECRET_KEYS if k in _SECRETS})

pulumi.export("domain", cfg.domain)
pulumi.export("fqdn", mail.fqdn)
pulumi.export("host_ipv4", mail.ipv4)
pulumi.export("host_ipv6", mail.ipv6)
pulumi.export("region", cfg.region)
pulumi.export("ssh_target", mail.ipv4.apply(lambda ip: f"{mail.ssh_user}@{ip}"))
if cfg.backend != "ssh":  # on ssh the key is the user's own, already in their config
    pulumi.export("ssh_private_key", mail.ssh_private_key)
pulumi.export("dns_server", mail.dns_server)
_records = list(mail.records.values()) + mail.rdns
pulumi.export("dns_records", pulumi.Output.all(
    *[pulumi.Output.all(r.fqdn, r.type, r.values) for r in _records]).apply(_records_by_name))
pulumi.export("dkim_selector", cfg.dkim_selector)
pulumi.export("dkim_txt", mail.dkim_txt)
pulumi.export("agent_spec", mail.spec)
pulumi.export("mail_users", [u.address for u in cfg.users])
pulumi.export("mail_passwords", pulumi.Output.secret(mail.passwords))
if mail.verification is not None:
    pulumi.export("verification", pulumi.Output.all(mail.verification.passed, mail.verification.failed).apply(
        lambda v: {"passed": v[0], "failed": v[1]}))
if cfg.is_local:
    first = cfg.users[0].address
    pulumi.export("test_user", first)
    pulumi.export("test_password", mail.passwords[first])
