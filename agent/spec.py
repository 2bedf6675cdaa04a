"""The agent spec: the single contract between the Pulumi side and the on-host agent.

Standard library only (it runs on a bare Debian 12 host). ``load(data)`` turns a plain dict
into a frozen ``Spec`` or raises ``SpecError`` listing EVERY problem by path, e.g.
``users[2].address: not an address in domain example.test``. A spec whose ``version`` is
newer than ``SPEC_VERSION`` is refused by name before anything else is read.

Two files on the host, merged at load (``merge(public, secrets)``):

``/etc/bulletproof-mail/spec.json`` (0600, readable part; ``public_view`` of a spec)::

    {
      "version": 1,
      "domain": "example.test",
      "hostname": "mail.example.test",          # the mail FQDN (myhostname, HELO, cert CN)
      "ipv4": "10.77.0.2",
      "ipv6": null,                              # absent -> Postfix speaks IPv4 only
      "users": [{"address": "alice@example.test", "quota_mb": 1024}],
      "aliases": {"postmaster@example.test": ["alice@example.test"]},  # postmaster@/abuse@
                                                 # default to the first user (RFC 2142), and
                                                 # are never users; a target is a user (+ext
                                                 # too), an alias of ours or an address
                                                 # elsewhere, never in a loop
      "dkim": {"selector": "s1"},
      "tls": {"mode": "self-signed"},            # or "provided" + cert_pem (+ key_pem secret)
      "postscreen": {"dnsbl_sites": [{"zone": "dnsbl.test", "weight": 2,   # + "dqs": true,
                                      "filter": "127.0.0.[2..11]"}],     # default: known/
                                                 # contract.DEFAULT_DNSBL_FILTER
                     "dnsbl_threshold": 2, "allowlist": ["192.0.2.0/24"],
                     "greet_wait_s": 6},
      "resolver": {"forwarders": ["10.77.0.1@53"],   # [] or absent: unbound recurses
                   "stub_zones": [{"name": "example.test", "addrs": ["10.77.0.1"]}],
                   "insecure_domains": ["test"], "max_negative_ttl_s": 60},
      "rate_limits": {"client_connection_rate": 30, "client_message_rate": 60,
                      "client_auth_rate": 10, "client_connection_count": 20,
                      "outbound_per_user_per_hour": 200},
      "limits": {"message_size_limit": 26214400, "queue_minfree": 104857600},
      "features": {"https": false, "spf_policy": true, "ssh_port": 22,
                   "public_ip_nat": false},             # true: ipv4/ipv6 are NATed (Azure)
      "backup": {"repository": "/srv/backup/repo",      # optional; absent -> no backups
                 "interval_min": 60,
                 "keep": {"hourly": 24, "daily": 7, "weekly": 4, "monthly": 6}},
      "volume": {"kind": "directory"},           # where the mail lives (DATA_DIR, /srv/mail):
                                                 #   see below
      "domains": [{"name": "example.test", "dkim_selector": "s1", "catch_all": null},
                  {"name": "brand.test", "dkim_selector": "s1",
                   "catch_all": "alice@example.test"}],   # optional: absent -> `domain` alone;
                                                 # the first is `domain` (selector dkim.selector);
                                                 # users and aliases may be in any of them
      "mailbox_moves": [{"from": "old.test", "to": "brand.test"}],  # optional: a renamed
                                                 # domain's mailboxes move before it is served
      "ssh": {"allow_from": ["0.0.0.0/0", "::/0"],   # CIDRs that reach sshd (nftables)
              "firewall": "managed",             # or "none": nftables is the server's own
              "permit_root_login": "prohibit-password"}  # or "no" (the stack's login: sudo)
    }

``volume``: the mail (mailboxes, Postfix queue, TLS pair) lives under ``/srv/mail``
(agent/contract.py DATA_DIR), which outlives the host. ``kind`` is one of

- ``"mounted"``: the stack mounts the volume at /srv/mail before the agent runs (the local
  backend's bind mount); /srv/mail must be a mount point, or the run fails;
- ``"directory"`` (the default when ``volume`` is absent): a plain directory on the host's own
  disk (an existing server, ``ssh``);
- ``"block"`` with ``"device": "/dev/..."`` (an Azure managed disk at
  /dev/disk/azure/scsi1/lun0, a Cinder volume at /dev/disk/by-id/virtio-<id>): the agent
  formats it (ext4, label bulletproof-mail) only when it holds no filesystem at all, and mounts
  it by filesystem UUID.

``backup.repository`` is restic's: an absolute path (not inside or above the mail data
``contract.DATA_DIR``), ``sftp:user@host:/path``, ``s3:https://host/bucket[/prefix]``,
``rest:https://host:port/path/`` (no credentials in the URL) or ``azure:container:/path``.
``interval_min`` divides the hour or the day (5 ... 60, 120 ... 1440); ``keep`` is the
retention of ``restic forget`` (each >= 0, one at least > 0).

``/etc/bulletproof-mail/secrets.json`` (0600, sent separately over SSH)::

    {"passwords": {"alice@example.test": "{SHA512-CRYPT}$6$..."},
     "dkim_private_key_pem": "-----BEGIN PRIVATE KEY-----...",
     "tls_key_pem": "-----BEGIN PRIVATE KEY-----...",   # only with tls.mode == "provided"
     "dqs_key": "...",                  # Spamhaus DQS key, for sites with "dqs": true
     "dkim_keys": {"brand.test": "-----BEGIN PRIVATE KEY-----..."},  # every domain but the first
     "srs_secret": "...",               # postsrsd's; absent: the one its Debian package made
     "backup_password": "...",          # with a backup section: encrypts the repository
     "backup_env": {"AWS_ACCESS_KEY_ID": "...", "AWS_SECRET_ACCESS_KEY": "..."}}  # optional
         # the backend's variables; for rest: RESTIC_REST_USERNAME/RESTIC_REST_PASSWORD

A single file holding everything (``password_hash`` inside each user, ``private_key_pem``
inside ``dkim`` and inside each ``domains`` entry but the first, ``key_pem`` inside ``tls``,
``password`` and ``env`` inside ``backup``, ``srs_secret`` at the top) is
accepted too; ``split`` produces the pair.
"""
from __future__ import annotations

