"""SSH like a hardened server (issue 12, item 5): admin networks from config, sshd managed by
the agent, a connection-rate limit, the firewall only where config gives it to the stack, and
host keys pinned at first contact. Rendered files are checked by the real `nft -c`/`sshd -t`."""
import copy
import io
import os
import socket
import threading

import paramiko
import pytest

from agent import contract, example, keys, render, services, validate
from agent import files as agent_files
from agent.spec import SpecError, load
from components import config, remote
from components.hosts import ssh_section, warn_ssh_access
from tests import local_stack
from tests.unit import cloud_mocks as cm

SSH_PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n"


def _ssh_raw(**changes) -> dict:
    return {**local_stack.raw(), "backend": "ssh", "region": "oslo", "ssh_host": "192.0.2.10",
            "ssh_private_key": SSH_PEM, "dns_backend": "rfc2136", "dns_server": "192.0.2.53:53",
            "dns_tsig_name": "k", "dns_tsig_secret": "c2VjcmV0", "resolver": "192.0.2.53:53",
            "backup_repository": "none", **changes}


def _staged(tmp_path, **ssh):
    data = copy.deepcopy(example.example())
    data["ssh"] = ssh
    spec = load(data)
    stage = str(tmp_path / "stage")
    agent_files.stage(stage, render.render(spec, keys.self_signed("mail.example.test"), prefix=stage),
                      render.targets(spec))
    return spec, stage


# --- config -----------------------------------------------------------------------------

def test_ssh_allow_from_defaults_to_anywhere():
    cfg = config.load(local_stack.raw(), "local")
    assert cfg.ssh_allow_from == ("0.0.0.0/0", "::/0")


@pytest.mark.parametrize("value", ["198.51.100.0/24\n", "198.51.100.1/24", " 198.51.100.0/24",
                                   "198.51.100.0/24; flush ruleset", "example.no", 24, []])
def test_a_bad_admin_network_is_refused_naming_the_key_and_value(value):
    with pytest.raises(config.ConfigError) as err:
        config.load({**local_stack.raw(), "ssh_allow_from": [value] if value != [] else []}, "local")
    line = next(e for e in err.value.errors if e.startswith("ssh_allow_from"))
    assert repr(value) in line and "e.g." in line


def test_admin_networks_of_both_families_are_accepted():
    cfg = config.load({**local_stack.raw(), "ssh_allow_from": ["198.51.100.0/24", "2001:db8::/48",
                                                               "203.0.113.7"]}, "local")
    assert cfg.ssh_allow_from == ("198.51.100.0/24", "2001:db8::/48", "203.0.113.7")


def test_ssh_backend_firewall_defaults_to_managed_and_refuses_other_modes():
    assert config.load(_ssh_raw(), "prod", secret_keys=["ssh_private_key", "dns_tsig_secret"]
                       ).host.firewall == "managed"
    with pytest.raises(config.ConfigError, match=r"firewall: 'off' is not a firewall mode"):
        config.load(_ssh_raw(firewall="off"), "prod", secret_keys=["ssh_private_key", "dns_tsig_secret"])


def test_firewall_is_a_key_of_the_ssh_backend_only():
    with pytest.raises(config.ConfigError, match="firewall"):
        config.load({**local_stack.raw(), "firewall": "none"}, "local")


@pytest.mark.parametrize("is_local, allow, warned", [
    (False, ("0.0.0.0/0", "::/0"), True), (False, ("198.51.100.0/24",), False),
    (True, ("0.0.0.0/0", "::/0"), False)])
def test_ssh_open_to_the_world_warns_outside_local(monkeypatch, is_local, allow, warned):
    said = []
    monkeypatch.setattr("pulumi.log.warn", said.append)
    cfg = type("Cfg", (), {"is_local": is_local, "ssh_allow_from": allow})()
    warn_ssh_access(cfg, "ssh host 192.0.2.10")
    assert bool(said) is warned and all("ssh host 192.0.2.10" in s for s in said)


def test_a_managed_firewall_on_an_existing_server_warns_that_its_ruleset_is_replaced(monkeypatch):
    said = []
    monkeypatch.setattr("pulumi.log.warn", said.append)
    cfg = type("Cfg", (), {"is_local": False, "ssh_allow_from": ("198.51.100.0/24",)})()
    warn_ssh_access(cfg, "ssh host 192.0.2.10", replaces_rules=True)
    assert len(said) == 1 and "192.0.2.10" in said[0] and "replaces the server's whole" in said[0]


@pytest.mark.parametrize("user, rule", [("root", "prohibit-password"), ("debian", "no")])
def test_root_logs_in_by_key_only_or_not_at_all_behind_a_sudo_user(user, rule):
    cfg = type("Cfg", (), {"ssh_allow_from": ("0.0.0.0/0",)})()
    assert ssh_section(cfg, user)["ssh"]["permit_root_login"] == rule


