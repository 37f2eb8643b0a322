"""The remote collector: an exported launch log checked against a head the launch enclave
attested, on another machine, with no home and no MAC key (issue 19; ``docs/launch.md``).

What the platform hands over (``sgxlaunch log attest``): a DCAP quote of the launch enclave's
REPORT whose REPORTDATA is :func:`~sgxlaunch.launch.log.attest_reportdata` (the collector's
nonce, the machine's platform id, the committed record count and chain head), and the records
it attests in the export format (:func:`~sgxlaunch.launch.log.export_log`).

:func:`verify_log_quote` checks, in order:

1. the owner root (a threshold of its own keys) and from it the MRENCLAVE of the owner's launch
   enclave (:func:`~sgxlaunch.launch.enclave.launch_enclave_image`);
2. the quote (:func:`~sgxlaunch.attest.verify.verify_quote`: collateral, the pinned root,
   dcap-qvl) — then :func:`verify_attested_log` on its report body:
3. the quoted enclave is the launch enclave: not DEBUG, MRSIGNER the one named, MRENCLAVE the
   launch enclave of that owner root (:class:`LaunchEnclaveMismatch`);
4. the export reads strictly and its records chain (``seq`` in order, each ``prev`` the hash
   of the record before; :class:`~sgxlaunch.launch.log.LogTampered` names the first bad one);
5. REPORTDATA equals the one recomputed from the nonce asked for, the platform id named and the
   chain's head: otherwise a replayed quote (:class:`NonceMismatch`), a quote from another
   platform (:class:`~sgxlaunch.errors.PlatformMismatch`), or records that do not end at the
   attested head (:class:`~sgxlaunch.launch.log.LogTampered`) — told apart with the exporting
   host's header claims, which are never trusted for the decision itself;
6. an epoch record opening the export (seq 0) carries an owner-signed document that opens it:
   a recovery document for this platform at the counter value before the epoch, or a mode
   document naming this launch-enclave signer (:class:`EpochRefused`);
7. with a collector state (:class:`CollectorState`): the records extend the (epoch, count,
   head) verified before for this platform — same epoch, at least as many records, the stored
   head at its position (:class:`StaleHead`, :class:`LogForked`) — or open a later epoch.

Only then is the new state returned (the caller writes it). Bytes and ``now`` in: no files.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sgxlaunch.arch.constants import AttributeFlag
from sgxlaunch.errors import MalformedInput, PlatformMismatch, Rollback, VerificationFailed
from sgxlaunch.launch.enclave import (
    LE_ISVPRODID,
    RECOVERY_PAYLOAD_TYPE,
    launch_enclave_image,
    recovery_fields,
)
from sgxlaunch.launch.log import (
    EPOCH,
    EPOCH_CAUSES,
    MAX_EPOCH_DOCUMENT,
    Chain,
    ExportedLog,
    LogHead,
    LogTampered,
    attest_reportdata,
    chain_export,
    read_export,
)
from sgxlaunch.policy import _json
from sgxlaunch.policy.control import MAX_MODE_ENVELOPE_SIZE, MODE_PAYLOAD_TYPE, ModeDocument
from sgxlaunch.policy.root import ROOT_PAYLOAD_TYPE, OwnerRoot
from sgxlaunch.policy.state import check_envelope, check_platform_id, check_signatures

STATE_FORMAT = "sgxlaunch/launch-log-collector/1"
"""The ``format`` of a collector state file (:class:`CollectorState`)."""
MAX_STATE_SIZE = 16 << 20
_MAX_ROOT_ENVELOPE = 2 << 20
_MAX_SEQ = (1 << 63) - 1


class LaunchEnclaveMismatch(VerificationFailed):
    """The quoted enclave is not the owner's launch enclave (signer, measurement or DEBUG)."""

    check = "launch-enclave"


class NonceMismatch(VerificationFailed):
    """The quote answers another nonce: a replayed quote."""

    check = "nonce"


class StaleHead(Rollback):
    """The attested log is behind what the collector already verified for the platform."""

    check = "launch-log-stale"


