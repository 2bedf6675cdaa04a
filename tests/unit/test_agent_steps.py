"""The step protocol (agent/step.py): every step returns the typed result, plan changes
nothing and decides what apply does, and a failure of any kind rolls the files back."""
import copy
import functools
import json
import os
import subprocess

import pytest

from agent import __main__ as cli
from agent import accounts, commands, engine, example, files, keys, packages, services
from agent.errors import AgentError, CommandError, UnexpectedError
from agent.host import Host
from agent.spec import load
from agent.step import Context, StepResult


@functools.lru_cache(maxsize=1)
def _data() -> dict:
    # A provided TLS pair: plan and apply then render the very same bytes.
    cert, key = keys.self_signed("mail.example.test")
    return example.example(dkim_pem=example.dkim_key(1024),
                           tls={"mode": "provided", "cert_pem": cert, "key_pem": key})


def spec_of(**limits):
    data = copy.deepcopy(_data())
    data["limits"].update(limits)
    return load(data)


def tree(root) -> dict:
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            st = os.stat(p)
            out[p] = (st.st_mtime_ns, st.st_mode, open(p, "rb").read())
    return out


def contents(root) -> dict:
    return {p: v[1:] for p, v in tree(root).items()}


def decisions(ctx: Context) -> list:
    return [(r.name, r.changed, r.ok, r.detail, r.diff, r.services, r.warnings)
            for r in ctx.results]


def result_of(ctx: Context, name: str) -> StepResult:
    return next(r for r in ctx.results if r.name == name)


def applied_root(tmp_path) -> str:
    root = str(tmp_path / "root")
    engine.execute(Context(spec_of(), Host(root, run_id="first")))
    return root


# -- the protocol ----------------------------------------------------------------------------
def test_every_step_returns_the_typed_result(tmp_path):
    ctx = Context(spec_of(), Host(str(tmp_path / "root"), run_id="r1"))
    engine.execute(ctx)
    assert [r.name for r in ctx.results] == [s.NAME for s in engine.STEPS]
    for r in ctx.results:
        assert isinstance(r, StepResult) and isinstance(r.services, frozenset)
        json.dumps(r.undo)  # plain data, for a journal
        assert set(r.as_dict()) <= {"name", "changed", "ok", "detail", "duration_s",
                                    "warnings", "diff", "services"}
    by_name = {r.name: r for r in ctx.results}
    assert {"postfix", "dovecot", "opendkim"} <= by_name["files"].services
    assert by_name["files"].undo and all(r.undo is None for r in ctx.results
                                         if r.name != "files")
    assert ctx.tls_pair and ctx.dkim_txt.startswith("v=DKIM1;")


def test_plan_writes_nothing_and_decides_what_apply_does(tmp_path):
    root = tmp_path / "root"
    (root / "etc/postfix").mkdir(parents=True)
    (root / "etc/postfix/main.cf").write_text("# old\n")
    before = tree(root)
    plan = Context(spec_of(), Host(str(root), dry_run=True, run_id="p"))
    engine.execute(plan)
    assert tree(root) == before
    assert all(r.undo is None for r in plan.results)
    applied = Context(spec_of(), Host(str(root), run_id="a"))
    engine.execute(applied)
    assert decisions(plan) == decisions(applied)
    assert "-# old" in result_of(plan, "files").diff and tree(root) != before


# -- the steps that act on a live host, with its commands faked --------------------------------
READ_ONLY = (("dpkg-query",), ("systemctl", "is-active"), ("systemctl", "is-enabled"),
             ("nft", "list"), ("ss",), ("journalctl",), ("/usr/lib/postfix/sbin/master", "-t"))


def read_only(argv) -> bool:
    return any(argv[:len(r)] == list(r) for r in READ_ONLY)


PORTS = "".join(f"LISTEN 0 100 0.0.0.0:{p} 0.0.0.0:*\n" for p in (25, 465, 587, 993))


class FakeLiveHost(Host):
    """Looks like "/" to the steps; paths go to a temp dir, commands are recorded and
    answered from ``answers`` {argv prefix: (returncode, stdout, stderr)}."""

    def __init__(self, tmp_path, answers, dry_run=False):
        super().__init__(root=str(tmp_path), dry_run=dry_run)
        self.answers, self.ran = answers, []

    @property
    def live(self):
        return True

    def run(self, argv, *, check=True, **kw):
        self.ran.append(list(argv))
        rc, out, err = next((v for k, v in self.answers.items() if tuple(argv[:len(k)]) == k),
                            (0, "", ""))
        if check and rc:
            raise subprocess.CalledProcessError(rc, argv, out, err)
        return subprocess.CompletedProcess(argv, rc, out, err)


ANSWERS = {
    ("dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\n"): (0, "postfix ii \n", ""),
    ("systemctl", "is-active", "--quiet", "unbound"): (3, "", ""),
    ("ss", "-Hltn"): (0, PORTS, ""),
}


