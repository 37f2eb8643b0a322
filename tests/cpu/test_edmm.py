"""SGX2 leaves, one test per check (SDM Vol. 3D Dec 2023 step numbers as spec §3 numbers them),
"which one wins" where two checks can fire, and the enclave-mode access rules of spec §3.8."""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable

import pytest

from sgxlaunch.arch import SgxStatus
from sgxlaunch.arch.constants import PageType
from sgxlaunch.cpu import (
    EnclaveContext,
    GeneralProtection,
    PageFault,
)
from tests.support.sgx2 import (
    DATA,
    DYNAMIC,
    MODIFIED,
    PAGE,
    PENDING,
    PR,
    PT_REG,
    PT_TCS,
    PT_TRIM,
    SIZE,
    R,
    Sgx2Enclave,
    W,
    X,
    secinfo,
    sgx2_enclave,
)

SGX = 0x8000


@pytest.fixture
def e() -> Sgx2Enclave:
    return sgx2_enclave()


def accepted(e: Sgx2Enclave, offset: int = DYNAMIC) -> int:
    """EAUG + EACCEPT: an accepted RW dynamic page; returns its EPC address."""
    epc = e.eaug(offset)
    assert e.accept(offset, R | W | PENDING) == SgxStatus.SUCCESS
    return epc


def trimmed(e: Sgx2Enclave, offset: int = DYNAMIC, *, accept: bool = True) -> int:
    epc = accepted(e, offset)
    assert e.emodt(offset, PT_TRIM) == SgxStatus.SUCCESS
    if accept:
        e.etrack()
        assert e.accept(offset, MODIFIED, PT_TRIM) == SgxStatus.SUCCESS
    return epc


def fault_code(e: Sgx2Enclave, action: object) -> int:
    with pytest.raises(PageFault) as info:
        e.inside(action)  # type: ignore[arg-type]
    return info.value.error_code


# -- CPUID and the SGX1-only part ---------------------------------------------------------------


def test_cpuid_12h_eax_bit1_reports_sgx2() -> None:
    """CPUID.(12H,0):EAX[1] = SGX2 (spec §0; kernel scattered.c)."""
    assert sgx2_enclave().proc.cpuid(0x12, 0)[0] == 0b11
    assert sgx2_enclave(sgx2=False).proc.cpuid(0x12, 0)[0] == 0b01


def test_sgx1_part_refuses_every_sgx2_leaf_with_gp() -> None:
    """SDM ENCLS/ENCLU: "EAX encodes an unsupported leaf" → #GP(0) — for all six leaves, and
    no EPCM state changes."""
    e = sgx2_enclave(sgx2=False)
    epc = e.epc_of(DATA)
    free = e.proc.free_epc_pages(1)[0]
    with pytest.raises(GeneralProtection, match="SGX2"):
        e.proc.eaug(e.pageinfo(e.base + DYNAMIC), free)
    with pytest.raises(GeneralProtection, match="SGX2"):
        e.proc.emodpr(e.secinfo_op(secinfo(R)), epc)
    with pytest.raises(GeneralProtection, match="SGX2"):
        e.proc.emodt(e.secinfo_op(secinfo(page_type=PT_TRIM)), epc)
    sec = e.base + DATA
    for leaf in (
        lambda ctx: ctx.eaccept(sec, e.base + DATA),
        lambda ctx: ctx.eacceptcopy(sec, e.base + DATA, e.base + DATA),
        lambda ctx: ctx.emodpe(sec, e.base + DATA),
    ):
        with pytest.raises(GeneralProtection, match="SGX2"):
            e.inside(leaf)
    assert not e.proc.epcm(free).valid
    assert e.proc.epcm(epc).permissions == R | W and not e.proc.epcm(epc).pr


# -- EAUG (spec §3.1) --------------------------------------------------------------------------


def test_eaug_success_makes_a_zeroed_pending_rw_page_and_leaves_mrenclave(e: Sgx2Enclave) -> None:
    """EAUG steps 14-15: page zeroed; EPCM PT_REG, R|W, PENDING, ENCLAVEADDRESS = LINADDR;
    no measurement (spec §8)."""
    before = e.proc.secs_info(e.secs)["mrenclave"]
    # Leave junk in the EPC page first: a dynamic page written, trimmed and removed.
    junk = accepted(e, DYNAMIC + PAGE)
    e.inside(lambda ctx: ctx.write(e.base + DYNAMIC + PAGE, b"\xaa" * PAGE))
    assert e.emodt(DYNAMIC + PAGE, PT_TRIM) == SgxStatus.SUCCESS
    e.etrack()
    assert e.accept(DYNAMIC + PAGE, MODIFIED, PT_TRIM) == SgxStatus.SUCCESS
    assert e.proc.eremove(junk) == SgxStatus.SUCCESS
    epc = junk
    assert e.proc.eaug(e.pageinfo(e.base + DYNAMIC), epc) == SgxStatus.SUCCESS
    entry = e.proc.epcm(epc)
    assert entry.valid and entry.page_type == PageType.REG and entry.permissions == R | W
    assert entry.pending and not entry.modified and not entry.pr and not entry.blocked
    assert entry.linaddr == e.base + DYNAMIC and entry.enclave_secs == e.secs
    assert e.accept(DYNAMIC, R | W | PENDING) == SgxStatus.SUCCESS
    assert e.inside(lambda ctx: ctx.read(e.base + DYNAMIC, PAGE)) == bytes(PAGE)
    assert e.proc.secs_info(e.secs)["mrenclave"] == before
    assert e.proc.secs_info(e.secs)["children"] == 3 + 4 + 1  # TCS code SSA, 4 data, +1


def test_eaug_step1_misaligned_pageinfo_or_page_gp_and_outside_epc_pf(e: Sgx2Enclave) -> None:
    """EAUG step 1: RBX not 32-byte aligned → #GP; RCX not 4 KiB aligned → #GP; RCX not in
    the EPC → #PF(RCX)."""
    free = e.proc.free_epc_pages(1)[0]
    pi = e.pageinfo(e.base + DYNAMIC)
    with pytest.raises(GeneralProtection):
        e.proc.eaug(pi + 8, free)
    with pytest.raises(GeneralProtection):
        e.proc.eaug(pi, free + 64)
    with pytest.raises(PageFault) as info:
        e.proc.eaug(pi, e.proc.epc_address(0) - PAGE)
    assert info.value.address == e.proc.epc_address(0) - PAGE


def test_eaug_step2_misaligned_secinfo_gp(e: Sgx2Enclave) -> None:
    """EAUG step 2: PAGEINFO.SECINFO ≠ 0 and not 64-byte aligned → #GP."""
    free = e.proc.free_epc_pages(1)[0]
    with pytest.raises(GeneralProtection, match="SECINFO"):
        e.proc.eaug(e.pageinfo(e.base + DYNAMIC, sec=e.scratch + 72), free)


