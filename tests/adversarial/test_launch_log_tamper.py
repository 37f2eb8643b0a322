"""Attacks on the launch log: tail deletion, reorder, edit, insertion, full recomputation."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from sgxlaunch.launch.log import (
    EMPTY_HEAD,
    LogHead,
    LogRecord,
    LogTampered,
    canonical,
    make_record,
    parse_records,
    verify_log,
)

KEY = bytes(range(16))


def build(n: int) -> tuple[list[LogRecord], LogHead]:
    head = EMPTY_HEAD
    records = []
    for i in range(n):
        record, head = make_record(
            KEY, head, {"mrenclave": f"{i:064x}", "decision": "allowed" if i % 2 else "denied"}
        )
        records.append(record)
    return records, head


def test_intact_log_verifies() -> None:
    records, head = build(6)
    verify_log(KEY, records, head)
    verify_log(KEY, parse_records(r.to_bytes() for r in records), head)
    verify_log(KEY, [], EMPTY_HEAD)


def test_log_tail_deletion_detected() -> None:
    records, head = build(6)
    with pytest.raises(LogTampered) as err:
        verify_log(KEY, records[:4], head)
    assert err.value.index == 4


def test_log_reorder_detected() -> None:
    records, head = build(6)
    swapped = [*records[:2], records[3], records[2], *records[4:]]
    with pytest.raises(LogTampered) as err:
        verify_log(KEY, swapped, head)
    assert err.value.index == 2


def test_log_edit_detected() -> None:
    records, head = build(6)
    edited = records[3].body.replace(b'"decision":"allowed"', b'"decision":"denied"')
    assert edited != records[3].body
    tampered = [*records[:3], LogRecord(edited, records[3].mac), *records[4:]]
    with pytest.raises(LogTampered) as err:
        verify_log(KEY, tampered, head)
    assert err.value.index == 3


def test_log_insertion_detected() -> None:
    records, head = build(6)
    forged_body = canonical({"decision": "allowed", "seq": 3, "prev": records[2].hash.hex()})
    forged = LogRecord(forged_body, hmac.new(b"guess", forged_body, hashlib.sha256).digest())
    with pytest.raises(LogTampered) as err:
        verify_log(KEY, [*records[:3], forged, *records[3:]], head)
    assert err.value.index == 3


def test_log_full_recomputation_without_key_detected() -> None:
    records, _ = build(6)
    head = EMPTY_HEAD
    recomputed = []
    wrong_key = b"\x01" * 16
    for record in records:
        fields = record.fields()
        fields.pop("seq")
        fields.pop("prev")
        fields["decision"] = "allowed"
        new, head = make_record(wrong_key, head, fields)
        recomputed.append(new)
    with pytest.raises(LogTampered) as err:
        verify_log(KEY, recomputed, head)
    assert err.value.index == 0


def test_log_appended_record_beyond_head_detected() -> None:
    records, head = build(4)
    extra, _ = make_record(KEY, head, {"decision": "allowed"})
    with pytest.raises(LogTampered) as err:
        verify_log(KEY, [*records, extra], head)
    assert err.value.index == 4


def test_log_garbage_record_named() -> None:
    records, head = build(3)
    blobs = [r.to_bytes() for r in records]
    blobs[1] = b"short"
    with pytest.raises(LogTampered) as err:
        verify_log(KEY, parse_records(blobs), head)
    assert err.value.index == 1
