"""The launch log: a hash-chained, MACed record of every INIT attempt.

Each record is one canonical JSON document (sorted keys, no whitespace, UTF-8) holding the
attempt's facts, its sequence number ``seq`` and ``prev``, the SHA-256 of the previous
record's body (32 zero bytes for the first). The record's ``hash`` is SHA-256 of its body; its
``mac`` is HMAC-SHA256 over the body under a key only the owner's launch enclave can derive
(the Platform passes it in). The chain's head, ``(seq, hash)`` of the last record, is kept
sealed by the launch enclave, beside the records.

What :func:`verify_log` therefore detects, naming the first bad record:

* an edited record (its MAC fails);
* an inserted or reordered record (``seq`` or ``prev`` break; a forged one has no valid MAC);
* a full recomputation of the chain without the key (every MAC fails);
* a deleted tail (the last record is not the sealed head).

What it cannot detect on its own: someone with write access to the state replacing both the
records and the sealed head with an *older* consistent copy (a rollback of the whole log).
Sealing gives confidentiality and integrity, not freshness; see ``docs/launch.md``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sgxlaunch.errors import MalformedInput, VerificationFailed

GENESIS = bytes(32)
RECORD_PREFIX = "log/record/"
MAX_RECORD_BYTES = 1 << 16


class LogTampered(VerificationFailed):
    """The launch log does not verify; ``index`` is the first bad record (or ``None``)."""

    check = "launch-log"

    def __init__(self, message: str, *, index: int | None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.index = index


def canonical(value: Mapping[str, Any]) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One stored record: its canonical body and its MAC.

    Attributes:
        body: the canonical JSON body (includes ``seq`` and ``prev``).
        mac: HMAC-SHA256(log key, body).
    """

    body: bytes
    mac: bytes

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(self.body).digest()

    def fields(self) -> dict[str, Any]:
        """The decoded body.

        Raises:
            MalformedInput: the body is not a JSON object.
        """
        try:
            value = json.loads(self.body)
        except (ValueError, RecursionError) as exc:
            raise MalformedInput(f"launch-log record is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise MalformedInput("launch-log record is not a JSON object")
        return value

    def to_bytes(self) -> bytes:
        """Stored form: 32-byte MAC then the body."""
        return self.mac + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> LogRecord:
        """Parse the stored form.

        Raises:
            MalformedInput: too short or too long.
        """
        if not 32 < len(data) <= 32 + MAX_RECORD_BYTES:
            raise MalformedInput(f"launch-log record of {len(data)} bytes")
        return cls(body=bytes(data[32:]), mac=bytes(data[:32]))


@dataclass(frozen=True, slots=True)
class LogHead:
    """The chain head: how many records there are and the hash of the last one."""

    count: int
    hash: bytes

    def to_bytes(self) -> bytes:
        return self.count.to_bytes(8, "little") + self.hash

    @classmethod
    def from_bytes(cls, data: bytes) -> LogHead:
        """Parse the 40-byte head.

        Raises:
            MalformedInput: not 40 bytes.
        """
        if len(data) != 40:
            raise MalformedInput(f"launch-log head must be 40 bytes, got {len(data)}")
        return cls(int.from_bytes(data[:8], "little"), bytes(data[8:]))


EMPTY_HEAD = LogHead(0, GENESIS)


def make_record(key: bytes, head: LogHead, facts: Mapping[str, Any]) -> tuple[LogRecord, LogHead]:
    """Chain a new record after ``head``; return it and the new head."""
    body = canonical({**facts, "seq": head.count, "prev": head.hash.hex()})
    record = LogRecord(body=body, mac=hmac.new(key, body, hashlib.sha256).digest())
    return record, LogHead(head.count + 1, record.hash)


def record_key(seq: int) -> str:
    """The store key of record ``seq`` (zero-padded so keys sort in order)."""
    return f"{RECORD_PREFIX}{seq:016d}"


def verify_log(key: bytes, records: Sequence[LogRecord], head: LogHead) -> None:
    """Verify the whole chain against the sealed head.

    Checks, for each record in order: its MAC under ``key``; its body parses; ``seq`` equals
    its position; ``prev`` equals the previous record's hash. Then: the record count and the
    last hash equal the sealed ``head``.

    Raises:
        LogTampered: naming the first bad record (``index``), or the head mismatch.
    """
    prev = GENESIS
    for index, record in enumerate(records):
        want = hmac.new(key, record.body, hashlib.sha256).digest()
        if not hmac.compare_digest(want, record.mac):
            raise LogTampered(
                f"launch-log record {index}: MAC does not verify (edited, inserted or forged)",
                index=index,
            )
        try:
            fields = record.fields()
        except MalformedInput as exc:
            raise LogTampered(f"launch-log record {index}: {exc.message}", index=index) from None
        if fields.get("seq") != index:
            raise LogTampered(
                f"launch-log record {index}: out of order",
                index=index,
                expected=f"seq {index}",
                found=f"seq {fields.get('seq')!r}",
            )
        if fields.get("prev") != prev.hex():
            raise LogTampered(
                f"launch-log record {index}: does not chain to the previous record",
                index=index,
                expected=prev.hex(),
                found=str(fields.get("prev")),
            )
        prev = record.hash
    if head.count != len(records) or not hmac.compare_digest(head.hash, prev):
        first_missing = min(head.count, len(records))
        raise LogTampered(
            "launch log does not end at the sealed head (records deleted or appended)",
            index=first_missing,
            expected=f"{head.count} records ending {head.hash.hex()[:16]}…",
            found=f"{len(records)} records ending {prev.hex()[:16]}…",
        )


def parse_records(blobs: Iterable[bytes]) -> list[LogRecord]:
    """Stored blobs to records.

    Raises:
        LogTampered: a blob is not a record (names its position).
    """
    out = []
    for index, blob in enumerate(blobs):
        try:
            out.append(LogRecord.from_bytes(blob))
        except MalformedInput as exc:
            raise LogTampered(f"launch-log record {index}: {exc.message}", index=index) from None
    return out


__all__ = [
    "EMPTY_HEAD",
    "GENESIS",
    "LogHead",
    "LogRecord",
    "LogTampered",
    "canonical",
    "make_record",
    "parse_records",
    "record_key",
    "verify_log",
]
