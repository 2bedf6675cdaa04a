"""backend: ssh, for real: a server that already runs, started OUTSIDE the stack, gets its mail stack.

The "provider" here is localcloud under a name of its own: a bridge, a package proxy, a Debian 12
container booted without our user-data, and a BIND that serves the mail zone (updates by TSIG,
as a customer's DNS server would) and the reverse zone whose PTR the "provider" sets. The stack
knows only what a user would put in Pulumi.<stack>.yaml. Tests run in file order.
"""
from __future__ import annotations

import ipaddress
import json
import subprocess
import uuid
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from localcloud import rfc2136
from localcloud import __main__ as localcloud_cli
from localcloud import aptproxy, container, dns, image, naming, network
from tests import mailclient
from tests.e2e import stack_fixture
from tests.e2e.pulumi_cli import ROOT

DOMAIN = "bulletproof.test"
FQDN = f"mail.{DOMAIN}"
HOST_INDEX = 10


@dataclass
class Server:
    names: naming.StackNames
    ip: str
    gateway: str
    private_key: str
    tsig: rfc2136.Tsig
    reverse_zone: str

    def set_ptr(self, target: str) -> None:
        rfc2136.upsert(self.gateway, 53, self.tsig, self.reverse_zone, self.ip.rsplit(".", 1)[1],
                          "PTR", [target], 60)


@pytest.fixture(scope="module")
def server():
    """An existing Debian 12 server and its provider's DNS, all stopped again at the end."""
    names = naming.stack_names(f"sshsrv-{uuid.uuid4().hex[:6]}")
    try:
        image.ensure_image()
        bridge = network.ensure_bridge(names)
        proxy = aptproxy.start(names, bridge.ipv4)
        gw, ip = str(bridge.ipv4.ip), str(bridge.address(HOST_INDEX).ip)
        zones = dns.local_zones(DOMAIN, str(bridge.ipv4.network), str(bridge.ipv6.network), gw)
        state = names.runtime_dir / "dns"
        dns.start(state, gw, 53, zones, f"{names.stack_id}-key")
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
        # No user-data: the machine booted long before the stack existed.
        container.start(names, "mail", bridge=bridge.name, ipv4=str(bridge.address(HOST_INDEX)),
                        nameserver=gw, apt_proxy_url=proxy.url, authorized_keys=[public], hostname=FQDN)
        container.wait_ssh(ip, timeout=120)
        _make_it_like_a_cloud_image(ip, pem, public)
        yield Server(names, ip, gw, pem, dns.read_tsig(state),
                     dns.reverse_zone_v4(str(bridge.ipv4.network)))
    finally:
        localcloud_cli.stop_all(names)  # container, proxy, named (by their PID files), bridge


def _make_it_like_a_cloud_image(ip: str, pem: str, public_key: str) -> None:
    """As Debian's cloud images are: the key belongs to `debian`, who has passwordless sudo, and
    root may not log in. The stack must get root rights through `sudo -n`."""
    from components import remote
    client = remote.connect(ip, pem, timeout=60)
    try:
        # confnew: cloud-init already wrote an /etc/sudoers (just its includedir); take the package's
        remote.run(client, "export DEBIAN_FRONTEND=noninteractive; apt-get update -q && apt-get install "
                           "-y -q -o Dpkg::Options::=--force-confnew sudo </dev/null", timeout=600, check=True)
        for user in ("debian", "nosudo"):  # nosudo: the same key, no sudo rule
            # the image's cloud-init may have made `debian` already (its default user)
            remote.run(client, f"(id -u {user} || useradd -m -s /bin/bash {user}) && "
                               f"install -d -m 0700 -o {user} -g {user} /home/{user}/.ssh", check=True)
            remote.put(client, f"/home/{user}/.ssh/authorized_keys", (public_key + "\n").encode(), 0o600)
            remote.run(client, f"chown {user}:{user} /home/{user}/.ssh/authorized_keys", check=True)
        remote.put(client, "/etc/sudoers.d/90-cloud-init-users", b"debian ALL=(ALL) NOPASSWD:ALL\n", 0o440)
        remote.put(client, "/etc/ssh/sshd_config.d/50-no-root.conf", b"PermitRootLogin no\n", 0o644)
        remote.run(client, "visudo -c && systemctl reload ssh", check=True)
    finally:
        client.close()


