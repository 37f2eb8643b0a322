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

Exactly once: an INIT attempt is written as two records, an *attempt* (``"kind": "attempt"``,
before EINIT) and its *outcome* (``"kind": "outcome"``, ``"attempt": <seq>``, after EINIT; or
``"outcome": "unknown"``, appended when the process that made the attempt died before writing
it). :func:`check_exactly_once` checks the pairing on verified records. A *teardown* record
(``"kind": "teardown"``) closes an initialized enclave's life with the number of pages added
after EINIT (SGX2) and removed; it stands alone.

Records are bounded by construction (:func:`bound_facts`, applied by :func:`make_record`): text
is cut at :data:`MAX_TEXT` characters, lists keep their first :data:`MAX_LIST_ITEMS` items and a
count, reasons are summarised (how many, how many per field, the first :data:`MAX_REASONS_NAMED`
named), nesting stops at :data:`MAX_DEPTH`; a record that would still exceed
:data:`MAX_RECORD_BYTES` keeps only its kind and a note. No input can make the log
permanently unverifiable by writing a record the reader refuses.

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
MAX_TEXT = 512
MAX_LIST_ITEMS = 8
MAX_REASONS_NAMED = 5
MAX_DEPTH = 4
ATTEMPT = "attempt"
OUTCOME = "outcome"
TEARDOWN = "teardown"
"""A record written when an initialized enclave is torn down: pages added after EINIT (SGX2
EAUG, not in MRENCLAVE) and pages removed; it stands alone (no pairing)."""


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


def _bound(value: Any, depth: int) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 1 << 63 else f"(an integer of {value.bit_length()} bits)"
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, str):
        if len(value) <= MAX_TEXT:
            return value
        return value[:MAX_TEXT] + f"… (+{len(value) - MAX_TEXT} characters)"
    if depth >= MAX_DEPTH:
        return f"({type(value).__name__} nested deeper than {MAX_DEPTH} levels)"
    if isinstance(value, Mapping):
        items = list(value.items())
        out = {str(k)[:64]: _bound(v, depth + 1) for k, v in items[: MAX_LIST_ITEMS * 4]}
        if len(items) > MAX_LIST_ITEMS * 4:
            out["…"] = f"{len(items) - MAX_LIST_ITEMS * 4} more entries"
        return out
    if isinstance(value, list | tuple):
        kept = [_bound(v, depth + 1) for v in value[:MAX_LIST_ITEMS]]
        if len(value) > MAX_LIST_ITEMS:
            kept.append(f"… {len(value) - MAX_LIST_ITEMS} more")
        return kept
    return _bound(repr(value), depth)


def summarise_reasons(reasons: Any) -> dict[str, Any]:
    """Denial reasons as ``reasons`` (the first :data:`MAX_REASONS_NAMED`), ``reasons_total``
    and ``reasons_by_field`` (how many per field, for the first 16 fields)."""
    items = list(reasons) if isinstance(reasons, list | tuple) else []
    by_field: dict[str, int] = {}
    for reason in items:
        name = str(reason.get("field") if isinstance(reason, Mapping) else "?")[:64]
        if name in by_field or len(by_field) < 16:
            by_field[name] = by_field.get(name, 0) + 1
    return {
        "reasons": [_bound(r, 1) for r in items[:MAX_REASONS_NAMED]],
        "reasons_total": len(items),
        "reasons_by_field": by_field,
    }


def bound_facts(facts: Mapping[str, Any]) -> dict[str, Any]:
    """``facts`` made small (see the module docstring); ``seq``/``prev`` are dropped (the
    chain sets them)."""
    out: dict[str, Any] = {}
    for key, value in list(facts.items())[:64]:
        if key in ("seq", "prev"):
            continue
        if key == "reasons":
            out.update(summarise_reasons(value))
        elif key not in ("reasons_total", "reasons_by_field"):
            out[str(key)[:64]] = _bound(value, 1)
    return out


def make_record(key: bytes, head: LogHead, facts: Mapping[str, Any]) -> tuple[LogRecord, LogHead]:
    """Chain a new record after ``head`` (its facts bounded by :func:`bound_facts`); return it
    and the new head. The body never exceeds :data:`MAX_RECORD_BYTES`."""
    chain = {"seq": head.count, "prev": head.hash.hex()}
    body = canonical({**bound_facts(facts), **chain})
    if len(body) > MAX_RECORD_BYTES:
        kind = facts.get("kind")
        body = canonical(
            {
                "kind": kind if isinstance(kind, str) and len(kind) < 32 else None,
                "oversize": f"the facts made a {len(body)}-byte record; not kept",
                **chain,
            }
        )
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


def decode_record(blob: bytes, index: int) -> dict[str, Any]:
    """A stored record's body for display, never raising: a record that is not a bounded
    JSON object with an integer ``seq`` comes back as ``{"seq": index, "malformed": why}``
    (unverified: ``log verify`` says whether any record is authentic)."""
    try:
        record = LogRecord.from_bytes(blob)
        value = record.fields()
    except MalformedInput as exc:
        return {"seq": index, "malformed": exc.message}
    seq = value.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool):
        return {"seq": index, "malformed": f"seq is {type(seq).__name__}, not an integer"}
    if seq != index:
        value["malformed"] = f"stored at position {index}"
    return value


def check_exactly_once(records: Sequence[Mapping[str, Any]]) -> None:
    """Attempt/outcome pairing on *verified* records: each outcome names the attempt just
    before it; each attempt is followed by its outcome, except the last record (its process
    may still be running or have died: the next lock holder appends "outcome unknown").
    Records without ``kind`` (written before the split) stand alone.

    Raises:
        LogTampered: naming the first record that breaks the pairing.
    """
    open_attempt: int | None = None
    for index, fields in enumerate(records):
        kind = fields.get("kind")
        if kind == OUTCOME:
            if open_attempt is None or fields.get("attempt") != open_attempt:
                raise LogTampered(
                    f"launch-log record {index}: an outcome without its attempt",
                    index=index,
                    expected=f"attempt {open_attempt}" if open_attempt is not None else "none",
                    found=f"attempt {fields.get('attempt')!r}",
                )
            open_attempt = None
        elif open_attempt is not None:
            raise LogTampered(
                f"launch-log record {open_attempt}: an attempt without an outcome",
                index=open_attempt,
            )
        elif kind == ATTEMPT:
            open_attempt = index


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
    "ATTEMPT",
    "EMPTY_HEAD",
    "GENESIS",
    "OUTCOME",
    "LogHead",
    "LogRecord",
    "LogTampered",
    "bound_facts",
    "canonical",
    "check_exactly_once",
    "decode_record",
    "make_record",
    "parse_records",
    "record_key",
    "summarise_reasons",
    "verify_log",
]
