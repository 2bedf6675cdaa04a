"""Field rules of the spec, written with the shared readers of agent/contract.py (the stack's
config uses the same ones). Every rule appends ``path: message`` and goes on, so one run
reports every error at once (fixing a spec one error per deploy is painful)."""
from __future__ import annotations

import ipaddress
import re
from typing import Any

from agent import contract as C
from agent import spec_backup
from agent import spec_model as S

_MISSING = object()


class SpecChecker(C.Checker):
    def __init__(self, data: dict):
        super().__init__()
        self.data = data

    # -- the spec --------------------------------------------------------------------
    def spec(self) -> S.Spec:
        d = self.data
        self.no_unknown(d, {"version", "domain", "hostname", "ipv4", "ipv6", "users", "aliases",
                            "dkim", "tls", "postscreen", "resolver", "rate_limits", "limits",
                            "features", "backup", "volume", "ssh", "domains", "mailbox_moves",
                            "srs_secret"}, "")
        version = self.get(d, "version", "version", int)
        if isinstance(version, int) and version < 1:
            self.err("version", f"must be 1..{S.SPEC_VERSION}")
        domain = self.get(d, "domain", "domain", str)
        if isinstance(domain, str) and not C.is_domain(domain):
            self.err("domain", f"not a lower-case domain name: {domain!r}")
            domain = None
        hostname = self.get(d, "hostname", "hostname", str)
        if isinstance(hostname, str) and not C.is_domain(hostname):
            self.err("hostname", f"not a fully qualified host name: {hostname!r}")
        ipv4 = self.get(d, "ipv4", "ipv4", str)
        if isinstance(ipv4, str) and not C.is_ip(ipv4, 4):
            self.err("ipv4", f"not an IPv4 address: {ipv4!r}")
        ipv6 = self.get(d, "ipv6", "ipv6", str, None)
        if isinstance(ipv6, str) and not C.is_ip(ipv6, 6):
            self.err("ipv6", f"not an IPv6 address: {ipv6!r}")
        dkim = self.dkim()
        domains = self.domains(d.get("domains"), domain, dkim)
        names = tuple(m.name for m in domains) if domains else ((domain,) if domain else ())
        users = self.users(d.get("users", _MISSING), names)
        aliases = self.aliases(d.get("aliases", {}), names, users)
        self.catch_alls(domains, users, aliases)
        spec_kwargs = dict(
            version=version, domain=domain, hostname=hostname, ipv4=ipv4, ipv6=ipv6,
            users=users, aliases=aliases, dkim=dkim, tls=self.tls(),
            postscreen=self.postscreen(), resolver=self.resolver(),
            rate_limits=self.rate_limits(), limits=self.limits(), features=self.features(),
            backup=spec_backup.check(self, d.get("backup")),
            volume=self.volume(), ssh=self.ssh(), domains=domains,
            mailbox_moves=self.mailbox_moves(d.get("mailbox_moves", []), names),
            srs_secret=self.srs_secret(d.get("srs_secret")))
        if self.errors:
            raise S.SpecError(self.errors)
        return S.Spec(**spec_kwargs)

    def address(self, value: Any, path: str, domains: tuple[str, ...], own: bool = True) -> bool:
        if not isinstance(value, str) or value.count("@") != 1:
            self.err(path, f"not an email address: {value!r}")
            return False
        local, dom = value.split("@")
        if not C.is_local_part(local) or not C.is_domain(dom):
            self.err(path, f"not a lower-case email address: {value!r}")
            return False
        if own and domains and dom not in domains:
            self.err(path, f"not an address in domain {domains[0]}" if len(domains) == 1 else
                     f"not an address in one of the domains {', '.join(domains)}")
            return False
        return True

    def domains(self, raw: Any, domain: str | None, dkim: S.Dkim) -> tuple:
        """Every domain, the primary (``domain``, signed with ``dkim``) first; absent: the primary
        alone. The others' DKIM keys come from secrets.json's dkim_keys."""
        primary = S.MailDomain(domain, dkim.selector, dkim.private_key_pem) if domain else None
        if raw is None:
            return (primary,) if primary else ()
        if not isinstance(raw, list) or not raw:
            self.err("domains", "expected a non-empty list of {name, dkim_selector, catch_all}")
            return (primary,) if primary else ()
        out, seen = [], set()
        for i, m in enumerate(raw):
            p = f"domains[{i}]"
            if not isinstance(m, dict):
                self.err(p, "expected an object")
                continue
            self.no_unknown(m, {"name", "dkim_selector", "catch_all", "private_key_pem"}, p)
            name = self.get(m, "name", f"{p}.name", str)
            sel = self.get(m, "dkim_selector", f"{p}.dkim_selector", str, "s1")
            catch_all = self.get(m, "catch_all", f"{p}.catch_all", str, None)
            if not (isinstance(name, str) and C.is_domain(name)):
                self.err(f"{p}.name", f"not a lower-case domain name: {name!r}")
                continue
            if name in seen:
                self.err(f"{p}.name", f"duplicate domain {name}")
                continue
            seen.add(name)
            if not C.is_label(sel):
                self.err(f"{p}.dkim_selector", f"not a DNS label: {sel!r}")
            if i == 0:
                if name != domain:
                    self.err(f"{p}.name", f"the first domain is the primary: {domain!r}, not {name!r}")
                if sel != dkim.selector:
                    self.err(f"{p}.dkim_selector", f"the primary's selector is dkim.selector "
                                                   f"({dkim.selector!r}), not {sel!r}")
                key = dkim.private_key_pem
                if "private_key_pem" in m:
                    self.err(f"{p}.private_key_pem", "the primary's key is dkim.private_key_pem")
            else:
                key = self.get(m, "private_key_pem", f"{p}.private_key_pem", str)
                if isinstance(key, str) and "PRIVATE KEY-----" not in key:
                    self.err(f"{p}.private_key_pem", "not a PEM private key")
            out.append(S.MailDomain(name, sel, key, catch_all))
        return tuple(out)

    def catch_alls(self, domains: tuple, users: tuple, aliases: tuple) -> None:
        names = tuple(m.name for m in domains)
        mailboxes = {u.address for u in users if isinstance(u.address, str)}
        for i, m in enumerate(domains):
            if m.catch_all is None:
                continue
            if self.address(m.catch_all, f"domains[{i}].catch_all", names, own=False):
                problem = C.alias_target_problem(m.catch_all, names, mailboxes, dict(aliases))
                if problem:
                    self.err(f"domains[{i}].catch_all", f"{m.catch_all!r} {problem}")

    def mailbox_moves(self, raw: Any, names: tuple[str, ...]) -> tuple:
        """[{from, to}]: a renamed domain's mailboxes move to its new name."""
        if not isinstance(raw, list):
            self.err("mailbox_moves", "expected a list of {from, to}")
            return ()
        out = []
        for i, m in enumerate(raw):
            p = f"mailbox_moves[{i}]"
            if not isinstance(m, dict):
                self.err(p, "expected an object {from, to}")
                continue
            self.no_unknown(m, {"from", "to"}, p)
            old, new = self.get(m, "from", f"{p}.from", str), self.get(m, "to", f"{p}.to", str)
            if isinstance(old, str) and (not C.is_domain(old) or old in names):
                self.err(f"{p}.from", f"{old!r} must be a domain no longer served (the old name)")
            elif isinstance(new, str) and new not in names:
                self.err(f"{p}.to", f"{new!r} is not one of the domains {', '.join(names)}")
            elif isinstance(old, str) and isinstance(new, str):
                if any(o == old for o, _ in out):
                    self.err(f"{p}.from", f"{old} moves twice")
                out.append((old, new))
        return tuple(out)

    def srs_secret(self, raw: Any) -> str | None:
        if raw is None:
            return None
        # Never echo it: a secret.
        if not isinstance(raw, str) or len(raw) < 16 or any(ch.isspace() for ch in raw):
            self.err("srs_secret", "expected at least 16 characters without spaces")
            return None
        return raw

    def users(self, raw: Any, domain: tuple[str, ...]) -> tuple:
        if raw is _MISSING:
            self.err("users", "required")
            return ()
        if not isinstance(raw, list) or not raw:
            self.err("users", "expected a non-empty list of users")
            return ()
        out, seen = [], set()
        for i, u in enumerate(raw):
            p = f"users[{i}]"
            if not isinstance(u, dict):
                self.err(p, "expected an object")
                continue
            self.no_unknown(u, {"address", "password_hash", "quota_mb"}, p)
            addr = u.get("address")
            if self.address(addr, f"{p}.address", domain):
                if addr in seen:
                    self.err(f"{p}.address", f"duplicate user {addr}")
                elif addr.split("@")[0] in C.ROLE_LOCAL_PARTS:
                    self.err(f"{p}.address", f"{addr} is a role address (RFC 2142), an alias of "
                                             "a person's mailbox, not a mailbox of its own")
                seen.add(addr)
            h = self.get(u, "password_hash", f"{p}.password_hash", str)
            if isinstance(h, str):
                m = re.fullmatch(r"\{([A-Z0-9-]+)\}(\S+)", h)
                if not m or m.group(1) not in S.HASH_SCHEMES:
                    self.err(f"{p}.password_hash", "expected {SCHEME}hash with SCHEME one of "
                             + ", ".join(S.HASH_SCHEMES))
                elif ":" in m.group(2):
                    self.err(f"{p}.password_hash", "must not contain ':' (passwd-file separator)")
            quota = self.positive(u, "quota_mb", f"{p}.quota_mb", 1024)
            out.append(S.User(address=addr, password_hash=h, quota_mb=quota))
        return tuple(out)

    def aliases(self, raw: Any, domain: tuple[str, ...], users: tuple) -> tuple:
        if not isinstance(raw, dict):
            self.err("aliases", "expected an object {address: [targets]}")
            return ()
        mailboxes = {u.address for u in users if isinstance(u.address, str)}
        out: dict[str, tuple] = {}
        for addr, targets in raw.items():
            p = f"aliases[{addr!r}]"
            if not self.address(addr, p, domain):
                continue
            if isinstance(targets, str):
                targets = [targets]
            if not isinstance(targets, list) or not targets:
                self.err(p, "expected a non-empty list of target addresses")
                continue
            if not all([self.address(t, f"{p}[{j}]", domain, own=False)
                        for j, t in enumerate(targets)]):
                continue
            if addr in mailboxes:
                self.err(p, "is also a user; an address is either a mailbox or an alias")
            out[addr] = tuple(targets)
        if domain and users and all(isinstance(u.address, str) for u in users):
            for role, first in C.role_aliases_of(domain, [u.address for u in users]).items():
                out.setdefault(role, first)
        # Who receives what is judged only on valid users (a bad one is reported already).
        if domain and all(C.is_address(u.address) and u.address.rpartition("@")[2] in domain
                          for u in users):
            known = set(out) | {a for a in raw if isinstance(a, str)}
            for addr, targets in out.items():
                for j, t in enumerate(targets):
                    problem = C.alias_target_problem(t, domain, mailboxes, known)
                    if problem:
                        self.err(f"aliases[{addr!r}][{j}]", f"{t!r} {problem}")
        for loop in C.alias_loops(out):
            self.err(f"aliases[{loop[0]!r}]", "forwards in a loop (" + " -> ".join(loop)
                     + "), so its mail reaches no one; point one of them at a mailbox")
        return tuple(sorted(out.items()))

    def dkim(self) -> S.Dkim:
        d = self.section(self.data, "dkim")
        self.no_unknown(d, {"selector", "private_key_pem"}, "dkim")
        sel = self.get(d, "selector", "dkim.selector", str)
        if isinstance(sel, str) and not C.is_label(sel):
            self.err("dkim.selector", f"not a DNS label: {sel!r}")
        key = self.get(d, "private_key_pem", "dkim.private_key_pem", str)
        if isinstance(key, str) and "PRIVATE KEY-----" not in key:
            self.err("dkim.private_key_pem", "not a PEM private key")
        return S.Dkim(selector=sel, private_key_pem=key)

    def tls(self) -> S.Tls:
        d = self.section(self.data, "tls")
        self.no_unknown(d, {"mode", "cert_pem", "key_pem"}, "tls")
        mode = self.get(d, "mode", "tls.mode", str, "self-signed")
        if mode not in S.TLS_MODES:
            self.err("tls.mode", f"expected one of {', '.join(S.TLS_MODES)}, got {mode!r}")
        cert = self.get(d, "cert_pem", "tls.cert_pem", str, None)
        key = self.get(d, "key_pem", "tls.key_pem", str, None)
        if mode == "provided":
            if not cert or "BEGIN CERTIFICATE" not in cert:
                self.err("tls.cert_pem", "required PEM certificate when tls.mode is provided")
            if not key or "PRIVATE KEY-----" not in key:
                self.err("tls.key_pem", "required PEM private key when tls.mode is provided")
        elif cert or key:
            self.err("tls", "cert_pem/key_pem given but tls.mode is self-signed")
        return S.Tls(mode=mode, cert_pem=cert, key_pem=key)

    def postscreen(self) -> S.Postscreen:
        d = self.section(self.data, "postscreen")
        self.no_unknown(d, {"dnsbl_sites", "dnsbl_threshold", "allowlist", "greet_wait_s",
                            "dqs_key"}, "postscreen")
        key = self.get(d, "dqs_key", "postscreen.dqs_key", str, None)
        if isinstance(key, str) and not C.is_dqs_key(key):
            self.err("postscreen.dqs_key", "not a Spamhaus DQS key (lower-case letters and digits)")
        sites = []
        for i, s in enumerate(self.get(d, "dnsbl_sites", "postscreen.dnsbl_sites", list, [])):
            p = f"postscreen.dnsbl_sites[{i}]"
            self.no_unknown(s, {"zone", "weight", "filter", "dqs"}, p)
            zone = self.get(s, "zone", f"{p}.zone", str)
            if isinstance(zone, str) and not C.is_dnsbl_zone(zone):
                self.err(f"{p}.zone", f"not a DNS zone: {zone!r}" if not C.is_domain(zone) else
                         f"{zone!r} is too long for its query names (at most "
                         f"{C.DNSBL_ZONE_MAX} characters)")
            weight = self.get(s, "weight", f"{p}.weight", int, 1)
            if isinstance(weight, int) and weight == 0:
                self.err(f"{p}.weight", "must not be 0")
            filt = self.get(s, "filter", f"{p}.filter", str, None)
            if isinstance(filt, str) and not C.is_dnsbl_filter(filt):
                self.err(f"{p}.filter", f"not a postscreen reply filter (d.d.d.d, each d a number "
                                        f"or [n;n..m]): {filt!r}")
            dqs = self.get(s, "dqs", f"{p}.dqs", bool, False)
            if dqs and isinstance(zone, str) and C.dqs_zone(zone, "k") is None:
                self.err(f"{p}.dqs", f"{zone} has no DQS form; known: "
                         + ", ".join(z for z, k in C.KNOWN_DNSBLS.items() if k.dqs))
            elif dqs and not key:
                self.err("postscreen.dqs_key", f"required: {p} is asked with the DQS key")
            # Every site carries a filter: an error code ("blocked") must never count.
            if isinstance(zone, str) and not isinstance(filt, str):
                filt = C.dnsbl_filter(zone)
            sites.append(S.DnsblSite(zone=zone, weight=weight, filter=filt, dqs=bool(dqs)))
        allow = []
        for i, net in enumerate(self.get(d, "allowlist", "postscreen.allowlist", list, [])):
            try:
                allow.append(str(ipaddress.ip_network(net, strict=False)))
            except (ValueError, TypeError):
                self.err(f"postscreen.allowlist[{i}]", f"not a CIDR network: {net!r}")
        return S.Postscreen(
            dnsbl_sites=tuple(sites),
            dnsbl_threshold=self.positive(d, "dnsbl_threshold", "postscreen.dnsbl_threshold", 2),
            allowlist=tuple(allow),
            greet_wait_s=self.positive(d, "greet_wait_s", "postscreen.greet_wait_s", 6),
            dqs_key=key)

    def resolver(self) -> S.Resolver:
        d = self.section(self.data, "resolver")
        self.no_unknown(d, {"forwarders", "stub_zones", "insecure_domains",
                            "max_negative_ttl_s"}, "resolver")
        # [] (or absent): unbound recurses from the root itself; DNSBLs answer it.
        fwd = self.get(d, "forwarders", "resolver.forwarders", list, [])
        for i, f in enumerate(fwd or []):
            self.ip_port(f, f"resolver.forwarders[{i}]")
        stubs = []
        for i, z in enumerate(self.get(d, "stub_zones", "resolver.stub_zones", list, [])):
            p = f"resolver.stub_zones[{i}]"
            self.no_unknown(z, {"name", "addrs"}, p)
            name = self.get(z, "name", f"{p}.name", str)
            if isinstance(name, str) and not C.is_domain(name):
                self.err(f"{p}.name", f"not a DNS zone: {name!r}")
            addrs = self.get(z, "addrs", f"{p}.addrs", list) or []
            for j, a in enumerate(addrs):
                self.ip_port(a, f"{p}.addrs[{j}]")
            stubs.append(S.StubZone(name=name, addrs=tuple(addrs)))
        insecure = self.get(d, "insecure_domains", "resolver.insecure_domains", list, [])
        for i, n in enumerate(insecure):
            if not (isinstance(n, str) and (C.is_domain(n) or C.is_label(n))):
                self.err(f"resolver.insecure_domains[{i}]", f"not a DNS name: {n!r}")
        return S.Resolver(forwarders=tuple(fwd or ()), stub_zones=tuple(stubs),
                          insecure_domains=tuple(insecure),
                          max_negative_ttl_s=self.positive(
                              d, "max_negative_ttl_s", "resolver.max_negative_ttl_s", 3600, 0))

    def ip_port(self, value: Any, path: str) -> None:
        ip, _, port = str(value).partition("@")
        if not (C.is_ip(ip, 4) or C.is_ip(ip, 6)) or (port and not (
                port.isdigit() and 0 < int(port) < 65536)):
            self.err(path, f"expected IP or IP@PORT, got {value!r}")

    def rate_limits(self) -> S.RateLimits:
        d = self.section(self.data, "rate_limits")
        names = [f for f in S.RateLimits.__dataclass_fields__]
        self.no_unknown(d, set(names), "rate_limits")
        return S.RateLimits(**{n: self.positive(d, n, f"rate_limits.{n}",
                                                getattr(S.RateLimits, n)) for n in names})

    def limits(self) -> S.Limits:
        d = self.section(self.data, "limits")
        self.no_unknown(d, {"message_size_limit", "queue_minfree"}, "limits")
        size = self.positive(d, "message_size_limit", "limits.message_size_limit",
                             S.Limits.message_size_limit, 1024)
        free = self.positive(d, "queue_minfree", "limits.queue_minfree", S.Limits.queue_minfree, 0)
        # Postfix refuses mail when queue_minfree < 1.5 * message_size_limit (postconf(5)).
        if isinstance(size, int) and isinstance(free, int) and free and free < 1.5 * size:
            self.err("limits.queue_minfree", f"must be >= 1.5 x message_size_limit ({int(1.5 * size)})")
        return S.Limits(message_size_limit=size, queue_minfree=free)

    def features(self) -> S.Features:
        d = self.section(self.data, "features")
        self.no_unknown(d, {"https", "spf_policy", "ssh_port", "public_ip_nat"}, "features")
        port = self.positive(d, "ssh_port", "features.ssh_port", 22)
        if isinstance(port, int) and port > 65535:
            self.err("features.ssh_port", f"not a TCP port: {port}")
        return S.Features(https=self.get(d, "https", "features.https", bool, False),
                          spf_policy=self.get(d, "spf_policy", "features.spf_policy", bool, True),
                          ssh_port=port,
                          public_ip_nat=self.get(d, "public_ip_nat", "features.public_ip_nat", bool, False))

    def ssh(self) -> S.Ssh:
        d = self.section(self.data, "ssh")
        self.no_unknown(d, {"allow_from", "firewall", "permit_root_login"}, "ssh")
        allow = self.get(d, "allow_from", "ssh.allow_from", list, list(S.Ssh.allow_from))
        for i, cidr in enumerate(allow or []):
            if not C.is_cidr(cidr):
                self.err(f"ssh.allow_from[{i}]", f"not a network in CIDR form: {cidr!r}")
        if allow == []:
            self.err("ssh.allow_from", "empty: nobody could reach SSH (the agent's own deploys "
                                       "included); list at least one network")
        firewall = self.get(d, "firewall", "ssh.firewall", str, S.Ssh.firewall)
        self.one_of(firewall, "ssh.firewall", C.FIREWALL_MODES)
        root = self.get(d, "permit_root_login", "ssh.permit_root_login", str,
                        S.Ssh.permit_root_login)
        self.one_of(root, "ssh.permit_root_login", ("prohibit-password", "no"))
        return S.Ssh(allow_from=tuple(allow or ()), firewall=firewall, permit_root_login=root)

    def volume(self) -> S.Volume:
        d = self.section(self.data, "volume")
        self.no_unknown(d, {"kind", "device"}, "volume")
        kind = self.get(d, "kind", "volume.kind", str, "directory")
        if not self.one_of(kind, "volume.kind", S.VOLUME_KINDS):
            kind = "directory"
        device = self.get(d, "device", "volume.device", str, None)
        if kind == "block" and not device:
            self.err("volume.device", "required when volume.kind is block")
        elif device and kind != "block":
            self.err("volume.device", f"only with volume.kind block, not {kind}")
        elif device and (not re.fullmatch(r"/dev/[A-Za-z0-9._:+/-]+", device) or ".." in device):
            self.err("volume.device", f"expected a device path under /dev/, got {device!r}")
        return S.Volume(kind=kind, device=device)
