"""localcloud on a real booted container: ssh, cloud-init, packages through the proxy, no
route out, and a stop that leaves nothing behind. Needs root, systemd-nspawn, debootstrap,
tinyproxy; the first run also builds the cached image (a minute or two)."""
import gzip
import io
import ipaddress
import json
import os
import shutil
import socket
import time

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from localcloud import __main__ as cli
from localcloud import aptproxy, container, image, mounts, naming, network, process

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("systemd-nspawn", "debootstrap",
                                                          "tinyproxy")),
                       reason="needs systemd-nspawn, debootstrap and tinyproxy"),
]

MARKER = "written by cloud-init write_files\n"
USER_DATA = f"""#cloud-config
write_files:
  - path: /root/localcloud-marker
    content: "{MARKER.strip()}"
""".encode()


@pytest.fixture(scope="module")
def stack(progress):
    names = naming.stack_names("itest-localcloud")
    cli.stop_all(names)  # leftovers of an interrupted run
    try:
        started = time.monotonic()
        cold = not (image.image_path() / "etc/os-release").exists()
        image.ensure_image(log=lambda line: progress("localcloud", line))
        progress("localcloud", f"image {'built (cold)' if cold else 'cached'}: "
                               f"{time.monotonic() - started:.1f} s")
        bridge = network.ensure_bridge(names)
        proxy = aptproxy.start(names, bridge.ipv4)
        yield names, bridge, proxy
    finally:
        cli.stop_all(names)


@pytest.fixture(scope="module")
def key():
    private = ed25519.Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem.decode())), public.decode()


def _boot(progress, stack, key, host, index, user_data=None):
    names, bridge, proxy = stack
    started = time.monotonic()
    machine = container.start(
        names, host, bridge=bridge.name, ipv4=str(bridge.address(index)),
        ipv6=str(bridge.address6(index)), nameserver=str(bridge.ipv4.ip),
        apt_proxy_url=proxy.url, authorized_keys=[key[1]], user_data=user_data)
    container.wait_ssh(str(machine.ipv4.ip), timeout=90)
    progress("localcloud", f"{host}: boot to ssh {time.monotonic() - started:.1f} s")
    return machine


@pytest.fixture(scope="module")
def mail(progress, stack, key):
    """The shared host of this module; gzip user-data, as the Bootstrap component sends it."""
    machine = _boot(progress, stack, key, "mail", 10, gzip.compress(USER_DATA))
    yield machine
    container.stop(stack[0], "mail", destroy=True)


@pytest.fixture(scope="module")
def ssh(mail, key):
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # a brand-new host
    client.connect(str(mail.ipv4.ip), username="root", pkey=key[0], timeout=10,
                   allow_agent=False, look_for_keys=False)
    yield client
    client.close()


def run(client, command: str, timeout: float = 60) -> tuple[int, str]:
    _, out, err = client.exec_command(command, timeout=timeout)
    text = out.read().decode() + err.read().decode()
    return out.channel.recv_exit_status(), text


def test_ssh_logs_in_as_root_with_the_generated_key(ssh):
    assert run(ssh, "id -u") == (0, "0\n")


def test_cloud_init_finished_without_errors(ssh):
    code, out = run(ssh, "cloud-init status --wait", timeout=120)
    assert code == 0, out


def test_cloud_init_ran_write_files(ssh):
    run(ssh, "cloud-init status --wait", timeout=120)
    assert run(ssh, "cat /root/localcloud-marker") == (0, MARKER.strip())


def test_host_name_comes_from_the_stack(ssh):
    assert run(ssh, "hostname") == (0, "mail\n")


def test_each_container_has_its_own_ssh_host_keys(ssh):
    code, out = run(ssh, "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub")
    image_keys = list((image.image_path() / "etc/ssh").glob("ssh_host_*"))
    assert code == 0 and image_keys == []


def test_apt_installs_a_package_through_the_proxy(ssh):
    code, out = run(ssh, "apt-get update -q && DEBIAN_FRONTEND=noninteractive "
                         "apt-get install -y -q hello && hello", timeout=300)
    assert code == 0 and "Hello, world!" in out, out[-2000:]


@pytest.mark.parametrize("family", ["-4", "-6"])
def test_no_route_leaves_the_bridge_subnets(ssh, stack, family):
    bridge = stack[1]
    code, out = run(ssh, f"ip -j {family} route show table all")
    assert code == 0, out
    for route in json.loads(out):
        if route.get("type") in ("local", "broadcast", "multicast", "anycast"):
            continue
        assert route["dst"] != "default", route
        dst = ipaddress.ip_network(route["dst"], strict=False)
        assert dst.is_link_local or dst.is_multicast or dst.subnet_of(
            bridge.subnet if dst.version == 4 else bridge.subnet6), route


def _proxy_answer(stack, source: str, target: str) -> str:
    names, bridge, proxy = stack
    with socket.create_connection((str(bridge.ipv4.ip), aptproxy.DEFAULT_PORT), timeout=5,
                                  source_address=(source, 0)) as conn:
        conn.sendall(f"GET http://{target}/ HTTP/1.0\r\n\r\n".encode())
        return conn.recv(200).decode(errors="replace")


def test_proxy_refuses_sites_other_than_the_mirror(stack):
    # a loopback target: even a broken filter would not send a packet off this machine
    assert " 403 " in _proxy_answer(stack, str(stack[1].ipv4.ip), "127.0.0.1:9").splitlines()[0]


def test_proxy_refuses_clients_outside_the_stack_subnet(stack):
    assert " 403 " in _proxy_answer(stack, "127.0.0.1", "127.0.0.1:9").splitlines()[0]


def test_run_enters_the_container_not_the_host(stack, mail):
    done = container.run(stack[0], "mail", ["hostname"])
    assert done.stdout.strip() == "mail" != socket.gethostname()


@pytest.fixture(scope="module")
def stopped(progress, stack, key):
    """A host of its own, booted and stopped once; the tests below check what is left."""
    names = stack[0]
    machine = _boot(progress, stack, key, "stopme", 11)
    was_running = container.status(names, "stopme")
    started = time.monotonic()
    container.stop(names, "stopme", timeout=30, destroy=True)
    progress("localcloud", f"stopme: stop {time.monotonic() - started:.1f} s")
    yield machine, was_running
    container.stop(names, "stopme", destroy=True)


def test_status_is_true_while_running(stopped):
    assert stopped[1] is True


def test_status_is_false_after_stop(stack, stopped):
    assert container.status(stack[0], "stopme") is False


@pytest.mark.parametrize("which", ["nspawn_pid", "leader_pid"])
def test_stop_leaves_no_process(stopped, which):
    assert not process.is_alive(getattr(stopped[0], which))


def test_stop_leaves_no_mount_and_no_dir(stack, stopped):
    names = stack[0]
    assert mounts.mounts_under(names.hosts_dir / "stopme") == []
    assert not names.host_dir("stopme").exists()


def test_stop_takes_the_veth_with_it(stopped):
    assert not network.bridge_exists(naming.VETH_PREFIX + stopped[0].name)


def test_stop_leaves_no_nspawn_runtime_files(stopped):
    assert not (container.NSPAWN_RUN / "propagate" / stopped[0].name).exists()


def test_stop_twice_is_harmless(stack, stopped):
    container.stop(stack[0], "stopme", destroy=True)
    assert container.status(stack[0], "stopme") is False
