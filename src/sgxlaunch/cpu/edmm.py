"""SGX2 (Enclave Dynamic Memory Management): ENCLS[EAUG], [EMODPR], [EMODT] and the enclave
side ENCLU[EACCEPT], [EACCEPTCOPY], [EMODPE].

Each leaf applies the checks of the SDM (Vol. 3D, December 2023) in the SDM's order, as
``../shared/reference/sgx2-spec.md`` §3 transcribes them; the docstrings number the steps as
that section does, and the tests cite the same numbers. The EPCM state these leaves move a
page through (spec §2) lives in the shared ``perm`` column (:data:`~sgxlaunch.cpu.state.
EPCM_FLAGS`): R, W, X, PENDING, MODIFIED and PR at their SECINFO bit positions.

Steps the emulator cannot reach are named and skipped: the "page in use by another SGX
instruction" checks (EPC_PAGE_CONFLICT / #GP) need two logical processors in one leaf at once,
and the CET shadow-stack page types need CET, which this part does not have (CPUID.(12H,1):
EAX[6] = 0).

Choices where the SDM text is unclear (spec UNCONFIRMED items), each tested in
``tests/cpu/test_edmm.py``:

* EMODPR's and EMODPE's SECINFO: "reserved fields not zero → #GP" is read literally — the
  reserved fields of SECINFO are FLAGS bits 7:6 and 63:16 and bytes 8..63; PAGE_TYPE and
  PENDING/MODIFIED/PR are defined fields, which these leaves ignore (the kernel passes only
  R/W/X, so either reading is compatible with it).
* EMODPE step 7 ("EPCM.R = 0 and S.R = 0 and S.W ≠ 0", no THEN clause in the extract) raises
  ``#GP(0)``: the result would be a writable, unreadable page, which SGX never allows.
* Tracking (EACCEPT step 9): EMODPR and EMODT record the enclave's tracking epoch for the
  page; EACCEPT answers SGX_NOT_TRACKED until an ETRACK after that epoch has completed, i.e.
  the epoch advanced and no thread that was inside at that ETRACK is still inside — the rule
  EWB applies to a blocked page. EAUG'd pages need no tracking.
* EACCEPT step 8 does not compare EPCM.PR (the request's PR bit only selects the legal
  combination of step 5).
* ENCLU operands are enclave linear addresses. "Not in EPC → #PF" is the translation of the
  address failing: the page tables refuse it (the MMU hook) or no EPC page is resident there
  (a hole, an evicted or a blocked page); such a fault goes to the OS like any other
  enclave-mode #PF (:meth:`sgxlaunch.cpu.enclave.Enclu.run_leaf`), which may EAUG or reload
  the page and have the leaf run again.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from sgxlaunch.arch.constants import (
    TCS_FLAGS_RESERVED_MASK,
    AttributeFlag,
    PageType,
    SgxStatus,
)
from sgxlaunch.cpu.config import CpuConfig
from sgxlaunch.cpu.faults import GeneralProtection, PageFault
from sgxlaunch.cpu.state import (
    EPCM_MODIFIED,
    EPCM_PENDING,
    EPCM_PR,
    EPCM_RWX,
    SECINFO_RESERVED,
    EpcState,
    SecsState,
    StateView,
)

PAGE = 4096
_PAGE_MASK = PAGE - 1
_PT_SECS = int(PageType.SECS)
_PT_TCS = int(PageType.TCS)
_PT_REG = int(PageType.REG)
_PT_TRIM = int(PageType.TRIM)
_R, _W, _X = 0x1, 0x2, 0x4
_PENDING, _MODIFIED, _PR = EPCM_PENDING, EPCM_MODIFIED, EPCM_PR
_SECINFO = struct.Struct("<Q56s")
_unpack_secinfo = _SECINFO.unpack_from
_unpack_pageinfo = struct.Struct("<QQQQ").unpack_from
_ZERO_PAGE = bytes(PAGE)
_ZERO56 = bytes(56)
_TCS_HEAD = struct.Struct("<QQQIIQQQQII")  # STATE FLAGS OSSA CSSA NSSA OENTRY AEP OFS OGS FS GS

ACCESS_READ = 0x1
"""Access type of a data read (also the ``access`` argument of :meth:`Mmu.walk`)."""
ACCESS_WRITE = 0x2
"""Access type of a data write (the #PF error code's W bit)."""
ACCESS_FETCH = 0x10
"""Access type of an instruction fetch (the #PF error code's I bit)."""

PF_P = 0x1
PF_W = 0x2
PF_U = 0x4
PF_I = 0x10
PF_SGX = 0x8000
"""The #PF error code bits (spec §0: ``X86_PF_SGX`` is bit 15)."""

Operand = Callable[[SecsState, int, int], int]
"""Translate an enclave linear address for an access type to the EPC index resident there
(``Enclu.operand``); raises the paging / not-present ``PageFault``."""

Resolve = Callable[[SecsState, int, int], bool]
"""``resolve(enclave, address, error_code)``: hand an enclave-mode #PF to the OS
(``Enclu.resolve``); True when the access is to be retried."""

Walk = Callable[[int, int, int], int]
"""``Mmu.walk(secs, linaddr, access)``: 0, or the #PF error code of the paging fault."""

CurrentPtes = Callable[[], "dict[int, int] | None"]
"""``Mmu.current_ptes()`` (optional): the present PTEs of the running thread's address space,
page address → PROT bits (R 1, W 2, X 4), or ``None``; a PTE holding the bit an access needs
is one ``walk`` passes."""

_SUCCESS = SgxStatus.SUCCESS
_MISMATCH = SgxStatus.PAGE_ATTRIBUTES_MISMATCH
_NOT_TRACKED = SgxStatus.NOT_TRACKED
_REFUSED = "the page tables refuse the access"
_NOT_PRESENT = "enclave page not present"


def _secinfo_page_fault(rbx: int) -> PageFault:
    """Step 2 of the SGX2 ENCLU leaves: #PF(RBX) with the SGX bit."""
    return PageFault(
        "the SECINFO's page is not an accepted readable REG page of this enclave",
        address=rbx,
        error_code=PF_SGX | PF_P | PF_U,
    )


def _unsupported(leaf: str) -> GeneralProtection:
    return GeneralProtection(
        f"{leaf}: EAX encodes a leaf this part does not support (no SGX2: CPUID.(12H,0):EAX[1]=0)"
    )


class EdmmLeaves(StateView):
    """ENCLS[EAUG], [EMODPR] and [EMODT] over the shared state (ring 0, physical operands)."""

    def __init__(self, state: EpcState, config: CpuConfig) -> None:
        super().__init__(state)
        self.config = config

    def eaug(self, pageinfo: int, epc_page: int) -> SgxStatus:
        """ENCLS[EAUG]: add a zeroed, PENDING page to an initialized enclave (spec §3.1).

        Steps (SDM EAUG): 1. PAGEINFO not 32-byte aligned, EPC page not 4 KiB aligned → #GP;
        EPC page not in the EPC → #PF. 2. PAGEINFO.SECINFO non-zero and not 64-byte aligned
        → #GP. 3. PAGEINFO.SECS or LINADDR not 4 KiB aligned → #GP. 4. PAGEINFO.SRCPGE ≠ 0 →
        #GP. 5. SECS not in the EPC → #PF. (6. page in use: not reachable.) 7. the EPC page
        valid → #PF. 8. SECINFO given: reserved bits → #GP, and — no CET on this part — #GP
        (a SECINFO only describes CET shadow-stack pages). 10. SECS not a valid PT_SECS
        page → #PF. 11. enclave not initialized → #GP. 12. LINADDR outside ELRANGE → #GP.
        14. the page is zeroed. 15. EPCM: PT_REG, R|W, PENDING, ENCLAVEADDRESS = LINADDR.
        No measurement: EAUG never touches MRENCLAVE (spec §8).

        Returns:
            SgxStatus.SUCCESS (EAUG has no return code: RAX = 0).
        """
        if not self.config.sgx2:
            raise _unsupported("EAUG")
        if pageinfo & 31:
            raise GeneralProtection(f"PAGEINFO 0x{pageinfo:x} is not 32-byte aligned")
        if epc_page & _PAGE_MASK:
            raise GeneralProtection(f"EPC operand 0x{epc_page:x} is not 4 KiB aligned")
        epc_base = self.epc_base
        i = (epc_page - epc_base) >> 12
        if not 0 <= i < self.epc_pages:
            raise PageFault("EPC operand is not in the EPC", address=epc_page)
        region = self._page_region.get(pageinfo >> 12)
        if region is not None and region.base <= pageinfo and pageinfo + 32 <= region.end:
            linaddr, srcpge, secinfo, secs_addr = _unpack_pageinfo(
                region.buf, pageinfo - region.base
            )
        else:  # in the EPC (the abort page) or not mapped (#PF)
            linaddr, srcpge, secinfo, secs_addr = self._read_pageinfo(pageinfo)
        if secinfo and secinfo & 63:
            raise GeneralProtection("PAGEINFO.SECINFO is not 64-byte aligned")
        if secs_addr & _PAGE_MASK or linaddr & _PAGE_MASK:
            raise GeneralProtection("PAGEINFO.SECS or LINADDR is not 4 KiB aligned")
        if srcpge:
            raise GeneralProtection("EAUG needs PAGEINFO.SRCPGE = 0")
        if not epc_base <= secs_addr < self._epc_end:
            raise PageFault("PAGEINFO.SECS is not in the EPC", address=secs_addr)
        valid = self._valid
        if valid[i]:
            raise PageFault("EAUG target EPC page is already valid", address=epc_page)
        if secinfo:
            self._read_secinfo(secinfo)  # reserved bits → #GP
            raise GeneralProtection(
                "EAUG with a SECINFO describes a CET shadow-stack page; this part has no CET"
            )
        si = (secs_addr - epc_base) >> 12  # step 10: #PF unless a valid PT_SECS page
        if valid[si] and self._ptype[si] == _PT_SECS:
            enclave = self._secs_state[si]
        else:
            enclave = self._secs_of(secs_addr)
        if not enclave.initialized:
            raise GeneralProtection("EAUG to an enclave that is not initialized")
        if not 0 <= linaddr - enclave.baseaddr < enclave.size:
            raise GeneralProtection(f"EAUG LINADDR 0x{linaddr:x} is outside ELRANGE")
        self._epc_page_views[i][:] = _ZERO_PAGE
        valid[i] = 1
        self._ptype[i] = _PT_REG
        self._perm[i] = _R | _W | _PENDING
        self._blocked[i] = 0
        self._linaddr[i] = linaddr
        self._owner[i] = enclave
        enclave.children += 1
        enclave.pages[linaddr] = i
        tracking = enclave.needs_tracking
        if tracking:
            tracking.pop(linaddr, None)
        return SgxStatus.SUCCESS

    def _modify_target(self, secinfo: int, epc_page: int) -> tuple[int, int]:
        """Steps 1-2 shared by EMODPR and EMODT: alignment, EPC membership, the SECINFO."""
        if secinfo & 63:
            raise GeneralProtection(f"SECINFO 0x{secinfo:x} is not 64-byte aligned")
        if epc_page & _PAGE_MASK:
            raise GeneralProtection(f"EPC operand 0x{epc_page:x} is not 4 KiB aligned")
        i = self._epc_page(epc_page)
        return i, self._read_secinfo(secinfo)

    def _owner_initialized(self, i: int) -> SecsState:
        """Step 8 of EMODPR/EMODT: the owning SECS's ATTRIBUTES.INIT = 0 → #GP."""
        enclave = self._owner[i]
        if enclave is None or not enclave.initialized:
            raise GeneralProtection("the page's enclave is not initialized")
        return enclave

    def emodpr(self, secinfo: int, epc_page: int) -> SgxStatus:
        """ENCLS[EMODPR]: restrict a REG page's EPCM permissions (spec §3.2).

        Steps (SDM EMODPR): 1. SECINFO not 64-byte aligned, EPC page not 4 KiB aligned →
        #GP; not in the EPC → #PF. 2. SECINFO reserved bits (bits 7:6, 63:16, bytes 8..63;
        PAGE_TYPE and PENDING/MODIFIED/PR are ignored — an UNCONFIRMED reading, see the
        module docstring) or W without R → #GP. 4. page not valid → #PF. 6. PENDING or
        MODIFIED → SGX_PAGE_NOT_MODIFIABLE. 7. page type not PT_REG → #PF (after step 6: the
        kernel's REMOVE_PAGES probe relies on an accepted TRIM page faulting here).
        8. enclave not initialized → #GP. 9. PR := 1, R/W/X &= SECINFO's (a mask: more
        permissions change nothing); the page needs tracking before EACCEPT.
        """
        if not self.config.sgx2:
            raise _unsupported("EMODPR")
        i, flags = self._modify_target(secinfo, epc_page)
        if flags & _W and not flags & _R:
            raise GeneralProtection("EMODPR SECINFO has W without R")
        if not self._valid[i]:
            raise PageFault("EMODPR page is not valid", address=epc_page)
        perm = self._perm[i]
        if perm & (_PENDING | _MODIFIED):
            return SgxStatus.PAGE_NOT_MODIFIABLE
        if self._ptype[i] != _PT_REG:
            raise PageFault("EMODPR page is not a PT_REG page", address=epc_page)
        enclave = self._owner_initialized(i)
        self._perm[i] = (perm & ~EPCM_RWX | (perm & flags & EPCM_RWX)) | _PR
        enclave.needs_tracking[self._linaddr[i]] = enclave.epoch
        return SgxStatus.SUCCESS

    def emodt(self, secinfo: int, epc_page: int) -> SgxStatus:
        """ENCLS[EMODT]: change a page's type to PT_TCS or PT_TRIM, MODIFIED (spec §3.3).

        Steps (SDM EMODT): 1. alignment (#GP) and EPC membership (#PF) as EMODPR.
        2. SECINFO reserved bits, or SECINFO.PAGE_TYPE not PT_TCS / PT_TRIM → #GP. 4. page
        not valid → #PF. 6. not (PT_REG, or PT_TCS with a PT_TRIM request) → #PF — the type
        check comes *before* PENDING/MODIFIED here, the opposite of EMODPR. 7. PENDING or
        MODIFIED → SGX_PAGE_NOT_MODIFIABLE. 8. enclave not initialized → #GP. 9. PR := 0,
        MODIFIED := 1, R = W = X := 0, PT := the new type; the page needs tracking.
        """
        if not self.config.sgx2:
            raise _unsupported("EMODT")
        i, flags = self._modify_target(secinfo, epc_page)
        new_type = (flags >> 8) & 0xFF
        if new_type != _PT_TCS and new_type != _PT_TRIM:
            raise GeneralProtection(f"EMODT page type {new_type} is not PT_TCS or PT_TRIM")
        if not self._valid[i]:
            raise PageFault("EMODT page is not valid", address=epc_page)
        ptype = self._ptype[i]
        if not (ptype == _PT_REG or (ptype == _PT_TCS and new_type == _PT_TRIM)):
            raise PageFault(
                f"EMODT cannot change a page of type {ptype} to {new_type}", address=epc_page
            )
        if self._perm[i] & (_PENDING | _MODIFIED):
            return SgxStatus.PAGE_NOT_MODIFIABLE
        enclave = self._owner_initialized(i)
        self._perm[i] = _MODIFIED
        self._ptype[i] = new_type
        enclave.needs_tracking[self._linaddr[i]] = enclave.epoch
        return SgxStatus.SUCCESS


class EdmmEnclu(StateView):
    """ENCLU[EACCEPT], [EACCEPTCOPY] and [EMODPE] for a running enclave.

    Operands are enclave linear addresses (RBX, RCX, RDX); ``operand`` translates one to the
    EPC page resident there (paging checks, then residency), raising the ``#PF`` the SDM
    lists as "not in EPC". The leaves are called through ``Enclu.run_leaf``, which hands such
    a fault to the OS and runs the leaf again if the OS resolved it.
    """

    def __init__(self, state: EpcState, config: CpuConfig, operand: Operand) -> None:
        super().__init__(state)
        self.config = config
        self._operand = operand
        self._walk: Walk | None = None
        self._current_ptes: CurrentPtes | None = None

    def attach_mmu(self, walk: Walk | None, current_ptes: CurrentPtes | None) -> None:
        """The MMU's ``walk`` (``None``: no MMU, no paging check) and its optional
        ``current_ptes``, for the translations the leaves do inline (``Enclu.mmu``'s setter)."""
        self._walk = walk
        self._current_ptes = current_ptes if walk is not None else None

    # -- shared steps -----------------------------------------------------------------------

    @staticmethod
    def _in_elrange(enclave: SecsState, linaddr: int) -> bool:
        return 0 <= linaddr - enclave.baseaddr < enclave.size

    def _secinfo_page(self, enclave: SecsState, rbx: int) -> int:
        """Step 2 of every SGX2 ENCLU leaf: the page holding the SECINFO must be an accepted,
        readable, unblocked PT_REG page of this enclave at this address → else #PF(RBX)."""
        i = self._operand(enclave, rbx, ACCESS_READ)
        perm = self._perm[i]
        if (
            not self._valid[i]
            or not perm & _R
            or perm & (_PENDING | _MODIFIED)
            or self._blocked[i]
            or self._ptype[i] != _PT_REG
            or self._owner[i] is not enclave
            or self._linaddr[i] != rbx & ~_PAGE_MASK
        ):
            raise _secinfo_page_fault(rbx)
        return i

    def _read_secinfo_at(self, i: int, rbx: int) -> int:
        """Step 3: SECINFO reserved fields (FLAGS bits 7:6, 63:16; bytes 8..63) → #GP."""
        flags, rest = _SECINFO.unpack_from(self._epc, i * PAGE + (rbx & _PAGE_MASK))
        if flags & SECINFO_RESERVED or rest != _ZERO56:
            raise GeneralProtection("SECINFO has reserved bits set")
        return int(flags)

    @staticmethod
    def _fault(message: str, address: int, access: int) -> PageFault:
        return PageFault(message, address=address, error_code=PF_SGX | PF_P | PF_U | access & 0x12)

    # -- EACCEPT ----------------------------------------------------------------------------

    def eaccept(self, enclave: SecsState, rbx: int, rcx: int) -> SgxStatus:
        """ENCLU[EACCEPT]: accept a pending change to a page (spec §3.4).

        Steps (SDM EACCEPT): 1. RBX not 64-byte aligned → #GP; outside ELRANGE → #GP; not
        translatable → #PF(RBX). 2. the SECINFO's page not an accepted readable PT_REG page of
        this enclave at RBX → #PF(RBX). 3. SECINFO reserved bits → #GP. 4. RCX not 4 KiB
        aligned → #GP; outside ELRANGE → #GP; not translatable → #PF(RCX). 5. not a legal
        request — PT_REG with PR or PENDING and not MODIFIED; PT_TCS / PT_TRIM with MODIFIED
        only (the CET shadow-stack combination needs CET) → #GP. 6. the page invalid, blocked,
        not REG/TCS/TRIM, or another enclave's → #PF(RCX). 8. ENCLAVEADDRESS ≠ RCX, or
        PENDING, MODIFIED, R, W, X or PT ≠ the SECINFO's → SGX_PAGE_ATTRIBUTES_MISMATCH
        (EPCM.PR is not compared). 9. modified by EMODPR/EMODT and not yet tracked →
        SGX_NOT_TRACKED. 10. accepting a TCS: its reserved fields, DBGOPTIN, CSSA ≥ NSSA,
        AEP, STATE, and for a 32-bit enclave FSLIMIT/GSLIMIT → #GP. 11. PENDING, MODIFIED and
        PR := 0.

        One attempt: every #PF is raised (``Enclu.run_leaf`` hands it to the OS). The same
        steps as :meth:`eaccept_step` without a ``resolve``.
        """
        status = self.eaccept_step(enclave, rbx, rcx, None)
        assert status is not None  # without resolve every fault is raised
        return status

    def eaccept_step(
        self, enclave: SecsState, rbx: int, rcx: int, resolve: Resolve | None
    ) -> SgxStatus | None:
        """One attempt of :meth:`eaccept` (the same steps in the same order), where a
        translation #PF of RBX or RCX — the page tables refuse the read, or no EPC page is
        resident there; what ``Enclu.operand`` raises — goes to ``resolve`` (the OS, as
        ``Enclu.deliver``) on the spot instead of being raised to a caller that would deliver
        it: ``None`` when the OS resolved it (the leaf runs again from step 1, as after any
        delivered fault), else the fault is raised with ``delivered`` set. Other faults are
        raised as always. This is the hot path of EAUG on a fault (the first attempt faults on
        RCX, the second succeeds); translation is ``Enclu.operand``'s, inline, with the page
        tables read directly when the MMU offers ``current_ptes`` (a PTE that allows the read
        is what ``walk`` would pass; anything else asks ``walk``).
        """
        if not self.config.sgx2:
            raise _unsupported("EACCEPT")
        if rbx & 63:
            raise GeneralProtection("EACCEPT SECINFO (RBX) is not 64-byte aligned")
        base = enclave.baseaddr
        size = enclave.size
        if not 0 <= rbx - base < size:
            raise GeneralProtection("EACCEPT SECINFO (RBX) is outside ELRANGE")
        valid = self._valid
        blocked = self._blocked
        pages = enclave.pages
        walk = self._walk
        ptes = None
        if walk is not None:
            current_ptes = self._current_ptes
            if current_ptes is not None:
                ptes = current_ptes()
        # Step 1's translation of RBX (Enclu.operand, inline): the walk, then residency.
        page = rbx & ~_PAGE_MASK
        if walk is not None and (ptes is None or not ptes.get(page, 0) & _R):
            code = walk(self.epc_base + PAGE * enclave.secs_index, page, ACCESS_READ)
            if code:
                return self._translation_fault(enclave, _REFUSED, rbx, code, resolve)
        si = pages.get(page)
        if si is None or not valid[si] or blocked[si]:
            return self._translation_fault(enclave, _NOT_PRESENT, rbx, PF_U, resolve)
        # Steps 2-3 as _secinfo_page and _read_secinfo_at, inline.
        ptypes = self._ptype
        owner = self._owner
        linaddrs = self._linaddr
        perms = self._perm
        perm = perms[si]
        if (
            not perm & _R
            or perm & (_PENDING | _MODIFIED)
            or ptypes[si] != _PT_REG
            or owner[si] is not enclave
            or linaddrs[si] != page
        ):
            raise _secinfo_page_fault(rbx)
        flags, rest = _unpack_secinfo(self._epc, si * PAGE + (rbx & _PAGE_MASK))
        if flags & SECINFO_RESERVED or rest != _ZERO56:
            raise GeneralProtection("SECINFO has reserved bits set")
        if rcx & _PAGE_MASK:
            raise GeneralProtection("EACCEPT page (RCX) is not 4 KiB aligned")
        if not 0 <= rcx - base < size:
            raise GeneralProtection("EACCEPT page (RCX) is outside ELRANGE")
        # Step 4's translation of RCX, as RBX's.
        if walk is not None and (ptes is None or not ptes.get(rcx, 0) & _R):
            code = walk(self.epc_base + PAGE * enclave.secs_index, rcx, ACCESS_READ)
            if code:
                return self._translation_fault(enclave, _REFUSED, rcx, code, resolve)
        i = pages.get(rcx)
        if i is None or not valid[i] or blocked[i]:
            return self._translation_fault(enclave, _NOT_PRESENT, rcx, PF_U, resolve)
        s_type = (flags >> 8) & 0xFF
        s_state = flags & (_PENDING | _MODIFIED | _PR)
        if s_type == _PT_REG:
            legal = s_state & (_PR | _PENDING) and not s_state & _MODIFIED
        else:
            legal = s_type in (_PT_TCS, _PT_TRIM) and s_state == _MODIFIED
        if not legal:
            raise GeneralProtection(f"EACCEPT SECINFO 0x{flags:x} is not a legal request")
        ptype = ptypes[i]
        if (ptype != _PT_REG and ptype != _PT_TCS and ptype != _PT_TRIM) or owner[i] is not enclave:
            raise self._fault("EACCEPT page is not a page of this enclave", rcx, ACCESS_READ)
        perm = perms[i]
        if (
            linaddrs[i] != rcx
            or (perm ^ flags) & (_PENDING | _MODIFIED | EPCM_RWX)
            or ptype != s_type
        ):
            return _MISMATCH
        tracking = enclave.needs_tracking
        if tracking:
            modified_at = tracking.get(rcx)
            if modified_at is not None and (
                enclave.epoch <= modified_at or enclave.tracking_threads
            ):
                return _NOT_TRACKED
        if s_type == _PT_TCS:
            self._check_new_tcs(enclave, i)
        perms[i] = perm & EPCM_RWX
        if tracking:
            tracking.pop(rcx, None)
        return _SUCCESS

    @staticmethod
    def _translation_fault(
        enclave: SecsState, message: str, address: int, code: int, resolve: Resolve | None
    ) -> None:
        """A translation #PF of an ENCLU operand (``Enclu.operand``'s): raised, or with
        ``resolve`` delivered to the OS here — ``None`` back when it was resolved (run the leaf
        again), else the fault raised, marked as delivered (nobody hands it to the OS again)."""
        if resolve is not None:
            if resolve(enclave, address, code):
                return None
            fault = PageFault(message, address=address, error_code=code)
            fault.delivered = True
            raise fault
        raise PageFault(message, address=address, error_code=code)

    def _check_new_tcs(self, enclave: SecsState, i: int) -> None:
        """EACCEPT step 10: the TCS a page becomes must be clean (#GP otherwise)."""
        base = i * PAGE
        (state, flags, _ossa, cssa, nssa, _oentry, aep, _ofs, _ogs, fslimit, gslimit) = (
            _TCS_HEAD.unpack_from(self._epc, base)
        )
        if flags & TCS_FLAGS_RESERVED_MASK or any(self._epc_view[base + 72 : base + PAGE]):
            raise GeneralProtection("the new TCS has reserved fields set")
        if flags & 1 or cssa >= nssa or aep or state:
            raise GeneralProtection("the new TCS has DBGOPTIN, CSSA ≥ NSSA, AEP or STATE set")
        if not enclave.attributes & AttributeFlag.MODE64BIT and (
            fslimit & 0xFFF != 0xFFF or gslimit & 0xFFF != 0xFFF
        ):
            raise GeneralProtection("a 32-bit enclave's new TCS needs FSLIMIT/GSLIMIT ending 0xFFF")

    # -- EACCEPTCOPY ------------------------------------------------------------------------

    def eacceptcopy(self, enclave: SecsState, rbx: int, rcx: int, rdx: int) -> SgxStatus:
        """ENCLU[EACCEPTCOPY]: fill a PENDING page from another page and set its permissions
        in one step (spec §3.5).

        Steps (SDM EACCEPTCOPY): 1. RBX not 64-byte aligned → #GP; RCX or RDX not 4 KiB
        aligned → #GP; any outside ELRANGE → #GP; RBX, RCX (a write), RDX not translatable
        → #PF in that order. 2. the SECINFO's page as EACCEPT step 2 → #PF(RBX). 3. SECINFO
        reserved bits, W without R, or PT ≠ PT_REG → #GP. 4. the source not an accepted
        readable PT_REG page of this enclave at RDX → #PF(RDX). 5. the destination not a
        valid, PENDING, unmodified, unblocked PT_REG page of this enclave →
        SGX_PAGE_ATTRIBUTES_MISMATCH. 7. the destination not R|W, or not at RCX →
        SGX_PAGE_ATTRIBUTES_MISMATCH. 8. copy the page; R/W/X := the SECINFO's; PENDING := 0.
        """
        if not self.config.sgx2:
            raise _unsupported("EACCEPTCOPY")
        if rbx & 63:
            raise GeneralProtection("EACCEPTCOPY SECINFO (RBX) is not 64-byte aligned")
        if rcx & _PAGE_MASK or rdx & _PAGE_MASK:
            raise GeneralProtection("EACCEPTCOPY RCX/RDX is not 4 KiB aligned")
        if not all(self._in_elrange(enclave, a) for a in (rbx, rcx, rdx)):
            raise GeneralProtection("EACCEPTCOPY operand outside ELRANGE")
        self._operand(enclave, rbx, ACCESS_READ)
        d = self._operand(enclave, rcx, ACCESS_WRITE)
        s = self._operand(enclave, rdx, ACCESS_READ)
        si = self._secinfo_page(enclave, rbx)
        flags = self._read_secinfo_at(si, rbx)
        if flags & _W and not flags & _R:
            raise GeneralProtection("EACCEPTCOPY SECINFO has W without R")
        if (flags >> 8) & 0xFF != _PT_REG:
            raise GeneralProtection("EACCEPTCOPY SECINFO.PAGE_TYPE is not PT_REG")
        sperm = self._perm[s]
        if (
            not self._valid[s]
            or not sperm & _R
            or sperm & (_PENDING | _MODIFIED)
            or self._blocked[s]
            or self._ptype[s] != _PT_REG
            or self._owner[s] is not enclave
            or self._linaddr[s] != rdx
        ):
            raise self._fault("EACCEPTCOPY source is not an accepted readable page", rdx, 0)
        dperm = self._perm[d]
        if (
            not self._valid[d]
            or not dperm & _PENDING
            or dperm & _MODIFIED
            or self._blocked[d]
            or self._ptype[d] != _PT_REG
            or self._owner[d] is not enclave
        ):
            return SgxStatus.PAGE_ATTRIBUTES_MISMATCH
        if dperm & EPCM_RWX != _R | _W or self._linaddr[d] != rcx:
            return SgxStatus.PAGE_ATTRIBUTES_MISMATCH
        self._epc_page_views[d][:] = self._epc_page_views[s]
        self._perm[d] = (dperm & ~(EPCM_RWX | _PENDING)) | (flags & EPCM_RWX)
        return SgxStatus.SUCCESS

    # -- EMODPE -----------------------------------------------------------------------------

    def emodpe(self, enclave: SecsState, rbx: int, rcx: int) -> None:
        """ENCLU[EMODPE]: extend an accepted REG page's EPCM permissions (spec §3.6).

        Steps (SDM EMODPE): 1. RBX not 64-byte aligned or RCX not 4 KiB aligned → #GP; either
        outside ELRANGE → #GP; not translatable → #PF(RBX) / #PF(RCX). 2. the SECINFO's page
        as EACCEPT step 2 → #PF(RBX). 3. SECINFO reserved bits → #GP (PAGE_TYPE and the
        state bits are ignored, as for EMODPR). 4. the page invalid, PENDING, MODIFIED,
        blocked, not PT_REG or another enclave's → #PF(RCX). 6. ENCLAVEADDRESS ≠ RCX →
        #PF(RCX). 7. EPCM.R = 0 and SECINFO gives W without R → #GP (UNCONFIRMED: the
        extract has no THEN clause). 8. R/W/X |= the SECINFO's. No return code; PR is
        neither checked nor changed, no ETRACK or EACCEPT is needed.
        """
        if not self.config.sgx2:
            raise _unsupported("EMODPE")
        if rbx & 63 or rcx & _PAGE_MASK:
            raise GeneralProtection("EMODPE operand misaligned")
        if not self._in_elrange(enclave, rbx) or not self._in_elrange(enclave, rcx):
            raise GeneralProtection("EMODPE operand outside ELRANGE")
        self._operand(enclave, rbx, ACCESS_READ)
        i = self._operand(enclave, rcx, ACCESS_READ)
        si = self._secinfo_page(enclave, rbx)
        flags = self._read_secinfo_at(si, rbx)
        perm = self._perm[i]
        if (
            not self._valid[i]
            or perm & (_PENDING | _MODIFIED)
            or self._blocked[i]
            or self._ptype[i] != _PT_REG
            or self._owner[i] is not enclave
        ):
            raise self._fault("EMODPE page is not an accepted REG page", rcx, ACCESS_READ)
        if self._linaddr[i] != rcx:
            raise self._fault("EMODPE page is not at this address", rcx, ACCESS_READ)
        if not perm & _R and not flags & _R and flags & _W:
            raise GeneralProtection("EMODPE would make the page writable but not readable")
        self._perm[i] = perm | (flags & EPCM_RWX)


__all__ = [
    "ACCESS_FETCH",
    "ACCESS_READ",
    "ACCESS_WRITE",
    "PF_I",
    "PF_P",
    "PF_SGX",
    "PF_U",
    "PF_W",
    "EdmmEnclu",
    "EdmmLeaves",
]
