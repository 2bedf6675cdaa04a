"""The backup's fixed facts: where its files live, what the timers run, what is backed up.

Apply renders the units and the root-only restic environment from these (agent/render.py);
the backup commands (agent/backup_cli.py) and ``status`` read them. No restic call here.
"""
from __future__ import annotations

import posixpath
import urllib.parse
from dataclasses import dataclass

from agent.contract import CONFIG_DIR, DATA_DIR, STATE_DIR
from agent.spec_backup import REST_CREDENTIALS
from agent.spec_model import Backup, Keep

ENV_FILE = f"{CONFIG_DIR}/backup/restic.env"      # 0600: repository, backend credentials
PASSWORD_FILE = f"{CONFIG_DIR}/backup/password"   # 0600: read by restic, never on a command line
CACHE_DIR = "/var/cache/bulletproof-mail/restic"
RESULT_FILE = f"{STATE_DIR}/backup.json"          # the last run and the last good one
ENABLED_FILE = f"{STATE_DIR}/backup-enabled.json"  # when apply enabled backups: status' grace
SIZES_FILE = f"{STATE_DIR}/backup-sizes.json"     # snapshot id -> bytes (snapshots never change)
LOCK_FILE = "/run/bulletproof-backup.lock"        # one backup command at a time on this host
TAG = "bulletproof-mail"
UNIT_DIR = "/etc/systemd/system"
# job -> unit name; each has a .service running `bulletproof-agent backup JOB` and a .timer.
UNITS = {"run": "bulletproof-backup", "prune": "bulletproof-backup-prune",
         "check": "bulletproof-backup-check"}
TIMERS = tuple(f"{u}.timer" for u in UNITS.values())
UNIT_FILES = tuple(f"{UNIT_DIR}/{u}.{kind}" for u in UNITS.values() for kind in ("service", "timer"))
# What the weekly check reads back of the data (a random part each week).
CHECK_SUBSET = "5%"
# What the agent parks beside the data during a restore (never backed up, never a user's:
# domains, local parts and queue directories never start with a dot).
PARKED = ".bpm-"


def on_calendar(interval_min: int) -> str:
    """systemd's OnCalendar= for an interval that divides the hour or the day."""
    if interval_min < 60:
        return f"*-*-* *:00/{interval_min}:00"
    if interval_min == 60:
        return "*-*-* *:00:00"
    if interval_min < 1440:
        return f"*-*-* 00/{interval_min // 60}:00:00"
    return "*-*-* 00:00:00"


def env_lines(backup: Backup) -> list[str]:
    """The restic environment file's lines (KEY=value, read by the agent only)."""
    env = dict(backup.env)
    repo = backup.repository
    if repo.startswith("rest:") and REST_CREDENTIALS[0] in env:
        user, pw = (urllib.parse.quote(env.get(k, ""), safe="") for k in REST_CREDENTIALS)
        scheme, _, rest = repo[len("rest:"):].partition("://")
        repo = f"rest:{scheme}://{user}" + (f":{pw}" if pw else "") + f"@{rest}"
    lines = [f"RESTIC_REPOSITORY={repo}", f"RESTIC_PASSWORD_FILE={PASSWORD_FILE}",
             f"RESTIC_CACHE_DIR={CACHE_DIR}"]
    return lines + [f"{k}={v}" for k, v in sorted(env.items()) if k not in REST_CREDENTIALS]


def read_env(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def _under(path: str, top: str) -> bool:
    return posixpath.commonpath([path, top]) == top


@dataclass(frozen=True)
class Layout:
    """Where the mail is: mailboxes ``mail_root/<domain>/<local>/Maildir``, Postfix's queue,
    the TLS pair. Once all three are under DATA_DIR (the data volume) DATA_DIR is backed up
    whole; until then (today's /var/mail/vhosts, /var/spool/postfix, the agent's tls/) each."""
    mail_root: str
    queue_dir: str
    tls_dir: str

    @property
    def sources(self) -> tuple[str, ...]:
        dirs = (self.mail_root, self.queue_dir, self.tls_dir)
        return (DATA_DIR,) if all(_under(d, DATA_DIR) for d in dirs) else dirs

    def excludes(self) -> list[str]:
        """restic patterns. Maildir tmp/ holds messages being delivered, half-written: they
        are in new/ once complete, so in this snapshot or the next. The queue's sockets,
        FIFOs and pid files are the running daemons' and made again at start (the rate
        limiter makes its directory too)."""
        m, q = self.mail_root, self.queue_dir
        out = [f"{m}/*/*/Maildir/tmp", f"{m}/*/*/Maildir/.*/tmp", f"{q}/ratelimit"]
        out += [f"{q}/{d}/*" for d in ("private", "public", "pid")]
        return out + [f"{s}/{PARKED}*" for s in self.sources]

    def maildir(self, address: str) -> str:
        local, _, domain = address.partition("@")
        return f"{self.mail_root}/{domain}/{local}/Maildir"

    def source_of(self, path: str) -> str:
        return next(s for s in self.sources if _under(path, s))

    def holds(self, repository: str) -> bool:
        """A local repository inside what is backed up would back itself up."""
        return repository.startswith("/") and any(
            _under(repository, s) or _under(s, repository) for s in self.sources)


@dataclass(frozen=True)
class Settings:
    """The applied spec's backup section and mailboxes (its public part: no secrets)."""
    repository: str
    interval_min: int
    keep: Keep
    users: tuple[str, ...]


def settings(public: dict) -> Settings | None:
    b = public.get("backup")
    if not isinstance(b, dict):
        return None
    keep = {**vars(Keep()), **(b.get("keep") or {})}
    return Settings(b["repository"], int(b.get("interval_min", 60)), Keep(**keep),
                    tuple(u["address"] for u in public.get("users", [])))
