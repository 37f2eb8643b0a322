"""The host cannot write the launch enclave's own records into the launch log.

LOG_APPEND is the host's ECALL for the records it observes (attempts, outcomes, dynamic code);
epoch, grant and protected-code records are the launch enclave's alone: it writes them from
what it verified itself (an owner-signed epoch document, an attested grant, a key release), and
it refuses LOG_APPEND of those kinds, so a collector or the owner never reads one the host made.
"""

from __future__ import annotations

import json

import pytest

from sgxlaunch.errors import MalformedInput
from sgxlaunch.launch.ecalls import LogAppendReply, LogAppendRequest
from sgxlaunch.launch.log import GRANT
from tests.support.attested_log import owner_with_log
from tests.support.codekeys import pcl_owner
from tests.support.grants import grant_platform


def test_host_cannot_append_an_epoch_record() -> None:
    """An epoch record (recovery or a handover) would tell a collector the log restarted
    legitimately."""
    platform = owner_with_log(0).platform()
    facts = json.dumps({"kind": "epoch", "epoch": 99, "cause": "recovery"}).encode()
    with pytest.raises(MalformedInput, match="written by the launch enclave itself"):
        platform._le_call(LogAppendRequest(facts=facts, now=0), LogAppendReply)


def test_host_cannot_append_a_grant_record() -> None:
    """A grant record would claim the launch enclave judged dynamic code it never saw."""
    _owner, platform, _sig = grant_platform()
    facts = json.dumps({"kind": GRANT, "verdict": "granted"}).encode()
    with pytest.raises(MalformedInput, match="grant records"):
        platform._le_call(LogAppendRequest(facts=facts, now=0), LogAppendReply)


def test_host_cannot_append_protected_code_records() -> None:
    """A code-key record would claim a release (or an added key) that never happened."""
    platform = pcl_owner().platform()
    for kind in ("code-key-release", "code-key-added"):
        with pytest.raises(MalformedInput, match="written by the launch enclave itself"):
            platform._append({"kind": kind, "outcome": "released"})
