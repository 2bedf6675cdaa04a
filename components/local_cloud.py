"""The local "cloud" as resources: bridge, DNS server, package proxy, sink and the VPS container.

Each is a small dynamic provider over the `localcloud` package (the one owner of these
processes), with `read` telling the engine when the thing is gone, so `pulumi refresh` notices a
container or server that an earlier session left behind and `up` brings it back.

The provider classes are pickled into every stack's state by reference
(`components.local_cloud._MachineProvider`...): refresh and delete load them from there, so
their module and names never change (tests/unit/test_state_contract.py). They import inside
methods, which keeps the provider process's start cheap.
"""
from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult


def _names(props: dict[str, Any]):
    from localcloud import naming
    return naming.stack_names(props["stack"], props["checkout"])


def _replace_on(olds: dict, news: dict, keys: tuple[str, ...]) -> DiffResult:
    changed = [k for k in keys if olds.get(k) != news.get(k)]
    return DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=True)


class _BridgeProvider(ResourceProvider):
    def create(self, props):
        from localcloud import network
        bridge = network.ensure_bridge(_names(props))
        return CreateResult(id_=bridge.name, outs={**props, "gateway": str(bridge.ipv4),
                                                   "gateway6": str(bridge.ipv6)})

    def read(self, id_, props):
        from localcloud import network
        return ReadResult(id_ if network.bridge_exists(id_) else "", props)

    def diff(self, _id, olds, news):
        return _replace_on(olds, news, ("stack", "checkout"))

    def delete(self, _id, props):
        from localcloud import network
        network.remove_bridge(_names(props))


class Bridge(Resource, module="localcloud", name="Bridge"):
    """The stack's host-side bridge; `gateway`/`gateway6` are the host's addresses on it."""

    gateway: pulumi.Output[str]
    gateway6: pulumi.Output[str]

    def __init__(self, name: str, stack: str, checkout: str, opts=None):
        super().__init__(_BridgeProvider(), name, {"stack": stack, "checkout": checkout,
                                                   "gateway": None, "gateway6": None}, opts)


_DNS_OUTS = ("url", "tsig_name", "tsig_algorithm", "tsig_secret")


def _zones(props: dict, gateway_ip: str) -> list:
    from localcloud import dns
    z = props["zones"]
    return dns.local_zones(z["domain"], z["subnet"], z["subnet6"], gateway_ip,
                           extra_domains=tuple(z.get("extra_domains") or ()))


class _ServiceProvider(ResourceProvider):
    """A host-side daemon of the stack: `kind` is dns, proxy or sink."""

    def create(self, props):
        import ipaddress
        from localcloud import aptproxy, dns, sink

        names, gateway = _names(props), ipaddress.ip_interface(props["gateway"])
        state = names.runtime_dir / props["kind"]
        outs = {**props}
        if props["kind"] == "proxy":
            outs["url"] = aptproxy.start(names, gateway).url
        elif props["kind"] == "sink":
            gateway6 = props.get("gateway6")  # IPv6 too: outbound mail over IPv6 is tested
            sink.start(state, str(gateway.ip), 25, str(ipaddress.ip_interface(gateway6).ip) if gateway6 else None)
            outs["url"] = f"smtp://{gateway.ip}:25"
        else:
            dns.start(state, str(gateway.ip), 53, _zones(props, str(gateway.ip)), f"{names.stack_id}-key")
            tsig = dns.read_tsig(state)
            outs.update(url=f"{gateway.ip}:53", tsig_name=tsig.name,
                        tsig_algorithm=tsig.algorithm, tsig_secret=tsig.secret)
        return CreateResult(id_=f"{names.stack_id}-{props['kind']}", outs=outs)

    def read(self, id_, props):
        from localcloud import aptproxy, dns, sink
        names = _names(props)
        state = names.runtime_dir / props["kind"]
        running = {"proxy": lambda: aptproxy.status(names) is not None,
                   "sink": lambda: sink.status(state).running,
                   "dns": lambda: dns.status(state).running}[props["kind"]]()
        return ReadResult(id_ if running else "", props)

    def diff(self, _id, olds, news):
        # New zones are served by the running server, reloaded in place: its records stay.
        replace = _replace_on(olds, news, ("stack", "checkout", "kind", "gateway", "gateway6"))
        if replace.replaces or olds.get("zones") == news.get("zones"):
            return replace
        return DiffResult(changes=True, replaces=[])

    def update(self, _id, olds, news):
        import ipaddress
        from localcloud import dns
        names, gateway = _names(news), ipaddress.ip_interface(news["gateway"])
        dns.reconfigure(names.runtime_dir / "dns", _zones(news, str(gateway.ip)))
        return UpdateResult(outs={**olds, **news, **{k: olds[k] for k in _DNS_OUTS if k in olds}})

    def delete(self, _id, props):
        from localcloud import aptproxy, dns, sink
        names = _names(props)
        state = names.runtime_dir / props["kind"]
        {"proxy": lambda: aptproxy.stop(names), "sink": lambda: sink.stop(state),
         "dns": lambda: dns.stop(state)}[props["kind"]]()


