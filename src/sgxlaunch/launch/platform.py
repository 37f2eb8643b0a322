"""The Platform: processor + driver + owner launch enclave + policy state + launch log.

Two places hold a platform. The **machine** (an injected :class:`~sgxlaunch.cpu.machine.Machine`,
a file outside ``--home`` at the edge) holds what silicon, fuses and a TPM-like store hold: the
platform seed, OWNEREPOCH, the firmware's configuration, the owner binding and the monotonic
counter. The **home** (an injected :class:`~sgxlaunch.policy.Store`) holds what the OS keeps:
the owner's signed documents, the launch enclave's SIGSTRUCT and sealed state, the log; it is
trusted only after verification inside the launch enclave, against the machine.

Opening a Platform rebuilds "the same CPU" from the machine, checks the home's owner root
against the machine's owner binding (finishing a rotation interrupted after the home was
written), configures the driver from the owner's signed mode document, and starts the launch
enclave that owns the monotonic counter (finishing an interrupted handover to a new signer);
the enclave refuses a committed state that is missing, older, or does not chain (see
:mod:`sgxlaunch.launch.enclave`). Every INIT attempt the driver sees reaches the launch log.

Store keys: per launch-enclave signer ``platform/le-sigstruct/<mrsigner>`` and
``platform/le-sealed/<mrsigner>``; ``platform/le-handover`` (the plaintext state a handover
passed to a new signer); ``platform/le-active`` (the signer used before the counter has an
owner); the launch log as ``log/<mrsigner>/<seq>``; the policy layer's ``owner/*`` documents
and ``owner/root-previous`` (the root a rotation replaced, until the machine's binding moved).
A home made before the machine existed holds ``platform/seed``: it is refused with the
migration steps (:func:`migrate_legacy_home`).
"""

from __future__ import annotations

import contextlib
import errno as _errno
import functools
import hmac
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from sgxlaunch.arch import Attributes, EinitToken, Report, Sigstruct, TargetInfo
from sgxlaunch.arch.constants import AttributeFlag
from sgxlaunch.cpu import CpuConfig, Processor, secs_for
from sgxlaunch.cpu.config import DEFAULT_CPUSVN
from sgxlaunch.cpu.machine import Machine, MachineState, MemoryMachine, platform_id_of
from sgxlaunch.driver import (
    DriverError,
    Enclave,
    InitAttempt,
    LoadedEnclave,
    LoadFailed,
    Process,
    SgxDriver,
    load,
)
from sgxlaunch.driver.dynamic import DriverEvent
from sgxlaunch.driver.grants import GrantQuery
from sgxlaunch.driver.owner import bind_owner, keyid_limits
from sgxlaunch.errors import (
    MalformedInput,
    PolicyDenied,
    SgxlaunchError,
    UsageError,
    VerificationFailed,
)
from sgxlaunch.formats.sgxs import SgxsImage
from sgxlaunch.launch.ecalls import (
    AddCodeKeyReply,
    AddCodeKeyRequest,
    AdvanceReply,
    AdvanceRequest,
    Call,
    CallError,
    ClaimReply,
    ClaimRequest,
    ErrorCode,
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
    decode_mint_reply,
    decode_reply,
    encode_mint_request,
    error_class,
    to_seconds,
)
from sgxlaunch.launch.enclave import (
    OwnerLaunchEnclave,
    check_recovery_document,
    launch_enclave_image,
    root_digest_of,
)
from sgxlaunch.launch.log import (
    ATTEMPT,
    DYNAMIC,
    MAX_LIST_ITEMS,
    MAX_RECORD_BYTES,
    OUTCOME,
    TEARDOWN,
    LogHead,
    LogTampered,
    check_exactly_once,
    decode_record,
    export_log,
)
from sgxlaunch.policy import MODE_KEY, POLICY_KEY, ROOT_KEY, Store, TrustedState
from sgxlaunch.policy.state import ROOT_PREVIOUS_KEY
from sgxlaunch.sigstruct import verify

if TYPE_CHECKING:
    from sgxlaunch.attest.quoting import Quoter

SEED_KEY = "platform/seed"
"""Where homes made before the machine existed kept the seed (refused; see migration)."""
CONFIG_KEY = "platform/config"
"""Where those homes kept the platform configuration (now in the machine)."""
LE_HANDOVER_KEY = "platform/le-handover"
ARCHIVE_PREFIX = "archive/"
LE_SIGSTRUCT_PREFIX = "platform/le-sigstruct/"
LE_ACTIVE_KEY = "platform/le-active"
LE_SEALED_PREFIX = "platform/le-sealed/"
LOG_PREFIX = "log/"
LE_KX_KEY = "pcl/le-key"
"""The launch enclave's key-agreement key, sealed with its MRENCLAVE policy (issue 20)."""
CODE_KEY_PREFIX = "pcl/code-key/"
"""Installed code keys, ``pcl/code-key/<key id hex>``, each sealed with the MRENCLAVE policy."""


def le_sigstruct_key(mrsigner: bytes) -> str:
    """Store key of the owner's launch-enclave SIGSTRUCT signed by ``mrsigner``."""
    return LE_SIGSTRUCT_PREFIX + mrsigner.hex()


def le_sealed_key(mrsigner: bytes) -> str:
    """Store key of that launch enclave's sealed state (its seal key depends on MRSIGNER)."""
    return LE_SEALED_PREFIX + mrsigner.hex()


def code_key_key(key_id: bytes) -> str:
    """Store key of the installed code key ``key_id`` (sealed by the launch enclave)."""
    return CODE_KEY_PREFIX + bytes(key_id).hex()


def log_prefix(mrsigner: bytes) -> str:
    """Store-key prefix of the launch-log segment kept by the launch enclave of ``mrsigner``
    (only that enclave can derive its MAC key)."""
    return f"{LOG_PREFIX}{mrsigner.hex()}/"


Clock = Callable[[], datetime]
_R = TypeVar("_R", bound=Message)


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
        """Parse a stored configuration (a home made before the machine existed).

        Raises:
            MalformedInput: naming ``platform/config`` and the field: not a JSON object of
                ``epc_size`` (a multiple of 4096, at most 4 GiB), ``firmware``
                (``lc-enabled`` / ``locked-hash``) and ``firmware_lepubkeyhash`` (64 hex
                digits or null).
        """
        try:
            if len(data) > 4096:
                raise ValueError(f"{len(data)} bytes")
            value = json.loads(data)
            if not isinstance(value, dict):
                raise ValueError("not a JSON object")
            size, firmware = value.get("epc_size"), value.get("firmware")
            lehash = value.get("firmware_lepubkeyhash")
            if type(size) is not int or not 0 < size <= 1 << 32 or size % 4096:
                raise ValueError(f"epc_size {size!r} is not a multiple of 4096 up to 4 GiB")
            if firmware not in ("lc-enabled", "locked-hash"):
                raise ValueError(f"firmware {firmware!r} is not lc-enabled or locked-hash")
            if lehash is not None and (
                not isinstance(lehash, str)
                or len(lehash) != 64
                or any(c not in "0123456789abcdef" for c in lehash)
            ):
                raise ValueError("firmware_lepubkeyhash is not 64 lower-case hex digits")
        except (ValueError, RecursionError) as exc:
            raise MalformedInput(
                f"platform config in the store is damaged: {exc}", field=CONFIG_KEY
            ) from None
        return cls(epc_size=size, firmware=firmware, firmware_lepubkeyhash=lehash)

    def machine_state(self, seed: bytes) -> MachineState:
        """A new machine with this configuration and ``seed`` (no owner, counter at 0).

        Raises:
            UsageError: a short seed, or a bad configuration.
        """
        return MachineState(
            seed=seed,
            epc_size=self.epc_size,
            firmware=self.firmware,
            firmware_lepubkeyhash=None
            if self.firmware_lepubkeyhash is None
            else bytes.fromhex(self.firmware_lepubkeyhash),
        )

    @classmethod
    def of_machine(cls, state: MachineState) -> PlatformConfig:
        return cls(
            epc_size=state.epc_size,
            firmware=state.firmware,
            firmware_lepubkeyhash=None
            if state.firmware_lepubkeyhash is None
            else state.firmware_lepubkeyhash.hex(),
        )

    def cpu_config(
        self, owner_epoch: bytes = bytes(16), cpusvn: bytes = DEFAULT_CPUSVN
    ) -> CpuConfig:
        kwargs: dict[str, Any] = {
            "epc_size": self.epc_size,
            "kss": True,
            "sgx2": True,  # the emulated part is SGX2-capable (EDMM), as FLC parts are
            "owner_epoch": owner_epoch,
            "cpusvn": cpusvn,
        }
        if self.firmware == "locked-hash":
            kwargs["firmware"] = "locked-hash"
            if self.firmware_lepubkeyhash is None:
                raise UsageError("a locked-hash platform needs the firmware's hash")
            kwargs["firmware_lepubkeyhash"] = bytes.fromhex(self.firmware_lepubkeyhash)
        return CpuConfig(**kwargs)


