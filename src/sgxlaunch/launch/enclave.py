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

ECALL protocol: the input is a JSON object, the output a JSON object (blobs in base64). The
functions are listed in :class:`Call`. Time comes from the host (SGX has no trusted clock); the
enclave keeps the latest time it has seen sealed as a floor, so a host cannot turn the clock
back to revive an expired document.
"""

from __future__ import annotations

import base64
import enum
import hashlib
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
from sgxlaunch.errors import MalformedInput, SgxlaunchError, UsageError, VerificationFailed
from sgxlaunch.launch.log import LogHead, LogTampered, make_record, verify_log
from sgxlaunch.launch.log import LogRecord as _LogRecord
from sgxlaunch.policy import POLICY_KEY, ROOT_KEY, EnclaveIdentity, MemoryStore, TrustedState
from sgxlaunch.policy.envelope import Envelope
from sgxlaunch.sigstruct import Signer, sign

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
    """The launch enclave's ECALLs."""

    LOAD = 0
    """{root, policy?, sealed?, now} → {state}: trust the root it was built for, check the
    stored policy against the sealed high-water mark, restore the log head."""
    INSTALL_POLICY = 1
    """{policy, now} → {sealed, version, digest}: verify a new policy, raise the mark."""
    MINT = 2
    """{sigstruct, flags, xfrm, now} → {allowed, rule, reasons, token?, keyid?}."""
    LOG_APPEND = 3
    """{facts, now} → {record, sealed}: MAC and chain a launch-log record."""
    LOG_VERIFY = 4
    """{records} → {ok, index?, message?}: verify the stored log against the sealed head."""
    NOTE_MODE = 5
    """{version, now} → {sealed}: raise the sealed platform-mode document version."""


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


@dataclass
class _Sealed:
    """What the launch enclave keeps sealed between restarts."""

    policy_version: int = 0
    policy_digest: str = ""
    mode_version: int = 0
    log_count: int = 0
    log_head: str = bytes(32).hex()
    time_floor: str = ""

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> _Sealed:
        value = json.loads(data)
        return cls(**value)


class OwnerLaunchEnclave(EnclaveProgram):
    """The owner's launch enclave (see the module docstring for the protocol)."""

    def __init__(self) -> None:
        self.state: TrustedState | None = None
        self.sealed = _Sealed()
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

    def _seal(self, ctx: EnclaveContext) -> str:
        key = self._seal_key(ctx, _STATE_KEYID)
        nonce = ctx.rdrand(12)
        return _b64(nonce + AESGCM(key).encrypt(nonce, self.sealed.to_json(), _SEAL_AAD))

    def _unseal(self, ctx: EnclaveContext, blob: bytes) -> _Sealed:
        key = self._seal_key(ctx, _STATE_KEYID)
        try:
            plain = AESGCM(key).decrypt(blob[:12], blob[12:], _SEAL_AAD)
        except InvalidTag:
            raise VerificationFailed(
                "the launch enclave's sealed state does not unseal: it was altered, or sealed "
                "by another platform or another owner key"
            ) from None
        return _Sealed.from_json(plain)

    def _now(self, ctx: EnclaveContext, req: dict[str, Any]) -> datetime:
        """Host time, never earlier than the latest time seen (sealed floor)."""
        now = _time(req.get("now"))
        if self.sealed.time_floor:
            floor = _time(self.sealed.time_floor)
            if now < floor:
                now = floor
        self.sealed.time_floor = now.isoformat().replace("+00:00", "Z")
        return now

    # -- calls ------------------------------------------------------------------------------

    def _load(self, ctx: EnclaveContext, req: dict[str, Any]) -> dict[str, Any]:
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
        policy = req.get("policy")
        if policy is not None:
            store.commit({POLICY_KEY: _unb64(policy, "policy")})
        state = TrustedState.load(store)
        assert state is not None
        sealed = _Sealed()
        if req.get("sealed") is not None:
            sealed = self._unseal(ctx, _unb64(req["sealed"], "sealed"))
        if sealed.policy_version:
            stored = state.policy
            digest = state.policy_digest.hex() if state.policy_digest else ""
            if stored is None or stored.version < sealed.policy_version:
                raise VerificationFailed(
                    "launch policy rollback: the stored policy is older than the sealed "
                    "high-water mark",
                    expected=f"version ≥ {sealed.policy_version}",
                    found="no policy" if stored is None else f"version {stored.version}",
                )
            if stored.version == sealed.policy_version and digest != sealed.policy_digest:
                raise VerificationFailed(
                    "launch policy rollback: the stored policy differs from the sealed one of "
                    "the same version",
                    expected=sealed.policy_digest,
                    found=digest,
                )
        mode_version = int(req.get("mode_version") or 0)
        if mode_version < sealed.mode_version:
            raise VerificationFailed(
                "platform-mode rollback: the stored mode document is older than the sealed one",
                expected=f"version ≥ {sealed.mode_version}",
                found=f"version {mode_version}",
            )
        self.state = state
        self.sealed = sealed
        raised = False
        if state.policy is not None and state.policy_digest is not None:
            raised = state.policy.version > sealed.policy_version
            self.sealed.policy_version = state.policy.version
            self.sealed.policy_digest = state.policy_digest.hex()
        self.loaded = True
        return {
            "sealed": self._seal(ctx) if raised else None,
            "policy_version": self.sealed.policy_version,
            "log_count": sealed.log_count,
            "log_head": sealed.log_head,
            "mode_version": sealed.mode_version,
        }

    def _install_policy(self, ctx: EnclaveContext, req: dict[str, Any]) -> dict[str, Any]:
        assert self.state is not None
        now = self._now(ctx, req)
        new_state, _update = self.state.install_policy(_unb64(req.get("policy"), "policy"), now)
        assert new_state.policy is not None and new_state.policy_digest is not None
        if new_state.policy.version < self.sealed.policy_version:  # pragma: no cover - floor
            raise VerificationFailed("launch policy rollback below the sealed high-water mark")
        self.state = new_state
        self.sealed.policy_version = new_state.policy.version
        self.sealed.policy_digest = new_state.policy_digest.hex()
        return {
            "sealed": self._seal(ctx),
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
        facts = req.get("facts")
        if not isinstance(facts, dict):
            raise MalformedInput("launch-enclave call: facts must be an object")
        self._now(ctx, req)
        head = LogHead(self.sealed.log_count, bytes.fromhex(self.sealed.log_head))
        record, head = make_record(self._log_key(ctx), head, facts)
        self.sealed.log_count = head.count
        self.sealed.log_head = head.hash.hex()
        return {"record": _b64(record.to_bytes()), "sealed": self._seal(ctx)}

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
        head = LogHead(self.sealed.log_count, bytes.fromhex(self.sealed.log_head))
        verify_log(self._log_key(ctx), records, head)
        return {"count": len(records)}

    def _note_mode(self, ctx: EnclaveContext, req: dict[str, Any]) -> dict[str, Any]:
        version = req.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise MalformedInput("launch-enclave call: version must be a non-negative integer")
        if version < self.sealed.mode_version:
            raise VerificationFailed(
                "platform-mode rollback below the sealed mode version",
                expected=f"≥ {self.sealed.mode_version}",
                found=str(version),
            )
        self._now(ctx, req)
        self.sealed.mode_version = version
        return {"sealed": self._seal(ctx)}


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


def sign_launch_enclave(root_envelope: bytes, signer: Signer, *, date: int = 0) -> Sigstruct:
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
