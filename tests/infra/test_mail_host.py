"""The final state of a bulletproof-mail host. Nothing here changes the host."""
import json

import pytest

PACKAGES = ["postfix", "postfix-policyd-spf-python", "dovecot-core", "dovecot-imapd",
            "dovecot-lmtpd", "opendkim", "unbound", "dns-root-data", "nftables", "policyd-rate-limit",
            "fail2ban"]
SERVICES = {"postfix": "postfix@-", "dovecot": "dovecot", "opendkim": "opendkim",
            "unbound": "unbound", "policyd-rate-limit": "policyd-rate-limit",
            "fail2ban": "fail2ban"}


@pytest.mark.parametrize("name", PACKAGES)
def test_package_installed(host, name):
    assert host.package(name).is_installed


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_active_and_enabled(host, name):
    assert host.service(SERVICES[name]).is_running
    assert host.service(name).is_enabled


@pytest.mark.parametrize("port", [25, 465, 587, 993])
def test_mail_port_listening(host, port):
    assert host.socket(f"tcp://0.0.0.0:{port}").is_listening


@pytest.mark.parametrize("port", [110, 143])
def test_plaintext_mailbox_port_closed(host, port):
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening
    assert not host.socket(f"tcp://:::{port}").is_listening


@pytest.mark.parametrize("port", [53, 8891])
def test_helper_listens_on_loopback_only(host, port):
    assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_opendkim_listens_on_no_tcp_port(host):
    listeners = host.check_output("ss -Hltnp")
    assert "opendkim" not in listeners, listeners


def test_dkim_milter_socket_only_postfix_can_use(host):
    # The directory: setgid group postfix, no access for others; the socket: no bits for others.
    out = host.check_output("stat -c '%a %U %G %F' /run/opendkim /run/opendkim/opendkim.sock")
    directory, sock = out.splitlines()
    assert directory == "2750 opendkim postfix directory", out
    mode, user, group, kind = sock.split(" ", 3)
    assert (kind, user, group) == ("socket", "opendkim", "postfix") and int(mode, 8) & 0o007 == 0, out


def test_rate_limit_policy_socket_only_postfix_can_use(host):
    queue = host.check_output("postconf -h queue_directory")
    out = host.check_output(f"stat -c '%a %U %G %F' {queue}/ratelimit/policy")
    assert out == "660 policyd-rate-limit postfix socket", out


def test_dkim_keys_are_private(host):
    out = host.check_output("find /etc/opendkim/keys -type f -name '*.private' "
                            "-printf '%m %u %p\\n'")
    lines = out.splitlines()
    assert lines and all(l.startswith("600 opendkim ") for l in lines), out


@pytest.mark.parametrize("path", ["/srv/mail/tls/key.pem",
                                  "/etc/bulletproof-mail/spec.json"])
def test_secret_file_mode_0600(host, path):
    f = host.file(path)
    assert f.exists and f.mode == 0o600 and f.user == "root"


@pytest.mark.parametrize("name, expected", [
    ("smtpd_relay_restrictions",
     "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination"),
    ("mynetworks", "127.0.0.0/8"),
    ("disable_vrfy_command", "yes"),
    ("smtpd_helo_required", "yes"),
    ("smtpd_tls_auth_only", "yes"),
    ("smtpd_tls_protocols", ">=TLSv1.2"),
    ("smtpd_tls_mandatory_protocols", ">=TLSv1.2"),
    ("smtp_tls_security_level", "may"),
    ("smtpd_sasl_type", "dovecot"),
    ("virtual_transport", "lmtp:unix:private/dovecot-lmtp"),
    ("maillog_file", "/var/log/mail.log"),
    ("queue_directory", "/srv/mail/postfix"),  # on the data volume
    ("milter_default_action", "tempfail"),  # OpenDKIM down: mail waits, never leaves unsigned
    ("smtpd_milters", "unix:/run/opendkim/opendkim.sock"),
])
def test_postconf_value(host, name, expected):
    value = " ".join(host.check_output(f"postconf -h {name}").split())
    if name == "mynetworks":
        assert value.split()[0] == expected
    else:
        assert value == expected


# The SMTP protocol closed (Postfix 3.7's smuggling page; postscreen's after-220 tests).
@pytest.mark.parametrize("name, expected", [
    ("smtpd_forbid_bare_newline", "reject"),
    ("smtpd_forbid_bare_newline_exclusions", "$mynetworks"),
    ("smtpd_forbid_unauth_pipelining", "yes"),
    ("smtpd_data_restrictions", "reject_unauth_pipelining"),
    ("smtpd_discard_ehlo_keywords", "chunking, silent-discard"),
    ("postscreen_pipelining_enable", "yes"),
    ("postscreen_non_smtp_command_enable", "yes"),
    ("postscreen_bare_newline_enable", "yes"),
    ("postscreen_bare_newline_action", "enforce"),
])
def test_smtp_protocol_defence_on(host, name, expected):
    assert host.check_output(f"postconf -h {name}") == expected


@pytest.mark.parametrize("jail", ["dovecot", "postfix-sasl"])
def test_login_brute_force_jail_active(host, jail):
    assert jail in host.check_output("fail2ban-client status")
    ignored = host.check_output(f"fail2ban-client get {jail} ignoreip")
    assert "127.0.0.0/8" in ignored and "::1" in ignored  # never the host itself


