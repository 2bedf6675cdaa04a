"""Read-only checks of a deployed mail host, safe against production.

Run:  BPM_INFRA_EXPECT=expect.json pytest tests/infra --hosts=ssh://root@mail.example.org
expect.json: {"domain": "example.org", "hostname": "mail.example.org",
              "users": ["alice@example.org"],
              "domains": [{"name": "example.org", "selector": "s1", "dkim_txt": "v=DKIM1; ...",
                           "users": ["alice@example.org"], "catch_all": null}, ...]}
(`domains`, the primary first, is optional: absent, `domain` is the only one.)
Without BPM_INFRA_EXPECT, the expectations come from the host's own last report
(/var/lib/bulletproof-mail/state.json) and spec, which still checks everything but the names.
"""
import json
import os

import pytest

SPEC = "/etc/bulletproof-mail/spec.json"


def _expect_file() -> dict | None:
    path = os.environ.get("BPM_INFRA_EXPECT")
    if not path:
        return None
    with open(path) as f:
        return json.load(f)


def pytest_generate_tests(metafunc):
    """`mail_domain`: one test per domain named in the expectations; without them, one test
    that takes every domain the host's spec lists (None)."""
    if "mail_domain" in metafunc.fixturenames:
        given = _expect_file()
        names = [d["name"] for d in (given or {}).get("domains") or []] or (
            [given["domain"]] if given else [None])
        metafunc.parametrize("mail_domain", names, ids=[n or "every-domain" for n in names])


@pytest.fixture(scope="module")
def expect(host):
    given = _expect_file()
    if given:
        return given
    state = json.loads(host.file("/var/lib/bulletproof-mail/state.json").content_string)
    return {"domain": state["domain"], "hostname": state["hostname"], "users": []}


@pytest.fixture(scope="module")
def all_domains(host, expect) -> list[dict]:
    """Per domain {name, selector, dkim_txt, users, catch_all}: the expectations, completed from
    the host's spec (what it serves) where they say nothing."""
    spec = json.loads(host.file(SPEC).content_string)
    listed = spec.get("domains") or [{"name": spec["domain"], "dkim_selector": spec["dkim"]["selector"]}]
    on_host = {d["name"]: d for d in listed}
    users = [u["address"] for u in spec.get("users", [])]
    wanted = expect.get("domains") or [{"name": expect["domain"], "users": expect.get("users") or [],
                                        "dkim_txt": expect.get("dkim_txt")}]
    out = []
    for d in wanted:
        served = on_host.get(d["name"], {})
        out.append({"name": d["name"],
                    "selector": d.get("selector") or served.get("dkim_selector") or spec["dkim"]["selector"],
                    "dkim_txt": d.get("dkim_txt"),
                    "users": d.get("users") or [u for u in users if u.rpartition("@")[2] == d["name"]],
                    "catch_all": d.get("catch_all", served.get("catch_all"))})
    if not expect.get("domains") and not _expect_file():  # nothing named: every domain on the host
        out += [{"name": n, "selector": s.get("dkim_selector", "s1"), "dkim_txt": None,
                 "users": [u for u in users if u.rpartition("@")[2] == n], "catch_all": s.get("catch_all")}
                for n, s in on_host.items() if n != expect["domain"]]
    return out


@pytest.fixture
def domains(all_domains, mail_domain) -> list[dict]:
    """The domains one parametrized test checks: the one named, or every domain (None)."""
    return [d for d in all_domains if mail_domain in (None, d["name"])]
