"""The attested launch log (issue 19): LOG_ATTEST, the export format, epoch records, and the
collector's checks on a report body the verifier enclave accepted (the quote itself is checked
by ``attest.verify``; end to end in ``tests/cli/test_log_attest_cli.py``)."""

from __future__ import annotations

import hashlib
import json

import pytest

from sgxlaunch.errors import MalformedInput
from sgxlaunch.launch.collector import CollectorState, PlatformEntry, verify_attested_log
from sgxlaunch.launch.ecalls import LogAttestRequest
from sgxlaunch.launch.enclave import RECOVERY_PAYLOAD_TYPE, recovery_payload, sign_launch_enclave
from sgxlaunch.launch.log import (
    EMPTY_HEAD,
    EXPORT_FORMAT,
    GENESIS,
    LogHead,
    LogTampered,
    _chain_parsed,
    attest_reportdata,
    canonical,
    chain_export,
    export_log,
    make_record,
    read_export,
)
from sgxlaunch.launch.platform import le_sealed_key
from sgxlaunch.policy import sign_payload
from tests.support.attested_log import NONCE, attest, expectation, launch, owner_with_log
from tests.support.keys import signer


def test_attested_head_is_the_committed_head_and_reportdata_binds_it() -> None:
    owner = owner_with_log(2)
    platform = owner.platform()
    attested = attest(platform)
    blobs = platform.log_blobs()
    head = LogHead(len(blobs), hashlib.sha256(blobs[-1][32:]).digest())
    assert attested.attestation.head == head
    want = attest_reportdata(NONCE, platform.platform_id, head)
    assert attested.body.reportdata == want
    assert want[32:] == bytes(32)
    assert attested.body.mrsigner == platform.le_signer


def test_export_is_a_header_then_each_body_exactly() -> None:
    owner = owner_with_log(1)
    platform = owner.platform()
    data = platform.export_log()
    lines = data.split(b"\n")
    assert lines[-1] == b""
    header = json.loads(lines[0])
    blobs = platform.log_blobs()
    assert header == {
        "format": EXPORT_FORMAT,
        "first_seq": 0,
        "count": len(blobs),
        "head": hashlib.sha256(blobs[-1][32:]).hexdigest(),
        "platform_id": platform.platform_id.hex(),
        "le_mrsigner": (platform.le_signer or b"").hex(),
    }
    assert lines[1:-1] == [blob[32:] for blob in blobs]  # no MAC, bodies byte for byte
    exported = read_export(data)
    assert exported.first_seq == 0 and list(exported.bodies) == lines[1:-1]
    assert read_export(platform.export_log(1)).bodies == lines[2:-1]


def test_collector_accepts_then_extends_then_incremental_export() -> None:
    owner = owner_with_log(2)
    platform = owner.platform()
    first = attest(platform)
    expect = expectation(owner, platform)
    result = verify_attested_log(first.body, first.export, expect, state=CollectorState())
    assert result.change == "created" and result.epoch == 0
    assert result.head == first.attestation.head and result.new_records == result.head.count
    state = result.state
    assert state is not None
    launch(platform, 1)
    second = attest(platform, b"second", first_seq=result.head.count)
    again = verify_attested_log(
        second.body, second.export, expectation(owner, platform, b"second"), state=state
    )
    assert again.change == "extended" and again.first_seq == result.head.count
    assert again.new_records == again.head.count - result.head.count > 0
    assert again.state is not None
    entry = again.state.platforms[platform.platform_id]
    assert entry == PlatformEntry(0, again.head.count, again.head.hash)
    # Nothing new: the same head is accepted as unchanged with a fresh nonce.
    third = attest(platform, b"third", first_seq=again.head.count)
    # (attest loads the verifier enclave, which logs 2 records: the head moved)
    assert third.attestation.head.count == again.head.count + 2
    round_trip = CollectorState.from_bytes(again.state.to_bytes())
    assert round_trip == again.state


def test_export_from_later_record_needs_the_collector_state() -> None:
    owner = owner_with_log(2)
    platform = owner.platform()
    attested = attest(platform, first_seq=2)
    with pytest.raises(LogTampered, match="without this collector's state"):
        verify_attested_log(attested.body, attested.export, expectation(owner, platform))


def test_recovery_opens_a_new_epoch_with_the_owner_signed_document() -> None:
    owner = owner_with_log(1)
    platform = owner.platform()
    before = attest(platform)
    state = verify_attested_log(
        before.body, before.export, expectation(owner, platform), state=CollectorState()
    ).state
    assert state is not None
    signer_hex = platform.le_signer or b""
    owner.store.commit({le_sealed_key(signer_hex): None})  # the home lost the sealed state
    counter = owner.machine.load().counter.value
    doc = sign_payload(
        RECOVERY_PAYLOAD_TYPE, recovery_payload(platform.platform_id, counter), owner.keys[:2]
    ).to_bytes()
    owner.platform(maintenance=True).recover(doc)
    recovered = owner.platform()
    records = recovered.log_records()
    assert records[0]["kind"] == "epoch" and records[0]["cause"] == "recovery"
    assert records[0]["epoch"] == counter + 1 and records[0]["prev"] == GENESIS.hex()
    assert recovered.verify_log() == len(records)
    after = attest(recovered, b"after")
    result = verify_attested_log(
        after.body, after.export, expectation(owner, recovered, b"after"), state=state
    )
    assert result.change == "new-epoch" and result.epoch == counter + 1
    assert result.epoch_record == {"epoch": counter + 1, "cause": "recovery"}


