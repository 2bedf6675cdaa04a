"""The committed local stack config (Pulumi.local.yaml): the one reader the tests share."""
from __future__ import annotations

import pathlib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAMESPACE = "bulletproof-mail"
# What a `domains:` entry holds, by the single-domain key it is shorthand for.
_SHORTHAND = {"name": "domain", "users": "users", "aliases": "aliases", "dkim_selector": "dkim_selector",
              "dmarc_policy": "dmarc_policy", "dmarc_rua": "dmarc_rua"}


def config() -> dict:
    """Its `config:` block as written (every local domain), keys with the project namespace."""
    return yaml.safe_load((ROOT / "Pulumi.local.yaml").read_text())["config"]


def single_domain(config_block: dict | None = None) -> dict:
    """The config with only its primary domain, in the single-domain keys (domain, users,
    aliases...): what an existing one-domain stack has, and what tests that vary those keys take."""
    block = dict(config() if config_block is None else config_block)
    domains = block.pop(f"{NAMESPACE}:domains", None)
    if domains:
        for key, value in domains[0].items():
            block[f"{NAMESPACE}:{_SHORTHAND[key]}"] = value
    return block


def raw(whole: bool = False) -> dict:
    """The keys without the namespace, as components.config.load takes them: the primary domain
    in the single-domain keys, or (`whole`) every domain as written."""
    block = config() if whole else single_domain()
    return {k.split(":", 1)[1]: v for k, v in block.items()}