def test_only_the_login_ports_are_banned(host):
    """Never ssh (the deploy and verification path) nor 25 (MTAs do not log in)."""
    jail = host.file("/etc/fail2ban/jail.d/bulletproof.local").content_string
    ports = [l.split("=", 1)[1].split() for l in jail.splitlines() if l.startswith("port ")]
    assert ports == [["465,587,993"]] * 2, ports  # dovecot, postfix-sasl


def test_postfix_hostname_and_domain(host, expect):
    assert host.check_output("postconf -h myhostname") == expect["hostname"]
    served = host.check_output("postconf -h virtual_mailbox_domains").replace(",", " ").split()
    assert expect["domain"] in served  # and every other domain: test_mail_domains.py


def test_postfix_check_is_clean(host):
    cmd = host.run("postfix check 2>&1")
    assert cmd.rc == 0 and cmd.stdout.strip() == "", cmd.stdout


@pytest.mark.parametrize("needle", ["fatal:", "Permission denied"])
def test_mail_log_has_no(host, needle):
    cmd = host.run(f"grep -c -- '{needle}' /var/log/mail.log")
    assert cmd.stdout.strip() == "0", host.run(f"grep -- '{needle}' /var/log/mail.log").stdout


def test_spec_users_have_mailboxes(host, expect):
    text = host.file("/etc/postfix/virtual_mailboxes").content_string
    for user in expect["users"]:
        assert text.count(f"\n{user} ") == 1 or text.startswith(f"{user} "), user


def test_rfc2142_aliases_exist(host, expect):
    text = host.file("/etc/postfix/virtual_aliases").content_string
    for role in ("postmaster", "abuse"):
        assert f"{role}@{expect['domain']} " in text


def test_last_agent_run_ok_with_dkim_record(host):
    state = json.loads(host.file("/var/lib/bulletproof-mail/state.json").content_string)
    assert state["status"] == "ok"
    assert state["dkim"]["txt"].startswith("v=DKIM1; k=rsa; p=")


def test_dovecot_imaps_only(host):
    assert host.check_output("doveconf -h protocols").split() == ["imap", "lmtp"]
    assert host.check_output("doveconf -h ssl") == "required"


def test_firewall_drops_by_default(host):
    rules = host.check_output("nft list chain inet filter input")
    assert "policy drop" in rules


# --- the resolver DNSBLs answer, and their reply filters (docs/dnsbl.md) --------------------
def test_every_postscreen_dnsbl_site_has_a_reply_filter(host):
    sites = host.check_output("postconf -h postscreen_dnsbl_sites").replace(",", " ").split()
    if not sites:
        pytest.skip("no DNSBL sites configured")
    assert all("=" in s for s in sites), sites  # an error answer ("blocked") must not count


def test_unbound_recurses_unless_the_spec_names_forwarders(host):
    spec = json.loads(host.file("/etc/bulletproof-mail/spec.json").content_string)
    conf = host.file("/etc/unbound/unbound.conf.d/bulletproof.conf").content_string
    if spec["resolver"].get("forwarders"):
        assert 'forward-zone:\n    name: "."' in conf
    else:
        assert "forward-zone" not in conf and host.file("/usr/share/dns/root.hints").exists


def test_dqs_zone_file_is_not_world_readable(host):
    f = host.file("/etc/unbound/bulletproof-dqs.zone")  # the only file that may hold a DQS key
    assert f.exists and (f.mode, f.user, f.group) == (0o640, "root", "unbound")


def _applied_ssh(host) -> dict:
    spec = json.loads(host.file("/etc/bulletproof-mail/spec.json").content_string)
    return {"allow_from": ["0.0.0.0/0", "::/0"], "firewall": "managed",
            "permit_root_login": "prohibit-password", **(spec.get("ssh") or {})}


@pytest.mark.parametrize("name, value", [
    ("passwordauthentication", "no"), ("kbdinteractiveauthentication", "no"),
    ("permitemptypasswords", "no"), ("authenticationmethods", "publickey")])
def test_sshd_takes_keys_only(host, name, value):
    settings = dict(line.split(" ", 1) for line in host.check_output("sshd -T").splitlines() if " " in line)
    assert settings[name] == value


def test_sshd_lets_root_in_by_key_only_or_not_at_all(host):
    want = {"prohibit-password": "without-password", "no": "no"}[_applied_ssh(host)["permit_root_login"]]
    assert f"permitrootlogin {want}" in host.check_output("sshd -T").splitlines()


@pytest.mark.parametrize("family", [4, 6])
def test_ssh_is_open_to_the_admin_networks_only(host, family):
    ssh = _applied_ssh(host)
    if ssh["firewall"] != "managed":
        pytest.skip("ssh.firewall none: the server's own rules")
    listed = host.check_output(f"nft list set inet filter ssh_admins_v{family}")
    want = [c for c in ssh["allow_from"] if (":" in c) == (family == 6)]
    assert all(c in listed for c in want)
    assert ("elements" in listed) == bool(want)


def test_new_ssh_connections_are_rate_limited(host):
    if _applied_ssh(host)["firewall"] != "managed":
        pytest.skip("ssh.firewall none: the server's own rules")
    chain = host.check_output("nft list chain inet filter ssh")
    assert "ct state new update @ssh_rate_v4 { ip saddr limit rate over" in chain
