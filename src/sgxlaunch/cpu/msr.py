"""Model-specific registers and CPUID: IA32_FEATURE_CONTROL, IA32_SGXLEPUBKEYHASH0..3, the SGX
CPUID leaves, CR_CPUSVN."""

from __future__ import annotations

from sgxlaunch.arch.constants import (
    FEATURE_CONTROL_LOCK,
    FEATURE_CONTROL_SGX_ENABLED,
    FEATURE_CONTROL_SGX_LC_ENABLED,
    MSR_IA32_FEATURE_CONTROL,
    MSR_IA32_SGXLEPUBKEYHASH0,
    MSR_IA32_SGXLEPUBKEYHASH3,
)
from sgxlaunch.cpu.config import CpuConfig
from sgxlaunch.cpu.faults import GeneralProtection
from sgxlaunch.errors import UsageError

_U64 = (1 << 64) - 1
MAX_ENCLAVE_SIZE_LOG2_64 = 47
"""CPUID.(12H,0):EDX[15:8]: log2 of the largest 64-bit enclave."""
MAX_ENCLAVE_SIZE_LOG2_32 = 31
"""CPUID.(12H,0):EDX[7:0]: log2 of the largest 32-bit enclave."""


def cpusvn_beyond(candidate: bytes, platform: bytes) -> bool:
    """True when ``candidate`` exceeds ``platform`` in any of its 16 components.

    The SDM says "beyond the current CPU configuration" without an ordering; this component-wise
    rule is the emulator's documented choice.
    """
    if candidate == platform:
        return False
    return any(c > p for c, p in zip(candidate, platform, strict=True))


