"""Several domains on one host (spec `domains`, `mailbox_moves`, secrets `dkim_keys`, `srs_secret`):
the spec's rules, the files the real Postfix and OpenDKIM tools accept and read back, and the move
of a renamed domain's mailboxes."""
import copy
import functools
import os
import shutil
import subprocess
import tempfile

import pytest

from agent import example, files, keys, mailbox_moves, render, validate
from agent.contract import MAIL_DIR
from agent.errors import MigrationError
from agent.host import Host
from agent.spec import SpecError, load, merge, split, to_dict
from agent.step import Context
from tests.unit import rendered_files

SRS = "c3JzLXNlY3JldC1mb3ItdGVzdHMtb25seQ"


@functools.lru_cache(maxsize=1)
def _keys() -> tuple[str, str]:
    return example.dkim_key(1024), example.dkim_key(1024)


def two_domains(**changes) -> dict:
    primary_key, brand_key = _keys()
    data = example.example(dkim_pem=primary_key)
    data["users"].append({**data["users"][0], "address": "carol@brand.test"})
    data["aliases"].update({"hello@brand.test": ["carol@brand.test", "alice@example.test"],
                            "fwd@brand.test": ["someone@elsewhere.test"]})
    data["domains"] = [{"name": "example.test", "dkim_selector": "s1", "catch_all": None},
                       {"name": "brand.test", "dkim_selector": "b1", "catch_all": "carol@brand.test",
                        "private_key_pem": brand_key}]
    data["srs_secret"] = SRS
    data.update(changes)
    return data


def errors(data) -> list[str]:
    with pytest.raises(SpecError) as err:
        load(data)
    return err.value.errors


def test_a_spec_of_two_domains_splits_into_the_readable_part_and_secrets_and_back():
    spec = load(two_domains())
    assert spec.domain_names == ("example.test", "brand.test")
    assert spec.domains[1].catch_all == "carol@brand.test"
    public, secrets = split(to_dict(spec))
    assert "private_key_pem" not in str(public) and SRS not in str(public)
    assert set(secrets["dkim_keys"]) == {"brand.test"} and secrets["srs_secret"] == SRS
    assert load(merge(public, secrets)) == spec


def test_a_one_domain_spec_reads_as_it_always_has():
    data = example.example(dkim_pem=_keys()[0])
    spec = load(data)
    assert [m.name for m in spec.domains] == ["example.test"]
    assert "domains" not in to_dict(spec) and "mailbox_moves" not in to_dict(spec)


@pytest.mark.parametrize("change, expected", [
    ({"users": [{"address": "dave@elsewhere.test", "password_hash": "{SHA512-CRYPT}$6$x$y", "quota_mb": 1}]},
     "users[0].address: not an address in one of the domains example.test, brand.test"),
    ({"aliases": {"hello@brand.test": ["nobody@brand.test"]}},
     "aliases['hello@brand.test'][0]: 'nobody@brand.test' is neither a mailbox nor an alias of brand.test"),
    ({"mailbox_moves": [{"from": "brand.test", "to": "example.test"}]},
     "mailbox_moves[0].from: 'brand.test' must be a domain no longer served"),
    ({"mailbox_moves": [{"from": "old.test", "to": "gone.test"}]},
     "mailbox_moves[0].to: 'gone.test' is not one of the domains"),
    ({"srs_secret": "short"}, "srs_secret: expected at least 16 characters"),
])
def test_bad_values_of_several_domains_are_refused_by_path(change, expected):
    assert any(e.startswith(expected) for e in errors(two_domains(**change))), errors(two_domains(**change))


def test_the_first_domain_must_be_the_primary_and_every_other_needs_its_key():
    data = two_domains()
    data["domains"] = list(reversed(data["domains"]))
    assert any(e.startswith("domains[0].name: the first domain is the primary") for e in errors(data))
    data = two_domains()
    del data["domains"][1]["private_key_pem"]
    assert "domains[1].private_key_pem: required" in errors(data)
    data = two_domains()
    data["domains"][1]["catch_all"] = "ghost@example.test"
    assert any(e.startswith("domains[1].catch_all: 'ghost@example.test' is neither") for e in errors(data))


def test_secrets_for_a_domain_the_spec_does_not_have_are_refused():
    public, secrets = split(two_domains())
    secrets["dkim_keys"]["other.test"] = _keys()[1]
    with pytest.raises(SpecError, match=r"dkim_keys\['other.test'\]: given, but other.test is not"):
        merge(public, secrets)


