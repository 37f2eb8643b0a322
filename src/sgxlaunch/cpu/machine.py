"""The machine: what silicon, fuses and a TPM-like non-volatile store hold.

The *machine* is the part of an emulated platform that sits outside the attacker's reach, as the
CPU die does: the platform seed (the fused secret every key derives from), CR_SGXOWNEREPOCH,
the configuration firmware fixes (EPC size, launch-control firmware mode and its locked hash,
the platform id), the owner binding (the digest of the owner root that took ownership) and one
monotonic counter. The *home* (documents, sealed blobs, the launch log) is the attacker's.

The core reads and changes the machine only through the :class:`Machine` protocol (as it reads
the home through ``Store``): :meth:`Machine.load` returns an immutable :class:`MachineState`,
and :meth:`Machine.swap` replaces it **only if** it is still the state the caller read (a
compare-and-set; :class:`MachineConflict` otherwise). Backends: :class:`MemoryMachine` here
(tests) and the file backend at the edge (:mod:`sgxlaunch.store.machine`).

The monotonic counter is an **emulator extension** (SGX has none since the platform-services
counters were retired; a TPM NV counter under an authorised session plays the same role). It
is reachable only from inside an enclave, through
:meth:`~sgxlaunch.cpu.enclave.EnclaveContext.counter_read` and
:meth:`~sgxlaunch.cpu.enclave.EnclaveContext.counter_compare_and_set`, authenticated by the
calling enclave's identity as the processor recorded it at EINIT: its MRSIGNER and ISVPRODID.
The slot holds ``(value, digest, owner)``. A slot at value 0 with no owner is claimed by the
first enclave that advances it; from then on only the owner reads or advances it, and the owner
alone can hand it to another identity (the advance names the next owner). Clearing ownership
(a physical-presence operation) resets the slot and bumps OWNEREPOCH.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from sgxlaunch.cpu.config import DEFAULT_CPUSVN
from sgxlaunch.cpu.provisioning import ProvisioningState
from sgxlaunch.errors import MalformedInput, UsageError, VerificationFailed

ZERO32 = bytes(32)
FIRMWARE_MODES = ("lc-enabled", "locked-hash")
MACHINE_FORMAT = "sgxlaunch-machine/v1"


class MachineConflict(VerificationFailed):
    """The machine changed since it was read (a compare-and-set lost), or an enclave asked the
    counter for a value it does not hold."""

    check = "machine"


class CounterAccessDenied(VerificationFailed):
    """The calling enclave is not the identity that owns the monotonic counter."""

    check = "monotonic-counter"


def platform_id_of(seed: bytes) -> bytes:
    """A public identifier of the platform (binds owner documents to it); the seed stays
    secret."""
    return hashlib.sha256(b"sgxlaunch/platform-id/v1\x00" + seed).digest()


@dataclass(frozen=True, slots=True)
class CounterSlot:
    """The monotonic counter's slot.

    Attributes:
        value: how many times it was advanced since ownership was last cleared.
        digest: 32 bytes the owner stored with the last advance (the launch enclave stores the
            digest of the state it committed).
        owner_mrsigner: MRSIGNER of the owning enclave identity (zero: unowned).
        owner_isvprodid: its ISVPRODID.
        policy_digest: the digest of the launch policy the owner's committed state holds
            (zero: none), written by the same compare-and-set as ``value``; the driver's
            owner-mode INIT binds tokens to it (:mod:`sgxlaunch.driver.owner`).
    """

    value: int = 0
    digest: bytes = ZERO32
    owner_mrsigner: bytes = ZERO32
    owner_isvprodid: int = 0
    policy_digest: bytes = ZERO32

    @property
    def owned(self) -> bool:
        return self.owner_mrsigner != ZERO32

    def owned_by(self, mrsigner: bytes, isvprodid: int) -> bool:
        return hmac.compare_digest(self.owner_mrsigner, mrsigner) and (
            self.owner_isvprodid == isvprodid
        )


@dataclass(frozen=True, slots=True)
class MachineState:
    """Everything the machine holds (immutable; changes go through :meth:`Machine.swap`).

    Attributes:
        seed: the platform seed (≥ 16 bytes): the CPU's fused secret.
        epc_size: EPC bytes.
        firmware: ``lc-enabled`` (writable launch-key MSRs) or ``locked-hash``.
        firmware_lepubkeyhash: for ``locked-hash``: the hash firmware locked in.
        owner_epoch: the value of CR_SGXOWNEREPOCH as an integer (bumped by clearing
            ownership: every owner-dependent key changes).
        owner_binding: SHA-256 of the owner root's payload that took ownership (``None``: no
            owner).
        counter: the monotonic counter.
        cpusvn: CR_CPUSVN, the security version of the CPU's microcode and hardware TCB
            (16 components of one byte); a microcode update raises it
            (:func:`sgxlaunch.attest.pcs.update_cpusvn`).
        provisioning: the emulated PCS's secrets and state and the PCE/QE signing key
            (:mod:`sgxlaunch.cpu.provisioning`); ``None`` until first made
            (:func:`sgxlaunch.attest.pcs.ensure_provisioning`).
    """

    seed: bytes
    epc_size: int = 16 << 20
    firmware: str = "lc-enabled"
    firmware_lepubkeyhash: bytes | None = None
    owner_epoch: int = 0
    owner_binding: bytes | None = None
    counter: CounterSlot = CounterSlot()
    cpusvn: bytes = DEFAULT_CPUSVN
    provisioning: ProvisioningState | None = None

    def __post_init__(self) -> None:
        if len(self.seed) < 16:
            raise UsageError("the platform seed must be at least 16 bytes")
        if self.epc_size <= 0 or self.epc_size % 4096:
            raise UsageError("the EPC size must be a positive multiple of 4096 bytes")
        if self.firmware not in FIRMWARE_MODES:
            raise UsageError(f"firmware must be one of {', '.join(FIRMWARE_MODES)}")
        if self.firmware == "locked-hash" and (
            self.firmware_lepubkeyhash is None or len(self.firmware_lepubkeyhash) != 32
        ):
            raise UsageError("a locked-hash platform needs the firmware's 32-byte hash")
        if not 0 <= self.owner_epoch < 2**128:
            raise UsageError("the owner epoch is a 128-bit unsigned integer")
        if self.owner_binding is not None and len(self.owner_binding) != 32:
            raise UsageError("the owner binding is a 32-byte digest")
        if len(self.cpusvn) != 16:
            raise UsageError("CPUSVN is 16 bytes")

    @property
    def platform_id(self) -> bytes:
        return platform_id_of(self.seed)

    @property
    def owner_epoch_bytes(self) -> bytes:
        """CR_SGXOWNEREPOCH (16 bytes, little-endian)."""
        return self.owner_epoch.to_bytes(16, "little")

    def cleared(self) -> MachineState:
        """Ownership cleared: no binding, OWNEREPOCH + 1, the counter reset."""
        return replace(
            self, owner_binding=None, owner_epoch=self.owner_epoch + 1, counter=CounterSlot()
        )

    # -- the machine file's form -------------------------------------------------------------

    def to_json(self) -> bytes:
        c = self.counter
        return (
            json.dumps(
                {
                    "format": MACHINE_FORMAT,
                    "seed": self.seed.hex(),
                    "platform_id": self.platform_id.hex(),
                    "epc_size": self.epc_size,
                    "firmware": self.firmware,
                    "firmware_lepubkeyhash": None
                    if self.firmware_lepubkeyhash is None
                    else self.firmware_lepubkeyhash.hex(),
                    "owner_epoch": self.owner_epoch,
                    "owner_binding": None
                    if self.owner_binding is None
                    else self.owner_binding.hex(),
                    "counter": {
                        "value": c.value,
                        "digest": c.digest.hex(),
                        "owner_mrsigner": c.owner_mrsigner.hex(),
                        "owner_isvprodid": c.owner_isvprodid,
                        "policy_digest": c.policy_digest.hex(),
                    },
                    "cpusvn": self.cpusvn.hex(),
                    "provisioning": None
                    if self.provisioning is None
                    else self.provisioning.to_dict(),
                },
                indent=1,
                sort_keys=True,
            ).encode()
            + b"\n"
        )

    @classmethod
    def from_json(cls, data: bytes, *, source: str = "machine") -> MachineState:
        """Parse the machine file strictly.

        Raises:
            MalformedInput: not the machine format (names the field and what was expected).
        """

        def bad(field: str, expected: str) -> MalformedInput:
            return MalformedInput(f"{field}: expected {expected}", source=source, field=field)

        try:
            value = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedInput(f"not JSON: {exc}", source=source) from None
        if not isinstance(value, dict):
            raise bad("(top level)", "a JSON object")
        known = {
            "format",
            "seed",
            "platform_id",
            "epc_size",
            "firmware",
            "firmware_lepubkeyhash",
            "owner_epoch",
            "owner_binding",
            "counter",
            "cpusvn",
            "provisioning",
        }
        for key in value:
            if key not in known:
                raise bad(str(key), "no such field")
        if value.get("format") != MACHINE_FORMAT:
            raise bad("format", repr(MACHINE_FORMAT))

        def hexfield(obj: dict[str, Any], name: str, size: int | None, *, null: bool) -> Any:
            raw = obj.get(name)
            if raw is None and null:
                return None
            try:
                out = bytes.fromhex(raw) if isinstance(raw, str) else None
            except ValueError:
                out = None
            if out is None or (size is not None and len(out) != size):
                raise bad(name, f"{size or 'some'}-byte hex" + (" or null" if null else ""))
            return out

        def intfield(obj: dict[str, Any], name: str) -> int:
            raw = obj.get(name)
            if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
                raise bad(name, "a non-negative integer")
            return raw

        counter = value.get("counter")
        slot_fields = {"value", "digest", "owner_mrsigner", "owner_isvprodid"}
        if not isinstance(counter, dict) or set(counter) - {"policy_digest"} != slot_fields:
            raise bad(
                "counter",
                "an object with value, digest, owner_mrsigner, owner_isvprodid (and policy_digest)",
            )
        seed = hexfield(value, "seed", None, null=False)
        cpusvn = hexfield(value, "cpusvn", 16, null=False) if "cpusvn" in value else DEFAULT_CPUSVN
        provisioning = value.get("provisioning")
        if provisioning is not None:
            provisioning = ProvisioningState.from_dict(provisioning, source=source)
        try:
            state = cls(
                seed=seed,
                epc_size=intfield(value, "epc_size"),
                firmware=str(value.get("firmware")),
                firmware_lepubkeyhash=hexfield(value, "firmware_lepubkeyhash", 32, null=True),
                owner_epoch=intfield(value, "owner_epoch"),
                owner_binding=hexfield(value, "owner_binding", 32, null=True),
                counter=CounterSlot(
                    value=intfield(counter, "value"),
                    digest=hexfield(counter, "digest", 32, null=False),
                    owner_mrsigner=hexfield(counter, "owner_mrsigner", 32, null=False),
                    owner_isvprodid=intfield(counter, "owner_isvprodid"),
                    policy_digest=hexfield(counter, "policy_digest", 32, null=False)
                    if "policy_digest" in counter
                    else ZERO32,
                ),
                cpusvn=cpusvn,
                provisioning=provisioning,
            )
        except UsageError as exc:
            raise MalformedInput(exc.message, source=source) from None
        if value.get("platform_id") != state.platform_id.hex():
            raise bad("platform_id", "the id derived from the seed")
        return state


@runtime_checkable
class Machine(Protocol):
    """Where the machine's state lives (a file at the edge; memory in tests)."""

    def load(self) -> MachineState:
        """The current state.

        Raises:
            UsageError: there is no machine; MalformedInput: it is damaged.
        """
        ...

    def swap(self, expected: MachineState, new: MachineState) -> None:
        """Replace ``expected`` by ``new`` atomically (compare-and-set; durable on return).

        Raises:
            MachineConflict: the current state is not ``expected``.
        """
        ...


