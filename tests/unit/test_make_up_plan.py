"""`make up` says, before anything happens, when it would replace the host or delete a volume."""
import pytest

from ops import plan

CONTAINER, VOLUME = "pulumi-python:dynamic/localcloud:Container", "pulumi-python:dynamic/localcloud:Volume"


def _step(op, rtype, name, reasons=()):
    return {"op": op, "urn": f"urn:pulumi:s::bulletproof-mail::x${rtype}::{name}",
            "newState": {"type": rtype}, "replaceReasons": list(reasons)}


def test_a_replaced_host_is_said_in_plain_words_with_the_reason():
    ((line, confirm),) = plan.dangers([_step("replace", CONTAINER, "mail-host", ["ipv4"])])
    assert confirm == "replace-host"
    assert line.startswith("REPLACE the mail host mail-host (because ipv4 changed)")
    assert "stays on the data volume" in line


def test_a_deleted_volume_needs_its_own_confirmation():
    ((line, confirm),) = plan.dangers([_step("delete", VOLUME, "mail-volume")])
    assert confirm == "delete-volume" and "every mailbox and queued message on it is lost" in line


@pytest.mark.parametrize("step", [_step("update", CONTAINER, "mail-host"), _step("create", VOLUME, "v"),
                                  _step("replace", "pulumi-python:dynamic/rfc2136:DnsRecord", "mail-a"),
                                  _step("delete", CONTAINER, "mail-host")])
def test_what_loses_no_mail_needs_no_confirmation(step):
    assert plan.dangers([step]) == []


@pytest.mark.parametrize("rtype", ["azure-native:compute:VirtualMachine", "openstack:compute/instance:Instance"])
def test_every_backend_names_its_host(rtype):
    assert plan.dangers([_step("replace", rtype, "mail-host", ["image"])])[0][1] == "replace-host"


@pytest.mark.parametrize("rtype", ["azure-native:compute:Disk", "openstack:blockstorage/volume:Volume",
                                   "azure-native:storage:BlobContainer"])
def test_every_backend_names_its_volumes(rtype):
    assert plan.dangers([_step("delete", rtype, "mail-data")])[0][1] == "delete-volume"
