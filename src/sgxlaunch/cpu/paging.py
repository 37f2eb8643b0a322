"""The paging leaves: ENCLS[EPA], [EBLOCK], [ETRACK], [EWB], [ELDU], [ELDB], and the binding of
EWB/ELDU/ELDB to the optional native fast path (:mod:`sgxlaunch.cpu._paging`)."""

from __future__ import annotations

import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sgxlaunch.arch.constants import PageType, SgxStatus
from sgxlaunch.cpu.faults import GeneralProtection, PageFault
from sgxlaunch.cpu.state import EPCM_FLAGS, EpcState, Region, SecsState, StateView
from sgxlaunch.errors import UsageError

PAGE = 4096
_PAGE_MASK = PAGE - 1
_U64 = (1 << 64) - 1
_PAGEINFO = struct.Struct("<QQQQ")
_ZERO56 = bytes(56)
_U64S = struct.Struct("<Q")
_NONCE = struct.Struct("<Q4x")
_ZERO40 = bytes(40)
_ZERO_PAGE = bytes(4096)
_AAD = struct.Struct("<QQQ")  # SECINFO.FLAGS ‖ ENCLAVEID ‖ LINADDR (the MAC's header)
_PCMD_HEADER = struct.Struct("<Q56xQ40x")  # PCMD[0:112]: SECINFO.FLAGS, ENCLAVEID, zeros
_ABORT_PAGE = b"\xff" * PAGE
_PCMD = struct.Struct("<Q56sQ40s16s")  # SECINFO.FLAGS, reserved, ENCLAVEID, reserved, MAC
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
_PT_SECS = int(PageType.SECS)
_PT_TCS = int(PageType.TCS)
_PT_REG = int(PageType.REG)
_PT_VA = int(PageType.VA)
_PT_TRIM = int(PageType.TRIM)
_ENCLAVE_PAGES = (_PT_REG, _PT_TCS, _PT_TRIM)
_SECS_VA = (_PT_SECS, _PT_VA)
_EPCM_FLAGS = EPCM_FLAGS  # R/W/X and PENDING/MODIFIED/PR travel in SECINFO.FLAGS
_SECINFO_RESERVED = _U64 & ~(0x3F | (0xFF << 8))


class PagingLeaves(StateView):
    """EPA, EBLOCK, ETRACK, EWB, ELDU and ELDB over the shared state.

    Args:
        state: the processor's state.
        paging_key: the per-boot AES-128 key that seals evicted pages.
        native: bind ``ewb``/``eldu``/``eldb`` to the native fast path: ``None`` when it is
            built, ``False`` never, ``True`` required (:class:`UsageError` when not built).
    """

    def __init__(self, state: EpcState, paging_key: bytes, native: bool | None) -> None:
        super().__init__(state)
        self._paging = AESGCM(paging_key)
        self._shared = state.shared
        self._sealed = bytearray(PAGE + 16)
        self._sealed_view = memoryview(self._sealed)
        self._sealed_page = self._sealed_view[:PAGE]
        self._sealed_tag = self._sealed_view[PAGE:]
        self._encrypt_into = self._paging.encrypt_into
        self._decrypt_into = self._paging.decrypt_into
        self.ewb: Callable[[int, int, int], SgxStatus] = self._ewb
        self.eldu: Callable[[int, int, int], SgxStatus] = self._eldu
        self.eldb: Callable[[int, int, int], SgxStatus] = self._eldb
        self.native_paging = False
        self._setup_native(native)

    def _setup_native(self, native: bool | None) -> None:
        required = native is True
        if native is False:
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
            enclave_type=SecsState,
            region_type=Region,
            python_ewb=self._ewb,
            python_eldu=self._eldu,
            python_eldb=self._eldb,
        )
        self.ewb = accel.ewb
        self.eldu = accel.eldu
        self.eldb = accel.eldb
        self.native_paging = True

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
        PT_SECS → SGX_PG_IS_SECS; a type other than PT_REG, PT_TCS or (SGX2) PT_TRIM, i.e.
        PT_VA → SGX_NOTBLOCKABLE; already blocked → SGX_BLKSTATE.
        """
        i = self._epc_page(epc_page)
        if not self._valid[i]:
            return SgxStatus.PG_INVLD
        ptype = self._ptype[i]
        if ptype == PageType.SECS:
            return SgxStatus.PG_IS_SECS
        if ptype not in _ENCLAVE_PAGES:
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
        after the EBLOCK, and every thread of the previous epoch gone) → SGX_NOT_TRACKED. A
        non-zero VA slot does not stop the eviction: the page is written back, the slot
        overwritten with the new version, and the leaf answers SGX_VA_SLOT_OCCUPIED (CF = 1, a
        warning). On the way out PAGEINFO.LINADDR := EPCM.ENCLAVEADDRESS.

        Crypto (our documented construction; the SDM's is not public): a fresh 64-bit version
        from a per-boot counter goes into the VA slot; the page is sealed with AES-128-GCM under
        a per-boot paging key, nonce = version (u64 LE) ‖ 4 zero bytes, associated data =
        SECINFO.FLAGS (the EPCM type, R/W/X and the SGX2 PENDING/MODIFIED/PR bits) ‖
        ENCLAVEID (the enclave's EID) ‖ LINADDR, u64 LE each (the PCMD's reserved bytes are
        zero by construction and checked on load); the 16-byte tag is PCMD.MAC.
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
        if ptype in _ENCLAVE_PAGES:
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
        # An occupied slot is a warning, not a refusal: the page is evicted and the slot
        # overwritten all the same, then RAX = SGX_VA_SLOT_OCCUPIED with CF = 1 (SDM EWB).
        occupied = _unpack_u64(epc, va_off)[0] != 0
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
        # PAGEINFO.LINADDR := EPCM.ENCLAVEADDRESS (SDM EWB; 0 for SECS and VA pages).
        if region is not None and pageinfo + 32 <= region.end:
            _pack_u64_into(region.buf, pageinfo - region.base, linaddr)
        else:
            self.state.write(pageinfo, _U64S.pack(linaddr))
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
        return _VA_SLOT_OCCUPIED if occupied else _SUCCESS

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
        enclave: SecsState | None = None
        if ptype in _ENCLAVE_PAGES:
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
        self._perm[i] = flags & _EPCM_FLAGS
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
