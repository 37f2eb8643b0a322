"""The build leaves: ENCLS[ECREATE], [EADD], [EEXTEND] (and a whole-page EEXTEND), [EREMOVE]."""

from __future__ import annotations

import struct

import numpy as np

from sgxlaunch.arch.constants import (
    ATTRIBUTE_FLAGS_RESERVED_MASK,
    TCS_FLAGS_RESERVED_MASK,
    AttributeFlag,
    PageType,
    SgxStatus,
)
from sgxlaunch.cpu.config import CpuConfig
from sgxlaunch.cpu.faults import GeneralProtection, PageFault
from sgxlaunch.cpu.msr import MAX_ENCLAVE_SIZE_LOG2_32, MAX_ENCLAVE_SIZE_LOG2_64
from sgxlaunch.cpu.state import EPCM_MODIFIED, EpcState, SecsState, StateView
from sgxlaunch.cpu.state import STAGE_SIZE as _STAGE_SIZE
from sgxlaunch.measure import TAG_EADD, TAG_ECREATE, TAG_EEXTEND

PAGE = 4096
_PAGE_MASK = PAGE - 1
_U64 = (1 << 64) - 1
_PAGEINFO = struct.Struct("<QQQQ")
_SECINFO = struct.Struct("<Q56s")
_ZERO56 = bytes(56)
_EADD_BLOCK = struct.Struct("<8sQQ40x")
_ECREATE_BLOCK = struct.Struct("<8sIQ44x")
_EEXTEND_HEADER = struct.Struct("<8sQ48x")
_ABORT_PAGE = b"\xff" * PAGE
_SECS_FIXED = struct.Struct("<QQIIQB15sQQ32s32s32s32s64sHHH")  # SECS bytes 0..261
_PT_SECS = int(PageType.SECS)
_PT_TCS = int(PageType.TCS)
_PT_REG = int(PageType.REG)
_PERM_RWX = 0x7
_SECINFO_RESERVED = _U64 & ~(0x3F | (0xFF << 8))


# XSAVE state components: bit → (offset, size) of the standard (non-compacted) format, as
# CPUID.(0DH, bit) reports them on current parts (x87 and SSE live in the 512-byte legacy area,
# followed by the 64-byte header). SDM Vol. 1 §13.4-13.5.
_XSAVE_COMPONENTS = {
    2: (576, 256),  # AVX (YMM_Hi128)
    3: (960, 64),  # MPX BNDREGS
    4: (1024, 64),  # MPX BNDCSR
    5: (1088, 64),  # AVX-512 opmask
    6: (1152, 512),  # AVX-512 ZMM_Hi256
    7: (1664, 1024),  # AVX-512 Hi16_ZMM
    9: (2688, 8),  # PKRU
    17: (2752, 64),  # AMX XTILECFG
    18: (2816, 8192),  # AMX XTILEDATA
}
_GPRSGX_SIZE = 184  # SDM Table 38-12: the GPR area at the top of an SSA frame
_MISC_EXINFO_SIZE = 16  # MISCSELECT.EXINFO adds the 16-byte EXINFO below GPRSGX


def _canonical(address: int) -> bool:
    """A 48-bit linear address sign-extended to 64 bits (bits 63:47 all equal)."""
    top = address >> 47
    return top in (0, (1 << 17) - 1)


def xfrm_is_legal(xfrm: int) -> bool:
    """The XCR0 rules an XFRM must keep (SDM ECREATE "legal XFRM", XSETBV's #GP rules): x87
    and SSE set; BNDREGS and BNDCSR together; the three AVX-512 components together and only
    with AVX; the two AMX components together."""
    if xfrm & 0x3 != 0x3:
        return False
    if bool(xfrm & 1 << 3) != bool(xfrm & 1 << 4):
        return False
    avx512 = (xfrm >> 5) & 0x7
    if avx512 not in (0, 0x7) or (avx512 and not xfrm & 1 << 2):
        return False
    return bool(xfrm & 1 << 17) == bool(xfrm & 1 << 18)


def xsave_size(xfrm: int) -> int:
    """Bytes of the XSAVE area for the components in ``xfrm`` (standard format)."""
    end = 576
    for bit, (offset, size) in _XSAVE_COMPONENTS.items():
        if xfrm >> bit & 1:
            end = max(end, offset + size)
    return end


