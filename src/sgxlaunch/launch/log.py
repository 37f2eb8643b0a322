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
after EINIT (SGX2) and removed; it stands alone. So do the protected-code records the launch
enclave writes itself: ``code-key-added`` and ``code-key-release`` (every release and every
refusal of a code key, :mod:`sgxlaunch.launch.enclave`). A *dynamic* record (``"kind":
"dynamic"``) is one decision of the driver about an enclave's dynamic memory under the owner's
limits (issue 17), forwarded by the Platform from the driver's event queue; it stands alone too.

Records are bounded by construction (:func:`bound_facts`, applied by :func:`make_record`): text
is cut at :data:`MAX_TEXT` characters, lists keep their first :data:`MAX_LIST_ITEMS` items and a
count, reasons are summarised (how many, how many per field, the first :data:`MAX_REASONS_NAMED`
named), nesting stops at :data:`MAX_DEPTH`; a record that would still exceed
:data:`MAX_RECORD_BYTES` keeps only its kind and a note. No input can make the log
permanently unverifiable by writing a record the reader refuses.

What it cannot detect on its own: someone with write access to the state replacing both the
records and the sealed head with an *older* consistent copy (a rollback of the whole log).
Sealing gives confidentiality and integrity, not freshness; see ``docs/launch.md``.

**Keyless chain and export.** ``prev`` and the record hash are plain SHA-256 over the bodies, so
the chain itself needs no key: whoever holds the bodies can recompute the head ``(count, hash)``.
The MAC only lets the launch enclave check its own records locally. A remote collector checks
the bodies against a head the launch enclave *attests* (:func:`attest_reportdata`, quoted by the
QE) instead. :func:`export_log` / :func:`read_export` are the JSON-lines export format (one
header line, then each record body exactly as it was chained, one per line) and
:func:`chain_export` recomputes the chain over it.

**Epochs.** A log segment that a launch enclave opens after owner recovery or after the counter
was handed to a new launch-enclave signer starts with an *epoch record* (``"kind": "epoch"``)
that the launch enclave writes itself (:func:`make_epoch_record`) and that carries the
owner-signed document that opened it; the host can never append one (``LOG_APPEND`` refuses the
kind).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sgxlaunch.errors import MalformedInput, UsageError, VerificationFailed

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
GRANT = "grant"
"""An attested-code grant decision (issue 17), written by the launch enclave itself (its GRANT
ECALL): the instance (MRENCLAVE, MRSIGNER, CONFIGID), the page range, the code hash and the
verdict; it stands alone. The host can never append one (``LOG_APPEND`` refuses the kind)."""
DYNAMIC = "dynamic"
"""What the driver decided about an enclave's dynamic memory under the owner's limits (issue
17; ``driver/dynamic.py``): a refusal, a dynamic executable mapping allowed, a page added with
its exec bit withheld — forwarded from the driver's event queue by the Platform; or how many
events the queue dropped. It stands alone (no pairing)."""
EPOCH = "epoch"
CODE_KEY_ADDED = "code-key-added"
"""A record the launch enclave writes when it accepted an author's wrapped code key (key id
and release constraint; never the key); it stands alone."""
CODE_KEY_RELEASE = "code-key-release"
"""A record the launch enclave writes for every protected-code key request it decided
(``outcome`` released / refused, the requester's identity, the rule and the reasons); it
stands alone. The host can append neither kind (``LOG_APPEND`` refuses them)."""
EPOCH_CAUSES = ("recovery", "handover")
"""Why a segment starts with an epoch record: owner recovery, or a new launch-enclave signer."""
MAX_EPOCH_DOCUMENT = 32 << 10
"""Largest owner-signed document an epoch record carries (its base64 stays within a record)."""
ATTEST_DOMAIN = b"sgxlaunch/launch-log/attest/v1\x00"
"""Domain tag of the attested log head's REPORTDATA (:func:`attest_reportdata`)."""
MAX_NONCE = 64
EXPORT_FORMAT = "sgxlaunch/launch-log-export/1"
"""The ``format`` of an export's header line (:func:`export_log`)."""


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