# --- the spec ---------------------------------------------------------------------------

@pytest.mark.parametrize("ssh, path", [
    ({"allow_from": ["10.0.0.0/8\n"]}, "ssh.allow_from[0]"), ({"allow_from": []}, "ssh.allow_from"),
    ({"firewall": "off"}, "ssh.firewall"), ({"permit_root_login": "yes"}, "ssh.permit_root_login")])
def test_the_agent_refuses_a_bad_ssh_section(ssh, path):
    data = copy.deepcopy(example.example())
    data["ssh"] = ssh
    with pytest.raises(SpecError) as err:
        load(data)
    assert any(e.startswith(path) for e in err.value.errors)


# --- rendering, checked by the real tools -------------------------------------------------

def test_sshd_drop_in_allows_keys_only_and_passes_sshd_t(tmp_path):
    _, stage = _staged(tmp_path)
    conf = open(f"{stage}{contract.SSHD_DROPIN}").read()
    for line in ("PasswordAuthentication no", "KbdInteractiveAuthentication no",
                 "AuthenticationMethods publickey", "PermitRootLogin prohibit-password"):
        assert f"\n{line}\n" in conf
    assert validate.validate(stage, only={"ssh"}) == []


def test_sshd_refuses_a_drop_in_it_cannot_read(tmp_path):
    _, stage = _staged(tmp_path)
    with open(f"{stage}{contract.SSHD_DROPIN}", "a") as f:
        f.write("PermitRootLogin maybe\n")
    with pytest.raises(Exception, match="sshd refused"):
        validate.validate(stage, only={"ssh"})


def test_admin_networks_go_into_the_ssh_sets_and_pass_nft_c(tmp_path):
    _, stage = _staged(tmp_path, allow_from=["198.51.100.0/24", "203.0.113.7"])
    conf = open(f"{stage}/etc/nftables.conf").read()
    v4, v6 = conf.split("set ssh_admins_v6")[0], conf.split("set ssh_admins_v6")[1].split("}")[0]
    assert "elements = { 198.51.100.0/24, 203.0.113.7 }" in v4
    assert "elements" not in v6  # no IPv6 admin network: no IPv6 client reaches sshd
    assert validate.validate(stage, only={"nftables"}) == []


def test_new_ssh_connections_are_rate_limited_per_source(tmp_path):
    _, stage = _staged(tmp_path)
    conf = open(f"{stage}/etc/nftables.conf").read()
    meter = f"limit rate over {contract.SSH_PER_MINUTE}/minute burst {contract.SSH_BURST} packets"
    assert f"ct state new update @ssh_rate_v4 {{ ip saddr {meter} }} drop" in conf
    assert f"ct state new update @ssh_rate_v6 {{ ip6 saddr and ffff:ffff:ffff:ffff:: {meter} }} drop" in conf


def test_firewall_none_renders_no_ruleset_and_leaves_nftables_alone(tmp_path):
    spec, stage = _staged(tmp_path, firewall="none")
    assert "/etc/nftables.conf" not in {t.path for t in render.targets(spec)}
    assert not os.path.exists(f"{stage}/etc/nftables.conf")
    assert validate.validate(stage, only={"nftables", "ssh"}) == []  # nothing of ours to check
    assert "nftables" not in services.units("none")
    states = {s: (False, False) for s in services.units("none")}
    assert all(s != "nftables" for s, _ in services.decide(states, frozenset({"nftables"})))


def test_a_changed_sshd_drop_in_reloads_sshd_not_restarts_it():
    states = {s: (True, True) for s in services.UNITS}
    assert services.decide(states, frozenset({"ssh"})) == [("ssh", "reload")]


# --- the cloud firewalls --------------------------------------------------------------------

def test_openstack_ssh_rules_follow_the_admin_networks_and_keep_the_first_name():
    mocks, _ = cm.run(cm.load(cm.openstack_raw(ssh_allow_from=["198.51.100.0/24", "192.0.2.0/25"])))
    ssh = sorted((n, i["remoteIpPrefix"]) for n, i in cm.of_type(mocks, "openstack:networking/secGroupRule:"
                                                                         "SecGroupRule") if i["portRangeMin"] == 22)
    assert ssh == [("mail-allow-22-ipv4", "198.51.100.0/24"), ("mail-allow-22-ipv4-2", "192.0.2.0/25")]


def test_azure_ssh_rule_admits_the_admin_networks_only():
    mocks, _ = cm.run(cm.load(cm.azure_raw(ssh_allow_from=["198.51.100.0/24", "2001:db8::/48"])))
    ((_, nsg),) = cm.of_type(mocks, "azure-native:network:NetworkSecurityGroup")
    ssh = sorted((r["name"], tuple(r["sourceAddressPrefixes"])) for r in nsg["securityRules"]
                 if r["destinationPortRange"] == "22")
    assert ssh == [("allow-tcp-22", ("198.51.100.0/24",)), ("allow-tcp-22-v6", ("2001:db8::/48",))]
    assert len({r["priority"] for r in nsg["securityRules"]}) == len(nsg["securityRules"])