def test_eaug_step3_misaligned_secs_or_linaddr_gp(e: Sgx2Enclave) -> None:
    """EAUG step 3: PAGEINFO.SECS or LINADDR not 4 KiB aligned → #GP."""
    free = e.proc.free_epc_pages(1)[0]
    with pytest.raises(GeneralProtection, match="aligned"):
        e.proc.eaug(e.pageinfo(e.base + DYNAMIC + 8), free)
    with pytest.raises(GeneralProtection, match="aligned"):
        e.proc.eaug(e.pageinfo(e.base + DYNAMIC, secs=e.secs + 8), free)


def test_eaug_step4_srcpge_nonzero_gp(e: Sgx2Enclave) -> None:
    """EAUG step 4: PAGEINFO.SRCPGE ≠ 0 → #GP."""
    free = e.proc.free_epc_pages(1)[0]
    with pytest.raises(GeneralProtection, match="SRCPGE"):
        e.proc.eaug(e.pageinfo(e.base + DYNAMIC, srcpge=e.scratch), free)


def test_eaug_step5_secs_outside_epc_pf(e: Sgx2Enclave) -> None:
    """EAUG step 5: SECS not in the EPC → #PF(SECS)."""
    free = e.proc.free_epc_pages(1)[0]
    with pytest.raises(PageFault) as info:
        e.proc.eaug(e.pageinfo(e.base + DYNAMIC, secs=e.scratch), free)
    assert info.value.address == e.scratch


def test_eaug_step7_target_page_valid_pf(e: Sgx2Enclave) -> None:
    """EAUG step 7: EPCM(RCX).VALID ≠ 0 → #PF(RCX); the page is untouched."""
    used = e.epc_of(DATA)
    with pytest.raises(PageFault) as info:
        e.proc.eaug(e.pageinfo(e.base + DYNAMIC), used)
    assert info.value.address == used
    assert e.proc.epcm(used).linaddr == e.base + DATA and not e.proc.epcm(used).pending


def test_eaug_step8_secinfo_gp_without_cet(e: Sgx2Enclave) -> None:
    """EAUG step 8: a SECINFO with reserved bits → #GP; any SECINFO at all → #GP on this part
    (CPUID.(12H,1):EAX[6] = 0: no CET shadow-stack pages)."""
    free = e.proc.free_epc_pages(1)[0]
    sec = e.secinfo_op(secinfo(R | W, rest=b"\x01" + bytes(55)))
    with pytest.raises(GeneralProtection, match="reserved"):
        e.proc.eaug(e.pageinfo(e.base + DYNAMIC, sec=sec), free)
    sec = e.secinfo_op(secinfo(R | W, page_type=5))  # PT_SS_FIRST
    with pytest.raises(GeneralProtection, match="CET"):
        e.proc.eaug(e.pageinfo(e.base + DYNAMIC, sec=sec), free)
    assert not e.proc.epcm(free).valid


def test_eaug_step10_secs_not_a_secs_page_pf(e: Sgx2Enclave) -> None:
    """EAUG step 10: EPCM(SECS) not a valid PT_SECS page → #PF(SECS)."""
    free = e.proc.free_epc_pages(2)
    for not_secs in (e.epc_of(DATA), free[1]):
        with pytest.raises(PageFault) as info:
            e.proc.eaug(e.pageinfo(e.base + DYNAMIC, secs=not_secs), free[0])
        assert info.value.address == not_secs


def test_eaug_step11_uninitialized_enclave_gp() -> None:
    """EAUG step 11: SECS not initialized → #GP (no dynamic page before EINIT, spec §9)."""
    from tests.support.cpu import cpu, pending

    proc = cpu(sgx2=True)
    built = pending(proc)
    free = proc.free_epc_pages(1)[0]
    pi = proc.allocate(64, align=64)
    proc.write(pi, struct.pack("<QQQQ", built.enclave.baseaddr, 0, 0, built.enclave.secs))
    with pytest.raises(GeneralProtection, match="not initialized"):
        proc.eaug(pi, free)


def test_eaug_step12_linaddr_outside_elrange_gp(e: Sgx2Enclave) -> None:
    """EAUG step 12: LINADDR < BASEADDR or ≥ BASEADDR + SIZE → #GP."""
    free = e.proc.free_epc_pages(1)[0]
    for linaddr in (e.base - PAGE, e.base + SIZE):
        with pytest.raises(GeneralProtection, match="ELRANGE"):
            e.proc.eaug(e.pageinfo(linaddr), free)


def test_eaug_which_wins_srcpge_before_valid_page(e: Sgx2Enclave) -> None:
    """Step 4 (#GP, SRCPGE) fires before step 7 (#PF, page valid)."""
    with pytest.raises(GeneralProtection):
        e.proc.eaug(e.pageinfo(e.base + DYNAMIC, srcpge=e.scratch), e.epc_of(DATA))


def test_eaug_which_wins_valid_page_before_uninitialized_or_elrange(e: Sgx2Enclave) -> None:
    """Step 7 (#PF, page valid) fires before step 12 (#GP, LINADDR outside ELRANGE)."""
    with pytest.raises(PageFault):
        e.proc.eaug(e.pageinfo(e.base + SIZE), e.epc_of(DATA))


# -- EMODPR (spec §3.2) ------------------------------------------------------------------------


def test_emodpr_success_masks_permissions_and_sets_pr(e: Sgx2Enclave) -> None:
    """EMODPR step 9: PR := 1 and R/W/X &= SECINFO's — a mask: asking for more changes
    nothing."""
    epc = accepted(e)
    assert e.emodpr(DYNAMIC, R | W | X) == SgxStatus.SUCCESS
    assert e.proc.epcm(epc).permissions == R | W and e.proc.epcm(epc).pr
    assert e.emodpr(DYNAMIC, R) == SgxStatus.SUCCESS
    assert e.proc.epcm(epc).permissions == R
    assert e.emodpr(DYNAMIC, R | W) == SgxStatus.SUCCESS
    assert e.proc.epcm(epc).permissions == R


def test_emodpr_step1_alignment_gp_and_outside_epc_pf(e: Sgx2Enclave) -> None:
    """EMODPR step 1: SECINFO not 64-byte aligned → #GP; page not 4 KiB aligned → #GP; not in
    the EPC → #PF."""
    epc = accepted(e)
    sec = e.secinfo_op(secinfo(R))
    with pytest.raises(GeneralProtection):
        e.proc.emodpr(sec + 8, epc)
    with pytest.raises(GeneralProtection):
        e.proc.emodpr(sec, epc + 8)
    with pytest.raises(PageFault):
        e.proc.emodpr(sec, e.proc.epc_address(0) - PAGE)


def test_emodpr_step2_reserved_bits_or_w_without_r_gp(e: Sgx2Enclave) -> None:
    """EMODPR step 2: SECINFO reserved bits (FLAGS bit 6, bytes 8..63) → #GP; W without R →
    #GP; the page is unchanged."""
    epc = accepted(e)
    for bad in (secinfo(R | 0x40), secinfo(R, rest=b"\x00" * 55 + b"\x01"), secinfo(W)):
        with pytest.raises(GeneralProtection):
            e.proc.emodpr(e.secinfo_op(bad), epc)
    assert e.proc.epcm(epc).permissions == R | W and not e.proc.epcm(epc).pr


