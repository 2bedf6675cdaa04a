"""RFC 2136 record logic without a server: TXT splitting, normalisation, diff decisions."""

import base64

import pulumi
import pytest
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.runtime import rpc

from components import dns_record
from components.dns_record import DnsRecordProvider, record_diff
from localcloud import rfc2136
from localcloud.rfc2136 import fqdn, normalise, split_txt

BASE = {"server": "127.0.0.1", "port": 53, "zone": "example-mail.test", "name": "mail", "type": "A",
        "values": ["10.77.5.10"], "ttl": 60, "tsig_name": "k", "tsig_algorithm": "hmac-sha256",
        "tsig_secret": "c2VjcmV0"}


@pytest.mark.parametrize("length, chunks", [(0, [0]), (1, [1]), (255, [255]), (256, [255, 1]),
                                            (600, [255, 255, 90])])
def test_txt_is_split_into_strings_of_at_most_255_bytes(length, chunks):
    assert [len(s) for s in split_txt("x" * length)] == chunks


def test_txt_given_as_strings_is_rejoined_before_splitting():
    assert split_txt(["a" * 200, "b" * 100]) == [b"a" * 200 + b"b" * 55, b"b" * 45]


def test_txt_compares_equal_however_it_was_split():
    key = "v=DKIM1; k=rsa; p=" + "A" * 392
    assert normalise("TXT", [key]) == normalise("TXT", [[s.decode() for s in split_txt(key)]])


@pytest.mark.parametrize("rtype, given, canonical", [
    ("MX", ["10 mail.example-mail.test"], ["10 mail.example-mail.test."]),
    ("CNAME", ["mail.example-mail.test."], ["mail.example-mail.test."]),
    ("PTR", ["mail.example-mail.test"], ["mail.example-mail.test."]),
    ("AAAA", ["fd12:3456:789a:0001:0000:0000:0000:0010"], ["fd12:3456:789a:1::10"]),
    ("A", ["10.77.5.11", "10.77.5.10", "10.77.5.10"], ["10.77.5.10", "10.77.5.11"]),
    ("a", ["10.77.5.10"], ["10.77.5.10"]),
])
def test_values_are_normalised_to_canonical_sorted_text(rtype, given, canonical):
    assert normalise(rtype, given) == canonical


def test_unsupported_type_is_refused_with_the_supported_list():
    with pytest.raises(rfc2136.DnsRecordError, match="SRV is not supported"):
        normalise("SRV", ["0 5 5060 sip.example-mail.test"])


@pytest.mark.parametrize("name, expected", [
    ("@", "example-mail.test."), ("", "example-mail.test."), ("mail", "mail.example-mail.test."),
    ("mail.example-mail.test", "mail.example-mail.test."),
    ("mail.example-mail.test.", "mail.example-mail.test."),
    ("sel1._domainkey", "sel1._domainkey.example-mail.test."),
])
def test_names_resolve_relative_to_the_zone(name, expected):
    assert fqdn("example-mail.test", name).to_text() == expected


def test_name_outside_the_zone_is_refused():
    with pytest.raises(rfc2136.DnsRecordError, match="outside zone"):
        fqdn("example-mail.test", "mail.elsewhere.test.")


def test_no_change_when_values_differ_only_in_form():
    olds = {**BASE, "type": "MX", "values": ["10 mail.example-mail.test."]}
    news = {**BASE, "type": "MX", "values": ["10 mail.example-mail.test"]}
    assert record_diff(olds, news) == ([], [])


@pytest.mark.parametrize("key, value", [("values", ["10.77.5.11"]), ("ttl", 120),
                                        ("tsig_secret", "bmV3"), ("server", "10.77.5.1")])
def test_change_of_content_updates_in_place(key, value):
    assert record_diff(BASE, {**BASE, key: value}) == ([key], [])


@pytest.mark.parametrize("key, value", [("name", "mx"), ("type", "AAAA"), ("zone", "elsewhere.test")])
def test_change_of_identity_replaces(key, value):
    changed, replaces = record_diff(BASE, {**BASE, key: value})
    assert key in replaces


