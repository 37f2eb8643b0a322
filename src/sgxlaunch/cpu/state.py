"""The processor's state: physical memory, the EPC and the EPCM, and the state of each SECS.

One :class:`EpcState` per processor holds what every leaf family shares (public attributes:
it *is* the shared state); each family reads it through its own aliases (:class:`StateView`),
so no module reaches into another's private attributes. Modelling choices the SDM leaves open:

* Non-enclave reads of EPC addresses see the *abort page* (all bytes 0xFF) and non-enclave
  writes to the EPC are dropped, as on hardware.
* An ENCLS operand that must be an EPC page but lies outside the EPC raises ``#PF`` with that
  address (spec §4.2 step 1 for EINIT; applied to every leaf alike).
* The SECS micro-architectural state (running MRENCLAVE, EID, PADDING, ISVFAMILYID,
  ISVEXTPRODID, the tracking epoch) is kept beside the SECS page (:class:`SecsState`), keyed by
  the page; an evicted SECS takes its state along inside the processor, keyed by EID.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from sgxlaunch.arch.constants import PageType
from sgxlaunch.cpu.config import ORDINARY_BASE, CpuConfig
from sgxlaunch.cpu.faults import GeneralProtection, PageFault
from sgxlaunch.errors import UsageError

PAGE = 4096
PAGE_MASK = PAGE - 1
U64 = (1 << 64) - 1
ABORT_PAGE = b"\xff" * PAGE
STAGE_SIZE = 16 * 5184
"""Bytes of measurement records an enclave buffers before one SHA-256 update (16 pages)."""
SECINFO_RESERVED = U64 & ~(0x3F | (0xFF << 8))
EPCM_RWX = 0x07
EPCM_PENDING = 0x08
EPCM_MODIFIED = 0x10
EPCM_PR = 0x20
EPCM_FLAGS = 0x3F
"""The EPCM's ``perm`` column holds SECINFO.FLAGS bits 5:0 of a page: R, W, X and the SGX2
state bits PENDING, MODIFIED, PR at the positions SECINFO uses (spec §1.1), so EWB saves all
six into PCMD.SECINFO.FLAGS and the MAC, and ELDU restores them (spec §1.3)."""

_PAGEINFO = struct.Struct("<QQQQ")
_SECINFO = struct.Struct("<Q56s")
_ZERO56 = bytes(56)
_U64S = struct.Struct("<Q")
_PAGE_MASK = PAGE_MASK
_ABORT_PAGE = ABORT_PAGE
_SECINFO_RESERVED = SECINFO_RESERVED
_pack_u64_into = _U64S.pack_into
_unpack_u64 = _U64S.unpack_from


class Program(Protocol):
    """What the state keeps of an enclave's running code (an ``EnclaveProgram``, which lives on
    the ENCLU side; this module does not import it)."""

    def ecall(self, ctx: Any, function: int, data: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class EpcmEntry:
    """A snapshot of one EPCM entry (for tests, the driver and debugging).

    Attributes:
        valid: the page is in use.
        page_type: PT_SECS / PT_TCS / PT_REG / PT_VA / PT_TRIM.
        permissions: R/W/X bits.
        blocked: EBLOCK has run on the page.
        pending: SGX2 EPCM.PENDING (EAUG'd, not yet accepted).
        modified: SGX2 EPCM.MODIFIED (EMODT'd, not yet accepted).
        pr: SGX2 EPCM.PR (permissions restricted by EMODPR, not yet accepted).
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
    pr: bool = False


class SecsState:
    """The processor's state for one SECS (architectural fields and micro-architectural state)."""

    __slots__ = (
        "attributes",
        "baseaddr",
        "cet_attributes",
        "children",
        "configid",
        "configsvn",
        "dynamic_programs",
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
        "needs_tracking",
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
        self.stage = bytearray(STAGE_SIZE)
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
        self.program: Program | None = None
        self.needs_tracking: dict[int, int] = {}
        """SGX2: linear page → tracking epoch of its last EMODPR/EMODT. EACCEPT of such a page
        answers SGX_NOT_TRACKED until an ETRACK after that epoch has completed (spec §3.4)."""
        self.dynamic_programs: dict[bytes, Program] = {}
        """Programs started by :meth:`EnclaveContext.execute` in this enclave, by source hash."""

    def flush(self) -> None:
        """Hash the staged measurement records (SHA256UPDATE is buffered, never reordered)."""
        if self.stage_pos:
            self.measurement.update(self.stage_view[: self.stage_pos])
            self.stage_pos = 0


class Region:
    """An ordinary (non-EPC) memory region."""

    __slots__ = ("base", "buf", "end", "view")

    def __init__(self, base: int, size: int) -> None:
        self.base = base
        self.end = base + size
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)


class EpcState:
    """Physical memory (the EPC and ordinary regions), the EPCM and the SECS states.

    Attributes (shared by every leaf family; one item per EPC page where a list/bytearray):
        epc / epc_view / epc_page_views / epc_np: the EPC bytes and views of them.
        valid, ptype, perm, blocked, blocked_epoch, linaddr, owner: the EPCM columns
            (``owner`` is the :class:`SecsState` of a REG/TCS/TRIM page's enclave; ``perm``
            holds R/W/X and PENDING/MODIFIED/PR as SECINFO.FLAGS bits 5:0, see
            :data:`EPCM_FLAGS`).
        secs_state: EPC index → :class:`SecsState` for every valid PT_SECS page.
        evicted_secs: EID → :class:`SecsState` of every written-back SECS.
        regions / page_region: ordinary memory, by base and by page number.
        shared: 16 bytes shared with the native paging path ([0:8] the EWB version counter,
            [8:16] the memory-map generation, bumped by :meth:`allocate` / :meth:`release`).
    """

    def __init__(self, config: CpuConfig) -> None:
        self.epc_base = config.epc_base
        self.epc_pages = n = config.epc_size // PAGE
        self.epc_end = self.epc_base + config.epc_size
        self.epc = bytearray(config.epc_size)
        self.epc_view = memoryview(self.epc)
        self.epc_page_views = [self.epc_view[k * PAGE : (k + 1) * PAGE] for k in range(n)]
        self.epc_np = np.frombuffer(self.epc, dtype=np.uint8).reshape(n, 16, 256)
        self.regions: dict[int, Region] = {}
        self.page_region: dict[int, Region] = {}  # page number → region (the "page tables")
        self.next_ordinary = ORDINARY_BASE
        self.valid = bytearray(n)
        self.ptype = bytearray(n)
        self.perm = bytearray(n)
        self.blocked = bytearray(n)
        self.blocked_epoch = [0] * n
        self.linaddr = [0] * n
        self.owner: list[SecsState | None] = [None] * n
        self.secs_state: dict[int, SecsState] = {}
        self.evicted_secs: dict[int, SecsState] = {}
        self.shared = bytearray(16)

    def allocate(self, size: int, *, align: int = PAGE) -> int:
        """Allocate a zero-filled ordinary (non-EPC) memory region; returns its address.

        Raises:
            UsageError: ``size`` is not positive, ``align`` is not a power of two, or ordinary
                memory (below the EPC) is exhausted.
        """
        if size <= 0 or align <= 0 or align & (align - 1):
            raise UsageError("allocate needs a positive size and a power-of-two alignment")
        base = (self.next_ordinary + align - 1) & ~(align - 1)
        if base + size > self.epc_base:
            raise UsageError("ordinary memory exhausted (it lies below the EPC)")
        region = Region(base, size)
        # Leave an unmapped guard page after every region.
        self.next_ordinary = (base + size + 2 * PAGE - 1) & ~(PAGE - 1)
        self.regions[base] = region
        self.page_region.update(
            dict.fromkeys(range(base >> 12, (base + size + PAGE - 1) >> 12), region)
        )
        self.memory_map_changed()
        return base

    def release(self, address: int) -> None:
        """Release the ordinary region starting at ``address``."""
        region = self.regions.pop(address, None)
        if region is None:
            raise UsageError(f"no ordinary region starts at 0x{address:x}")
        for page in range(region.base >> 12, (region.end + PAGE - 1) >> 12):
            del self.page_region[page]
        self.memory_map_changed()

    def memory_map_changed(self) -> None:
        # The native paging path caches region lookups per generation of the memory map.
        shared = self.shared
        _pack_u64_into(shared, 8, _unpack_u64(shared, 8)[0] + 1)

    def find(self, address: int, length: int) -> Region:
        region = self.page_region.get(address >> 12)
        if region is None or address < region.base or address + length > region.end:
            raise PageFault("no memory mapped at this address", address=address)
        return region

    def in_epc(self, address: int) -> bool:
        """True when ``address`` lies inside the EPC."""
        return self.epc_base <= address < self.epc_end

    def read(self, address: int, length: int) -> bytes:
        """A non-enclave read: ordinary memory as stored, the EPC as the abort page (0xFF).

        Raises:
            PageFault: part of the range is not mapped.
        """
        if length < 0:
            raise UsageError("negative length")
        if self.epc_base <= address < self.epc_end:
            if address + length > self.epc_end:
                raise PageFault("read runs past the EPC", address=self.epc_end)
            return b"\xff" * length
        region = self.find(address, length)
        start = address - region.base
        return bytes(region.buf[start : start + length])

    def write(self, address: int, data: bytes | bytearray | memoryview) -> None:
        """A non-enclave write: ordinary memory is written, writes to the EPC are dropped.

        Raises:
            PageFault: part of the range is not mapped.
        """
        length = len(data)
        if self.epc_base <= address < self.epc_end:
            return
        region = self.page_region.get(address >> 12)  # find, inline
        if region is None or address < region.base or address + length > region.end:
            raise PageFault("no memory mapped at this address", address=address)
        start = address - region.base
        region.buf[start : start + length] = data

    def view(self, address: int, length: int) -> memoryview | bytes:
        """Bytes of a non-enclave operand, without copying ordinary memory."""
        if self.epc_base <= address < self.epc_end:
            return _ABORT_PAGE[:length] if length <= PAGE else b"\xff" * length
        region = self.find(address, length)
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
        valid = self.valid
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
        owner = self.owner[i]
        return EpcmEntry(
            valid=bool(self.valid[i]),
            page_type=PageType(self.ptype[i]),
            permissions=self.perm[i] & EPCM_RWX,
            blocked=bool(self.blocked[i]),
            pending=bool(self.perm[i] & EPCM_PENDING),
            modified=bool(self.perm[i] & EPCM_MODIFIED),
            pr=bool(self.perm[i] & EPCM_PR),
            enclave_secs=(
                self.epc_base + PAGE * owner.secs_index
                if owner is not None and owner.secs_index >= 0
                else None
            ),
            linaddr=self.linaddr[i],
        )

    def _epc_index_any(self, address: int) -> int:
        if not self.epc_base <= address < self.epc_end:
            raise UsageError(f"0x{address:x} is not in the EPC")
        return (address - self.epc_base) >> 12

    def epc_page_index(self, address: int) -> int:
        """Index of the EPC page at the page-aligned ``address`` (#GP misaligned, #PF not EPC)."""
        if address & _PAGE_MASK:
            raise GeneralProtection(f"EPC operand 0x{address:x} is not 4 KiB aligned")
        if not self.epc_base <= address < self.epc_end:
            raise PageFault("EPC operand is not in the EPC", address=address)
        return (address - self.epc_base) >> 12

    def secs_of(self, address: int) -> SecsState:
        """The enclave whose SECS is at ``address`` (#PF unless a valid PT_SECS page)."""
        i = self.epc_page_index(address)
        if not self.valid[i] or self.ptype[i] != PageType.SECS:
            raise PageFault("operand is not a valid SECS page", address=address)
        return self.secs_state[i]

    def read_pageinfo(self, address: int) -> tuple[int, int, int, int]:
        if address & 31:
            raise GeneralProtection(f"PAGEINFO 0x{address:x} is not 32-byte aligned")
        if self.epc_base <= address < self.epc_end:
            return _PAGEINFO.unpack(_ABORT_PAGE[:32])
        region = self.find(address, 32)
        linaddr, srcpge, secinfo, secs = _PAGEINFO.unpack_from(region.buf, address - region.base)
        return linaddr, srcpge, secinfo, secs

    def read_secinfo(self, address: int) -> int:
        if address & 63:
            raise GeneralProtection(f"SECINFO 0x{address:x} is not 64-byte aligned")
        view = self.view(address, 64)
        flags, rest = _SECINFO.unpack_from(view)
        if flags & _SECINFO_RESERVED or rest != _ZERO56:
            raise GeneralProtection("SECINFO has reserved bits set")
        return int(flags)

    def clear_epcm(self, i: int) -> None:
        self.valid[i] = 0
        self.ptype[i] = 0
        self.perm[i] = 0
        self.blocked[i] = 0
        self.linaddr[i] = 0
        self.owner[i] = None

    def secs_info(self, secs: int) -> dict[str, Any]:
        """What the SECS at ``secs`` holds (the driver reads these back after EINIT)."""
        enclave = self.secs_of(secs)
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
            "isvfamilyid": enclave.isvfamilyid,
            "isvextprodid": enclave.isvextprodid,
            "configid": enclave.configid,
            "configsvn": enclave.configsvn,
            "children": enclave.children,
        }


class StateView:
    """Base of a leaf family: its own aliases of the shared :class:`EpcState` (one attribute
    load each on the hot paths) and the operand helpers every family uses."""

    def __init__(self, state: EpcState) -> None:
        self.state = state
        self.epc_base = state.epc_base
        self.epc_pages = state.epc_pages
        self._epc_end = state.epc_end
        self._epc = state.epc
        self._epc_view = state.epc_view
        self._epc_page_views = state.epc_page_views
        self._valid = state.valid
        self._ptype = state.ptype
        self._perm = state.perm
        self._blocked = state.blocked
        self._blocked_epoch = state.blocked_epoch
        self._linaddr = state.linaddr
        self._owner = state.owner
        self._secs_state = state.secs_state
        self._evicted_secs = state.evicted_secs
        self._page_region = state.page_region
        self._find = state.find
        self._view = state.view
        self._epc_page = state.epc_page_index
        self._secs_of = state.secs_of
        self._read_pageinfo = state.read_pageinfo
        self._read_secinfo = state.read_secinfo
        self._clear_epcm = state.clear_epcm
