"""Builds the agent's spec from the stack config, with agent/spec.py as the one contract.

The readable part and the secrets are built apart: the readable part is plain state (a preview
diff says what changed), the secrets (password hashes, DKIM key) stay Pulumi secrets and reach
the host over SSH, never in user-data.
"""
from __future__ import annotations

import json

import pulumi

from agent import contract as agent_contract
from agent import spec as agent_spec

# Placeholders that satisfy the agent's checks when validating the readable part at preview.
_PLACEHOLDER_HASH = "{SHA512-CRYPT}$6$rounds=5000$placeholder$" + "x" * 86
_PLACEHOLDER_KEY = "-----BEGIN PRIVATE KEY-----\nplaceholder\n-----END PRIVATE KEY-----\n"
_PLACEHOLDER_BACKUP = "placeholder-backup-password"
_PLACEHOLDER_DQS = "placeholderplaceholderdqs0"


def public_spec(cfg, ipv4: str, ipv6: str | None, forwarders: list[str],
                stub_zones: list[dict] | None = None, host: dict | None = None) -> dict:
    """The readable spec; raises agent SpecError (every problem listed) if the agent would refuse it.

    `host`: the sections only the host backend knows: its data volume, and `features` such as
    public_ip_nat (the cloud translates ipv4/ipv6 to the host's private addresses, Azure).
    """
    aliases: dict[str, list[str]] = {k: [v] if isinstance(v, str) else list(v) for k, v in cfg.aliases.items()}
    names = [d.name for d in cfg.domains]
    # RFC 2142, for every domain: to its own first mailbox (or the stack's first one).
    for role, targets in agent_contract.role_aliases_of(names, [u.address for u in cfg.users]).items():
        aliases.setdefault(role, list(targets))
    spec = {
        "version": agent_spec.SPEC_VERSION,
        "domain": cfg.domain,
        "hostname": cfg.fqdn,
        "ipv4": ipv4,
        "ipv6": ipv6,
        "users": [{"address": u.address, "quota_mb": u.quota_mb} for u in cfg.users],
        "aliases": aliases,
        "dkim": {"selector": cfg.dkim_selector},
        "tls": {"mode": "self-signed"},
        "postscreen": {
            "dnsbl_sites": [{"zone": s.site, "weight": s.weight, "filter": s.filter,
                             **({"dqs": True} if s.dqs else {})} for s in cfg.dnsbl_sites],
            "dnsbl_threshold": cfg.dnsbl_threshold,
            "allowlist": [],
        },
        # The marketing script that sends 5,000 mails stops at this many recipients an hour.
        "rate_limits": {"outbound_per_user_per_hour": cfg.outbound_per_user_per_hour},
        "resolver": {
            "forwarders": forwarders,
            "stub_zones": stub_zones or [],
            # .test zones (RFC 6761) are never signed; real domains keep DNSSEC validation.
            "insecure_domains": ["test"] if cfg.is_local or any(n.endswith(".test") for n in names) else [],
        },
        # The backend may add its login user's root rule and the firewall mode (hosts.ssh_section).
        "ssh": {"allow_from": list(cfg.ssh_allow_from)},
    }
    spec.update(domain_sections(cfg))
    spec.update(host or {})
    validate(spec)
    return spec


def domain_sections(cfg) -> dict:
    """`domains` and `mailbox_moves`, only when they say more than `domain` and `dkim` do: a
    one-domain stack's spec stays as it was."""
    out: dict = {}
    if len(cfg.domains) > 1 or any(d.catch_all for d in cfg.domains):
        out["domains"] = [{"name": d.name, "dkim_selector": d.dkim_selector, "catch_all": d.catch_all}
                          for d in cfg.domains]
    moves = [{"from": d.previous_name, "to": d.name} for d in cfg.domains if d.previous_name]
    if moves:
        out["mailbox_moves"] = moves
    return out


def host_spec_json(cfg, ipv4, ipv6, forwarders, host: dict | None = None) -> pulumi.Output:
    """The agent's readable spec as canonical JSON. `forwarders`: the "IP:port"s the host's
    unbound forwards to (one Input, or a list); empty: it recurses itself. `host`: the host
    backend's sections (Inputs allowed)."""
    listed = pulumi.Output.from_input(forwarders).apply(
        lambda f: [f] if isinstance(f, str) else list(f or ()))
    return pulumi.Output.all(ipv4, ipv6, listed, host or {}).apply(lambda a: to_json(public_spec(
        cfg, a[0], a[1], [f.replace(":", "@") for f in a[2]], host=a[3])))


def secrets(password_hashes: dict[str, str], dkim_private_key_pem: str,
            backup_password: str | None = None, backup_env: dict | None = None,
            dqs_key: str | None = None, dkim_keys: dict[str, str] | None = None,
            srs_secret: str | None = None) -> dict:
    """`dkim_keys`: {domain: PEM} of every domain but the primary (whose key is
    dkim_private_key_pem); `srs_secret`: postsrsd's (absent: forwarding without SRS)."""
    out = {"passwords": dict(password_hashes), "dkim_private_key_pem": dkim_private_key_pem}
    if dkim_keys:
        out["dkim_keys"] = dict(dkim_keys)
    if srs_secret:
        out["srs_secret"] = srs_secret
    if dqs_key:
        out["dqs_key"] = dqs_key
    if backup_password is not None:
        out["backup_password"] = backup_password
    if backup_env:
        out["backup_env"] = dict(backup_env)
    return out


def validate(public: dict) -> None:
    dqs = any(s.get("dqs") for s in public["postscreen"]["dnsbl_sites"])
    others = [d["name"] for d in public.get("domains") or []][1:]
    placeholders = secrets({u["address"]: _PLACEHOLDER_HASH for u in public["users"]}, _PLACEHOLDER_KEY,
                           backup_password=_PLACEHOLDER_BACKUP if public.get("backup") else None,
                           dqs_key=_PLACEHOLDER_DQS if dqs else None,
                           dkim_keys={d: _PLACEHOLDER_KEY for d in others})
    try:
        agent_spec.load(agent_spec.merge(public, placeholders))
    except agent_spec.SpecError as err:
        # A placeholder key is not a real PEM, the backend's credentials are secrets not known
        # here: only the readable part's errors matter.
        real = [e for e in err.errors if "private_key" not in e and "password_hash" not in e
                and "dkim_keys" not in e
                and not e.startswith("backup.env")]
        if real:
            raise agent_spec.SpecError(real) from None


def to_json(data: dict) -> str:
    """Canonical JSON, so the same spec always gives the same bytes (and run id)."""
    return json.dumps(data, sort_keys=True, indent=1) + "\n"
