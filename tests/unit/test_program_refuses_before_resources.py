"""The Pulumi program itself (__main__.py, under mocks, as at `pulumi preview`): values the agent
used to refuse only on the host, after the bridge, DNS server, proxy and sink existed, now stop
the program before it declares any resource."""
import json
import runpy

import pulumi
import pytest

from tests import local_stack
from tests.unit.cloud_mocks import ROOT, Mocks

D = "bulletproof.test"


def run_program(raw: dict) -> tuple[object, list]:
    """(exit code or None, the resources declared) of __main__.py with `raw` as its config."""
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project="bulletproof-mail", stack="prod", preview=True)
    pulumi.runtime.set_all_config({f"bulletproof-mail:{k}": v if isinstance(v, str) else json.dumps(v)
                                   for k, v in raw.items()})

    @pulumi.runtime.test
    def program():
        runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")

    try:
        program()
        return None, mocks.resources
    except SystemExit as stop:
        return stop.code, mocks.resources
    finally:
        pulumi.runtime.set_all_config({})


@pytest.mark.parametrize("changes, key", [
    ({"users": [f"a..b@{D}"]}, "users[0].address"),
    ({"users": [f"a.@{D}"]}, "users[0].address"),
    ({"domain": "a" * 250 + ".test", "users": ["alice@" + "a" * 250 + ".test"]}, "domain"),
    ({"dnsbl_sites": [{"site": "dnsbl.test", "weight": 0}]}, "dnsbl_sites[0].weight"),
    ({"users": [f"alice@{D}", f"postmaster@{D}"]}, "users[1].address"),
], ids=["double-dot", "trailing-dot", "domain-over-253", "dnsbl-weight-0", "postmaster-as-user"])
def test_a_value_the_agent_refuses_stops_the_program_before_any_resource(changes, key, caplog):
    code, resources = run_program({**local_stack.raw(), **changes})
    assert (code, resources) == (32, [])
    assert [r.getMessage().split(": ")[0] for r in caplog.records if r.levelname == "ERROR"] == [key]


def test_the_committed_config_declares_the_resources():
    """The control: the same harness with a valid config does declare them."""
    code, resources = run_program(local_stack.raw())
    assert code is None and ("bulletproof:mail:MailServer", "mail") in [r[:2] for r in resources]
