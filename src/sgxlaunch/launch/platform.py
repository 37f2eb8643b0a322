"""The Platform: processor + driver + owner launch enclave + policy state + launch log.

Everything persistent lives in one injected :class:`~sgxlaunch.policy.Store` (SQLite under
``--home`` at the edge); the clock is injected too. Opening a Platform rebuilds "the same CPU"
from the stored platform seed, the driver with the launch-control mode the owner's signed mode
document sets, and — when the owner has set one up — the owner's launch enclave, loaded with
the stored owner root, policy and its sealed state. Every INIT attempt the driver sees reaches
the launch log through an observer, so INITs that bypass :meth:`Platform.run` are logged too.

Store keys: ``platform/seed``, ``platform/config`` (JSON); per launch-enclave signer
``platform/le-sigstruct/<mrsigner>`` (the owner's SIGSTRUCT for its launch enclave) and
``platform/le-sealed/<mrsigner>`` (its sealed state); ``platform/le-active`` (the signer used in
permissive mode; owner mode uses the signer its mode document names); the launch log as
``log/<mrsigner>/<seq>`` (one segment per launch-enclave signer, since only that enclave can
derive its MAC key); and the policy layer's ``owner/*`` documents.
"""

from __future__ import annotations

import base64
import contextlib
import errno as _errno
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sgxlaunch import errors as _errors
from sgxlaunch.arch import Attributes, EinitToken, Sigstruct
from sgxlaunch.arch.constants import AttributeFlag
from sgxlaunch.cpu import CpuConfig, Processor, secs_for
from sgxlaunch.driver import (
    InitAttempt,
    LoadedEnclave,
    LoadFailed,
    Process,
    SgxDriver,
    load,
)
from sgxlaunch.errors import (
    MalformedInput,
    PolicyDenied,
    SgxlaunchError,
    UsageError,
    VerificationFailed,
)
from sgxlaunch.formats.sgxs import SgxsImage
from sgxlaunch.launch.enclave import (
    Call,
    OwnerLaunchEnclave,
    launch_enclave_image,
    root_digest_of,
)
from sgxlaunch.launch.log import LogTampered
from sgxlaunch.policy import POLICY_KEY, Store, TrustedState
from sgxlaunch.sigstruct import verify

SEED_KEY = "platform/seed"
CONFIG_KEY = "platform/config"
LE_SIGSTRUCT_PREFIX = "platform/le-sigstruct/"
LE_ACTIVE_KEY = "platform/le-active"
LE_SEALED_PREFIX = "platform/le-sealed/"
LOG_PREFIX = "log/"


def le_sigstruct_key(mrsigner: bytes) -> str:
    """Store key of the owner's launch-enclave SIGSTRUCT signed by ``mrsigner``."""
    return LE_SIGSTRUCT_PREFIX + mrsigner.hex()


def le_sealed_key(mrsigner: bytes) -> str:
    """Store key of that launch enclave's sealed state (its seal key depends on MRSIGNER)."""
    return LE_SEALED_PREFIX + mrsigner.hex()


