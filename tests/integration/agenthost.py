"""Helpers of the agent's integration tests (no tests here): deploy the agent on a booted
Debian 12 container (localcloud), as the Pulumi side does: copy the zipapp and the spec over SSH,
run ``bulletproof-agent apply --json``; and the mail a test client sends.

Also used by bench/agent_apply.py. Needs root, systemd-nspawn, tinyproxy and named.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
import time
import email.utils
import uuid
from dataclasses import dataclass, field

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from agent import example, keys
from agent.contract import AGENT, DATA_DIR, PENDING_DIR, dnsbl_query_name
from components import agent_zipapp
from localcloud import __main__ as localcloud_cli
from localcloud import aptproxy, container, dns, image, naming, network

DOMAIN = "example.test"
HOST_INDEX = 10
HELO = "client.elsewhere.test"        # the name test clients greet with
OUTSIDER = "someone@elsewhere.test"   # an address of "the rest of the internet" (the sink)
LISTED_INDEX = 200      # a client address listed in the test DNSBL
PREGREET_INDEX = 201    # a fresh client address for the pregreet test (postscreen caches passes)
BLOCKED_INDEX = 202     # the test DNSBL answers it "blocked" (127.255.255.254), not a listing
DQS_INDEX = 203         # listed only in the test DNSBL's keyed (DQS) zone, under DQS_KEY
DQS_KEY = "itestdqskeyitestdqskeyitst"
SSH_BURST_INDEX = 100   # an SSH client inside the admin /25 of the SSH tests, for the rate limit
SSH_OUTSIDER_INDEX = 204  # an SSH client outside it


def tools_missing() -> list[str]:
    return [t for t in ("systemd-nspawn", "tinyproxy", "named") if not shutil.which(t)]


def zone_txt(value: str) -> str:
    """A long TXT value as zone-file text: quoted strings of at most 255 bytes."""
    return " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))


def password(address: str) -> str:
    """The mailbox password of the example spec's users."""
    return "secret-" + address.split("@")[0]


def message(sender: str, to: str, subject: str) -> bytes:
    return (f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@elsewhere.test>\r\n"
            f"Date: {email.utils.formatdate()}\r\n\r\nbody of {subject}\r\n").encode()


@dataclass
class Deployed:
    names: naming.StackNames
    bridge: network.Bridge
    ip: str
    ssh: paramiko.SSHClient | None
    key_file: str
    spec: dict
    workdir: str
    reports: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    extra_addrs: list = field(default_factory=list)
    host: str = "mail"          # the running container's name in the stack
    boot_args: dict = field(default_factory=dict)  # what boot() needs for another host
    volume: str | None = None   # this machine's directory bind-mounted at DATA_DIR

    def binds(self) -> tuple:
        return ((self.volume, DATA_DIR),) if self.volume else ()

    def run(self, command: str, timeout: float = 900) -> tuple[int, str, str]:
        _, out, err = self.ssh.exec_command(command, timeout=timeout)
        o, e = out.read().decode(), err.read().decode()
        return out.channel.recv_exit_status(), o, e

    def put(self, data: bytes, path: str, mode: int) -> None:
        sftp = self.ssh.open_sftp()
        try:
            tmp = path + ".upload"
            with sftp.open(tmp, "wb") as f:
                f.chmod(mode)  # before the content: a secret is never world-readable
                f.write(data)
            sftp.posix_rename(tmp, path)
        finally:
            sftp.close()

    def send_spec(self, data: dict) -> None:
        from agent.spec import split
        public, secrets = split(data)
        self.run(f"install -d -m 0700 {PENDING_DIR}")
        for name, content in (("spec.json", public), ("secrets.json", secrets)):
            self.put(json.dumps(content, indent=2, sort_keys=True).encode(),
                     f"{PENDING_DIR}/{name}", 0o600)

    def apply(self, data: dict | None = None, run_id: str = "") -> tuple[int, dict, float, str]:
        if data is not None:
            self.send_spec(data)
        started = time.monotonic()
        rc, out, err = self.run(f"{AGENT} apply --spec {PENDING_DIR}/spec.json --secrets "
                                f"{PENDING_DIR}/secrets.json --json --run-id {run_id or 'itest'}")
        elapsed = time.monotonic() - started
        try:
            report = json.loads(out)
        except ValueError:
            report = {"status": "unparsable", "stdout": out}
        self.reports.append(report)
        return rc, report, elapsed, err


