"""The owner launch enclave: evaluates the owner's policy inside the emulated CPU and mints
EINITTOKENs; keeps the policy high-water mark and the launch-log head sealed.

Its image (:func:`launch_enclave_image`) is built deterministically from the program's code and
the owner root's digest (a measured page), so MRENCLAVE binds both: a different root means a
different launch enclave, which the owner must sign again. The owner signs it with an SGX key
(RSA-3072, e = 3); that MRSIGNER is what ``owner`` mode puts in IA32_SGXLEPUBKEYHASH.

The SIGSTRUCT leaves EINITTOKEN_KEY out of ATTRIBUTEMASK, so the same signed enclave runs with
the attribute (``owner`` mode: it can mint tokens) and without it (``permissive`` mode, where
mainline never grants it: it still keeps the launch log). Its seal key (KEYPOLICY = MRSIGNER,
ATTRIBUTEMASK without EINITTOKEN_KEY) is the same in both.

Freshness: what the enclave commits (:class:`LeState`: policy and mode document in force, the
launch-log head, the time floor) is sealed in the home and its digest is held by the machine's
monotonic counter (an emulator extension, :mod:`sgxlaunch.cpu.machine`). The counter belongs
to one enclave identity: MRSIGNER and ISVPRODID of the launch enclave that first advanced it.
A change is a compare-and-set from (N, digest of the committed state) to (N + 1, digest of the
new state), made only after the host stored the new state (ADVANCE). On LOAD the enclave
accepts the committed state, or an N + 1 state chaining to it (and finishes the advance);
anything else — older, another N + 1, or missing while the counter is above zero — refuses.
When the owner's mode document names another launch-enclave signer, the current enclave hands
the counter over with the same compare-and-set (its next owner is the named signer's identity)
and gives the host the new state in plaintext; the new enclave adopts it because the counter
holds its digest.

ECALL contract: :mod:`sgxlaunch.launch.ecalls` (one frozen request and reply type per call,
a compact binary encoding parsed strictly and bounded inside the enclave, errors by code).

Trust: the enclave evaluates the policy only on the fields of a SIGSTRUCT whose signature it
verified (cached by all 1 808 bytes, an exact match); a token's KEYID binds the SIGSTRUCT and the
digest of the policy in force, which the same compare-and-set that commits a policy writes into
the machine's counter slot, where the driver's owner-mode INIT reads it
(:mod:`sgxlaunch.driver.owner`). Every floor (policy version, mode version, time) rises only
from documents the enclave verified. Time comes from the host (SGX has no trusted clock); the
enclave never keeps the host's clock: its time floor is the latest signed ``issued`` time of the
documents it verified, and it uses the later of that floor and the host's time. Until the owner
has installed a document issued after some expiry, a host that sets its clock back can still use
a document that has expired.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sgxlaunch.arch import Attributes, EinitToken, KeyRequest, Report, Sigstruct, TargetInfo
from sgxlaunch.arch.constants import (
    PAGE_SIZE,
    AttributeFlag,
    KeyName,
    KeyPolicy,
    PageType,
    SecinfoFlag,
    secinfo_flags,
)
from sgxlaunch.cpu import EnclaveContext, EnclaveImage, EnclaveProgram, ImagePage, program_image
from sgxlaunch.cpu.faults import EnclaveLeafFailed
from sgxlaunch.cpu.keys import cmac128
from sgxlaunch.driver.grants import grant_reportdata, grant_verdict
from sgxlaunch.driver.owner import DynamicMemory, limits_head, token_keyid
from sgxlaunch.errors import (
    MalformedInput,
    PlatformMismatch,
    Rollback,
    SgxlaunchError,
    UsageError,
    VerificationFailed,
)
from sgxlaunch.launch.ecalls import (
    MINT_REQUEST_SIZE,
    NO_INDEX,
    REQUESTS,
    TOKEN_SIZE,
    AddCodeKeyReply,
    AddCodeKeyRequest,
    AdvanceReply,
    AdvanceRequest,
    Call,
    ClaimReply,
    ClaimRequest,
    GrantReply,
    GrantRequest,
    InstallPolicyReply,
    InstallPolicyRequest,
    LeKeyReply,
    LeKeyRequest,
    LoadReply,
    LoadRequest,
    LogAppendReply,
    LogAppendRequest,
    LogAttestReply,
    LogAttestRequest,
    LogVerifyReply,
    LogVerifyRequest,
    Message,
    MintReply,
    NoteModeReply,
    NoteModeRequest,
    ReleaseChallengeReply,
    ReleaseChallengeRequest,
    ReleaseReply,
    ReleaseRequest,
    decode_mint_request,
    encode_error,
    encode_mint_allowed,
    encode_ok,
    from_seconds,
    mint_allowed_head,
)
from sgxlaunch.launch.log import (
    CODE_KEY_ADDED,
    CODE_KEY_RELEASE,
    EPOCH,
    GRANT,
    LogHead,
    LogTampered,
    attest_reportdata,
    make_epoch_record,
    make_record,
    verify_log,
)
from sgxlaunch.launch.log import LogRecord as _LogRecord
from sgxlaunch.pcl import crypto as pcl
from sgxlaunch.policy import (
    POLICY_KEY,
    ROOT_KEY,
    Decision,
    EnclaveIdentity,
    MemoryStore,
    OwnerRoot,
    TrustedState,
)
from sgxlaunch.policy.envelope import Envelope
from sgxlaunch.policy.state import MODE_KEY, check_envelope, check_signatures
from sgxlaunch.sigstruct import EnclaveSigner, sign, verify

ROOT_PAGE_MAGIC = b"sgxlaunch owner root digest v1\x00\x00"
assert len(ROOT_PAGE_MAGIC) == 32
LE_ISVPRODID = 0x20
LE_ISVSVN = 1
LE_SWDEFINED = 1  # the SDK's "HW version" convention: non-zero marks a launch enclave
_ALL64 = 2**64 - 1
_ALL32 = 2**32 - 1
_EINITTOKEN_KEY = int(AttributeFlag.EINITTOKEN_KEY)
_MODE64 = int(AttributeFlag.MODE64BIT)
_INIT = int(AttributeFlag.INIT)
_KSS = int(AttributeFlag.KSS)
SEAL_ATTRIBUTE_MASK = Attributes(flags=_ALL64 & ~_EINITTOKEN_KEY, xfrm=0)
"""Seal-key ATTRIBUTEMASK: every FLAGS bit but EINITTOKEN_KEY (same key in both modes)."""
LE_ATTRIBUTES = Attributes(flags=_MODE64 | _EINITTOKEN_KEY, xfrm=0x3)
"""The launch enclave's SIGSTRUCT ATTRIBUTES (MODE64BIT | EINITTOKEN_KEY, x87 | SSE)."""
LE_ATTRIBUTEMASK = Attributes(flags=_ALL64 & ~_EINITTOKEN_KEY, xfrm=_ALL64)
"""Its ATTRIBUTEMASK: everything but EINITTOKEN_KEY (so it runs with or without it)."""
_STATE_KEYID = hashlib.sha256(b"sgxlaunch/launch-enclave/sealed-state/v1").digest()
_LOG_KEYID = hashlib.sha256(b"sgxlaunch/launch-enclave/launch-log/v1").digest()
_SEAL_AAD = b"sgxlaunch launch-enclave sealed state v1"
_SEALED_MAGIC = b"sgxlaunch-sealed/v2\x00"
_LE_MASK = Attributes(flags=_ALL64 & ~_MODE64, xfrm=0)
"""MASKEDATTRIBUTESLE mask and the EINITTOKEN key request's ATTRIBUTEMASK."""
KX_KEYID = hashlib.sha256(b"sgxlaunch/launch-enclave/key-agreement-key/v1").digest()
CODE_KEYID = hashlib.sha256(b"sgxlaunch/launch-enclave/code-key/v1").digest()
KX_SEALED_MAGIC = b"sgxlaunch-le-kx-key/v1\x00"
"""Head of the key-agreement key's sealed blob (MRENCLAVE policy)."""
CODE_KEY_SEALED_MAGIC = b"sgxlaunch-code-key/v1\x00"
"""Head of a code key's sealed blob (MRENCLAVE policy)."""
MAX_CHALLENGES = 256
"""Outstanding release challenges one launch-enclave instance keeps (then the oldest goes)."""
_DEBUG = int(AttributeFlag.DEBUG)


def _time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise MalformedInput("launch-enclave call: now must be an RFC 3339 time")
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedInput(f"launch-enclave call: bad time {text!r}") from None
    if value.tzinfo is None:
        raise MalformedInput("launch-enclave call: time must carry a UTC offset")
    return value.astimezone(UTC)


_STATE_DOMAIN = b"sgxlaunch/launch-enclave/state/v1\x00"