def test_two_domains_render_to_files_the_real_tools_accept_and_read_back():
    if not shutil.which("postconf"):
        pytest.skip("Postfix's tools are not installed here")
    spec = load(two_domains())
    stage, queue = tempfile.mkdtemp(prefix="bpm-stage-"), tempfile.mkdtemp(prefix="bpm-q-")
    try:
        os.chmod(queue, 0o755)
        rendered = render.render(spec, keys.self_signed("mail.example.test"), prefix=stage, queue_dir=queue)
        files.stage(stage, rendered, render.targets(spec))
        assert validate.validate(stage) == []
        rendered_files.check(spec, render.render(spec, keys.self_signed("mail.example.test")))
        pf = f"{stage}/etc/postfix"

        def query(table: str, key: str) -> str:
            out = subprocess.run(["postmap", "-c", pf, "-q", key, f"texthash:{pf}/{table}"],
                                 capture_output=True, text=True)
            return out.stdout.strip()
        # The outside target is reached only through the second pass; the catch-all takes the
        # unknown names of its domain, and every mailbox of it keeps its own mail.
        fwd = query("virtual_aliases", "fwd@brand.test")
        assert fwd.endswith("@forward.invalid") and query("forward_targets", fwd) == "someone@elsewhere.test"
        assert query("virtual_aliases", "@brand.test") == "carol@brand.test"
        assert query("virtual_aliases", "carol@brand.test") == "carol@brand.test"
        assert query("virtual_aliases", "@example.test") == ""
        assert query("transport", "forward.invalid") == "srs-forward:[127.0.0.1]:10026"
        main = subprocess.run(["postconf", "-c", pf, "-h", "virtual_mailbox_domains",
                               "recipient_canonical_maps"], capture_output=True, text=True, check=True)
        assert main.stdout.split("\n")[:2] == ["example.test, brand.test", "tcp:127.0.0.1:10002"]
        master = subprocess.run(["postconf", "-c", pf, "-P", "srs-cleanup/unix/sender_canonical_maps",
                                 "127.0.0.1:10026/inet/cleanup_service_name",
                                 "127.0.0.1:10026/inet/milter_macro_daemon_name"],
                                capture_output=True, text=True, check=True)
        assert set(master.stdout.strip().split("\n")) == {
            "srs-cleanup/unix/sender_canonical_maps = tcp:127.0.0.1:10001",
            "127.0.0.1:10026/inet/cleanup_service_name = srs-cleanup",
            "127.0.0.1:10026/inet/milter_macro_daemon_name = ORIGINATING"}
        postsrsd = rendered["/etc/default/postsrsd"].decode()
        assert "SRS_DOMAIN=example.test\n" in postsrsd
        assert "SRS_EXCLUDE_DOMAINS=example.test,brand.test\n" in postsrsd
        assert rendered["/etc/postsrsd.secret"].decode() == SRS + "\n"
        secret = next(t for t in render.targets(spec) if t.path == "/etc/postsrsd.secret")
        assert (secret.mode, secret.owner) == (0o600, "root")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(queue, ignore_errors=True)


# -- a renamed domain's mailboxes ---------------------------------------------------------------

def _moving(tmp_path, make_new: bool = False):
    root = str(tmp_path / "root")
    old = f"{root}{MAIL_DIR}/old.test/carol/Maildir/cur"
    os.makedirs(old)
    with open(f"{old}/1.mail", "w") as f:
        f.write("Subject: keep me\n\nhello\n")
    if make_new:
        os.makedirs(f"{root}{MAIL_DIR}/brand.test/carol")
    spec = load(two_domains(mailbox_moves=[{"from": "old.test", "to": "brand.test"}]))
    return root, Context(spec, Host(root, run_id="move"))


def test_a_renamed_domain_s_mailboxes_move_once_and_an_undo_puts_them_back(tmp_path):
    root, ctx = _moving(tmp_path)
    plan = mailbox_moves.apply(Context(ctx.spec, Host(root, dry_run=True, run_id="plan")))
    assert plan.changed and os.path.isdir(f"{root}{MAIL_DIR}/old.test")  # plan moves nothing
    result = mailbox_moves.apply(ctx)
    assert result.changed and result.services == {"postfix", "dovecot"}
    moved = f"{root}{MAIL_DIR}/brand.test/carol/Maildir/cur/1.mail"
    assert open(moved).read().startswith("Subject: keep me")
    assert not os.path.exists(f"{root}{MAIL_DIR}/old.test")
    assert not mailbox_moves.apply(ctx).changed  # done: the next run has nothing to move
    mailbox_moves.undo(ctx, result.undo)
    assert os.path.isfile(f"{root}{MAIL_DIR}/old.test/carol/Maildir/cur/1.mail")


def test_two_mail_stores_are_never_merged(tmp_path):
    root, ctx = _moving(tmp_path, make_new=True)
    with pytest.raises(MigrationError, match="does not merge two mail stores"):
        mailbox_moves.apply(ctx)
    assert os.path.isfile(f"{root}{MAIL_DIR}/old.test/carol/Maildir/cur/1.mail")
