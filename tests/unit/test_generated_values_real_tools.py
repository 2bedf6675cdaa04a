"""A handful of generated values that the spec loader accepts (fixed seed), rendered, staged and
read by the real tools installed here: postconf, postfix check, doveconf, opendkim,
unbound-checkconf, nft (agent/validate.py, as the agent runs them before anything goes live),
and postmap/postalias, whose dump of each map must be exactly the entries the spec means."""
import copy
import functools
import os
import shutil
import subprocess
import tempfile

from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from agent import example, files, keys, render, validate
from agent.spec import SpecError, load
from tests.unit import rendered_files
from tests.unit.test_validation_properties import LABEL, USER, ZONE

FEW = settings(derandomize=True, database=None, max_examples=5, deadline=None, phases=[Phase.generate],
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@functools.lru_cache(maxsize=1)
def _base() -> dict:
    return example.example(dkim_pem=example.dkim_key(1024))


@functools.lru_cache(maxsize=1)
def _tls() -> tuple:
    return keys.self_signed("mail.example.test")


@st.composite
def accepted_specs(draw) -> dict:
    """Valid by construction: long and unusual but accepted names."""
    data = copy.deepcopy(_base())
    domain = draw(st.builds(lambda a, b: f"{a}.{b}.test", LABEL, ZONE))
    data.update(domain=domain, hostname=f"{draw(LABEL)}.{domain}")
    locals_ = draw(st.lists(USER, min_size=2, max_size=2, unique=True))
    for u, local in zip(data["users"], locals_):
        u["address"] = f"{local}@{domain}"
    users = [u["address"] for u in data["users"]]
    team = f"team-{draw(LABEL)}@{domain}"
    data["aliases"] = {team: users + [f"{draw(USER)}@{draw(ZONE)}"],
                       f"info@{domain}": [team, f"{locals_[0]}+info@{domain}"],
                       f"postmaster@{domain}": [users[1]]}
    data["dkim"]["selector"] = draw(LABEL)
    data["postscreen"]["dnsbl_sites"] = [{"zone": draw(ZONE), "weight": 2, "filter": "127.0.0.[2..11]"}]
    return data


def postmap_dump(kind: str, path: str, tool: str = "postmap") -> dict[str, str]:
    out = subprocess.run([tool, "-s", f"{kind}:{path}"], capture_output=True, text=True, check=True)
    assert "warning" not in out.stderr, out.stderr
    return dict(line.split("\t", 1) for line in out.stdout.splitlines())


def postalias_query(stage: str, name: str) -> str:
    """What local delivery finds for `name` in the alias database newaliases built."""
    out = subprocess.run(["postalias", "-c", f"{stage}/etc/postfix", "-q", name,
                          f"hash:{stage}/etc/aliases"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_accepted_generated_values_render_to_files_the_real_tools_accept_and_read_back():
    checked = []

    @FEW
    @given(accepted_specs())
    def prop(data):
        try:
            spec = load(data)
        except SpecError:
            assume(False)
        stage, queue = tempfile.mkdtemp(prefix="bpm-stage-"), tempfile.mkdtemp(prefix="bpm-q-")
        try:
            os.chmod(queue, 0o755)
            files.stage(stage, render.render(spec, _tls(), prefix=stage, queue_dir=queue),
                        render.targets(spec))
            assert validate.validate(stage) == []   # every tool ran and accepted its file
            pf = f"{stage}/etc/postfix"
            assert postmap_dump("texthash", f"{pf}/virtual_mailboxes") == {
                u.address: f"{spec.domain}/{u.local_part}/" for u in spec.users}
            # Each alias reaches its targets: ours directly, the others through the second
            # pass's map (forward_targets), never to an address of ours there.
            fwd = postmap_dump("texthash", f"{pf}/forward_targets")
            assert {a: ", ".join(fwd.get(t, t) for t in v.split(", ")) for a, v in
                    postmap_dump("texthash", f"{pf}/virtual_aliases").items()} == {
                a: ", ".join(t) for a, t in spec.aliases}
            assert all(k.endswith("@forward.invalid") and v.rpartition("@")[2] not in spec.domain_names
                       for k, v in fwd.items())
            assert postmap_dump("texthash", f"{pf}/sender_login") == dict(
                rendered_files.expected_sender_login(spec))
            # /etc/aliases as newaliases builds it: two local names, addresses only.
            subprocess.run(["postalias", "-c", pf, f"hash:{stage}/etc/aliases"], check=True)
            assert [postalias_query(stage, name) for name in ("postmaster", "root")] == [
                "root", ", ".join(dict(spec.aliases)[f"postmaster@{spec.domain}"])]
        finally:
            shutil.rmtree(stage, ignore_errors=True)
            shutil.rmtree(queue, ignore_errors=True)
        checked.append(spec.domain)

    prop()
    assert len(checked) >= 5, checked