import copy
from typing import Any

# The model (agent/spec_model.py), exposed here: this module is the contract both halves import.
from agent.spec_model import SPEC_VERSION, Spec, SpecError

# backup.<key> in the single-file form <-> secrets.json's <name>
_BACKUP_SECRETS = (("password", "backup_password"), ("env", "backup_env"))


def to_dict(spec: Spec) -> dict:
    """The full spec (secrets included) in the single-file JSON form."""
    return {
        "version": spec.version, "domain": spec.domain, "hostname": spec.hostname,
        "ipv4": spec.ipv4, "ipv6": spec.ipv6,
        "users": [{"address": u.address, "password_hash": u.password_hash,
                   "quota_mb": u.quota_mb} for u in spec.users],
        "aliases": {a: list(t) for a, t in spec.aliases},
        "dkim": {"selector": spec.dkim.selector, "private_key_pem": spec.dkim.private_key_pem},
        "tls": {k: v for k, v in vars(spec.tls).items() if v is not None},
        "postscreen": {
            "dnsbl_sites": [{k: v for k, v in vars(s).items() if v is not None and v is not False}
                            for s in spec.postscreen.dnsbl_sites],
            "dnsbl_threshold": spec.postscreen.dnsbl_threshold,
            "allowlist": list(spec.postscreen.allowlist),
            "greet_wait_s": spec.postscreen.greet_wait_s,
            **({"dqs_key": spec.postscreen.dqs_key} if spec.postscreen.dqs_key else {})},
        "resolver": {
            "forwarders": list(spec.resolver.forwarders),
            "stub_zones": [{"name": z.name, "addrs": list(z.addrs)}
                           for z in spec.resolver.stub_zones],
            "insecure_domains": list(spec.resolver.insecure_domains),
            "max_negative_ttl_s": spec.resolver.max_negative_ttl_s},
        "rate_limits": dict(vars(spec.rate_limits)),
        "limits": dict(vars(spec.limits)),
        "features": dict(vars(spec.features)),
        **({"backup": _backup_dict(spec.backup)} if spec.backup else {}),
        "volume": {k: v for k, v in vars(spec.volume).items() if v is not None},
        "ssh": {"allow_from": list(spec.ssh.allow_from), "firewall": spec.ssh.firewall,
                "permit_root_login": spec.ssh.permit_root_login},
        **_domains_dict(spec),
    }


def _domains_dict(spec: Spec) -> dict:
    """`domains`, `mailbox_moves`, `srs_secret`, only when they say more than `domain` and
    `dkim` do: a one-domain spec reads as it always has."""
    out: dict = {}
    if len(spec.domains) > 1 or any(m.catch_all for m in spec.domains):
        out["domains"] = [{"name": m.name, "dkim_selector": m.dkim_selector, "catch_all": m.catch_all,
                           **({"private_key_pem": m.private_key_pem} if i else {})}
                          for i, m in enumerate(spec.domains)]
    if spec.mailbox_moves:
        out["mailbox_moves"] = [{"from": old, "to": new} for old, new in spec.mailbox_moves]
    if spec.srs_secret:
        out["srs_secret"] = spec.srs_secret
    return out


