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

ECALL protocol: the input is a JSON object, the output a JSON object (blobs in base64). The
functions are listed in :class:`Call`. Time comes from the host (SGX has no trusted clock); the
enclave keeps the latest time it has seen sealed as a floor, so a host cannot turn the clock
back to revive an expired document.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sgxlaunch.arch import Attributes, EinitToken, KeyRequest, Sigstruct
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
from sgxlaunch.cpu.keys import cmac128
from sgxlaunch.errors import (
    MalformedInput,
    PlatformMismatch,
    Rollback,
    SgxlaunchError,
    UsageError,
    VerificationFailed,
)
from sgxlaunch.launch.log import LogHead, LogTampered, make_record, verify_log
from sgxlaunch.launch.log import LogRecord as _LogRecord
from sgxlaunch.policy import POLICY_KEY, ROOT_KEY, EnclaveIdentity, MemoryStore, TrustedState
from sgxlaunch.policy.envelope import Envelope
from sgxlaunch.policy.state import MODE_KEY, check_envelope, check_signatures
from sgxlaunch.sigstruct import EnclaveSigner, sign

ROOT_PAGE_MAGIC = b"sgxlaunch owner root digest v1\x00\x00"
assert len(ROOT_PAGE_MAGIC) == 32
LE_ISVPRODID = 0x20
LE_ISVSVN = 1
LE_SWDEFINED = 1  # the SDK's "HW version" convention: non-zero marks a launch enclave
_ALL64 = 2**64 - 1
_ALL32 = 2**32 - 1
_EINITTOKEN_KEY = int(AttributeFlag.EINITTOKEN_KEY)
_MODE64 = int(AttributeFlag.MODE64BIT)
SEAL_ATTRIBUTE_MASK = Attributes(flags=_ALL64 & ~_EINITTOKEN_KEY, xfrm=0)
"""Seal-key ATTRIBUTEMASK: every FLAGS bit but EINITTOKEN_KEY (same key in both modes)."""
LE_ATTRIBUTES = Attributes(flags=_MODE64 | _EINITTOKEN_KEY, xfrm=0x3)
"""The launch enclave's SIGSTRUCT ATTRIBUTES (MODE64BIT | EINITTOKEN_KEY, x87 | SSE)."""
LE_ATTRIBUTEMASK = Attributes(flags=_ALL64 & ~_EINITTOKEN_KEY, xfrm=_ALL64)
"""Its ATTRIBUTEMASK: everything but EINITTOKEN_KEY (so it runs with or without it)."""
_STATE_KEYID = hashlib.sha256(b"sgxlaunch/launch-enclave/sealed-state/v1").digest()
_LOG_KEYID = hashlib.sha256(b"sgxlaunch/launch-enclave/launch-log/v1").digest()
_SEAL_AAD = b"sgxlaunch launch-enclave sealed state v1"


