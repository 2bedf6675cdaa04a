"""The host contract: what the stack, the agent, the policy pack and the tests agree on about a
mail host, in one place. Standard library only (it ships in the agent zipapp).

Ports, the paths the stack writes to and reads from, the DNSBL query form and the check
thresholds. `agent/spec.py` is the other half of the contract (what the host is asked to be).
"""
from __future__ import annotations

import ipaddress
import re
import shlex

# --- ports ----------------------------------------------------------------------------------
SSH_PORT = 22
SMTP_PORT = 25            # MTA to MTA, postscreen in front
SUBMISSIONS_PORT = 465    # submission with implicit TLS (RFC 8314)
SUBMISSION_PORT = 587     # submission, STARTTLS then AUTH
IMAPS_PORT = 993
HTTPS_PORT = 443          # only with features.https (MTA-STS)
MAIL_PORTS = (SMTP_PORT, SUBMISSIONS_PORT, SUBMISSION_PORT, IMAPS_PORT)
# Listen on loopback only, or not at all: never reachable from outside.
#   110/143 POP3/IMAP without TLS, 53 unbound, 8891 OpenDKIM, 10023 rate-limit policy,
#   24 LMTP, 4190 ManageSieve, 10001/10002 postsrsd (SRS forward/reverse), 10026 the
#   forwarded mail's second pass (Postfix)
SRS_FORWARD_PORT, SRS_REVERSE_PORT, FORWARD_REINJECT_PORT = 10001, 10002, 10026
LOCAL_ONLY_PORTS = (110, 143, 53, 8891, 10023, 24, 4190, SRS_FORWARD_PORT, SRS_REVERSE_PORT,
                    FORWARD_REINJECT_PORT)


def public_tcp_ports(ssh_port: int = SSH_PORT, https: bool = False) -> tuple[int, ...]:
    """Every TCP port the host opens to the world (firewall, security groups, checks)."""
    return tuple(sorted({ssh_port, *MAIL_PORTS} | ({HTTPS_PORT} if https else set())))


# --- paths on the host ----------------------------------------------------------------------
AGENT = "/usr/local/sbin/bulletproof-agent"
CONFIG_DIR = "/etc/bulletproof-mail"          # the last applied spec.json + secrets.json
PENDING_DIR = f"{CONFIG_DIR}/pending"         # a new spec lands here; applied -> CONFIG_DIR
PENDING_SPEC = f"{PENDING_DIR}/spec.json"
PENDING_SECRETS = f"{PENDING_DIR}/secrets.json"
STATE_DIR = "/var/lib/bulletproof-mail"
STATE_FILE = f"{STATE_DIR}/state.json"         # the last run's report
JOURNAL = f"{STATE_DIR}/journal.json"         # an apply in progress (undo data), see agent/journal.py
SSHD_DROPIN = "/etc/ssh/sshd_config.d/00-bulletproof.conf"  # the agent's sshd settings
# The files each apply replaced (old DKIM and TLS keys among them), one directory per run:
# pruned after this many days; the newest is always kept.
FILE_BACKUPS_DIR = f"{STATE_DIR}/backup"
FILE_BACKUP_RETENTION_DAYS = 30
FIRSTBOOT_LOG = "/var/log/bulletproof-agent-firstboot.log"
MAIL_LOG = "/var/log/mail.log"
# The data volume: every piece of mail state lives under it (it outlives the host). What the
# backup saves and a restore puts back.
DATA_DIR = "/srv/mail"
# The local stack's backup repository, a directory of the machine mounted into the host.
BACKUP_DIR = "/srv/backup"

# The mail state lives on a data volume that outlives the host (spec ``volume``): a new host
# attached to it serves the old mail. Everything that must survive a host replacement is here.
DATA_DIR = "/srv/mail"
MAIL_DIR = f"{DATA_DIR}/vhosts"               # mailboxes: MAIL_DIR/<domain>/<user>/Maildir
QUEUE_DIR = f"{DATA_DIR}/postfix"             # Postfix's queue_directory
TLS_CERT = f"{DATA_DIR}/tls/cert.pem"         # the host's TLS pair (a self-signed one is kept)
TLS_KEY = f"{DATA_DIR}/tls/key.pem"
DATA_STATE_DIR = f"{DATA_DIR}/state"          # for state of later filters (spare)
VOLUME_LABEL = "bulletproof-mail"             # the ext4 label of a volume the agent formatted


def apply_command(run_id: str) -> str:
    """The agent run the stack starts, at first boot and over SSH alike."""
    return (f"{AGENT} apply --spec {PENDING_SPEC} --secrets {PENDING_SECRETS} "
            f"--run-id {shlex.quote(run_id)} --json")


STATUS_COMMAND = f"{AGENT} status --json"
# Before a host stops for good: port 25 answers 4xx, the mail services stop cleanly.
DRAIN_COMMAND = f"{AGENT} drain"