class Msrs:
    """RDMSR/WRMSR, CPUID and CR_CPUSVN of one processor, with the SDM's #GP rules.

    Firmware's choices come from :class:`CpuConfig`: ``lc-enabled`` locks FEATURE_CONTROL with
    SGX and SGX_LC enabled, ``locked-hash`` locks it without SGX_LC (the hash MSRs keep the
    firmware's value), ``unlocked`` leaves it for the kernel to lock.
    """

    def __init__(self, config: CpuConfig) -> None:
        self.config = config
        self.epc_base = config.epc_base
        cfg = config
        self._lehash = [
            int.from_bytes(cfg.firmware_lepubkeyhash[8 * i : 8 * i + 8], "little") for i in range(4)
        ]
        if cfg.firmware == "lc-enabled":
            self._feature_control = (
                FEATURE_CONTROL_LOCK | FEATURE_CONTROL_SGX_ENABLED | FEATURE_CONTROL_SGX_LC_ENABLED
            )
        elif cfg.firmware == "locked-hash":
            self._feature_control = FEATURE_CONTROL_LOCK | FEATURE_CONTROL_SGX_ENABLED
        else:
            self._feature_control = 0

    def rdmsr(self, msr: int) -> int:
        """RDMSR for IA32_FEATURE_CONTROL and IA32_SGXLEPUBKEYHASH0..3 (#GP otherwise)."""
        if msr == MSR_IA32_FEATURE_CONTROL:
            return self._feature_control
        if MSR_IA32_SGXLEPUBKEYHASH0 <= msr <= MSR_IA32_SGXLEPUBKEYHASH3:
            if not self.config.flc:
                raise GeneralProtection("IA32_SGXLEPUBKEYHASH is not implemented without FLC")
            return self._lehash[msr - MSR_IA32_SGXLEPUBKEYHASH0]
        raise GeneralProtection(f"RDMSR of unmodelled MSR 0x{msr:x}")

    def wrmsr(self, msr: int, value: int) -> None:
        """WRMSR with the SDM's rules.

        * IA32_FEATURE_CONTROL: #GP once LOCK is set; #GP for SGX_LC_ENABLED without FLC.
        * IA32_SGXLEPUBKEYHASHn: #GP unless FEATURE_CONTROL has LOCK and SGX_LC_ENABLED set
          (and the part has FLC).

        Raises:
            GeneralProtection: as above, for unmodelled MSRs, or for a value above 64 bits.
        """
        if not 0 <= value <= _U64:
            raise GeneralProtection("WRMSR value does not fit in 64 bits")
        if msr == MSR_IA32_FEATURE_CONTROL:
            if self._feature_control & FEATURE_CONTROL_LOCK:
                raise GeneralProtection("IA32_FEATURE_CONTROL is locked")
            if value & FEATURE_CONTROL_SGX_LC_ENABLED and not self.config.flc:
                raise GeneralProtection("SGX_LC_ENABLED needs Flexible Launch Control")
            self._feature_control = value
            return
        if MSR_IA32_SGXLEPUBKEYHASH0 <= msr <= MSR_IA32_SGXLEPUBKEYHASH3:
            fc = self._feature_control
            if (
                not self.config.flc
                or not fc & FEATURE_CONTROL_LOCK
                or not fc & FEATURE_CONTROL_SGX_LC_ENABLED
            ):
                raise GeneralProtection(
                    "IA32_SGXLEPUBKEYHASH is writable only when IA32_FEATURE_CONTROL is locked "
                    "with SGX_LC_ENABLED"
                )
            self._lehash[msr - MSR_IA32_SGXLEPUBKEYHASH0] = value
            return
        raise GeneralProtection(f"WRMSR of unmodelled MSR 0x{msr:x}")

    @property
    def lepubkeyhash(self) -> bytes:
        """IA32_SGXLEPUBKEYHASH0..3 as the 32-byte MRSIGNER they hold (HASH0 = bytes 0..7)."""
        return b"".join(v.to_bytes(8, "little") for v in self._lehash)

    def set_lepubkeyhash(self, mrsigner: bytes) -> None:
        """Write all four hash MSRs from a 32-byte MRSIGNER (four WRMSRs, same #GP rules)."""
        if len(mrsigner) != 32:
            raise UsageError("an MRSIGNER is 32 bytes")
        for i in range(4):
            self.wrmsr(
                MSR_IA32_SGXLEPUBKEYHASH0 + i, int.from_bytes(mrsigner[8 * i : 8 * i + 8], "little")
            )

    def cpuid(self, leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
        """CPUID (EAX, EBX, ECX, EDX) for the SGX-related leaves; other leaves read as zeros.

        * (7, 0): EBX[2] = SGX, ECX[30] = SGX_LC (FLC).
        * (12H, 0): EAX[0] = SGX1, EAX[1] = SGX2 (``config.sgx2``), EBX = MISCSELECT bits allowed,
          EDX[7:0] / EDX[15:8] = log2 of the largest 32-bit / 64-bit enclave (2^31 / 2^47).
        * (12H, 1): EAX:EBX = ATTRIBUTES.FLAGS bits allowed (INIT excluded: only EINIT sets it),
          ECX:EDX = XFRM bits allowed.
        * (12H, 2): the EPC section: EAX = base[31:12] | 1, EBX = base[51:32],
          ECX = size[31:12] | 1, EDX = size[51:32].
        """
        cfg = self.config
        if leaf == 7 and subleaf == 0:
            return 0, 1 << 2, (1 << 30) if cfg.flc else 0, 0
        if leaf == 0x12 and subleaf == 0:
            edx = MAX_ENCLAVE_SIZE_LOG2_64 << 8 | MAX_ENCLAVE_SIZE_LOG2_32
            return 0x3 if cfg.sgx2 else 0x1, cfg.miscselect_allowed, 0, edx
        if leaf == 0x12 and subleaf == 1:
            flags, xfrm = cfg.allowed_flags, cfg.xfrm_allowed
            return flags & 0xFFFFFFFF, flags >> 32, xfrm & 0xFFFFFFFF, xfrm >> 32
        if leaf == 0x12 and subleaf == 2:
            base, size = self.epc_base, cfg.epc_size
            return (
                (base & 0xFFFFF000) | 1,
                (base >> 32) & 0xFFFFF,
                (size & 0xFFFFF000) | 1,
                (size >> 32) & 0xFFFFF,
            )
        return 0, 0, 0, 0

    @property
    def cpusvn(self) -> bytes:
        """CR_CPUSVN."""
        return self.config.cpusvn