class Call(enum.IntEnum):
    """The launch enclave's ECALLs.

    Calls that change the committed state (INSTALL_POLICY, LOG_APPEND, NOTE_MODE, and LOAD
    with a recovery document) only *prepare* it: they return the next state sealed; the host
    stores it with the documents in one commit and then calls ADVANCE, which moves the
    monotonic counter. Until then the enclave keeps serving the committed state.
    """

    LOAD = 0
    """{root, policy?, mode?, sealed?, handover?, recovery?, platform_id, now} → {counter,
    handed_over?, sealed?}: trust the root it was built for; accept the committed state (or
    finish an interrupted advance); check the stored documents are the committed ones."""
    INSTALL_POLICY = 1
    """{policy, now} → {sealed, version, digest}: verify a new policy, prepare its state."""
    MINT = 2
    """{sigstruct, flags, xfrm, now} → {allowed, rule, reasons, token?, keyid?}."""
    LOG_APPEND = 3
    """{facts, now} → {record, sealed}: MAC and chain a launch-log record, prepare the head."""
    LOG_VERIFY = 4
    """{records} → {ok, index?, message?}: verify the stored log against the committed head."""
    NOTE_MODE = 5
    """{mode, platform_id, now} → {sealed, handover?}: verify a platform-mode document and
    prepare its state (a handover when it names another launch-enclave signer)."""
    ADVANCE = 6
    """{} → {counter}: compare-and-set the monotonic counter to the prepared state."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any, name: str) -> bytes:
    if not isinstance(text, str):
        raise MalformedInput(f"launch-enclave call: {name} must be base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise MalformedInput(f"launch-enclave call: {name} is not base64") from None


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


def _recovery_fields(payload: bytes) -> tuple[bytes, int]:
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


class OwnerLaunchEnclave(EnclaveProgram):
    """The owner's launch enclave (see the module docstring for the protocol)."""

    def __init__(self) -> None:
        self.state: TrustedState | None = None
        self.committed = LeState()
        self.committed_digest = bytes(32)
        self.pending: tuple[LeState, TrustedState] | None = None
        self.time_floor = ""
        self.loaded = False

    # -- entry ------------------------------------------------------------------------------

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        try:
            request = json.loads(data)
            if not isinstance(request, dict):
                raise MalformedInput("launch-enclave call: the request is not a JSON object")
            result = self._dispatch(ctx, Call(function), request)
            result["ok"] = True
        except (SgxlaunchError, ValueError) as exc:
            result = {
                "ok": False,
                "error": type(exc).__name__,
                "message": getattr(exc, "message", str(exc)),
                "detail": list(getattr(exc, "detail", ())),
            }
            if isinstance(exc, LogTampered):
                result["index"] = exc.index
        return json.dumps(result).encode()

    def _dispatch(self, ctx: EnclaveContext, call: Call, req: dict[str, Any]) -> dict[str, Any]:
        if call == Call.LOAD:
            return self._load(ctx, req)
        if not self.loaded:
            raise UsageError("the launch enclave has not been loaded with its state")
        if call == Call.INSTALL_POLICY:
            return self._install_policy(ctx, req)
        if call == Call.MINT:
            return self._mint(ctx, req)
        if call == Call.LOG_APPEND:
            return self._log_append(ctx, req)
        if call == Call.LOG_VERIFY:
            return self._log_verify(ctx, req)
        if call == Call.NOTE_MODE:
            return self._note_mode(ctx, req)
        if call == Call.ADVANCE:
            return self._advance(ctx)
        raise UsageError(f"unknown launch-enclave call {call}")  # pragma: no cover

    # -- keys and sealing -------------------------------------------------------------------

    @staticmethod
    def _seal_key(ctx: EnclaveContext, keyid: bytes) -> bytes:
        me = ctx.ereport(bytes(512))
        return ctx.egetkey(
            KeyRequest(
                keyname=KeyName.SEAL,
                keypolicy=int(KeyPolicy.MRSIGNER),
                isvsvn=me.isvsvn,
                cpusvn=me.cpusvn,
                attributemask=SEAL_ATTRIBUTE_MASK,
                keyid=keyid,
                miscmask=_ALL32,
            )
        )

    def _seal(self, ctx: EnclaveContext, state: LeState) -> str:
        key = self._seal_key(ctx, _STATE_KEYID)
        nonce = ctx.rdrand(12)
        return _b64(nonce + AESGCM(key).encrypt(nonce, state.to_json(), _SEAL_AAD))

    def _unseal(self, ctx: EnclaveContext, blob: bytes) -> LeState:
        key = self._seal_key(ctx, _STATE_KEYID)
        try:
            plain = AESGCM(key).decrypt(blob[:12], blob[12:], _SEAL_AAD)
        except InvalidTag:
            raise VerificationFailed(
                "the launch enclave's sealed state does not unseal: it was altered, or sealed "
                "by another platform, another owner epoch or another launch-enclave key"
            ) from None
        return LeState.from_json(plain)

    def _now(self, ctx: EnclaveContext, req: dict[str, Any]) -> datetime:
        """Host time, never earlier than the latest time seen (committed as a floor)."""
        now = _time(req.get("now"))
        floor_text = self.time_floor or self.committed.time_floor
        if floor_text:
            floor = _time(floor_text)
            if now < floor:
                now = floor
        self.time_floor = now.isoformat().replace("+00:00", "Z")
        return now

    @staticmethod
    def _me(ctx: EnclaveContext) -> bytes:
        return ctx.ereport(bytes(512)).mrsigner

    # -- freshness --------------------------------------------------------------------------

    def _prepare(
        self, ctx: EnclaveContext, state: TrustedState, **changes: Any
    ) -> tuple[LeState, str]:
        """The next state (counter + 1, chained to the committed digest), sealed. It takes
        effect only when the host has stored it and called ADVANCE."""
        nxt = self.committed.copy(
            counter=self.committed.counter + 1,
            prev=self.committed_digest.hex(),
            counter_owner=self.committed.counter_owner or self._me(ctx).hex(),
            time_floor=self.time_floor or self.committed.time_floor,
        ).copy(**changes)
        self.pending = (nxt, state)
        return nxt, self._seal(ctx, nxt)

    def _advance(self, ctx: EnclaveContext) -> dict[str, Any]:
        """ADVANCE: compare-and-set the counter from (N, committed digest) to (N + 1, digest
        of the prepared state); only then does the prepared state take effect."""
        if self.pending is None:
            raise UsageError("no prepared state to commit")
        nxt, state = self.pending
        self._cas(ctx, nxt)
        self.pending = None
        self.committed, self.committed_digest, self.state = nxt, nxt.digest(), state
        return {"counter": nxt.counter}

    def _cas(self, ctx: EnclaveContext, nxt: LeState) -> None:
        owner = bytes.fromhex(nxt.counter_owner)
        ctx.counter_compare_and_set(
            nxt.counter - 1,
            bytes.fromhex(nxt.prev),
            nxt.digest(),
            next_owner=None if owner == self._me(ctx) else (owner, LE_ISVPRODID),
        )

    # -- calls ------------------------------------------------------------------------------

    def _load(self, ctx: EnclaveContext, req: dict[str, Any]) -> dict[str, Any]:
        """LOAD: trust the root this enclave was built for, read the counter, accept the
        committed state (or an N + 1 state chaining to it, finishing its advance), and check
        the stored documents are exactly the ones that state committed.

        Raises:
            VerificationFailed: another root; the state is missing, older, or does not chain
                (the message names the recovery path); the stored documents differ.
        """
        root = _unb64(req.get("root"), "root")
        built_for = ctx.read(ctx.base_address + ROOT_PAGE_OFFSET + 32, 32)
        payload = Envelope.from_bytes(root).payload
        if hashlib.sha256(payload).digest() != built_for:
            raise VerificationFailed(
                "the owner root offered is not the one this launch enclave was built for",
                expected=built_for.hex(),
                found=hashlib.sha256(payload).hexdigest(),
            )
        store = MemoryStore({ROOT_KEY: root})
        for key, name in ((POLICY_KEY, "policy"), (MODE_KEY, "mode")):
            if req.get(name) is not None:
                store.commit({key: _unb64(req[name], name)})
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
        if req.get("sealed") is not None:
            try:
                candidate = self._unseal(ctx, _unb64(req["sealed"], "sealed"))
            except SgxlaunchError as exc:
                sealed_error = exc
        handover = req.get("handover")
        if handover is not None and (candidate is None or candidate.counter < slot.value):
            plain = LeState.from_json(_unb64(handover, "handover"))
            if plain.counter == slot.value and hmac.compare_digest(plain.digest(), slot.digest):
                candidate = plain  # authentic: the counter holds its digest
        fresh = candidate is None and slot.value == 0
        if fresh:
            committed, digest = _state_of(state, LeState()), bytes(32)
        elif req.get("recovery") is not None:
            committed, digest = self._recover(ctx, state, slot, req)
        elif candidate is None:
            why = (
                "does not unseal"
                if sealed_error is not None
                else "is missing"
                if req.get("sealed") is None
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
        sealed = None
        handed_over = None
        if self.pending is not None:  # recovery: the host stores this, then ADVANCE
            sealed = self._seal(ctx, self.pending[0])
        elif committed.counter_owner and committed.counter_owner != self._me(ctx).hex():
            # A handover this enclave prepared is now complete: it serves nothing more.
            self.loaded = False
            handed_over = committed.counter_owner
        return {
            "handed_over": handed_over,
            "sealed": sealed,
            "counter": committed.counter,
            "policy_version": committed.policy_version,
            "log_count": committed.log_count,
            "log_head": committed.log_head,
            "mode_version": committed.mode_version,
        }

    def _recover(
        self, ctx: EnclaveContext, state: TrustedState, slot: Any, req: dict[str, Any]
    ) -> tuple[LeState, bytes]:
        """Owner recovery: a threshold of the root's keys signed a recovery document for this
        platform at the counter's current value; the documents now in the home become the
        committed state at counter + 1 (prepared here, advanced by ADVANCE)."""
        data = _unb64(req.get("recovery"), "recovery")
        envelope = check_envelope(data, RECOVERY_PAYLOAD_TYPE, max_size=64 << 10)
        check_signatures(envelope, state.root, "recovery document")
        platform_id, counter = _recovery_fields(envelope.payload)
        want = _unb64(req.get("platform_id"), "platform_id")
        if not hmac.compare_digest(platform_id, want):
            raise PlatformMismatch(
                "the recovery document is for another platform",
                expected=want.hex(),
                found=platform_id.hex(),
            )
        if counter != slot.value:
            raise Rollback(
                "the recovery document is bound to another counter value",
                expected=f"counter {slot.value}",
                found=f"counter {counter}",
            )
        base = LeState(counter=slot.value, counter_owner=self._me(ctx).hex())
        fresh = _state_of(state, base)
        self.committed, self.committed_digest = base, slot.digest
        nxt = fresh.copy(counter=slot.value + 1, prev=slot.digest.hex())
        self.pending = (nxt, state)
        return base, slot.digest

    def _install_policy(self, ctx: EnclaveContext, req: dict[str, Any]) -> dict[str, Any]:
        assert self.state is not None
        now = self._now(ctx, req)
        new_state, _update = self.state.install_policy(_unb64(req.get("policy"), "policy"), now)
        assert new_state.policy is not None and new_state.policy_digest is not None
        _nxt, sealed = self._prepare(
            ctx,
            new_state,
            policy_version=new_state.policy.version,
            policy_digest=new_state.policy_digest.hex(),
        )
        return {
            "sealed": sealed,
            "version": new_state.policy.version,
            "digest": new_state.policy_digest.hex(),
        }

    def _mint(self, ctx: EnclaveContext, req: dict[str, Any]) -> dict[str, Any]:
        assert self.state is not None
        now = self._now(ctx, req)
        sig = Sigstruct.from_bytes(_unb64(req.get("sigstruct"), "sigstruct"))
        flags, xfrm = req.get("flags"), req.get("xfrm")
        if not isinstance(flags, int) or not isinstance(xfrm, int):
            raise MalformedInput("launch-enclave call: flags and xfrm must be integers")
        identity = EnclaveIdentity.from_sigstruct(sig)
        identity = EnclaveIdentity(
            mrenclave=identity.mrenclave,
            mrsigner=identity.mrsigner,
            isvprodid=identity.isvprodid,
            isvsvn=identity.isvsvn,
            isvfamilyid=identity.isvfamilyid,
            isvextprodid=identity.isvextprodid,
            flags=flags,
            xfrm=xfrm,
            miscselect=sig.miscselect,
        )
        if self.state.policy is None:
            return {
                "allowed": False,
                "rule": None,
                "policy_version": 0,
                "reasons": [
                    {
                        "rule": None,
                        "field": "policy",
                        "expected": "an installed owner launch policy",
                        "found": "none",
                    }
                ],
            }
        decision = self.state.evaluate(identity, now)
        out: dict[str, Any] = decision.describe()
        out["policy_digest"] = self.state.policy_digest.hex() if self.state.policy_digest else None
        if not decision.allowed:
            return out
        token = self._token(ctx, sig, Attributes(flags=flags, xfrm=xfrm))
        out["token"] = _b64(token.to_bytes())
        out["keyid"] = token.keyid.hex()
        return out

    @staticmethod
    def _token(ctx: EnclaveContext, sig: Sigstruct, attributes: Attributes) -> EinitToken:
        """Mint an EINITTOKEN (SDM EINIT's token checks; Intel's LE flow, spec §4.7)."""
        me = ctx.ereport(bytes(512))
        keyid = ctx.rdrand(32)
        mask = Attributes(flags=_ALL64 & ~_MODE64, xfrm=0)
        token = EinitToken(
            valid=1,
            attributes=attributes,
            mrenclave=sig.enclavehash,
            mrsigner=sig.mrsigner,
            cpusvnle=me.cpusvn,
            isvprodidle=me.isvprodid,
            isvsvnle=me.isvsvn,
            maskedmiscselectle=me.miscselect & _ALL32,
            maskedattributesle=me.attributes & mask,
            keyid=keyid,
        )
        key = ctx.egetkey(
            KeyRequest(
                keyname=KeyName.EINITTOKEN,
                keyid=keyid,
                cpusvn=me.cpusvn,
                isvsvn=me.isvsvn,
                attributemask=mask,
                miscmask=_ALL32,
            )
        )
        return token.replace(mac=cmac128(key, token.maced_bytes()))

    def _log_key(self, ctx: EnclaveContext) -> bytes:
        return self._seal_key(ctx, _LOG_KEYID)

    def _log_append(self, ctx: EnclaveContext, req: dict[str, Any]) -> dict[str, Any]:
        assert self.state is not None
        facts = req.get("facts")
        if not isinstance(facts, dict):
            raise MalformedInput("launch-enclave call: facts must be an object")
        self._now(ctx, req)
        head = LogHead(self.committed.log_count, bytes.fromhex(self.committed.log_head))
        record, head = make_record(self._log_key(ctx), head, facts)
        _nxt, sealed = self._prepare(
            ctx, self.state, log_count=head.count, log_head=head.hash.hex()
        )
        return {"record": _b64(record.to_bytes()), "sealed": sealed}

    def _log_verify(self, ctx: EnclaveContext, req: dict[str, Any]) -> dict[str, Any]:
        blobs = req.get("records")
        if not isinstance(blobs, list):
            raise MalformedInput("launch-enclave call: records must be a list")
        records = []
        for index, blob in enumerate(blobs):
            try:
                records.append(_LogRecord.from_bytes(_unb64(blob, f"records[{index}]")))
            except MalformedInput as exc:
                raise LogTampered(
                    f"launch-log record {index}: {exc.message}", index=index
                ) from None
        head = LogHead(self.committed.log_count, bytes.fromhex(self.committed.log_head))
        verify_log(self._log_key(ctx), records, head)
        return {"count": len(records)}

    def _note_mode(self, ctx: EnclaveContext, req: dict[str, Any]) -> dict[str, Any]:
        """NOTE_MODE: verify an owner-signed platform-mode document (threshold of the root's
        keys, version above the committed one) and prepare the state that commits it. A
        document naming another launch-enclave signer prepares the **handover**: the next
        state names that signer as the counter's owner and starts its log segment empty; the
        plaintext state goes back too, for the new enclave to adopt (the counter slot holds
        its digest, so the plaintext is authentic once advanced)."""
        assert self.state is not None
        now = self._now(ctx, req)
        platform_id = _unb64(req.get("platform_id"), "platform_id")
        new_state, _update = self.state.install_mode(
            _unb64(req.get("mode"), "mode"), now, platform_id=platform_id
        )
        doc = new_state.mode
        assert doc is not None and new_state.mode_digest is not None
        changes: dict[str, Any] = {
            "mode_version": doc.version,
            "mode_digest": new_state.mode_digest.hex(),
        }
        me = self._me(ctx).hex()
        handover = None
        owner = self.committed.counter_owner or me
        if doc.mode == "owner" and doc.le_mrsigner is not None and doc.le_mrsigner.hex() != owner:
            changes |= {
                "counter_owner": doc.le_mrsigner.hex(),
                "log_count": 0,
                "log_head": bytes(32).hex(),
            }
        nxt, sealed = self._prepare(ctx, new_state, **changes)
        if nxt.counter_owner != me:
            handover = _b64(nxt.to_json())
        return {"sealed": sealed, "handover": handover, "counter": nxt.counter}


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
