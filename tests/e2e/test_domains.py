"""Several mail domains through the real engine, in file order, on one throwaway stack.

An existing one-domain stack (the single-domain keys) moves to `domains:` with the same content:
nothing changes. A second domain creates only new resources (nothing is replaced or deleted).
Removing that domain while it has a mailbox is refused at preview, with the fix in one line;
listed in drop_mailboxes, it goes (its records with it).
"""
from __future__ import annotations

import json
from collections import Counter

import pytest

from components.mailbox_guard import FIX
from tests import local_stack
from tests.e2e import stack_fixture

NS = local_stack.NAMESPACE
LOSSES = {"replace", "create-replacement", "delete-replaced", "delete", "discard"}
WHOLE = local_stack.config()          # bulletproof.test and brand.test
PRIMARY, SECOND = (d["name"] for d in WHOLE[f"{NS}:domains"])


def _config(domains: list[dict] | None = None, **extra) -> dict:
    """The local default with `domains` (None: the primary in the single-domain keys); no
    verification run (tests/e2e/test_stack.py verifies the two-domain default)."""
    block = local_stack.single_domain(WHOLE) if domains is None else {**WHOLE, f"{NS}:domains": domains}
    return {**block, f"{NS}:verify": False, **{f"{NS}:{k}": v for k, v in extra.items()}}


def _use(stack, config: dict) -> None:
    doc = stack.config()
    doc["config"] = config
    stack.write_config(doc)


def _preview(stack) -> tuple[Counter, list[dict]]:
    out = json.loads(stack.run("preview", "--json").stdout)
    return Counter(out["changeSummary"]), out.get("steps", [])


def _name(step: dict) -> str:
    return step["urn"].rsplit("::", 1)[-1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = stack_fixture.create(tmp_path_factory.mktemp("state"), _config())
    try:
        s.timed("up (one domain, single-domain keys)", "up", "--yes", "--skip-preview")
        yield s
    finally:
        stack_fixture.remove(s)
        print(f"\n[e2e] domains timings (s): {json.dumps(s.timings)}")


def test_moving_to_domains_with_the_same_content_changes_nothing(stack):
    _use(stack, _config(WHOLE[f"{NS}:domains"][:1]))
    steps, _ = _preview(stack)
    assert set(steps) == {"same"}, steps
    stack.run("preview", "--expect-no-changes")


def test_a_second_domain_only_creates_new_resources(stack):
    _use(stack, _config(WHOLE[f"{NS}:domains"]))
    steps, detail = _preview(stack)
    assert not LOSSES & set(steps), steps
    created = {_name(s) for s in detail if s["op"] == "create"}
    assert {f"mail-dkim-key-{SECOND}", f"mail-dns-records-{SECOND}", f"mail-dns-records-{SECOND}-mx",
            f"mail-dns-records-{SECOND}-dkim", f"mail-password-carol@{SECOND}"} <= created, created
    assert not [n for n in created if n.startswith(f"mail-dns-records-{SECOND}-a")], created  # no A/AAAA
    up = stack.timed("up (a second domain)", "up", "--yes", "--skip-preview")
    summary = up.stdout.split("Resources:")[-1]
    assert "replaced" not in summary and "deleted" not in summary, summary
    outs = stack.outputs()
    assert outs["mail_domains"] == [PRIMARY, SECOND] and set(outs["dkim_txts"]) == {PRIMARY, SECOND}
    assert outs["dkim_txts"][PRIMARY] == outs["dkim_txt"] != outs["dkim_txts"][SECOND]
    assert f"{SECOND}." in outs["dns_records"] and outs["dns_records"][f"{SECOND}."]["MX"] == [f"10 {outs['fqdn']}."]


def test_removing_a_domain_with_mailboxes_is_refused_at_preview_with_the_fix(stack):
    _use(stack, _config(WHOLE[f"{NS}:domains"][:1]))
    preview = stack.run("preview", check=False)
    assert preview.returncode != 0
    lines = [line for line in (preview.stdout + preview.stderr).splitlines() if FIX in line]
    assert lines and all(SECOND in line and "1 mailbox " in line for line in lines), preview.stdout
    print(f"\n[e2e] refused: {lines[0].strip()}")


def _unprotect_dkim_key(stack, domain: str) -> None:
    """Outside `local`, a DKIM key is protected: deleting it is a deliberate step of its own."""
    resources = json.loads(stack.run("stack", "export").stdout)["deployment"]["resources"]
    (urn,) = [r["urn"] for r in resources if r["urn"].endswith(f"::mail-dkim-key-{domain}")]
    stack.run("state", "unprotect", urn, "--yes")


def test_a_domain_listed_in_drop_mailboxes_goes_with_its_records(stack):
    _unprotect_dkim_key(stack, SECOND)
    _use(stack, _config(WHOLE[f"{NS}:domains"][:1], drop_mailboxes=[SECOND]))
    steps, detail = _preview(stack)
    deleted = {_name(s) for s in detail if s["op"] == "delete"}
    assert f"mail-dns-records-{SECOND}-mx" in deleted and not [
        s for s in detail if s["op"] in LOSSES - {"delete"}], steps
    assert not [n for n in deleted if not (SECOND in n)], deleted  # the primary's resources stay
    stack.timed("up (drop the second domain)", "up", "--yes", "--skip-preview")
    outs = stack.outputs()
    assert outs["mail_domains"] == [PRIMARY] and f"{SECOND}." not in outs["dns_records"]