@dataclass(frozen=True)
class LogAttestation:
    """The launch enclave's attestation of its committed log head (:meth:`Platform.attest_log`).

    Attributes:
        report: the 432-byte REPORT for the target enclave; REPORTDATA is
            :func:`~sgxlaunch.launch.log.attest_reportdata` of the nonce, the machine's platform
            id and ``head``.
        head: the committed record count and chain head the enclave attested.
        nonce: the nonce.
        export: the stored records of the segment in the export format, with the attested
            head in the header (:func:`~sgxlaunch.launch.log.export_log`).
    """

    report: bytes
    head: LogHead
    nonce: bytes
    export: bytes


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


_SP = ParamSpec("_SP")
_SR = TypeVar("_SR")


def _serialized(
    method: Callable[Concatenate[Platform, _SP], _SR],
) -> Callable[Concatenate[Platform, _SP], _SR]:
    """Run a Platform method holding the home's process lock, the platform brought up to date
    first (:meth:`Platform._exclusive`)."""

    @functools.wraps(method)
    def wrapper(self: Platform, /, *args: _SP.args, **kwargs: _SP.kwargs) -> _SR:
        with self._exclusive():
            return method(self, *args, **kwargs)

    return wrapper


_MINT = int(Call.MINT)


def _no_launch_enclave() -> UsageError:
    return UsageError(
        "the owner's launch enclave is not set up here (`sgxlaunch platform le-sign`)"
    )


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Platform:
    """One emulated SGX platform and its owner's launch control (see the module docstring).

    Open with :meth:`open` (or create with :meth:`create`). Methods that change state verify
    first and commit to the store in one step only afterwards.
    """

    def __init__(
        self,
        store: Store,
        machine: Machine,
        clock: Clock,
        *,
        random: Callable[[int], bytes] | None,
        maintenance: bool = False,
    ):
        self.store = store
        self.machine = machine
        self.clock = clock
        self.random = random
        self.maintenance = maintenance
        self.blocked: str | None = None
        if store.get(SEED_KEY) is not None:
            raise UsageError(
                "this home was made before the machine existed: it holds the platform seed, "
                "which must be assumed read. Migrate it to a new machine "
                "(`sgxlaunch machine migrate --home HOME --machine MACHINE`), which prints "
                "what the owner must run next"
            )
        self._counter_seen: int | None = None
        self._sealed_seen: bytes | None = None
        self._log_count = 0
        self._attempt_seq: int | None = None
        self._held: contextlib.ExitStack | None = None
        self._unforwarded: list[dict[str, Any]] = []
        with store.locked():
            self._open(machine, random, maintenance)

    def _open(
        self, machine: Machine, random: Callable[[int], bytes] | None, maintenance: bool
    ) -> None:
        store = self.store
        machine_state = machine.load()
        self.config = PlatformConfig.of_machine(machine_state)
        self.platform_id = machine_state.platform_id
        self.cpu = Processor(
            self.config.cpu_config(machine_state.owner_epoch_bytes, machine_state.cpusvn),
            machine_state.seed,
            random=random,
            machine=machine,
        )
        self.driver = SgxDriver(self.cpu)
        self.driver.events.clock = self._seconds
        self.le: LoadedEnclave | None = None
        self.le_sigstruct: Sigstruct | None = None
        self._context: dict[str, Any] | None = None
        self._le_mrenclave_cache: bytes | None = None
        self._log_errors: list[str] = []
        self._quoter: Quoter | None = None
        self.state: TrustedState | None = None
        try:
            self._check_owner_binding(machine_state)
        except SgxlaunchError as exc:
            if not maintenance:
                raise
            self.blocked = exc.message
            self.driver.observers.append(self._observe)
            self.driver.gates.append(self._gate)
            self.driver.releases.append(self._teardown)
            return
        self.state = TrustedState.load(store)
        self._configure()
        self._settle_tail()

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
        machine: Machine | None = None,
    ) -> Platform:
        """A platform on a new in-memory machine (``seed`` and ``config``) over ``store``
        (``machine`` is ignored unless given: then it must be new, with this seed). Reopen it
        with :meth:`open` and ``platform.machine``.

        Raises:
            UsageError: the seed is shorter than 16 bytes; the store holds a legacy platform.
        """
        config = config or PlatformConfig()
        state = config.machine_state(seed)
        config.cpu_config()  # validate before anything exists
        if machine is None:
            machine = MemoryMachine(state)
        return cls(store, machine, clock, random=random)

    @classmethod
    def open(
        cls,
        store: Store,
        machine: Machine,
        *,
        clock: Clock,
        random: Callable[[int], bytes] | None = None,
        maintenance: bool = False,
    ) -> Platform:
        """Open the platform of ``machine`` over the home ``store``.

        Args:
            maintenance: open even when the home does not verify (the stored mode document is
                not signed by the current owner root, the launch enclave refuses its state);
                nothing can be launched then, but the owner can repair it (:meth:`set_mode`,
                :meth:`set_launch_enclave`, :meth:`recover`).

        Raises:
            UsageError: a home made before the machine existed (names the migration).
            VerificationFailed / MalformedInput: the home does not verify against the machine
                (the platform refuses to start rather than fall back to permissive).
        """
        return cls(store, machine, clock, random=random, maintenance=maintenance)

    # -- the owner binding ---------------------------------------------------------------------

    def _check_owner_binding(self, machine_state: MachineState) -> None:
        """The home's owner root is the one the machine is bound to; a rotation whose home
        commit happened but whose binding did not move is finished here.

        Raises:
            VerificationFailed: no root for a bound machine, a root on an unbound machine, or
                another root (a graft).
        """
        binding = machine_state.owner_binding
        root = self.store.get(ROOT_KEY)
        if root is None:
            if binding is not None:
                raise VerificationFailed(
                    "refusing to start: this machine has an owner but the home holds no owner "
                    "root; restore the home, or install the same root again "
                    "(`sgxlaunch platform take-ownership ROOT`)",
                    expected=f"owner root digest {binding.hex()}",
                    found="none",
                )
            return
        digest = root_digest_of(root)
        if binding is None:
            raise VerificationFailed(
                "refusing to start: the home holds an owner root but this machine has no owner; "
                "take ownership (`sgxlaunch platform take-ownership ROOT`)",
                expected="no owner root",
                found=f"owner root digest {digest.hex()}",
            )
        if hmac.compare_digest(digest, binding):
            return
        previous = self.store.get(ROOT_PREVIOUS_KEY)
        if previous is not None and hmac.compare_digest(root_digest_of(previous), binding):
            old = TrustedState.load(_single(ROOT_KEY, previous))
            assert old is not None
            old.rotate_root(root, self.clock())  # raises unless a verified rotation
            bind_owner(self.machine, binding, digest)
            return
        raise VerificationFailed(
            "refusing to start: the owner root in the home is not the one this machine is "
            "bound to (only a rotation signed by the bound root's keys can replace it)",
            expected=f"owner root digest {binding.hex()}",
            found=f"owner root digest {digest.hex()}",
        )

    @_serialized
    def rotate_root(self, data: bytes, launch_enclaves: Sequence[Sigstruct] = ()) -> dict[str, Any]:
        """Rotate the owner root: a threshold of the current and of the new keys signed it.

        The home gets the new root (the old one kept as ``owner/root-previous``) and the
        launch-enclave SIGSTRUCTs re-signed for the new root's image (``launch_enclaves``) in
        one commit; then the machine's binding moves. A crash between the two is finished at
        the next open, so the platform restarts with the old root or the new one. Without
        re-signed launch enclaves the platform stays in maintenance until they are installed
        (:meth:`set_launch_enclave`).

        Raises:
            UsageError: no owner. MalformedInput, VerificationFailed: the root or a SIGSTRUCT
                is refused; nothing changes.
        """
        if self.state is None:
            raise UsageError("no owner root here: take ownership first")
        new_state, update = self.state.rotate_root(data, self.clock())
        if update.changes:
            changes: dict[str, bytes | None] = dict(update.changes)
            for sig in launch_enclaves:
                self._check_launch_enclave(sig, data)
                changes[le_sigstruct_key(sig.mrsigner)] = sig.to_bytes()
            old = root_digest_of(self.state.root_envelope)
            self.store.commit(changes)
            bind_owner(self.machine, old, root_digest_of(data))
            self.state = new_state
        return {"summary": update.summary, "root_digest": root_digest_of(data).hex()}

    # -- mode and launch enclave -------------------------------------------------------------

    @property
    def mode_document(self) -> Any:
        return getattr(self.state, "mode", None) if self.state is not None else None

    @property
    def mode(self) -> str:
        return self.driver.mode

    def _refuse(self, message: str, **kw: Any) -> None:
        if not self.maintenance:
            raise VerificationFailed(f"refusing to start: {message}", **kw)
        self.blocked = message

    def _configure(self) -> None:
        self.driver.observers.append(self._observe)
        self.driver.gates.append(self._gate)
        self.driver.releases.append(self._teardown)
        self.driver.owner_service = self._grant_service
        state = self.state
        doc = self.mode_document
        mode_signer = _named_signer(doc) if doc is not None and doc.mode == "owner" else None
        if state is not None and state.mode is not None and not state.mode_in_force:
            self._refuse(
                "the stored platform-mode document is not signed by the current owner root; "
                "install one signed by the current keys (`sgxlaunch platform mode FILE`)"
            )
            mode_signer = None  # maintenance: the launch enclave runs to commit a new one
        slot = self.machine.load().counter
        if slot.owned:
            active: bytes | None = slot.owner_mrsigner
        elif mode_signer is not None:
            active = mode_signer
        else:
            active = _stored_signer(self.store.get(LE_ACTIVE_KEY))
        if slot.value > 0 and state is None:
            self._refuse("the home holds no owner root while the monotonic counter is in use")
            return
        sig = None if active is None else self._stored_le(active)
        if active is not None and sig is None:
            if slot.value > 0:
                self._refuse(
                    "the launch enclave that owns the monotonic counter is not set up in the "
                    "home; sign it again with the same key (`sgxlaunch platform le-sign`)",
                    expected=f"a SIGSTRUCT from {active.hex()}",
                    found="none",
                )
                return
            if mode_signer is not None:
                raise VerificationFailed(
                    "the owner's mode document names a launch-enclave signer whose launch "
                    "enclave is not set up here",
                    expected=mode_signer.hex(),
                    found="no SIGSTRUCT from that signer",
                )
        if sig is None or state is None:
            if mode_signer is not None:  # pragma: no cover - handled above
                self.driver.configure_launch_control(
                    "owner", mode_signer, le_mrenclave=self._le_mrenclave()
                )
            return
        try:
            if mode_signer is not None and active is not None and mode_signer != active:
                # A handover committed to the home but not yet to the counter: the counter's
                # owner finishes it, then the named signer takes over.
                self.driver.configure_launch_control(
                    "owner", active, le_mrenclave=self._le_mrenclave()
                )
                reply = self._start_launch_enclave(sig)
                if reply.handed_over != mode_signer:
                    raise VerificationFailed(
                        "the mode document names a launch-enclave signer the monotonic "
                        "counter was not handed to",
                        expected=mode_signer.hex(),
                        found=active.hex(),
                    )
                self.le = None
                sig = self._stored_le(mode_signer)
                assert sig is not None
            if mode_signer is not None:
                self.driver.configure_launch_control(
                    "owner", mode_signer, le_mrenclave=self._le_mrenclave()
                )
            self._start_launch_enclave(sig)
        except SgxlaunchError as exc:
            if not self.maintenance:
                raise
            self.le = None
            self.blocked = self.blocked or f"the launch enclave does not start: {exc.message}"

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

    def _is_launch_enclave(self, sig: Sigstruct) -> bool:
        signer = self.driver.le_signer
        return (
            self.state is not None
            and signer is not None
            and hmac.compare_digest(sig.mrsigner, signer)
            and hmac.compare_digest(sig.enclavehash, self._le_mrenclave())
        )

    def _le_mrenclave(self) -> bytes:
        """MRENCLAVE of the owner's launch enclave (the same for every signer of this root)."""
        assert self.state is not None
        if self._le_mrenclave_cache is None:
            root = root_digest_of(self.state.root_envelope)
            self._le_mrenclave_cache = launch_enclave_image(root).mrenclave()
        return self._le_mrenclave_cache

    def _start_launch_enclave(self, sig: Sigstruct, *, recovery: bytes | None = None) -> LoadReply:
        assert self.state is not None
        self.le_sigstruct = sig
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
        reply = self._le_call(self._load_request(sig, recovery), LoadReply)
        self._open_segment(sig, reply)
        self._note_committed(reply)
        return reply

    def _open_segment(self, sig: Sigstruct, reply: LoadReply) -> None:
        """After a LOAD that prepared a state (owner recovery, or the first start of a signer
        the counter was handed to): archive the signer's old log segment, store the prepared
        state and the new segment's epoch record in one commit, then advance the counter."""
        if reply.sealed is None:
            return
        changes: dict[str, bytes | None] = {le_sealed_key(sig.mrsigner): reply.sealed}
        for key in self.store.keys(log_prefix(sig.mrsigner)):
            blob = self.store.get(key)
            changes[f"{ARCHIVE_PREFIX}counter-{reply.counter}/{key}"] = blob
            changes[key] = None
        if reply.record is not None:
            changes[f"{log_prefix(sig.mrsigner)}{0:016d}"] = reply.record
        self.store.commit(changes)
        self._le_call(AdvanceRequest(), AdvanceReply)

    def _note_committed(self, reply: LoadReply) -> None:
        """Remember what the launch enclave committed (LOAD ``reply``), to notice later
        whether another process changed it."""
        assert self.le_sigstruct is not None
        self._counter_seen = self.machine.load().counter.value
        self._sealed_seen = self.store.get(le_sealed_key(self.le_sigstruct.mrsigner))
        # A LOAD that opened a segment (``record``) has advanced past the state it reported.
        self._log_count = int(reply.log_count) + (reply.record is not None)

    def _load_request(self, sig: Sigstruct, recovery: bytes | None = None) -> LoadRequest:
        """The LOAD call's request: the home's documents and the enclave's sealed state."""
        assert self.state is not None
        return LoadRequest(
            root=self.state.root_envelope,
            policy=self.state.policy_envelope,
            mode=self.state.mode_envelope,
            sealed=self.store.get(le_sealed_key(sig.mrsigner)),
            handover=self.store.get(LE_HANDOVER_KEY),
            recovery=None if recovery is None else bytes(recovery),
            now=to_seconds(self.clock()),
        )

    # -- one process at a time -------------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the home's process lock, with this platform brought up to date first: a
        change another process committed since (the counter moved) is reloaded into the
        launch enclave, and an attempt a dead process left without an outcome gets one."""
        with self.store.locked():
            self._refresh()
            yield

    def _refresh(self) -> None:
        if self.le is None or self.le_sigstruct is None or self.state is None:
            return
        slot = self.machine.load().counter
        sealed = self.store.get(le_sealed_key(self.le_sigstruct.mrsigner))
        if slot.value == self._counter_seen and sealed == self._sealed_seen:
            return
        # Another process committed (the counter moved), or stored a state and died before
        # advancing the counter (LOAD finishes that advance, so its record is kept).
        state = TrustedState.load(self.store)
        if (
            state is None
            or state.root_envelope != self.state.root_envelope
            or (state.mode_digest != self.state.mode_digest)
        ):
            raise UsageError(
                "the owner root or launch-control mode changed while this platform was open "
                "(another process committed it); open the platform again"
            )
        self.state = state
        reply = self._le_call(self._load_request(self.le_sigstruct), LoadReply)
        if reply.handed_over:
            self.le = None
            raise UsageError(
                "the monotonic counter was handed to another launch enclave while this "
                "platform was open; open the platform again"
            )
        self._open_segment(self.le_sigstruct, reply)
        self._note_committed(reply)
        self._settle_tail()

    def _settle_tail(self) -> None:
        """Under the lock: a last record that is an attempt belongs to a process that died
        before writing its outcome (a live one holds the lock until it has): append
        "outcome unknown" for it."""
        signer = self.le_signer
        if self.le is None or signer is None or self.blocked is not None:
            return
        count = self._log_count
        if not count:
            return
        blob = self.store.get(f"{log_prefix(signer)}{count - 1:016d}")
        if blob is None:
            return  # a deleted record: `log verify` reports it
        last = decode_record(blob, count - 1)
        if last.get("kind") != ATTEMPT or "malformed" in last:
            return
        self._append(
            {
                "kind": OUTCOME,
                "attempt": last["seq"],
                "time": self._now(),
                "outcome": "unknown",
                "reason": f"the process that made the attempt (pid {last.get('pid')}) ended "
                "before recording its outcome",
            }
        )

    @_serialized
    def recover(self, data: bytes) -> dict[str, Any]:
        """Owner recovery from a refused start: ``data`` is a recovery document (a threshold
        of the owner root's keys; :func:`~sgxlaunch.launch.enclave.recovery_payload`) bound to
        this platform and to the counter's current value. The launch enclave owning the counter
        commits the documents now in the home as its state at counter + 1; the old log segment
        is archived under ``archive/``.

        Raises:
            UsageError: no owner root / launch enclave for the counter's owner; the platform
                started normally (recovery is for a refused start).
            MalformedInput, VerificationFailed: the document is refused; nothing changes (the
                host makes the launch enclave's check first, before anything starts).
        """
        if self.state is None:
            raise UsageError("no owner root in the home: take ownership first")
        slot = self.machine.load().counter
        # The launch enclave checks the document at LOAD; the same check here first refuses a
        # document it would refuse before a launch enclave starts (a start is logged and moves
        # the counter), so a refused recovery changes nothing.
        check_recovery_document(bytes(data), self.state.root, self.platform_id, slot.value)
        if self.le is not None and self.blocked is None:
            raise UsageError(
                "this platform started normally: recovery is for a start the launch enclave "
                "refused (`sgxlaunch platform status` shows it); nothing was changed",
                detail=[
                    "starting another launch enclave instance here would log its launch and move "
                    f"the counter past {slot.value}, the value the document is bound to"
                ],
            )
        signer = slot.owner_mrsigner if slot.owned else self.le_signer
        sig = None if signer is None else self._stored_le(signer)
        if sig is None:
            raise UsageError(
                "the launch enclave that owns the monotonic counter is not set up in the home "
                "(`sgxlaunch platform le-sign` with the same key first)"
            )
        doc = self.mode_document
        if doc is not None and doc.mode == "owner":
            self.driver.configure_launch_control(
                "owner", sig.mrsigner, le_mrenclave=self._le_mrenclave()
            )
        reply = self._start_launch_enclave(sig, recovery=bytes(data))
        self.blocked = None
        return {"counter": self.machine.load().counter.value, "mode_version": reply.mode_version}

    def _le_call(self, request: Message, reply_type: type[_R]) -> _R:
        """One ECALL of the launch enclave: the typed request out, the typed reply back; an
        error reply raises the class its code names (``launch enclave: …``)."""
        return self._le_exchange(request.CALL, request.encode(), reply_type)

    def _le_exchange(self, call: Call, request: bytes, reply_type: type[_R]) -> _R:
        """:meth:`_le_call` with the request already encoded."""
        le = self.le
        if le is None:
            raise _no_launch_enclave()
        return self._le_reply(decode_reply(call, le.ecall(call.value, request)), reply_type)

    @staticmethod
    def _le_reply(reply: Message | CallError, reply_type: type[_R]) -> _R:
        """The typed reply to ``call``; an error reply raises the class its code names."""
        if isinstance(reply, CallError):
            message = f"launch enclave: {reply.message}"
            if reply.code == ErrorCode.LOG_TAMPERED:
                raise LogTampered(message, index=reply.index, detail=list(reply.detail))
            raise error_class(reply.code)(message, detail=list(reply.detail))
        assert isinstance(reply, reply_type)
        return reply

    def mint(self, sigstruct: bytes, attributes: Attributes | None = None) -> MintReply:
        """Ask the launch enclave for a token for ``sigstruct`` (all 1 808 bytes), to run with
        ``attributes`` (default: the SIGSTRUCT's own ATTRIBUTES). The reply carries the
        decision and, when allowed, the token. This is the host's ECALL interface: nothing
        here is trusted by the enclave.

        Raises:
            MalformedInput, VerificationFailed: the SIGSTRUCT does not verify (no token).
            UsageError: no launch enclave running.
        """
        if attributes is None:
            if len(sigstruct) != Sigstruct.SIZE:
                raise MalformedInput(f"a SIGSTRUCT is {Sigstruct.SIZE} bytes")
            attributes = Sigstruct.from_bytes_raw(sigstruct).attributes
        le = self.le
        if le is None:
            raise _no_launch_enclave()
        reply = decode_mint_reply(
            le.process.ecall(  # LoadedEnclave.ecall on its first TCS, one frame less
                le.tcs[0],
                _MINT,
                encode_mint_request(
                    bytes(sigstruct), attributes.flags, attributes.xfrm, to_seconds(self.clock())
                ),
            )
        )
        if isinstance(reply, MintReply):
            return reply
        return self._le_reply(reply, MintReply)

    def _now(self) -> str:
        return _iso(self.clock())

    def _seconds(self) -> float:
        return self.clock().timestamp()

    # -- owner operations ----------------------------------------------------------------------

    @_serialized
    def set_launch_enclave(self, sig: Sigstruct) -> None:
        """Install the owner's SIGSTRUCT for its launch enclave (for the installed root).

        Raises:
            UsageError: no owner root installed.
            VerificationFailed: the SIGSTRUCT does not verify or is for another image.
        """
        if self.state is None:
            raise UsageError("install an owner root first (`sgxlaunch owner install`)")
        self._check_launch_enclave(sig, self.state.root_envelope)
        changes = {le_sigstruct_key(sig.mrsigner): sig.to_bytes()}
        if self.mode == "permissive" and not self.machine.load().counter.owned:
            changes[LE_ACTIVE_KEY] = sig.mrsigner.hex().encode()
        self.store.commit(changes)

    @staticmethod
    def _check_launch_enclave(sig: Sigstruct, root_envelope: bytes) -> None:
        """The SIGSTRUCT verifies, leaves EINITTOKEN_KEY out of ATTRIBUTEMASK and is for the
        launch enclave built for ``root_envelope``.

        Raises:
            VerificationFailed: bad signature or another image. UsageError: the mask.
        """
        verify(sig)
        if sig.attributemask.flags & int(AttributeFlag.EINITTOKEN_KEY):
            raise UsageError(
                "the launch enclave's SIGSTRUCT must leave EINITTOKEN_KEY (0x20) out of "
                "ATTRIBUTEMASK, so it can run with it (owner mode) and without it (permissive)",
                detail=[f"ATTRIBUTEMASK is {sig.attributemask}"],
            )
        image = launch_enclave_image(root_digest_of(root_envelope))
        if sig.enclavehash != image.mrenclave():
            raise VerificationFailed(
                "the SIGSTRUCT is not for this owner root's launch enclave",
                expected=image.mrenclave().hex(),
                found=sig.enclavehash.hex(),
            )

    def _commit_prepared(
        self,
        changes: dict[str, bytes | None],
        reply: InstallPolicyReply
        | NoteModeReply
        | LogAppendReply
        | GrantReply
        | AddCodeKeyReply
        | ReleaseReply,
    ) -> None:
        """Store the launch enclave's prepared state with ``changes`` in one commit, then let
        it advance the monotonic counter (crash-safe: see the module docstring)."""
        assert self.le_sigstruct is not None
        changes[le_sealed_key(self.le_sigstruct.mrsigner)] = reply.sealed
        handover = getattr(reply, "handover", None)
        if handover:
            changes[LE_HANDOVER_KEY] = handover
        self.store.commit(changes)
        self._le_call(AdvanceRequest(), AdvanceReply)
        self._counter_seen = self.machine.load().counter.value
        self._sealed_seen = changes[le_sealed_key(self.le_sigstruct.mrsigner)]

    @_serialized
    def install_policy(self, data: bytes) -> dict[str, Any]:
        """Verify a signed launch policy in the launch enclave, store it with the enclave's new
        state in one commit, then advance the counter. The policy already in force (the same
        version and digest, which the machine's counter slot names) is not installed again:
        ``installed`` is false and nothing changes.

        Returns:
            ``installed``, ``summary`` (one line), ``version``, ``digest`` (hex).

        Raises:
            UsageError: no owner root / launch enclave.
            MalformedInput, VerificationFailed: the policy is refused; nothing is stored.
        """
        if self.state is None:
            raise UsageError("install an owner root first (`sgxlaunch owner install`)")
        if self.blocked is not None:
            raise UsageError(f"the platform is blocked: {self.blocked}")
        # The host-side state check is the same verification; it also yields the new state.
        new_state, update = self.state.install_policy(data, self.clock())
        digest = self.state.policy_digest
        if (
            not update.changes
            and digest is not None
            and hmac.compare_digest(self.machine.load().counter.policy_digest, digest)
        ):
            # The policy in force, by the launch enclave's own account (the machine's counter
            # slot, which only it writes): nothing to install, nothing committed.
            assert self.state.policy is not None
            return {
                "installed": False,
                "summary": f"launch policy version {self.state.policy.version} already "
                f"installed ({digest.hex()}): nothing changed",
                "version": self.state.policy.version,
                "digest": digest.hex(),
            }
        reply = self._le_call(
            InstallPolicyRequest(policy=bytes(data), now=to_seconds(self.clock())),
            InstallPolicyReply,
        )
        changes: dict[str, bytes | None] = dict(update.changes)
        changes[POLICY_KEY] = bytes(data)
        self._commit_prepared(changes, reply)
        self.state = new_state
        return {
            "installed": True,
            "summary": f"launch policy version {reply.version} installed ({reply.digest.hex()})",
            "version": reply.version,
            "digest": reply.digest.hex(),
        }

    @_serialized
    def set_mode(self, data: bytes) -> dict[str, Any]:
        """Switch the launch-control mode with an owner-signed platform-mode document.

        The launch enclave verifies it too and commits it; a document naming another
        launch-enclave signer hands the monotonic counter over to that signer (its launch
        enclave must be set up here). Reopen the platform for the new mode to take effect.

        Raises:
            UsageError: no owner root; the document names a signer whose launch enclave is not
                set up; the launch enclave that owns the counter is not running.
            MalformedInput, VerificationFailed: the document is refused; nothing changes.
        """
        if self.state is None:
            raise UsageError("install an owner root first (`sgxlaunch owner install`)")
        new_state, update = self.state.install_mode(
            data, self.clock(), platform_id=self.platform_id
        )
        doc = new_state.mode
        if doc is None:  # pragma: no cover - install_mode always yields a document
            raise UsageError("the platform-mode document was not installed")
        changes: dict[str, bytes | None] = dict(update.changes)
        if doc.mode == "owner":
            signer = _named_signer(doc)
            if self._stored_le(signer) is None:
                raise UsageError(
                    "the mode document names a launch-enclave signer whose launch enclave is "
                    "not set up here (`sgxlaunch platform le-sign` with that key first)",
                    detail=[f"named signer: {signer.hex()}"],
                )
        elif self.le_signer is not None and not self.machine.load().counter.owned:
            changes[LE_ACTIVE_KEY] = self.le_signer.hex().encode()
        if not update.changes:
            return _mode_result(doc)
        if self.le is None:
            if self.machine.load().counter.value > 0 or self.le_sigstruct is not None:
                raise UsageError(
                    "the launch enclave is not running, so it cannot commit the mode document"
                    + (f": {self.blocked}" if self.blocked else "")
                )
            self.store.commit(changes)
        else:
            reply = self._le_call(
                NoteModeRequest(mode=bytes(data), now=to_seconds(self.clock())), NoteModeReply
            )
            self._commit_prepared(changes, reply)
        self.state = new_state
        return _mode_result(doc)

    # -- launching ---------------------------------------------------------------------------

    def new_process(self) -> Process:
        return self.driver.new_process()

    @_serialized
    def run(
        self,
        image: SgxsImage,
        sig: Sigstruct,
        *,
        token: bytes | None = None,
        provision: bool = False,
    ) -> RunResult:
        """Load and initialize an enclave; in owner mode through the launch enclave.

        ``provision`` opens ``/dev/sgx_provision`` for it (ENCLAVE_PROVISION), as a
        provisioning enclave's loader does: PROVISIONKEY is granted by the kernel only so
        (and in owner mode the policy must allow it too).

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
                enclave = load(self.new_process(), image, sig, provision=provision)
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
        refused: SgxlaunchError | None = None
        if token is None and self._is_launch_enclave(sig):
            # The launch enclave itself needs no token (its MRSIGNER is the launch-key hash).
            self._context = {"decision": "launch enclave (no token)"}
            try:
                enclave = load(
                    self.new_process(),
                    image,
                    sig,
                    token=bytes(EinitToken.SIZE),
                    provision=provision,
                )
            finally:
                self._context = None
            return RunResult(enclave, mode, "launch enclave (no token)")
        if token is not None:
            decision = {"decision": "token supplied", "token_keyid": _keyid(token)}
        else:
            try:
                reply = self.mint(sig.to_bytes(), secs.attributes)
            except (MalformedInput, VerificationFailed) as exc:
                refused = exc
                reply = MintReply(
                    allowed=0,
                    rule=None,
                    policy_version=0,
                    policy_digest=None,
                    reasons=("", "sigstruct", "a SIGSTRUCT whose signature verifies", exc.message),
                    token=None,
                )
            token = reply.token
            decision = {
                "decision": "allowed" if reply.allowed else "denied",
                "rule": reply.rule,
                "reasons": reply.reason_dicts(),
                "policy_version": reply.policy_version or None,
                "policy_digest": None if reply.policy_digest is None else reply.policy_digest.hex(),
                "token_keyid": None if token is None else _keyid(token),
            }
        self._context = decision
        try:
            if token is None:
                # Denied: the attempt still reaches the driver (and the log) without a token.
                # The driver refuses every enclave but the launch enclave without one.
                with contextlib.suppress(LoadFailed):
                    load(
                        self.new_process(),
                        image,
                        sig,
                        token=bytes(EinitToken.SIZE),
                        provision=provision,
                    )
                if refused is not None:
                    raise refused
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
                    reasons=[_reason(r) for r in reasons],
                )
            enclave = load(self.new_process(), image, sig, token=token, provision=provision)
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

    def _append(self, facts: dict[str, Any]) -> int:
        """Append one record (under the lock): the launch enclave chains and MACs it and
        prepares its new head; the record and the sealed head are stored in one commit, then
        the counter advances. Returns the record's ``seq``.

        Raises:
            SgxlaunchError: it could not be recorded.
        """
        with self.store.locked():
            reply = self._le_call(
                LogAppendRequest(facts=_canonical(facts), now=to_seconds(self.clock())),
                LogAppendReply,
            )
            record = reply.record
            seq = decode_record(record, -1).get("seq")
            signer = self.le_signer
            if not isinstance(seq, int) or signer is None:
                raise VerificationFailed("the launch enclave returned a record without a seq")
            self._commit_prepared({f"{log_prefix(signer)}{seq:016d}": record}, reply)
            self._log_count = seq + 1
            return seq

    def le_target_info(self) -> TargetInfo:
        """The running launch enclave's TARGETINFO (what an enclave's EREPORT targets when it
        asks for an attested-code grant): MRENCLAVE, its SECS ATTRIBUTES (INIT set, as after
        EINIT) and MISCSELECT, as the driver created it.

        Raises:
            UsageError: no launch enclave is running.
        """
        le, sig = self.le, self.le_sigstruct
        if le is None or sig is None:
            raise UsageError("the owner's launch enclave is not running here")
        enclave = le.process._enclave_of(le.fd)
        return TargetInfo(
            mrenclave=enclave.mrenclave,
            attributes=Attributes(
                flags=enclave.attributes | int(AttributeFlag.INIT), xfrm=enclave.xfrm
            ),
            miscselect=sig.miscselect,
        )

    def _grant_service(self, query: GrantQuery) -> None:
        """The driver's owner-service port for attested-code grants (issue 17): the launch
        enclave's GRANT judges the query and makes the log record; the record and the sealed
        head are stored in one commit, then ADVANCE — at which the launch enclave posts a
        granted verdict for the driver. Nothing returned here grants anything.

        Raises:
            PolicyDenied: the launch enclave refused (its reasons in ``detail``); the refusal
                is in the log.
            SgxlaunchError: no launch enclave, or the record could not be committed.
        """
        with self._exclusive():
            reply = self._le_call(
                GrantRequest(
                    configid=query.configid,
                    mrenclave=query.mrenclave,
                    offset=query.offset,
                    length=query.length,
                    challenge=query.challenge,
                    code_hash=query.code_hash,
                    report=query.report,
                    now=to_seconds(self.clock()),
                ),
                GrantReply,
            )
            seq = decode_record(reply.record, -1).get("seq")
            signer = self.le_signer
            if not isinstance(seq, int) or signer is None:
                raise VerificationFailed("the launch enclave returned a record without a seq")
            self._commit_prepared({f"{log_prefix(signer)}{seq:016d}": reply.record}, reply)
            self._log_count = seq + 1
        if not reply.allowed:
            items = reply.reasons
            raise PolicyDenied(
                "attested-code grant refused" + (f" (rule {reply.rule})" if reply.rule else ""),
                rule=reply.rule,
                detail=[
                    f"{items[i + 1]}: expected {items[i + 2]}, found {items[i + 3]}"
                    for i in range(0, len(items) - 3, 4)
                ],
            )

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.close()

    def _gate(self, attempt: InitAttempt) -> None:
        """Driver gate: record the *attempt* before EINIT, taking the home's lock until its
        outcome is recorded. In owner mode an attempt that cannot be recorded is refused
        (EIO, before EINIT); in permissive mode (mainline's behaviour) it goes ahead and the
        failure is kept in :attr:`log_errors`.

        With no launch enclave running there is nothing to record with: in owner mode every
        INIT but the launch enclave's own is then refused (EIO) — e.g. on a platform opened in
        maintenance whose launch enclave does not start, a token minted earlier would
        otherwise initialize its enclave with no record (``tests/adversarial/
        test_launch_log_unlogged_init.py``)."""
        self._attempt_seq = None
        if self.le is None:
            if attempt.mode == "owner" and not self._is_own_init(attempt):
                reason = f" ({self.blocked})" if self.blocked else ""
                raise DriverError(
                    _errno.EIO,
                    "no launch enclave is running to record the attempt in the launch log" + reason,
                )
            return
        self._release()
        held = contextlib.ExitStack()
        try:
            held.enter_context(self._exclusive())
            self._forward_events()  # first: nothing may come between an attempt and its outcome
            self._attempt_seq = self._append(self._attempt_facts(attempt))
        except SgxlaunchError as exc:
            held.close()
            self._log_errors.append(exc.message)
            if attempt.mode == "owner":
                raise DriverError(
                    _errno.EIO, f"the launch log could not record the attempt: {exc.message}"
                ) from None
            return
        self._held = held

    def _is_own_init(self, attempt: InitAttempt) -> bool:
        """The INIT is the owner's launch enclave's (signed by the signer the driver trusts,
        of the launch enclave's MRENCLAVE): the one INIT that runs before a launch enclave."""
        data = attempt.sigstruct
        if data is None or self.state is None:
            return False
        try:
            sig = Sigstruct.from_bytes(data)
        except SgxlaunchError:
            return False
        return self._is_launch_enclave(sig)

    def _observe(self, attempt: InitAttempt) -> None:
        """Driver observer: record the *outcome* of the attempt the gate recorded, then
        release the lock."""
        seq, self._attempt_seq = self._attempt_seq, None
        try:
            if self.le is None or seq is None:
                return
            facts: dict[str, Any] = {
                "kind": OUTCOME,
                "attempt": seq,
                "time": self._now(),
                "outcome": "initialized" if attempt.errno == 0 else "refused",
                "errno": _errno.errorcode.get(attempt.errno, str(attempt.errno))
                if attempt.errno
                else None,
                "sgx_status": None if attempt.status is None else attempt.status.name,
                "reason": attempt.reason or None,
            }
            if attempt.refused_pages:
                # The owner's EINIT-time page checks (issue 17): how many, and where (the
                # record keeps the first offsets; the reason names them as ranges).
                facts["refused_pages"] = {
                    "count": len(attempt.refused_pages),
                    "offsets": [f"0x{o:x}" for o in attempt.refused_pages[:MAX_LIST_ITEMS]],
                }
            self._append(facts)
        except SgxlaunchError as exc:  # the INIT's own outcome must not be masked
            self._log_errors.append(exc.message)
        finally:
            self._release()

    def _teardown(self, enclave: Enclave) -> None:
        """Driver release hook: record, for an initialized enclave being torn down, how many
        pages were added after EINIT (EAUG on faults, SGX2; never in MRENCLAVE) and how many
        REMOVE_PAGES took out. Not for the launch enclave (it writes the records)."""
        le_sig = self.le_sigstruct
        if self.le is None or (
            le_sig is not None and hmac.compare_digest(enclave.mrenclave, le_sig.enclavehash)
        ):
            return
        try:
            with self._exclusive():
                self._forward_events()
                self._append(
                    {
                        "kind": TEARDOWN,
                        "time": self._now(),
                        "mrenclave": enclave.mrenclave.hex(),
                        "mrsigner": enclave.mrsigner.hex(),
                        "pages_added_after_einit": enclave.pages_added,
                        "pages_removed": enclave.pages_removed,
                    }
                )
        except SgxlaunchError as exc:  # teardown goes ahead; the failure is reported
            self._log_errors.append(exc.message)

    def forward_driver_events(self) -> int:
        """Write what the driver decided about dynamic memory since the last call into the
        launch log (``dynamic`` records, ``docs/launch.md``). The Platform also does it before
        each INIT attempt, each teardown record and each :meth:`log_records`. Returns how many
        records were written."""
        if self.le is None:
            return 0
        with self._exclusive():
            return self._forward_events()

    def _forward_events(self) -> int:
        """Under the lock: drain the driver's event queue into ``dynamic`` records. Not while
        an INIT attempt awaits its outcome (the pair stays adjacent; the events wait). Records
        that could not be written are kept (in order) for the next call; the failure is kept
        in :attr:`log_errors`."""
        events = self.driver.events
        if self.le is None or self._attempt_seq is not None:
            return 0
        pending, self._unforwarded = self._unforwarded, []
        if events.pending():
            drained, dropped = events.drain()
            pending += [_event_facts(e) for e in drained]
            if dropped:
                pending.append(
                    {
                        "kind": DYNAMIC,
                        "time": self._now(),
                        "action": "queue",
                        "outcome": "dropped",
                        "dropped": dropped,
                    }
                )
        for written, facts in enumerate(pending):
            try:
                self._append(facts)
            except SgxlaunchError as exc:
                self._log_errors.append(exc.message)
                self._unforwarded = pending[written:]
                return written
        return len(pending)

    def _attempt_facts(self, attempt: InitAttempt) -> dict[str, Any]:
        sig = None
        if attempt.sigstruct is not None and len(attempt.sigstruct) == Sigstruct.SIZE:
            sig = Sigstruct.from_bytes_raw(attempt.sigstruct)
        context = self._context or {"decision": "not requested through sgxlaunch run"}
        keyid = context.get("token_keyid")
        if keyid is None and attempt.token is not None:
            keyid = _keyid(attempt.token)
        return {
            "kind": ATTEMPT,
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
            "token_limits": _token_limits(keyid),
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
        """The stored records, decoded (not verified: see :meth:`verify_log`); a record that
        does not decode comes back flagged ``malformed`` (:func:`~sgxlaunch.launch.log.
        decode_record`), never raising. This platform's pending driver events are written
        first (:meth:`forward_driver_events`)."""
        with self._exclusive():
            self._forward_events()
            blobs = self.log_blobs()
        return [decode_record(blob, index) for index, blob in enumerate(blobs)]

    def verify_log(self) -> int:
        """Verify the whole launch log inside the launch enclave; returns the record count.

        Raises:
            LogTampered: naming the first bad record.
            UsageError: no launch enclave here.
        """
        with self._exclusive():
            blobs = self.log_blobs()
            for index, blob in enumerate(blobs):
                if not 32 < len(blob) <= 32 + MAX_RECORD_BYTES:
                    raise LogTampered(
                        f"launch-log record {index}: a stored record of {len(blob)} bytes",
                        index=index,
                    )
            reply = self._le_call(LogVerifyRequest(records=tuple(blobs)), LogVerifyReply)
        check_exactly_once([decode_record(blob, index) for index, blob in enumerate(blobs)])
        return reply.count

    def attest_log(self, nonce: bytes, targetinfo: bytes, *, first_seq: int = 0) -> LogAttestation:
        """The launch enclave's REPORT, for the enclave ``targetinfo`` names (the quoting
        enclave), binding ``nonce``, the machine's platform id and the committed log head; with
        the records it attests, exported from ``first_seq`` (read under the same lock).

        Raises:
            MalformedInput: the nonce is empty or over 64 bytes; TARGETINFO is malformed.
            UsageError: no launch enclave here; ``first_seq`` is beyond the log.
            LogTampered: a stored record cannot be exported.
        """
        with self._exclusive():
            blobs = self.log_blobs()
            reply = self._le_call(
                LogAttestRequest(nonce=bytes(nonce), targetinfo=bytes(targetinfo)),
                LogAttestReply,
            )
        head = LogHead(reply.count, reply.head)
        signer = self.le_signer
        assert signer is not None
        export = export_log(
            blobs,
            platform_id=self.platform_id,
            le_mrsigner=signer,
            first_seq=first_seq,
            attested={"nonce": nonce.hex(), "count": head.count, "head": head.hash.hex()},
        )
        return LogAttestation(report=reply.report, head=head, nonce=bytes(nonce), export=export)

    def attest_log_quote(self, nonce: bytes, *, first_seq: int = 0) -> tuple[bytes, LogAttestation]:
        """A DCAP quote of the launch enclave's attestation of its log head for ``nonce``
        (:meth:`attest_log` targeted at this platform's quoting enclave, then :meth:`quote`),
        and the attestation with the records it attests. The PCE and QE are launched first if
        they are not running (their INIT attempts are in the log before the attested head).

        Raises:
            MalformedInput: the nonce is empty or over 64 bytes.
            UsageError: no launch enclave here; ``first_seq`` is beyond the log.
            PolicyDenied: owner mode, and the policy does not allow the PCE or QE.
            VerificationFailed: no PCK certificate for the current TCB; the QE refused.
        """
        target = self.qe_target_info()
        attestation = self.attest_log(nonce, target.to_bytes(), first_seq=first_seq)
        return self.quote(attestation.report), attestation

    def export_log(self, first_seq: int = 0) -> bytes:
        """The current launch enclave's log segment in the export format, from ``first_seq``.

        Raises:
            UsageError: no launch enclave here; ``first_seq`` is beyond the log.
            LogTampered: a stored record cannot be exported.
        """
        signer = self.le_signer
        if signer is None:
            raise UsageError(
                "the owner's launch enclave is not set up here (`sgxlaunch platform le-sign`)"
            )
        with self._exclusive():
            blobs = self.log_blobs()
        return export_log(
            blobs, platform_id=self.platform_id, le_mrsigner=signer, first_seq=first_seq
        )

    @property
    def log_errors(self) -> list[str]:
        """Records that could not be written (should stay empty)."""
        return list(self._log_errors)

    # -- protected code (issue 20: the launch enclave's side) -----------------------------------

    def _le_key(self, targetinfo: bytes | None = None) -> LeKeyReply:
        """LE_KEY under the lock: the launch enclave unseals its key-agreement key from the
        home, or makes one (then it is stored)."""
        with self._exclusive():
            if self.blocked is not None:
                raise UsageError(f"the platform is blocked: {self.blocked}")
            reply = self._le_call(
                LeKeyRequest(sealed=self.store.get(LE_KX_KEY), targetinfo=targetinfo), LeKeyReply
            )
            if reply.sealed is not None:
                self.store.commit({LE_KX_KEY: reply.sealed})
            return reply

    def le_public_key(self) -> bytes:
        """The launch enclave's X25519 key-agreement public key (made inside it, and sealed
        with its MRENCLAVE policy, on first use).

        Raises:
            UsageError: no launch enclave here; the platform is blocked.
            VerificationFailed: the stored key does not unseal (altered, or another enclave's).
        """
        return self._le_key().public_key

    def le_key_quote(self) -> tuple[bytes, bytes]:
        """A DCAP quote of the launch enclave whose REPORTDATA binds its key-agreement public
        key (SHA-256(``LE_KEY_REPORTDATA_DOMAIN`` ‖ key) ‖ 32 zero bytes), and the key: what
        an author verifies before wrapping a code key (``pcl wrap``).

        Raises:
            UsageError, VerificationFailed: as :meth:`le_public_key` and :meth:`quote`.
            PolicyDenied: owner mode, and the policy does not allow the PCE or QE.
        """
        target = self.qe_target_info()
        reply = self._le_key(target.to_bytes())
        assert reply.report is not None
        return self.quote(reply.report), reply.public_key

    @_serialized
    def add_code_key(self, wrapped: bytes) -> dict[str, Any]:
        """Hand an author's wrapped code key (``pcl wrap``) to the launch enclave, which
        unwraps it with its key-agreement key, checks its key id and keeps it sealed with its
        MRENCLAVE policy (stored under ``pcl/code-key/<key id>``); logged.

        Raises:
            MalformedInput: not a wrapped key.
            VerificationFailed: wrapped for another launch enclave; the box does not open; the
                key id does not match; the stored key-agreement key does not unseal.
            UsageError: no key-agreement key yet (nothing can have been wrapped for it).
        """
        if self.blocked is not None:
            raise UsageError(f"the platform is blocked: {self.blocked}")
        le_key = self.store.get(LE_KX_KEY)
        if le_key is None:
            raise UsageError(
                "this launch enclave has no key-agreement key yet, so no code key can have been "
                "wrapped for it: export its quote first (`sgxlaunch platform le-key-quote`)"
            )
        reply = self._le_call(
            AddCodeKeyRequest(wrapped=bytes(wrapped), le_key=le_key, now=to_seconds(self.clock())),
            AddCodeKeyReply,
        )
        seq = self._commit_record(reply, {code_key_key(reply.key_id): reply.code_key})
        from sgxlaunch.pcl.crypto import ReleaseConstraint

        return {
            "key_id": reply.key_id.hex(),
            "constraint": ReleaseConstraint.from_bytes(reply.constraint).describe(),
            "log_seq": seq,
        }

    def code_key_ids(self) -> list[str]:
        """The key ids (hex) of the code keys installed here."""
        return [key[len(CODE_KEY_PREFIX) :] for key in self.store.keys(CODE_KEY_PREFIX)]

    def _commit_record(
        self, reply: AddCodeKeyReply | ReleaseReply, changes: dict[str, bytes | None]
    ) -> int:
        """Store a record the launch enclave wrote itself, with its prepared state and
        ``changes``, in one commit; then ADVANCE. Returns the record's ``seq``."""
        seq = decode_record(reply.record, -1).get("seq")
        signer = self.le_signer
        if not isinstance(seq, int) or signer is None:
            raise VerificationFailed("the launch enclave returned a record without a seq")
        changes[f"{log_prefix(signer)}{seq:016d}"] = reply.record
        self._commit_prepared(changes, reply)
        self._log_count = seq + 1
        return seq

    @_serialized
    def release_challenge(self) -> tuple[bytes, bytes]:
        """A one-time release challenge from the launch enclave and its TARGETINFO (512
        bytes): what a decryptor's REQUEST needs."""
        reply = self._le_call(ReleaseChallengeRequest(), ReleaseChallengeReply)
        return reply.targetinfo, reply.challenge

    @_serialized
    def release_code_key(
        self, report: bytes, ephemeral_key: bytes, challenge: bytes, key_id: bytes
    ) -> bytes:
        """Ask the launch enclave to release code key ``key_id`` to the enclave whose REPORT
        (targeted at the launch enclave) binds ``challenge``, ``ephemeral_key`` and the key id.
        The decision is logged (committed before the key is handed out); returns K boxed to
        ``ephemeral_key``.

        Raises:
            PolicyDenied: the owner's policy refuses (no allow rule, a deny rule, or the first
                matching allow rule lacks ``protected_code: allow``); logged.
            VerificationFailed: the challenge, the REPORT, its REPORTDATA, DEBUG, the key or
                the author's constraint refuses; logged.
            MalformedInput: a field has the wrong length (nothing logged).
        """
        if self.blocked is not None:
            raise UsageError(f"the platform is blocked: {self.blocked}")
        reply = self._le_call(
            ReleaseRequest(
                report=bytes(report),
                ephemeral_key=bytes(ephemeral_key),
                challenge=bytes(challenge),
                key_id=bytes(key_id),
                code_key=self.store.get(code_key_key(key_id)),
                now=to_seconds(self.clock()),
            ),
            ReleaseReply,
        )
        self._commit_record(reply, {})
        if not reply.released:
            reasons = reply.reason_dicts()
            detail = [
                f"{r.get('field')}: expected {r.get('expected')}, found {r.get('found')}"
                + (f" [rule {r['rule']}]" if r.get("rule") else "")
                for r in reasons
            ]
            if reply.by_policy:
                raise PolicyDenied(
                    "the owner's launch enclave refused to release the code key: the owner's "
                    "policy does not allow it" + (f" (rule {reply.rule})" if reply.rule else ""),
                    rule=reply.rule,
                    detail=detail,
                    reasons=[_reason(r) for r in reasons],
                )
            raise VerificationFailed(
                "the owner's launch enclave refused to release the code key", detail=detail
            )
        return self._le_call(ClaimRequest(), ClaimReply).boxed

    def unlock_protected(
        self, enclave: LoadedEnclave, function: int = 0, data: bytes = b""
    ) -> bytes:
        """Run a protected enclave's program (REQUEST → RELEASE → UNLOCK): its decryptor
        makes a REPORT for the launch enclave binding a fresh challenge, an ephemeral key and
        the key id; the launch enclave decides and logs (:meth:`release_code_key`); the
        decryptor opens the box, decrypts and checks every page in place, then runs the
        protected program's ECALL ``function`` with ``data``. Returns its output.

        Raises:
            PolicyDenied, VerificationFailed: the release was refused (logged).
            VerificationFailed: the decryptor refused (a tampered page, a key id mismatch).
            MalformedInput: a reply is not one.
        """
        from sgxlaunch.pcl import ecalls as pcl_calls

        targetinfo, challenge = self.release_challenge()
        body = pcl_calls.decode_reply(
            pcl_calls.Call.REQUEST,
            enclave.ecall(
                int(pcl_calls.Call.REQUEST),
                pcl_calls.RequestIn(targetinfo=targetinfo, challenge=challenge).encode(),
            ),
        )
        request = pcl_calls.RequestOut.decode(body)
        boxed = self.release_code_key(
            request.report, request.ephemeral_public_key, challenge, request.key_id
        )
        body = pcl_calls.decode_reply(
            pcl_calls.Call.UNLOCK,
            enclave.ecall(
                int(pcl_calls.Call.UNLOCK),
                pcl_calls.UnlockIn(box=boxed, function=function, data=bytes(data)).encode(),
            ),
        )
        return pcl_calls.ProgramOut.decode(body).output

    # -- quoting (the PCE and QE: sgxlaunch.attest.quoting) -------------------------------------

    def quoter(self) -> Quoter:
        """The platform's PCE and QE (loaded on first use, through :meth:`run` with
        PROVISIONKEY granted: in owner mode the owner's policy decides) and its certified
        attestation key (store key ``attest/qe-key``)."""
        if self._quoter is None:
            from sgxlaunch.attest.quoting import QE_KEY_KEY, PcsProvisioning, Quoter
            from sgxlaunch.driver import as_sgxs_image

            def launch(image: Any, sig: Sigstruct) -> LoadedEnclave:
                enclave = self.run(as_sgxs_image(image), sig, provision=True).enclave
                assert enclave is not None  # run raises when it does not initialize
                return enclave

            self._quoter = Quoter(
                launch=launch,
                register=self.cpu.register_program,
                provisioning=PcsProvisioning(self.machine, self.clock, self.random),
                cpusvn=self.cpu.config.cpusvn,
                load_record=lambda: self.store.get(QE_KEY_KEY),
                save_record=lambda blob: self.store.commit({QE_KEY_KEY: blob}),
            )
        return self._quoter

    def qe_target_info(self) -> TargetInfo:
        """The TARGETINFO of this platform's quoting enclave: an enclave's EREPORT targeted at
        it can be quoted (:meth:`quote`)."""
        return self.quoter().target_info()

    def quote(self, report: Report | bytes) -> bytes:
        """A DCAP ECDSA quote v3 over ``report`` (a 432-byte REPORT targeted at
        :meth:`qe_target_info`), with the PCK certificate chain (certification data type 5).

        Raises:
            MalformedInput: not a REPORT.
            UsageError: a DEBUG enclave's REPORT (quoted enclaves must be non-debug); nothing
                can be launched on this platform.
            ReportRefused: the QE's check of the REPORT's MAC failed.
            PolicyDenied: owner mode, and the policy does not allow the PCE or QE.
            VerificationFailed: no PCK certificate can be had for the current TCB.
        """
        return self.quoter().quote(report)

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
            "policy": None if state is None else state.describe(self.clock()).get("policy"),
            "log_records": len(self.log_blobs()),
            "log_errors": self.log_errors,
            "epc_size": self.config.epc_size,
            "sgx2": bool(self.cpu.cpuid(0x12, 0)[0] & 0x2),
            "firmware": self.config.firmware,
            "counter": self.machine.load().counter.value,
            "blocked": self.blocked,
        }


def _prot(prot: int) -> str:
    return "".join(c if prot & bit else "-" for c, bit in (("r", 1), ("w", 2), ("x", 4)))


def _event_facts(event: DriverEvent) -> dict[str, Any]:
    """A driver event (``driver/dynamic.py``) as a ``dynamic`` record's facts."""
    return {
        "kind": DYNAMIC,
        "time": _iso(datetime.fromtimestamp(event.time, UTC)),
        "pid": event.pid,
        "mrenclave": event.mrenclave.hex(),
        "mrsigner": event.mrsigner.hex(),
        "configid": event.configid.hex() if any(event.configid) else None,
        "level": event.level.label,
        "action": event.action,
        "offset": event.start,
        "length": event.end - event.start,
        "prot": _prot(event.prot),
        "outcome": event.outcome,
        "errno": _errno.errorcode.get(event.errno, str(event.errno)) if event.errno else None,
        "signal": event.signal or None,
        "code_hash": None if event.code_hash is None else event.code_hash.hex(),
    }


def check_ownership_open(machine: Machine, digest: bytes) -> bytes | None:
    """The machine's owner binding, which must be ``digest`` (the same root again) or none:
    :func:`take_ownership`'s check, which a caller can make before it creates anything.

    Raises:
        UsageError: the machine is bound to another owner root.
    """
    binding = machine.load().owner_binding
    if binding is not None and not hmac.compare_digest(binding, digest):
        raise UsageError(
            "this machine already has an owner; only a rotation signed by its keys replaces the "
            "root, and clearing ownership needs the machine itself "
            "(`sgxlaunch machine clear-ownership --machine PATH`)",
            detail=[f"bound owner root digest: {binding.hex()}"],
        )
    return binding


def take_ownership(store: Store, machine: Machine, data: bytes, now: datetime) -> TrustedState:
    """Take ownership of a machine that has none: verify the root (a threshold of its own keys,
    not expired), record its digest in the machine, then store it in the home. Repeating it
    with the root the machine is already bound to only restores the home's copy.

    Raises:
        UsageError: the machine already has another owner (clearing ownership is a
            physical-presence operation: ``sgxlaunch machine clear-ownership``).
        MalformedInput, VerificationFailed: the root is refused; nothing changes.
    """
    state, update = TrustedState.bootstrap(data, now)
    digest = root_digest_of(data)
    binding = check_ownership_open(machine, digest)
    if binding is None:
        bind_owner(machine, None, digest)
    store.commit({**update.changes, ROOT_PREVIOUS_KEY: None})
    return state


def legacy_config(store: Store) -> PlatformConfig | None:
    """The configuration a home made before the machine existed kept (``None``: not one)."""
    if store.get(SEED_KEY) is None:
        return None
    data = store.get(CONFIG_KEY)
    return PlatformConfig() if data is None else PlatformConfig.from_json(data)


def migrate_legacy_home(store: Store, machine: Machine, now: datetime) -> list[str]:
    """Move a home made before the machine existed onto ``machine`` (new, with a new seed:
    the old one was in the attacker's directory and must be assumed read).

    The home's owner root takes ownership of the new machine (print its digest for the owner
    to check); the old seed and configuration are deleted; everything bound to the old seed
    (launch-enclave SIGSTRUCTs, sealed state, the log) and the policy and mode document are
    moved under ``archive/legacy/``, since the owner must re-sign the launch enclave and
    install the documents again.

    Returns:
        What was archived (store keys).

    Raises:
        UsageError: not a legacy home; the machine already has an owner or a used counter.
        MalformedInput, VerificationFailed: the home's root does not verify (nothing changes).
    """
    if store.get(SEED_KEY) is None:
        raise UsageError("this home holds no platform seed: nothing to migrate")
    machine_state = machine.load()
    if machine_state.owner_binding is not None or machine_state.counter.value:
        raise UsageError("migrate onto a new machine (this one has an owner or a used counter)")
    root = store.get(ROOT_KEY)
    if root is not None:
        take_ownership_data = TrustedState.load(_single(ROOT_KEY, root))
        assert take_ownership_data is not None
    moved: dict[str, bytes | None] = {SEED_KEY: None, CONFIG_KEY: None}
    archived = []
    for prefix in (LE_SIGSTRUCT_PREFIX, LE_SEALED_PREFIX, LOG_PREFIX, POLICY_KEY, MODE_KEY):
        for key in store.keys(prefix):
            moved[f"{ARCHIVE_PREFIX}legacy/{key}"] = store.get(key)
            moved[key] = None
            archived.append(key)
    for key in (LE_ACTIVE_KEY, LE_HANDOVER_KEY, ROOT_PREVIOUS_KEY):
        moved[key] = None
    if root is not None:
        bind_owner(machine, None, root_digest_of(root))
    store.commit(moved)
    return archived


def _single(key: str, value: bytes) -> Store:
    from sgxlaunch.policy import MemoryStore

    return MemoryStore({key: value})


def _reason(r: dict[str, Any]) -> dict[str, Any]:
    """One denial reason in the project's one shape: ``{rule, field, expected, found}``."""
    return {name: r.get(name) for name in ("rule", "field", "expected", "found")}


def _canonical(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _stored_signer(stored: bytes | None) -> bytes | None:
    """``platform/le-active``: 64 hex digits of a launch-enclave MRSIGNER.

    Raises:
        MalformedInput: naming the key.
    """
    if not stored:
        return None
    if len(stored) != 64 or any(c not in b"0123456789abcdef" for c in stored):
        raise MalformedInput(
            f"{LE_ACTIVE_KEY} in the home is not 64 lower-case hex digits", field=LE_ACTIVE_KEY
        )
    return bytes.fromhex(stored.decode())


def _token_limits(keyid: Any) -> dict[str, str] | None:
    """The owner limits a token's KEYID (hex) carries (:func:`~sgxlaunch.driver.owner.
    keyid_limits`: what the driver enforces if the INIT succeeds), or ``None``."""
    if not isinstance(keyid, str):
        return None
    try:
        limits = keyid_limits(bytes.fromhex(keyid))
    except (ValueError, VerificationFailed):
        return None
    return {
        "dynamic_memory": limits.dynamic_memory.label,
        "unmeasured_exec": "allow" if limits.unmeasured_exec else "deny",
        "rwx_pages": "allow" if limits.rwx_pages else "deny",
    }


def _keyid(token: bytes) -> str | None:
    if len(token) != EinitToken.SIZE:
        return None
    parsed = EinitToken.from_bytes_raw(token)
    return parsed.keyid.hex() if parsed.valid & 1 else None


def _mode_result(doc: Any) -> dict[str, Any]:
    bound = doc.platform_id
    return {
        "mode": doc.mode,
        "version": doc.version,
        "platform_id": None if bound is None else bound.hex(),
    }


def _named_signer(doc: Any) -> bytes:
    """The launch-enclave MRSIGNER an owner-mode document names."""
    signer = doc.le_mrsigner
    if not isinstance(signer, bytes) or len(signer) != 32:
        raise VerificationFailed("the owner-mode document names no launch-enclave signer")
    return signer


__all__ = [
    "ARCHIVE_PREFIX",
    "CONFIG_KEY",
    "LE_ACTIVE_KEY",
    "LE_HANDOVER_KEY",
    "LE_SEALED_PREFIX",
    "LE_SIGSTRUCT_PREFIX",
    "LOG_PREFIX",
    "ROOT_PREVIOUS_KEY",
    "SEED_KEY",
    "Platform",
    "PlatformConfig",
    "RunResult",
    "legacy_config",
    "migrate_legacy_home",
    "platform_id_of",
    "take_ownership",
]