def _keypair(workdir: str):
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
    path = os.path.join(workdir, "id_ed25519")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem.decode())), public, path


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def up(stack: str = "itest-agent", log=print, tune=None, volume: bool = False) -> Deployed:
    """Bridge, proxy, DNS, container, agent uploaded. Call ``down`` in a finally.
    ``tune(spec)`` may change the example spec in place (e.g. low limits for a test).
    ``volume``: a directory of this machine is bind-mounted at the host's DATA_DIR, as the
    local backend's data volume (``d.volume``; the spec says volume.kind mounted)."""
    names = naming.stack_names(stack)
    dns.stop(names.runtime_dir / "agent-dns")  # leftovers of an interrupted run
    localcloud_cli.stop_all(names)
    # A new container has new host keys: the key an earlier run pinned (ops commands pin on
    # first contact) would rightly be refused as a changed key.
    naming.known_hosts(names).unlink(missing_ok=True)
    workdir = tempfile.mkdtemp(prefix="bpm-itest-")
    image.ensure_image(log=log)
    bridge = network.ensure_bridge(names)
    proxy = aptproxy.start(names, bridge.ipv4)
    ip = str(bridge.address(HOST_INDEX).ip)
    gw = str(bridge.ipv4.ip)
    listed = str(bridge.address(LISTED_INDEX).ip)
    spec = example.example(domain=DOMAIN, ipv4=ip, dns_server=gw)
    if tune:
        tune(spec)
    # A complete, correct record set (as the stack publishes it), so `status` passes on a
    # fresh host and a test that breaks one record sees exactly that check fail.
    zones = [
        dns.ZoneSpec(DOMAIN, (("@", "MX", f"10 mail.{DOMAIN}."), ("mail", "A", ip),
                              ("@", "TXT", '"v=spf1 mx -all"'),
                              ("_dmarc", "TXT", '"v=DMARC1; p=quarantine"'),
                              (f"{spec['dkim']['selector']}._domainkey", "TXT",
                               zone_txt(keys.dkim_txt(spec["dkim"]["private_key_pem"]))))),
        dns.ZoneSpec(dns.reverse_zone_v4(str(bridge.ipv4.network)),
                     ((ip.rsplit(".", 1)[1], "PTR", f"mail.{DOMAIN}."),)),
        dns.ZoneSpec("elsewhere.test", (("@", "MX", "10 mx.elsewhere.test."),
                                        ("mx", "A", gw), ("client", "A", gw))),
        dns.ZoneSpec("dnsbl.test", ((dnsbl_query_name(listed, "dnsbl.test"), "A", "127.0.0.2"),
                                    (dnsbl_query_name(listed, "dnsbl.test"), "TXT",
                                     '"listed by the itest"'),
                                    (dnsbl_query_name(str(bridge.address(BLOCKED_INDEX).ip), "dnsbl.test"),
                                     "A", dns.DNSBL_BLOCKED_CODE),
                                    (dnsbl_query_name(str(bridge.address(DQS_INDEX).ip),
                                                      f"{DQS_KEY}.dq.dnsbl.test"), "A", "127.0.0.2"))),
    ]
    dns_dir = names.runtime_dir / "agent-dns"
    dns.start(dns_dir, gw, 53, zones, tsig_name=f"{names.stack_id}-key")
    key, public, key_file = _keypair(workdir)
    d = Deployed(names, bridge, ip, None, key_file, spec, workdir)
    d.boot_args = {"key": key, "public": public, "proxy_url": proxy.url, "gw": gw}
    if volume:
        d.volume = volume_dir(d)
        spec["volume"] = {"kind": "mounted"}
    for index in (LISTED_INDEX, PREGREET_INDEX, BLOCKED_INDEX, DQS_INDEX, SSH_BURST_INDEX,
                  SSH_OUTSIDER_INDEX):
        addr = str(bridge.address(index))
        subprocess.run(["ip", "addr", "add", addr, "dev", bridge.name], capture_output=True)
        d.extra_addrs.append(addr)
    boot(d, "mail", d.binds())
    return d


def client_address(d: Deployed, index: int) -> str:
    """One more client address on the bridge (``down`` removes it): a client postscreen,
    anvil and fail2ban have never seen."""
    addr = str(d.bridge.address(index))
    if addr not in d.extra_addrs:
        subprocess.run(["ip", "addr", "add", addr, "dev", d.bridge.name], capture_output=True)
        d.extra_addrs.append(addr)
    return addr.split("/")[0]


def volume_dir(d: Deployed, name: str = "volume") -> str:
    """A directory of this machine to bind-mount at the host's DATA_DIR: the data volume that
    outlives the host (gone with the workdir in ``down``)."""
    path = os.path.join(d.workdir, name)
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)
    return path


def boot(d: Deployed, host: str, binds=(), agent_pyz: str | None = None) -> None:
    """Boot a NEW host (a fresh disk) named ``host`` on the mail IP, with ``binds`` (host path,
    path inside), the agent uploaded (``agent_pyz`` or one built from this checkout). Stop the
    running one first (``replace``)."""
    started = time.monotonic()
    a = d.boot_args
    container.start(d.names, host, bridge=d.bridge.name, ipv4=str(d.bridge.address(HOST_INDEX)),
                    nameserver=a["gw"], apt_proxy_url=a["proxy_url"],
                    authorized_keys=[a["public"]], hostname=f"mail.{DOMAIN}", binds=tuple(binds))
    d.host = host
    container.wait_ssh(d.ip, timeout=120)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # brand-new host key
    client.connect(d.ip, username="root", pkey=a["key"], timeout=10, allow_agent=False,
                   look_for_keys=False)
    d.ssh = client
    d.timings.setdefault("boot_to_ssh_s", time.monotonic() - started)
    d.run("cloud-init status --wait", timeout=300)
    pyz = agent_pyz or agent_zipapp.build(os.path.join(d.workdir, "bulletproof-agent.pyz"))
    d.run("install -d -m 0755 /usr/local/sbin")
    d.put(open(pyz, "rb").read(), AGENT, 0o755)


def replace(d: Deployed, host: str, binds=(), agent_pyz: str | None = None) -> None:
    """The host replaced: the running one powered off and its disk destroyed, a new one booted
    (on the same data volume when ``binds`` names it)."""
    d.ssh.close()
    container.stop(d.names, d.host, destroy=True)
    boot(d, host, binds, agent_pyz)


def down(d: Deployed | None, stack: str = "itest-agent") -> None:
    names = d.names if d else naming.stack_names(stack)
    if d:
        try:
            if d.ssh:
                d.ssh.close()
        except Exception:
            pass
        for addr in d.extra_addrs:
            subprocess.run(["ip", "addr", "del", addr, "dev", d.bridge.name], capture_output=True)
        shutil.rmtree(d.workdir, ignore_errors=True)
    dns.stop(names.runtime_dir / "agent-dns")
    localcloud_cli.stop_all(names)