class MemoryMachine:
    """A :class:`Machine` in memory (tests, and throwaway platforms)."""

    __slots__ = ("_state",)

    def __init__(self, state: MachineState) -> None:
        self._state = state

    def load(self) -> MachineState:
        return self._state

    def swap(self, expected: MachineState, new: MachineState) -> None:
        if self._state != expected:
            raise MachineConflict("the machine changed since it was read")
        self._state = new


def counter_read(machine: Machine, mrsigner: bytes, isvprodid: int) -> CounterSlot:
    """The counter as the enclave ``(mrsigner, isvprodid)`` may see it.

    Raises:
        CounterAccessDenied: the counter is owned by another identity.
    """
    slot = machine.load().counter
    if slot.owned and not slot.owned_by(mrsigner, isvprodid):
        raise CounterAccessDenied(
            "the monotonic counter belongs to another enclave identity",
            expected=f"MRSIGNER {slot.owner_mrsigner.hex()}, ISVPRODID {slot.owner_isvprodid}",
            found=f"MRSIGNER {mrsigner.hex()}, ISVPRODID {isvprodid}",
        )
    return slot


def counter_compare_and_set(
    machine: Machine,
    mrsigner: bytes,
    isvprodid: int,
    *,
    value: int,
    digest: bytes,
    new_digest: bytes,
    next_owner: tuple[bytes, int] | None = None,
    policy_digest: bytes | None = None,
) -> CounterSlot:
    """Advance the counter from ``(value, digest)`` to ``(value + 1, new_digest)``, and set the
    slot's policy digest to ``policy_digest`` in the same step (``None``: keep it).

    Checks, in order: the caller owns the slot (or it is unowned at value 0); the slot holds
    exactly ``(value, digest)``. The new owner is ``next_owner`` when given (a handover by the
    current owner), else the caller.

    Raises:
        CounterAccessDenied: another identity owns the counter.
        MachineConflict: the slot does not hold ``(value, digest)``.
        UsageError: a digest is not 32 bytes.
    """
    if len(digest) != 32 or len(new_digest) != 32:
        raise UsageError("counter digests are 32 bytes")
    if policy_digest is not None and len(policy_digest) != 32:
        raise UsageError("the policy digest is 32 bytes")
    state = machine.load()
    slot = counter_read(machine, mrsigner, isvprodid)
    if not slot.owned and slot.value != 0:  # pragma: no cover - cleared slots are at 0
        raise CounterAccessDenied("the monotonic counter is unowned above zero")
    if slot.value != value or not hmac.compare_digest(slot.digest, digest):
        raise MachineConflict(
            "the monotonic counter does not hold the expected value",
            expected=f"{value} / {digest.hex()[:16]}…",
            found=f"{slot.value} / {slot.digest.hex()[:16]}…",
        )
    owner = next_owner if next_owner is not None else (mrsigner, isvprodid)
    if len(owner[0]) != 32 or owner[0] == ZERO32:
        raise UsageError("the counter's next owner is a non-zero 32-byte MRSIGNER")
    new_slot = CounterSlot(
        value + 1,
        bytes(new_digest),
        bytes(owner[0]),
        int(owner[1]),
        slot.policy_digest if policy_digest is None else bytes(policy_digest),
    )
    machine.swap(state, replace(state, counter=new_slot))
    return new_slot


__all__ = [
    "FIRMWARE_MODES",
    "CounterAccessDenied",
    "CounterSlot",
    "Machine",
    "MachineConflict",
    "MachineState",
    "MemoryMachine",
    "counter_compare_and_set",
    "counter_read",
    "platform_id_of",
]
