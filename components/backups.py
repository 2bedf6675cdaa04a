"""Backups off the host: where the restic repository is, how often, how long snapshots are kept.

The repository password is stack config (a secret the user sets and keeps), never something a
`destroy` could delete: after a disaster, the repository, the password and the Pulumi state
(with its passphrase) are what a restore needs (docs/backups.md). The local stack has a
documented default password, like its passphrase. The repository itself is the backend's:
local, a directory of this machine outside the stack's runtime dir (`make down` keeps it);
Azure, a blob container the stack makes; `ssh` and OpenStack, any restic URL from config.
"""
from __future__ import annotations

import re

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider

from components import schema
from components.schema import Key

LOCAL_PASSWORD = "bulletproof-local-backups"  # the local stack's documented default
KEEP = {"hourly": 24, "daily": 7, "weekly": 4, "monthly": 6}
# restic's repository forms (a path, or a backend prefix); never one with a password in it
_REPOSITORY = re.compile(r"(/[^\s:]*|(sftp|rest|s3|azure|b2|gs|swift|rclone):[^\s]+)")


def _repository(c, key, value):
    if value == "none" or (isinstance(value, str) and _REPOSITORY.fullmatch(value)
                           and not re.search(r"//[^/@]*:[^/@]*@", value)):
        return value
    c.err(key, f"{value!r} is not a restic repository; e.g. sftp:backup@192.0.2.20:/srv/restic/mail, "
               f"s3:s3.example.no/bucket/mail or rest:https://backup.example.no/mail (credentials in "
               f"backup_env, as a secret), or none to run without backups")
    return None


def _keep(c, key, value):
    if not isinstance(value, dict) or set(value) - set(KEEP) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value.values()):
        c.err(key, f"{value!r} is not a retention; e.g. {{hourly: 24, daily: 7, weekly: 4, monthly: 6}}")
        return None
    return {**KEEP, **value}


def _env(c, key, value):
    # Never echo the value: it is a secret.
    if not isinstance(value, dict) or not all(isinstance(k, str) and re.fullmatch(r"[A-Z][A-Z0-9_]*", k)
                                              and isinstance(v, str) for k, v in value.items()):
        c.err(key, "(secret) is not a map of environment variables, e.g. "
                   "{AWS_ACCESS_KEY_ID: ..., AWS_SECRET_ACCESS_KEY: ...}")
        return None
    return value


KEYS = (
    Key("backup_repository", _repository, None),
    Key("backup_password", schema.text("is empty; set the repository password"), None, secret=True,
        hint="pulumi config set --secret backup_password '<a long random password you keep>'"),
    Key("backup_env", _env, None, secret=True,
        hint="pulumi config set --secret --path 'backup_env.AWS_ACCESS_KEY_ID' ..."),
    Key("backup_interval_min", schema.positive(" of minutes between backups", "60", minimum=5), 60),
    Key("backup_keep", _keep, dict(KEEP)),
    Key("backup_region", schema.text("is not a region; set where the repository stands, e.g. oslo"), None),
)


def spec(repository: str, interval_min: int, keep: dict) -> dict:
    """The spec's backup section (its password and environment go with the secrets)."""
    return {"repository": repository, "interval_min": interval_min, "keep": dict(keep)}


class _RepositoryProvider(ResourceProvider):
    def create(self, props):
        return CreateResult(id_=props["repository"], outs=props)

    def diff(self, _id, olds, news):
        changed = [k for k in ("repository", "region") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[])


class Repository(Resource, module="backup", name="Repository"):
    """Where the backups go and in which region: what the policy pack holds to residency. It
    owns nothing: deleting it (a `destroy`) leaves the repository and its snapshots alone."""

    def __init__(self, name: str, repository: pulumi.Input[str], region: pulumi.Input[str],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(_RepositoryProvider(), name, {"repository": repository, "region": region}, opts)
