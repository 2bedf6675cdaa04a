"""Property tests: the config loader and the agent's spec loader are fed arbitrary strings (in
user addresses, the domain, alias keys and targets, the selector, rua, DNSBL zones...).
Whatever they refuse is refused with one line per problem that names its key; whatever they
accept renders to files with one entry per line and exactly the fields expected
(tests/unit/rendered_files.py), a spec the agent accepts too, and a DMARC record with exactly
the tags configured.

Fixed seed (derandomize) and bounded examples: the same cases on every run, in seconds.
"""
import copy
import functools
import re
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import contract, example, render
from agent.spec import SpecError, load, merge
from components import agent_spec, config
from components.dns.records import dmarc_txt
from policies.rules import dmarc_tags as policy_dmarc_tags
from tests import local_stack
from tests.unit import rendered_files

BOUNDED = settings(derandomize=True, database=None, max_examples=200, deadline=2000,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
# Enough valid characters that many strings are accepted, and the ones that break files:
# line ends, separators of the maps and records, aliases(5) syntax, quotes, non-ASCII.
ALPHABET = string.ascii_lowercase[:6] + "09.-_+=@" + "\n\r\t :;,|/\"'#\\A\x00é\u2028"
DOMAIN = "bulletproof.test"


def noisy(valid: st.SearchStrategy) -> st.SearchStrategy:
    """An arbitrary string, or a valid value with arbitrary text around it or after it."""
    junk = st.text(ALPHABET, max_size=12)
    return st.one_of(junk, st.builds(lambda a, v, b: a + v + b, junk, valid, junk),
                     st.builds(lambda v, b: v + b, valid, st.sampled_from(["\n", "\r\n", " ", ";", ","])))


def _dot_atoms(chars: str, atoms: int) -> st.SearchStrategy:
    return st.lists(st.text(chars, min_size=1, max_size=6), min_size=1, max_size=atoms).map(".".join)


LABEL = st.builds(lambda a, m, b: a + m + b, st.sampled_from("abc09"), st.text("ab0-", max_size=5),
                  st.sampled_from("xyz8"))
USER = st.one_of(st.sampled_from(["alice", "bob"]), _dot_atoms("abz09_+=-", 3))
LOCAL = st.one_of(USER, st.sampled_from(["info", "postmaster", "abuse"]))
WEIGHT = st.sampled_from([1, 2, 3, -1, 0])   # 0 is refused; negative: an allowlist
ZONE = st.builds(lambda a, b: f"{a}.{b}", LABEL, LABEL)


def ours(domain: str) -> st.SearchStrategy:
    return st.builds(lambda l: f"{l}@{domain}", LOCAL)


def address(domain: str, mailboxes=()) -> st.SearchStrategy:
    """An address of ours (a mailbox, a role, any name) or one elsewhere."""
    return st.one_of(ours(domain),
                     st.builds(lambda l, z: f"{l}@{z}", LOCAL, ZONE),
                     *([st.sampled_from(list(mailboxes))] if mailboxes else []))


class Fields:
    """Draws each field valid, or arbitrary for the few fields chosen to be corrupted: many
    draws are accepted, the others each probe one or two fields."""

    def __init__(self, draw, names):
        self.draw = draw
        self.corrupt = draw(st.sets(st.sampled_from(names), max_size=2))

    def __call__(self, name: str, valid: st.SearchStrategy):
        return self.draw(noisy(valid) if name in self.corrupt else valid)


CONFIG_FIELDS = ("domain", "hostname", "user", "alias_key", "alias_target", "selector", "policy",
                 "rua", "dnsbl")


@st.composite
def stack_configs(draw) -> dict:
    f = Fields(draw, CONFIG_FIELDS)
    domain = f("domain", st.just(DOMAIN))
    users = [f"{f('user', st.just(local))}@{domain}" for local in draw(st.lists(USER, min_size=1, max_size=3, unique=True))]
    aliases = {f("alias_key", ours(domain)): [f("alias_target", address(domain, users))
                                                 for _ in range(draw(st.integers(1, 2)))]
               for _ in range(draw(st.integers(0, 3)))}
    return {**local_stack.raw(), "domain": domain, "hostname": f("hostname", LABEL),
            "users": [{"address": u} for u in users], "aliases": aliases,
            "dkim_selector": f("selector", LABEL),
            "dmarc_policy": f("policy", st.sampled_from(config.DMARC_POLICIES)),
            "dmarc_rua": draw(st.one_of(st.none(), st.just(f("rua", address("example.no"))))),
            "dnsbl_sites": [{"site": f("dnsbl", ZONE), "weight": draw(WEIGHT)}
                            for _ in range(draw(st.integers(0, 2)))]}


_KEY = re.compile(r"([a-z_]+)")


def _refusals_name_keys(errors: list[str]) -> None:
    known = {k.name for k in config.all_keys()}
    for line in errors:
        assert "\n" not in line and "\r" not in line, line
        assert _KEY.match(line) and _KEY.match(line).group(1) in known, line


def test_whatever_the_config_loader_accepts_renders_to_files_that_mean_it():
    accepted = []

    @BOUNDED
    @given(stack_configs())
    def prop(raw):
        try:
            cfg = config.load(raw, "prod")
        except config.ConfigError as err:
            _refusals_name_keys(err.errors)
            return
        public = agent_spec.public_spec(cfg, "192.0.2.1", None, ["192.0.2.53@53"])
        secrets = agent_spec.secrets({u.address: _hash() for u in cfg.users}, rendered_files.TLS[1])
        spec = load(merge(public, secrets))   # nothing the stack accepts is refused on the host
        rendered_files.check(spec, render.render(spec, rendered_files.TLS))
        txt = dmarc_txt(cfg.dmarc_policy, cfg.dmarc_rua)
        expected = [("v", "DMARC1"), ("p", cfg.dmarc_policy)] + (
            [("rua", f"mailto:{cfg.dmarc_rua}")] if cfg.dmarc_rua else [])
        assert rendered_files.dmarc_tags(txt) == expected
        assert policy_dmarc_tags(txt) == dict(expected)   # what the policy pack reads
        accepted.append(cfg)

    prop()
    # The property held on accepted configs, not only on refusals.
    assert len(accepted) >= 30, len(accepted)


@functools.lru_cache(maxsize=1)
def _base_spec() -> dict:
    return example.example(dkim_pem=rendered_files.TLS[1])


@functools.lru_cache(maxsize=1)
def _hash() -> str:
    return _base_spec()["users"][0]["password_hash"]


SPEC_FIELDS = ("domain", "hostname", "user", "hash", "alias_key", "alias_target", "selector",
               "zone", "filter")


@st.composite
def specs(draw) -> dict:
    data = copy.deepcopy(_base_spec())
    f = Fields(draw, SPEC_FIELDS)
    domain = data["domain"] = f("domain", st.just("example.test"))
    data["hostname"] = f("hostname", st.builds(lambda l: f"{l}.{domain}", LABEL))
    for u, local in zip(data["users"], draw(st.lists(USER, min_size=2, max_size=2, unique=True))):
        u["address"] = f"{f('user', st.just(local))}@{domain}"
        u["password_hash"] = f("hash", st.just(u["password_hash"]))
    users = [u["address"] for u in data["users"]]
    data["aliases"] = {f("alias_key", ours(domain)): [f("alias_target", address(domain, users))
                                                         for _ in range(draw(st.integers(1, 2)))]
                       for _ in range(draw(st.integers(0, 3)))}
    data["dkim"]["selector"] = f("selector", LABEL)
    data["postscreen"]["dnsbl_sites"] = [
        {"zone": f("zone", ZONE), "weight": draw(WEIGHT),
         **({"filter": f("filter", st.sampled_from(["127.0.0.2", "127.0.0.[2..11]", "127.0.0.[2;4]"]))}
            if draw(st.booleans()) else {})}
        for _ in range(draw(st.integers(0, 2)))]
    return data


def test_whatever_the_spec_loader_accepts_renders_to_files_that_mean_it():
    accepted = []

    @BOUNDED
    @given(specs())
    def prop(data):
        try:
            spec = load(data)
        except SpecError as err:
            for line in err.errors:
                assert "\n" not in line and "\r" not in line, line
            return
        rendered_files.check(spec, render.render(spec, rendered_files.TLS))
        accepted.append(spec)

    prop()
    assert len(accepted) >= 30, len(accepted)
