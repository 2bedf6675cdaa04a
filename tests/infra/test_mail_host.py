"""The final state of a bulletproof-mail host. Nothing here changes the host."""
import json

import pytest

PACKAGES = ["postfix", "postfix-policyd-spf-python", "dovecot-core", "dovecot-imapd",
            "dovecot-lmtpd", "opendkim", "unbound", "nftables", "policyd-rate-limit"]
SERVICES = {"postfix": "postfix@-", "dovecot": "dovecot", "opendkim": "opendkim",
            "unbound": "unbound", "policyd-rate-limit": "policyd-rate-limit"}


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


def test_postfix_hostname_and_domain(host, expect):
    assert host.check_output("postconf -h myhostname") == expect["hostname"]
    assert host.check_output("postconf -h virtual_mailbox_domains") == expect["domain"]


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
