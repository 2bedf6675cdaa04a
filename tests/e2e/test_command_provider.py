"""Our pulumi-resource-command plugin (tools/pulumi-command-provider) serves the pulumi-command
1.2.1 Python SDK for real: local commands, and remote commands/copies against an sshd of the
test's own on 127.0.0.1."""
import getpass
import os
import pathlib
import shutil
import socket
import subprocess
import textwrap
import time

import pytest

from tests.e2e.pulumi_cli import ROOT, outputs, pulumi, tools_env

STACK = "e2e"


def make_project(tmp_path: pathlib.Path, program: str, config: dict[str, str]):
    project = tmp_path / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text(
        f"name: command-e2e\nruntime:\n  name: python\n  options:\n    virtualenv: {ROOT / '.venv'}\n")
    (project / "__main__.py").write_text(textwrap.dedent(program))
    env = tools_env(tmp_path / "state")
    pulumi(["stack", "init", STACK], project, env)
    set_config(project, env, config)
    return project, env


def set_config(project: pathlib.Path, env: dict[str, str], config: dict[str, str]) -> None:
    for key, value in config.items():
        pulumi(["config", "set", "--stack", STACK, key, value], project, env)


@pytest.fixture
def cleanup():
    projects = []
    yield projects.append
    for project, env in projects:
        pulumi(["destroy", "--yes", "--stack", STACK], project, env, check=False)


LOCAL_PROGRAM = """
    import shlex
    import pulumi
    from pulumi_command import local

    cfg = pulumi.Config()
    marker = shlex.quote(cfg.require("marker"))
    cmd = local.Command(
        "hello",
        create="echo hello-$NAME; echo to-stderr >&2",
        delete=f'echo "deleted $PULUMI_COMMAND_STDOUT" >> {marker}',
        environment={"NAME": cfg.require("name")},
        triggers=[cfg.require("trigger")],
    )
    pulumi.export("stdout", cmd.stdout)
    pulumi.export("stderr", cmd.stderr)
"""


def test_local_command_lifecycle(tmp_path, cleanup):
    marker = tmp_path / "deleted.txt"
    project, env = make_project(tmp_path, LOCAL_PROGRAM,
                                {"marker": str(marker), "name": "world", "trigger": "1"})
    cleanup((project, env))

    up = pulumi(["up", "--yes", "--stack", STACK], project, env)
    assert "2 created" in up.stdout, up.stdout
    assert outputs(project, env, STACK) == {"stdout": "hello-world", "stderr": "to-stderr"}
    pulumi(["preview", "--expect-no-changes", "--stack", STACK], project, env)
    # `make up` refreshes first: a refresh must keep the state as it is.
    pulumi(["refresh", "--yes", "--expect-no-changes", "--stack", STACK], project, env)
    assert not marker.exists()

    # A changed input without an update command re-runs create in place.
    set_config(project, env, {"name": "there"})
    up = pulumi(["up", "--yes", "--stack", STACK], project, env)
    assert "1 updated" in up.stdout, up.stdout
    assert outputs(project, env, STACK)["stdout"] == "hello-there"
    assert not marker.exists(), "an update must not run the delete command"

    # A changed trigger replaces it: the old one's delete command runs, with its last stdout.
    set_config(project, env, {"trigger": "2"})
    up = pulumi(["up", "--yes", "--stack", STACK], project, env)
    assert "1 replaced" in up.stdout, up.stdout
    assert marker.read_text() == "deleted hello-there\n"
    assert outputs(project, env, STACK)["stdout"] == "hello-there"

    down = pulumi(["destroy", "--yes", "--stack", STACK], project, env)
    assert "2 deleted" in down.stdout, down.stdout
    assert marker.read_text() == "deleted hello-there\ndeleted hello-there\n"


FAILING_PROGRAM = """
    import pulumi
    from pulumi_command import local

    what = pulumi.Config().require("what")
    local.Command("fails", create=f"echo partial-output; echo {what}-went-wrong >&2; exit 3")
"""


def test_failing_command_fails_up_with_its_stderr(tmp_path, cleanup):
    # (A stack with no config at all trips our language host: PULUMI_CONFIG=null.)
    project, env = make_project(tmp_path, FAILING_PROGRAM, {"what": "something"})
    cleanup((project, env))
    up = pulumi(["up", "--yes", "--stack", STACK], project, env, check=False)
    assert up.returncode != 0
    assert "something-went-wrong" in up.stdout + up.stderr
    assert "exit status 3" in up.stdout + up.stderr