def test_emodpr_step2_unconfirmed_page_type_and_state_bits_are_ignored(e: Sgx2Enclave) -> None:
    """UNCONFIRMED (spec §1.1), SDM reading: PAGE_TYPE and PENDING/MODIFIED/PR are defined
    SECINFO fields, not reserved ones, so EMODPR ignores them."""
    epc = accepted(e)
    sec = e.secinfo_op(secinfo(R | PENDING | MODIFIED | PR, page_type=PT_TRIM))
    assert e.proc.emodpr(sec, epc) == SgxStatus.SUCCESS
    assert e.proc.epcm(epc).permissions == R and e.proc.epcm(epc).page_type == PageType.REG


def test_emodpr_step4_invalid_page_pf(e: Sgx2Enclave) -> None:
    """EMODPR step 4: EPCM.VALID = 0 → #PF."""
    free = e.proc.free_epc_pages(1)[0]
    with pytest.raises(PageFault):
        e.proc.emodpr(e.secinfo_op(secinfo(R)), free)


def test_emodpr_step6_pending_page_not_modifiable(e: Sgx2Enclave) -> None:
    """EMODPR step 6: PENDING → SGX_PAGE_NOT_MODIFIABLE; nothing changes."""
    epc = e.eaug(DYNAMIC)
    assert e.emodpr(DYNAMIC, R) == SgxStatus.PAGE_NOT_MODIFIABLE
    entry = e.proc.epcm(epc)
    assert entry.permissions == R | W and entry.pending and not entry.pr


def test_emodpr_step6_modified_page_not_modifiable(e: Sgx2Enclave) -> None:
    """EMODPR step 6: MODIFIED (an EMODT'd REG→TCS page) → SGX_PAGE_NOT_MODIFIABLE."""
    accepted(e)
    assert e.emodt(DYNAMIC, PT_TCS) == SgxStatus.SUCCESS
    assert e.emodpr(DYNAMIC, R) == SgxStatus.PAGE_NOT_MODIFIABLE


def test_emodpr_step7_non_reg_page_pf(e: Sgx2Enclave) -> None:
    """EMODPR step 7: PT ≠ PT_REG (a TCS, the SECS, an accepted TRIM page) → #PF."""
    for epc in (e.enclave.tcs[0], e.secs, trimmed(e)):
        with pytest.raises(PageFault):
            e.proc.emodpr(e.secinfo_op(secinfo(R)), epc)


def test_emodpr_which_wins_not_modifiable_before_page_type(e: Sgx2Enclave) -> None:
    """Step 6 before step 7: a TRIM page still MODIFIED answers SGX_PAGE_NOT_MODIFIABLE, an
    accepted one #PF — the probe REMOVE_PAGES relies on (spec §3.2, ioctl.c)."""
    trimmed(e, accept=False)
    assert e.emodpr(DYNAMIC, R) == SgxStatus.PAGE_NOT_MODIFIABLE
    e.etrack()
    assert e.accept(DYNAMIC, MODIFIED, PT_TRIM) == SgxStatus.SUCCESS
    with pytest.raises(PageFault):
        e.emodpr(DYNAMIC, R)


def test_emodpr_step8_uninitialized_enclave_gp() -> None:
    """EMODPR step 8: SECS.ATTRIBUTES.INIT = 0 → #GP (an EADDed page before EINIT)."""
    from tests.support.cpu import cpu, pending

    proc = cpu(sgx2=True)
    built = pending(proc)
    page = next(
        epc for epc in built.enclave.pages.values() if proc.epcm(epc).page_type == PageType.REG
    )
    sec = proc.allocate(64, align=64)
    proc.write(sec, secinfo(R))
    with pytest.raises(GeneralProtection, match="not initialized"):
        proc.emodpr(sec, page)


# -- EMODT (spec §3.3) -------------------------------------------------------------------------


def test_emodt_success_sets_modified_type_and_clears_permissions(e: Sgx2Enclave) -> None:
    """EMODT step 9: PR := 0, MODIFIED := 1, R = W = X := 0, PT := SECINFO's."""
    epc = accepted(e)
    assert e.emodpr(DYNAMIC, R) == SgxStatus.SUCCESS  # PR = 1 first
    assert e.emodt(DYNAMIC, PT_TRIM) == SgxStatus.SUCCESS
    entry = e.proc.epcm(epc)
    assert entry.page_type == PageType.TRIM and entry.modified
    assert entry.permissions == 0 and not entry.pr and not entry.pending


def test_emodt_step1_alignment_gp_and_outside_epc_pf(e: Sgx2Enclave) -> None:
    """EMODT step 1: as EMODPR — misaligned operands #GP, a page outside the EPC #PF."""
    epc = accepted(e)
    sec = e.secinfo_op(secinfo(page_type=PT_TRIM))
    with pytest.raises(GeneralProtection):
        e.proc.emodt(sec + 16, epc)
    with pytest.raises(GeneralProtection):
        e.proc.emodt(sec, epc + 16)
    with pytest.raises(PageFault):
        e.proc.emodt(sec, e.proc.epc_address(0) - PAGE)


def test_emodt_step2_reserved_bits_or_bad_type_gp(e: Sgx2Enclave) -> None:
    """EMODT step 2: reserved bits, or SECINFO.PAGE_TYPE not PT_TCS / PT_TRIM → #GP."""
    epc = accepted(e)
    for bad in (secinfo(0x80, page_type=PT_TRIM), secinfo(page_type=PT_REG), secinfo(page_type=3)):
        with pytest.raises(GeneralProtection):
            e.proc.emodt(e.secinfo_op(bad), epc)
    assert e.proc.epcm(epc).page_type == PageType.REG


def test_emodt_step4_invalid_page_pf(e: Sgx2Enclave) -> None:
    """EMODT step 4: EPCM.VALID = 0 → #PF."""
    with pytest.raises(PageFault):
        e.proc.emodt(e.secinfo_op(secinfo(page_type=PT_TRIM)), e.proc.free_epc_pages(1)[0])


def test_emodt_step6_type_transition_not_allowed_pf(e: Sgx2Enclave) -> None:
    """EMODT step 6: only PT_REG → TCS/TRIM and PT_TCS → TRIM; TCS → TCS, TRIM → anything and
    the SECS → #PF."""
    tcs = e.enclave.tcs[0]
    with pytest.raises(PageFault):
        e.proc.emodt(e.secinfo_op(secinfo(page_type=PT_TCS)), tcs)
    trim = trimmed(e)
    for page_type in (PT_TCS, PT_TRIM):
        with pytest.raises(PageFault):
            e.proc.emodt(e.secinfo_op(secinfo(page_type=page_type)), trim)
    with pytest.raises(PageFault):
        e.proc.emodt(e.secinfo_op(secinfo(page_type=PT_TRIM)), e.secs)
    assert e.proc.emodt(e.secinfo_op(secinfo(page_type=PT_TRIM)), tcs) == SgxStatus.SUCCESS


