"""The emulated SGX processor: physical memory, EPC/EPCM, MSRs, fused secrets and the leaves.

Operands are addresses, as in registers (DESIGN "Addresses"): the EPC sits at
``config.epc_base + 4096 * i``; ordinary memory regions (where PAGEINFOs, SECINFOs, source pages,
SIGSTRUCTs and tokens live) are handed out by :meth:`Processor.allocate`. A leaf returns the
status code the SDM puts in RAX (:class:`~sgxlaunch.arch.SgxStatus`) or raises the modelled fault
(:class:`~sgxlaunch.cpu.faults.GeneralProtection`, :class:`~sgxlaunch.cpu.faults.PageFault`)
where the SDM faults.

Modelling choices the SDM leaves open (each named where it is used):

* Non-enclave reads of EPC addresses see the *abort page* (all bytes 0xFF) and non-enclave
  writes to the EPC are dropped, as on hardware.
* An ENCLS operand that must be an EPC page but lies outside the EPC raises ``#PF`` with that
  address (spec §4.2 step 1 for EINIT; applied to every leaf alike).
* The SECS micro-architectural state (running MRENCLAVE, EID, PADDING, ISVFAMILYID,
  ISVEXTPRODID, the tracking epoch) is kept by the processor beside the SECS page, keyed by
  the page; an evicted SECS takes its state along inside the processor, keyed by EID.
* CPUSVN ordering: a CPUSVN is *beyond* the platform's when any of its 16 bytes is greater than
  the platform's byte at the same position.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sgxlaunch.arch.constants import (
    ATTRIBUTE_FLAGS_RESERVED_MASK,
    CONTROLLED_ATTRIBUTES,
    FEATURE_CONTROL_LOCK,
    FEATURE_CONTROL_SGX_ENABLED,
    FEATURE_CONTROL_SGX_LC_ENABLED,
    HARDCODED_PKCS1_5_PADDING,
    MSR_IA32_FEATURE_CONTROL,
    MSR_IA32_SGXLEPUBKEYHASH0,
    MSR_IA32_SGXLEPUBKEYHASH3,
    SIGSTRUCT_EXPONENT,
    SIGSTRUCT_HEADER,
    SIGSTRUCT_HEADER2,
    TCS_FLAGS_RESERVED_MASK,
    VENDOR_INTEL,
    VENDOR_NONE,
    AttributeFlag,
    KeyName,
    PageType,
    SgxStatus,
)
from sgxlaunch.arch.structs import EinitToken, Sigstruct
from sgxlaunch.cpu.config import ORDINARY_BASE, CpuConfig
from sgxlaunch.cpu.faults import GeneralProtection, PageFault
from sgxlaunch.cpu.keys import (
    KeyDependencies,
    cmac128,
    derive_key,
    root_key_from_seed,
    seal_fuses_from_seed,
)
from sgxlaunch.cpu.machine import Machine
from sgxlaunch.errors import UsageError
from sgxlaunch.measure import TAG_EADD, TAG_ECREATE, TAG_EEXTEND
from sgxlaunch.sigstruct import expected_em

if TYPE_CHECKING:
    from sgxlaunch.cpu.enclave import EnclaveProgram

PAGE = 4096
_PAGE_MASK = PAGE - 1
_U64 = (1 << 64) - 1

_PAGEINFO = struct.Struct("<QQQQ")
_SECINFO = struct.Struct("<Q56s")
_ZERO56 = bytes(56)
_EADD_BLOCK = struct.Struct("<8sQQ40x")
_ECREATE_BLOCK = struct.Struct("<8sIQ44x")
_EEXTEND_HEADER = struct.Struct("<8sQ48x")
_U64S = struct.Struct("<Q")
_NONCE = struct.Struct("<Q4x")
_ZERO40 = bytes(40)
_ZERO_PAGE = bytes(4096)
_AAD = struct.Struct("<QQQ")  # SECINFO.FLAGS ‖ ENCLAVEID ‖ LINADDR (the MAC's header)
_PCMD_HEADER = struct.Struct("<Q56xQ40x")  # PCMD[0:112]: SECINFO.FLAGS, ENCLAVEID, zeros
_ABORT_PAGE = b"\xff" * PAGE
_PCMD = struct.Struct("<Q56sQ40s16s")  # SECINFO.FLAGS, reserved, ENCLAVEID, reserved, MAC

# Bound struct methods and statuses for the paging leaves (one global load each, no lookup).
_unpack_pageinfo = _PAGEINFO.unpack_from
_unpack_pcmd = _PCMD.unpack_from
_unpack_u64 = _U64S.unpack_from
_pack_u64_into = _U64S.pack_into
_pack_nonce = _NONCE.pack
_pack_aad = _AAD.pack
_pack_pcmd_header_into = _PCMD_HEADER.pack_into
_SUCCESS = SgxStatus.SUCCESS
_PAGE_NOT_BLOCKED = SgxStatus.PAGE_NOT_BLOCKED
_NOT_TRACKED = SgxStatus.NOT_TRACKED
_CHILD_PRESENT = SgxStatus.CHILD_PRESENT
_VA_SLOT_OCCUPIED = SgxStatus.VA_SLOT_OCCUPIED
_MAC_COMPARE_FAIL = SgxStatus.MAC_COMPARE_FAIL

_SECS_FIXED = struct.Struct("<QQIIQB15sQQ32s32s32s32s64sHHH")  # SECS bytes 0..261

_SECINFO_TYPE_SHIFT = 8
_PT_SECS = int(PageType.SECS)
_PT_TCS = int(PageType.TCS)
_PT_REG = int(PageType.REG)
_PT_VA = int(PageType.VA)
_REG_TCS = (_PT_REG, _PT_TCS)
_SECS_VA = (_PT_SECS, _PT_VA)
_STAGE_SIZE = 16 * 5184
"""Bytes of measurement records an enclave buffers before one SHA-256 update (16 pages)."""
_PERM_RWX = 0x7
_SECINFO_RESERVED = _U64 & ~(0x3F | (0xFF << 8))
_REQUIRED_SEALING_MASK = 0x3


def cpusvn_beyond(candidate: bytes, platform: bytes) -> bool:
    """True when ``candidate`` exceeds ``platform`` in any of its 16 components.

    The SDM says "beyond the current CPU configuration" without an ordering; this component-wise
    rule is the emulator's documented choice.
    """
    return any(c > p for c, p in zip(candidate, platform, strict=True))


@dataclass(frozen=True, slots=True)
class EpcmEntry:
    """A snapshot of one EPCM entry (for tests, the driver and debugging).

    Attributes:
        valid: the page is in use.
        page_type: PT_SECS / PT_TCS / PT_REG / PT_VA / PT_TRIM.
        permissions: R/W/X bits.
        blocked: EBLOCK has run on the page.
        pending: SGX2 (always False in this SGX1 model).
        modified: SGX2 (always False in this SGX1 model).
        enclave_secs: EPC address of the owning SECS (``None`` for SECS and VA pages).
        linaddr: enclave linear address of the page (0 for SECS and VA pages).
    """

    valid: bool
    page_type: PageType
    permissions: int
    blocked: bool
    pending: bool
    modified: bool
    enclave_secs: int | None
    linaddr: int


class _Enclave:
    """The processor's state for one SECS (architectural fields and micro-architectural state)."""

    __slots__ = (
        "attributes",
        "baseaddr",
        "cet_attributes",
        "children",
        "configid",
        "configsvn",
        "eid",
        "epoch",
        "initialized",
        "isvextprodid",
        "isvfamilyid",
        "isvprodid",
        "isvsvn",
        "measurement",
        "miscselect",
        "mrenclave",
        "mrsigner",
        "padding",
        "pages",
        "program",
        "secs_index",
        "size",
        "ssaframesize",
        "stage",
        "stage_pos",
        "stage_view",
        "threads",
        "tracking_threads",
        "updates",
        "xfrm",
    )

    def __init__(self) -> None:
        self.eid = 0
        self.secs_index = -1
        self.size = 0
        self.baseaddr = 0
        self.ssaframesize = 0
        self.miscselect = 0
        self.attributes = 0
        self.xfrm = 0
        self.cet_attributes = 0
        self.configid = bytes(64)
        self.configsvn = 0
        self.measurement: Any = hashlib.sha256()
        self.stage = bytearray(_STAGE_SIZE)
        self.stage_view = memoryview(self.stage)
        self.stage_pos = 0
        self.updates = 0
        self.initialized = False
        self.mrenclave = bytes(32)
        self.mrsigner = bytes(32)
        self.isvprodid = 0
        self.isvsvn = 0
        self.isvfamilyid = bytes(16)
        self.isvextprodid = bytes(16)
        self.padding = bytes(352)
        self.children = 0
        self.pages: dict[int, int] = {}
        self.epoch = 0
        self.threads = 0
        self.tracking_threads = 0
        self.program: EnclaveProgram | None = None

    def flush(self) -> None:
        """Hash the staged measurement records (SHA256UPDATE is buffered, never reordered)."""
        if self.stage_pos:
            self.measurement.update(self.stage_view[: self.stage_pos])
            self.stage_pos = 0