# --- DNSBLs ---------------------------------------------------------------------------------
def dnsbl_query_name(ip: str, zone: str) -> str:
    """The name a DNSBL is asked for `ip`: 192.0.2.1 in z -> 1.2.0.192.z. (IPv6: nibbles)."""
    reverse = ipaddress.ip_address(ip).reverse_pointer
    return reverse.rsplit(".", 2)[0] + "." + zone.rstrip(".") + "."


# A DNSBL lists an address by answering an A record in 127.0.0.0/8.
DNSBL_LISTED_NET = "127.0.0.0/8"


# What a DNSBL answer means (known lists, reply filters, error codes, DQS): agent/dnsbl_rules.py.
from agent.dnsbl_rules import (DEFAULT_DNSBL_FILTER, DNSBL_ERROR_CODES, DQS_ALIAS_ZONE,  # noqa: E402,F401
                               KNOWN_DNSBLS, KnownDnsbl, classify_dnsbl, dnsbl_filter,
                               dnsbl_refusal_text, dqs_alias, dqs_zone, filter_matches,
                               is_dnsbl_filter, is_dqs_key)

# --- check thresholds (`bulletproof-agent status --threshold NAME=VALUE` overrides) ---------
THRESHOLDS = {
    "queue_warn": 100,                 # messages in the queue
    "queue_fail": 1000,
    "deferred_age_warn_s": 3600,       # oldest deferred message
    "deferred_age_fail_s": 2 * 86400,  # Postfix bounces after 5 days: act well before
    "fsync_warn_ms": 20.0,             # the article's iowait warning; never a failure
    "cert_days_warn": 21,
    "cert_days_fail": 7,
    "backup_age_fail_s": 86400,        # newest snapshot (warn: older than 2 x the interval)
}


# --- what a valid value is: one rule set for the agent's spec and the stack's config --------
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+{_LABEL}")
# A mailbox name: dot-atoms of a conservative character set. No '|', '/' or ':' (aliases(5)
# reads those as a pipe, a file or an include), no empty or trailing dot-atom.
_LOCAL_PART = re.compile(r"[a-z0-9_+=-]+(?:\.[a-z0-9_+=-]+)*")


def is_label(value) -> bool:
    """One DNS label (a host name, a DKIM selector)."""
    return isinstance(value, str) and re.fullmatch(_LABEL, value) is not None


def is_domain(value) -> bool:
    """A lower-case domain name of at least two labels, at most 253 characters."""
    return isinstance(value, str) and len(value) <= 253 and _DOMAIN.fullmatch(value) is not None


def is_local_part(value) -> bool:
    return isinstance(value, str) and len(value) <= 64 and _LOCAL_PART.fullmatch(value) is not None


def is_address(value) -> bool:
    if not isinstance(value, str) or value.count("@") != 1:
        return False
    local, domain = value.split("@")
    return is_local_part(local) and is_domain(domain)


# RFC 2142: mail to these must reach a person. They are aliases (of the first user unless the
# config says whom), never mailboxes of their own.
ROLE_LOCAL_PARTS = ("postmaster", "abuse")
# A DNSBL zone leaves room in a query name for an IPv6 address as 32 nibbles, each with its dot.
DNSBL_ZONE_MAX = 253 - 64


def is_dnsbl_zone(value) -> bool:
    """A DNSBL zone whose query names (the reversed IPv6 address in front) still fit in DNS."""
    return is_domain(value) and len(value) <= DNSBL_ZONE_MAX


def role_aliases(domain: str, first_user: str) -> dict[str, tuple[str, ...]]:
    return {f"{role}@{domain}": (first_user,) for role in ROLE_LOCAL_PARTS}


def role_aliases_of(domains, users) -> dict[str, tuple[str, ...]]:
    """postmaster@ and abuse@ of every domain: to that domain's first mailbox, or the stack's
    first one for a domain without mailboxes (an old domain kept for its aliases)."""
    out: dict[str, tuple[str, ...]] = {}
    for domain in domains:
        own = [u for u in users if u.rpartition("@")[2] == domain]
        if users:
            out.update(role_aliases(domain, (own or list(users))[0]))
    return out


def alias_target_problem(target, domain, mailboxes, aliases) -> str | None:
    """Why an alias may not forward to ``target``, or None. A target is a mailbox of ours
    (``+extension`` allowed), another alias of ours, or an address outside our domains; never
    a command, a file or an include (aliases(5) reads '|', '/' and ':include:' so), and never
    a name in one of our domains that nothing receives. ``domain``: our domain, or all of them."""
    if not is_address(target):
        return ("is not an email address (an alias forwards mail to addresses only: no "
                "|command, /file or :include:)")
    ours = {domain} if isinstance(domain, str) else set(domain)
    local, _, dom = target.partition("@")
    base = f"{local.split('+', 1)[0]}@{dom}"
    if dom in ours and not ({target, base} & (set(mailboxes) | set(aliases))):
        return f"is neither a mailbox nor an alias of {dom}"
    return None