def test_emodt_step7_pending_or_modified_not_modifiable(e: Sgx2Enclave) -> None:
    """EMODT step 7: PENDING or MODIFIED → SGX_PAGE_NOT_MODIFIABLE."""
    e.eaug(DYNAMIC)
    assert e.emodt(DYNAMIC, PT_TRIM) == SgxStatus.PAGE_NOT_MODIFIABLE
    accepted(e, DYNAMIC + PAGE)
    assert e.emodt(DYNAMIC + PAGE, PT_TCS) == SgxStatus.SUCCESS
    assert e.emodt(DYNAMIC + PAGE, PT_TRIM) == SgxStatus.PAGE_NOT_MODIFIABLE  # TCS-MOD


def test_emodt_which_wins_page_type_before_modified(e: Sgx2Enclave) -> None:
    """Step 6 (#PF) before step 7 — the opposite order to EMODPR: a TRIM page still MODIFIED
    answers #PF to EMODT (and NOT_MODIFIABLE to EMODPR)."""
    trimmed(e, accept=False)
    with pytest.raises(PageFault):
        e.emodt(DYNAMIC, PT_TRIM)
    assert e.emodpr(DYNAMIC, R) == SgxStatus.PAGE_NOT_MODIFIABLE


def test_emodt_step8_uninitialized_enclave_gp() -> None:
    """EMODT step 8: SECS.ATTRIBUTES.INIT = 0 → #GP."""
    from tests.support.cpu import cpu, pending

    proc = cpu(sgx2=True)
    built = pending(proc)
    page = next(
        epc for epc in built.enclave.pages.values() if proc.epcm(epc).page_type == PageType.REG
    )
    sec = proc.allocate(64, align=64)
    proc.write(sec, secinfo(page_type=PT_TRIM))
    with pytest.raises(GeneralProtection, match="not initialized"):
        proc.emodt(sec, page)


# -- EACCEPT (spec §3.4) -----------------------------------------------------------------------


def test_eaccept_step1_rbx_alignment_and_elrange_gp(e: Sgx2Enclave) -> None:
    """EACCEPT step 1: RBX not 64-byte aligned → #GP; outside ELRANGE → #GP."""
    e.eaug(DYNAMIC)
    with pytest.raises(GeneralProtection, match="64-byte"):
        e.inside(lambda ctx: ctx.eaccept(e.base + DATA + 8, e.base + DYNAMIC))
    with pytest.raises(GeneralProtection, match="ELRANGE"):
        e.inside(lambda ctx: ctx.eaccept(e.base - 64, e.base + DYNAMIC))


def test_eaccept_step1_rbx_not_present_pf(e: Sgx2Enclave) -> None:
    """EACCEPT step 1: RBX not translatable (a hole) → #PF(RBX), not present: U (0x4)."""
    e.eaug(DYNAMIC)
    hole = e.base + DYNAMIC + 4 * PAGE
    with pytest.raises(PageFault) as info:
        e.inside(lambda ctx: ctx.eaccept(hole, e.base + DYNAMIC))
    assert info.value.address == hole and info.value.error_code == 0x4


def test_eaccept_step2_secinfo_page_not_accepted_readable_reg_pf(e: Sgx2Enclave) -> None:
    """EACCEPT step 2: the SECINFO's page PENDING, or not PT_REG (the TCS), or not readable
    → #PF(RBX) with the SGX bit."""
    e.eaug(DYNAMIC)
    pending_page = e.base + DYNAMIC
    target = e.base + DYNAMIC
    with pytest.raises(PageFault) as info:
        e.inside(lambda ctx: ctx.eaccept(pending_page, target))
    assert info.value.address == pending_page and info.value.error_code == SGX | 0x5
    with pytest.raises(PageFault) as info:
        e.inside(lambda ctx: ctx.eaccept(e.base, target))  # the TCS page
    assert info.value.error_code & SGX
    accepted(e, DYNAMIC + PAGE)
    assert e.emodpr(DYNAMIC + PAGE, 0) == SgxStatus.SUCCESS  # R removed
    with pytest.raises(PageFault):
        e.inside(lambda ctx: ctx.eaccept(e.base + DYNAMIC + PAGE, target))


def test_eaccept_step3_secinfo_reserved_gp(e: Sgx2Enclave) -> None:
    """EACCEPT step 3: SECINFO reserved bits → #GP."""
    e.eaug(DYNAMIC)
    sec = e.base + DATA

    def go(ctx: EnclaveContext) -> object:
        ctx.write(sec, secinfo(R | W | PENDING | 0x40))
        return ctx.eaccept(sec, e.base + DYNAMIC)

    with pytest.raises(GeneralProtection, match="reserved"):
        e.inside(go)
    assert e.proc.epcm(e.epc_of(DYNAMIC)).pending


def test_eaccept_step4_rcx_alignment_elrange_gp_and_hole_pf(e: Sgx2Enclave) -> None:
    """EACCEPT step 4: RCX not 4 KiB aligned → #GP; outside ELRANGE → #GP; a hole → #PF(RCX)
    (P = 0, read: 0x4 — what the selftest sees on a kernel without EAUG)."""
    sec = e.base + DATA

    def go(target: int) -> Callable[[EnclaveContext], object]:
        def run(ctx: EnclaveContext) -> object:
            ctx.write(sec, secinfo(R | W | PENDING))
            return ctx.eaccept(sec, target)

        return run

    with pytest.raises(GeneralProtection, match="aligned"):
        e.inside(go(e.base + DYNAMIC + 8))
    with pytest.raises(GeneralProtection, match="ELRANGE"):
        e.inside(go(e.base + SIZE))
    with pytest.raises(PageFault) as info:
        e.inside(go(e.base + DYNAMIC))
    assert info.value.address == e.base + DYNAMIC and info.value.error_code == 0x4


@pytest.mark.parametrize(
    ("flags", "page_type"),
    [
        (R | W, PT_REG),  # REG needs PR or PENDING
        (R | W | PENDING | MODIFIED, PT_REG),  # REG with MODIFIED
        (0, PT_TRIM),  # TRIM needs MODIFIED
        (MODIFIED | PENDING, PT_TRIM),  # and nothing else
        (MODIFIED | PR, PT_TCS),
        (MODIFIED, 3),  # PT_VA is never accepted
        (PENDING, 5),  # SS_FIRST: CET only
    ],
)
def test_eaccept_step5_illegal_request_gp(e: Sgx2Enclave, flags: int, page_type: int) -> None:
    """EACCEPT step 5: a SECINFO that is not one of the legal requests → #GP."""
    e.eaug(DYNAMIC)
    with pytest.raises(GeneralProtection, match="legal"):
        e.accept(DYNAMIC, flags, page_type)


def test_eaccept_step6_blocked_page_pf(e: Sgx2Enclave) -> None:
    """EACCEPT step 6: EPCM.BLOCKED → #PF(RCX) (a blocked page is also unmapped by the OS, so
    the translation already faults, not present)."""
    epc = e.eaug(DYNAMIC)
    assert e.proc.eblock(epc) == SgxStatus.SUCCESS
    with pytest.raises(PageFault) as info:
        e.accept(DYNAMIC, R | W | PENDING)
    assert info.value.address == e.base + DYNAMIC