class _HostService(Resource):
    """A daemon on the stack's bridge address (one type per kind, so a preview names it)."""

    url: pulumi.Output[str]
    kind = ""

    def __init__(self, name: str, stack: str, checkout: str, gateway: pulumi.Input[str],
                 opts=None, **props):
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["tsig_secret"]))
        super().__init__(_ServiceProvider(), name, {
            "kind": self.kind, "stack": stack, "checkout": checkout, "gateway": gateway,
            "zones": None, **props, "url": None, "tsig_name": None, "tsig_algorithm": None,
            "tsig_secret": None}, opts)


class DnsServer(_HostService, module="localcloud", name="DnsServer"):
    """BIND 9, authoritative for the stack's zones; records by RFC 2136 with the stack's TSIG key."""
    kind = "dns"
    tsig_name: pulumi.Output[str]
    tsig_algorithm: pulumi.Output[str]
    tsig_secret: pulumi.Output[str]


class PackageProxy(_HostService, module="localcloud", name="PackageProxy"):
    """The containers' only way to Debian's package registry."""
    kind = "proxy"


class SmtpSink(_HostService, module="localcloud", name="SmtpSink"):
    """"The rest of the internet": the MX of elsewhere.test, keeping every message it gets."""
    kind = "sink"


class _VolumeProvider(ResourceProvider):
    """A data volume: a directory of this machine, made once under an id kept in the state."""

    def create(self, props):
        import uuid
        from localcloud import naming
        vid = uuid.uuid4().hex[:16]
        path = naming.volume_dir(vid)
        path.mkdir(parents=True, mode=0o755)
        return CreateResult(id_=vid, outs={**props, "path": str(path)})

    def read(self, id_, props):
        import pathlib
        return ReadResult(id_ if pathlib.Path(props["path"]).is_dir() else "", props)

    def diff(self, _id, olds, news):
        return DiffResult(changes=False, replaces=[])  # nothing about it may change

    def delete(self, _id, props):
        import pathlib
        from localcloud import mounts
        mounts.remove_tree(pathlib.Path(props["path"]))


class Volume(Resource, module="localcloud", name="Volume"):
    """The mail's data volume on the local backend (mailboxes, queue, TLS, filter state):
    bind-mounted into whichever container is the host, so a rebuilt host keeps its mail.
    `make down` deletes it with the stack."""

    path: pulumi.Output[str]

    def __init__(self, name: str, stack: str, opts=None):
        super().__init__(_VolumeProvider(), name, {"stack": stack, "path": None}, opts)


# Inputs of a container that change in place: the host keeps its disk (and its mail).
_MACHINE_REPLACE = ("stack", "checkout", "host", "bridge", "ipv4", "ipv6")
_MACHINE_UPDATE = ("ssh_public_key", "fqdn", "volume", "backups")