def _backup_dict(b) -> dict:
    return {"repository": b.repository, "interval_min": b.interval_min,
            "keep": dict(vars(b.keep)), "password": b.password, "env": dict(b.env)}


def public_view(spec: Spec) -> dict:
    """The readable part as a dict, without password hashes and private keys."""
    return split(to_dict(spec))[0]


def split(data: dict) -> tuple[dict, dict]:
    """Split a single-file spec dict into (public, secrets); ``merge`` is the inverse."""
    public = copy.deepcopy(data)
    secrets: dict[str, Any] = {}
    passwords = {}
    for user in public.get("users") or []:
        if isinstance(user, dict) and "password_hash" in user:
            passwords[user.get("address")] = user.pop("password_hash")
    if passwords:
        secrets["passwords"] = passwords
    if isinstance(public.get("dkim"), dict) and "private_key_pem" in public["dkim"]:
        secrets["dkim_private_key_pem"] = public["dkim"].pop("private_key_pem")
    if isinstance(public.get("tls"), dict) and "key_pem" in public["tls"]:
        secrets["tls_key_pem"] = public["tls"].pop("key_pem")
    if isinstance(public.get("postscreen"), dict) and "dqs_key" in public["postscreen"]:
        secrets["dqs_key"] = public["postscreen"].pop("dqs_key")
    keys = {m["name"]: m.pop("private_key_pem") for m in public.get("domains") or []
            if isinstance(m, dict) and "private_key_pem" in m}
    if keys:
        secrets["dkim_keys"] = keys
    if "srs_secret" in public:
        secrets["srs_secret"] = public.pop("srs_secret")
    backup = public.get("backup")
    for key, name in _BACKUP_SECRETS:
        if isinstance(backup, dict) and key in backup:
            secrets[name] = backup.pop(key)
    return public, secrets


def merge(public: dict, secrets: dict | None) -> dict:
    """Put the secrets file's values back where ``load`` expects them."""
    data = copy.deepcopy(public)
    secrets = secrets or {}
    unknown = set(secrets) - {"passwords", "dkim_private_key_pem", "tls_key_pem", "dqs_key",
                              "dkim_keys", "srs_secret", *(name for _, name in _BACKUP_SECRETS)}
    if unknown:
        raise SpecError([f"secrets.{k}: unknown key" for k in sorted(unknown)])
    for key, name in _BACKUP_SECRETS:
        if name in secrets:
            if not isinstance(data.get("backup"), dict):
                raise SpecError([f"secrets.{name}: given, but the spec has no backup section"])
            data["backup"][key] = secrets[name]
    for user in data.get("users") or []:
        if isinstance(user, dict) and user.get("address") in secrets.get("passwords", {}):
            user["password_hash"] = secrets["passwords"][user["address"]]
    if "dkim_private_key_pem" in secrets and isinstance(data.get("dkim"), dict):
        data["dkim"]["private_key_pem"] = secrets["dkim_private_key_pem"]
    if "tls_key_pem" in secrets and isinstance(data.get("tls"), dict):
        data["tls"]["key_pem"] = secrets["tls_key_pem"]
    keys = dict(secrets.get("dkim_keys") or {})
    for m in data.get("domains") or []:
        if isinstance(m, dict) and m.get("name") in keys:
            m["private_key_pem"] = keys.pop(m["name"])
    if keys:
        raise SpecError([f"secrets.dkim_keys[{d!r}]: given, but {d} is not one of the spec's domains"
                         for d in sorted(keys)])
    if "srs_secret" in secrets:
        data["srs_secret"] = secrets["srs_secret"]
    if "dqs_key" in secrets:
        data.setdefault("postscreen", {})
        if isinstance(data["postscreen"], dict):
            data["postscreen"]["dqs_key"] = secrets["dqs_key"]
    return data


def load(data: Any) -> Spec:
    """Validate ``data`` (the merged dict) and return a ``Spec``; raise SpecError otherwise."""
    from agent.spec_checks import SpecChecker  # the field-by-field rules live apart

    if not isinstance(data, dict):
        raise SpecError(["(root): expected a JSON object"])
    version = data.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SPEC_VERSION:
        raise SpecError([f"version: spec version {version} is newer than this agent knows "
                         f"({SPEC_VERSION}); upgrade bulletproof-agent"])
    return SpecChecker(data).spec()
