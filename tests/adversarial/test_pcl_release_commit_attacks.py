"""Attacks on the order of a protected-code release (issue 20, ``docs/launch.md``): RELEASE
decides and writes its record, the host stores it and calls ADVANCE, then CLAIM hands out the
box. The host process is the attacker's: it calls the launch enclave's ECALLs itself, in any
order, and decides what it stores in the home.

Each attack has a control: the same steps without the attack's twist get the key, so the
refusal is the defence's and not a broken set-up.
"""

from __future__ import annotations

import pytest

from sgxlaunch.errors import MacInvalid, UsageError, VerificationFailed
from sgxlaunch.launch.ecalls import (
    AdvanceReply,
    AdvanceRequest,
    ClaimReply,
    ClaimRequest,
    LogAppendReply,
    LogAppendRequest,
    ReleaseReply,
    ReleaseRequest,
)
from sgxlaunch.launch.log import LogTampered, decode_record
from sgxlaunch.launch.platform import Platform, code_key_key, le_sealed_key, log_prefix
from tests.support.codekeys import ECALL_OPEN, Asked, ask, installed, release, requester


def _release_call(platform: Platform, asked: Asked, key_id: bytes) -> ReleaseReply:
    """The host's own RELEASE ECALL (what ``Platform.release_code_key`` does first)."""
    return platform._le_call(
        ReleaseRequest(
            report=asked.report,
            ephemeral_key=asked.ephemeral_key,
            challenge=asked.challenge,
            key_id=key_id,
            code_key=platform.store.get(code_key_key(key_id)),
            now=0,
        ),
        ReleaseReply,
    )


def _claim(platform: Platform) -> bytes:
    return platform._le_call(ClaimRequest(), ClaimReply).boxed


def _store_sealed_only(platform: Platform, sealed: bytes) -> None:
    """The host stores the prepared state but not the record, then advances the counter."""
    assert platform.le_sigstruct is not None
    platform.store.commit({le_sealed_key(platform.le_sigstruct.mrsigner): sealed})
    platform._le_call(AdvanceRequest(), AdvanceReply)


def test_two_enclaves_racing_for_one_release_challenge_only_the_first_is_answered() -> None:
    """One challenge, two requesters (two instances the owner and author both allow) each bind
    it in a REPORT: the first RELEASE uses the challenge up, the second is refused (logged),
    and the box the first got opens only in the first (it is sealed to its ephemeral key)."""
    inst = installed(b"pcl-review-race-seed-0000001")
    platform = inst.owner.platform()
    image, sig = requester(platform)
    first = platform.run(image, sig).enclave
    second = platform.run(image, sig).enclave
    assert first is not None and second is not None
    asked_first = ask(platform, first, inst.key_id)
    out = second.ecall(0, asked_first.targetinfo + asked_first.challenge + inst.key_id)
    asked_second = Asked(
        second, asked_first.targetinfo, asked_first.challenge, out[:432], out[432:]
    )
    boxed = platform.release_code_key(
        asked_second.report, asked_second.ephemeral_key, asked_second.challenge, inst.key_id
    )
    assert second.ecall(ECALL_OPEN, boxed) == inst.key_id  # the winner of the race
    with pytest.raises(VerificationFailed, match="refused to release"):
        release(platform, asked_first, inst.key_id)
    record = platform.log_records()[-1]
    assert record["kind"] == "code-key-release" and record["outcome"] == "refused"
    assert record["reasons"][0]["field"] == "challenge"
    with pytest.raises(MacInvalid):  # the box is sealed to the second requester's key
        first.ecall(ECALL_OPEN, boxed)
    # Control: the loser asking with a challenge of its own gets the key.
    assert release(platform, ask(platform, first, inst.key_id), inst.key_id) == inst.key_id


def test_claim_after_the_release_state_was_replaced_gives_no_key() -> None:
    """RELEASE decides "released" and prepares the state holding its record; the host does
    not store it but has another record prepared and committed instead (a host LOG_APPEND):
    the committed state is not the one holding the release record, so CLAIM refuses and the
    log holds no "released" record. Control: storing and advancing the release's own state
    lets CLAIM hand out the box."""
    inst = installed(b"pcl-review-claim-seed-000001")
    platform = inst.owner.platform()
    image, sig = requester(platform)
    enclave = platform.run(image, sig).enclave
    assert enclave is not None
    before = len(platform.log_records())
    reply = _release_call(platform, ask(platform, enclave, inst.key_id), inst.key_id)
    assert reply.released == 1
    other = platform._le_call(
        LogAppendRequest(facts=b'{"kind":"note","what":"instead"}', now=0), LogAppendReply
    )
    assert platform.le_sigstruct is not None
    signer = platform.le_sigstruct.mrsigner
    seq = decode_record(other.record, -1)["seq"]
    assert seq == before  # the host's record took the release record's place in the chain
    platform.store.commit(
        {f"{log_prefix(signer)}{seq:016d}": other.record, le_sealed_key(signer): other.sealed}
    )
    platform._le_call(AdvanceRequest(), AdvanceReply)
    with pytest.raises(UsageError, match="no release to claim"):
        _claim(platform)
    reopened = inst.owner.platform()
    assert reopened.verify_log() == before + 1
    assert not [r for r in reopened.log_records()[before:] if r.get("kind") == "code-key-release"]
    # Control: the release's own state stored and advanced → CLAIM gives the box.
    asked = ask(reopened, enclave, inst.key_id)
    reply = _release_call(reopened, asked, inst.key_id)
    reopened._commit_record(reply, {})
    assert enclave.ecall(ECALL_OPEN, _claim(reopened)) == inst.key_id


def test_host_dropping_the_release_record_gets_the_key_but_the_log_no_longer_verifies() -> None:
    """The host stores the launch enclave's new state but drops the "released" record, then
    calls ADVANCE and CLAIM. The launch enclave cannot make the host store a record: the box
    comes out (the record is committed in the counter-backed head, not yet in the home). What
    the host cannot do is hide it: the log's sealed head counts the record, so the log no
    longer verifies (a deleted tail), and no later record can be chained past the gap
    unnoticed. Control: the log verifies before the attack."""
    inst = installed(b"pcl-review-drop-seed-0000001")
    platform = inst.owner.platform()
    image, sig = requester(platform)
    enclave = platform.run(image, sig).enclave
    assert enclave is not None
    count = platform.verify_log()  # control
    reply = _release_call(platform, ask(platform, enclave, inst.key_id), inst.key_id)
    assert reply.released == 1
    _store_sealed_only(platform, reply.sealed)
    assert enclave.ecall(ECALL_OPEN, _claim(platform)) == inst.key_id
    reopened = inst.owner.platform()
    assert len(reopened.log_records()) == count  # the record is not in the home
    with pytest.raises(LogTampered):
        reopened.verify_log()