def _binds(props: dict) -> tuple[tuple[str, str], ...]:
    """(directory of this machine, path in the host): the data volume and the backups."""
    from agent import contract
    return tuple((props[k], path) for k, path in (("volume", contract.DATA_DIR),
                                                  ("backups", contract.BACKUP_DIR)) if props.get(k))


def _drain(names, host: str) -> None:
    """Before the host stops for good or moves its volume: port 25 answers 4xx (senders retry),
    Postfix and Dovecot stop cleanly, the volume is synced. Best effort: a host that never got
    the agent has nothing to drain."""
    from agent import contract
    from localcloud import container
    if container.status(names, host):
        container.run(names, host, ["sh", "-c", f"test -x {contract.AGENT} && {contract.DRAIN_COMMAND}; sync"],
                      timeout=120)


class _MachineProvider(ResourceProvider):
    def create(self, props):
        import pathlib
        import uuid

        names = _names(props)
        # A new host has new host keys: forget the old ones.
        pathlib.Path(props["known_hosts"]).unlink(missing_ok=True)
        self._boot(names, props)
        # One id per creation: a replacement is a new host (host keys, agent run) to the rest.
        return CreateResult(id_=f"{names.machine(props['host'])}-{uuid.uuid4().hex[:8]}", outs={**props})

    def _boot(self, names, props) -> None:
        import pathlib
        from components import user_data
        from localcloud import container
        if props.get("backups"):
            pathlib.Path(props["backups"]).mkdir(parents=True, exist_ok=True, mode=0o700)
        container.start(
            names, props["host"], bridge=props["bridge"], ipv4=props["ipv4"], ipv6=props["ipv6"],
            nameserver=props["nameserver"], apt_proxy_url=props["apt_proxy_url"],
            authorized_keys=[props["ssh_public_key"]], hostname=props["fqdn"],
            user_data=user_data.compressed(props["spec_json"], props["boot_run_id"]),
            meta_data={"instance-id": props["instance_id"], "local-hostname": props["fqdn"]},
            binds=_binds(props))
        container.wait_ssh(props["ipv4"].split("/")[0], timeout=120)

    def read(self, id_, props):
        from localcloud import container
        return ReadResult(id_ if container.status(_names(props), props["host"]) else "", props)

    def diff(self, _id, olds, news):
        # The spec (user-data) only matters at first boot; later changes are applied over SSH,
        # never by rebuilding the host. A new name or key changes in place; another network
        # makes another host, onto which the volume moves.
        replace = _replace_on(olds, news, _MACHINE_REPLACE)
        if replace.replaces:
            return replace
        return DiffResult(changes=any(olds.get(k) != news.get(k) for k in _MACHINE_UPDATE), replaces=[])

    def update(self, _id, olds, news):
        from localcloud import container
        names = _names(news)
        if _binds(olds) != _binds(news):  # a volume is attached at boot: restart on the same disk
            _drain(names, news["host"])
            container.stop(names, news["host"])
            self._boot(names, news)
        elif olds.get("ssh_public_key") != news["ssh_public_key"]:
            container.set_authorized_keys(names, news["host"], [news["ssh_public_key"]])
        return UpdateResult(outs={**olds, **news, "boot_run_id": olds.get("boot_run_id", news["boot_run_id"])})

    def delete(self, _id, props):
        from localcloud import container
        names = _names(props)
        _drain(names, props["host"])
        container.stop(names, props["host"], destroy=True)


class Machine(Resource, module="localcloud", name="Container"):
    """The VPS: a Debian 12 container booted with systemd, first boot by cloud-init, whose
    user-data is built from `spec_json` (readable in a preview) and `boot_run_id`."""

    instance_id: pulumi.Output[str]
    boot_run_id: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts=None):
        super().__init__(_MachineProvider(), name, props, opts)