def _report_identity(report: Report) -> EnclaveIdentity:
    """The identity the policy judges for a verified REPORT: its fields, ATTRIBUTES without
    INIT (which EINIT sets; MINT evaluated the SECS attributes before it)."""
    return EnclaveIdentity(
        mrenclave=report.mrenclave,
        mrsigner=report.mrsigner,
        isvprodid=report.isvprodid,
        isvsvn=report.isvsvn,
        isvfamilyid=report.isvfamilyid,
        isvextprodid=report.isvextprodid,
        flags=report.attributes.flags & ~_INIT,
        xfrm=report.attributes.xfrm,
        miscselect=report.miscselect,
    )


@dataclass
class LeState:
    """What the launch enclave commits: sealed in the home, its digest in the machine's
    monotonic counter slot.

    Attributes:
        counter: the counter value this state is committed at (≥ 1; 0 is the fresh start).
        prev: hex digest of the state it replaces (the counter slot's digest before the
            advance; 32 zero bytes at the first one).
        counter_owner: hex MRSIGNER of the launch enclave that owns the counter in this state
            (another signer's than the sealing enclave's in a handover).
        policy_version, policy_digest: the launch policy in force ("" / 0: none).
        mode_version, mode_digest: the platform-mode document in force ("" / 0: none).
        log_count, log_head: the launch-log head of the counter owner's segment.
        log_cpusvn: hex CPUSVN the segment's MAC key is derived with (recorded at its first
            record, so the log still verifies after a CPUSVN update; "" before it).
        time_floor: the latest host time seen.
    """

    counter: int = 0
    prev: str = bytes(32).hex()
    counter_owner: str = ""
    policy_version: int = 0
    policy_digest: str = ""
    mode_version: int = 0
    mode_digest: str = ""
    log_count: int = 0
    log_head: str = bytes(32).hex()
    log_cpusvn: str = ""
    time_floor: str = ""

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> bytes:
        """SHA-256 over a domain string and the canonical JSON (what the counter slot holds)."""
        return hashlib.sha256(_STATE_DOMAIN + self.to_json()).digest()

    @classmethod
    def from_json(cls, data: bytes) -> LeState:
        """Parse a state.

        Raises:
            MalformedInput: not a launch-enclave state.
        """
        try:
            value = json.loads(data)
            if not isinstance(value, dict) or set(value) != set(cls().__dict__):
                raise ValueError("fields differ")
            state = cls(**value)
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            raise MalformedInput(f"launch-enclave state: {exc}") from None
        return state

    def copy(self, **changes: Any) -> LeState:
        return LeState(**{**self.__dict__, **changes})


RECOVERY_PAYLOAD_TYPE = "application/vnd.sgxlaunch.recovery+json"
"""DSSE payload type of an owner recovery document (see :func:`recovery_payload`)."""