def test_plugin_is_installed_as_command_1_2_1(tmp_path):
    env = tools_env(tmp_path / "state")
    listing = pulumi(["plugin", "ls"], tmp_path, env).stdout
    assert any(line.split()[:3] == ["command", "resource", "1.2.1"] for line in listing.splitlines()), listing


# ---- remote: a real sshd on loopback -------------------------------------------------------

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path):
    if not os.path.exists(SSHD) or not shutil.which("ssh-keygen"):
        pytest.skip("openssh-server is not installed (apt-get install -y openssh-server)")
    d = tmp_path / "sshd"
    d.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "client_key")], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    port = free_port()
    sftp = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server")
                 if os.path.exists(p)), "internal-sftp")
    (d / "sshd_config").write_text(textwrap.dedent(f"""\
        ListenAddress 127.0.0.1
        HostKey {d / 'host_key'}
        AuthorizedKeysFile {d / 'authorized_keys'}
        PidFile {d / 'sshd.pid'}
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PermitRootLogin prohibit-password
        StrictModes no
        UsePAM no
        Subsystem sftp {sftp}
        """))
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config"), "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    if s.recv(4).startswith(b"SSH-"):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start:\n{(d / 'sshd.log').read_text()}")
            time.sleep(0.1)
        yield {"port": port, "user": getpass.getuser(), "key": d / "client_key", "log": d / "sshd.log"}
    finally:
        proc.terminate()  # our sshd only, by its PID
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


REMOTE_PROGRAM = """
    import shlex
    import pulumi
    from pulumi_command import remote

    cfg = pulumi.Config()
    conn = remote.ConnectionArgs(
        host="127.0.0.1",
        port=cfg.require_int("port"),
        user=cfg.require("user"),
        private_key=open(cfg.require("keyFile")).read(),
        dial_error_limit=3,
    )
    dest = cfg.require("dest")
    copy = remote.CopyToRemote("file", connection=conn,
                               source=pulumi.FileAsset(cfg.require("src")), remote_path=dest)
    tree = remote.CopyToRemote("tree", connection=conn,
                               source=pulumi.FileArchive(cfg.require("srcDir")),
                               remote_path=cfg.require("destDir"))
    read = remote.Command(
        "read",
        connection=conn,
        create=f"cat {shlex.quote(dest)} && cat {shlex.quote(cfg.require('destDir'))}/tree/sub/b.txt"
               ' && echo "$GREETING" && cat',
        delete=f"rm -f {shlex.quote(dest)}",
        environment={"GREETING": "hi from env"},
        stdin="via-stdin",
        opts=pulumi.ResourceOptions(depends_on=[copy, tree]),
    )
    pulumi.export("stdout", read.stdout)
"""


def test_remote_copy_and_command_over_ssh(tmp_path, sshd, cleanup):
    src = tmp_path / "payload.txt"
    src.write_text("copied-content\n")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "b.txt").write_text("from-the-tree\n")
    remote_root = tmp_path / "remote"  # the "remote" host is this machine
    remote_root.mkdir()
    dest = remote_root / "payload.txt"
    project, env = make_project(tmp_path, REMOTE_PROGRAM, {
        "port": str(sshd["port"]), "user": sshd["user"], "keyFile": str(sshd["key"]),
        "src": str(src), "dest": str(dest), "srcDir": str(tree), "destDir": str(remote_root),
    })
    cleanup((project, env))

    up = pulumi(["up", "--yes", "--stack", STACK], project, env, check=False)
    assert up.returncode == 0, f"{up.stdout}\n{up.stderr}\nsshd log:\n{sshd['log'].read_text()}"
    assert "4 created" in up.stdout, up.stdout
    assert dest.read_text() == "copied-content\n"
    assert (remote_root / "tree" / "sub" / "b.txt").read_text() == "from-the-tree\n"
    assert outputs(project, env, STACK) == {"stdout": "copied-content\nfrom-the-tree\nhi from env\nvia-stdin"}

    key_line = sshd["key"].read_text().splitlines()[1]
    for state in (tmp_path / "state").rglob("*.json"):
        assert key_line not in state.read_text(), f"the private key is in plain text in {state}"

    pulumi(["preview", "--expect-no-changes", "--stack", STACK], project, env)
    pulumi(["refresh", "--yes", "--expect-no-changes", "--stack", STACK], project, env)
    down = pulumi(["destroy", "--yes", "--stack", STACK], project, env)
    assert "4 deleted" in down.stdout, down.stdout
    assert not dest.exists(), "the remote delete command did not run"