def make_epoch_record(
    key: bytes,
    *,
    epoch: int,
    cause: str,
    document: bytes,
    platform_id: bytes,
    le_mrsigner: bytes,
    time: str,
) -> tuple[LogRecord, LogHead]:
    """The first record of a new log segment (seq 0, chained to :data:`GENESIS`), written by
    the launch enclave itself after it verified the owner-signed ``document`` that opened the
    segment: a recovery document (``cause`` "recovery") or the platform-mode document naming
    this launch-enclave signer (``cause`` "handover"). ``epoch`` is the monotonic counter value
    of the state that commits this record, so epochs only grow on a platform.

    Raises:
        MalformedInput: an unknown cause, or a document over :data:`MAX_EPOCH_DOCUMENT`.
    """
    if cause not in EPOCH_CAUSES:
        raise MalformedInput(f"epoch record: unknown cause {cause!r}")
    if len(document) > MAX_EPOCH_DOCUMENT:
        raise MalformedInput(
            f"epoch record: the owner's document is {len(document)} bytes, more than "
            f"{MAX_EPOCH_DOCUMENT}"
        )
    body = canonical(
        {
            "kind": EPOCH,
            "epoch": epoch,
            "cause": cause,
            "document": base64.b64encode(document).decode(),
            "platform_id": platform_id.hex(),
            "le_mrsigner": le_mrsigner.hex(),
            "time": time,
            "seq": 0,
            "prev": GENESIS.hex(),
        }
    )
    record = LogRecord(body=body, mac=hmac.new(key, body, hashlib.sha256).digest())
    return record, LogHead(1, record.hash)


def attest_reportdata(nonce: bytes, platform_id: bytes, head: LogHead) -> bytes:
    """REPORTDATA of the attested log head: SHA-256(:data:`ATTEST_DOMAIN` ‖ u8 len(nonce) ‖
    nonce ‖ platform id (32 bytes) ‖ record count (u64 little-endian) ‖ chain head (32 bytes))
    ‖ 32 zero bytes.

    Raises:
        MalformedInput: the nonce is empty or over :data:`MAX_NONCE` bytes, or the platform id
            or head hash is not 32 bytes.
    """
    if not 0 < len(nonce) <= MAX_NONCE:
        raise MalformedInput(f"the nonce must be 1 to {MAX_NONCE} bytes, got {len(nonce)}")
    if len(platform_id) != 32 or len(head.hash) != 32:
        raise MalformedInput("the platform id and the chain head are 32 bytes each")
    digest = hashlib.sha256(
        ATTEST_DOMAIN
        + bytes((len(nonce),))
        + nonce
        + platform_id
        + head.count.to_bytes(8, "little")
        + head.hash
    ).digest()
    return digest + bytes(32)


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


# -- the export format -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportedLog:
    """An export read by :func:`read_export` (nothing verified yet).

    Attributes:
        header: the header line's fields (the exporting host's claims: informational only).
        first_seq: the ``seq`` of the first record line.
        bodies: each record line, exactly (the canonical body the launch enclave chained).
    """

    header: Mapping[str, Any]
    first_seq: int
    bodies: Sequence[bytes]


@dataclass(frozen=True, slots=True)
class Chain:
    """The chain recomputed over an export (:func:`chain_export`).

    Attributes:
        head: record count (``first_seq`` + the records) and the last record's hash.
        first_prev: the first record's ``prev`` (what the export chains to).
        hashes: the hash of each exported record, in order.
        first: the first record's fields (``None`` for an empty export).
    """

    head: LogHead
    first_prev: bytes
    hashes: Sequence[bytes]
    first: Mapping[str, Any] | None


_HEADER_REQUIRED = ("format", "first_seq")
_HEADER_OPTIONAL = ("platform_id", "le_mrsigner", "count", "head", "attested")


def export_log(
    blobs: Sequence[bytes],
    *,
    platform_id: bytes,
    le_mrsigner: bytes,
    first_seq: int = 0,
    attested: Mapping[str, Any] | None = None,
) -> bytes:
    """The JSON-lines export of a stored log segment (``blobs``: MAC ‖ body, in ``seq`` order)
    from record ``first_seq`` on.

    Line 1 is the header ``{"format": EXPORT_FORMAT, "first_seq", "count", "head",
    "platform_id", "le_mrsigner"[, "attested": {"nonce", "count", "head"}]}`` (the exporting
    host's claims: a verifier uses them only to explain a refusal). Every further line is one
    record body exactly as the launch enclave chained it (canonical JSON, ASCII, no line break);
    SHA-256 of the line (without its ``\\n``) is the record's hash. No MAC is exported.

    Raises:
        UsageError: ``first_seq`` is beyond the segment.
        LogTampered: a stored record is not a record (too short or long, or holds a line break).
    """
    if not 0 <= first_seq <= len(blobs):
        raise UsageError(f"the log has {len(blobs)} records; cannot export from record {first_seq}")
    lines = []
    for index in range(first_seq, len(blobs)):
        blob = blobs[index]
        if not 32 < len(blob) <= 32 + MAX_RECORD_BYTES or b"\n" in blob[32:]:
            raise LogTampered(
                f"launch-log record {index}: a stored record of {len(blob)} bytes that the "
                "launch enclave did not write (`sgxlaunch log verify` names the damage)",
                index=index,
            )
        lines.append(bytes(blob[32:]))
    last = hashlib.sha256(blobs[-1][32:]).digest() if blobs else GENESIS
    header: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "first_seq": first_seq,
        "count": len(blobs),
        "head": last.hex(),
        "platform_id": platform_id.hex(),
        "le_mrsigner": le_mrsigner.hex(),
    }
    if attested is not None:
        header["attested"] = dict(attested)
    return b"\n".join([canonical(header), *lines]) + b"\n"