def test_unknown_values_during_preview_count_as_a_change():
    assert record_diff(BASE, {**BASE, "values": rpc.UNKNOWN}) == (["values"], [])


def test_provider_replaces_delete_first():
    result = DnsRecordProvider().diff("id", BASE, {**BASE, "type": "CNAME", "values": ["x.test"]})
    assert result.changes and result.replaces == ["type"] and result.delete_before_replace


@pytest.mark.parametrize("news, prop", [({**BASE, "type": "SRV"}, "type"),
                                        ({**BASE, "values": ["not-an-ip"]}, "values"),
                                        ({**BASE, "values": []}, "values")])
def test_check_reports_the_bad_property(news, prop):
    assert [f.property for f in DnsRecordProvider().check({}, news).failures] == [prop]


def test_check_accepts_values_unknown_at_preview():
    assert DnsRecordProvider().check({}, {**BASE, "values": rpc.UNKNOWN}).failures == []


def test_serialized_provider_is_a_small_stable_reference():
    # By reference: editing this module must not show as a diff on every record in the state.
    pickled = base64.b64decode(serialize_provider(DnsRecordProvider()))
    assert b"components.dns_record" in pickled and len(pickled) < 200


class _Mocks(pulumi.runtime.Mocks):
    def new_resource(self, args):
        return f"{args.name}-id", args.inputs

    def call(self, args):
        return {}


@pulumi.runtime.test
def test_tsig_secret_stays_a_secret_output():
    pulumi.runtime.set_mocks(_Mocks(), preview=False)
    args = dns_record.DnsRecordArgs(server="127.0.0.1", port=53, zone="example-mail.test", name="mail",
                                    type="A", values=["10.77.5.10"], tsig_name="k",
                                    tsig_secret="c2VjcmV0")
    record = dns_record.DnsRecord("mail-a", args)

    def check(is_secret):
        assert is_secret

    return pulumi.Output.from_input(record.tsig_secret.is_secret()).apply(check)


def _silent_port() -> int:
    """A loopback UDP+TCP port where nothing answers (bound here, never read: queries time out)."""
    import socket
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    _SILENT.append(udp)
    return udp.getsockname()[1]


_SILENT: list = []


@pytest.fixture
def unreachable(monkeypatch):
    monkeypatch.setattr(rfc2136, "TIMEOUT", 0.2)
    yield {**BASE, "port": _silent_port()}
    while _SILENT:
        _SILENT.pop().close()


def test_refresh_fails_naming_the_server_when_a_dns_server_is_out_of_reach(unreachable):
    props = {**unreachable, "forget_when_unreachable": False}
    with pytest.raises(rfc2136.DnsRecordError) as err:
        DnsRecordProvider().read("mail.example-mail.test./A", props)
    assert f"127.0.0.1:{props['port']}" in str(err.value) and "stays in the state" in str(err.value)


def test_refresh_forgets_a_record_of_the_local_server_that_is_gone(unreachable):
    props = {**unreachable, "forget_when_unreachable": True}
    assert DnsRecordProvider().read("mail.example-mail.test./A", props).id == ""


def test_refresh_of_a_record_stored_before_the_flag_keeps_the_old_behaviour(unreachable):
    assert DnsRecordProvider().read("mail.example-mail.test./A", unreachable).id == ""


def test_a_record_stored_before_the_flag_is_updated_once_to_record_it():
    changed, replaces = record_diff(BASE, {**BASE, "forget_when_unreachable": False})
    assert changed == ["forget_when_unreachable"] and replaces == []


def test_a_local_record_stored_before_the_flag_is_unchanged():
    # Its read forgot already, as the local stack's must: nothing to record, no update.
    assert record_diff(BASE, {**BASE, "forget_when_unreachable": True}) == ([], [])


def test_serialized_provider_captures_no_secret():
    from pulumi.dynamic.dynamic import _serialize
    blob, contains_secrets = _serialize(True, serialize_provider, DnsRecordProvider())
    assert not contains_secrets and BASE["tsig_secret"].encode() not in base64.b64decode(blob)
