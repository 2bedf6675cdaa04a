"""bulletproof-mail: load the validated stack config, build one MailServer, export outputs."""
import json
import pathlib
import sys

import pulumi

from components import backends, config
from components.mail_server import MailServer
from localcloud import naming


def _records_by_name(records: list) -> dict:
    """[(fqdn, type, values)] -> {fqdn: {type: values}}"""
    out: dict = {}
    for fqdn, rtype, values in records:
        out.setdefault(fqdn, {})[rtype] = values
    return out


def _value(key: str):
    """Structured values arrive as JSON text, plain strings as themselves."""
    # The runtime's view, not Config.get: no "read a secret as plain text" warning for secrets,
    # whose plain values serve validation only.
    raw = pulumi.runtime.get_config(f"{pulumi.get_project()}:{key}")
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return raw


def _stop(lines: list[str]) -> None:
    """One clear line per problem, before any resource is declared."""
    for line in lines:
        pulumi.log.error(line)
    sys.exit(32)  # the launcher's "already told the user" exit code: no Python traceback


stack = pulumi.get_stack()
checkout = str(pathlib.Path(__file__).resolve().parent)
keys = [k.name for k in config.all_keys()]
# Config keys that are Pulumi secrets; the program passes them on only as secret Outputs.
secret_keys = [k for k in keys if pulumi.runtime.is_config_secret(f"{pulumi.get_project()}:{k}")]
try:
    cfg = config.load({k: v for k in keys if (v := _value(k)) is not None}, stack, secret_keys)
except config.ConfigError as err:
    _stop(err.errors)
backend = backends.host(cfg.backend)
if backend.precheck and (problems := backend.precheck(cfg)):
    _stop(problems)

_cfg = pulumi.Config()
mail = MailServer("mail", cfg, stack, checkout,
                  known_hosts=str(naming.known_hosts(naming.stack_names(stack, checkout))),
                  secrets={k: _cfg.require_secret(k) for k in config.secret_key_names() if k in secret_keys})
host = mail.host

pulumi.export("backend", cfg.backend)
pulumi.export("domain", cfg.domain)
pulumi.export("fqdn", mail.fqdn)
pulumi.export("host_ipv4", host.ipv4)
pulumi.export("host_ipv6", host.ipv6)
pulumi.export("region", cfg.region)
pulumi.export("ssh_target", host.ipv4.apply(lambda ip: f"{host.ssh_user}@{ip}"))
pulumi.export("ssh_private_key", pulumi.Output.secret(host.ssh_private_key))
pulumi.export("dns_backend", host.dns.backend)
pulumi.export("dns_server", host.dns.url)
pulumi.export("dns_zone", host.dns.zone)
pulumi.export("resolver", host.resolver)
pulumi.export("dns_records", pulumi.Output.all(
    *[pulumi.Output.all(r.fqdn, r.type, r.values) for r in mail.records]).apply(_records_by_name))
pulumi.export("dkim_selector", cfg.dkim_selector)
pulumi.export("dkim_txt", mail.dkim_txt)
pulumi.export("agent_spec", mail.spec)
pulumi.export("mail_users", [u.address for u in cfg.users])
pulumi.export("mail_domains", [d.name for d in cfg.domains])
pulumi.export("dkim_txts", mail.dkim_txts)
# Per domain: where its records are, its selector and catch-all (the operator commands check each).
pulumi.export("domain_settings", {d.name: {"dns_backend": mail.dns_targets[d.name].backend,
                                           "dns_server": mail.dns_targets[d.name].url,
                                           "dns_zone": mail.dns_targets[d.name].zone,
                                           "dkim_selector": d.dkim_selector, "catch_all": d.catch_all}
                                  for d in cfg.domains})
pulumi.export("mail_passwords", pulumi.Output.secret(mail.passwords))
if mail.verification is not None:
    pulumi.export("verification", pulumi.Output.all(mail.verification.passed, mail.verification.failed).apply(
        lambda v: {"passed": v[0], "failed": v[1]}))
for key, value in host.exports.items():
    pulumi.export(key, value)
if cfg.is_local:
    first = cfg.users[0].address
    pulumi.export("test_user", first)
    pulumi.export("test_password", mail.passwords[first])