class LogForked(VerificationFailed):
    """The attested log does not extend the head the collector verified: a fork."""

    check = "launch-log-fork"


class EpochRefused(VerificationFailed):
    """An epoch record whose owner-signed document does not open it."""

    check = "launch-log-epoch"


# -- the collector's state --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlatformEntry:
    """What the collector verified last for one platform: the epoch (the monotonic counter value
    that opened the log segment; 0 for the first segment), the record count and the chain head."""

    epoch: int
    count: int
    head: bytes

    def describe(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "count": self.count, "head": self.head.hex()}


@dataclass(frozen=True, slots=True)
class CollectorState:
    """The collector's state: one :class:`PlatformEntry` per platform id.

    File form (canonical JSON)::

        {"format": "sgxlaunch/launch-log-collector/1",
         "platforms": {"<platform id hex>": {"epoch": E, "count": N, "head": "<hex>"}}}
    """

    platforms: Mapping[bytes, PlatformEntry] = field(default_factory=dict)

    @classmethod
    def from_bytes(cls, data: bytes) -> CollectorState:
        """Read a state file strictly (known fields only, each of its type).

        Raises:
            MalformedInput: naming the field at fault.
        """
        if len(data) > MAX_STATE_SIZE:
            raise MalformedInput(f"collector state is more than {MAX_STATE_SIZE} bytes")
        doc = _json.expect_object(_json.loads_strict(data, what="collector state"), "state")
        _json.check_keys(doc, required=("format", "platforms"), field="state")
        if doc["format"] != STATE_FORMAT:
            raise MalformedInput(
                f"collector state: format {str(doc['format'])[:64]!r}, expected {STATE_FORMAT!r}",
                field="state.format",
            )
        platforms = _json.expect_object(doc["platforms"], "state.platforms")
        out: dict[bytes, PlatformEntry] = {}
        for key, value in platforms.items():
            where = f"state.platforms.{key[:64]}"
            pid = _json.parse_hex(key, 32, where)
            entry = _json.expect_object(value, where)
            _json.check_keys(entry, required=("epoch", "count", "head"), field=where)
            out[pid] = PlatformEntry(
                epoch=_json.get_int(entry, "epoch", where, low=0, high=_MAX_SEQ),
                count=_json.get_int(entry, "count", where, low=0, high=_MAX_SEQ),
                head=_json.get_hex(entry, "head", where, 32),
            )
        return cls(out)

    def to_bytes(self) -> bytes:
        platforms = {pid.hex(): e.describe() for pid, e in sorted(self.platforms.items())}
        return _json.dumps_canonical({"format": STATE_FORMAT, "platforms": platforms}) + b"\n"

    def with_entry(self, platform_id: bytes, entry: PlatformEntry) -> CollectorState:
        return CollectorState({**self.platforms, platform_id: entry})