def alias_loops(aliases) -> list[tuple[str, ...]]:
    """Every loop of aliases forwarding to each other (a -> b -> a, or a -> a), once each, as
    the path from its first alias back to it: mail sent into one is never delivered."""
    loops, seen = [], set()
    for start in sorted(a for a in aliases if isinstance(a, str)):
        todo, visited = [(start, (start,))], set()
        while todo:
            node, path = todo.pop()
            for target in aliases.get(node, ()):
                if target == start:
                    if frozenset(path) not in seen:
                        seen.add(frozenset(path))
                        loops.append((*path, start))
                    todo = []
                    break
                if target in aliases and target not in visited:
                    visited.add(target)
                    todo.append((target, (*path, target)))
    return loops


def is_ip(value, version: int | None = None) -> bool:
    try:
        ip = ipaddress.ip_address(value)
    except (ValueError, TypeError):
        return False
    return version is None or ip.version == version


def is_cidr(value) -> bool:
    """A network in its canonical text, e.g. 192.0.2.0/24 or 2001:db8::/32 (no host bits, no
    spaces or newlines: the value goes into an nftables set as it is), or a single address."""
    if not isinstance(value, str):
        return False
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError:
        return False
    return value in (str(net), str(net.network_address))


# SSH from anywhere: the default of ssh.allow_from (the stack warns outside `local`).
SSH_ANYWHERE = ("0.0.0.0/0", "::/0")
# New SSH connections one source may open (nftables meter): a bucket of SSH_BURST that refills
# at SSH_PER_MINUTE. Measured: see docs/ssh.md (a deploy + verification burst).
SSH_PER_MINUTE = 120
SSH_BURST = 300
# The firewall modes: managed (the agent owns the host's whole nftables ruleset) or none
# (an existing server's own rules stay; the agent leaves nftables alone).
FIREWALL_MODES = ("managed", "none")


def is_port(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


def split_ip_port(value, sep: str = ":") -> tuple[str, int] | None:
    """"192.0.2.53:53" -> ("192.0.2.53", 53) (sep "@" for unbound's "IP@port"), else None."""
    host, found, port = str(value).rpartition(sep)
    if not found or not is_ip(host) or not port.isdigit() or not is_port(int(port)):
        return None
    return host, int(port)


_MISSING = object()


class Checker:
    """Collects every problem of a document as one ``path: message`` line, and goes on, so one
    run reports all of them. The readers return the value (or ``default``) and record what is
    wrong with it; the spec checks (agent/spec_checks.py) and the stack config
    (components/config.py) are both written with them."""

    def __init__(self):
        self.errors: list[str] = []

    def err(self, path: str, msg: str) -> None:
        self.errors.append(f"{path}: {msg}" if path else msg)

    def get(self, obj, key: str, path: str, kind: type | tuple, default=_MISSING):
        """obj[key] of type ``kind``; ``default`` when absent (absent and no default: an error)."""
        value = obj.get(key, _MISSING) if isinstance(obj, dict) else _MISSING
        if value is _MISSING or (value is None and default is None):
            if default is _MISSING:
                self.err(path, "required")
            return None if default is _MISSING else default
        return self.typed(value, path, kind, None if default is _MISSING else default)

    def typed(self, value, path: str, kind: type | tuple, fallback=None):
        """``value`` if it is a ``kind`` (a bool is no int), else an error and ``fallback``."""
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            ok = False
        else:
            ok = isinstance(value, kinds)
        if not ok:
            names = " or ".join(getattr(k, "__name__", str(k)) for k in kinds)
            word = {"int": "an integer", "str": "a string", "bool": "true or false",
                    "list": "a list", "dict": "an object"}.get(names, names)
            self.err(path, f"expected {word}, got {value!r}")
            return fallback
        return value

    def positive(self, obj, key: str, path: str, default, minimum: int = 1):
        value = self.get(obj, key, path, int, default)
        if isinstance(value, int) and value < minimum:
            self.err(path, f"must be >= {minimum}, got {value}")
        return value

    def one_of(self, value, path: str, choices) -> bool:
        if value not in choices:
            self.err(path, f"expected one of {', '.join(map(str, choices))}, got {value!r}")
            return False
        return True

    def no_unknown(self, obj, allowed, path: str) -> None:
        if isinstance(obj, dict):
            for key in sorted(set(obj) - set(allowed)):
                self.err(f"{path}.{key}" if path else key, "unknown key")

    def section(self, data: dict, key: str) -> dict:
        value = data.get(key, {})
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.err(key, "expected an object")
            return {}
        return value