def test_eaccept_which_wins_secinfo_reserved_before_rcx_hole(e: Sgx2Enclave) -> None:
    """Step 3 (#GP, SECINFO reserved bits) before step 4 (#PF, RCX a hole)."""
    sec = e.base + DATA

    def go(ctx: EnclaveContext) -> object:
        ctx.write(sec, secinfo(R | W | PENDING, rest=b"\x01" + bytes(55)))
        return ctx.eaccept(sec, e.base + DYNAMIC)

    with pytest.raises(GeneralProtection, match="reserved"):
        e.inside(go)


def test_eaccept_which_wins_illegal_request_before_mismatch(e: Sgx2Enclave) -> None:
    """Step 5 (#GP, illegal request) before step 8 (status): REG without PR/PENDING on a page
    whose attributes differ anyway raises #GP rather than answering a status."""
    e.eaug(DYNAMIC)
    with pytest.raises(GeneralProtection, match="legal"):
        e.accept(DYNAMIC, R)


def test_eaccept_step8_attribute_mismatches(e: Sgx2Enclave) -> None:
    """EACCEPT step 8: PENDING, MODIFIED, R/W/X or PT different from the SECINFO's →
    SGX_PAGE_ATTRIBUTES_MISMATCH; the page stays as it was."""
    epc = e.eaug(DYNAMIC)
    assert e.accept(DYNAMIC, R | PENDING) == SgxStatus.PAGE_ATTRIBUTES_MISMATCH  # RWX
    assert e.accept(DYNAMIC, R | W | X | PENDING) == SgxStatus.PAGE_ATTRIBUTES_MISMATCH
    assert e.accept(DYNAMIC, R | W | PR) == SgxStatus.PAGE_ATTRIBUTES_MISMATCH  # PENDING
    assert e.accept(DYNAMIC, MODIFIED, PT_TRIM) == SgxStatus.PAGE_ATTRIBUTES_MISMATCH  # PT
    assert e.proc.epcm(epc).pending
    # A plain EADDed TCS asked to accept TCS|MODIFIED: MODIFIED differs.
    assert e.accept(0, MODIFIED, PT_TCS) == SgxStatus.PAGE_ATTRIBUTES_MISMATCH


def test_eaccept_step8_pr_is_not_compared(e: Sgx2Enclave) -> None:
    """EACCEPT step 8 (spec inference): EPCM.PR is not compared; REG|PR|RWX on a page that
    was never restricted succeeds (and needs no tracking)."""
    accepted(e)
    assert e.accept(DYNAMIC, R | W | PR) == SgxStatus.SUCCESS


def test_eaccept_step9_not_tracked_until_etrack(e: Sgx2Enclave) -> None:
    """EACCEPT step 9: after EMODPR the page needs tracking → SGX_NOT_TRACKED until an ETRACK;
    the page keeps PR meanwhile."""
    epc = accepted(e)
    assert e.emodpr(DYNAMIC, R) == SgxStatus.SUCCESS
    assert e.accept(DYNAMIC, R | PR) == SgxStatus.NOT_TRACKED
    assert e.proc.epcm(epc).pr
    e.etrack()
    assert e.accept(DYNAMIC, R | PR) == SgxStatus.SUCCESS
    assert not e.proc.epcm(epc).pr and e.proc.epcm(epc).permissions == R


def test_eaccept_step9_not_tracked_while_a_thread_of_the_etrack_epoch_is_inside(
    e: Sgx2Enclave,
) -> None:
    """Step 9: the ETRACK must be complete — a thread inside at the ETRACK (this one) has to
    leave first (same rule as EWB's)."""
    accepted(e)
    sec = e.base + DATA

    def restrict_and_accept(ctx: EnclaveContext) -> SgxStatus:
        assert e.emodt(DYNAMIC, PT_TRIM) == SgxStatus.SUCCESS
        assert e.proc.etrack(e.secs) == SgxStatus.SUCCESS  # while we are inside
        ctx.write(sec, secinfo(MODIFIED, page_type=PT_TRIM))
        return ctx.eaccept(sec, e.base + DYNAMIC)

    assert e.inside(restrict_and_accept) == SgxStatus.NOT_TRACKED
    assert e.accept(DYNAMIC, MODIFIED, PT_TRIM) == SgxStatus.SUCCESS


def test_eaccept_which_wins_mismatch_before_not_tracked(e: Sgx2Enclave) -> None:
    """Step 8 (mismatch) before step 9 (tracking): a wrong request on an untracked page
    answers SGX_PAGE_ATTRIBUTES_MISMATCH."""
    accepted(e)
    assert e.emodpr(DYNAMIC, R) == SgxStatus.SUCCESS
    assert e.accept(DYNAMIC, R | W | PR) == SgxStatus.PAGE_ATTRIBUTES_MISMATCH
    assert e.accept(DYNAMIC, R | PR) == SgxStatus.NOT_TRACKED


def tcs_bytes(*, cssa: int = 0, nssa: int = 1, aep: int = 0, flags: int = 0) -> bytes:
    head = struct.pack("<QQQII", 0, flags, DATA, cssa, nssa) + struct.pack("<QQ", 0x1000, aep)
    return (head + bytes(16) + struct.pack("<II", 0xFFFFFFFF, 0xFFFFFFFF)).ljust(PAGE, b"\0")


@pytest.mark.parametrize(
    "tcs",
    [
        tcs_bytes(cssa=1, nssa=1),  # CSSA ≥ NSSA
        tcs_bytes(aep=0x1000),  # AEP ≠ 0
        tcs_bytes(flags=1),  # DBGOPTIN
        tcs_bytes(flags=4),  # reserved FLAGS bit
        tcs_bytes()[:100] + b"\x01" + tcs_bytes()[101:],  # reserved bytes
    ],
)
def test_eaccept_step10_new_tcs_checks_gp(e: Sgx2Enclave, tcs: bytes) -> None:
    """EACCEPT step 10 (accepting a TCS): reserved fields, DBGOPTIN, CSSA ≥ NSSA, AEP ≠ 0 →
    #GP, and the page stays MODIFIED (not enterable)."""
    epc = accepted(e)
    e.inside(lambda ctx: ctx.write(e.base + DYNAMIC, tcs))
    assert e.emodt(DYNAMIC, PT_TCS) == SgxStatus.SUCCESS
    e.etrack()
    with pytest.raises(GeneralProtection, match="TCS"):
        e.accept(DYNAMIC, MODIFIED, PT_TCS)
    assert e.proc.epcm(epc).modified


