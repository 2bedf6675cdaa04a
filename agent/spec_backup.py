"""The spec's optional ``backup`` section (restic) and its two secrets, checked with the shared
readers of agent/contract.py: whole-string rules, one ``path: message`` per problem."""
from __future__ import annotations

import posixpath
import re

from agent import contract as C
from agent import spec_model as S

# The timer fires on the wall clock, so an interval must divide the hour or the day.
INTERVALS = (5, 10, 12, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720, 1440)
KINDS = "an absolute path, sftp:, s3:, rest: or azure:"
MIN_PASSWORD = 12
# Variables the agent sets itself, and ones that would change how the agent and restic run.
AGENT_SET = {"RESTIC_REPOSITORY", "RESTIC_REPOSITORY_FILE", "RESTIC_PASSWORD",
             "RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND", "RESTIC_CACHE_DIR"}
RUNTIME = {"PATH", "HOME", "SHELL", "IFS", "TMPDIR"}
# restic 0.14 (Debian 12) takes REST credentials only inside the URL: the agent puts these two
# there, in the root-only environment file, so the readable spec never holds them.
REST_CREDENTIALS = ("RESTIC_REST_USERNAME", "RESTIC_REST_PASSWORD")
_SEGMENT = r"[A-Za-z0-9._~+=-]+"
_PATH = re.compile(rf"/?(?:{_SEGMENT}/)*(?:{_SEGMENT})?")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])?")


