"""What every deployed stack's state depends on: the dynamic providers are pickled into it by
reference (module and class name), and `pulumi refresh` and `destroy` load them from there. A
provider class that moved or was renamed makes every existing stack fail to refresh or delete,
so these paths are a contract, kept however the code around them is arranged."""
import base64
import importlib

import pytest
from pulumi.dynamic import ResourceProvider
from pulumi.dynamic.dynamic import serialize_provider

# Every provider path found in states written since the first release (pulumi stack export).
PICKLED = [
    ("components.keys", "_KeyPairProvider"),
    ("components.keys", "_PasswordProvider"),
    ("components.local_cloud", "_BridgeProvider"),
    ("components.local_cloud", "_ServiceProvider"),
    ("components.local_cloud", "_MachineProvider"),
    ("components.reputation", "_ReputationProvider"),
    ("components.dns_record", "DnsRecordProvider"),
    ("components.bootstrap", "_AgentRunProvider"),
    ("components.verification", "_VerificationProvider"),
    ("components.keys", "_SecretProvider"),
    ("components.mailbox_guard", "_MailboxGuardProvider"),
]


@pytest.mark.parametrize("module, name", PICKLED, ids=[f"{m}.{n}" for m, n in PICKLED])
def test_a_provider_pickled_in_existing_states_still_loads(module, name):
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, ResourceProvider)
    assert module.encode() in base64.b64decode(serialize_provider(cls()))  # still by reference