def log_prefix(mrsigner: bytes) -> str:
    """Store-key prefix of the launch-log segment kept by the launch enclave of ``mrsigner``
    (only that enclave can derive its MAC key)."""
    return f"{LOG_PREFIX}{mrsigner.hex()}/"


Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class PlatformConfig:
    """What the emulated machine is (kept in the store; the same at every open).

    Attributes:
        epc_size: EPC bytes.
        firmware: ``lc-enabled`` (writable launch-key MSRs) or ``locked-hash``.
        firmware_lepubkeyhash: for ``locked-hash``: the hash firmware locked in (hex).
    """

    epc_size: int = 16 << 20
    firmware: str = "lc-enabled"
    firmware_lepubkeyhash: str | None = None

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "epc_size": self.epc_size,
                "firmware": self.firmware,
                "firmware_lepubkeyhash": self.firmware_lepubkeyhash,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PlatformConfig:
        try:
            value = json.loads(data)
            return cls(
                epc_size=int(value["epc_size"]),
                firmware=str(value["firmware"]),
                firmware_lepubkeyhash=value.get("firmware_lepubkeyhash"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedInput(f"platform config in the store is damaged: {exc}") from None

    def cpu_config(self) -> CpuConfig:
        kwargs: dict[str, Any] = {"epc_size": self.epc_size, "kss": True}
        if self.firmware == "locked-hash":
            kwargs["firmware"] = "locked-hash"
            if self.firmware_lepubkeyhash is None:
                raise UsageError("a locked-hash platform needs the firmware's hash")
            kwargs["firmware_lepubkeyhash"] = bytes.fromhex(self.firmware_lepubkeyhash)
        return CpuConfig(**kwargs)


@dataclass
class RunResult:
    """The outcome of :meth:`Platform.run` (successful or not).

    Attributes:
        enclave: the loaded enclave (``None`` when it did not initialize).
        mode: the launch-control mode.
        decision: ``permissive`` / ``allowed`` / ``denied`` / ``error``.
        rule: the allowing (or denying) rule.
        reasons: denial reasons, each a dict (rule, field, expected, found).
        keyid: the token's KEYID (hex) when one was minted.
    """

    enclave: LoadedEnclave | None
    mode: str
    decision: str
    rule: str | None = None
    reasons: list[dict[str, Any]] = field(default_factory=list)
    keyid: str | None = None
    policy_version: int | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "initialized": self.enclave is not None,
            "mode": self.mode,
            "decision": self.decision,
            "rule": self.rule,
            "reasons": self.reasons,
            "token_keyid": self.keyid,
            "policy_version": self.policy_version,
            "mrenclave": None if self.enclave is None else self.enclave.mrenclave.hex(),
            "mrsigner": None if self.enclave is None else self.enclave.mrsigner.hex(),
        }


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def platform_id_of(seed: bytes) -> bytes:
    """A public identifier of the platform (binds owner documents to it); the seed stays
    secret."""
    return hashlib.sha256(b"sgxlaunch/platform-id/v1\x00" + seed).digest()


class Platform:
    """One emulated SGX platform and its owner's launch control (see the module docstring).

    Open with :meth:`open` (or create with :meth:`create`). Methods that change state verify
    first and commit to the store in one step only afterwards.
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        random: Callable[[int], bytes] | None,
        maintenance: bool = False,
    ):
        self.store = store
        self.clock = clock
        self.maintenance = maintenance
        self.blocked: str | None = None
        seed = store.get(SEED_KEY)
        config_data = store.get(CONFIG_KEY)
        if seed is None or config_data is None:
            raise UsageError("no platform here: run `sgxlaunch platform init` first")
        self.config = PlatformConfig.from_json(config_data)
        self.platform_id = platform_id_of(seed)
        self.cpu = Processor(self.config.cpu_config(), seed, random=random)
        self.driver = SgxDriver(self.cpu)
        self.state = TrustedState.load(store)
        self.le: LoadedEnclave | None = None
        self.le_sigstruct: Sigstruct | None = None
        self._context: dict[str, Any] | None = None
        self._log_errors: list[str] = []
        self._configure()

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        store: Store,
        *,
        seed: bytes,
        config: PlatformConfig | None = None,
        clock: Clock,
        random: Callable[[int], bytes] | None = None,
    ) -> Platform:
        """Create a platform in an empty store (refuses to overwrite one).

        Raises:
            UsageError: the store already holds a platform, or the seed is shorter than 16 B.
        """
        if store.get(SEED_KEY) is not None:
            raise UsageError("a platform already exists here (its seed would be replaced)")
        if len(seed) < 16:
            raise UsageError("the platform seed must be at least 16 bytes")
        config = config or PlatformConfig()
        config.cpu_config()  # validate before writing
        store.commit({SEED_KEY: seed, CONFIG_KEY: config.to_json()})
        return cls(store, clock, random=random)

    @classmethod
    def open(
        cls,
        store: Store,
        *,
        clock: Clock,
        random: Callable[[int], bytes] | None = None,
        maintenance: bool = False,
    ) -> Platform:
        """Open the platform kept in ``store``.

        Args:
            maintenance: open even when the stored mode document is not signed by the current
                owner root (after a root rotation); nothing can be launched then, but a new
                owner-signed mode document can be installed with :meth:`set_mode`.

        Raises:
            UsageError: no platform in the store.
            VerificationFailed / MalformedInput: the stored state does not verify (the
                platform refuses to start rather than fall back to permissive).
        """
        return cls(store, clock, random=random, maintenance=maintenance)

    # -- mode and launch enclave -------------------------------------------------------------

    @property
    def mode_document(self) -> Any:
        return getattr(self.state, "mode", None) if self.state is not None else None

    @property
    def mode(self) -> str:
        return self.driver.mode

    def _configure(self) -> None:
        state = self.state
        if state is not None and state.mode is not None and not state.mode_in_force:
            problem = (
                "the stored platform-mode document is not signed by the current owner root; "
                "install one signed by the current keys (`sgxlaunch platform mode FILE`)"
            )
            if not self.maintenance:
                raise VerificationFailed(f"refusing to start: {problem}")
            self.blocked = problem
            return
        doc = self.mode_document
        signer: bytes | None
        if doc is not None and doc.mode == "owner":
            signer = _named_signer(doc)
            self.le_sigstruct = self._stored_le(signer)
            if self.le_sigstruct is None:
                raise VerificationFailed(
                    "the owner's mode document names a launch-enclave signer whose launch "
                    "enclave is not set up here",
                    expected=signer.hex(),
                    found="no SIGSTRUCT from that signer",
                )
            self.driver.configure_launch_control("owner", signer)
        else:
            active = self.store.get(LE_ACTIVE_KEY)
            signer = bytes.fromhex(active.decode()) if active else None
            self.le_sigstruct = None if signer is None else self._stored_le(signer)
        if self.le_sigstruct is not None and self.state is not None:
            try:
                self._start_launch_enclave()
            except SgxlaunchError as exc:
                if not self.maintenance:
                    raise
                self.le = None
                self.blocked = f"the launch enclave does not start: {exc.message}"
        self.driver.observers.append(self._observe)

    def _stored_le(self, signer: bytes) -> Sigstruct | None:
        data = self.store.get(le_sigstruct_key(signer))
        if data is None:
            return None
        sig = Sigstruct.from_bytes(data)
        if sig.mrsigner != signer:
            raise VerificationFailed(
                "the stored launch-enclave SIGSTRUCT is not signed by the key it is filed under",
                expected=signer.hex(),
                found=sig.mrsigner.hex(),
            )
        return sig

    @property
    def le_signer(self) -> bytes | None:
        return None if self.le_sigstruct is None else self.le_sigstruct.mrsigner

    def _start_launch_enclave(self) -> None:
        assert self.le_sigstruct is not None and self.state is not None
        sig = self.le_sigstruct
        image = launch_enclave_image(root_digest_of(self.state.root_envelope))
        if image.mrenclave() != sig.enclavehash:
            raise VerificationFailed(
                "the stored launch-enclave SIGSTRUCT is for another owner root; sign the "
                "launch enclave again (`sgxlaunch platform le-sign`)",
                expected=image.mrenclave().hex(),
                found=sig.enclavehash.hex(),
            )
        self.cpu.register_program(sig.enclavehash, OwnerLaunchEnclave)
        flags = sig.attributes.flags
        if self.mode == "owner":
            flags |= int(AttributeFlag.EINITTOKEN_KEY)
            token: bytes | None = bytes(EinitToken.SIZE)
        else:
            flags &= ~int(AttributeFlag.EINITTOKEN_KEY)
            token = None
        attributes = Attributes(flags=flags, xfrm=sig.attributes.xfrm)
        self.le = load(self.driver.new_process(), image, sig, token=token, attributes=attributes)
        request: dict[str, Any] = {
            "root": _b64(self.state.root_envelope),
            "policy": None
            if self.state.policy_envelope is None
            else _b64(self.state.policy_envelope),
            "sealed": None,
            "mode_version": 0 if self.mode_document is None else self.mode_document.version,
        }
        sealed = self.store.get(le_sealed_key(sig.mrsigner))
        if sealed is not None:
            request["sealed"] = _b64(sealed)
        reply = self._le_call(Call.LOAD, request)
        if reply.get("sealed") is not None:  # the high-water mark rose to the stored policy
            self.store.commit({le_sealed_key(sig.mrsigner): base64.b64decode(reply["sealed"])})

    def _le_call(self, call: Call, request: Mapping[str, Any]) -> dict[str, Any]:
        if self.le is None:
            raise UsageError(
                "the owner's launch enclave is not set up here (`sgxlaunch platform le-sign`)"
            )
        reply = json.loads(self.le.ecall(int(call), json.dumps(request).encode()))
        if not reply.get("ok"):
            message = f"launch enclave: {reply.get('message')}"
            detail = [str(d) for d in reply.get("detail", [])]
            error = reply.get("error", "")
            if error == "LogTampered":
                raise LogTampered(message, index=reply.get("index"), detail=detail)
            cls = getattr(_errors, error, None) if error in _errors.__all__ else None
            if not (isinstance(cls, type) and issubclass(cls, SgxlaunchError)):
                cls = VerificationFailed
            raise cls(message, detail=detail)
        return dict(reply)

    def _now(self) -> str:
        return _iso(self.clock())

    # -- owner operations ----------------------------------------------------------------------

    def set_launch_enclave(self, sig: Sigstruct) -> None:
        """Install the owner's SIGSTRUCT for its launch enclave (for the installed root).

        Raises:
            UsageError: no owner root installed; or the mode document names another signer.
            VerificationFailed: the SIGSTRUCT does not verify or is for another image.
        """
        if self.state is None:
            raise UsageError("install an owner root first (`sgxlaunch owner install`)")
        verify(sig)
        if sig.attributemask.flags & int(AttributeFlag.EINITTOKEN_KEY):
            raise UsageError(
                "the launch enclave's SIGSTRUCT must leave EINITTOKEN_KEY (0x20) out of "
                "ATTRIBUTEMASK, so it can run with it (owner mode) and without it (permissive)",
                detail=[f"ATTRIBUTEMASK is {sig.attributemask}"],
            )
        image = launch_enclave_image(root_digest_of(self.state.root_envelope))
        if sig.enclavehash != image.mrenclave():
            raise VerificationFailed(
                "the SIGSTRUCT is not for this owner root's launch enclave",
                expected=image.mrenclave().hex(),
                found=sig.enclavehash.hex(),
            )
        changes = {le_sigstruct_key(sig.mrsigner): sig.to_bytes()}
        if self.mode == "permissive":
            changes[LE_ACTIVE_KEY] = sig.mrsigner.hex().encode()
        self.store.commit(changes)

    def install_policy(self, data: bytes) -> dict[str, Any]:
        """Verify a signed launch policy in the launch enclave, raise the sealed high-water mark,
        and store both in one commit.

        Raises:
            UsageError: no owner root / launch enclave.
            MalformedInput, VerificationFailed: the policy is refused; nothing is stored.
        """
        if self.state is None:
            raise UsageError("install an owner root first (`sgxlaunch owner install`)")
        reply = self._le_call(Call.INSTALL_POLICY, {"policy": _b64(data), "now": self._now()})
        # The host-side state check is the same verification; it also yields the new state.
        new_state, update = self.state.install_policy(data, self.clock())
        changes = dict(update.changes)
        changes[POLICY_KEY] = bytes(data)
        assert self.le_sigstruct is not None
        changes[le_sealed_key(self.le_sigstruct.mrsigner)] = base64.b64decode(reply["sealed"])
        self.store.commit(changes)
        self.state = new_state
        return {"version": reply["version"], "digest": reply["digest"]}

    def set_mode(self, data: bytes) -> dict[str, Any]:
        """Switch the launch-control mode with an owner-signed platform-mode document.

        Raises:
            UsageError: no owner root; the document names a signer whose launch enclave is not
                set up.
            MalformedInput, VerificationFailed: the document is refused; nothing changes.
        """
        if self.state is None:
            raise UsageError("install an owner root first (`sgxlaunch owner install`)")
        if not hasattr(self.state, "install_mode"):  # pragma: no cover - policy layer too old
            raise UsageError("this build has no platform-mode documents")
        new_state, update = self.state.install_mode(
            data, self.clock(), platform_id=self.platform_id
        )
        doc = new_state.mode
        if doc is None:  # pragma: no cover - install_mode always yields a document
            raise UsageError("the platform-mode document was not installed")
        changes = dict(update.changes)
        signer: bytes | None
        if doc.mode == "owner":
            signer = _named_signer(doc)
            if self._stored_le(signer) is None:
                raise UsageError(
                    "the mode document names a launch-enclave signer whose launch enclave is "
                    "not set up here (`sgxlaunch platform le-sign` with that key first)",
                    detail=[f"named signer: {signer.hex()}"],
                )
        else:
            signer = self.le_signer
            if signer is not None:
                changes[LE_ACTIVE_KEY] = signer.hex().encode()
        if self.le is not None and self.le_sigstruct is not None and signer == self.le_signer:
            reply = self._le_call(Call.NOTE_MODE, {"version": doc.version, "now": self._now()})
            changes[le_sealed_key(self.le_sigstruct.mrsigner)] = base64.b64decode(reply["sealed"])
        self.store.commit(changes)
        self.state = new_state
        return {"mode": doc.mode, "version": doc.version}

    # -- launching ---------------------------------------------------------------------------

    def new_process(self) -> Process:
        return self.driver.new_process()

    def run(self, image: SgxsImage, sig: Sigstruct, *, token: bytes | None = None) -> RunResult:
        """Load and initialize an enclave; in owner mode through the launch enclave.

        Raises:
            PolicyDenied: the owner's policy refuses it (the attempt is logged).
            LoadFailed: the driver or EINIT refused it (errno, status and why).
        """
        if self.blocked is not None:
            raise UsageError(f"nothing can be launched: {self.blocked}")
        mode = self.mode
        if mode == "permissive" and token is not None:
            raise UsageError(
                "a launch token is only used in owner mode; this platform is permissive"
            )
        if mode == "permissive":
            self._context = {"decision": "permissive"}
            try:
                enclave = load(self.new_process(), image, sig)
            finally:
                self._context = None
            return RunResult(enclave, mode, "permissive")
        secs = secs_for(
            sig,
            size=image.size,
            ssaframesize=image.ssaframesize,
            xfrm_allowed=self.cpu.config.xfrm_allowed,
        )
        decision: dict[str, Any]
        if token is not None:
            decision = {"decision": "token supplied", "token_keyid": _keyid(token)}
        else:
            reply = self._le_call(
                Call.MINT,
                {
                    "sigstruct": _b64(sig.to_bytes()),
                    "flags": secs.attributes.flags,
                    "xfrm": secs.attributes.xfrm,
                    "now": self._now(),
                },
            )
            decision = {
                "decision": "allowed" if reply["allowed"] else "denied",
                "rule": reply.get("rule"),
                "reasons": reply.get("reasons", []),
                "policy_version": reply.get("policy_version"),
                "policy_digest": reply.get("policy_digest"),
                "token_keyid": reply.get("keyid"),
            }
            token = base64.b64decode(reply["token"]) if reply.get("token") else None
        self._context = decision
        try:
            if token is None:
                # Denied: the attempt still reaches the driver (and the log) without a token.
                with contextlib.suppress(LoadFailed):
                    load(self.new_process(), image, sig, token=bytes(EinitToken.SIZE))
                reasons = decision.get("reasons") or []
                raise PolicyDenied(
                    "launch denied by the owner's policy"
                    + (f" (rule {decision['rule']})" if decision.get("rule") else ""),
                    rule=decision.get("rule"),
                    detail=[
                        f"{r.get('field')}: expected {r.get('expected')}, found {r.get('found')}"
                        + (f" [rule {r['rule']}]" if r.get("rule") else "")
                        for r in reasons
                    ],
                )
            enclave = load(self.new_process(), image, sig, token=token)
        finally:
            self._context = None
        return RunResult(
            enclave,
            mode,
            decision["decision"],
            decision.get("rule"),
            decision.get("reasons") or [],
            decision.get("token_keyid"),
            decision.get("policy_version"),
        )

    # -- the launch log ----------------------------------------------------------------------

    def _observe(self, attempt: InitAttempt) -> None:
        """Driver observer: record one INIT attempt in the launch log."""
        if self.le is None:
            return
        facts = self._facts(attempt)
        try:
            reply = self._le_call(Call.LOG_APPEND, {"facts": facts, "now": self._now()})
        except SgxlaunchError as exc:  # the INIT's own outcome must not be masked
            self._log_errors.append(exc.message)
            return
        record = base64.b64decode(reply["record"])
        seq = int(json.loads(record[32:])["seq"])
        signer = self.le_signer
        assert signer is not None
        self.store.commit(
            {
                f"{log_prefix(signer)}{seq:016d}": record,
                le_sealed_key(signer): base64.b64decode(reply["sealed"]),
            }
        )

    def _facts(self, attempt: InitAttempt) -> dict[str, Any]:
        sig = None
        if attempt.sigstruct is not None and len(attempt.sigstruct) == Sigstruct.SIZE:
            sig = Sigstruct.from_bytes_raw(attempt.sigstruct)
        context = self._context or {"decision": "not requested through sgxlaunch run"}
        outcome = "initialized" if attempt.errno == 0 else "refused"
        keyid = context.get("token_keyid")
        if keyid is None and attempt.token is not None:
            keyid = _keyid(attempt.token)
        return {
            "time": self._now(),
            "ioctl": attempt.ioctl,
            "pid": attempt.pid,
            "mode": attempt.mode,
            "mrenclave": None if sig is None else sig.enclavehash.hex(),
            "mrsigner": None if sig is None else sig.mrsigner.hex(),
            "isvprodid": None if sig is None else sig.isvprodid,
            "isvsvn": None if sig is None else sig.isvsvn,
            "attributes": {"flags": attempt.attributes[0], "xfrm": attempt.attributes[1]},
            "decision": context.get("decision"),
            "rule": context.get("rule"),
            "reasons": context.get("reasons") or [],
            "policy_version": context.get("policy_version"),
            "policy_digest": context.get("policy_digest"),
            "token_keyid": keyid,
            "outcome": outcome,
            "errno": _errno.errorcode.get(attempt.errno, str(attempt.errno))
            if attempt.errno
            else None,
            "sgx_status": None if attempt.status is None else attempt.status.name,
            "reason": attempt.reason or None,
        }

    def log_blobs(self, signer: bytes | None = None) -> list[bytes]:
        """The stored records of the log segment of ``signer`` (default: the current launch
        enclave's), in sequence order."""
        signer = signer if signer is not None else self.le_signer
        if signer is None:
            return []
        out = []
        for key in self.store.keys(log_prefix(signer)):
            blob = self.store.get(key)
            if blob is not None:
                out.append(blob)
        return out

    def log_records(self) -> list[dict[str, Any]]:
        """The stored records, decoded (not verified: see :meth:`verify_log`)."""
        out = []
        for index, blob in enumerate(self.log_blobs()):
            try:
                value = json.loads(blob[32:])
            except (ValueError, UnicodeDecodeError):
                value = {"seq": index, "damaged": True}
            out.append(value)
        return out

    def verify_log(self) -> int:
        """Verify the whole launch log inside the launch enclave; returns the record count.

        Raises:
            LogTampered: naming the first bad record.
            UsageError: no launch enclave here.
        """
        reply = self._le_call(Call.LOG_VERIFY, {"records": [_b64(b) for b in self.log_blobs()]})
        return int(reply["count"])

    @property
    def log_errors(self) -> list[str]:
        """Records that could not be written (should stay empty)."""
        return list(self._log_errors)

    # -- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A JSON-ready summary of the platform."""
        state = self.state
        doc = self.mode_document
        return {
            "platform_id": self.platform_id.hex(),
            "mode": self.mode,
            "mode_document": None if doc is None else {"version": doc.version, "mode": doc.mode},
            "launch_key_msrs": self.cpu.lepubkeyhash.hex(),
            "launch_enclave": None
            if self.le_sigstruct is None
            else {
                "mrenclave": self.le_sigstruct.enclavehash.hex(),
                "mrsigner": self.le_sigstruct.mrsigner.hex(),
                "running": self.le is not None,
            },
            "owner_root": None if state is None else state.root.describe(),
            "policy": None if state is None else state.describe().get("policy"),
            "log_records": len(self.log_blobs()),
            "log_errors": self.log_errors,
            "epc_size": self.config.epc_size,
            "firmware": self.config.firmware,
        }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _keyid(token: bytes) -> str | None:
    if len(token) != EinitToken.SIZE:
        return None
    parsed = EinitToken.from_bytes_raw(token)
    return parsed.keyid.hex() if parsed.valid & 1 else None


def _named_signer(doc: Any) -> bytes:
    """The launch-enclave MRSIGNER an owner-mode document names."""
    signer = doc.le_mrsigner
    if not isinstance(signer, bytes) or len(signer) != 32:
        raise VerificationFailed("the owner-mode document names no launch-enclave signer")
    return signer


__all__ = [
    "CONFIG_KEY",
    "LE_ACTIVE_KEY",
    "LE_SEALED_PREFIX",
    "LE_SIGSTRUCT_PREFIX",
    "LOG_PREFIX",
    "SEED_KEY",
    "Platform",
    "PlatformConfig",
    "RunResult",
    "platform_id_of",
]
