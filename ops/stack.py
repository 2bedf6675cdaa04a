"""A deployed stack as the operator commands see it: its outputs (through the pulumi CLI, so the
stack's passphrase is needed as for any other command), how to reach the host, what to expect
of it, and how to read its published DNS records."""
from __future__ import annotations

import json
import pathlib
import subprocess
from dataclasses import dataclass

from components import backends
from components.verification import infra_expectations
from localcloud import naming

CHECKOUT = pathlib.Path(__file__).resolve().parents[1]


class NotDeployed(RuntimeError):
    pass


@dataclass
class Deployed:
    stack: str
    outputs: dict
    checkout: pathlib.Path = CHECKOUT

    @property
    def host(self) -> str:
        return self.outputs["host_ipv4"]

    @property
    def user(self) -> str:
        return self.outputs["ssh_target"].partition("@")[0]

    @property
    def private_key(self) -> str:
        return self.outputs["ssh_private_key"]

    @property
    def known_hosts(self) -> str:
        """The deploying machine's known_hosts of this stack (the one the deploy uses)."""
        return str(naming.known_hosts(naming.stack_names(self.stack, self.checkout)))

    @property
    def expectations(self) -> dict:
        o = self.outputs
        return infra_expectations(o["domain"], o["fqdn"], o["mail_users"], o["dkim_txt"],
                                  domains=self.domains or None)

    @property
    def domains(self) -> list[dict]:
        """Per mail domain, the primary first: {name, selector, dkim_txt, users, catch_all,
        dns_backend, dns_server, dns_zone}; [] for a stack deployed before there were several."""
        o = self.outputs
        settings, txts = o.get("domain_settings") or {}, o.get("dkim_txts") or {}
        # (mail_domains holds the order: an output's mapping comes back sorted by key)
        return [{"name": name, "selector": s["dkim_selector"], "dkim_txt": txts.get(name),
                 "users": [u for u in o["mail_users"] if u.rpartition("@")[2] == name],
                 "catch_all": s.get("catch_all"), "dns_backend": s["dns_backend"],
                 "dns_server": s["dns_server"], "dns_zone": s["dns_zone"]}
                for name in o.get("mail_domains") or list(settings) if (s := settings.get(name))]

    def dns_lookup(self, domain: dict | None = None):
        """(name, rtype) -> [values] of the published records, from the stack's DNS backend, or
        from where `domain` (one of `domains`) has its records."""
        outs = self.outputs if domain is None else {
            **self.outputs, "domain": domain["name"], "dns_backend": domain["dns_backend"],
            "dns_server": domain["dns_server"], "dns_zone": domain["dns_zone"]}
        name = outs.get("dns_backend") or (
            "cloudflare" if outs["dns_server"].startswith("cloudflare:") else "rfc2136")
        return backends.dns(name).lookup(outs)


def outputs(stack: str) -> dict:
    out = subprocess.run(["pulumi", "--non-interactive", "stack", "output", "--json", "--show-secrets",
                          "--stack", stack], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def load(stack: str) -> Deployed:
    found = outputs(stack)
    if "host_ipv4" not in found:
        raise NotDeployed(f"stack {stack} has no deployed host (run `make up` first)")
    return Deployed(stack, found)