def read_export(data: bytes) -> ExportedLog:
    """Read an export (:func:`export_log`) strictly; the records are not checked here.

    Checks, in order: a header line that is a JSON object with ``format`` =
    :data:`EXPORT_FORMAT` and an integer ``first_seq`` ≥ 0 (and only the known fields, of
    the right types); no empty line but the one after the final line break; each record line
    at most :data:`MAX_RECORD_BYTES`.

    Raises:
        MalformedInput: naming the line (1-based) at fault.
    """
    from sgxlaunch.policy import _json

    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        raise MalformedInput("launch-log export is empty (expected a header line)", field="line 1")
    if len(lines[0]) > MAX_RECORD_BYTES:
        raise MalformedInput("launch-log export: the header line is too long", field="line 1")
    header = _json.expect_object(
        _json.loads_strict(lines[0], what="launch-log export header"), "header"
    )
    _json.check_keys(header, required=_HEADER_REQUIRED, optional=_HEADER_OPTIONAL, field="header")
    if header["format"] != EXPORT_FORMAT:
        raise MalformedInput(
            f"launch-log export: format {str(header['format'])[:64]!r}, expected {EXPORT_FORMAT!r}",
            field="header.format",
        )
    first_seq = _json.get_int(header, "first_seq", "header", low=0, high=(1 << 63) - 1)
    for key in ("platform_id", "le_mrsigner", "head"):
        if key in header:
            _json.get_hex(header, key, "header", 32)
    if "count" in header:
        _json.get_int(header, "count", "header", low=0, high=(1 << 63) - 1)
    if "attested" in header:
        attested = _json.expect_object(header["attested"], "header.attested")
        _json.check_keys(attested, required=("nonce", "count", "head"), field="header.attested")
        nonce = _json.get_str(attested, "nonce", "header.attested")
        _json.parse_hex(nonce, len(nonce) // 2, "header.attested.nonce")
        _json.get_int(attested, "count", "header.attested", low=0, high=(1 << 63) - 1)
        _json.get_hex(attested, "head", "header.attested", 32)
    bodies = lines[1:]
    for number, body in enumerate(bodies, start=2):
        if not body or len(body) > MAX_RECORD_BYTES:
            raise MalformedInput(
                f"launch-log export: line {number} is "
                + ("empty" if not body else f"{len(body)} bytes, more than {MAX_RECORD_BYTES}"),
                field=f"line {number}",
            )
    return ExportedLog(header=header, first_seq=first_seq, bodies=bodies)


_PREV_KEY = b'"prev":"'


def chain_export(exported: ExportedLog) -> Chain:
    """Recompute the keyless chain over an export: each record's ``seq`` is its position
    (``first_seq`` + index), each ``prev`` the hash of the record before it (the first record's
    ``prev`` is :data:`GENESIS` when ``first_seq`` is 0, and is returned as ``first_prev``
    otherwise), an epoch record only at ``seq`` 0.

    Fast path: the first record is parsed whole; each later one is checked by its bytes — the
    key ``"prev":"`` occurs in it exactly once, followed by the hex hash of the record before.
    In canonical JSON that key can occur only as a key (a quote inside a string is escaped), so
    in a record the launch enclave wrote the one occurrence is its own ``prev``. That suffices:
    the last record hashes to the attested head, so it is the enclave's (SHA-256 preimage
    resistance); its one ``"prev":"`` is its real ``prev``, which the record before hashes to,
    so that one is the enclave's too, and so on back to the first. The collector compares the
    head with REPORTDATA before it trusts anything here. A record that fails the fast check (or
    holds a nested ``prev`` key) is checked by the full parse, which also names the fault.

    Raises:
        LogTampered: naming the first record (its ``seq``) that is not JSON, out of place, or
            does not chain to the one before (a record removed, inserted, reordered or edited).
    """
    bodies = exported.bodies
    if not bodies:
        return _chain_parsed(exported)
    first = _parse_record(bodies[0], exported.first_seq)
    sha256 = hashlib.sha256
    key = _PREV_KEY
    hashes = [sha256(bodies[0]).digest()]
    append = hashes.append
    expected = hashes[0].hex().encode() + b'"'
    for body in bodies[1:]:
        at = body.find(key) + 8
        if at == 7 or body[at : at + 65] != expected or body.find(key, at) != -1:
            return _chain_parsed(exported)  # the full parse decides and names the fault
        digest = sha256(body).digest()
        append(digest)
        expected = digest.hex().encode() + b'"'
    digest = hashes[-1]
    seq, prev = first["seq"], first["prev"]
    if seq != exported.first_seq or type(prev) is not str or len(prev) != 64:
        return _chain_parsed(exported)
    if exported.first_seq == 0 and prev != GENESIS.hex():
        return _chain_parsed(exported)
    try:
        first_prev = bytes.fromhex(prev)
    except ValueError:
        return _chain_parsed(exported)
    if first.get("kind") == EPOCH and seq != 0:
        return _chain_parsed(exported)
    head = LogHead(exported.first_seq + len(bodies), digest)
    return Chain(head, first_prev, hashes, first)


def _parse_record(body: bytes, seq: int) -> dict[str, Any]:
    try:
        fields = json.loads(body)
    except (ValueError, RecursionError):
        raise LogTampered(f"launch-log record {seq}: not JSON", index=seq) from None
    if type(fields) is not dict:
        raise LogTampered(f"launch-log record {seq}: not a JSON object", index=seq)
    return fields


def _chain_parsed(exported: ExportedLog) -> Chain:
    """:func:`chain_export` by parsing every record (the reference, and the diagnosis)."""
    sha256 = hashlib.sha256
    loads = json.loads
    first_seq = exported.first_seq
    hashes: list[bytes] = []
    prev_hex = GENESIS.hex() if first_seq == 0 else None
    first_prev = GENESIS
    first: Mapping[str, Any] | None = None
    seq = first_seq
    for body in exported.bodies:
        try:
            fields = loads(body)
        except (ValueError, RecursionError):
            raise LogTampered(f"launch-log record {seq}: not JSON", index=seq) from None
        if type(fields) is not dict:
            raise LogTampered(f"launch-log record {seq}: not a JSON object", index=seq)
        found = fields.get("seq")
        if found != seq or type(found) is not int:
            raise LogTampered(
                f"launch-log record {seq}: missing or out of order (a record removed, inserted "
                "or reordered)",
                index=seq,
                expected=f"seq {seq}",
                found=f"seq {found!r}"[:80],
            )
        prev = fields.get("prev")
        if prev_hex is None:
            if type(prev) is not str or len(prev) != 64:
                raise LogTampered(f"launch-log record {seq}: prev is not a hash", index=seq)
            try:
                first_prev = bytes.fromhex(prev)
            except ValueError:
                raise LogTampered(
                    f"launch-log record {seq}: prev is not a hash", index=seq
                ) from None
        elif prev != prev_hex:
            raise LogTampered(
                f"launch-log record {seq}: does not chain to record {seq - 1} (a record edited, "
                "removed, inserted or reordered)",
                index=seq,
                expected=f"prev {prev_hex}",
                found=f"prev {str(prev)[:64]}",
            )
        if fields.get("kind") == EPOCH and seq != 0:
            raise LogTampered(
                f"launch-log record {seq}: an epoch record opens a segment (seq 0) only",
                index=seq,
            )
        if first is None:
            first = fields
        digest = sha256(body).digest()
        hashes.append(digest)
        prev_hex = digest.hex()
        seq += 1
    last = hashes[-1] if hashes else first_prev
    return Chain(LogHead(seq, last), first_prev, hashes, first)


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
    "ATTEST_DOMAIN",
    "CODE_KEY_ADDED",
    "CODE_KEY_RELEASE",
    "DYNAMIC",
    "EMPTY_HEAD",
    "EPOCH",
    "EPOCH_CAUSES",
    "EXPORT_FORMAT",
    "GENESIS",
    "MAX_NONCE",
    "OUTCOME",
    "Chain",
    "ExportedLog",
    "LogHead",
    "LogRecord",
    "LogTampered",
    "attest_reportdata",
    "bound_facts",
    "canonical",
    "chain_export",
    "check_exactly_once",
    "decode_record",
    "export_log",
    "make_epoch_record",
    "make_record",
    "parse_records",
    "read_export",
    "record_key",
    "summarise_reasons",
    "verify_log",
]