def test_eaccept_step11_tcs_becomes_enterable(e: Sgx2Enclave) -> None:
    """EACCEPT step 11 on a TCS-MOD page: MODIFIED := 0 — EENTER refuses the page before
    (#PF: MODIFIED) and enters through it after (selftest tcs_create's flow)."""
    epc = accepted(e)
    e.inside(lambda ctx: ctx.write(e.base + DYNAMIC, tcs_bytes()))
    assert e.emodt(DYNAMIC, PT_TCS) == SgxStatus.SUCCESS
    with pytest.raises(PageFault, match="accepted TCS"):
        e.proc.eenter(epc)
    e.etrack()
    assert e.accept(DYNAMIC, MODIFIED, PT_TCS) == SgxStatus.SUCCESS
    from tests.support.sgx2 import Runner

    Runner.action = lambda ctx: 7
    assert e.proc.eenter(epc) == b"" and Runner.result == 7
    Runner.action = None


# -- EACCEPTCOPY (spec §3.5) -------------------------------------------------------------------


def copy_op(e: Sgx2Enclave, flags: int, dest: int, src: int, page_type: int = PT_REG) -> object:
    sec = e.base + DATA

    def go(ctx: EnclaveContext) -> SgxStatus:
        ctx.write(sec, secinfo(flags, page_type=page_type))
        return ctx.eacceptcopy(sec, dest, src)

    return e.inside(go)


def test_eacceptcopy_success_copies_and_sets_permissions_atomically(e: Sgx2Enclave) -> None:
    """EACCEPTCOPY step 8: contents copied, R/W/X := SECINFO's (R-X: never RWX), PENDING := 0."""
    src = e.base + DATA + PAGE
    e.inside(lambda ctx: ctx.write(src, b"code" * 1024))
    epc = e.eaug(DYNAMIC)
    assert copy_op(e, R | X, e.base + DYNAMIC, src) == SgxStatus.SUCCESS
    entry = e.proc.epcm(epc)
    assert entry.permissions == R | X and not entry.pending
    assert e.inside(lambda ctx: ctx.read(e.base + DYNAMIC, PAGE)) == b"code" * 1024


def test_eacceptcopy_step1_alignment_and_elrange_gp(e: Sgx2Enclave) -> None:
    """EACCEPTCOPY step 1: RBX not 64-byte aligned, RCX/RDX not 4 KiB aligned, or any outside
    ELRANGE → #GP."""
    e.eaug(DYNAMIC)
    d, s, sec = e.base + DYNAMIC, e.base + DATA + PAGE, e.base + DATA
    for rbx, rcx, rdx in (
        (sec + 8, d, s),
        (sec, d + 8, s),
        (sec, d, s + 8),
        (sec, e.base + SIZE, s),
    ):
        with pytest.raises(GeneralProtection):
            e.inside(
                functools.partial(EnclaveContext.eacceptcopy, secinfo=rbx, dest=rcx, source=rdx)
            )


def test_eacceptcopy_step1_translation_faults_in_rbx_rcx_rdx_order(e: Sgx2Enclave) -> None:
    """EACCEPTCOPY step 1: RBX, RCX, RDX translated in that order → #PF at the first hole."""
    sec = e.base + DATA
    d, s = e.base + DYNAMIC, e.base + DYNAMIC + PAGE
    with pytest.raises(PageFault) as info:
        e.inside(lambda ctx: ctx.eacceptcopy(sec, d, s))
    assert info.value.address == d and info.value.error_code == 0x6  # a write, not present
    e.eaug(DYNAMIC)
    with pytest.raises(PageFault) as info:
        e.inside(lambda ctx: ctx.eacceptcopy(sec, d, s))
    assert info.value.address == s and info.value.error_code == 0x4


def test_eacceptcopy_step2_secinfo_page_pf(e: Sgx2Enclave) -> None:
    """EACCEPTCOPY step 2: the SECINFO's page not accepted → #PF(RBX) with the SGX bit."""
    e.eaug(DYNAMIC)
    e.eaug(DYNAMIC + PAGE)
    with pytest.raises(PageFault) as info:
        e.inside(
            lambda ctx: ctx.eacceptcopy(e.base + DYNAMIC + PAGE, e.base + DYNAMIC, e.base + DATA)
        )
    assert info.value.address == e.base + DYNAMIC + PAGE and info.value.error_code & SGX


@pytest.mark.parametrize(
    ("flags", "page_type"), [(R | 0x80, PT_REG), (W, PT_REG), (R | W, PT_TCS), (R, PT_TRIM)]
)
def test_eacceptcopy_step3_secinfo_gp(e: Sgx2Enclave, flags: int, page_type: int) -> None:
    """EACCEPTCOPY step 3: reserved bits, W without R, or PT ≠ PT_REG → #GP."""
    e.eaug(DYNAMIC)
    with pytest.raises(GeneralProtection):
        copy_op(e, flags, e.base + DYNAMIC, e.base + DATA + PAGE, page_type)
    assert e.proc.epcm(e.epc_of(DYNAMIC)).pending


def test_eacceptcopy_step4_source_not_accepted_readable_pf(e: Sgx2Enclave) -> None:
    """EACCEPTCOPY step 4: the source PENDING (or not R) → #PF(RDX) with the SGX bit."""
    e.eaug(DYNAMIC)
    e.eaug(DYNAMIC + PAGE)
    with pytest.raises(PageFault) as info:
        copy_op(e, R | X, e.base + DYNAMIC, e.base + DYNAMIC + PAGE)
    assert info.value.address == e.base + DYNAMIC + PAGE and info.value.error_code & SGX


def test_eacceptcopy_step5_destination_not_pending_mismatch(e: Sgx2Enclave) -> None:
    """EACCEPTCOPY step 5: the destination not PENDING (an accepted page, a TRIM page) →
    SGX_PAGE_ATTRIBUTES_MISMATCH, contents untouched."""
    accepted(e)
    e.inside(lambda ctx: ctx.write(e.base + DYNAMIC, b"keep"))
    status = copy_op(e, R | X, e.base + DYNAMIC, e.base + DATA + PAGE)
    assert status == SgxStatus.PAGE_ATTRIBUTES_MISMATCH
    assert e.inside(lambda ctx: ctx.read(e.base + DYNAMIC, 4)) == b"keep"
    trimmed(e, DYNAMIC + PAGE)
    status = copy_op(e, R, e.base + DYNAMIC + PAGE, e.base + DATA + PAGE)
    assert status == SgxStatus.PAGE_ATTRIBUTES_MISMATCH


def test_eacceptcopy_which_wins_source_fault_before_destination_status(e: Sgx2Enclave) -> None:
    """Step 4 (#PF, source) before step 5 (status, destination)."""
    accepted(e)
    e.eaug(DYNAMIC + PAGE)
    with pytest.raises(PageFault):
        copy_op(e, R, e.base + DYNAMIC, e.base + DYNAMIC + PAGE)


# -- EMODPE (spec §3.6) ------------------------------------------------------------------------


def test_emodpe_success_extends_permissions_and_keeps_pr(e: Sgx2Enclave) -> None:
    """EMODPE step 8: R/W/X |= SECINFO's; PR neither checked nor changed (no ETRACK)."""
    epc = accepted(e)
    assert e.emodpr(DYNAMIC, R) == SgxStatus.SUCCESS
    e.emodpe(DYNAMIC, X)
    entry = e.proc.epcm(epc)
    assert entry.permissions == R | X and entry.pr


