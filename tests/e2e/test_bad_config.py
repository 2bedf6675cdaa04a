"""Bad config fails `pulumi preview` with one clear line each, before any resource is touched."""
import json
import os
import subprocess

import pytest

from tests import local_stack
from tests.e2e import stack_fixture
from tests.e2e.pulumi_cli import ROOT


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = stack_fixture.create(tmp_path_factory.mktemp("state"))
    yield s
    stack_fixture.remove(s, deployed=False)


def _with(changes: dict) -> dict:
    config = dict(local_stack.single_domain())
    config.update({f"bulletproof-mail:{k}": v for k, v in changes.items()})
    return config


@pytest.mark.parametrize("changes, line", [
    ({"domain": "bad_domain"}, "domain: 'bad_domain' is not a domain name"),
    ({"region": "eu-west-1"}, "region: 'eu-west-1' is outside Norway and residency is \"NO\""),
    ({"backend": "nimbus"}, "backend: 'nimbus' is not a known backend"),
    ({"users": [{"address": "mallory@elsewhere.test"}]},
     "users[0].address: 'mallory@elsewhere.test' is not an address in domain 'bulletproof.test'"),
    ({"residency": False}, "residency: got the boolean False"),
], ids=["domain", "region", "backend", "user", "residency-bool"])
def test_bad_value_fails_preview_with_one_line_and_touches_nothing(stack, changes, line):
    doc = stack.config()
    doc["config"] = _with(changes)
    stack.write_config(doc)
    preview = stack.run("preview", check=False)
    text = preview.stdout + preview.stderr
    assert preview.returncode != 0
    assert sum(line in row for row in text.splitlines()) >= 1, text
    assert "Traceback" not in text
    # nothing was created: the stack has no resources at all
    exported = json.loads(stack.run("stack", "export").stdout)
    assert not exported["deployment"].get("resources"), exported


def test_non_local_stack_without_passphrase_is_refused_by_name():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_CONFIG_PASSPHRASE")}
    proc = subprocess.run(["make", "-s", "preview", "STACK=prod-oslo"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "stack 'prod-oslo' needs a secrets passphrase: set PULUMI_CONFIG_PASSPHRASE" in proc.stderr


# The findings of the security issue (#12) that reached the host before: each stops the real
# `pulumi preview` with its line, before any resource (no bridge, DNS server, proxy or sink).
@pytest.mark.parametrize("changes, line", [
    ({"aliases": {"postmaster@bulletproof.test": "|/tmp/x@bulletproof.test"}},
     "aliases['postmaster@bulletproof.test'][0]: '|/tmp/x@bulletproof.test' is not an email address"),
    ({"users": [{"address": "a..b@bulletproof.test"}]}, "users[0].address: 'a..b@bulletproof.test': 'a..b' is not a mailbox name"),
    ({"dnsbl_sites": [{"site": "dnsbl.test", "weight": 0}]}, "dnsbl_sites[0].weight: 0 would count a listing for nothing"),
    ({"dmarc_rua": "x@example.no; p=reject"}, "dmarc_rua: 'x@example.no; p=reject' is not an email address"),
], ids=["alias-pipe", "double-dot", "dnsbl-weight-0", "rua-injection"])
def test_what_the_host_refused_fails_preview_before_any_resource(stack, changes, line):
    test_bad_value_fails_preview_with_one_line_and_touches_nothing(stack, changes, line)


def test_bad_domains_fail_preview_with_one_line_each_before_any_resource(stack):
    """Issue 13's four at once: a domain listed twice, a user outside every domain, an alias to
    a mailbox that does not exist, an alias loop. One preview reports all of them."""
    doc = stack.config()
    whole = dict(local_stack.config())
    primary, brand = (dict(d) for d in whole["bulletproof-mail:domains"])
    brand.update(users=[{"address": "carol@brand.test"}, {"address": "mallory@elsewhere.test"}],
                 aliases={"hello@brand.test": ["ghost@brand.test"], "a@brand.test": ["b@brand.test"],
                          "b@brand.test": ["a@brand.test"]})
    doc["config"] = {**whole, "bulletproof-mail:domains": [primary, brand, dict(primary)]}
    stack.write_config(doc)
    preview = stack.run("preview", check=False)
    text = preview.stdout + preview.stderr
    assert preview.returncode != 0 and "Traceback" not in text
    for line in ("domains[2].name: 'bulletproof.test' is listed twice",
                 "domains[1].users[1].address: 'mallory@elsewhere.test' is not an address in domain 'brand.test'"):
        assert any(line in row for row in text.splitlines()), (line, text)
    exported = json.loads(stack.run("stack", "export").stdout)
    assert not exported["deployment"].get("resources"), exported
    # The alias rules are judged on valid users only (a bad user is reported already): with
    # mallory gone, the ghost target and the loop get their lines.
    brand["users"] = [{"address": "carol@brand.test"}]
    doc["config"] = {**whole, "bulletproof-mail:domains": [primary, brand]}
    stack.write_config(doc)
    preview = stack.run("preview", check=False)
    text = preview.stdout + preview.stderr
    assert preview.returncode != 0
    for line in ("domains[1].aliases['hello@brand.test'][0]: 'ghost@brand.test' is neither a mailbox nor an alias of brand.test",
                 "domains[1].aliases['a@brand.test']: forwards in a loop (a@brand.test -> b@brand.test -> a@brand.test)"):
        assert any(line in row for row in text.splitlines()), (line, text)