# --- host keys: pinned at first contact, checked every time ---------------------------------

class _Server(paramiko.ServerInterface):
    def check_auth_publickey(self, username, key):
        return paramiko.AUTH_SUCCESSFUL

    def get_allowed_auths(self, username):
        return "publickey"


def _ed25519() -> tuple[str, paramiko.Ed25519Key]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()).decode()
    return pem, paramiko.Ed25519Key.from_private_key(io.StringIO(pem))


def _serve_once(host_key: paramiko.PKey, port: int = 0) -> tuple[int, threading.Thread]:
    """An SSH server on loopback for one connection, presenting `host_key`."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1)
    listener.settimeout(15)

    def serve():
        try:
            conn, _ = listener.accept()
        except OSError:
            listener.close()
            return
        transport = paramiko.Transport(conn)
        transport.add_server_key(host_key)
        try:
            transport.start_server(server=_Server())
            transport.accept(5)
        except (paramiko.SSHException, EOFError):
            pass
        finally:
            transport.close()
            listener.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def test_a_changed_host_key_is_refused_naming_both_fingerprints(tmp_path):
    pem, _ = _ed25519()
    (_, first), (_, second) = _ed25519(), _ed25519()
    known = str(tmp_path / "known_hosts")
    port, thread = _serve_once(first)
    remote.connect("127.0.0.1", pem, port=port, timeout=10, known_hosts=known).close()
    thread.join(10)
    assert f"[127.0.0.1]:{port}" in open(known).read()  # pinned at first contact
    # The same address and port, another key: a man in the middle, or a rebuilt server.
    _, thread = _serve_once(second, port)
    with pytest.raises(remote.HostKeyChanged) as err:
        remote.connect("127.0.0.1", pem, port=port, timeout=10, known_hosts=known)
    thread.join(10)
    text = str(err.value)
    assert remote.fingerprint(first) in text and remote.fingerprint(second) in text
    assert f"ssh-keygen -R 127.0.0.1 -f {known}" in text


def test_the_pinned_key_is_accepted_on_the_next_connection(tmp_path):
    pem, _ = _ed25519()
    _, hostkey = _ed25519()
    known = str(tmp_path / "known_hosts")
    port = 0
    for _ in range(2):  # the same server again: the pin matches, the connection goes through
        port, thread = _serve_once(hostkey, port)
        remote.connect("127.0.0.1", pem, port=port, timeout=10, known_hosts=known).close()
        thread.join(10)
    assert len(paramiko.HostKeys(known).keys()) == 1


def test_a_replaced_host_is_forgotten_and_only_that_host(tmp_path):
    known = tmp_path / "known_hosts"
    (_, key), (_, other) = _ed25519(), _ed25519()
    hosts = paramiko.HostKeys()
    hosts.add("192.0.2.10", key.get_name(), key)
    hosts.add("192.0.2.11", other.get_name(), other)
    hosts.save(str(known))
    remote.forget_host(str(known), "192.0.2.10")
    left = paramiko.HostKeys(str(known))
    assert "192.0.2.10" not in left and "192.0.2.11" in left
    assert oct(known.stat().st_mode & 0o777) == "0o600"


# --- the policy pack ----------------------------------------------------------------------

@pytest.mark.parametrize("source, refused", [("198.51.100.0/25", False), ("198.51.100.0/24", False),
                                             ("0.0.0.0/0", True), ("*", True), ("203.0.113.0/24", True)])
def test_policy_refuses_an_openstack_ssh_rule_wider_than_the_admin_networks(source, refused):
    from policies import rules
    rule = {"direction": "ingress", "portRangeMin": 22, "portRangeMax": 22,
            "remoteIpPrefix": "" if source == "*" else source}
    message = rules.ssh_source_violation("openstack:networking/secGroupRule:SecGroupRule", "r", rule,
                                         ["198.51.100.0/24"])
    assert (message is not None) is refused
    assert not refused or "ssh_allow_from" in message


def test_policy_passes_the_stacks_own_azure_ssh_rules_for_its_admin_networks():
    from policies import rules
    allow = ["198.51.100.0/24", "2001:db8::/48"]
    mocks, _ = cm.run(cm.load(cm.azure_raw(ssh_allow_from=allow)))
    ((name, nsg),) = cm.of_type(mocks, "azure-native:network:NetworkSecurityGroup")
    assert rules.ssh_source_violation("azure-native:network:NetworkSecurityGroup", name, nsg, allow) is None
    narrower = rules.ssh_source_violation("azure-native:network:NetworkSecurityGroup", name, nsg,
                                          ["192.0.2.0/24"])
    assert "198.51.100.0/24, 2001:db8::/48" in narrower