def test_emodpe_step1_alignment_and_elrange_gp_and_hole_pf(e: Sgx2Enclave) -> None:
    """EMODPE step 1: misaligned RBX/RCX or outside ELRANGE → #GP; a hole → #PF(RCX)."""
    sec = e.base + DATA
    for rbx, rcx in ((sec + 8, e.base + DATA), (sec, e.base + DATA + 8), (sec, e.base + SIZE)):
        with pytest.raises(GeneralProtection):
            e.inside(functools.partial(EnclaveContext.emodpe, secinfo=rbx, page=rcx))
    with pytest.raises(PageFault) as info:
        e.inside(lambda ctx: ctx.emodpe(sec, e.base + DYNAMIC))
    assert info.value.address == e.base + DYNAMIC and info.value.error_code == 0x4


def test_emodpe_step2_secinfo_page_pf(e: Sgx2Enclave) -> None:
    """EMODPE step 2: the SECINFO's page PENDING → #PF(RBX)."""
    e.eaug(DYNAMIC)
    with pytest.raises(PageFault) as info:
        e.inside(lambda ctx: ctx.emodpe(e.base + DYNAMIC, e.base + DATA))
    assert info.value.address == e.base + DYNAMIC


def test_emodpe_step3_reserved_gp(e: Sgx2Enclave) -> None:
    """EMODPE step 3: SECINFO reserved bits → #GP."""
    with pytest.raises(GeneralProtection, match="reserved"):
        e.emodpe(DATA + PAGE, X | 0x40)


def test_emodpe_step4_pending_modified_or_non_reg_page_pf(e: Sgx2Enclave) -> None:
    """EMODPE step 4: the page PENDING, MODIFIED (TCS-MOD) or not PT_REG (a TCS) → #PF(RCX)
    with the SGX bit; permissions unchanged."""
    epc = e.eaug(DYNAMIC)
    with pytest.raises(PageFault) as info:
        e.emodpe(DYNAMIC, X)
    assert info.value.error_code & SGX and e.proc.epcm(epc).permissions == R | W
    accepted(e, DYNAMIC + PAGE)
    assert e.emodt(DYNAMIC + PAGE, PT_TCS) == SgxStatus.SUCCESS
    with pytest.raises(PageFault):
        e.emodpe(DYNAMIC + PAGE, X)
    with pytest.raises(PageFault):
        e.emodpe(0, X)  # the TCS


def test_emodpe_step7_unconfirmed_w_without_r_gp(e: Sgx2Enclave) -> None:
    """EMODPE step 7 (UNCONFIRMED, no THEN in the extract; we #GP): EPCM.R = 0 and SECINFO
    W without R → #GP; with R it succeeds."""
    epc = accepted(e)
    assert e.emodpr(DYNAMIC, 0) == SgxStatus.SUCCESS
    with pytest.raises(GeneralProtection, match="readable"):
        e.emodpe(DYNAMIC, W)
    assert e.proc.epcm(epc).permissions == 0
    e.emodpe(DYNAMIC, R | W)
    assert e.proc.epcm(epc).permissions == R | W


# -- enclave-mode access (spec §3.8) -----------------------------------------------------------


def test_access_to_pending_page_faults_with_sgx_bit(e: Sgx2Enclave) -> None:
    """A PENDING page: read → 0x8005, write → 0x8007 (selftest augment), fetch → 0x8015."""
    e.eaug(DYNAMIC)
    a = e.base + DYNAMIC
    assert fault_code(e, lambda ctx: ctx.read(a, 1)) == 0x8005
    assert fault_code(e, lambda ctx: ctx.write(a, b"x")) == 0x8007
    assert fault_code(e, lambda ctx: ctx.execute(a)) == 0x8015


def test_access_to_trim_and_modified_pages_faults_with_sgx_bit(e: Sgx2Enclave) -> None:
    """A TRIM page, before and after EACCEPT: read → 0x8005 (selftest
    remove_added_page_invalid_access*); a TCS-MOD page likewise."""
    trimmed(e, accept=False)
    a = e.base + DYNAMIC
    assert fault_code(e, lambda ctx: ctx.read(a, 1)) == 0x8005
    e.etrack()
    assert e.accept(DYNAMIC, MODIFIED, PT_TRIM) == SgxStatus.SUCCESS
    assert fault_code(e, lambda ctx: ctx.read(a, 1)) == 0x8005


def test_access_after_emodpr_is_refused_by_the_epcm_even_before_eaccept(e: Sgx2Enclave) -> None:
    """Spec §2 (REG-PR: per the new RWX, inference): EMODPR(R) takes effect at once; a write
    → 0x8007 (selftest epcm_permissions), and EMODPE(W) fixes it."""
    accepted(e)
    assert e.emodpr(DYNAMIC, R) == SgxStatus.SUCCESS
    assert fault_code(e, lambda ctx: ctx.write(e.base + DYNAMIC, b"x")) == 0x8007
    e.emodpe(DYNAMIC, W)
    e.inside(lambda ctx: ctx.write(e.base + DYNAMIC, b"x"))


class TableMmu:
    """Page-table permissions per linear page (PROT bits: R=1 W=2 X=4; absent = no VMA), and
    a fault handler that EAUGs holes once (mainline sgx_vma_fault's EAUG branch)."""

    def __init__(self, e: Sgx2Enclave, prot: dict[int, int], *, eaug: bool = False) -> None:
        self.e = e
        self.prot = prot
        self.eaug = eaug
        self.faults: list[tuple[int, int, int]] = []

    def walk(self, secs: int, linaddr: int, access: int) -> int:
        prot = self.prot.get(linaddr)
        if prot is None:
            return 0x4 | access & 0x12
        need = {1: 1, 2: 2, 0x10: 4}[access]
        resident = self.e.proc.state.valid  # present bit: an EPC page exists at the address
        present = any(
            resident[i] and self.e.proc.state.linaddr[i] == linaddr
            for i in range(self.e.proc.epc_pages)
        )
        return 0 if prot & need else (0x4 | access & 0x12 | int(present))

    def fault(self, secs: int, linaddr: int, error_code: int) -> bool:
        self.faults.append((secs, linaddr, error_code))
        assert self.e.proc.state.secs_state[(secs - self.e.proc.epc_base) >> 12].threads == 0
        page = linaddr & ~0xFFF
        if self.eaug and not error_code & 1 and page - self.e.base >= DYNAMIC:
            self.e.eaug(page - self.e.base)
            return True
        return False


def test_mmu_paging_check_wins_over_the_epcm(e: Sgx2Enclave) -> None:
    """Spec §3.8 order: paging first — a write to a PENDING page through a read-only PTE is a
    plain #PF (0x7, selftest pte_permissions), not the SGX one."""
    e.eaug(DYNAMIC)
    a = e.base + DYNAMIC
    e.proc.mmu = TableMmu(e, {a: 1})
    assert fault_code(e, lambda ctx: ctx.write(a, b"x")) == 0x7
    assert fault_code(e, lambda ctx: ctx.read(a, 1)) == 0x8005