def ssa_frame_pages(xfrm: int, miscselect: int) -> int:
    """The smallest SSAFRAMESIZE (pages) holding the XSAVE area, MISC and GPRSGX (SDM ECREATE:
    SSAFRAMESIZE too small for XSAVE(XFRM) + MISC + GPRSGX → #GP)."""
    misc = _MISC_EXINFO_SIZE if miscselect & 1 else 0
    return -(-(xsave_size(xfrm) + misc + _GPRSGX_SIZE) // PAGE)


class BuildLeaves(StateView):
    """ECREATE, EADD, EEXTEND and EREMOVE over the shared state."""

    def __init__(self, state: EpcState, config: CpuConfig) -> None:
        super().__init__(state)
        self.config = config
        self._next_eid = 1
        # Measurement scratch: 16 × (EEXTEND header ‖ 256 bytes), filled per page by numpy.
        self._epc_np = state.epc_np
        self._extend_scratch = np.zeros((16, 320), dtype=np.uint8)
        self._extend_scratch[:, 0:8] = np.frombuffer(TAG_EEXTEND, dtype=np.uint8)
        self._extend_offsets = self._extend_scratch.view(np.uint64)[:, 1]
        self._extend_steps = np.arange(16, dtype=np.uint64) * np.uint64(256)
        self._extend_bytes = self._extend_scratch.data.cast("B")

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
        the CPUID-allowed set and legal (:func:`xfrm_is_legal`) (#GP); MISCSELECT within the
        allowed set (#GP); SSAFRAMESIZE large enough for XSAVE(XFRM) + MISC + GPRSGX
        (:func:`ssa_frame_pages`, #GP); CONFIGID/CONFIGSVN zero unless KSS (#GP); BASEADDR
        canonical (64-bit, #GP); SIZE at most the CPUID.(12H,0):EDX maximum for the mode
        (2^47 for 64-bit, 2^31 for 32-bit enclaves, #GP); a 32-bit enclave below 4 GiB (#GP);
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
        if not xfrm_is_legal(xfrm) or xfrm & ~cfg.xfrm_allowed:
            raise GeneralProtection(f"SECS.ATTRIBUTES.XFRM 0x{xfrm:x} not allowed")
        if miscselect & ~cfg.miscselect_allowed:
            raise GeneralProtection(f"SECS.MISCSELECT 0x{miscselect:x} not allowed")
        if ssaframesize < ssa_frame_pages(xfrm, miscselect):
            raise GeneralProtection(
                f"SECS.SSAFRAMESIZE {ssaframesize} is too small for XFRM 0x{xfrm:x}"
            )
        if not flags & AttributeFlag.KSS and (any(configid) or configsvn):
            raise GeneralProtection("CONFIGID/CONFIGSVN need ATTRIBUTES.KSS")
        if flags & AttributeFlag.MODE64BIT:
            if not _canonical(baseaddr):
                raise GeneralProtection(f"SECS.BASEADDR 0x{baseaddr:x} is not canonical")
            if size > 1 << MAX_ENCLAVE_SIZE_LOG2_64:
                raise GeneralProtection(f"SECS.SIZE 0x{size:x} exceeds the 64-bit maximum")
        else:
            if size > 1 << MAX_ENCLAVE_SIZE_LOG2_32:
                raise GeneralProtection(f"SECS.SIZE 0x{size:x} exceeds the 32-bit maximum")
            if (baseaddr + size) > (1 << 32):
                raise GeneralProtection("a 32-bit enclave must lie below 4 GiB")

        enclave = SecsState()
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
        reserved bits, and for a 32-bit enclave FSLIMIT and GSLIMIT ending in 0xFFF (#GP) —
        OSSA/OFSBASE/OGSBASE alignment is EENTER's check, not EADD's; then STATE, CSSA, AEP and
        DBGOPTIN cleared, R/W/X forced to 0. SECINFO with W set and R clear → #GP. The EADD
        block is added to MRENCLAVE with SECINFO.FLAGS as supplied, except that for a TCS the
        R/W/X bits are cleared first (SDM EADD: TMP_SECINFO.FLAGS.R/W/X := 0 before the
        SHA256UPDATE; the kernel's TCS SECINFO comment says the same).
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
        if flags & 0x2 and not flags & 0x1:
            raise GeneralProtection("SECINFO.FLAGS has W without R")
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
            tcs = self._checked_tcs(src, mode64=bool(enclave.attributes & AttributeFlag.MODE64BIT))
            self._epc[base : base + PAGE] = tcs
            self._perm[i] = 0
            flags &= ~_PERM_RWX
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
    def _checked_tcs(src: memoryview | bytes, *, mode64: bool) -> bytearray:
        """EADD's TCS checks (#GP) and the fields it clears."""
        tcs = bytearray(src)
        (tcs_flags,) = struct.unpack_from("<Q", tcs, 8)
        fslimit, gslimit = struct.unpack_from("<II", tcs, 64)
        if tcs_flags & TCS_FLAGS_RESERVED_MASK or any(tcs[72:]):
            raise GeneralProtection("TCS reserved fields are set")
        if not mode64 and (fslimit & 0xFFF != 0xFFF or gslimit & 0xFFF != 0xFFF):
            raise GeneralProtection("a 32-bit enclave's TCS FSLIMIT/GSLIMIT must end in 0xFFF")
        struct.pack_into("<QQ", tcs, 0, 0, tcs_flags & ~1)  # STATE := 0, DBGOPTIN := 0
        struct.pack_into("<I", tcs, 24, 0)  # CSSA := 0
        struct.pack_into("<Q", tcs, 40, 0)  # AEP := 0
        return tcs

    def _extend_target(self, secs_addr: int, address: int, align: int) -> tuple[SecsState, int]:
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

    def eremove(self, epc_page: int) -> SgxStatus:
        """ENCLS[EREMOVE]: free an EPC page.

        Checks (SDM EREMOVE): alignment (#GP), EPC membership (#PF); an invalid page is
        already free (SUCCESS); a VA page, and (SGX2) an accepted PT_TRIM page (MODIFIED = 0),
        is freed with no active-thread check (spec §3.7: the extract's first IF also lists the
        accepted TRIM page under "nothing to do", a transcription defect — we free it); a SECS
        with children → SGX_CHILD_PRESENT; any other page of an enclave with a logical
        processor inside → SGX_ENCLAVE_ACT.
        """
        i = self._epc_page(epc_page)
        if not self._valid[i]:
            return SgxStatus.SUCCESS
        ptype = self._ptype[i]
        trim_accepted = ptype == PageType.TRIM and not self._perm[i] & EPCM_MODIFIED
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
                if owner.threads and not trim_accepted:
                    return SgxStatus.ENCLAVE_ACT
                owner.children -= 1
                linaddr = self._linaddr[i]
                if owner.pages.get(linaddr) == i:
                    del owner.pages[linaddr]
                    owner.needs_tracking.pop(linaddr, None)
        self._clear_epcm(i)
        return SgxStatus.SUCCESS
