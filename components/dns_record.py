"""DNS records managed by RFC 2136 UPDATE with TSIG, as a Pulumi dynamic provider over the
plain client in localcloud/rfc2136.py.

Dynamic providers are pickled into the state by reference
(`components.dns_record.DnsRecordProvider`): the class's module and name are part of every
stack's state (refresh and delete load it from there), so they never move. Editing the class
does not show up as a diff on every record; the provider process imports it from the project
root (its cwd). Keep the module free of import-time side effects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import dns.exception
import pulumi
import pulumi.dynamic

from localcloud.rfc2136 import (SUPPORTED_TYPES, DnsRecordError, DnsServerUnreachable, Tsig, delete,
                                fqdn, normalise, read, upsert)

# Changing one of these addresses a different RRset, so the old one must go: replace.
REPLACE_KEYS = ("zone", "name", "type")
UPDATE_KEYS = ("values", "ttl", "server", "port", "tsig_name", "tsig_algorithm", "tsig_secret",
               "forget_when_unreachable")


def record_diff(olds: dict, news: dict) -> tuple[list[str], list[str]]:
    """(changed keys, keys forcing a replacement) between stored outputs and new inputs."""
    def same(key: str) -> bool:
        old, new = olds.get(key), news.get(key)
        try:
            if key == "values":
                return normalise(news["type"], old or []) == normalise(news["type"], new or [])
            if key == "name":
                return fqdn(olds["zone"], old) == fqdn(news["zone"], new)
            if key in ("zone", "type"):
                return str(old).rstrip(".").lower() == str(new).rstrip(".").lower()
            if key in ("ttl", "port"):
                return int(old) == int(new)
            if key == "forget_when_unreachable":  # a state from before the flag: read forgot
                return bool(olds.get(key, True)) == bool(news.get(key, True))
        except (ValueError, TypeError, KeyError, DnsRecordError, dns.exception.DNSException):
            pass  # unknown during preview, or unparsable: compare as given
        return old == new

    changed = [k for k in REPLACE_KEYS + UPDATE_KEYS if not same(k)]
    return changed, [k for k in changed if k in REPLACE_KEYS]


class DnsRecordProvider(pulumi.dynamic.ResourceProvider):
    """CRUD for one RRset. Small on purpose: it is what the state records as `__provider`."""

    # The SDK can make `__provider` a secret (True, its default; with False it still does once a
    # secret Output is captured). This class captures nothing (pickled by reference: no state,
    # no closure); every secret, the TSIG key's, is an input the engine keeps encrypted.
    serialize_as_secret_always = False

    def check(self, _olds, news):
        from pulumi.runtime import rpc  # preview passes values not known yet as this marker

        failures = []
        rtype, values = news.get("type"), news.get("values")
        if rtype == rpc.UNKNOWN:
            return pulumi.dynamic.CheckResult(news, failures)
        if str(rtype).upper() not in SUPPORTED_TYPES:
            failures.append(pulumi.dynamic.CheckFailure("type", f"use one of {SUPPORTED_TYPES}"))
        elif values != rpc.UNKNOWN and all(
                isinstance(v, (str, list, tuple)) and v != rpc.UNKNOWN for v in (values or [])):
            try:
                if not values:
                    raise DnsRecordError("at least one value is needed")
                normalise(rtype, values)
            except (DnsRecordError, dns.exception.DNSException, ValueError) as err:
                failures.append(pulumi.dynamic.CheckFailure("values", f"{rtype}: {err}"))
        return pulumi.dynamic.CheckResult(news, failures)

    def create(self, props):
        outs = self._write(props)
        return pulumi.dynamic.CreateResult(f"{outs['fqdn']}/{outs['type']}", outs)

    def update(self, _id, _olds, news):
        return pulumi.dynamic.UpdateResult(self._write(news))

    def delete(self, _id, props):
        try:
            delete(props["server"], props["port"], _tsig(props), props["zone"], props["name"],
                   props["type"])
        except DnsRecordError:
            # The local server no longer serves the zone (a mail domain removed from the
            # stack): its records went with it. Anywhere else a refusal stays an error.
            if not props.get("forget_when_unreachable") or _serves(props):
                raise

    def diff(self, _id, olds, news):
        changed, replaces = record_diff(olds, news)
        # Delete first: a name holds one RRset per type and a CNAME cannot sit beside others.
        return pulumi.dynamic.DiffResult(changes=bool(changed), replaces=replaces,
                                         delete_before_replace=True)

    def read(self, id_, props):
        try:
            live = read(props["server"], props["port"], props["zone"], props["name"], props["type"])
        except DnsServerUnreachable as err:
            # The local server is gone after a reboot: the record went with it. Safe to forget,
            # since create is an idempotent upsert; `up` restarts the server, then re-creates.
            # Anywhere else the server is only out of reach (a network blip): refresh must fail,
            # not drop the record. (A state written before this flag existed: as before.)
            if not props.get("forget_when_unreachable", True):
                raise DnsRecordError(f"refresh of {id_ or props['name']}: {err}; the record stays "
                                     "in the state, retry once the server answers") from err
            live = None
        if live is None:  # gone: refresh drops it from the state and the next `up` re-creates it
            return pulumi.dynamic.ReadResult("", {})
        values, ttl = live
        # The TSIG secret stays in the outputs (delete needs it); the engine keeps it secret.
        return pulumi.dynamic.ReadResult(id_, {**props, "values": values, "ttl": ttl})

    def _write(self, props):
        upsert(props["server"], props["port"], _tsig(props), props["zone"], props["name"],
               props["type"], props["values"], props["ttl"])
        return {**props, "type": props["type"].upper(),
                "values": normalise(props["type"], props["values"]),
                "fqdn": fqdn(props["zone"], props["name"]).to_text()}


def _serves(props: dict) -> bool:
    try:
        return read(props["server"], props["port"], props["zone"], "@", "SOA") is not None
    except (DnsRecordError, DnsServerUnreachable, dns.exception.DNSException):
        return False


def _tsig(props: dict) -> Tsig:
    return Tsig(props["tsig_name"], props["tsig_algorithm"], props["tsig_secret"])


@dataclass
class DnsRecordArgs:
    server: pulumi.Input[str]
    port: pulumi.Input[int]
    zone: pulumi.Input[str]
    name: pulumi.Input[str]  # relative to the zone; "@" for the apex
    type: pulumi.Input[str]
    values: pulumi.Input[Sequence[pulumi.Input[str]]]
    tsig_name: pulumi.Input[str]
    tsig_secret: pulumi.Input[str]
    tsig_algorithm: pulumi.Input[str] = "hmac-sha256"
    ttl: pulumi.Input[int] = 300
    # Only for a server that loses its records when it stops (the local stack's): refresh then
    # forgets a record it cannot read, and `up` re-creates it.
    forget_when_unreachable: pulumi.Input[bool] = False


class DnsRecord(pulumi.dynamic.Resource, module="rfc2136", name="DnsRecord"):
    """One RRset on an RFC 2136 server; `pulumi refresh` reads it back from the server."""

    fqdn: pulumi.Output[str]
    values: pulumi.Output[list]
    ttl: pulumi.Output[int]

    def __init__(self, resource_name: str, args: DnsRecordArgs,
                 opts: Optional[pulumi.ResourceOptions] = None) -> None:
        props = {
            "server": args.server, "port": args.port, "zone": args.zone, "name": args.name,
            "type": args.type, "values": args.values, "ttl": args.ttl,
            "tsig_name": args.tsig_name, "tsig_algorithm": args.tsig_algorithm,
            "tsig_secret": pulumi.Output.secret(args.tsig_secret),
            "forget_when_unreachable": args.forget_when_unreachable,
            "fqdn": None,  # computed by the provider
        }
        # The provider cannot handle secrets itself; this keeps the output copy encrypted too.
        secret_opts = pulumi.ResourceOptions(additional_secret_outputs=["tsig_secret"])
        super().__init__(DnsRecordProvider(), resource_name, props,
                         pulumi.ResourceOptions.merge(opts, secret_opts))
