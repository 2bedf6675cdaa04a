"""Templates rendered from a spec and checked by the real tools installed on this machine
(postconf, postfix check, doveconf, opendkim, unbound-checkconf, nft -c)."""
import copy
import functools
import os
import shutil
import subprocess
import tempfile

import pytest

from agent import example, files, keys, render, validate
from agent.errors import ValidationError
from agent.spec import load


@functools.lru_cache(maxsize=1)
def _data() -> dict:
    return example.example(dkim_pem=example.dkim_key(1024))


@functools.lru_cache(maxsize=1)
def _tls() -> tuple:
    return keys.self_signed("mail.example.test")


_QUEUE = []


@pytest.fixture(autouse=True)
def staged_queue():
    """The staged main.cf's own queue (`postfix check` fills it), as the files step makes it:
    a short path, for the unix socket names inside."""
    queue = tempfile.mkdtemp(prefix="bpm-queue-")
    os.chmod(queue, 0o755)
    _QUEUE[:] = [queue]
    yield queue
    shutil.rmtree(queue, ignore_errors=True)


def staged(tmp_path, data=None, **changes):
    data = copy.deepcopy(data or _data())
    data.update(changes)
    spec = load(data)
    stage = str(tmp_path / "stage")
    files.stage(stage, render.render(spec, _tls(), prefix=stage, queue_dir=_QUEUE[0]),
                render.targets(spec))
    return spec, stage


def postconf(stage, name):
    out = subprocess.run(["postconf", "-c", f"{stage}/etc/postfix", "-h", name],
                         capture_output=True, text=True, check=True).stdout
    return " ".join(out.split())


@pytest.mark.parametrize("service", sorted(validate.FIXES))
def test_rendered_config_passes_the_real_tool(tmp_path, service):
    _, stage = staged(tmp_path)
    assert validate.validate(stage, only={service}) == []


def test_every_rendered_file_names_the_generator(tmp_path):
    spec, stage = staged(tmp_path)
    for t in render.targets(spec):
        if t.template.startswith("@") or t.path in ("/etc/hostname", "/etc/mailname"):
            continue  # PEM data and single-value files read by other programs verbatim
        with open(stage + t.path) as f:
            assert render.HEADER in f.read(4096), t.path


@pytest.mark.parametrize("name, expected", [
    ("smtpd_relay_restrictions",
     "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination"),
    ("mynetworks", "127.0.0.0/8"),
    ("inet_protocols", "ipv4"),
    ("disable_vrfy_command", "yes"),
    ("smtpd_helo_required", "yes"),
    ("smtpd_tls_auth_only", "yes"),
    ("smtpd_tls_protocols", ">=TLSv1.2"),
    ("smtpd_tls_mandatory_protocols", ">=TLSv1.2"),
    ("smtp_tls_security_level", "may"),
    ("virtual_transport", "lmtp:unix:private/dovecot-lmtp"),
    ("postscreen_dnsbl_sites", "dnsbl.test=127.0.0.[2..11]*2"),
    ("postscreen_dnsbl_threshold", "2"),
    ("postscreen_greet_action", "enforce"),
    ("maillog_file", "/var/log/mail.log"),
    ("message_size_limit", "10485760"),
    ("queue_minfree", "20971520"),
    ("smtpd_client_auth_rate_limit", "100"),
])
def test_key_postfix_values(tmp_path, name, expected):
    _, stage = staged(tmp_path)
    assert postconf(stage, name) == expected


@pytest.mark.parametrize("restriction", [
    "reject_invalid_helo_hostname", "reject_non_fqdn_helo_hostname", "reject_non_fqdn_sender",
    "reject_unknown_sender_domain", "reject_non_fqdn_recipient",
    "reject_unknown_recipient_domain", "reject_unlisted_recipient",
    "check_policy_service unix:private/policy-spf",
])
def test_restriction_is_configured(tmp_path, restriction):
    _, stage = staged(tmp_path)
    text = " ".join(postconf(stage, n) for n in (
        "smtpd_helo_restrictions", "smtpd_sender_restrictions", "smtpd_recipient_restrictions"))
    assert restriction in text


def test_submission_services_require_tls_and_sasl(tmp_path):
    _, stage = staged(tmp_path)
    out = subprocess.run(["postconf", "-c", f"{stage}/etc/postfix", "-P"],
                         capture_output=True, text=True, check=True).stdout
    assert "submission/inet/smtpd_tls_security_level = encrypt" in out
    assert "submissions/inet/smtpd_tls_wrappermode = yes" in out
    for svc in ("submission", "submissions"):
        assert f"{svc}/inet/smtpd_sasl_auth_enable = yes" in out
        assert (f"{svc}/inet/smtpd_sender_restrictions = reject_sender_login_mismatch"
                in out)


def test_ipv6_spec_enables_both_protocols(tmp_path):
    _, stage = staged(tmp_path, ipv6="fd00::2")
    assert postconf(stage, "inet_protocols") == "all"
    assert validate.validate(stage, only={"postfix", "dovecot", "unbound"}) == []
    assert postconf(stage, "smtp_bind_address6") == "fd00::2"  # the source the PTR is for