# -- what the collector expects -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the collector asks for and knows out of band.

    Attributes:
        nonce: the nonce it gave ``log attest`` (1 to 64 bytes).
        platform_id: the platform it asked (32 bytes).
        le_mrsigner: MRSIGNER of the owner's launch enclave.
        owner_root: the owner root envelope (it fixes the launch enclave's MRENCLAVE and
            verifies epoch documents).
    """

    nonce: bytes
    platform_id: bytes
    le_mrsigner: bytes
    owner_root: bytes


@dataclass(frozen=True, slots=True)
class AttestedLog:
    """A verified export.

    Attributes:
        platform_id: the platform.
        epoch: the log segment's epoch.
        head: the attested record count and chain head.
        first_seq: the first exported record.
        epoch_record: the epoch record's cause and epoch, when the export opens with one.
        le_mrenclave, le_mrsigner: the launch enclave's identity, as quoted.
        previous: the collector's entry before (``None``: no state given, or a new platform).
        state: the collector's new state (``None`` when no state was given).
        change: ``created``, ``extended``, ``unchanged``, ``new-epoch`` or ``None`` (no state).
    """

    platform_id: bytes
    epoch: int
    head: LogHead
    first_seq: int
    epoch_record: Mapping[str, Any] | None
    le_mrenclave: bytes
    le_mrsigner: bytes
    previous: PlatformEntry | None = None
    state: CollectorState | None = None
    change: str | None = None

    @property
    def new_records(self) -> int:
        """Records the collector had not verified before (all of them without a state)."""
        if self.previous is None or self.change == "new-epoch":
            return self.head.count
        return self.head.count - self.previous.count

    def describe(self) -> dict[str, Any]:
        return {
            "valid": True,
            "platform_id": self.platform_id.hex(),
            "epoch": self.epoch,
            "count": self.head.count,
            "head": self.head.hash.hex(),
            "first_seq": self.first_seq,
            "new_records": self.new_records,
            "epoch_record": None if self.epoch_record is None else dict(self.epoch_record),
            "le_mrenclave": self.le_mrenclave.hex(),
            "le_mrsigner": self.le_mrsigner.hex(),
            "state": self.change,
            "previous": None if self.previous is None else self.previous.describe(),
        }


# -- the checks ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def owner_root(data: bytes) -> tuple[OwnerRoot, bytes]:
    """The owner root envelope checked (a threshold of its own keys) and the MRENCLAVE of its
    launch enclave. Expiry is not checked: the collector judges records made in the past.

    Raises:
        MalformedInput: not an owner root envelope.
        ThresholdNotMet: its own keys do not sign it.
    """
    envelope = check_envelope(data, ROOT_PAYLOAD_TYPE, max_size=_MAX_ROOT_ENVELOPE)
    root = OwnerRoot.from_payload(envelope.payload)
    check_signatures(envelope, root, "owner root (its own keys)")
    digest = hashlib.sha256(envelope.payload).digest()
    return root, launch_enclave_image(digest).mrenclave()


def check_launch_enclave(body: Any, le_mrsigner: bytes, le_mrenclave: bytes) -> None:
    """The quoted report body is the owner's launch enclave, non-debug.

    Checks, in order: ATTRIBUTES.DEBUG clear; MRSIGNER = ``le_mrsigner``; MRENCLAVE =
    ``le_mrenclave``; ISVPRODID = the launch enclave's.

    Raises:
        LaunchEnclaveMismatch: naming the field, expected and found.
    """
    if body.attributes.flags & int(AttributeFlag.DEBUG):
        raise LaunchEnclaveMismatch(
            "the quoted enclave is a DEBUG enclave: its memory and keys are open to the host",
            expected="ATTRIBUTES.DEBUG clear",
            found=f"ATTRIBUTES.FLAGS 0x{body.attributes.flags:x}",
        )
    if not hmac.compare_digest(body.mrsigner, le_mrsigner):
        raise LaunchEnclaveMismatch(
            "the quote is from another enclave signer, not the named launch-enclave signer",
            expected=f"MRSIGNER {le_mrsigner.hex()}",
            found=f"MRSIGNER {body.mrsigner.hex()}",
        )
    if not hmac.compare_digest(body.mrenclave, le_mrenclave):
        raise LaunchEnclaveMismatch(
            "the quoted enclave is not the launch enclave of this owner root",
            expected=f"MRENCLAVE {le_mrenclave.hex()}",
            found=f"MRENCLAVE {body.mrenclave.hex()}",
        )
    if body.isvprodid != LE_ISVPRODID:
        raise LaunchEnclaveMismatch(
            "the quoted enclave is not the launch enclave (ISVPRODID)",
            expected=f"ISVPRODID {LE_ISVPRODID}",
            found=f"ISVPRODID {body.isvprodid}",
        )


def check_reportdata(
    reportdata: bytes, exported: ExportedLog, head: LogHead, expect: Expectation
) -> None:
    """REPORTDATA binds the nonce asked for, the platform named and the records' head.

    The decision is one comparison with the value recomputed from what the collector knows.
    When it fails, the exporting host's header claims (``attested``, ``platform_id``), if they
    reproduce the quoted REPORTDATA, say which of the three differs.

    Raises:
        NonceMismatch: a replayed quote (another nonce).
        PlatformMismatch: a quote from another platform.
        LogTampered: the records do not end at the attested head.
        VerificationFailed: it differs and the header does not say why.
    """
    want = attest_reportdata(expect.nonce, expect.platform_id, head)
    if hmac.compare_digest(reportdata, want):
        return
    claims = _claims(exported.header)
    if claims is not None and hmac.compare_digest(attest_reportdata(*claims), reportdata):
        nonce, platform_id, attested = claims
        if nonce != expect.nonce:
            raise NonceMismatch(
                "replayed quote: it answers another nonce",
                expected=f"nonce {expect.nonce.hex()}",
                found=f"nonce {nonce.hex()}",
            )
        if platform_id != expect.platform_id:
            raise PlatformMismatch(
                "the quote is from another platform",
                expected=f"platform_id {expect.platform_id.hex()}",
                found=f"platform_id {platform_id.hex()}",
            )
        raise LogTampered(
            "the records do not end at the attested head (records removed at the end, or the "
            "last record edited)",
            index=min(attested.count, head.count),
            expected=f"{attested.count} records ending {attested.hash.hex()}",
            found=f"{head.count} records ending {head.hash.hex()}",
        )
    raise VerificationFailed(
        "REPORTDATA does not bind this nonce, this platform and these records: a replayed "
        "quote, a quote from another platform, or records that do not end at the attested head",
        expected=want[:32].hex(),
        found=reportdata[:32].hex(),
    )


def _claims(header: Mapping[str, Any]) -> tuple[bytes, bytes, LogHead] | None:
    attested = header.get("attested")
    platform_id = header.get("platform_id")
    if not isinstance(attested, Mapping) or not isinstance(platform_id, str):
        return None
    try:
        nonce = bytes.fromhex(attested["nonce"])
        if not 0 < len(nonce) <= 64:
            return None
        return (
            nonce,
            bytes.fromhex(platform_id),
            LogHead(int(attested["count"]), bytes.fromhex(attested["head"])),
        )
    except (KeyError, TypeError, ValueError):
        return None


def check_epoch_record(
    fields: Mapping[str, Any], root: OwnerRoot, expect: Expectation
) -> dict[str, Any]:
    """An epoch record (the first record of a segment the launch enclave opened after owner
    recovery or a handover) and the owner-signed document it carries.

    Checks, in order: the record's fields (``epoch`` ≥ 1, a known ``cause``, the platform id and
    launch-enclave signer the collector expects, ``document`` base64); the document verifies
    under the owner root (a threshold of its keys); a recovery document names this platform
    and the counter value before the epoch; a mode document is an ``owner`` mode document
    naming this launch-enclave signer and bound to this platform (or to none). Expiry is not
    checked (the launch enclave checked it when it opened the epoch).

    Returns:
        ``{"epoch", "cause"}``.

    Raises:
        EpochRefused: naming what does not hold.
        PlatformMismatch: the record or its document is for another platform.
    """
    try:
        epoch = _json.get_int(dict(fields), "epoch", "epoch record", low=1, high=_MAX_SEQ)
        cause = _json.get_str(dict(fields), "cause", "epoch record")
        platform_id = _json.get_hex(dict(fields), "platform_id", "epoch record", 32)
        signer = _json.get_hex(dict(fields), "le_mrsigner", "epoch record", 32)
        text = _json.get_str(dict(fields), "document", "epoch record")
        document = base64.b64decode(text, validate=True)
    except (MalformedInput, KeyError, binascii.Error, ValueError) as exc:
        raise EpochRefused(
            f"launch-log record 0: not an epoch record the enclave writes: {exc}"
        ) from None
    if cause not in EPOCH_CAUSES or len(document) > MAX_EPOCH_DOCUMENT:
        raise EpochRefused(f"launch-log record 0: an epoch record with cause {cause[:32]!r}")
    if platform_id != expect.platform_id:
        raise PlatformMismatch(
            "launch-log record 0: the epoch record is for another platform",
            expected=f"platform_id {expect.platform_id.hex()}",
            found=f"platform_id {platform_id.hex()}",
        )
    if signer != expect.le_mrsigner:
        raise EpochRefused(
            "launch-log record 0: the epoch record is another launch-enclave signer's",
            expected=expect.le_mrsigner.hex(),
            found=signer.hex(),
        )
    try:
        if cause == "recovery":
            envelope = check_envelope(document, RECOVERY_PAYLOAD_TYPE, max_size=64 << 10)
            check_signatures(envelope, root, "recovery document")
            bound, counter = recovery_fields(envelope.payload)
            check_platform_id(bound, expect.platform_id)
            if counter != epoch - 1:
                raise EpochRefused(
                    "launch-log record 0: the recovery document is for another counter value",
                    expected=f"counter {epoch - 1}",
                    found=f"counter {counter}",
                )
        else:
            envelope = check_envelope(document, MODE_PAYLOAD_TYPE, max_size=MAX_MODE_ENVELOPE_SIZE)
            check_signatures(envelope, root, "platform-mode document")
            mode = ModeDocument.from_payload(envelope.payload)
            check_platform_id(mode.platform_id, expect.platform_id)
            if mode.mode != "owner" or mode.le_mrsigner != expect.le_mrsigner:
                raise EpochRefused(
                    "launch-log record 0: the mode document does not name this launch-enclave "
                    "signer",
                    expected=f"owner mode, le_mrsigner {expect.le_mrsigner.hex()}",
                    found=f"{mode.mode} mode, le_mrsigner "
                    + ("none" if mode.le_mrsigner is None else mode.le_mrsigner.hex()),
                )
    except MalformedInput as exc:
        raise EpochRefused(f"launch-log record 0: the owner's document: {exc.message}") from None
    except (EpochRefused, PlatformMismatch):
        raise
    except VerificationFailed as exc:
        raise EpochRefused(
            f"launch-log record 0: the owner's document does not verify: {exc.message}",
            detail=list(exc.detail),
        ) from None
    return {"epoch": epoch, "cause": cause}


def _extend(entry: PlatformEntry, epoch: int, chain: Chain, first_seq: int) -> str:
    """Same epoch: the chain extends the stored head. Returns ``extended`` or ``unchanged``.

    Raises:
        StaleHead, LogForked, LogTampered.
    """
    count = chain.head.count
    if count < entry.count:
        raise StaleHead(
            "stale head: the attested log is behind the one this collector verified",
            expected=f"epoch {epoch}, at least {entry.count} records",
            found=f"{count} records ending {chain.head.hash.hex()}",
        )
    if first_seq > entry.count:
        raise LogTampered(
            f"the export starts at record {first_seq}; records {entry.count}..{first_seq - 1} "
            "after the verified head are missing",
            index=entry.count,
        )
    if entry.count == 0:
        found = chain.first_prev if first_seq == 0 else b""
        ok = first_seq == 0
    elif first_seq == entry.count:
        found = chain.first_prev
        ok = hmac.compare_digest(found, entry.head)
    else:
        found = chain.hashes[entry.count - 1 - first_seq]
        ok = hmac.compare_digest(found, entry.head)
    if not ok:
        raise LogForked(
            f"forked log: record {entry.count - 1} is not the one this collector verified (two "
            "different extensions of the same head)",
            expected=f"record {entry.count - 1} hashing to {entry.head.hex()}",
            found=f"hash {found.hex()}",
        )
    return "unchanged" if count == entry.count else "extended"


def verify_attested_log(
    body: Any,
    export: bytes,
    expect: Expectation,
    *,
    state: CollectorState | None = None,
) -> AttestedLog:
    """Steps 1 and 3–7 of the module docstring on a report body whose quote verified.

    Args:
        body: the quote's report body (``mrenclave``, ``mrsigner``, ``attributes``,
            ``isvprodid``, ``reportdata``).
        export: the export's bytes.
        expect: the nonce, platform id, launch-enclave signer and owner root.
        state: the collector's state, or ``None`` to check the export on its own (then it
            must start at record 0).

    Raises:
        MalformedInput: the owner root, the export or the state is malformed.
        VerificationFailed: see the module docstring (the subclass names the check).
    """
    root, le_mrenclave = owner_root(expect.owner_root)
    check_launch_enclave(body, expect.le_mrsigner, le_mrenclave)
    exported = read_export(export)
    entry = None if state is None else state.platforms.get(expect.platform_id)
    first_seq = exported.first_seq
    if first_seq > 0 and entry is None:
        raise LogTampered(
            f"the export starts at record {first_seq}: without this collector's state for the "
            "platform, records 0.."
            f"{first_seq - 1} are needed",
            index=0,
        )
    if not exported.bodies and first_seq > 0:
        assert entry is not None
        if first_seq != entry.count:
            raise LogTampered(
                f"an empty export after record {first_seq} does not meet the verified head "
                f"({entry.count} records)",
                index=min(first_seq, entry.count),
            )
        chain = Chain(LogHead(first_seq, entry.head), entry.head, (), None)
    else:
        chain = chain_export(exported)
    check_reportdata(body.reportdata, exported, chain.head, expect)
    epoch_record = None
    if first_seq == 0:
        epoch = 0
        if chain.first is not None and chain.first.get("kind") == EPOCH:
            epoch_record = check_epoch_record(chain.first, root, expect)
            epoch = epoch_record["epoch"]
    else:
        assert entry is not None
        epoch = entry.epoch
    result = AttestedLog(
        platform_id=expect.platform_id,
        epoch=epoch,
        head=chain.head,
        first_seq=first_seq,
        epoch_record=epoch_record,
        le_mrenclave=body.mrenclave,
        le_mrsigner=body.mrsigner,
    )
    if state is None:
        return result
    if entry is None:
        change = "created"
    elif epoch > entry.epoch:
        change = "new-epoch"
    elif epoch < entry.epoch:
        raise StaleHead(
            "stale head: the attested log is from an older epoch than the one this collector "
            "verified",
            expected=f"epoch {entry.epoch} or later",
            found=f"epoch {epoch}",
        )
    else:
        change = _extend(entry, epoch, chain, first_seq)
    new = PlatformEntry(epoch=epoch, count=chain.head.count, head=chain.head.hash)
    return replace(
        result, previous=entry, state=state.with_entry(expect.platform_id, new), change=change
    )


def verify_log_quote(
    quote: bytes,
    collateral: Any,
    now: datetime,
    export: bytes,
    expect: Expectation,
    *,
    anchor: Any,
    state: CollectorState | None = None,
) -> tuple[AttestedLog, Any]:
    """The whole remote check: the quote (:func:`~sgxlaunch.attest.verify.verify_quote` with
    ``collateral`` at ``now`` under ``anchor``), then :func:`verify_attested_log` on its body.

    Returns:
        The verified log and the verified quote (TCB status, advisories).

    Raises:
        MalformedInput, VerificationFailed: see :func:`verify_attested_log` and
            :func:`~sgxlaunch.attest.verify.verify_quote`.
    """
    from sgxlaunch.attest.verify import verify_quote
    from sgxlaunch.formats.quote import ReportBody

    owner_root(expect.owner_root)  # a bad owner root is named before the quote is judged
    verified = verify_quote(quote, collateral, now, anchor=anchor)
    body = verified.quote.body
    if not isinstance(body, ReportBody):
        raise LaunchEnclaveMismatch(
            "the quote is a TDX quote, not an SGX enclave's",
            expected="an SGX quote of the launch enclave",
            found="a TD report body",
        )
    return verify_attested_log(body, export, expect, state=state), verified


__all__ = [
    "STATE_FORMAT",
    "AttestedLog",
    "CollectorState",
    "EpochRefused",
    "Expectation",
    "LaunchEnclaveMismatch",
    "LogForked",
    "NonceMismatch",
    "PlatformEntry",
    "StaleHead",
    "check_epoch_record",
    "check_launch_enclave",
    "check_reportdata",
    "owner_root",
    "verify_attested_log",
    "verify_log_quote",
]