def _host_ok(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        return C.is_ip(host[1:-1], 6)
    return C.is_domain(host) or C.is_label(host) or C.is_ip(host, 4)


def _authority_ok(authority: str, user_allowed: bool) -> bool:
    """[user@]host[:port], lower-case host names, a port 1..65535."""
    user, at, hostport = authority.rpartition("@")
    if at and not (user_allowed and re.fullmatch(r"[a-z0-9._-]+", user)):
        return False
    m = re.fullmatch(r"(\[[0-9a-f:.]+\]|[^:\[\]]+)(?::(\d+))?", hostport)
    if not m:
        return False
    host, port = m.group(1), m.group(2) or ""
    return _host_ok(host) and (not port or C.is_port(int(port)))


def _path_ok(path: str) -> bool:
    return bool(_PATH.fullmatch(path)) and ".." not in path.split("/")


def _local_problem(repo: str) -> str | None:
    if not _path_ok(repo) or repo == "/" or repo != posixpath.normpath(repo):
        return f"not a normalised absolute path: {repo!r}"
    inside = posixpath.commonpath([repo, C.DATA_DIR])
    if inside in (repo, C.DATA_DIR):
        return f"must not be inside or above the mail data {C.DATA_DIR}: {repo!r}"
    return None


def _url_problem(scheme: str, rest: str) -> str | None:
    """``scheme:`` + ``http(s)://authority/path`` (s3 and rest)."""
    m = re.fullmatch(r"(https?)://([^/]+)(/.*)?", rest)
    if not m:
        return None if scheme == "s3" and _s3_bare(rest) else "expected http(s)://host[:port]/..."
    if "@" in m.group(2):
        return ("no credentials in the URL (the spec is readable): put them in secrets.json "
                "backup_env" + (" as RESTIC_REST_USERNAME/RESTIC_REST_PASSWORD" if scheme == "rest"
                                else ""))
    if not _authority_ok(m.group(2), user_allowed=False) or not _path_ok(m.group(3) or "/"):
        return "not a URL of a host name or IP address and a plain path"
    if scheme == "s3" and not _BUCKET.fullmatch((m.group(3) or "/").strip("/").split("/")[0]):
        return "expected s3:https://host/BUCKET[/prefix] with a valid bucket name"
    return None


def _s3_bare(rest: str) -> bool:
    """s3:s3.amazonaws.com/bucket[/prefix]"""
    host, _, path = rest.partition("/")
    return C.is_domain(host) and bool(_BUCKET.fullmatch(path.split("/")[0])) and _path_ok(path)


def repository_problem(repo: str) -> str | None:
    """Why ``repo`` is not a restic repository this agent accepts, or None."""
    if repo.startswith("/"):
        return _local_problem(repo)
    scheme, colon, rest = repo.partition(":")
    if not colon or scheme not in ("sftp", "s3", "rest", "azure"):
        return f"expected {KINDS}, got {repo!r}"
    if scheme == "azure":
        container, _, path = rest.partition(":")
        ok = _CONTAINER.fullmatch(container) and path.startswith("/") and _path_ok(path)
        return None if ok else "expected azure:CONTAINER:/path"
    if scheme == "sftp":
        m = re.fullmatch(r"//([^/]+)/(.*)", rest) or re.fullmatch(r"([^/]+?):(.*)", rest)
        ok = m and _authority_ok(m.group(1), user_allowed=True) and m.group(2) \
            and _path_ok(m.group(2))
        return None if ok else "expected sftp:user@host:/path or sftp://user@host:port//path"
    problem = _url_problem(scheme, rest)
    if problem and problem.startswith("no credentials"):
        return problem  # never echo a password back
    return f"{problem}: {repo!r}" if problem else None


def check(c: C.Checker, raw) -> S.Backup | None:
    """The section (password and env merged in from the secrets), or None when absent."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        c.err("backup", "expected an object")
        return None
    c.no_unknown(raw, {"repository", "interval_min", "keep", "password", "env"}, "backup")
    repo = c.get(raw, "repository", "backup.repository", str)
    if isinstance(repo, str) and repository_problem(repo):
        c.err("backup.repository", repository_problem(repo))
    interval = c.get(raw, "interval_min", "backup.interval_min", int, 60)
    if isinstance(interval, int) and interval not in INTERVALS:
        c.err("backup.interval_min", "expected one of " + ", ".join(map(str, INTERVALS))
              + f" (minutes that divide the hour or the day), got {interval}")
    return S.Backup(repository=repo, password=_password(c, raw), interval_min=interval,
                    keep=_keep(c, raw.get("keep")), env=_env(c, raw.get("env"), repo))


def _password(c: C.Checker, raw: dict) -> str | None:
    pw = c.get(raw, "password", "backup.password (secrets.json: backup_password)", str)
    if isinstance(pw, str):
        if len(pw) < MIN_PASSWORD:
            c.err("backup.password", f"at least {MIN_PASSWORD} characters (it encrypts the "
                                     "backups), got a shorter one")
        # restic trims the password file: a leading or trailing blank would be lost.
        elif pw != pw.strip() or any(ch in pw for ch in "\r\n\0"):
            c.err("backup.password", "no leading/trailing whitespace, line break or NUL")
    return pw


def _keep(c: C.Checker, raw) -> S.Keep:
    if raw is None:
        return S.Keep()
    if not isinstance(raw, dict):
        c.err("backup.keep", "expected an object {hourly, daily, weekly, monthly}")
        return S.Keep()
    names = list(S.Keep.__dataclass_fields__)
    c.no_unknown(raw, set(names), "backup.keep")
    keep = S.Keep(**{n: c.positive(raw, n, f"backup.keep.{n}", getattr(S.Keep, n), 0)
                     for n in names})
    if all(isinstance(v, int) and v == 0 for v in vars(keep).values()):
        c.err("backup.keep", "at least one of " + ", ".join(names) + " must be > 0")
    return keep


def _env(c: C.Checker, raw, repo) -> tuple:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        c.err("backup.env", "expected an object {NAME: value} (secrets.json: backup_env)")
        return ()
    for name, value in raw.items():
        p = f"backup.env[{name!r}]"
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            c.err(p, "not an environment variable name (A-Z, 0-9, _)")
        elif name in AGENT_SET:
            c.err(p, "set by the agent itself (from backup.repository and backup.password)")
        elif name in RUNTIME or name.startswith(("LD_", "PYTHON")):
            c.err(p, "would change how the agent and restic run, not a backend setting")
        elif name in REST_CREDENTIALS and not str(repo).startswith("rest:"):
            c.err(p, "only for a rest: repository")
        if not isinstance(value, str) or not value or any(ch in value for ch in "\r\n\0"):
            c.err(p, "expected a non-empty string without line breaks or NUL")
    if str(repo).startswith("azure:") and not ({"AZURE_ACCOUNT_NAME"} <= set(raw) and (
            {"AZURE_ACCOUNT_KEY", "AZURE_ACCOUNT_SAS"} & set(raw))):
        c.err("backup.env", "an azure: repository needs AZURE_ACCOUNT_NAME and "
                            "AZURE_ACCOUNT_KEY or AZURE_ACCOUNT_SAS")
    return tuple(sorted((k, v) for k, v in raw.items() if isinstance(k, str)))