def test_natted_public_ipv6_is_not_bound(tmp_path):
    """On Azure the public IPv6 is translated, not on the host: binding it would fail every send."""
    data = copy.deepcopy(_data())
    data["features"]["public_ip_nat"] = True
    _, stage = staged(tmp_path, data, ipv6="2001:db8::10")
    assert postconf(stage, "inet_protocols") == "all"
    assert postconf(stage, "smtp_bind_address6") == ""


@pytest.mark.parametrize("name, expected", [
    ("smtpd_forbid_bare_newline", "reject"),
    ("smtpd_forbid_bare_newline_exclusions", "$mynetworks"),
    ("smtpd_forbid_unauth_pipelining", "yes"),
    ("smtpd_data_restrictions", "reject_unauth_pipelining"),
    ("smtpd_discard_ehlo_keywords", "chunking, silent-discard"),
    ("postscreen_pipelining_enable", "yes"),
    ("postscreen_pipelining_action", "enforce"),
    ("postscreen_non_smtp_command_enable", "yes"),
    ("postscreen_non_smtp_command_action", "drop"),
    ("postscreen_bare_newline_enable", "yes"),
    ("postscreen_bare_newline_action", "enforce"),
])
def test_smtp_protocol_defence_is_configured(tmp_path, name, expected):
    _, stage = staged(tmp_path)
    assert postconf(stage, name) == expected


def test_login_bans_cover_the_login_ports_only_and_never_loopback(tmp_path):
    _, stage = staged(tmp_path)
    with open(f"{stage}/etc/fail2ban/jail.d/bulletproof.local") as f:
        lines = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    assert "port = 465,587,993" in lines and "ignoreip = 127.0.0.0/8 ::1" in lines
    assert lines[lines.index("[sshd]") + 1] == "enabled = false"
    assert {"[dovecot]", "[postfix-sasl]"} <= set(lines)


def test_a_firewall_reload_restarts_fail2ban_after_it():
    from agent import services
    spec = load(copy.deepcopy(_data()))
    nft = next(t for t in render.targets(spec) if t.path == "/etc/nftables.conf")
    assert "fail2ban" in nft.services
    assert services.UNITS.index("fail2ban") > services.UNITS.index("nftables")


def test_dovecot_serves_imaps_only(tmp_path):
    _, stage = staged(tmp_path)
    out = subprocess.run(["doveconf", "-c", f"{stage}/etc/dovecot/dovecot.conf", "-h",
                          "protocols"], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["imap", "lmtp"]
    conf = open(f"{stage}/etc/dovecot/dovecot.conf").read()
    assert "ssl = required" in conf and "disable_plaintext_auth = yes" in conf


def test_firewall_opens_only_ssh_and_mail_ports(tmp_path):
    _, stage = staged(tmp_path)
    conf = open(f"{stage}/etc/nftables.conf").read()
    assert "tcp dport 22 jump ssh" in conf and "tcp dport { 25, 465, 587, 993 } accept" in conf


def test_https_flag_opens_443(tmp_path):
    data = copy.deepcopy(_data())
    data["features"]["https"] = True
    _, stage = staged(tmp_path, data)
    assert "443" in open(f"{stage}/etc/nftables.conf").read()


def test_secret_files_are_private(tmp_path):
    spec, stage = staged(tmp_path)
    modes = {t.path: t.mode for t in render.targets(spec)}
    assert modes["/etc/opendkim/keys/example.test/s1.private"] == 0o600
    assert modes["/srv/mail/tls/key.pem"] == 0o600
    assert modes["/etc/dovecot/users"] == 0o640


def test_broken_value_is_refused_with_file_and_tool_message(tmp_path):
    _, stage = staged(tmp_path)
    main_cf = f"{stage}/etc/postfix/main.cf"
    with open(main_cf, "a") as f:
        f.write("smtpd_tls_protocols = TLSv9\n")
    with pytest.raises(ValidationError) as exc:
        validate.validate(stage, only={"postfix"})
    assert exc.value.file == "/etc/postfix/main.cf"
    assert "TLSv9" in exc.value.tool_output


def test_broken_unbound_forwarder_is_refused(tmp_path):
    _, stage = staged(tmp_path)
    path = f"{stage}/etc/unbound/unbound.conf.d/bulletproof.conf"
    with open(path, "a") as f:
        f.write("    forward-addr: not-an-address\n")
    with pytest.raises(ValidationError) as exc:
        validate.validate(stage, only={"unbound"})
    assert exc.value.file == "/etc/unbound/unbound.conf.d/bulletproof.conf"
    assert "not-an-address" in exc.value.tool_output or exc.value.tool_output


def test_dkim_txt_matches_the_private_key():
    pem = _data()["dkim"]["private_key_pem"]
    txt = keys.dkim_txt(pem)
    assert txt.startswith("v=DKIM1; k=rsa; p=MI")
    import base64
    from cryptography.hazmat.primitives import serialization
    pub = serialization.load_pem_private_key(pem.encode(), None).public_key()
    der = pub.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    assert txt.endswith(base64.b64encode(der).decode())