def recovery_payload(platform_id: bytes, counter: int) -> bytes:
    """The payload the owner signs (a threshold of the root's keys) to restart a platform that
    refuses to start: it names the platform and the counter value it is bound to."""
    return json.dumps(
        {
            "spec_version": "1",
            "type": "recovery",
            "platform_id": platform_id.hex(),
            "counter": counter,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


def recovery_fields(payload: bytes) -> tuple[bytes, int]:
    """The platform id and counter value a recovery payload names.

    Raises:
        MalformedInput: not a version 1 recovery document.
    """
    try:
        value = json.loads(payload)
        if not isinstance(value, dict) or set(value) != {
            "spec_version",
            "type",
            "platform_id",
            "counter",
        }:
            raise ValueError("expected spec_version, type, platform_id, counter")
        if value["spec_version"] != "1" or value["type"] != "recovery":
            raise ValueError("not a version 1 recovery document")
        counter = value["counter"]
        if not isinstance(counter, int) or isinstance(counter, bool) or counter < 0:
            raise ValueError("counter must be a non-negative integer")
        platform_id = bytes.fromhex(value["platform_id"])
        if len(platform_id) != 32:
            raise ValueError("platform_id must be 32 bytes")
    except (ValueError, TypeError, AttributeError) as exc:
        raise MalformedInput(f"recovery document: {exc}") from None
    return platform_id, counter


def check_recovery_document(data: bytes, root: OwnerRoot, platform_id: bytes, counter: int) -> None:
    """A recovery document verifies: a threshold of ``root``'s keys signed it, and it names
    ``platform_id`` and the counter value ``counter``. The launch enclave's check at LOAD (with
    the machine's platform id and counter, under its root); the host makes the same check
    first, so a document that would be refused is refused before anything starts.

    Raises:
        MalformedInput: not a recovery document. ThresholdNotMet: the signatures.
        PlatformMismatch: another platform. Rollback: another counter value.
    """
    envelope = check_envelope(data, RECOVERY_PAYLOAD_TYPE, max_size=64 << 10)
    check_signatures(envelope, root, "recovery document")
    named, bound = recovery_fields(envelope.payload)
    if not hmac.compare_digest(named, platform_id):
        raise PlatformMismatch(
            "the recovery document is for another platform",
            expected=platform_id.hex(),
            found=named.hex(),
        )
    if bound != counter:
        raise Rollback(
            "the recovery document is bound to another counter value",
            expected=f"counter {counter}",
            found=f"counter {bound}",
        )


_REQUEST_TYPES: dict[int, type[Message]] = {int(call): cls for call, cls in REQUESTS.items()}
_NOW_AT = MINT_REQUEST_SIZE - 8
"""Where NOW (u64, the last field) starts in an encoded MINT request."""
_unpack_now = struct.Struct("<Q").unpack_from
_MINT = int(Call.MINT)
_TOKEN_FIELDS = {f.name: f for f in EinitToken.FIELDS}
_TOKEN_KEYID = _TOKEN_FIELDS["keyid"].offset
assert _TOKEN_FIELDS["mac"].offset == _TOKEN_KEYID + 32 and EinitToken.SIZE == _TOKEN_KEYID + 48
_KEYREQUEST_KEYID = next(f.offset for f in KeyRequest.FIELDS if f.name == "keyid")
# The MACed bytes 0..191 around ATTRIBUTES, MRENCLAVE and MRSIGNER (VALID = 1, reserved zero).
_ATTRIBUTES = struct.Struct("<QQ")
assert _ATTRIBUTES.pack(1, 2) == Attributes(flags=1, xfrm=2).to_bytes()
_MACED_ZERO = EinitToken(valid=1).maced_bytes()
_MACED_HEAD = _MACED_ZERO[: _TOKEN_FIELDS["attributes"].offset]
_MACED_GAP = _MACED_ZERO[_TOKEN_FIELDS["reserved2"].offset : _TOKEN_FIELDS["mrsigner"].offset]
_MACED_TAIL = _MACED_ZERO[_TOKEN_FIELDS["reserved3"].offset : EinitToken.MACED_SIZE]
assert _TOKEN_FIELDS["mrenclave"].offset == _TOKEN_FIELDS["attributes"].offset + 16
assert _TOKEN_FIELDS["reserved2"].offset == _TOKEN_FIELDS["mrenclave"].offset + 32
assert _TOKEN_FIELDS["reserved3"].offset == _TOKEN_FIELDS["mrsigner"].offset + 32


@dataclass(slots=True)
class _Verified:
    """A SIGSTRUCT whose signature the launch enclave verified.

    Attributes:
        identity: what its verified fields declare.
        variants: per SECS ATTRIBUTES (FLAGS, XFRM) asked for: the identity with them, and the
            token's MACed bytes 0..191 (VALID = 1, ATTRIBUTES, MRENCLAVE, MRSIGNER).
    """

    identity: EnclaveIdentity
    variants: dict[tuple[int, int], tuple[EnclaveIdentity, bytes]]


@dataclass(frozen=True, slots=True)
class _Minting:
    """What every token of one launch-enclave instance shares: the token's bytes 192..255
    (CPUSVNLE … MASKEDATTRIBUTESLE, from its own REPORT) and the EINITTOKEN key request's bytes
    before and after KEYID."""

    token_le: bytes
    keyrequest_head: bytes
    keyrequest_tail: bytes


class OwnerLaunchEnclave(EnclaveProgram):
    """The owner's launch enclave (see the module docstring for the protocol)."""

    MAX_VERIFIED = 4096
    """How many verified SIGSTRUCTs the cache keeps (then it starts again empty)."""
    MAX_VARIANTS = 16
    """How many SECS ATTRIBUTES one cached SIGSTRUCT keeps (then they start again empty)."""

    def __init__(self) -> None:
        self.state: TrustedState | None = None
        self.committed = LeState()
        self.committed_digest = bytes(32)
        self.pending: tuple[LeState, TrustedState] | None = None
        self.loaded = False
        self.verified: dict[bytes, _Verified] = {}
        """All 1 808 SIGSTRUCT bytes → what its verified fields declare. Emptied at
        LOAD and whenever a new launch policy takes effect."""
        self._identity: Report | None = None
        self._last_variant: tuple[bytes, int, int, EnclaveIdentity, bytes] | None = None
        self._last_mint_head: bytes | None = None
        """The bytes before NOW of the MINT request whose fields :attr:`_last_variant` holds
        (``None`` whenever that is)."""
        """(SIGSTRUCT, FLAGS, XFRM, identity, MACed bytes) of the last MINT: the cache entry
        :meth:`_variant` gave for those exact bytes and ATTRIBUTES, found again by one byte
        comparison (repeats of one SIGSTRUCT) instead of hashing all 1 808 bytes. Forgotten with
        :attr:`verified`."""
        self._minting: _Minting | None = None
        self._allowed: tuple[Decision, bytes, bytes, bytes | None] | None = None
        """(decision, policy digest, its KEYID limits bytes, its reply head) of the last
        allowing decision: constants of that decision (made again when another decision or
        policy allows), never the decision itself."""
        self._floor: tuple[str, datetime | None] = ("", None)
        self._last_now: tuple[int, str, datetime | None] = (-1, "", None)
        self._epoch_record: bytes | None = None
        """The epoch record of the state prepared at LOAD (recovery or a handover adopted)."""
        self._pending_verdict: bytes | None = None
        """The verdict of a granted GRANT whose record the prepared state commits: posted for
        the driver at that state's ADVANCE, dropped by any other prepare."""
        self._kx: tuple[bytes, bytes] | None = None
        """(sealed blob, private key) of the key-agreement key last unsealed or made."""
        self._challenges: dict[bytes, None] = {}
        """Outstanding one-time release challenges (insertion-ordered)."""
        self._unclaimed: tuple[bytes, bytes] | None = None
        """(digest of the state whose log record released it, boxed code key): CLAIM hands
        the box out once that state is the committed one."""

    # -- entry ------------------------------------------------------------------------------

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        try:
            if function == _MINT and self.loaded:
                # the hot call: its fixed layout parsed without a request object. A request
                # whose bytes up to NOW are the last parsed one's (same SIGSTRUCT, FLAGS, XFRM:
                # one comparison in place) reuses that one's fields; only NOW is read.
                head = self._last_mint_head
                if (
                    head is not None
                    and data.__class__ is bytes
                    and len(data) == MINT_REQUEST_SIZE
                    and data.startswith(head)
                ):
                    last = self._last_variant
                    assert last is not None  # head is cleared whenever the variant is
                    return self._mint(ctx, last[0], last[1], last[2], _unpack_now(data, _NOW_AT)[0])
                fields = decode_mint_request(data)
                reply = self._mint(ctx, *fields)
                last = self._last_variant
                if (
                    last is not None
                    and data.__class__ is bytes
                    and len(data) == MINT_REQUEST_SIZE
                    and last[0] == fields[0]
                    and last[1] == fields[1]
                    and last[2] == fields[2]
                ):
                    self._last_mint_head = data[:_NOW_AT]
                return reply
            request_type = _REQUEST_TYPES.get(function)
            if request_type is None:
                raise UsageError(f"unknown launch-enclave call {function}")
            request = request_type.decode(data)
            if request_type is not LoadRequest and not self.loaded:
                raise UsageError("the launch enclave has not been loaded with its state")
            return encode_ok(self._dispatch(ctx, request))
        except LogTampered as exc:
            return encode_error(exc, index=exc.index if exc.index is not None else NO_INDEX)
        except SgxlaunchError as exc:
            return encode_error(exc)

    def _dispatch(self, ctx: EnclaveContext, req: Message) -> Message:
        if isinstance(req, LogAppendRequest):
            return self._log_append(ctx, req)
        if isinstance(req, AdvanceRequest):
            return self._advance(ctx)
        if isinstance(req, LoadRequest):
            return self._load(ctx, req)
        if isinstance(req, InstallPolicyRequest):
            return self._install_policy(ctx, req)
        if isinstance(req, LogVerifyRequest):
            return self._log_verify(ctx, req)
        if isinstance(req, NoteModeRequest):
            return self._note_mode(ctx, req)
        if isinstance(req, LogAttestRequest):
            return self._log_attest(ctx, req)
        if isinstance(req, GrantRequest):
            return self._grant(ctx, req)
        if isinstance(req, LeKeyRequest):
            return self._le_key(ctx, req)
        if isinstance(req, AddCodeKeyRequest):
            return self._add_code_key(ctx, req)
        if isinstance(req, ReleaseChallengeRequest):
            return self._release_challenge(ctx)
        if isinstance(req, ReleaseRequest):
            return self._release(ctx, req)
        if isinstance(req, ClaimRequest):
            return self._claim()
        raise UsageError(f"unknown launch-enclave request {type(req).__name__}")  # pragma: no cover

    # -- keys and sealing -------------------------------------------------------------------

    def _me(self, ctx: EnclaveContext) -> Report:
        """This enclave's own REPORT body (fixed for its life; taken once)."""
        if self._identity is None:
            self._identity = ctx.ereport(bytes(512))
        return self._identity

    def _seal_key(self, ctx: EnclaveContext, keyid: bytes, cpusvn: bytes | None = None) -> bytes:
        """EGETKEY(SEAL_KEY, MRSIGNER policy) for ``cpusvn`` (default: the CPU's current one;
        a recorded older one still derives — SDM EGETKEY refuses only a CPUSVN beyond the
        CPU's)."""
        me = self._me(ctx)
        return ctx.egetkey(
            KeyRequest(
                keyname=KeyName.SEAL,
                keypolicy=int(KeyPolicy.MRSIGNER),
                isvsvn=me.isvsvn,
                cpusvn=me.cpusvn if cpusvn is None else cpusvn,
                attributemask=SEAL_ATTRIBUTE_MASK,
                keyid=keyid,
                miscmask=_ALL32,
            )
        )

    def _seal(self, ctx: EnclaveContext, state: LeState) -> bytes:
        """``magic ‖ CPUSVN ‖ nonce ‖ AES-GCM(seal key of that CPUSVN, state)``: the blob
        records the CPUSVN its key was derived with."""
        cpusvn = self._me(ctx).cpusvn
        key = self._seal_key(ctx, _STATE_KEYID, cpusvn)
        nonce = ctx.rdrand(12)
        head = _SEALED_MAGIC + cpusvn
        return head + nonce + AESGCM(key).encrypt(nonce, state.to_json(), _SEAL_AAD + head)

    def _unseal(self, ctx: EnclaveContext, blob: bytes) -> LeState:
        size = len(_SEALED_MAGIC) + 16
        head, body = blob[:size], blob[size:]
        try:
            if not head.startswith(_SEALED_MAGIC) or len(body) < 12 + 16:
                raise InvalidTag
            key = self._seal_key(ctx, _STATE_KEYID, head[len(_SEALED_MAGIC) :])
            plain = AESGCM(key).decrypt(body[:12], body[12:], _SEAL_AAD + head)
        except (InvalidTag, EnclaveLeafFailed):
            raise VerificationFailed(
                "the launch enclave's sealed state does not unseal: it was altered, or sealed "
                "by another platform, another owner epoch, another launch-enclave key or under "
                "a CPUSVN beyond this CPU's"
            ) from None
        return LeState.from_json(plain)

    def _now(self, host_seconds: int) -> datetime:
        """The host's time, never earlier than the time floor: the latest signed ``issued``
        of the documents this enclave verified (the host clock itself is never sealed; the
        last result is kept in memory only, for the same whole second and the same floor)."""
        floor = self.committed.time_floor
        last_seconds, last_floor, last = self._last_now
        if host_seconds == last_seconds and floor == last_floor and last is not None:
            return last
        now = from_seconds(host_seconds)
        if floor:
            text, floor_time = self._floor
            if text != floor or floor_time is None:
                floor_time = _time(floor)
                self._floor = (floor, floor_time)
            if now < floor_time:
                now = floor_time
        self._last_now = (host_seconds, floor, now)
        return now

    def _mrsigner(self, ctx: EnclaveContext) -> bytes:
        return self._me(ctx).mrsigner

    # -- freshness --------------------------------------------------------------------------

    def _prepare(
        self, ctx: EnclaveContext, state: TrustedState, **changes: Any
    ) -> tuple[LeState, bytes]:
        """The next state (counter + 1, chained to the committed digest), sealed. It takes
        effect only when the host has stored it and called ADVANCE. Its time floor is the
        latest signed ``issued`` of the committed floor and the documents of ``state``."""
        self._pending_verdict = None
        nxt = self.committed.copy(
            counter=self.committed.counter + 1,
            prev=self.committed_digest.hex(),
            counter_owner=self.committed.counter_owner or self._mrsigner(ctx).hex(),
            time_floor=_issued_floor(state, self.committed.time_floor),
        ).copy(**changes)
        self.pending = (nxt, state)
        return nxt, self._seal(ctx, nxt)

    def _advance(self, ctx: EnclaveContext) -> AdvanceReply:
        """ADVANCE: compare-and-set the counter from (N, committed digest) to (N + 1, digest
        of the prepared state); only then does the prepared state take effect."""
        if self.pending is None:
            raise UsageError("no prepared state to commit")
        nxt, state = self.pending
        self._cas(ctx, nxt)
        self.pending = None
        verdict, self._pending_verdict = self._pending_verdict, None
        if verdict is not None:  # the grant's record is committed: now the driver may act
            ctx.owner_verdict_post(verdict)
        if nxt.policy_digest != self.committed.policy_digest:
            self._forget_verified()  # nothing verified under another policy carries over
        self.committed, self.committed_digest, self.state = nxt, nxt.digest(), state
        return AdvanceReply(counter=nxt.counter)

    def _cas(self, ctx: EnclaveContext, nxt: LeState) -> None:
        """One compare-and-set moves the counter, its digest and the slot's policy digest
        (what the driver binds tokens to)."""
        owner = bytes.fromhex(nxt.counter_owner)
        ctx.counter_compare_and_set(
            nxt.counter - 1,
            bytes.fromhex(nxt.prev),
            nxt.digest(),
            next_owner=None if owner == self._mrsigner(ctx) else (owner, LE_ISVPRODID),
            policy_digest=bytes.fromhex(nxt.policy_digest) if nxt.policy_digest else bytes(32),
        )

    # -- calls ------------------------------------------------------------------------------

    def _load(self, ctx: EnclaveContext, req: LoadRequest) -> LoadReply:
        """LOAD: trust the root this enclave was built for, read the counter, accept the
        committed state (or an N + 1 state chaining to it, finishing its advance), and check
        the stored documents are exactly the ones that state committed. A fresh start and a
        recovery commit only the stored documents that verify under the root.

        Raises:
            VerificationFailed: another root; the state is missing, older, or does not chain
                (the message names the recovery path); the stored documents differ.
        """
        root = req.root
        built_for = ctx.read(ctx.base_address + ROOT_PAGE_OFFSET + 32, 32)
        payload = Envelope.from_bytes(root).payload
        if hashlib.sha256(payload).digest() != built_for:
            raise VerificationFailed(
                "the owner root offered is not the one this launch enclave was built for",
                expected=built_for.hex(),
                found=hashlib.sha256(payload).hexdigest(),
            )
        store = MemoryStore({ROOT_KEY: root})
        for key, blob in ((POLICY_KEY, req.policy), (MODE_KEY, req.mode)):
            if blob is not None:
                store.commit({key: blob})
        state = TrustedState.load(store)
        assert state is not None
        slot = ctx.counter_read()
        recovery_hint = (
            f"the monotonic counter is at {slot.value}; restore the home from a copy taken at "
            f"counter {slot.value}, or recover with the owner's signatures "
            f"(`sgxlaunch recovery sign --counter {slot.value} …`, then `sgxlaunch recovery "
            "apply`)"
        )
        candidate: LeState | None = None
        sealed_error: SgxlaunchError | None = None
        if req.sealed is not None:
            try:
                candidate = self._unseal(ctx, req.sealed)
            except SgxlaunchError as exc:
                sealed_error = exc
        adopted = False
        self._epoch_record = None
        if req.handover is not None and (candidate is None or candidate.counter < slot.value):
            plain = LeState.from_json(req.handover)
            if plain.counter == slot.value and hmac.compare_digest(plain.digest(), slot.digest):
                candidate = plain  # authentic: the counter holds its digest
                adopted = True
        fresh = candidate is None and slot.value == 0
        if fresh:
            state = _verified_only(state)
            committed, digest = _state_of(state, LeState()), bytes(32)
            committed = committed.copy(time_floor=_issued_floor(state, ""))
        elif req.recovery is not None:
            state = _verified_only(state)
            committed, digest = self._recover(ctx, state, slot, req)
        elif candidate is None:
            why = (
                "does not unseal"
                if sealed_error is not None
                else "is missing"
                if req.sealed is None
                else "is not usable"
            )
            raise VerificationFailed(
                f"refusing to start: the launch enclave's sealed state {why} while the "
                f"monotonic counter is at {slot.value}",
                detail=[recovery_hint],
            )
        elif candidate.counter == slot.value and hmac.compare_digest(
            candidate.digest(), slot.digest
        ):
            committed, digest = candidate, slot.digest
        elif candidate.counter == slot.value + 1 and candidate.prev == slot.digest.hex():
            self._cas(ctx, candidate)  # finish an advance interrupted after the store commit
            committed, digest = candidate, candidate.digest()
        elif candidate.counter < slot.value:
            raise VerificationFailed(
                "refusing to start: rollback — the launch enclave's sealed state is older than "
                "the monotonic counter",
                expected=f"counter {slot.value} (or {slot.value + 1} chaining to it)",
                found=f"counter {candidate.counter}",
                detail=[recovery_hint],
            )
        else:
            raise VerificationFailed(
                "refusing to start: the launch enclave's sealed state does not chain to the "
                "state the monotonic counter committed",
                expected=f"counter {slot.value} digest {slot.digest.hex()[:16]}…",
                found=f"counter {candidate.counter} prev {candidate.prev[:16]}…",
                detail=[recovery_hint],
            )
        if not fresh and self.pending is None:
            _check_documents(committed, state)
        self.state = state
        self.committed, self.committed_digest = committed, digest
        self.loaded = True
        self._forget_verified()
        sealed = None
        handed_over = None
        me = self._mrsigner(ctx).hex()
        if self.pending is not None:  # recovery: the host stores this, then ADVANCE
            sealed = self._seal(ctx, self.pending[0])
        elif committed.counter_owner and committed.counter_owner != me:
            # A handover this enclave prepared is now complete: it serves nothing more.
            self.loaded = False
            handed_over = bytes.fromhex(committed.counter_owner)
        elif adopted and committed.log_count == 0:
            # The counter was handed to this signer: its log segment opens with an epoch
            # record carrying the owner's mode document that named it.
            doc = state.mode
            if req.mode is None or doc is None or doc.le_mrsigner is None:
                raise VerificationFailed("a handover without the mode document that names it")
            if doc.le_mrsigner.hex() != me:
                raise VerificationFailed(
                    "the mode document in force names another launch-enclave signer",
                    expected=me,
                    found=doc.le_mrsigner.hex(),
                )
            sealed = self._open_epoch(ctx, state, "handover", req.mode, req.now)
        return LoadReply(
            counter=committed.counter,
            policy_version=committed.policy_version,
            mode_version=committed.mode_version,
            log_count=committed.log_count,
            log_head=bytes.fromhex(committed.log_head),
            handed_over=handed_over,
            sealed=sealed,
            record=self._epoch_record,
        )

    def _open_epoch(
        self, ctx: EnclaveContext, state: TrustedState, cause: str, document: bytes, now: int
    ) -> bytes:
        """Prepare the state whose log segment starts with an epoch record (the committed state
        is the one before it); keep the record for the LOAD reply; return the sealed state."""
        epoch = self.committed.counter + 1
        record, head = make_epoch_record(
            self._log_key(ctx),
            epoch=epoch,
            cause=cause,
            document=document,
            platform_id=ctx.platform_id(),
            le_mrsigner=self._mrsigner(ctx),
            time=_iso(self._now(now)),
        )
        self._epoch_record = record.to_bytes()
        _nxt, sealed = self._prepare(
            ctx,
            state,
            log_count=head.count,
            log_head=head.hash.hex(),
            log_cpusvn=self._log_cpusvn(ctx).hex(),
        )
        return sealed

    def _recover(
        self, ctx: EnclaveContext, state: TrustedState, slot: Any, req: LoadRequest
    ) -> tuple[LeState, bytes]:
        """Owner recovery: a threshold of the root's keys signed a recovery document for this
        platform at the counter's current value; the documents now in the home that verify
        under the root become the committed state at counter + 1 (prepared here, advanced by
        ADVANCE)."""
        assert req.recovery is not None
        want = ctx.platform_id()
        check_recovery_document(req.recovery, state.root, want, slot.value)
        base = LeState(counter=slot.value, counter_owner=self._mrsigner(ctx).hex())
        fresh = _state_of(state, base)
        self.committed, self.committed_digest = base, slot.digest
        nxt = fresh.copy(
            counter=slot.value + 1, prev=slot.digest.hex(), time_floor=_issued_floor(state, "")
        )
        # The new log segment opens with an epoch record carrying the recovery document.
        record, head = make_epoch_record(
            self._log_key(ctx),
            epoch=nxt.counter,
            cause="recovery",
            document=req.recovery,
            platform_id=want,
            le_mrsigner=self._mrsigner(ctx),
            time=_iso(from_seconds(req.now)),
        )
        self._epoch_record = record.to_bytes()
        nxt = nxt.copy(
            log_count=head.count,
            log_head=head.hash.hex(),
            log_cpusvn=self._log_cpusvn(ctx).hex(),
        )
        self.pending = (nxt, state)
        return base, slot.digest

    def _install_policy(self, ctx: EnclaveContext, req: InstallPolicyRequest) -> InstallPolicyReply:
        assert self.state is not None
        now = self._now(req.now)
        new_state, _update = self.state.install_policy(req.policy, now)
        assert new_state.policy is not None and new_state.policy_digest is not None
        _nxt, sealed = self._prepare(
            ctx,
            new_state,
            policy_version=new_state.policy.version,
            policy_digest=new_state.policy_digest.hex(),
        )
        return InstallPolicyReply(
            sealed=sealed, version=new_state.policy.version, digest=new_state.policy_digest
        )

    def _forget_verified(self) -> None:
        """Empty the cache of verified SIGSTRUCTs (:attr:`verified` and the last MINT's)."""
        self.verified.clear()
        self._last_variant = None
        self._last_mint_head = None

    def _verified(self, data: bytes) -> _Verified:
        """A SIGSTRUCT whose signature verified (strict parse, EXPONENT, MODULUS, S < M, Q1/Q2,
        PKCS#1 v1.5 over the signed bytes: :func:`verify`), from a cache keyed on all 1 808
        bytes (an exact match: a dictionary of the bytes themselves, which costs a fraction of
        hashing them with SHA-256 and relies on no digest).

        Raises:
            MalformedInput, VerificationFailed: the SIGSTRUCT does not verify.
        """
        entry = self.verified.get(data)
        if entry is not None:
            return entry
        sig = Sigstruct.from_bytes(data)
        verify(sig)
        entry = _Verified(EnclaveIdentity.from_sigstruct(sig), {})
        if len(self.verified) >= self.MAX_VERIFIED:
            self.verified.clear()
        self.verified[bytes(data)] = entry
        return entry

    def _variant(self, entry: _Verified, flags: int, xfrm: int) -> tuple[EnclaveIdentity, bytes]:
        """The identity of a verified SIGSTRUCT run with ATTRIBUTES (``flags``, ``xfrm``), and
        the token's MACed bytes for it."""
        variant = entry.variants.get((flags, xfrm))
        if variant is None:
            signed = entry.identity
            if flags == signed.flags and xfrm == signed.xfrm:
                identity = signed  # run with the SIGSTRUCT's own ATTRIBUTES (the usual case)
            else:
                identity = EnclaveIdentity(
                    mrenclave=signed.mrenclave,
                    mrsigner=signed.mrsigner,
                    isvprodid=signed.isvprodid,
                    isvsvn=signed.isvsvn,
                    isvfamilyid=signed.isvfamilyid,
                    isvextprodid=signed.isvextprodid,
                    flags=flags,
                    xfrm=xfrm,
                    miscselect=signed.miscselect,
                )
            # VALID = 1 ‖ reserved ‖ ATTRIBUTES ‖ MRENCLAVE ‖ reserved ‖ MRSIGNER ‖ reserved
            maced = b"".join(
                (
                    _MACED_HEAD,
                    _ATTRIBUTES.pack(flags, xfrm),
                    identity.mrenclave,
                    _MACED_GAP,
                    identity.mrsigner,
                    _MACED_TAIL,
                )
            )
            if len(entry.variants) >= self.MAX_VARIANTS:
                entry.variants.clear()
            variant = entry.variants[(flags, xfrm)] = (identity, maced)
        return variant

    def _mint(
        self, ctx: EnclaveContext, sigstruct: bytes, flags: int, xfrm: int, seconds: int
    ) -> bytes:
        """MINT (the fields of a :class:`MintRequest`; the encoded :class:`MintReply` back):
        verify the SIGSTRUCT, evaluate the policy on its verified fields and the SECS
        attributes, and mint a token bound to the SIGSTRUCT and the policy."""
        state = self.state
        assert state is not None
        now = self._now(seconds)
        last = self._last_variant
        if last is not None and last[0] == sigstruct and last[1] == flags and last[2] == xfrm:
            identity, maced = last[3], last[4]  # the same bytes as the last MINT's
        else:
            identity, maced = self._variant(self._verified(sigstruct), flags, xfrm)
            self._last_variant = (sigstruct, flags, xfrm, identity, maced)
            self._last_mint_head = None  # set by ecall once it knows the request's bytes
        digest = state.policy_digest
        if state.policy is None or digest is None:
            return encode_ok(
                MintReply(
                    allowed=0,
                    rule=None,
                    policy_version=0,
                    policy_digest=None,
                    reasons=("", "policy", "an installed owner launch policy", "none"),
                    token=None,
                )
            )
        decision = state.evaluate(identity, now)
        rule = decision.rule
        if not decision.allowed:
            reasons: list[str] = []
            for r in decision.reasons:
                reasons += [r.rule or "", r.field, r.expected, r.found]
            return encode_ok(
                MintReply(
                    allowed=0,
                    rule=rule,
                    policy_version=decision.policy_version,
                    policy_digest=digest,
                    reasons=tuple(reasons),
                    token=None,
                )
            )
        allowed = self._allowed
        if allowed is None or allowed[0] is not decision or allowed[1] is not digest:
            # this decision's constants (once per allowing rule and policy): the KEYID nonce's
            # limits bytes and the reply's bytes before the token
            allowed = self._allowed = (
                decision,
                digest,
                limits_head(decision.limits),
                mint_allowed_head(rule, decision.policy_version, digest),
            )
        token = self._token(ctx, maced, sigstruct, digest, allowed[2])
        head = allowed[3]
        if head is None or len(token) != TOKEN_SIZE:  # odd values: the general encoder
            return encode_mint_allowed(rule, decision.policy_version, digest, token)
        return head + token

    def _minting_for(self, ctx: EnclaveContext) -> _Minting:
        """This instance's :class:`_Minting` (its REPORT is fixed for its life; made once)."""
        if self._minting is None:
            me = self._me(ctx)
            le = EinitToken(
                cpusvnle=me.cpusvn,
                isvprodidle=me.isvprodid,
                isvsvnle=me.isvsvn,
                maskedmiscselectle=me.miscselect & _ALL32,
                maskedattributesle=me.attributes & _LE_MASK,
            ).to_bytes()
            request = KeyRequest(
                keyname=KeyName.EINITTOKEN,
                cpusvn=me.cpusvn,
                isvsvn=me.isvsvn,
                attributemask=_LE_MASK,
                miscmask=_ALL32,
            ).to_bytes()
            self._minting = _Minting(
                token_le=le[EinitToken.MACED_SIZE : _TOKEN_KEYID],
                keyrequest_head=request[:_KEYREQUEST_KEYID],
                keyrequest_tail=request[_KEYREQUEST_KEYID + 32 :],
            )
        return self._minting

    def _token(
        self,
        ctx: EnclaveContext,
        maced: bytes,
        sigstruct: bytes,
        policy_digest: bytes,
        limits: bytes,
    ) -> bytes:
        """Mint an EINITTOKEN (SDM EINIT's token checks; Intel's LE flow, spec §4.7) whose
        KEYID binds the SIGSTRUCT and the policy (:func:`~sgxlaunch.driver.owner.token_keyid`)
        and carries the allowing rule's limits in its nonce: ``limits``
        (:func:`~sgxlaunch.driver.owner.limits_head`) ‖ 13 bytes of RDRAND, the layout of
        :func:`~sgxlaunch.driver.owner.limits_nonce`. The token: ``maced`` (bytes 0..191) ‖ this
        enclave's LE fields ‖ KEYID ‖ CMAC under the EINITTOKEN key that EGETKEY derives for
        that KEYID."""
        minting = self._minting or self._minting_for(ctx)
        keyid = token_keyid(limits + ctx.rdrand(13), sigstruct, policy_digest)
        key = ctx.egetkey(b"".join((minting.keyrequest_head, keyid, minting.keyrequest_tail)))
        return b"".join((maced, minting.token_le, keyid, cmac128(key, maced)))

    def _log_cpusvn(self, ctx: EnclaveContext) -> bytes:
        """The CPUSVN of the log segment's MAC key: the recorded one, or (no record yet) the
        CPU's current one."""
        recorded = self.committed.log_cpusvn
        return bytes.fromhex(recorded) if recorded else self._me(ctx).cpusvn

    def _log_key(self, ctx: EnclaveContext) -> bytes:
        return self._seal_key(ctx, _LOG_KEYID, self._log_cpusvn(ctx))

    def _log_append(self, ctx: EnclaveContext, req: LogAppendRequest) -> LogAppendReply:
        assert self.state is not None
        try:
            facts = json.loads(req.facts)
        except (ValueError, UnicodeDecodeError):
            raise MalformedInput("launch-enclave LogAppendRequest: facts are not JSON") from None
        if not isinstance(facts, dict):
            raise MalformedInput("launch-enclave LogAppendRequest: facts must be an object")
        if facts.get("kind") in (EPOCH, CODE_KEY_ADDED, CODE_KEY_RELEASE):
            raise MalformedInput(
                f"launch-enclave LogAppendRequest: {facts['kind']} records are written by the "
                "launch enclave itself, never by the host"
            )
        if facts.get("kind") == GRANT:
            raise MalformedInput(
                "launch-enclave LogAppendRequest: grant records are written by the launch "
                "enclave itself (its GRANT call), never by the host"
            )
        record, sealed, _digest = self._append_own(ctx, facts)
        return LogAppendReply(record=record, sealed=sealed)

    def _append_own(self, ctx: EnclaveContext, facts: dict[str, Any]) -> tuple[bytes, bytes, bytes]:
        """Chain one record after the committed head and prepare the state that commits it:
        (record, sealed state, digest of that state). It takes effect at ADVANCE."""
        assert self.state is not None
        head = LogHead(self.committed.log_count, bytes.fromhex(self.committed.log_head))
        record, head = make_record(self._log_key(ctx), head, facts)
        nxt, sealed = self._prepare(
            ctx,
            self.state,
            log_count=head.count,
            log_head=head.hash.hex(),
            log_cpusvn=self._log_cpusvn(ctx).hex(),
        )
        return record.to_bytes(), sealed, nxt.digest()

    def _log_verify(self, ctx: EnclaveContext, req: LogVerifyRequest) -> LogVerifyReply:
        records = []
        for index, blob in enumerate(req.records):
            try:
                records.append(_LogRecord.from_bytes(blob))
            except MalformedInput as exc:
                raise LogTampered(
                    f"launch-log record {index}: {exc.message}", index=index
                ) from None
        head = LogHead(self.committed.log_count, bytes.fromhex(self.committed.log_head))
        verify_log(self._log_key(ctx), records, head)
        return LogVerifyReply(count=len(records))

    def _log_attest(self, ctx: EnclaveContext, req: LogAttestRequest) -> LogAttestReply:
        """LOG_ATTEST: a REPORT for the target enclave (the quoting enclave) whose REPORTDATA
        binds the collector's nonce, the machine's platform id and the committed log head
        (:func:`~sgxlaunch.launch.log.attest_reportdata`)."""
        target = TargetInfo.from_bytes(req.targetinfo)
        head = LogHead(self.committed.log_count, bytes.fromhex(self.committed.log_head))
        reportdata = attest_reportdata(req.nonce, ctx.platform_id(), head)
        report = ctx.ereport(target, reportdata)
        return LogAttestReply(report=report.to_bytes(), count=head.count, head=head.hash)

    def _grant_report(self, ctx: EnclaveContext, req: GrantRequest) -> Report:
        """The checks of a grant's REPORT, in order; each failure names what it found.

        1. The REPORT parses strictly (reserved bytes zero).
        2. Its MAC verifies under this enclave's report key (EGETKEY REPORT_KEY with the
           REPORT's KEYID, AES-CMAC): it was made on this CPU, this boot, *for this enclave*.
        3. Its MRENCLAVE is the one the driver names for the instance.
        4. ATTRIBUTES.KSS is set and its CONFIGID is the one the driver wrote at ECREATE: the
           same instance, not another of the same MRENCLAVE.
        5. REPORTDATA is :func:`~sgxlaunch.driver.grants.grant_reportdata` of the driver's
           challenge, the range and the code hash.

        Raises:
            MalformedInput: step 1.
            VerificationFailed: steps 2-5.
        """
        report = Report.from_bytes(req.report)
        if not ctx.verify_report(report):
            raise VerificationFailed(
                "the REPORT's MAC does not verify under the launch enclave's report key",
                expected="a REPORT targeted at the launch enclave on this platform",
                found="a REPORT for another enclave, from another platform or boot, or altered",
            )
        if not hmac.compare_digest(report.mrenclave, req.mrenclave):
            raise VerificationFailed(
                "the REPORT comes from another enclave than the one asking",
                expected=f"MRENCLAVE {req.mrenclave.hex()}",
                found=f"MRENCLAVE {report.mrenclave.hex()}",
            )
        if not report.attributes.flags & _KSS or not hmac.compare_digest(
            report.configid, req.configid
        ):
            raise VerificationFailed(
                "the REPORT comes from another instance than the one asking",
                expected=f"KSS and CONFIGID {req.configid.hex()[:32]}…",
                found=f"KSS={int(bool(report.attributes.flags & _KSS))}, "
                f"CONFIGID {report.configid.hex()[:32]}…",
            )
        want = grant_reportdata(req.challenge, req.offset, req.length, req.code_hash)
        if not hmac.compare_digest(report.reportdata, want):
            raise VerificationFailed(
                "the REPORTDATA does not bind this challenge, page range and code hash",
                expected=want.hex()[:32] + "…",
                found=report.reportdata.hex()[:32] + "…",
            )
        return report

    def _grant(self, ctx: EnclaveContext, req: GrantRequest) -> GrantReply:
        """GRANT (attested-code): verify the REPORT (:meth:`_grant_report`), evaluate the
        policy on the REPORT's identity (deny rules win, then the first matching allow rule),
        require that rule's ``dynamic_memory`` to be attested-code and the code hash in its
        ``code_hashes`` (or ``any``); record the event either way; a granted verdict is posted
        for the driver when the record is committed (ADVANCE)."""
        assert self.state is not None
        now = self._now(req.now)
        facts: dict[str, Any] = {
            "kind": GRANT,
            "time": _iso(now),
            "configid": req.configid.hex(),
            "offset": req.offset,
            "length": req.length,
            "code_hash": req.code_hash.hex(),
        }
        reasons: list[str] = []
        rule: str | None = None
        try:
            report = self._grant_report(ctx, req)
            facts |= {
                "mrenclave": report.mrenclave.hex(),
                "mrsigner": report.mrsigner.hex(),
                "isvprodid": report.isvprodid,
                "isvsvn": report.isvsvn,
            }
            rule, reasons = self._grant_rule(report, req.code_hash, now)
        except (MalformedInput, VerificationFailed) as exc:
            facts["mrenclave"] = req.mrenclave.hex()
            facts["report"] = exc.message
            found = exc.found if isinstance(exc, VerificationFailed) else None
            reasons = ["", "report", exc.message, found or "refused"]
        allowed = not reasons
        facts |= {
            "verdict": "granted" if allowed else "refused",
            "rule": rule,
            "reasons": [
                {
                    "rule": reasons[i] or None,
                    "field": reasons[i + 1],
                    "expected": reasons[i + 2],
                    "found": reasons[i + 3],
                }
                for i in range(0, len(reasons), 4)
            ],
            "policy_version": self.state.policy.version if self.state.policy else None,
        }
        head = LogHead(self.committed.log_count, bytes.fromhex(self.committed.log_head))
        record, head = make_record(self._log_key(ctx), head, facts)
        _nxt, sealed = self._prepare(
            ctx,
            self.state,
            log_count=head.count,
            log_head=head.hash.hex(),
            log_cpusvn=self._log_cpusvn(ctx).hex(),
        )
        if allowed:
            self._pending_verdict = grant_verdict(
                req.configid, req.challenge, req.offset, req.length, req.code_hash
            )
        return GrantReply(
            allowed=int(allowed),
            rule=rule,
            reasons=tuple(reasons),
            record=record.to_bytes(),
            sealed=sealed,
        )

    def _grant_rule(
        self, report: Report, code_hash: bytes, now: datetime
    ) -> tuple[str | None, list[str]]:
        """The policy's word on a verified grant REPORT: (deciding rule, reasons as MINT's
        flattened quadruples; empty when granted)."""
        state = self.state
        assert state is not None
        if state.policy is None:
            return None, ["", "policy", "an installed owner launch policy", "none"]
        identity = _report_identity(report)
        decision = state.evaluate(identity, now)
        if not decision.allowed:
            out: list[str] = []
            for r in decision.reasons:
                out += [r.rule or "", r.field, r.expected, r.found]
            return decision.rule, out
        matched = decision.matched
        assert matched is not None  # an allowing decision names its rule
        level = matched.dynamic_memory
        if level != DynamicMemory.ATTESTED_CODE:
            return decision.rule, [
                decision.rule or "",
                "dynamic_memory",
                "attested-code",
                level.label,
            ]
        if not matched.allows_code(code_hash):
            listed = matched.code_hashes
            count = 0 if listed is None or isinstance(listed, str) else len(listed)
            return decision.rule, [
                decision.rule or "",
                "code_hashes",
                f"one of {count} listed code hashes",
                code_hash.hex(),
            ]
        return decision.rule, []

    def _note_mode(self, ctx: EnclaveContext, req: NoteModeRequest) -> NoteModeReply:
        """NOTE_MODE: verify an owner-signed platform-mode document (threshold of the root's
        keys, bound to this machine's platform id unless the owner signed it unbound, version
        above the committed one) and prepare the state that commits it. A document naming
        another launch-enclave signer prepares the **handover**: the next state names that
        signer as the counter's owner and starts its log segment empty; the plaintext state
        goes back too, for the new enclave to adopt (the counter slot holds its digest, so the
        plaintext is authentic once advanced)."""
        assert self.state is not None
        now = self._now(req.now)
        new_state, _update = self.state.install_mode(req.mode, now, platform_id=ctx.platform_id())
        doc = new_state.mode
        assert doc is not None and new_state.mode_digest is not None
        changes: dict[str, Any] = {
            "mode_version": doc.version,
            "mode_digest": new_state.mode_digest.hex(),
        }
        me = self._mrsigner(ctx).hex()
        handover = None
        owner = self.committed.counter_owner or me
        if doc.mode == "owner" and doc.le_mrsigner is not None and doc.le_mrsigner.hex() != owner:
            changes |= {
                "counter_owner": doc.le_mrsigner.hex(),
                "log_count": 0,
                "log_head": bytes(32).hex(),
                "log_cpusvn": "",
            }
        nxt, sealed = self._prepare(ctx, new_state, **changes)
        if nxt.counter_owner != me:
            handover = nxt.to_json()
        return NoteModeReply(sealed=sealed, handover=handover, counter=nxt.counter)

    # -- protected code (issue 20) ----------------------------------------------------------

    def _mrenclave_seal_key(self, ctx: EnclaveContext, keyid: bytes, cpusvn: bytes) -> bytes:
        """EGETKEY(SEAL_KEY, **MRENCLAVE** policy) for ``cpusvn``: only this exact enclave
        image derives it — not another enclave its signer signed (the MRSIGNER policy of the
        sealed state would let those in), and not this image signed by someone else either
        (MRSIGNER is not a dependency, but EINIT would need the owner's launch key for it).
        ATTRIBUTEMASK leaves EINITTOKEN_KEY out, so both modes derive the same key."""
        me = self._me(ctx)
        return ctx.egetkey(
            KeyRequest(
                keyname=KeyName.SEAL,
                keypolicy=int(KeyPolicy.MRENCLAVE),
                isvsvn=me.isvsvn,
                cpusvn=cpusvn,
                attributemask=SEAL_ATTRIBUTE_MASK,
                keyid=keyid,
                miscmask=_ALL32,
            )
        )

    def _seal_mrenclave(
        self, ctx: EnclaveContext, keyid: bytes, magic: bytes, plain: bytes, aad: bytes
    ) -> bytes:
        """``magic ‖ CPUSVN ‖ nonce ‖ AES-GCM(MRENCLAVE seal key, plain, magic ‖ CPUSVN ‖
        aad)``."""
        cpusvn = self._me(ctx).cpusvn
        key = self._mrenclave_seal_key(ctx, keyid, cpusvn)
        nonce = ctx.rdrand(12)
        head = magic + cpusvn
        return head + nonce + AESGCM(key).encrypt(nonce, plain, head + aad)

    def _unseal_mrenclave(
        self, ctx: EnclaveContext, keyid: bytes, magic: bytes, blob: bytes, aad: bytes, what: str
    ) -> bytes:
        """Open a blob of :meth:`_seal_mrenclave`.

        Raises:
            VerificationFailed: it does not unseal (altered, another enclave's, another
                platform's or owner epoch's, a CPUSVN beyond this CPU's); the message never
                carries the blob's content.
        """
        size = len(magic) + 16
        head, body = blob[:size], blob[size:]
        try:
            if not head.startswith(magic) or len(head) != size or len(body) < 12 + 16:
                raise InvalidTag
            key = self._mrenclave_seal_key(ctx, keyid, head[len(magic) :])
            return AESGCM(key).decrypt(body[:12], body[12:], head + aad)
        except (InvalidTag, EnclaveLeafFailed):
            raise VerificationFailed(
                f"the {what} does not unseal: it was altered, or sealed by another enclave "
                "(the MRENCLAVE policy: only this launch-enclave image opens it), another "
                "platform or owner epoch, or under a CPUSVN beyond this CPU's"
            ) from None

    def _kx_private(self, ctx: EnclaveContext, sealed: bytes) -> bytes:
        """The key-agreement private key in ``sealed`` (cached for the same blob)."""
        if self._kx is not None and hmac.compare_digest(self._kx[0], sealed):
            return self._kx[1]
        private = self._unseal_mrenclave(
            ctx, KX_KEYID, KX_SEALED_MAGIC, sealed, b"", "launch enclave's key-agreement key"
        )
        if len(private) != pcl.PRIVATE_KEY_SIZE:
            raise VerificationFailed("the sealed key-agreement key has the wrong length")
        self._kx = (bytes(sealed), private)
        return private

    def _le_key(self, ctx: EnclaveContext, req: LeKeyRequest) -> LeKeyReply:
        """LE_KEY: unseal the key-agreement key (X25519), or make one inside the enclave
        (RDRAND) and seal it with the MRENCLAVE policy; with a TARGETINFO, a REPORT for that
        enclave whose REPORTDATA = SHA-256(LE_KEY_REPORTDATA_DOMAIN ‖ public key) ‖ 0³²."""
        made = None
        if req.sealed is not None:
            private = self._kx_private(ctx, req.sealed)
        else:
            private = pcl.private_key(ctx.rdrand)
            made = self._seal_mrenclave(ctx, KX_KEYID, KX_SEALED_MAGIC, private, b"")
            self._kx = (made, private)
        public = pcl.public_key(private)
        report = None
        if req.targetinfo is not None:
            target = TargetInfo.from_bytes(req.targetinfo)
            report = ctx.ereport(target, pcl.le_key_reportdata(public)).to_bytes()
        return LeKeyReply(public_key=public, sealed=made, report=report)

    def _add_code_key(self, ctx: EnclaveContext, req: AddCodeKeyRequest) -> AddCodeKeyReply:
        """ADD_CODE_KEY: unwrap an author's wrapped code key with the key-agreement key
        (:meth:`sgxlaunch.pcl.crypto.WrappedKey.unwrap`: for this key, the box opens with the
        release constraint as associated data, K has the file's key id), seal K with its
        constraint under the MRENCLAVE policy (the key id in the associated data, so a blob
        cannot be filed under another id), and log the addition."""
        wrapped = pcl.WrappedKey.from_bytes(req.wrapped)
        code_key = wrapped.unwrap(self._kx_private(ctx, req.le_key))
        constraint = wrapped.constraint.to_bytes()
        sealed_key = self._seal_mrenclave(
            ctx, CODE_KEYID, CODE_KEY_SEALED_MAGIC, code_key + constraint, wrapped.key_id
        )
        record, sealed, _digest = self._append_own(
            ctx,
            {
                "kind": CODE_KEY_ADDED,
                "time": _iso(self._now(req.now)),
                "key_id": wrapped.key_id.hex(),
                "constraint": wrapped.constraint.describe(),
            },
        )
        return AddCodeKeyReply(
            key_id=wrapped.key_id,
            constraint=constraint,
            code_key=sealed_key,
            record=record,
            sealed=sealed,
        )

    def _release_challenge(self, ctx: EnclaveContext) -> ReleaseChallengeReply:
        """RELEASE_CHALLENGE: a fresh one-time challenge (kept in enclave memory until one
        RELEASE uses it) and this enclave's TARGETINFO."""
        challenge = ctx.rdrand(pcl.CHALLENGE_SIZE)
        if len(self._challenges) >= MAX_CHALLENGES:
            del self._challenges[next(iter(self._challenges))]
        self._challenges[challenge] = None
        me = self._me(ctx)
        target = TargetInfo(
            mrenclave=me.mrenclave,
            attributes=me.attributes,
            miscselect=me.miscselect,
            configsvn=me.configsvn,
            configid=me.configid,
        )
        return ReleaseChallengeReply(challenge=challenge, targetinfo=target.to_bytes())

    def _release(self, ctx: EnclaveContext, req: ReleaseRequest) -> ReleaseReply:
        """RELEASE: decide whether the requester gets the code key; every decision is a log
        record this enclave writes itself (the host commits it, then ADVANCE, then CLAIM).

        Checks, in order (the first that fails refuses; the challenge is used up whatever
        the outcome):

        1. the challenge is one this instance issued and no RELEASE has used;
        2. the REPORT's MAC verifies under this enclave's report key (EGETKEY REPORT_KEY with
           the REPORT's KEYID: it was made by EREPORT on this CPU, this boot, targeted at this
           enclave — SDM EREPORT/EGETKEY);
        3. REPORTDATA = :func:`sgxlaunch.pcl.crypto.release_reportdata` (challenge, ephemeral
           key, key id);
        4. ATTRIBUTES.DEBUG is clear;
        5. a code key with that id is installed (its blob unseals, its id matches);
        6. the author's release constraint (MRENCLAVE, or MRSIGNER + ISVPRODID; minimum ISVSVN);
        7. the owner's policy in force allows the REPORT's identity (deny rules win) and the
           first allow rule that matches it says ``protected_code: allow``.

        Then K is boxed to the ephemeral key (:func:`sgxlaunch.pcl.crypto.seal_box`, domain
        RELEASE, AAD = challenge ‖ key id).
        """
        report = Report.from_bytes_raw(req.report)
        challenge, key_id = req.challenge, req.key_id
        facts: dict[str, Any] = {
            "kind": CODE_KEY_RELEASE,
            "time": _iso(self._now(req.now)),
            "key_id": key_id.hex(),
            "mrenclave": report.mrenclave.hex(),
            "mrsigner": report.mrsigner.hex(),
            "isvprodid": report.isvprodid,
            "isvsvn": report.isvsvn,
            "debug": bool(report.attributes.flags & _DEBUG),
        }
        rule: str | None = None
        policy_version = 0
        by_policy = False
        reasons: list[tuple[str, str, str, str]] = []
        boxed = None
        known = challenge in self._challenges
        self._challenges.pop(challenge, None)  # one use, whatever the outcome
        if not known:
            reasons.append(("", "challenge", "one this launch enclave issued, unused", "unknown"))
        elif not ctx.verify_report(report):
            reasons.append(
                (
                    "",
                    "report",
                    "a REPORT made on this CPU for this launch enclave (its MAC verifies)",
                    "a MAC that does not verify",
                )
            )
        elif not hmac.compare_digest(
            report.reportdata, pcl.release_reportdata(challenge, req.ephemeral_key, key_id)
        ):
            reasons.append(
                (
                    "",
                    "reportdata",
                    "SHA-256(release domain ‖ challenge ‖ ephemeral key ‖ key id)",
                    "other REPORTDATA",
                )
            )
        elif report.attributes.flags & _DEBUG:
            reasons.append(("", "attributes.debug", "DEBUG=0", "DEBUG=1"))
        else:
            code_key, constraint, found = self._code_key(ctx, req.code_key, key_id)
            if code_key is None or constraint is None:
                reasons.append(("", "key_id", "an installed code key", found))
            else:
                try:
                    constraint.check(
                        mrenclave=report.mrenclave,
                        mrsigner=report.mrsigner,
                        isvprodid=report.isvprodid,
                        isvsvn=report.isvsvn,
                        flags=report.attributes.flags,
                    )
                except VerificationFailed as exc:
                    reasons.append(
                        ("", "release constraint", exc.expected or "", exc.found or exc.message)
                    )
                else:
                    rule, policy_version, refusal = self._release_rule(report, req.now)
                    if refusal:
                        by_policy = True
                        reasons.extend(refusal)
                    else:
                        boxed = pcl.seal_box(
                            req.ephemeral_key,
                            code_key,
                            domain=pcl.RELEASE_DOMAIN,
                            aad=pcl.release_aad(challenge, key_id),
                            random=ctx.rdrand,
                        )
        facts |= {
            "outcome": "released" if boxed is not None else "refused",
            "rule": rule,
            "policy_version": policy_version or None,
            "reasons": [
                {"rule": r or None, "field": f, "expected": e, "found": x} for r, f, e, x in reasons
            ],
        }
        record, sealed, digest = self._append_own(ctx, facts)
        self._unclaimed = None if boxed is None else (digest, boxed)
        return ReleaseReply(
            released=int(boxed is not None),
            by_policy=int(by_policy),
            rule=rule,
            policy_version=policy_version,
            reasons=tuple(item for reason in reasons for item in reason),
            record=record,
            sealed=sealed,
        )

    def _code_key(
        self, ctx: EnclaveContext, blob: bytes | None, key_id: bytes
    ) -> tuple[bytes | None, pcl.ReleaseConstraint | None, str]:
        """The installed code key ``key_id`` and its constraint, or (None, None, why not)."""
        if blob is None:
            return None, None, "none installed under this id"
        try:
            plain = self._unseal_mrenclave(
                ctx, CODE_KEYID, CODE_KEY_SEALED_MAGIC, blob, key_id, "code key"
            )
            code_key, constraint = plain[: pcl.KEY_SIZE], plain[pcl.KEY_SIZE :]
            pcl.check_key_id(code_key, key_id)
            return code_key, pcl.ReleaseConstraint.from_bytes(constraint), ""
        except (VerificationFailed, MalformedInput):
            return None, None, "a stored blob that does not unseal for this id"

    def _release_rule(
        self, report: Report, host_seconds: int
    ) -> tuple[str | None, int, list[tuple[str, str, str, str]]]:
        """The owner's verdict on releasing to the REPORT's identity: (rule, policy version,
        reasons; none when allowed). The identity is the REPORT's (ATTRIBUTES without INIT,
        which EINIT sets: the SECS attributes MINT evaluated)."""
        state = self.state
        if state is None or state.policy is None or state.policy_digest is None:
            return None, 0, [("", "policy", "an installed owner launch policy", "none")]
        identity = _report_identity(report)
        decision = state.evaluate(identity, self._now(host_seconds))
        if not decision.allowed:
            return (
                decision.rule,
                decision.policy_version,
                [(r.rule or "", r.field, r.expected, r.found) for r in decision.reasons],
            )
        allow = decision.matched
        if allow is None or not allow.protected_code:
            return (
                decision.rule,
                decision.policy_version,
                [
                    (
                        decision.rule or "",
                        "protected_code",
                        "allow (in the first allow rule matching the enclave)",
                        "deny",
                    )
                ],
            )
        return decision.rule, decision.policy_version, []

    def _claim(self) -> ClaimReply:
        """CLAIM: the boxed code key of the last RELEASE, once the state holding its log
        record is the committed one (the host stored it and ADVANCE moved the counter); once.

        Raises:
            UsageError: nothing released, or its record is not committed.
        """
        unclaimed, self._unclaimed = self._unclaimed, None
        if unclaimed is None or not hmac.compare_digest(unclaimed[0], self.committed_digest):
            raise UsageError(
                "no release to claim: the last RELEASE refused, or its log record was not "
                "committed (store it, then ADVANCE)"
            )
        return ClaimReply(boxed=unclaimed[1])


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _issued_floor(state: TrustedState, floor: str) -> str:
    """The latest of ``floor`` and the signed ``issued`` times of ``state``'s policy and mode
    document (documents without ``issued`` do not move it)."""
    best = _time(floor) if floor else None
    for doc in (state.policy, state.mode):
        issued = getattr(doc, "issued", None)
        if issued is not None and (best is None or issued > best):
            best = issued
    return "" if best is None else best.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _verified_only(state: TrustedState) -> TrustedState:
    """``state`` with only the policy and mode document that verify under its root (what a
    fresh start or a recovery may commit: a floor rises only from verified documents)."""
    store = MemoryStore({ROOT_KEY: state.root_envelope})
    if state.policy_envelope is not None and state.policy_in_force:
        store.commit({POLICY_KEY: state.policy_envelope})
    if state.mode_envelope is not None and state.mode_in_force:
        store.commit({MODE_KEY: state.mode_envelope})
    verified = TrustedState.load(store)
    assert verified is not None
    return verified


def _state_of(state: TrustedState, base: LeState) -> LeState:
    """``base`` with the policy and mode document of ``state``."""
    return base.copy(
        policy_version=0 if state.policy is None else state.policy.version,
        policy_digest="" if state.policy_digest is None else state.policy_digest.hex(),
        mode_version=0 if state.mode is None else state.mode.version,
        mode_digest="" if state.mode_digest is None else state.mode_digest.hex(),
    )


def _check_documents(committed: LeState, state: TrustedState) -> None:
    """The home's policy and mode document are exactly the ones ``committed`` holds.

    Raises:
        VerificationFailed: naming the document, the committed version and what was found.
    """
    found = _state_of(state, committed)
    for name, version, digest in (
        ("launch policy", "policy_version", "policy_digest"),
        ("platform-mode document", "mode_version", "mode_digest"),
    ):
        want_v, got_v = getattr(committed, version), getattr(found, version)
        if getattr(committed, digest) != getattr(found, digest):
            raise VerificationFailed(
                f"refusing to start: the {name} in the home is not the one the launch enclave "
                "committed (a rollback, a replacement or a deletion)",
                expected="none" if not want_v else f"version {want_v}",
                found="none" if not got_v else f"version {got_v}",
            )


# -- the image ---------------------------------------------------------------------------------

_BASE_IMAGE = program_image(OwnerLaunchEnclave, data_pages=1)
ROOT_PAGE_OFFSET = _BASE_IMAGE.pages[-1].offset
"""Enclave offset of the measured page holding the owner root digest."""


def launch_enclave_image(root_digest: bytes) -> EnclaveImage:
    """The owner launch enclave's image for the owner root whose payload hashes to
    ``root_digest``: the program image with its last data page = magic ‖ digest."""
    if len(root_digest) != 32:
        raise UsageError("the owner root digest is 32 bytes")
    page = (ROOT_PAGE_MAGIC + root_digest).ljust(PAGE_SIZE, b"\x00")
    rw = secinfo_flags(PageType.REG, SecinfoFlag.R | SecinfoFlag.W)
    pages = [*_BASE_IMAGE.pages[:-1], ImagePage(ROOT_PAGE_OFFSET, rw, page)]
    return EnclaveImage(
        size=_BASE_IMAGE.size,
        ssaframesize=_BASE_IMAGE.ssaframesize,
        pages=tuple(pages),
        tcs_offsets=_BASE_IMAGE.tcs_offsets,
    )


def root_digest_of(root_envelope: bytes) -> bytes:
    """SHA-256 of the owner root's payload (what the launch enclave is built for)."""
    return hashlib.sha256(Envelope.from_bytes(root_envelope).payload).digest()


def sign_launch_enclave(root_envelope: bytes, signer: EnclaveSigner, *, date: int = 0) -> Sigstruct:
    """The owner's SIGSTRUCT for its launch enclave (EINITTOKEN_KEY outside ATTRIBUTEMASK)."""
    image = launch_enclave_image(root_digest_of(root_envelope))
    body = Sigstruct(
        date=date,
        swdefined=LE_SWDEFINED,
        attributes=LE_ATTRIBUTES,
        attributemask=LE_ATTRIBUTEMASK,
        miscmask=_ALL32,
        isvprodid=LE_ISVPRODID,
        isvsvn=LE_ISVSVN,
        enclavehash=image.mrenclave(),
    )
    return sign(body, signer)
