"""Preflight decisions from facts, with the facts faked (no root, no Debian needed)."""
import subprocess

import pytest

from agent import example, preflight
from agent.errors import PreflightError
from agent.host import Host
from agent.spec import load
from agent.step import Context


class FakeHost(Host):
    def __init__(self, ss_output: str, os_release: str, tmp_path):
        super().__init__(root="/")
        self.ss_output = ss_output
        (tmp_path / "etc").mkdir(exist_ok=True)
        (tmp_path / "etc/os-release").write_text(os_release)
        self._tmp = tmp_path

    @property
    def live(self):
        return True

    def path(self, p):
        return str(self._tmp / p.lstrip("/"))

    def run(self, argv, **kw):
        return subprocess.CompletedProcess(argv, 0, self.ss_output, "")


DEBIAN12 = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
SS_POSTFIX = ('LISTEN 0 100 0.0.0.0:25 0.0.0.0:* users:(("postscreen",pid=4641,fd=6),'
              '("master",pid=4610,fd=12))\n')
SS_EXIM = 'LISTEN 0 20 0.0.0.0:25 0.0.0.0:* users:(("exim4",pid=77,fd=3))\n'


@pytest.fixture(scope="module")
def spec():
    return load(example.example(dkim_pem=example.dkim_key(1024)))


@pytest.fixture(autouse=True)
def as_root(monkeypatch):
    monkeypatch.setattr(preflight.os, "geteuid", lambda: 0)


def test_our_postfix_on_port_25_is_fine(tmp_path, spec):
    assert preflight.apply(Context(spec, FakeHost(SS_POSTFIX, DEBIAN12, tmp_path))).ok


def test_other_program_on_port_25_is_refused_by_name(tmp_path, spec):
    with pytest.raises(PreflightError, match="port 25 is held by exim4"):
        preflight.apply(Context(spec, FakeHost(SS_EXIM, DEBIAN12, tmp_path)))


def test_other_os_is_refused(tmp_path, spec):
    with pytest.raises(PreflightError, match="unsupported OS: Ubuntu"):
        preflight.apply(Context(spec, FakeHost("", 'PRETTY_NAME="Ubuntu 22.04"\nID=ubuntu\n'
                                                   'VERSION_ID="22.04"\n', tmp_path)))


def test_not_root_is_refused(tmp_path, spec, monkeypatch):
    monkeypatch.setattr(preflight.os, "geteuid", lambda: 1000)
    with pytest.raises(PreflightError, match="must run as root"):
        preflight.apply(Context(spec, FakeHost("", DEBIAN12, tmp_path)))


def test_slow_fsync_warns(tmp_path, spec, monkeypatch):
    monkeypatch.setattr(preflight, "fsync_latency_ms", lambda d: 80.0)
    result = preflight.apply(Context(spec, FakeHost("", DEBIAN12, tmp_path)))
    assert result.ok and "fsync latency 80.0 ms" in result.warnings[0]
