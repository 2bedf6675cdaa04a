"""The committed local stack config (Pulumi.local.yaml): the one reader the tests share."""
from __future__ import annotations

import pathlib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAMESPACE = "bulletproof-mail"


def config() -> dict:
    """Its `config:` block as written, keys with the project namespace."""
    return yaml.safe_load((ROOT / "Pulumi.local.yaml").read_text())["config"]


def raw() -> dict:
    """The keys without the namespace, as components.config.load takes them."""
    return {k.split(":", 1)[1]: v for k, v in config().items()}