@pytest.mark.parametrize("step", [packages, commands, services], ids=lambda s: s.NAME)
def test_live_step_plan_only_reads_and_decides_like_apply(tmp_path, step):
    (tmp_path / "usr/sbin").mkdir(parents=True)  # where packages puts policy-rc.d
    earlier = [StepResult("files", changed=True,
                          services=frozenset({"postfix", "hostname", "newaliases"}))]
    results, hosts = [], []
    for dry_run in (True, False):
        host = FakeLiveHost(tmp_path, ANSWERS, dry_run=dry_run)
        results.append(step.apply(Context(spec_of(), host, results=list(earlier))))
        hosts.append(host)
    plan, applied = results
    assert (plan.changed, plan.detail) == (applied.changed, applied.detail) and plan.changed
    assert all(read_only(a) for a in hosts[0].ran), hosts[0].ran
    assert any(not read_only(a) for a in hosts[1].ran), "apply carried out nothing"
    assert not os.path.exists(tmp_path / "usr/sbin/policy-rc.d")


def test_services_decide_restarts_touched_and_starts_stopped():
    states = {s: (True, True) for s in services.UNITS}
    states["opendkim"] = (False, False)
    assert services.decide(states, frozenset({"postfix", "unbound", "hostname"})) == [
        ("unbound", "restart"), ("opendkim", "enable"), ("opendkim", "restart"),
        ("postfix", "reload")]


def test_a_failing_newaliases_is_an_agent_error_with_the_tool_output(tmp_path):
    host = FakeLiveHost(tmp_path, {("newaliases",): (75, "", "postalias: fatal: bad line")})
    with pytest.raises(CommandError, match="newaliases failed") as err:
        commands.apply(Context(spec_of(), host))
    assert "postalias: fatal: bad line" in err.value.tool_output and err.value.fix
    assert err.value.as_dict()["step"] == "commands"


# -- rollback --------------------------------------------------------------------------------
def test_a_non_agent_exception_after_the_swap_puts_the_files_back(tmp_path, monkeypatch):
    root = applied_root(tmp_path)
    before = contents(os.path.join(root, "etc"))

    def boom(ctx):
        raise RuntimeError("boom")
    monkeypatch.setattr(commands, "apply", boom)
    ctx = Context(spec_of(message_size_limit=5242880), Host(root, run_id="second"))
    with pytest.raises(UnexpectedError, match="RuntimeError: boom") as err:
        engine.execute(ctx)
    assert isinstance(err.value, AgentError) and err.value.as_dict()["step"] == "commands"
    assert contents(os.path.join(root, "etc")) == before
    assert [(r.name, r.ok) for r in ctx.results[-4:]] == [
        ("files", True), ("owners", True), ("commands", False), ("rollback", True)]
    assert result_of(ctx, "files").changed and "files: put back 1 file" in ctx.results[-1].detail
    assert not os.path.exists(os.path.join(root, "var/lib/bulletproof-mail/journal.json"))


def test_undo_data_survives_json(tmp_path):
    root = applied_root(tmp_path)
    before = contents(os.path.join(root, "etc"))
    ctx = Context(spec_of(message_size_limit=5242880), Host(root, run_id="second"))
    engine.execute(ctx)
    assert contents(os.path.join(root, "etc")) != before
    files_result = next(r for r in ctx.results if r.name == "files")
    files.undo(ctx, json.loads(json.dumps(files_result.undo)))
    assert contents(os.path.join(root, "etc")) == before


def test_an_unexpected_exception_is_reported_as_a_failed_run(tmp_path, monkeypatch, capsys):
    spec_file, _ = example.write(str(tmp_path / "spec"), _data())
    root = str(tmp_path / "root")
    assert cli.main(["apply", "--spec", spec_file, "--root", root, "--json"]) == 0
    before = contents(os.path.join(root, "etc"))
    changed = copy.deepcopy(_data())
    changed["limits"]["message_size_limit"] = 5242880
    spec_file, _ = example.write(str(tmp_path / "spec2"), changed)
    monkeypatch.setattr(commands, "apply", lambda ctx: {}["missing"])
    capsys.readouterr()
    assert cli.main(["apply", "--spec", spec_file, "--root", root, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    state = json.load(open(os.path.join(root, "var/lib/bulletproof-mail/state.json")))
    for rep in (out, state):
        assert rep["status"] == "failed" and rep["error"]["step"] == "commands"
        assert "KeyError" in rep["error"]["message"] and rep["error"]["fix"]
    assert contents(os.path.join(root, "etc")) == before


def test_accounts_decide_from_facts():
    assert accounts.decide(True, "/var/mail/vhosts/example.test", True) == []
    assert accounts.decide(False, "/var/mail/vhosts/example.test", False) == [
        "create user vmail", "create /var/mail/vhosts/example.test"]