def test_handover_opens_a_new_epoch_named_by_the_mode_document() -> None:
    owner = owner_with_log(1)
    platform = owner.platform()
    sig2 = sign_launch_enclave(owner.root, signer("fourth"))
    platform.set_launch_enclave(sig2)
    platform.set_mode(owner.mode("owner", version=2, le="fourth"))
    reopened = owner.platform()
    assert reopened.le_signer == sig2.mrsigner
    first = reopened.log_records()[0]
    assert (first["kind"], first["cause"], first["seq"]) == ("epoch", "handover", 0)
    attested = attest(reopened)
    result = verify_attested_log(attested.body, attested.export, expectation(owner, reopened))
    assert result.epoch_record is not None and result.epoch_record["cause"] == "handover"
    assert reopened.verify_log() == result.head.count


@pytest.mark.parametrize("nonce", [b"", bytes(65)])
def test_log_attest_refuses_a_nonce_out_of_bounds(nonce: bytes) -> None:
    owner = owner_with_log(0)
    platform = owner.platform()
    with pytest.raises(MalformedInput):
        platform.attest_log(nonce, bytes(512))
    with pytest.raises(MalformedInput):
        LogAttestRequest.decode(LogAttestRequest(nonce=nonce, targetinfo=bytes(511)).encode())


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "empty"),
        (b"[]\n", "object"),
        (b'{"format":"other","first_seq":0}\n', "format"),
        (b'{"format":"%s","first_seq":-1}\n' % EXPORT_FORMAT.encode(), "first_seq"),
        (b'{"format":"%s","first_seq":0,"x":1}\n' % EXPORT_FORMAT.encode(), "unknown field"),
        (b'{"format":"%s","first_seq":0}\n\n{}\n' % EXPORT_FORMAT.encode(), "line 2 is empty"),
    ],
)
def test_export_is_read_strictly(data: bytes, match: str) -> None:
    with pytest.raises(MalformedInput, match=match):
        read_export(data)


@pytest.mark.parametrize(
    "data",
    [
        b"{}",
        b'{"format":"sgxlaunch/launch-log-collector/1","platforms":{"zz":{}}}',
        b'{"format":"sgxlaunch/launch-log-collector/1","platforms":{"%s":'
        b'{"epoch":0,"count":true,"head":"%s"}}}' % (b"00" * 32, b"00" * 32),
    ],
)
def test_collector_state_is_read_strictly(data: bytes) -> None:
    with pytest.raises(MalformedInput):
        CollectorState.from_bytes(data)


def _chain_of(facts: list[dict[str, object]]) -> list[bytes]:
    head, blobs = EMPTY_HEAD, []
    for item in facts:
        record, head = make_record(b"k" * 16, head, item)
        blobs.append(record.to_bytes())
    return blobs


def test_fast_chain_check_agrees_with_the_full_parse() -> None:
    blobs = _chain_of([{"kind": "attempt", "pid": i, "note": '"prev":"x"'} for i in range(40)])
    for first in (0, 1, 17):
        exported = read_export(export_log(blobs, platform_id=bytes(32), le_mrsigner=bytes(32),
                                          first_seq=first))  # fmt: skip
        assert chain_export(exported) == _chain_parsed(exported)
        assert chain_export(exported).head.count == 40


def test_a_nested_prev_key_cannot_splice_a_forged_record_into_the_chain() -> None:
    """The host writes, inside a genuine record's facts, a nested ``prev`` naming the hash of a
    record it forged; then offers the forged record in place of the genuine one before it."""
    genuine = _chain_of([{"kind": "attempt", "pid": 0}])
    head0 = hashlib.sha256(genuine[0][32:]).hexdigest()
    forged = canonical({"kind": "attempt", "pid": 666, "seq": 1, "prev": head0})
    planted: dict[str, object] = {
        "kind": "outcome",
        "x": {"prev": hashlib.sha256(forged).hexdigest()},
    }
    blobs = _chain_of([{"kind": "attempt", "pid": 0}, {"kind": "attempt", "pid": 1}, planted])
    assert blobs[0] == genuine[0]
    assert blobs[2][32:].count(b'"prev":"') == 2
    lines = export_log(blobs, platform_id=bytes(32), le_mrsigner=bytes(32)).split(b"\n")
    lines[2] = forged
    with pytest.raises(LogTampered, match="record 2: does not chain"):
        chain_export(read_export(b"\n".join(lines)))
    # The honest export with the nested key verifies (through the full parse).
    honest = read_export(export_log(blobs, platform_id=bytes(32), le_mrsigner=bytes(32)))
    assert chain_export(honest).head.hash == hashlib.sha256(blobs[2][32:]).digest()
