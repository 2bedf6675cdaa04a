"""The spec's model: the frozen dataclasses a valid spec becomes, and its error. agent/spec.py is
the contract that exposes them (with load, merge, split); agent/spec_checks.py builds them."""
from __future__ import annotations

from dataclasses import dataclass, field

SPEC_VERSION = 1

# Dovecot schemes we accept: strong, salted, slow hashes only (no PLAIN/MD5/SHA1).
HASH_SCHEMES = ("SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "ARGON2ID", "ARGON2I")
TLS_MODES = ("self-signed", "provided")
# Where the mail state (agent/contract.py DATA_DIR) lives: a volume mounted before the agent
# runs (bind mount, attached disk), a plain directory of the host's disk, or a block device
# the agent formats (only when blank) and mounts.
VOLUME_KINDS = ("mounted", "directory", "block")


class SpecError(ValueError):
    """Every problem of a spec, one ``path: message`` per line."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("invalid spec:\n  " + "\n  ".join(self.errors))


@dataclass(frozen=True)
class User:
    address: str
    password_hash: str
    quota_mb: int

    @property
    def local_part(self) -> str:
        return self.address.split("@", 1)[0]


@dataclass(frozen=True)
class DnsblSite:
    zone: str
    weight: int = 1
    filter: str | None = None  # e.g. "127.0.0.[2..11]": only these answers count (absent:
                               # the known list's, or contract.DEFAULT_DNSBL_FILTER)
    dqs: bool = False          # asked with the Spamhaus DQS key (postscreen.dqs_key, a secret)

    @property
    def query_zone(self) -> str:
        """The zone Postfix and the checks ask: a DQS site through the host's alias zone."""
        from agent.contract import dqs_alias
        return dqs_alias(self.zone) if self.dqs else self.zone


@dataclass(frozen=True)
class StubZone:
    name: str
    addrs: tuple[str, ...]


@dataclass(frozen=True)
class Dkim:
    selector: str
    private_key_pem: str


@dataclass(frozen=True)
class MailDomain:
    """One domain the host receives and signs mail for (the first of Spec.domains: the primary)."""
    name: str
    dkim_selector: str
    private_key_pem: str        # secret: its own DKIM key (the primary's is dkim.private_key_pem)
    catch_all: str | None = None  # where mail to an unknown local part goes


@dataclass(frozen=True)
class Tls:
    mode: str
    cert_pem: str | None = None
    key_pem: str | None = None


@dataclass(frozen=True)
class Postscreen:
    dnsbl_sites: tuple[DnsblSite, ...] = ()
    dnsbl_threshold: int = 2
    allowlist: tuple[str, ...] = ()
    greet_wait_s: int = 6
    dqs_key: str | None = None  # secret: the Spamhaus DQS key (secrets.json dqs_key)


@dataclass(frozen=True)
class Resolver:
    forwarders: tuple[str, ...]   # empty: unbound recurses itself (root hints, DNSSEC)
    stub_zones: tuple[StubZone, ...] = ()
    insecure_domains: tuple[str, ...] = ()
    max_negative_ttl_s: int = 3600


@dataclass(frozen=True)
class RateLimits:
    client_connection_rate: int = 30
    client_message_rate: int = 60
    client_auth_rate: int = 10
    client_connection_count: int = 20
    # Messages (counted per recipient) one SASL user may send per hour, enforced by
    # policyd-rate-limit: anvil counts per client IP, and a compromised account rotates IPs.
    outbound_per_user_per_hour: int = 200


@dataclass(frozen=True)
class Limits:
    message_size_limit: int = 26214400
    queue_minfree: int = 104857600


@dataclass(frozen=True)
class Features:
    https: bool = False
    spf_policy: bool = True
    ssh_port: int = 22
    # The cloud translates the public addresses (Azure): they are not on the host's interfaces,
    # so Postfix must not bind to them; the checks (FCrDNS, SPF, DNSBL) still use them.
    public_ip_nat: bool = False


@dataclass(frozen=True)
class Ssh:
    """sshd and the firewall's SSH rule: who may connect, and how."""
    allow_from: tuple[str, ...] = ("0.0.0.0/0", "::/0")   # CIDRs that reach the SSH port
    firewall: str = "managed"             # managed: the agent owns nftables; none: left alone
    permit_root_login: str = "prohibit-password"  # "no" where the login user is a sudo user


@dataclass(frozen=True)
class Keep:
    """restic forget's retention: how many of the newest hourly/daily/... snapshots stay."""
    hourly: int = 24
    daily: int = 7
    weekly: int = 4
    monthly: int = 6


@dataclass(frozen=True)
class Backup:
    repository: str                      # restic's -r: a path, sftp:, s3:, rest:, azure:
    password: str                        # secret: encrypts the repository
    interval_min: int = 60
    keep: Keep = field(default_factory=Keep)
    env: tuple[tuple[str, str], ...] = ()  # secret: what the backend needs (AWS_..., AZURE_...)


@dataclass(frozen=True)
class Volume:
    kind: str = "directory"   # absent in a spec: the old specs keep working
    device: str | None = None  # block only, e.g. /dev/disk/azure/scsi1/lun0


@dataclass(frozen=True)
class Spec:
    version: int
    domain: str
    hostname: str
    ipv4: str
    ipv6: str | None
    users: tuple[User, ...]
    aliases: tuple[tuple[str, tuple[str, ...]], ...]
    dkim: Dkim
    tls: Tls
    postscreen: Postscreen
    resolver: Resolver
    rate_limits: RateLimits = field(default_factory=RateLimits)
    limits: Limits = field(default_factory=Limits)
    features: Features = field(default_factory=Features)
    backup: Backup | None = None         # absent: no backups
    volume: Volume = field(default_factory=Volume)
    ssh: Ssh = field(default_factory=Ssh)  # absent in a spec: the defaults
    domains: tuple[MailDomain, ...] = ()   # every domain, the primary first (load fills it)
    mailbox_moves: tuple[tuple[str, str], ...] = ()  # (from domain, to domain): renamed domains
    srs_secret: str | None = None          # secret: postsrsd's; None: the one Debian's package made

    @property
    def domain_names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.domains) or (self.domain,)
