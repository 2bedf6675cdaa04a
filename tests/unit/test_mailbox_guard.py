"""MailboxGuard's check: a domain that had mailboxes is never dropped unasked, at preview."""
import pytest

from components.mailbox_guard import FIX, _MailboxGuardProvider, removal_problems

OLD = {"domains": {"a.test": ["alice@a.test", "bob@a.test"], "b.test": ["carol@b.test"]},
       "drop": [], "renamed": {}}


def _check(news, olds=OLD):
    return _MailboxGuardProvider().check(olds, news).failures


def test_removing_a_domain_with_mailboxes_is_refused_with_the_fix_in_one_line():
    (failure,) = _check({"domains": {"a.test": ["alice@a.test", "bob@a.test"]}, "drop": [], "renamed": {}})
    assert "\n" not in failure.reason
    assert "b.test" in failure.reason and "1 mailbox " in failure.reason and FIX in failure.reason


def test_the_count_names_every_mailbox_of_the_domain():
    (line,) = removal_problems(OLD, {"domains": {"b.test": ["carol@b.test"]}})
    assert "a.test would stop serving its 2 mailboxes (alice@a.test, bob@a.test)" in line


def test_a_rename_passes():
    assert _check({"domains": {"a.test": ["alice@a.test", "bob@a.test"], "c.test": ["carol@c.test"]},
                   "drop": [], "renamed": {"c.test": "b.test"}}) == []


def test_a_listed_drop_passes():
    assert _check({"domains": {"a.test": ["alice@a.test", "bob@a.test"]}, "drop": ["b.test"],
                   "renamed": {}}) == []


@pytest.mark.parametrize("olds", [{}, {"domains": {"a.test": [], "b.test": []}}],
                         ids=["first-deploy", "domains-without-mailboxes"])
def test_nothing_to_lose_passes(olds):
    assert _check({"domains": {"c.test": ["x@c.test"]}, "drop": [], "renamed": {}}, olds) == []


def test_a_new_mailbox_list_is_an_update_never_a_replacement():
    diff = _MailboxGuardProvider().diff("mailboxes", OLD, {**OLD, "domains": {**OLD["domains"], "c.test": ["d@c.test"]}})
    assert diff.changes and not diff.replaces
    assert not _MailboxGuardProvider().diff("mailboxes", OLD, dict(OLD)).changes