class _Region:
    __slots__ = ("base", "buf", "end", "view")

    def __init__(self, base: int, size: int) -> None:
        self.base = base
        self.end = base + size
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)


class Processor:
    """One emulated SGX-capable processor (one "boot").

    Args:
        config: what the part is and how firmware left it (:class:`CpuConfig`).
        seed: the platform seed (≥ 16 bytes); fused secrets derive from it, so the same seed
            rebuilds the same CPU.
        random: source of randomness, ``n -> n bytes`` (RDRAND, the per-boot paging key and
            report KEYID). Defaults to :func:`os.urandom`; tests inject a deterministic one.
        native: use the optional native fast path for the success case of EWB and ELDU/ELDB
            (:mod:`sgxlaunch.cpu._paging`, built at install time when a C compiler is present;
            the Python leaves stay the specification and handle every other case). ``None``
            (default): use it when it is built, unless the environment sets
            ``SGXLAUNCH_PURE_PYTHON=1``; ``False``: never; ``True``: require it
            (:class:`UsageError` when it is not built). Results are identical either way.
        machine: the machine holding the monotonic counter (:mod:`sgxlaunch.cpu.machine`); the
            seed and OWNEREPOCH are taken from it by whoever builds the processor.

    Public surface (all addresses are physical):

    * memory: :meth:`allocate`, :meth:`release`, :meth:`read`, :meth:`write`, :attr:`epc_base`,
      :attr:`epc_pages`, :meth:`epc_address`, :meth:`epcm`;
    * MSRs and capabilities: :meth:`rdmsr`, :meth:`wrmsr`, :attr:`lepubkeyhash`,
      :meth:`cpuid`, :attr:`cpusvn`;
    * ENCLS: :meth:`ecreate`, :meth:`eadd`, :meth:`eextend`, :meth:`eextend_page`,
      :meth:`einit`, :meth:`eremove`, :meth:`epa`, :meth:`eblock`, :meth:`etrack`, ``ewb``,
      ``eldu``, ``eldb`` (attributes bound at construction to the leaves :meth:`_ewb`,
      :meth:`_eldu`, :meth:`_eldb`, or to the native fast path in front of them),
      :meth:`edbgrd`, :meth:`edbgwr`;
    * execution: :meth:`register_program`, :meth:`eenter` (see :mod:`sgxlaunch.cpu.enclave`);
    * hooks: :meth:`pend_interrupt` (EINIT step 4), :attr:`page_fault_handler`.
    """

    def __init__(
        self,
        config: CpuConfig | None = None,
        seed: bytes = b"",
        *,
        random: Callable[[int], bytes] | None = None,
        native: bool | None = None,
        machine: Machine | None = None,
    ) -> None:
        self.config = config if config is not None else CpuConfig()
        self.machine = machine
        """The machine's non-volatile store, for the monotonic counter (an emulator extension
        reached from enclaves through :class:`~sgxlaunch.cpu.enclave.EnclaveContext`); ``None``
        on a part without one."""
        self._random = random if random is not None else os.urandom
        self._root_key = root_key_from_seed(seed)
        self._seal_fuses = seal_fuses_from_seed(seed)
        boot = self._random(32)
        self._paging = AESGCM(hashlib.sha256(b"sgxlaunch.cpu/paging/v1\x00" + boot).digest()[:16])
        self._report_keyid = hashlib.sha256(b"sgxlaunch.cpu/report-keyid/v1\x00" + boot).digest()
        # Shared with _paging.c: [0:8] the EWB version counter, [8:16] the memory-map generation
        # (bumped by allocate/release), u64 LE each.
        self._shared = bytearray(16)
        self._sealed = bytearray(PAGE + 16)
        self._sealed_view = memoryview(self._sealed)
        self._sealed_page = self._sealed_view[:PAGE]
        self._sealed_tag = self._sealed_view[PAGE:]
        self._encrypt_into = self._paging.encrypt_into
        self._decrypt_into = self._paging.decrypt_into
        self._next_eid = 1
        self._interrupt_pending = False
        self.page_fault_handler: Callable[[int, int], bool] | None = None
        """Called as ``handler(secs_address, linaddr)`` when a running program touches a page
        that is not resident; return True after making it resident (e.g. by ELDU) to retry the
        access, False to let the :class:`PageFault` end the ECALL."""

        # Physical memory.
        cfg = self.config
        self.epc_base = cfg.epc_base
        self.epc_pages = cfg.epc_size // PAGE
        self._epc_end = self.epc_base + cfg.epc_size
        self._epc = bytearray(cfg.epc_size)
        self._epc_view = memoryview(self._epc)
        self._epc_page_views = [
            self._epc_view[k * PAGE : (k + 1) * PAGE] for k in range(self.epc_pages)
        ]
        self._epc_np = np.frombuffer(self._epc, dtype=np.uint8).reshape(self.epc_pages, 16, 256)
        self._regions: dict[int, _Region] = {}
        self._page_region: dict[int, _Region] = {}  # page number → region (the "page tables")
        self._next_ordinary = ORDINARY_BASE

        # EPCM.
        n = self.epc_pages
        self._valid = bytearray(n)
        self._ptype = bytearray(n)
        self._perm = bytearray(n)
        self._blocked = bytearray(n)
        self._blocked_epoch = [0] * n
        self._linaddr = [0] * n
        self._owner: list[_Enclave | None] = [None] * n
        self._secs_state: dict[int, _Enclave] = {}
        self._evicted_secs: dict[int, _Enclave] = {}
        self.ewb: Callable[[int, int, int], SgxStatus] = self._ewb
        self.eldu: Callable[[int, int, int], SgxStatus] = self._eldu
        self.eldb: Callable[[int, int, int], SgxStatus] = self._eldb
        self._native_paging = False
        self._setup_native(native)

        # Measurement scratch: 16 × (EEXTEND header ‖ 256 bytes), filled per page by numpy.
        self._extend_scratch = np.zeros((16, 320), dtype=np.uint8)
        self._extend_scratch[:, 0:8] = np.frombuffer(TAG_EEXTEND, dtype=np.uint8)
        self._extend_offsets = self._extend_scratch.view(np.uint64)[:, 1]
        self._extend_steps = np.arange(16, dtype=np.uint64) * np.uint64(256)
        self._extend_bytes = self._extend_scratch.data.cast("B")

        # MSRs.
        self._programs: dict[bytes, Callable[[], EnclaveProgram]] = {}
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

    def _setup_native(self, native: bool | None) -> None:
        if native is None:
            native = os.environ.get("SGXLAUNCH_PURE_PYTHON", "") != "1"
            required = False
        else:
            required = native
        if not native:
            return
        try:
            from sgxlaunch.cpu._paging import PagingAccelerator
        except ImportError:
            if required:
                raise UsageError(
                    "the native paging fast path (sgxlaunch.cpu._paging) is not built: "
                    "reinstall with a C compiler and the Python headers present"
                ) from None
            return
        accel = PagingAccelerator(
            epc=self._epc,
            epc_base=self.epc_base,
            valid=self._valid,
            ptype=self._ptype,
            perm=self._perm,
            blocked=self._blocked,
            blocked_epoch=self._blocked_epoch,
            linaddr=self._linaddr,
            owner=self._owner,
            page_views=self._epc_page_views,
            page_region=self._page_region,
            secs_state=self._secs_state,
            shared=self._shared,
            sealed=self._sealed,
            encrypt_into=self._encrypt_into,
            decrypt_into=self._decrypt_into,
            invalid_tag=InvalidTag,
            success=_SUCCESS,
            enclave_type=_Enclave,
            region_type=_Region,
            python_ewb=self._ewb,
            python_eldu=self._eldu,
            python_eldb=self._eldb,
        )
        self.ewb = accel.ewb
        self.eldu = accel.eldu
        self.eldb = accel.eldb
        self._native_paging = True

    @property
    def native_paging(self) -> bool:
        """True when EWB/ELDU/ELDB take the native fast path on their success case."""
        return self._native_paging

    # ------------------------------------------------------------------------------------------
    # Physical memory
    # ------------------------------------------------------------------------------------------

    def allocate(self, size: int, *, align: int = PAGE) -> int:
        """Allocate a zero-filled ordinary (non-EPC) memory region; returns its address.

        Raises:
            UsageError: ``size`` is not positive, ``align`` is not a power of two, or ordinary
                memory (below the EPC) is exhausted.
        """
        if size <= 0 or align <= 0 or align & (align - 1):
            raise UsageError("allocate needs a positive size and a power-of-two alignment")
        base = (self._next_ordinary + align - 1) & ~(align - 1)
        if base + size > self.epc_base:
            raise UsageError("ordinary memory exhausted (it lies below the EPC)")
        region = _Region(base, size)
        # Leave an unmapped guard page after every region.
        self._next_ordinary = (base + size + 2 * PAGE - 1) & ~(PAGE - 1)
        self._regions[base] = region
        self._page_region.update(
            dict.fromkeys(range(base >> 12, (base + size + PAGE - 1) >> 12), region)
        )
        self._memory_map_changed()
        return base

    def release(self, address: int) -> None:
        """Release the ordinary region starting at ``address``."""
        region = self._regions.pop(address, None)
        if region is None:
            raise UsageError(f"no ordinary region starts at 0x{address:x}")
        for page in range(region.base >> 12, (region.end + PAGE - 1) >> 12):
            del self._page_region[page]
        self._memory_map_changed()

    def _memory_map_changed(self) -> None:
        # The native paging path caches region lookups per generation of the memory map.
        shared = self._shared
        _pack_u64_into(shared, 8, _unpack_u64(shared, 8)[0] + 1)

    def _find(self, address: int, length: int) -> _Region:
        region = self._page_region.get(address >> 12)
        if region is None or address < region.base or address + length > region.end:
            raise PageFault("no memory mapped at this address", address=address)
        return region

    def in_epc(self, address: int) -> bool:
        """True when ``address`` lies inside the EPC."""
        return self.epc_base <= address < self._epc_end

    def read(self, address: int, length: int) -> bytes:
        """A non-enclave read: ordinary memory as stored, the EPC as the abort page (0xFF).

        Raises:
            PageFault: part of the range is not mapped.
        """
        if length < 0:
            raise UsageError("negative length")
        if self.epc_base <= address < self._epc_end:
            if address + length > self._epc_end:
                raise PageFault("read runs past the EPC", address=self._epc_end)
            return b"\xff" * length
        region = self._find(address, length)
        start = address - region.base
        return bytes(region.buf[start : start + length])

    def write(self, address: int, data: bytes | bytearray | memoryview) -> None:
        """A non-enclave write: ordinary memory is written, writes to the EPC are dropped.

        Raises:
            PageFault: part of the range is not mapped.
        """
        length = len(data)
        if self.epc_base <= address < self._epc_end:
            return
        region = self._find(address, length)
        start = address - region.base
        region.buf[start : start + length] = data

    def _view(self, address: int, length: int) -> memoryview | bytes:
        """Bytes of a non-enclave operand, without copying ordinary memory."""
        if self.epc_base <= address < self._epc_end:
            return _ABORT_PAGE[:length] if length <= PAGE else b"\xff" * length
        region = self._find(address, length)
        start = address - region.base
        return memoryview(region.buf)[start : start + length]

    def epc_address(self, index: int) -> int:
        """Physical address of EPC page ``index``."""
        if not 0 <= index < self.epc_pages:
            raise UsageError(f"EPC page index {index} out of range")
        return self.epc_base + PAGE * index

    def free_epc_pages(self, count: int) -> list[int]:
        """Addresses of ``count`` free (EPCM.VALID = 0) EPC pages, lowest first.

        This is the OS's view of its free list, read from the EPCM; it changes nothing.

        Raises:
            UsageError: fewer than ``count`` pages are free.
        """
        out: list[int] = []
        start = 0
        valid = self._valid
        while len(out) < count:
            i = valid.find(0, start)
            if i < 0:
                raise UsageError(f"only {len(out)} free EPC pages, {count} needed")
            out.append(self.epc_base + PAGE * i)
            start = i + 1
        return out

    def epcm(self, address: int) -> EpcmEntry:
        """A snapshot of the EPCM entry of the EPC page holding ``address``."""
        i = self._epc_index_any(address)
        owner = self._owner[i]
        return EpcmEntry(
            valid=bool(self._valid[i]),
            page_type=PageType(self._ptype[i]),
            permissions=self._perm[i],
            blocked=bool(self._blocked[i]),
            pending=False,
            modified=False,
            enclave_secs=(
                self.epc_base + PAGE * owner.secs_index
                if owner is not None and owner.secs_index >= 0
                else None
            ),
            linaddr=self._linaddr[i],
        )

    def _epc_index_any(self, address: int) -> int:
        if not self.epc_base <= address < self._epc_end:
            raise UsageError(f"0x{address:x} is not in the EPC")
        return (address - self.epc_base) >> 12

    def _epc_page(self, address: int) -> int:
        """Index of the EPC page at the page-aligned ``address`` (#GP misaligned, #PF not EPC)."""
        if address & _PAGE_MASK:
            raise GeneralProtection(f"EPC operand 0x{address:x} is not 4 KiB aligned")
        if not self.epc_base <= address < self._epc_end:
            raise PageFault("EPC operand is not in the EPC", address=address)
        return (address - self.epc_base) >> 12

    def _secs_of(self, address: int) -> _Enclave:
        """The enclave whose SECS is at ``address`` (#PF unless a valid PT_SECS page)."""
        i = self._epc_page(address)
        if not self._valid[i] or self._ptype[i] != PageType.SECS:
            raise PageFault("operand is not a valid SECS page", address=address)
        return self._secs_state[i]

    # ------------------------------------------------------------------------------------------
    # Model-specific registers
    # ------------------------------------------------------------------------------------------

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

    # ------------------------------------------------------------------------------------------
    # Hooks
    # ------------------------------------------------------------------------------------------

    def pend_interrupt(self) -> None:
        """Make an unmasked interrupt pending; the next EINIT's event window (step 4) sees it
        and returns SGX_UNMASKED_EVENT (the interrupt is then delivered and cleared)."""
        self._interrupt_pending = True

    def cpuid(self, leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
        """CPUID (EAX, EBX, ECX, EDX) for the SGX-related leaves; other leaves read as zeros.

        * (7, 0): EBX[2] = SGX, ECX[30] = SGX_LC (FLC).
        * (12H, 0): EAX[0] = SGX1 (SGX2 not modelled), EBX = MISCSELECT bits allowed,
          EDX[15:8] = log2 of the largest 64-bit enclave (2^47 here).
        * (12H, 1): EAX:EBX = ATTRIBUTES.FLAGS bits allowed (INIT excluded: only EINIT sets it),
          ECX:EDX = XFRM bits allowed.
        * (12H, 2): the EPC section: EAX = base[31:12] | 1, EBX = base[51:32],
          ECX = size[31:12] | 1, EDX = size[51:32].
        """
        cfg = self.config
        if leaf == 7 and subleaf == 0:
            return 0, 1 << 2, (1 << 30) if cfg.flc else 0, 0
        if leaf == 0x12 and subleaf == 0:
            return 1, cfg.miscselect_allowed, 0, 47 << 8
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

    # ------------------------------------------------------------------------------------------
    # ECREATE / EADD / EEXTEND
    # ------------------------------------------------------------------------------------------

    def _read_pageinfo(self, address: int) -> tuple[int, int, int, int]:
        if address & 31:
            raise GeneralProtection(f"PAGEINFO 0x{address:x} is not 32-byte aligned")
        if self.epc_base <= address < self._epc_end:
            return _PAGEINFO.unpack(_ABORT_PAGE[:32])
        region = self._find(address, 32)
        linaddr, srcpge, secinfo, secs = _PAGEINFO.unpack_from(region.buf, address - region.base)
        return linaddr, srcpge, secinfo, secs

    def _read_secinfo(self, address: int) -> int:
        if address & 63:
            raise GeneralProtection(f"SECINFO 0x{address:x} is not 64-byte aligned")
        view = self._view(address, 64)
        flags, rest = _SECINFO.unpack_from(view)
        if flags & _SECINFO_RESERVED or rest != _ZERO56:
            raise GeneralProtection("SECINFO has reserved bits set")
        return int(flags)

    def ecreate(self, pageinfo: int, epc_page: int) -> SgxStatus:
        """ENCLS[ECREATE]: make the EPC page at ``epc_page`` a SECS from PAGEINFO's source.

        Args:
            pageinfo: address of a PAGEINFO (32-byte aligned): LINADDR = 0, SRCPGE = the SECS
                contents (4 KiB aligned), SECINFO = a SECINFO (64-byte aligned, reserved zero),
                SECS = 0.
            epc_page: the free EPC page to become the SECS.

        Checks (SDM ECREATE): operand alignment (#GP); EPC membership (#PF); PAGEINFO.LINADDR
        and .SECS zero (#GP); SECINFO reserved bits or a page type other than PT_SECS (#GP);
        the EPC page free (#PF); SECS
        reserved fields zero (#GP); SIZE ≥ 8192 and a power of two, BASEADDR aligned to SIZE
        (#GP); ATTRIBUTES: INIT clear, no reserved or unsupported FLAGS, XFRM ⊇ 0x3 and within
        the CPUID-allowed set (#GP); MISCSELECT within the allowed set (#GP); SSAFRAMESIZE ≥ 1
        (our model of "SSA frame too small", #GP); CONFIGID/CONFIGSVN zero unless KSS (#GP);
        CET fields zero (CET not modelled, #GP).

        Returns:
            SgxStatus.SUCCESS.
        """
        linaddr, srcpge, secinfo, secs_field = self._read_pageinfo(pageinfo)
        i = self._epc_page(epc_page)
        if srcpge & _PAGE_MASK or secinfo & 63:
            raise GeneralProtection("PAGEINFO.SRCPGE/SECINFO misaligned")
        if linaddr != 0 or secs_field != 0:
            raise GeneralProtection("ECREATE needs PAGEINFO.LINADDR = 0 and PAGEINFO.SECS = 0")
        if (self._read_secinfo(secinfo) >> 8) & 0xFF != _PT_SECS:
            raise GeneralProtection("ECREATE needs SECINFO.PAGE_TYPE = PT_SECS")
        src = bytes(self._view(srcpge, PAGE))
        if self._valid[i]:
            raise PageFault("ECREATE target EPC page is already valid", address=epc_page)
        (
            size,
            baseaddr,
            ssaframesize,
            miscselect,
            cet_leg_bitmap_offset,
            cet_attributes,
            reserved1,
            flags,
            xfrm,
            _mrenclave,
            reserved2,
            _mrsigner,
            reserved3,
            configid,
            _isvprodid,
            _isvsvn,
            configsvn,
        ) = _SECS_FIXED.unpack_from(src)
        cfg = self.config
        if any(reserved1) or any(reserved2) or any(reserved3) or any(src[262:]):
            raise GeneralProtection("SECS reserved fields are not zero")
        if cet_leg_bitmap_offset or cet_attributes:
            raise GeneralProtection("SECS CET fields set on a part without CET")
        if size < 8192 or size & (size - 1):
            raise GeneralProtection(f"SECS.SIZE 0x{size:x} is not a power of two ≥ 8192")
        if baseaddr & (size - 1):
            raise GeneralProtection("SECS.BASEADDR is not naturally aligned to SIZE")
        if flags & AttributeFlag.INIT:
            raise GeneralProtection("SECS.ATTRIBUTES.INIT must be 0 at ECREATE")
        if flags & ATTRIBUTE_FLAGS_RESERVED_MASK or flags & ~cfg.allowed_flags:
            raise GeneralProtection(f"SECS.ATTRIBUTES.FLAGS 0x{flags:x} not allowed by CPUID")
        if xfrm & 0x3 != 0x3 or xfrm & ~cfg.xfrm_allowed:
            raise GeneralProtection(f"SECS.ATTRIBUTES.XFRM 0x{xfrm:x} not allowed")
        if miscselect & ~cfg.miscselect_allowed:
            raise GeneralProtection(f"SECS.MISCSELECT 0x{miscselect:x} not allowed")
        if ssaframesize < 1:
            raise GeneralProtection("SECS.SSAFRAMESIZE is too small")
        if not flags & AttributeFlag.KSS and (any(configid) or configsvn):
            raise GeneralProtection("CONFIGID/CONFIGSVN need ATTRIBUTES.KSS")
        if not flags & AttributeFlag.MODE64BIT and (baseaddr + size) > (1 << 32):
            raise GeneralProtection("a 32-bit enclave must lie below 4 GiB")

        enclave = _Enclave()
        enclave.eid = self._next_eid
        self._next_eid += 1
        enclave.secs_index = i
        enclave.size = size
        enclave.baseaddr = baseaddr
        enclave.ssaframesize = ssaframesize
        enclave.miscselect = miscselect
        enclave.attributes = flags
        enclave.xfrm = xfrm
        enclave.configid = configid
        enclave.configsvn = configsvn
        _ECREATE_BLOCK.pack_into(enclave.stage, 0, TAG_ECREATE, ssaframesize, size)
        enclave.stage_pos = 64
        enclave.updates = 1
        # The architectural SECS page: ISVPRODID/ISVSVN/MRSIGNER zero, MRENCLAVE kept aside.
        page = bytearray(src)
        page[64:96] = bytes(32)
        page[128:160] = bytes(32)
        page[256:260] = bytes(4)
        self._epc[i * PAGE : (i + 1) * PAGE] = page
        self._valid[i] = 1
        self._ptype[i] = PageType.SECS
        self._perm[i] = 0
        self._blocked[i] = 0
        self._linaddr[i] = 0
        self._owner[i] = None
        self._secs_state[i] = enclave
        return SgxStatus.SUCCESS

    def eadd(self, pageinfo: int, epc_page: int) -> SgxStatus:
        """ENCLS[EADD]: copy a source page into a free EPC page of an uninitialized enclave.

        Args:
            pageinfo: address of a PAGEINFO: LINADDR (page-aligned, inside the enclave's
                range), SRCPGE (4 KiB aligned), SECINFO (64-byte aligned), SECS (the enclave).
            epc_page: the free EPC page to fill.

        Checks (SDM EADD): alignment (#GP); SECS a valid PT_SECS page (#PF); EPC page free
        (#PF); SECINFO reserved bits and page type REG or TCS (#GP); enclave not initialized
        (#GP); LINADDR inside [BASEADDR, BASEADDR + SIZE) (#GP); for TCS: reserved fields, FLAGS
        reserved bits, OSSA/OFSBASE/OGSBASE page-aligned (#GP); then STATE, CSSA, AEP cleared
        and DBGOPTIN cleared, R/W/X forced to 0. The EADD block (with the SECINFO as supplied)
        is added to MRENCLAVE.
        """
        if pageinfo & 31:
            raise GeneralProtection(f"PAGEINFO 0x{pageinfo:x} is not 32-byte aligned")
        region = self._page_region.get(pageinfo >> 12)
        if region is not None and pageinfo + 32 <= region.end:
            linaddr, srcpge, secinfo, secs_addr = _PAGEINFO.unpack_from(
                region.buf, pageinfo - region.base
            )
        else:
            linaddr, srcpge, secinfo, secs_addr = self._read_pageinfo(pageinfo)
        if epc_page & _PAGE_MASK or srcpge & _PAGE_MASK or secinfo & 63 or secs_addr & _PAGE_MASK:
            raise GeneralProtection("EADD operand misaligned")
        region = self._page_region.get(secinfo >> 12)
        if region is not None and secinfo + 64 <= region.end:
            flags, rest = _SECINFO.unpack_from(region.buf, secinfo - region.base)
            if flags & _SECINFO_RESERVED or rest != _ZERO56:
                raise GeneralProtection("SECINFO has reserved bits set")
        else:
            flags = self._read_secinfo(secinfo)
        epc_base = self.epc_base
        si = (secs_addr - epc_base) >> 12
        if 0 <= si < self.epc_pages and self._valid[si] and self._ptype[si] == _PT_SECS:
            enclave = self._secs_state[si]
        else:
            enclave = self._secs_of(secs_addr)
        i = (epc_page - epc_base) >> 12
        if not 0 <= i < self.epc_pages:
            raise PageFault("EPC operand is not in the EPC", address=epc_page)
        if self._valid[i]:
            raise PageFault("EADD target EPC page is already valid", address=epc_page)
        ptype = (flags >> 8) & 0xFF
        if ptype != _PT_REG and ptype != _PT_TCS:
            raise GeneralProtection(f"EADD page type {ptype} is not REG or TCS")
        if enclave.initialized:
            raise GeneralProtection("EADD to an initialized enclave")
        offset = linaddr - enclave.baseaddr
        if linaddr & _PAGE_MASK or not 0 <= offset < enclave.size:
            raise GeneralProtection(f"EADD LINADDR 0x{linaddr:x} outside the enclave")
        if epc_base <= srcpge < self._epc_end:
            src: memoryview | bytes = _ABORT_PAGE
        else:
            sregion = self._find(srcpge, PAGE)
            start = srcpge - sregion.base
            src = sregion.view[start : start + PAGE]
        base = i * PAGE
        if ptype == _PT_TCS:
            self._epc[base : base + PAGE] = self._checked_tcs(src)
            self._perm[i] = 0
        else:
            self._epc_view[base : base + PAGE] = src
            self._perm[i] = flags & _PERM_RWX
        self._valid[i] = 1
        self._ptype[i] = ptype
        self._blocked[i] = 0
        self._linaddr[i] = linaddr
        self._owner[i] = enclave
        enclave.children += 1
        enclave.pages[linaddr] = i
        pos = enclave.stage_pos
        if pos + 64 > _STAGE_SIZE:
            enclave.flush()
            pos = 0
        _EADD_BLOCK.pack_into(enclave.stage, pos, TAG_EADD, offset, flags)
        enclave.stage_pos = pos + 64
        enclave.updates += 1
        return SgxStatus.SUCCESS

    @staticmethod
    def _checked_tcs(src: memoryview | bytes) -> bytearray:
        """EADD's TCS checks (#GP) and the fields it clears."""
        tcs = bytearray(src)
        tcs_flags, ossa = struct.unpack_from("<QQ", tcs, 8)
        ofsbase, ogsbase = struct.unpack_from("<QQ", tcs, 48)
        if tcs_flags & TCS_FLAGS_RESERVED_MASK or any(tcs[72:]):
            raise GeneralProtection("TCS reserved fields are set")
        if (ossa | ofsbase | ogsbase) & _PAGE_MASK:
            raise GeneralProtection("TCS OSSA/OFSBASE/OGSBASE are not page-aligned")
        struct.pack_into("<QQ", tcs, 0, 0, tcs_flags & ~1)  # STATE := 0, DBGOPTIN := 0
        struct.pack_into("<I", tcs, 24, 0)  # CSSA := 0
        struct.pack_into("<Q", tcs, 40, 0)  # AEP := 0
        return tcs

    def _extend_target(self, secs_addr: int, address: int, align: int) -> tuple[_Enclave, int]:
        if address & (align - 1) or secs_addr & _PAGE_MASK:
            raise GeneralProtection(f"EEXTEND operand 0x{address:x} misaligned")
        i = (address - self.epc_base) >> 12
        if not 0 <= i < self.epc_pages:
            raise PageFault("EEXTEND address is not in the EPC", address=address)
        ptype = self._ptype[i]
        if not self._valid[i] or (ptype != _PT_REG and ptype != _PT_TCS):
            raise PageFault("EEXTEND page is not a valid REG or TCS page", address=address)
        si = (secs_addr - self.epc_base) >> 12
        if 0 <= si < self.epc_pages and self._valid[si] and self._ptype[si] == _PT_SECS:
            enclave = self._secs_state[si]
        else:
            enclave = self._secs_of(secs_addr)
        if self._owner[i] is not enclave:
            raise GeneralProtection("EEXTEND page does not belong to this SECS")
        if enclave.initialized:
            raise GeneralProtection("EEXTEND on an initialized enclave")
        return enclave, i

    def eextend(self, secs: int, address: int) -> SgxStatus:
        """ENCLS[EEXTEND]: measure the 256 bytes at EPC ``address`` into the enclave's MRENCLAVE.

        Checks (SDM EEXTEND): ``address`` 256-byte aligned (#GP); in the EPC (#PF); a valid
        PT_REG or PT_TCS page (#PF) of the enclave whose SECS is ``secs`` (#GP); the enclave not
        initialized (#GP). Adds the EEXTEND header (enclave offset) and the 256 bytes.
        """
        enclave, i = self._extend_target(secs, address, 256)
        offset = self._linaddr[i] - enclave.baseaddr + (address & _PAGE_MASK)
        pos = enclave.stage_pos
        if pos + 320 > _STAGE_SIZE:
            enclave.flush()
            pos = 0
        _EEXTEND_HEADER.pack_into(enclave.stage, pos, TAG_EEXTEND, offset)
        start = address - self.epc_base
        enclave.stage_view[pos + 64 : pos + 320] = self._epc_view[start : start + 256]
        enclave.stage_pos = pos + 320
        enclave.updates += 5
        return SgxStatus.SUCCESS

    def eextend_page(self, secs: int, epc_page: int) -> SgxStatus:
        """Sixteen EEXTENDs over the whole page at ``epc_page`` in one call.

        Identical in checks and effect to ``eextend(secs, epc_page + 256 * k)`` for
        ``k = 0..15`` (the page must be 4 KiB aligned); the 16 header+chunk records are
        assembled in one vectorised step.
        """
        i = (epc_page - self.epc_base) >> 12
        si = (secs - self.epc_base) >> 12
        if (
            epc_page & _PAGE_MASK
            or secs & _PAGE_MASK
            or not 0 <= i < self.epc_pages
            or not 0 <= si < self.epc_pages
            or not self._valid[i]
            or (self._ptype[i] != _PT_REG and self._ptype[i] != _PT_TCS)
            or self._owner[i] is not self._secs_state.get(si)
            or not self._valid[si]
            or self._ptype[si] != _PT_SECS
        ):
            # Slow path: find and raise the fault the SDM raises.
            self._extend_target(secs, epc_page, PAGE)
        enclave = self._secs_state[si]
        if enclave.initialized:
            raise GeneralProtection("EEXTEND on an initialized enclave")
        scratch = self._extend_scratch
        scratch[:, 64:] = self._epc_np[i]
        np.add(self._extend_steps, self._linaddr[i] - enclave.baseaddr, out=self._extend_offsets)
        pos = enclave.stage_pos
        if pos + 5120 > _STAGE_SIZE:
            enclave.flush()
            pos = 0
        enclave.stage_view[pos : pos + 5120] = self._extend_bytes
        enclave.stage_pos = pos + 5120
        enclave.updates += 80
        return SgxStatus.SUCCESS

    # ------------------------------------------------------------------------------------------
    # EINIT
    # ------------------------------------------------------------------------------------------

    def _launch_key(self, token: EinitToken) -> bytes:
        """TMP_EINITTOKENKEY (SDM EINIT; spec §4.3), under the *current* MSR value."""
        return derive_key(
            self._root_key,
            KeyDependencies(
                keyname=KeyName.EINITTOKEN,
                isvprodid=token.isvprodidle,
                isvsvn=token.isvsvnle,
                sgxownerepoch=self.config.owner_epoch,
                attributes_flags=token.maskedattributesle.flags,
                attributes_xfrm=token.maskedattributesle.xfrm,
                mrsigner=self.lepubkeyhash,
                keyid=token.keyid,
                seal_key_fuses=self._seal_fuses,
                cpusvn=token.cpusvnle,
                miscselect=token.maskedmiscselectle,
                padding=HARDCODED_PKCS1_5_PADDING,
                cet_attributes=token.cet_masked_attributes_le,
            ),
        )

    @staticmethod
    def _signature_em(sig: Sigstruct) -> bytes | None:
        """EM = S³ mod M through Q1 and Q2 as hardware computes it; None if Q1/Q2 inconsistent."""
        n = sig.modulus_int
        s = sig.signature_int
        if n == 0:
            return None
        q1 = int.from_bytes(sig.q1, "little")
        q2 = int.from_bytes(sig.q2, "little")
        r1 = s * s - q1 * n
        if not 0 <= r1 < n:
            return None
        r2 = r1 * s - q2 * n
        if not 0 <= r2 < n:
            return None
        return r2.to_bytes(384, "big")

    def einit(self, sigstruct: int, secs: int, einittoken: int) -> SgxStatus:
        """ENCLS[EINIT]: verify the SIGSTRUCT and EINITTOKEN and initialize the enclave.

        Args:
            sigstruct: address of the SIGSTRUCT (RBX, 4 KiB aligned, ordinary memory).
            secs: address of the SECS (RCX, 4 KiB aligned, EPC).
            einittoken: address of the EINITTOKEN (RDX, 512-byte aligned, ordinary memory).

        Steps, in the order of the SDM (December 2023) as collected in spec §4.2:

        1. RBX/RCX not 4 KiB aligned or RDX not 512-byte aligned → #GP; RCX outside the EPC →
           #PF(RCX). (step 1)
        2. Copy SIGSTRUCT (1808 B) and EINITTOKEN (304 B). (step 2)
        3. HEADER (all 16 bytes), VENDOR ∈ {0, 0x8086}, HEADER2, EXPONENT = 3, every reserved
           range zero (CET fields count as reserved: CET is not modelled) →
           SGX_INVALID_SIG_STRUCT. The SDK's typed header (bytes 12..15 ≠ 0) fails here.
           (step 3)
        4. Event window: an interrupt pending (:meth:`pend_interrupt`) → SGX_UNMASKED_EVENT;
           then EM = S³ mod M through Q1, Q2 (``S² − Q1·M`` and ``(S² − Q1·M)·S − Q2·M`` must lie
           in [0, M), else the quotients are inconsistent) compared with the PKCS#1 v1.5
           SHA-256 encoding of the signed bytes → SGX_INVALID_SIGNATURE; the top 352 bytes of
           EM are kept as TMP_SIG_PADDING. (step 4)
        5. EPCM(RCX) not a valid PT_SECS page → #PF(RCX). (step 5)
        6. ISVFAMILYID ≠ 0 and SECS.ATTRIBUTES.KSS = 0 → SGX_INVALID_SIG_STRUCT. (step 6)
        7. Enclave already initialized → #GP. (step 7)
        8. TMP_MRENCLAVE := SHA256FINAL(SECS.MRENCLAVE); ≠ ENCLAVEHASH →
           SGX_INVALID_MEASUREMENT. (step 8)
        9. TMP_MRSIGNER := SHA-256(MODULUS). (step 9)
        10. SECS.ATTRIBUTES.EINITTOKEN_KEY set and TMP_MRSIGNER ≠ IA32_SGXLEPUBKEYHASH →
            SGX_INVALID_ATTRIBUTE. (step 10)
        11. (SECS.ATTRIBUTES ∧ ATTRIBUTEMASK) ≠ (SIGSTRUCT.ATTRIBUTES ∧ ATTRIBUTEMASK), 128 bits
            → SGX_INVALID_ATTRIBUTE. (step 11; the 2018 "reserved mask bits set" rule is not
            enforced)
        12. (SECS.MISCSELECT ∧ MISCMASK) ≠ (SIGSTRUCT.MISCSELECT ∧ MISCMASK) →
            SGX_INVALID_ATTRIBUTE. (step 12)
        13. CET attribute check: skipped, the part has no CET (CPUID.(12H,1):EAX[6] = 0).
            (step 13)
        14. Token VALID bit 0 clear: TMP_MRSIGNER ≠ IA32_SGXLEPUBKEYHASH →
            SGX_INVALID_EINITTOKEN, else go to commit. (step 14)
        15. Token MASKEDATTRIBUTESLE.DEBUG set and SECS.ATTRIBUTES.DEBUG clear →
            SGX_INVALID_EINITTOKEN. (step 15)
        16. Token reserved ranges or VALID bits 31:1 not zero → SGX_INVALID_EINITTOKEN.
            (step 16)
        17. Token CPUSVNLE beyond CR_CPUSVN → SGX_INVALID_CPUSVN. (step 17)
        18. Launch key derived under the current IA32_SGXLEPUBKEYHASH; token MAC ≠
            CMAC(key, token[0:192]) → SGX_INVALID_EINITTOKEN. (step 18)
        19. Token MRENCLAVE ≠ TMP_MRENCLAVE or MRSIGNER ≠ TMP_MRSIGNER →
            SGX_INVALID_MEASUREMENT. (step 19)
        20. Token ATTRIBUTES ≠ SECS.ATTRIBUTES → SGX_INVALID_ATTRIBUTE. (step 20)
        21. Commit: MRENCLAVE, MRSIGNER, ISVPRODID, ISVSVN, ISVFAMILYID, ISVEXTPRODID, PADDING
            into the SECS; ATTRIBUTES.INIT set. (step 21)

        Returns:
            The status code; SGX_SUCCESS after the commit.

        Raises:
            GeneralProtection: steps 1 and 7.
            PageFault: steps 1 and 5.
        """
        # Step 1.
        if sigstruct & _PAGE_MASK or secs & _PAGE_MASK or einittoken & 511:
            raise GeneralProtection("EINIT operand misaligned")
        if not self.epc_base <= secs < self._epc_end:
            raise PageFault("EINIT SECS operand is not in the EPC", address=secs)
        # Step 2.
        sig = Sigstruct.from_bytes_raw(self.read(sigstruct, Sigstruct.SIZE))
        token = EinitToken.from_bytes_raw(self.read(einittoken, EinitToken.SIZE))
        # Step 3.
        if (
            sig.header != SIGSTRUCT_HEADER
            or sig.vendor not in (VENDOR_NONE, VENDOR_INTEL)
            or sig.header2 != SIGSTRUCT_HEADER2
            or sig.exponent != SIGSTRUCT_EXPONENT
            or sig.nonzero_reserved() is not None
            or sig.cet_attributes
            or sig.cet_attributes_mask
        ):
            return SgxStatus.INVALID_SIG_STRUCT
        # Step 4.
        if self._interrupt_pending:
            self._interrupt_pending = False
            return SgxStatus.UNMASKED_EVENT
        em = self._signature_em(sig)
        if em is None or not hmac.compare_digest(em, expected_em(sig.signed_bytes())):
            return SgxStatus.INVALID_SIGNATURE
        sig_padding = em[:352]
        # Step 5.
        i = (secs - self.epc_base) >> 12
        if not self._valid[i] or self._ptype[i] != PageType.SECS:
            raise PageFault("EINIT SECS operand is not a valid SECS page", address=secs)
        enclave = self._secs_state[i]
        # Step 6.
        if any(sig.isvfamilyid) and not enclave.attributes & AttributeFlag.KSS:
            return SgxStatus.INVALID_SIG_STRUCT
        # Step 7.
        if enclave.initialized:
            raise GeneralProtection("EINIT on an initialized enclave")
        # Step 8.
        enclave.flush()
        mrenclave = enclave.measurement.copy().digest()
        if not hmac.compare_digest(mrenclave, sig.enclavehash):
            return SgxStatus.INVALID_MEASUREMENT
        # Step 9.
        mrsigner = hashlib.sha256(sig.modulus).digest()
        lehash = self.lepubkeyhash
        # Step 10.
        if enclave.attributes & CONTROLLED_ATTRIBUTES and not hmac.compare_digest(mrsigner, lehash):
            return SgxStatus.INVALID_ATTRIBUTE
        # Step 11.
        mask = sig.attributemask
        if (enclave.attributes & mask.flags) != (sig.attributes.flags & mask.flags) or (
            enclave.xfrm & mask.xfrm
        ) != (sig.attributes.xfrm & mask.xfrm):
            return SgxStatus.INVALID_ATTRIBUTE
        # Step 12.
        if (enclave.miscselect & sig.miscmask) != (sig.miscselect & sig.miscmask):
            return SgxStatus.INVALID_ATTRIBUTE
        # Step 13: no CET on this part.
        if token.valid & 1:
            # Step 15.
            if token.maskedattributesle.flags & AttributeFlag.DEBUG and not (
                enclave.attributes & AttributeFlag.DEBUG
            ):
                return SgxStatus.INVALID_EINITTOKEN
            # Step 16.
            if token.valid != 1 or token.nonzero_reserved() is not None:
                return SgxStatus.INVALID_EINITTOKEN
            # Step 17.
            if cpusvn_beyond(token.cpusvnle, self.config.cpusvn):
                return SgxStatus.INVALID_CPUSVN
            # Step 18.
            key = self._launch_key(token)
            if not hmac.compare_digest(token.mac, cmac128(key, token.maced_bytes())):
                return SgxStatus.INVALID_EINITTOKEN
            # Step 19.
            if not hmac.compare_digest(token.mrenclave, mrenclave) or not hmac.compare_digest(
                token.mrsigner, mrsigner
            ):
                return SgxStatus.INVALID_MEASUREMENT
            # Step 20.
            if token.attributes.flags != enclave.attributes or token.attributes.xfrm != (
                enclave.xfrm
            ):
                return SgxStatus.INVALID_ATTRIBUTE
        # Step 14.
        elif not hmac.compare_digest(mrsigner, lehash):
            return SgxStatus.INVALID_EINITTOKEN
        # Step 21: commit.
        enclave.mrenclave = mrenclave
        enclave.mrsigner = mrsigner
        enclave.isvprodid = sig.isvprodid
        enclave.isvsvn = sig.isvsvn
        enclave.isvfamilyid = sig.isvfamilyid
        enclave.isvextprodid = sig.isvextprodid
        enclave.padding = sig_padding
        enclave.attributes |= AttributeFlag.INIT
        enclave.initialized = True
        base = i * PAGE
        self._epc[base + 48 : base + 56] = enclave.attributes.to_bytes(8, "little")
        self._epc[base + 64 : base + 96] = mrenclave
        self._epc[base + 128 : base + 160] = mrsigner
        self._epc[base + 256 : base + 260] = struct.pack("<HH", sig.isvprodid, sig.isvsvn)
        return SgxStatus.SUCCESS

    # ------------------------------------------------------------------------------------------
    # Inspection for software that owns the enclave (the driver) and for tests
    # ------------------------------------------------------------------------------------------

    def secs_info(self, secs: int) -> dict[str, Any]:
        """What the SECS at ``secs`` holds (the driver reads these back after EINIT)."""
        enclave = self._secs_of(secs)
        return {
            "eid": enclave.eid,
            "size": enclave.size,
            "baseaddr": enclave.baseaddr,
            "ssaframesize": enclave.ssaframesize,
            "miscselect": enclave.miscselect,
            "attributes_flags": enclave.attributes,
            "attributes_xfrm": enclave.xfrm,
            "initialized": enclave.initialized,
            "mrenclave": enclave.mrenclave,
            "mrsigner": enclave.mrsigner,
            "isvprodid": enclave.isvprodid,
            "isvsvn": enclave.isvsvn,
            "children": enclave.children,
        }

    # ------------------------------------------------------------------------------------------
    # EREMOVE / EPA / EBLOCK / ETRACK / EWB / ELDU / ELDB
    # ------------------------------------------------------------------------------------------

    def eremove(self, epc_page: int) -> SgxStatus:
        """ENCLS[EREMOVE]: free an EPC page.

        Checks (SDM EREMOVE): alignment (#GP), EPC membership (#PF); an invalid page is
        already free (SUCCESS); a SECS with children → SGX_CHILD_PRESENT; a page of an enclave
        with a logical processor inside → SGX_ENCLAVE_ACT.
        """
        i = self._epc_page(epc_page)
        if not self._valid[i]:
            return SgxStatus.SUCCESS
        ptype = self._ptype[i]
        if ptype == PageType.SECS:
            enclave = self._secs_state[i]
            if enclave.children:
                return SgxStatus.CHILD_PRESENT
            if enclave.threads:
                return SgxStatus.ENCLAVE_ACT
            del self._secs_state[i]
            enclave.secs_index = -1
        elif ptype != PageType.VA:
            owner = self._owner[i]
            if owner is not None:
                if owner.threads:
                    return SgxStatus.ENCLAVE_ACT
                owner.children -= 1
                if owner.pages.get(self._linaddr[i]) == i:
                    del owner.pages[self._linaddr[i]]
        self._clear_epcm(i)
        return SgxStatus.SUCCESS

    def _clear_epcm(self, i: int) -> None:
        self._valid[i] = 0
        self._ptype[i] = 0
        self._perm[i] = 0
        self._blocked[i] = 0
        self._linaddr[i] = 0
        self._owner[i] = None

    def epa(self, epc_page: int) -> SgxStatus:
        """ENCLS[EPA]: make a free EPC page a Version Array (512 zero slots of 8 bytes).

        Checks: alignment (#GP), EPC membership (#PF), the page free (#PF).
        """
        i = self._epc_page(epc_page)
        if self._valid[i]:
            raise PageFault("EPA target EPC page is already valid", address=epc_page)
        self._epc[i * PAGE : (i + 1) * PAGE] = bytes(PAGE)
        self._valid[i] = 1
        self._ptype[i] = PageType.VA
        self._perm[i] = 0
        self._blocked[i] = 0
        self._linaddr[i] = 0
        self._owner[i] = None
        return SgxStatus.SUCCESS

    def eblock(self, epc_page: int) -> SgxStatus:
        """ENCLS[EBLOCK]: mark a page blocked (no new TLB mappings) in the current epoch.

        Checks (SDM EBLOCK, status codes in this order): page not valid → SGX_PG_INVLD;
        PT_SECS → SGX_PG_IS_SECS; PT_VA/PT_TRIM → SGX_NOTBLOCKABLE; already blocked →
        SGX_BLKSTATE.
        """
        i = self._epc_page(epc_page)
        if not self._valid[i]:
            return SgxStatus.PG_INVLD
        ptype = self._ptype[i]
        if ptype == PageType.SECS:
            return SgxStatus.PG_IS_SECS
        if ptype != PageType.REG and ptype != PageType.TCS:
            return SgxStatus.NOTBLOCKABLE
        if self._blocked[i]:
            return SgxStatus.BLKSTATE
        owner = self._owner[i]
        assert owner is not None
        self._blocked[i] = 1
        self._blocked_epoch[i] = owner.epoch
        return SgxStatus.SUCCESS

    def etrack(self, secs: int) -> SgxStatus:
        """ENCLS[ETRACK]: start a new tracking epoch for the enclave.

        Model: the epoch advances; logical processors inside the enclave at this moment must
        exit before the next ETRACK (else SGX_PREV_TRK_INCMPL) and before EWB of a page blocked
        in an earlier epoch (else SGX_NOT_TRACKED). ECALLs here run to completion, so a thread
        is "inside" only while an ENCLS leaf is called from within a running program.
        """
        enclave = self._secs_of(secs)
        if enclave.tracking_threads:
            return SgxStatus.PREV_TRK_INCMPL
        enclave.epoch += 1
        enclave.tracking_threads = enclave.threads
        return SgxStatus.SUCCESS

    def _ewb(self, pageinfo: int, epc_page: int, va_slot: int) -> SgxStatus:
        """ENCLS[EWB]: evict an EPC page to ordinary memory, encrypted and MACed.

        Called as ``proc.ewb(...)``: the attribute is this leaf, or the native fast path, which
        runs this leaf for everything but the success case (see :class:`Processor`, ``native``).

        Args:
            pageinfo: PAGEINFO with SRCPGE = 4 KiB destination for the encrypted contents and
                SECINFO = 128-byte aligned destination of the PCMD; LINADDR and SECS must be 0.
            epc_page: the page to evict.
            va_slot: an empty 8-byte slot in a VA page (EPA) to receive the version.

        Checks (SDM EWB): alignment (#GP), EPC membership and a valid EPC page / VA page (#PF),
        PAGEINFO.LINADDR/SECS zero (#GP); a SECS with children → SGX_CHILD_PRESENT; a REG/TCS
        page not blocked → SGX_PAGE_NOT_BLOCKED; not tracked since it was blocked (an ETRACK
        after the EBLOCK, and every thread of the previous epoch gone) → SGX_NOT_TRACKED; VA
        slot non-zero → SGX_VA_SLOT_OCCUPIED.

        Crypto (our documented construction; the SDM's is not public): a fresh 64-bit version
        from a per-boot counter goes into the VA slot; the page is sealed with AES-128-GCM under
        a per-boot paging key, nonce = version (u64 LE) ‖ 4 zero bytes, associated data =
        SECINFO.FLAGS (the EPCM type and R/W/X) ‖ ENCLAVEID (the enclave's EID) ‖ LINADDR, u64
        LE each (the PCMD's reserved bytes are zero by construction and checked on load); the
        16-byte tag is PCMD.MAC.
        """
        if pageinfo & 31:
            raise GeneralProtection(f"PAGEINFO 0x{pageinfo:x} is not 32-byte aligned")
        page_region = self._page_region
        region = page_region.get(pageinfo >> 12)
        if region is not None and pageinfo + 32 <= region.end:
            linaddr_in, dest, pcmd, secs_field = _unpack_pageinfo(
                region.buf, pageinfo - region.base
            )
        else:
            linaddr_in, dest, pcmd, secs_field = self._read_pageinfo(pageinfo)
        if (dest | epc_page) & _PAGE_MASK or pcmd & 127 or va_slot & 7:
            raise GeneralProtection("EWB operand misaligned")
        if linaddr_in or secs_field:
            raise GeneralProtection("EWB needs PAGEINFO.LINADDR = 0 and PAGEINFO.SECS = 0")
        epc_base = self.epc_base
        n = self.epc_pages
        valid = self._valid
        ptypes = self._ptype
        i = (epc_page - epc_base) >> 12
        if not 0 <= i < n:
            raise PageFault("EWB page is not in the EPC", address=epc_page)
        if not valid[i]:
            raise PageFault("EWB page is not valid", address=epc_page)
        va_off = va_slot - epc_base
        v = va_off >> 12
        if not 0 <= v < n or not valid[v] or ptypes[v] != _PT_VA:
            raise PageFault("VA slot is not in a valid VA page", address=va_slot)
        if v == i:
            raise GeneralProtection("EWB VA slot lies in the page being evicted")
        ptype = ptypes[i]
        owner = self._owner[i]
        if ptype in _REG_TCS:
            assert owner is not None
            if not self._blocked[i]:
                return _PAGE_NOT_BLOCKED
            if owner.epoch <= self._blocked_epoch[i] or owner.tracking_threads:
                return _NOT_TRACKED
            eid = owner.eid
        elif ptype == _PT_SECS:
            enclave = self._secs_state[i]
            if enclave.children:
                return _CHILD_PRESENT
            eid = enclave.eid
        else:
            eid = 0
        epc = self._epc
        if _unpack_u64(epc, va_off)[0]:
            return _VA_SLOT_OCCUPIED
        dest_region = page_region.get(dest >> 12)
        if dest_region is None or dest + PAGE > dest_region.end:
            dest_region = self._find(dest, PAGE)  # raises the #PF
        pcmd_region = page_region.get(pcmd >> 12)
        if pcmd_region is None or pcmd + 128 > pcmd_region.end:
            pcmd_region = self._find(pcmd, 128)
        shared = self._shared
        version = _unpack_u64(shared, 0)[0] + 1
        _pack_u64_into(shared, 0, version)
        linaddr = self._linaddr[i]
        flags = (ptype << 8) | self._perm[i]
        self._encrypt_into(
            _pack_nonce(version),
            self._epc_page_views[i],
            _pack_aad(flags, eid, linaddr),
            self._sealed,
        )
        d = dest - dest_region.base
        dest_region.view[d : d + PAGE] = self._sealed_page
        p = pcmd - pcmd_region.base
        _pack_pcmd_header_into(pcmd_region.buf, p, flags, eid)
        pcmd_region.view[p + 112 : p + 128] = self._sealed_tag
        _pack_u64_into(epc, va_off, version)
        # The page leaves the EPC.
        if owner is not None:
            owner.children -= 1
            pages = owner.pages
            if pages.get(linaddr) == i:
                del pages[linaddr]
        elif ptype == _PT_SECS:
            enclave = self._secs_state.pop(i)
            enclave.secs_index = -1
            self._evicted_secs[enclave.eid] = enclave
        valid[i] = 0
        ptypes[i] = 0
        self._perm[i] = 0
        self._blocked[i] = 0
        self._linaddr[i] = 0
        self._owner[i] = None
        return _SUCCESS

    def _eldu(self, pageinfo: int, epc_page: int, va_slot: int) -> SgxStatus:
        """ENCLS[ELDU] (``proc.eldu``): reload an evicted page, unblocked. See :meth:`_eld`."""
        return self._eld(pageinfo, epc_page, va_slot, False)

    def _eldb(self, pageinfo: int, epc_page: int, va_slot: int) -> SgxStatus:
        """ENCLS[ELDB] (``proc.eldb``): reload an evicted page, blocked. See :meth:`_eld`."""
        return self._eld(pageinfo, epc_page, va_slot, True)

    def _eld(self, pageinfo: int, epc_page: int, va_slot: int, blocked: bool) -> SgxStatus:
        """ELDU/ELDB.

        Args:
            pageinfo: PAGEINFO with LINADDR (the page's enclave address; 0 for SECS/VA),
                SRCPGE (the encrypted contents), SECINFO (the PCMD, 128-byte aligned) and SECS
                (the enclave's SECS; 0 for a SECS or VA page).
            epc_page: a free EPC page to load into.
            va_slot: the VA slot EWB filled.

        Checks (SDM ELDU/ELDB): alignment (#GP); EPC membership, free target, valid VA page and
        (for REG/TCS) a valid SECS (#PF); PCMD reserved fields and SECINFO page type (#GP);
        for REG/TCS: LINADDR inside the enclave (#GP); then the MAC, over the contents, the
        PCMD's SECINFO, the enclave's EID (from the SECS; PCMD.ENCLAVEID must equal it),
        LINADDR and the version in the VA slot → SGX_MAC_COMPARE_FAIL. So a replayed older
        copy (its version is gone), the wrong VA slot, another enclave, another address or
        any altered PCMD/content byte is refused. On success the VA slot is cleared.
        """
        if pageinfo & 31:
            raise GeneralProtection(f"PAGEINFO 0x{pageinfo:x} is not 32-byte aligned")
        page_region = self._page_region
        region = page_region.get(pageinfo >> 12)
        if region is not None and pageinfo + 32 <= region.end:
            linaddr, src, pcmd, secs_addr = _unpack_pageinfo(region.buf, pageinfo - region.base)
        else:
            linaddr, src, pcmd, secs_addr = self._read_pageinfo(pageinfo)
        if (src | secs_addr | epc_page) & _PAGE_MASK or pcmd & 127 or va_slot & 7:
            raise GeneralProtection("ELDU/ELDB operand misaligned")
        epc_base = self.epc_base
        epc_end = self._epc_end
        n = self.epc_pages
        valid = self._valid
        i = (epc_page - epc_base) >> 12
        if not 0 <= i < n:
            raise PageFault("ELDU/ELDB target is not in the EPC", address=epc_page)
        if valid[i]:
            raise PageFault("ELDU/ELDB target EPC page is already valid", address=epc_page)
        va_off = va_slot - epc_base
        v = va_off >> 12
        if not 0 <= v < n or not valid[v] or self._ptype[v] != _PT_VA:
            raise PageFault("VA slot is not in a valid VA page", address=va_slot)
        if epc_base <= pcmd < epc_end:
            head = _unpack_pcmd(_ABORT_PAGE)
        else:
            pcmd_region = page_region.get(pcmd >> 12)
            if pcmd_region is None or pcmd + 128 > pcmd_region.end:
                pcmd_region = self._find(pcmd, 128)
            head = _unpack_pcmd(pcmd_region.buf, pcmd - pcmd_region.base)
        flags, sec_rest, pcmd_eid, pcmd_rest, tag = head
        if flags & _SECINFO_RESERVED or sec_rest != _ZERO56 or pcmd_rest != _ZERO40:
            raise GeneralProtection("PCMD reserved fields are set")
        ptype = (flags >> 8) & 0xFF
        enclave: _Enclave | None = None
        if ptype in _REG_TCS:
            # _secs_state holds exactly the valid PT_SECS pages; anything else takes the #PF.
            enclave = self._secs_state.get((secs_addr - epc_base) >> 12)
            if enclave is None:
                enclave = self._secs_of(secs_addr)
            eid = enclave.eid
            if linaddr & _PAGE_MASK or not 0 <= linaddr - enclave.baseaddr < enclave.size:
                raise GeneralProtection("ELDU LINADDR outside the enclave")
            if pcmd_eid != eid:
                # PCMD.ENCLAVEID is covered by the MAC (the AAD holds the SECS's EID).
                return _MAC_COMPARE_FAIL
        elif ptype in _SECS_VA:
            if secs_addr or linaddr:
                raise GeneralProtection("ELDU of a SECS/VA page needs LINADDR = SECS = 0")
            eid = pcmd_eid  # bound by the MAC (EWB wrote the SECS's EID, or 0 for a VA page)
        else:
            raise GeneralProtection(f"PCMD page type {ptype} cannot be loaded")
        epc = self._epc
        (version,) = _unpack_u64(epc, va_off)
        sealed = self._sealed
        if epc_base <= src < epc_end:
            sealed[:PAGE] = _ABORT_PAGE
        else:
            src_region = page_region.get(src >> 12)
            if src_region is None or src + PAGE > src_region.end:
                src_region = self._find(src, PAGE)
            o = src - src_region.base
            self._sealed_page[:] = src_region.view[o : o + PAGE]
        self._sealed_tag[:] = tag
        target = self._epc_page_views[i]
        try:
            self._decrypt_into(_pack_nonce(version), sealed, _pack_aad(flags, eid, linaddr), target)
        except InvalidTag:
            target[:] = _ZERO_PAGE
            return _MAC_COMPARE_FAIL
        if ptype == _PT_SECS and eid not in self._evicted_secs:  # pragma: no cover
            return _MAC_COMPARE_FAIL  # a MAC-valid SECS always has its state
        _pack_u64_into(epc, va_off, 0)
        valid[i] = 1
        self._ptype[i] = ptype
        self._perm[i] = flags & _PERM_RWX
        self._linaddr[i] = linaddr
        self._owner[i] = enclave
        if enclave is not None:
            self._blocked[i] = blocked
            enclave.children += 1
            enclave.pages[linaddr] = i
            self._blocked_epoch[i] = enclave.epoch
        else:
            self._blocked[i] = 0
            if ptype == _PT_SECS:
                state = self._evicted_secs.pop(eid)
                state.secs_index = i
                self._secs_state[i] = state
        return _SUCCESS

    # ------------------------------------------------------------------------------------------
    # EDBGRD / EDBGWR
    # ------------------------------------------------------------------------------------------

    def _debug_target(self, address: int) -> tuple[SgxStatus, int]:
        if address & 7:
            raise GeneralProtection("EDBGRD/EDBGWR address is not 8-byte aligned")
        if not self.epc_base <= address < self._epc_end:
            raise PageFault("EDBGRD/EDBGWR address is not in the EPC", address=address)
        i = (address - self.epc_base) >> 12
        if not self._valid[i]:
            raise PageFault("EDBGRD/EDBGWR page is not valid", address=address)
        ptype = self._ptype[i]
        enclave = self._secs_state[i] if ptype == PageType.SECS else self._owner[i]
        if enclave is None or not enclave.attributes & AttributeFlag.DEBUG:
            return SgxStatus.PAGE_NOT_DEBUGGABLE, i
        return SgxStatus.SUCCESS, i

    def edbgrd(self, address: int) -> tuple[SgxStatus, bytes]:
        """ENCLS[EDBGRD]: read 8 bytes of a debug enclave's EPC page.

        Checks: 8-byte alignment (#GP), EPC membership and a valid page (#PF), the owning
        enclave has ATTRIBUTES.DEBUG (else SGX_PAGE_NOT_DEBUGGABLE).

        Returns:
            (status, the 8 bytes or 8 zero bytes on failure).
        """
        status, _ = self._debug_target(address)
        if status:
            return status, bytes(8)
        off = address - self.epc_base
        return SgxStatus.SUCCESS, bytes(self._epc[off : off + 8])

    def edbgwr(self, address: int, data: bytes) -> SgxStatus:
        """ENCLS[EDBGWR]: write 8 bytes into a debug enclave's REG/TCS page.

        Checks as :meth:`edbgrd`; SECS and VA pages cannot be written (#GP).
        """
        if len(data) != 8:
            raise UsageError("EDBGWR writes exactly 8 bytes")
        status, i = self._debug_target(address)
        if status:
            return status
        if self._ptype[i] not in (PageType.REG, PageType.TCS):
            raise GeneralProtection("EDBGWR to a SECS or VA page")
        off = address - self.epc_base
        self._epc[off : off + 8] = data
        return SgxStatus.SUCCESS

    # ------------------------------------------------------------------------------------------
    # Execution (implemented in sgxlaunch.cpu.enclave)
    # ------------------------------------------------------------------------------------------

    def register_program(self, mrenclave: bytes, program: Callable[[], EnclaveProgram]) -> None:
        """Register the code of enclaves measuring ``mrenclave``.

        ``program`` is a factory (usually the :class:`~sgxlaunch.cpu.enclave.EnclaveProgram`
        subclass itself); each enclave instance gets its own program object at its first EENTER.
        """
        if len(mrenclave) != 32:
            raise UsageError("an MRENCLAVE is 32 bytes")
        self._programs[bytes(mrenclave)] = program

    def eenter(self, tcs: int, function: int = 0, data: bytes = b"") -> bytes:
        """ENCLU[EENTER]: run the enclave's program on the TCS at EPC address ``tcs``.

        See :func:`sgxlaunch.cpu.enclave.eenter` for the checks and the calling convention.
        """
        from sgxlaunch.cpu.enclave import eenter

        return eenter(self, tcs, function, data)