def _ssh_config(srv: Server, **changes) -> dict:
    cfg = {f"bulletproof-mail:{k}": v for k, v in {
        "backend": "ssh", "region": "oslo", "residency": "NO", "domain": DOMAIN, "hostname": "mail",
        "users": [{"address": f"alice@{DOMAIN}", "quota_mb": 256}, {"address": f"bob@{DOMAIN}", "quota_mb": 256}],
        "dkim_selector": "s1", "dmarc_policy": "quarantine",
        "dnsbl_sites": [{"site": "dnsbl.test", "weight": 3}], "dnsbl_threshold": 3, "verify": True,
        "ssh_host": srv.ip, "ssh_user": "debian", "dns_server": f"{srv.gateway}:53", "dns_tsig_name": srv.tsig.name,
        "dns_tsig_algorithm": srv.tsig.algorithm, "resolver": f"{srv.gateway}:53",
        # No route out here: the server forwards to the test BIND (a real one recurses itself).
        "resolver_forwarders": [f"{srv.gateway}:53"],
        "backup_repository": "none",  # an ssh server brings its own repository; backups: test_durability
        **changes}.items()}
    return cfg


def _set_secret(stack: stack_fixture.Stack, key: str, value: str) -> None:
    subprocess.run(["pulumi", "--non-interactive", "config", "set", "--secret", f"bulletproof-mail:{key}",
                    "--stack", stack.name], input=value, text=True, cwd=ROOT, env=stack.env,
                   check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def stack(server, tmp_path_factory):
    s = stack_fixture.create(tmp_path_factory.mktemp("state"), _ssh_config(server))
    try:
        _set_secret(s, "ssh_private_key", server.private_key)
        _set_secret(s, "dns_tsig_secret", server.tsig.secret)
        yield s
    finally:
        stack_fixture.remove(s)


def _with(stack, **changes):
    doc = stack.config()
    doc["config"].update({f"bulletproof-mail:{k}": v for k, v in changes.items()})
    stack.write_config(doc)


def test_secrets_are_stored_encrypted_in_the_stack_config(stack, server):
    text = stack.config_file.read_text()
    assert "secure:" in text and server.tsig.secret not in text and "PRIVATE KEY" not in text


def test_a_user_without_passwordless_sudo_is_refused_before_anything_is_copied(server):
    from components import agent_deploy, remote
    target = agent_deploy.Target(server.ip, server.private_key, user="nosudo")
    with pytest.raises(agent_deploy.AgentRunError, match="'nosudo' .* has no passwordless sudo"):
        agent_deploy.deploy(target, "{}", "{}", b"", "run-x", "", timeout=60)
    client = remote.connect(server.ip, server.private_key, user="debian", timeout=30)
    try:
        assert remote.run(client, "test -e /etc/bulletproof-mail", as_root=True).rc == 1
    finally:
        client.close()


def test_a_wrong_ptr_fails_preview_with_the_exact_record_to_ask_for(stack, server):
    server.set_ptr("vps-10.provider.elsewhere.test.")
    failed = stack.run("preview", check=False)
    text = failed.stdout + failed.stderr
    reverse = ipaddress.ip_address(server.ip).reverse_pointer
    assert failed.returncode != 0
    assert f"ask your provider to set exactly this record: {reverse}. IN PTR {FQDN}." in text, text
    assert f"the reverse DNS of {server.ip} is vps-10.provider.elsewhere.test." in text
    assert "Traceback" not in text
    assert not json.loads(stack.run("stack", "export").stdout)["deployment"].get("resources")


def test_rdns_warn_lets_preview_pass_with_the_same_record_as_a_warning(stack, server):
    _with(stack, rdns="warn")
    try:
        preview = stack.run("preview")
        assert f"IN PTR {FQDN}." in preview.stdout + preview.stderr
    finally:
        _with(stack, rdns="enforce")


def test_up_installs_the_agent_over_ssh_and_verification_passes(stack, server):
    server.set_ptr(f"{FQDN}.")
    stack.timed("first up", "up", "--yes", "--skip-preview", timeout=2400)
    outs = stack.outputs()
    assert outs["verification"]["failed"] == 0 and outs["verification"]["passed"] > 0
    assert outs["host_ipv4"] == server.ip and outs["ssh_target"] == f"debian@{server.ip}"
    assert outs["dns_records"][f"{FQDN}."]["A"] == [server.ip]
    # the user's own key, a secret output as in the config: the operator commands log in with it
    assert outs["ssh_private_key"].strip() == server.private_key.strip()
    # The stack wrote no PTR: the provider's record is untouched.
    reverse = rfc2136.read(server.gateway, 53, server.reverse_zone, server.ip.rsplit(".", 1)[1], "PTR")[0]
    assert reverse == [f"{FQDN}."]


def test_root_cannot_log_in_so_the_deploy_went_through_sudo(stack, server):
    from components import remote
    with pytest.raises(remote.RemoteError, match="cannot SSH to root@"):
        remote.connect(server.ip, server.private_key, user="root", timeout=5)
    client = remote.connect(server.ip, server.private_key, user="debian", timeout=30)
    try:
        owner = remote.run(client, "stat -c '%U %a' /etc/bulletproof-mail/secrets.json", as_root=True)
        assert owner.stdout.split() == ["root", "600"], owner
        assert remote.run(client, "cat /etc/bulletproof-mail/secrets.json").rc != 0  # not as debian
        left = remote.run(client, "find /tmp -mindepth 1 -maxdepth 1 -user debian").stdout
        assert left == "", f"upload staging left behind: {left}"
    finally:
        client.close()


def test_the_deployed_server_takes_mail_by_submission_and_serves_it_by_imaps(stack, server):
    outs = stack.outputs()
    alice, bob = f"alice@{DOMAIN}", f"bob@{DOMAIN}"
    subject = f"ssh backend {uuid.uuid4().hex[:8]}"
    mailclient.submit(server.ip, alice, outs["mail_passwords"][alice], bob, subject)
    found = mailclient.imap_find(server.ip, bob, outs["mail_passwords"][bob], subject)
    assert found is not None, "the message never reached bob's mailbox"


@pytest.mark.parametrize("target", ["verify", "check", "outputs"])
def test_the_operator_commands_work_on_an_existing_server(stack, server, target):
    proc = subprocess.run(["make", "-s", target, f"STACK={stack.name}"], cwd=ROOT, env=stack.env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    if target == "verify":
        assert json.loads(proc.stdout)["failed"] == 0 and json.loads(proc.stdout)["passed"] > 0
    elif target == "check":
        assert "0 fail" in proc.stdout and "outside:fcrdns" in proc.stdout and "host:queue" in proc.stdout
    else:
        assert json.loads(proc.stdout)["ssh_target"] == f"debian@{server.ip}"


def test_preview_warns_that_ssh_is_open_to_all_and_the_servers_ruleset_is_replaced(stack, server):
    preview = stack.run("preview")
    text = preview.stdout + preview.stderr
    assert f"ssh host {server.ip}: SSH is open to the whole internet" in text, text[-3000:]
    assert f"ssh host {server.ip}: firewall: managed replaces the server's whole nftables ruleset" in text


def test_second_up_changes_nothing(stack):
    stack.run("preview", "--expect-no-changes")  # fails (non-zero) on any proposed change


def test_destroy_removes_the_records_and_leaves_the_server_running(stack, server):
    stack_fixture.unprotect(stack)
    stack.run("destroy", "--yes")
    assert rfc2136.read(server.gateway, 53, DOMAIN, "mail", "A") is None  # gone
    assert container.status(server.names, "mail")  # the user's server is theirs: not ours to stop