def test_mmu_fault_handler_eaugs_and_eaccept_retries(e: Sgx2Enclave) -> None:
    """EACCEPT on a hole: #PF (P = 0) to the OS, which EAUGs; the leaf runs again and succeeds
    (selftest augment_via_eaccept); the thread was outside the enclave during the fault."""
    mmu = TableMmu(e, {e.base + DATA: 3, e.base + DYNAMIC: 3}, eaug=True)
    e.proc.mmu = mmu
    assert e.accept(DYNAMIC, R | W | PENDING) == SgxStatus.SUCCESS
    assert mmu.faults == [(e.secs, e.base + DYNAMIC, 0x4)]
    e.inside(lambda ctx: ctx.write(e.base + DYNAMIC, b"ok"))


def test_mmu_write_to_hole_eaugs_then_faults_on_pending(e: Sgx2Enclave) -> None:
    """Selftest augment: the first fault (P = 0) is swallowed by EAUG, the retried write meets
    the PENDING page → #PF 0x8007 delivered to the OS, which gives up."""
    mmu = TableMmu(e, {e.base + DYNAMIC: 3}, eaug=True)
    e.proc.mmu = mmu
    assert fault_code(e, lambda ctx: ctx.write(e.base + DYNAMIC, b"x")) == 0x8007
    assert [code for _, _, code in mmu.faults] == [0x6, 0x8007]


def test_no_mmu_keeps_the_sgx1_fault_path(e: Sgx2Enclave) -> None:
    """Without an MMU only not-present faults reach page_fault_handler (as before SGX2)."""
    calls: list[int] = []

    def handler(secs: int, linaddr: int) -> bool:
        calls.append(linaddr)
        return False

    e.proc.page_fault_handler = handler
    e.eaug(DYNAMIC)
    assert fault_code(e, lambda ctx: ctx.read(e.base + DYNAMIC, 1)) == 0x8005
    assert calls == []
    assert fault_code(e, lambda ctx: ctx.read(e.base + DYNAMIC + PAGE, 1)) == 0x4
    assert calls == [e.base + DYNAMIC + PAGE]


# -- EREMOVE / EBLOCK / EWB / ELDU with SGX2 pages (spec §3.7) ---------------------------------


def test_eremove_accepted_trim_page_with_threads_inside(e: Sgx2Enclave) -> None:
    """Spec §3.7: an accepted TRIM page is freed even with a thread inside; a TRIM page still
    MODIFIED, and a PENDING page, answer SGX_ENCLAVE_ACT."""
    acc = trimmed(e)
    mod = trimmed(e, DYNAMIC + PAGE, accept=False)
    pend = e.eaug(DYNAMIC + 2 * PAGE)

    def inside(ctx: EnclaveContext) -> list[SgxStatus]:
        return [e.proc.eremove(acc), e.proc.eremove(mod), e.proc.eremove(pend)]

    assert e.inside(inside) == [SgxStatus.SUCCESS, SgxStatus.ENCLAVE_ACT, SgxStatus.ENCLAVE_ACT]
    assert not e.proc.epcm(acc).valid and e.proc.epcm(mod).valid and e.proc.epcm(pend).valid
    assert e.proc.eremove(mod) == SgxStatus.SUCCESS and e.proc.eremove(pend) == SgxStatus.SUCCESS


def test_eblock_accepts_a_trim_page(e: Sgx2Enclave) -> None:
    """SDM EBLOCK: PT_TRIM is blockable (only SECS → PG_IS_SECS, VA → NOTBLOCKABLE)."""
    epc = trimmed(e)
    assert e.proc.eblock(epc) == SgxStatus.SUCCESS
    assert e.proc.eblock(epc) == SgxStatus.BLKSTATE


@pytest.mark.parametrize("native", [False, None])
@pytest.mark.parametrize("state", ["pending", "pr", "trim-mod", "tcs-mod"])
def test_ewb_eldu_round_trip_keeps_sgx2_state(state: str, native: bool | None) -> None:
    """Spec §1.3: EWB saves PT, RWX, PENDING, MODIFIED, PR in PCMD.SECINFO.FLAGS (and the
    MAC); ELDU restores them — in the Python leaves and through the native fast path."""
    e = sgx2_enclave(native=native)
    if state == "pending":
        epc = e.eaug(DYNAMIC)
    elif state == "pr":
        epc = accepted(e)
        assert e.emodpr(DYNAMIC, R) == SgxStatus.SUCCESS
    else:
        epc = accepted(e)
        assert e.emodt(DYNAMIC, PT_TRIM if state == "trim-mod" else PT_TCS) == SgxStatus.SUCCESS
    before = e.proc.epcm(epc)
    proc = e.proc
    va = proc.free_epc_pages(1)[0]
    assert proc.epa(va) == SgxStatus.SUCCESS
    assert proc.eblock(epc) == SgxStatus.SUCCESS
    e.etrack()
    contents, pcmd = proc.allocate(PAGE), proc.allocate(128, align=128)
    pi = proc.allocate(32, align=32)
    proc.write(pi, struct.pack("<QQQQ", 0, contents, pcmd, 0))
    assert proc.ewb(pi, epc, va) == SgxStatus.SUCCESS
    flags = struct.unpack("<Q", proc.read(pcmd, 8))[0]
    assert flags == (int(before.page_type) << 8) | before.permissions | (
        PENDING * before.pending | MODIFIED * before.modified | PR * before.pr
    )
    proc.write(pi, struct.pack("<QQQQ", e.base + DYNAMIC, contents, pcmd, e.secs))
    assert proc.eldu(pi, epc, va) == SgxStatus.SUCCESS
    after = proc.epcm(epc)
    assert after == before


def test_ewb_tampered_sgx2_bits_fail_the_mac(e: Sgx2Enclave) -> None:
    """Clearing PENDING in a saved PCMD (to skip EACCEPT) gives SGX_MAC_COMPARE_FAIL."""
    epc = e.eaug(DYNAMIC)
    proc = e.proc
    va = proc.free_epc_pages(1)[0]
    assert proc.epa(va) == SgxStatus.SUCCESS
    assert proc.eblock(epc) == SgxStatus.SUCCESS
    e.etrack()
    contents, pcmd = proc.allocate(PAGE), proc.allocate(128, align=128)
    pi = proc.allocate(32, align=32)
    proc.write(pi, struct.pack("<QQQQ", 0, contents, pcmd, 0))
    assert proc.ewb(pi, epc, va) == SgxStatus.SUCCESS
    flags = struct.unpack("<Q", proc.read(pcmd, 8))[0]
    proc.write(pcmd, struct.pack("<Q", flags & ~PENDING))
    proc.write(pi, struct.pack("<QQQQ", e.base + DYNAMIC, contents, pcmd, e.secs))
    assert proc.eldu(pi, epc, va) == SgxStatus.MAC_COMPARE_FAIL
    assert not proc.epcm(epc).valid
