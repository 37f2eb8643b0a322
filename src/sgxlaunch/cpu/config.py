"""Configuration of an emulated processor: EPC size, CPUID-style capabilities, firmware."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sgxlaunch.arch.constants import INTEL_LE_MRSIGNER, AttributeFlag
from sgxlaunch.errors import UsageError

EPC_BASE = 0x8000_0000
"""Physical address of EPC page 0; page *i* lives at ``EPC_BASE + 4096 * i``."""

ORDINARY_BASE = 0x1000_0000
"""First physical address handed out for ordinary (non-EPC) memory regions."""

DEFAULT_EPC_SIZE = 32 * 1024 * 1024

DEFAULT_CPUSVN = bytes([0x08, 0x08, 0x02, 0x04, 0x01, 0x80, 0x00, 0x00] + [0] * 8)
"""An arbitrary fixed CPUSVN for the emulated part (16 bytes, compared component-wise)."""

Firmware = Literal["lc-enabled", "locked-hash", "unlocked"]

BASE_ALLOWED_FLAGS = (
    AttributeFlag.DEBUG
    | AttributeFlag.MODE64BIT
    | AttributeFlag.PROVISIONKEY
    | AttributeFlag.EINITTOKEN_KEY
    | AttributeFlag.AEXNOTIFY
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuConfig:
    """What the emulated part is and how its firmware left it.

    Attributes:
        epc_size: bytes of EPC (a multiple of 4096); tests use 1-4 MiB.
        epc_base: physical address of the first EPC page.
        cpusvn: the 16-byte CPUSVN (``CR_CPUSVN``).
        xfrm_allowed: XFRM bits ECREATE accepts (CPUID.(12H,1):EDX:ECX); x87|SSE|AVX|MPX.
        miscselect_allowed: MISCSELECT bits ECREATE accepts (CPUID.(12H,0):EBX).
        kss: Key Separation & Sharing supported (ATTRIBUTES.KSS allowed, KEYPOLICY KSS bits).
        flc: Flexible Launch Control supported (CPUID.(7,0):ECX[30]).
        firmware: ``"lc-enabled"`` (default: IA32_FEATURE_CONTROL locked with SGX_ENABLED and
            SGX_LC_ENABLED; hash MSRs writable, reset to ``firmware_lepubkeyhash``),
            ``"locked-hash"`` (locked with SGX_LC_ENABLED = 0: the hash MSRs are read-only and
            hold ``firmware_lepubkeyhash``) or ``"unlocked"`` (FEATURE_CONTROL not yet locked;
            software may set its bits and lock it).
        firmware_lepubkeyhash: the value firmware leaves in IA32_SGXLEPUBKEYHASH0..3 (default
            Intel's launch-enclave signer, spec §4.6).
        owner_epoch: CR_SGXOWNEREPOCH (16 bytes) mixed into every owner-dependent key.
        sgx2: the part has SGX2 (EDMM): CPUID.(12H,0):EAX[1] and the leaves ENCLS[EAUG],
            [EMODPR], [EMODT], ENCLU[EACCEPT], [EMODPE], [EACCEPTCOPY]. ``False`` (default)
            is an SGX1-only part: those leaves raise ``#GP(0)`` (SDM ENCLS/ENCLU: "EAX
            encodes an unsupported leaf") and everything else behaves as before SGX2 existed.
        native_paging: bind EWB/ELDU/ELDB to the optional native fast path
            (:mod:`sgxlaunch.cpu._paging`): ``None`` (default) when it is built, ``False``
            never (the pure-Python leaves), ``True`` required. Results are identical either
            way. The edges map an environment setting onto this flag; the core reads none.
    """

    epc_size: int = DEFAULT_EPC_SIZE
    epc_base: int = EPC_BASE
    cpusvn: bytes = DEFAULT_CPUSVN
    xfrm_allowed: int = 0x1F
    miscselect_allowed: int = 0x1
    kss: bool = False
    flc: bool = True
    firmware: Firmware = "lc-enabled"
    firmware_lepubkeyhash: bytes = INTEL_LE_MRSIGNER
    owner_epoch: bytes = bytes(16)
    sgx2: bool = False
    native_paging: bool | None = None

    def __post_init__(self) -> None:
        if self.epc_size <= 0 or self.epc_size % 4096:
            raise UsageError("epc_size must be a positive multiple of 4096")
        if self.epc_base % 4096 or self.epc_base < ORDINARY_BASE:
            raise UsageError("epc_base must be page-aligned and above ordinary memory")
        if len(self.cpusvn) != 16 or len(self.owner_epoch) != 16:
            raise UsageError("cpusvn and owner_epoch are 16 bytes each")
        if len(self.firmware_lepubkeyhash) != 32:
            raise UsageError("firmware_lepubkeyhash is 32 bytes")
        if self.xfrm_allowed & 0x3 != 0x3:
            raise UsageError("xfrm_allowed must include x87 and SSE (0x3)")
        if self.firmware not in ("lc-enabled", "locked-hash", "unlocked"):
            raise UsageError(f"unknown firmware mode {self.firmware!r}")
        if self.firmware == "lc-enabled" and not self.flc:
            raise UsageError("firmware cannot enable launch control on a part without FLC")

    @property
    def allowed_flags(self) -> int:
        """ATTRIBUTES.FLAGS bits ECREATE accepts (CPUID.(12H,1):EAX, minus INIT)."""
        return int(BASE_ALLOWED_FLAGS | (AttributeFlag.KSS if self.kss else 0))


__all__ = ["DEFAULT_EPC_SIZE", "EPC_BASE", "ORDINARY_BASE", "CpuConfig", "Firmware"]
