"""ECREATE / EADD / EEXTEND: the SDM's operand checks and the measurement they build."""

from __future__ import annotations

import struct

import pytest

from sgxlaunch.arch import Attributes, PageType, Secs, SgxStatus, Tcs
from sgxlaunch.arch.constants import AttributeFlag, SecinfoFlag, secinfo_flags
from sgxlaunch.cpu import GeneralProtection, PageFault, Processor
from sgxlaunch.measure import Measurement
from tests.support.cpu import PROD, cpu

PAGE = 4096
REG_RW = secinfo_flags(PageType.REG, SecinfoFlag.R | SecinfoFlag.W)
SIZE = 0x10000
BASE = 0x40000


class Builder:
    """Drives the leaves by hand, the way a driver does."""

    def __init__(self, proc: Processor) -> None:
        self.proc = proc
        self.ctl = proc.allocate(4 * PAGE)
        self.pageinfo = self.ctl + 3 * PAGE
        self.secinfo = self.ctl + 3 * PAGE + 64
        self.src = self.ctl + PAGE

    def ecreate(self, secs: Secs, *, target: int | None = None) -> int:
        page = self.proc.free_epc_pages(1)[0] if target is None else target
        self.proc.write(self.ctl, secs.to_bytes())
        self.proc.write(self.secinfo, bytes(64))
        self.proc.write(self.pageinfo, struct.pack("<QQQQ", 0, self.ctl, self.secinfo, 0))
        assert self.proc.ecreate(self.pageinfo, page) == SgxStatus.SUCCESS
        return page

    def eadd(self, secs: int, offset: int, data: bytes, flags: int = REG_RW, **kw: int) -> int:
        page = kw.get("target", 0) or self.proc.free_epc_pages(1)[0]
        self.proc.write(self.src, data)
        self.proc.write(self.secinfo, struct.pack("<Q56x", flags))
        self.proc.write(
            self.pageinfo, struct.pack("<QQQQ", BASE + offset, self.src, self.secinfo, secs)
        )
        assert self.proc.eadd(self.pageinfo, page) == SgxStatus.SUCCESS
        return page


def _secs(**kw: object) -> Secs:
    values: dict[str, object] = {
        "size": SIZE,
        "baseaddr": BASE,
        "ssaframesize": 1,
        "attributes": Attributes(flags=PROD, xfrm=0x3),
    }
    values.update(kw)
    return Secs(**values)  # type: ignore[arg-type]


def test_ecreate_eadd_eextend_measure_like_the_reference() -> None:
    proc = cpu()
    b = Builder(proc)
    secs = b.ecreate(_secs())
    data = [bytes([k]) * PAGE for k in range(1, 4)]
    ref = Measurement()
    ref.ecreate(1, SIZE)
    p0 = b.eadd(secs, 0, data[0])
    ref.eadd(0, REG_RW)
    proc.eextend_page(secs, p0)
    for c in range(16):
        ref.eextend(256 * c, data[0][256 * c : 256 * c + 256])
    p1 = b.eadd(secs, 0x3000, data[1])
    ref.eadd(0x3000, REG_RW)
    for c in (0, 5, 15):  # a partial page, chunk by chunk
        proc.eextend(secs, p1 + 256 * c)
        ref.eextend(0x3000 + 256 * c, data[1][256 * c : 256 * c + 256])
    b.eadd(secs, 0x5000, data[2])  # added, not measured
    ref.eadd(0x5000, REG_RW)
    enclave = proc.state.secs_state[(secs - proc.epc_base) >> 12]
    enclave.flush()
    assert enclave.measurement.digest() == ref.mrenclave()
    assert enclave.updates == ref.update_count


def test_eextend_page_equals_sixteen_eextends() -> None:
    digests = []
    for paged in (True, False):
        proc = cpu()
        b = Builder(proc)
        secs = b.ecreate(_secs())
        page = b.eadd(secs, 0x2000, bytes(range(256)) * 16)
        if paged:
            proc.eextend_page(secs, page)
        else:
            for c in range(16):
                proc.eextend(secs, page + 256 * c)
        enclave = proc.state.secs_state[(secs - proc.epc_base) >> 12]
        enclave.flush()
        digests.append(enclave.measurement.digest())
    assert digests[0] == digests[1]


@pytest.mark.parametrize(
    "secs",
    [
        _secs(size=4096),
        _secs(size=3 * PAGE),
        _secs(baseaddr=BASE + PAGE),
        _secs(attributes=Attributes(flags=PROD | int(AttributeFlag.INIT), xfrm=3)),
        _secs(attributes=Attributes(flags=PROD | (1 << 3), xfrm=3)),
        _secs(attributes=Attributes(flags=PROD | int(AttributeFlag.KSS), xfrm=3)),
        _secs(attributes=Attributes(flags=PROD, xfrm=0x1)),
        _secs(attributes=Attributes(flags=PROD, xfrm=0x3 | (1 << 9))),
        _secs(miscselect=0x2),
        _secs(ssaframesize=0),
        _secs(configsvn=1),
        _secs(configid=b"\x01" * 64),
        _secs(reserved4=b"\x01" + bytes(3833)),
        _secs(cet_attributes=1),
        # SDM ECREATE: BASEADDR not canonical (64-bit) → #GP.
        _secs(baseaddr=1 << 47),
        # SDM ECREATE: SIZE beyond CPUID.(12H,0):EDX[15:8] (2^47) → #GP.
        _secs(size=1 << 48, baseaddr=0),
        # SDM ECREATE: a 32-bit enclave's SIZE beyond CPUID.(12H,0):EDX[7:0] (2^31) → #GP.
        _secs(size=1 << 32, baseaddr=0, attributes=Attributes(flags=0, xfrm=3)),
        # SDM ECREATE: XFRM not a legal XCR0 (BNDREGS without BNDCSR) → #GP.
        _secs(attributes=Attributes(flags=PROD, xfrm=0x3 | 1 << 3)),
        _secs(attributes=Attributes(flags=PROD, xfrm=0x3 | 1 << 4)),
    ],
    ids=[
        "size-small",
        "size-not-pow2",
        "base-misaligned",
        "init-set",
        "reserved-flag",
        "kss-unsupported",
        "xfrm-no-sse",
        "xfrm-unsupported",
        "miscselect-unsupported",
        "ssaframesize-zero",
        "configsvn-without-kss",
        "configid-without-kss",
        "reserved",
        "cet",
        "base-not-canonical",
        "size-beyond-64bit-max",
        "size-beyond-32bit-max",
        "xfrm-bndregs-alone",
        "xfrm-bndcsr-alone",
    ],
)
def test_ecreate_rejects_bad_secs(secs: Secs) -> None:
    proc = cpu()
    b = Builder(proc)
    proc.write(b.ctl, secs.to_bytes())
    proc.write(b.secinfo, bytes(64))
    proc.write(b.pageinfo, struct.pack("<QQQQ", 0, b.ctl, b.secinfo, 0))
    with pytest.raises(GeneralProtection):
        proc.ecreate(b.pageinfo, proc.epc_address(0))
    assert not proc.epcm(proc.epc_address(0)).valid


def test_ecreate_accepts_canonical_high_bases_and_paired_mpx() -> None:
    """The other side of the canonical and legal-XFRM checks (SDM ECREATE)."""
    proc = cpu()
    b = Builder(proc)
    b.ecreate(_secs(baseaddr=(2**64 - (1 << 47)) & ~(SIZE - 1)))  # sign-extended bit 47
    b.ecreate(_secs(attributes=Attributes(flags=PROD, xfrm=0x3 | 1 << 3 | 1 << 4)))
    assert proc.cpuid(0x12, 0)[3] == 47 << 8 | 31  # the maxima the checks use


def test_ecreate_ssaframesize_must_hold_the_xsave_area_for_xfrm() -> None:
    """SDM ECREATE: SSAFRAMESIZE smaller than XSAVE(XFRM) + MISC + GPRSGX → #GP. With AMX
    (XTILEDATA, 8 KiB at offset 2816) the frame needs 3 pages; x87|SSE fit in one."""
    from sgxlaunch.cpu.build import ssa_frame_pages, xsave_size

    amx = 0x3 | 1 << 17 | 1 << 18
    assert xsave_size(0x3) == 576 and xsave_size(amx) == 2816 + 8192
    assert ssa_frame_pages(0x3, 0) == 1 and ssa_frame_pages(amx, 1) == 3
    proc = cpu(xfrm_allowed=amx)
    b = Builder(proc)
    for frames in (1, 2):
        proc.write(
            b.ctl,
            _secs(ssaframesize=frames, attributes=Attributes(flags=PROD, xfrm=amx)).to_bytes(),
        )
        proc.write(b.secinfo, bytes(64))
        proc.write(b.pageinfo, struct.pack("<QQQQ", 0, b.ctl, b.secinfo, 0))
        with pytest.raises(GeneralProtection, match="SSAFRAMESIZE"):
            proc.ecreate(b.pageinfo, proc.epc_address(0))
    b.ecreate(_secs(ssaframesize=3, attributes=Attributes(flags=PROD, xfrm=amx)))


def test_ecreate_accepts_kss_on_a_kss_part() -> None:
    proc = cpu(kss=True)
    b = Builder(proc)
    b.ecreate(
        _secs(attributes=Attributes(flags=PROD | int(AttributeFlag.KSS), xfrm=3), configsvn=2)
    )


def test_ecreate_operand_checks() -> None:
    proc = cpu()
    b = Builder(proc)
    proc.write(b.ctl, _secs().to_bytes())
    proc.write(b.secinfo, bytes(64))
    proc.write(b.pageinfo, struct.pack("<QQQQ", 0, b.ctl, b.secinfo, 0))
    with pytest.raises(GeneralProtection):
        proc.ecreate(b.pageinfo + 8, proc.epc_address(0))  # PAGEINFO misaligned
    with pytest.raises(GeneralProtection):
        proc.ecreate(b.pageinfo, proc.epc_address(0) + 64)  # EPC page misaligned
    with pytest.raises(PageFault):
        proc.ecreate(b.pageinfo, b.ctl)  # not an EPC page
    proc.write(b.pageinfo, struct.pack("<QQQQ", PAGE, b.ctl, b.secinfo, 0))
    with pytest.raises(GeneralProtection):
        proc.ecreate(b.pageinfo, proc.epc_address(0))  # LINADDR must be 0
    proc.write(b.pageinfo, struct.pack("<QQQQ", 0, b.ctl, b.secinfo, 0))
    proc.write(b.secinfo, struct.pack("<Q56x", 1 << 40))
    with pytest.raises(GeneralProtection):
        proc.ecreate(b.pageinfo, proc.epc_address(0))  # SECINFO reserved bits
    proc.write(b.secinfo, struct.pack("<Q56x", REG_RW))
    with pytest.raises(GeneralProtection):
        proc.ecreate(b.pageinfo, proc.epc_address(0))  # SECINFO page type is not PT_SECS
    proc.write(b.secinfo, bytes(64))
    assert proc.ecreate(b.pageinfo, proc.epc_address(0)) == SgxStatus.SUCCESS
    with pytest.raises(PageFault):
        proc.ecreate(b.pageinfo, proc.epc_address(0))  # page already valid
    entry = proc.epcm(proc.epc_address(0))
    assert entry.valid and entry.page_type == PageType.SECS


def _eadd_raw(
    b: Builder, secs: int, linaddr: int, flags: int, target: int, data: bytes = bytes(PAGE)
) -> None:
    b.proc.write(b.src, data)
    b.proc.write(b.secinfo, struct.pack("<Q56x", flags))
    b.proc.write(b.pageinfo, struct.pack("<QQQQ", linaddr, b.src, b.secinfo, secs))
    b.proc.eadd(b.pageinfo, target)


def test_eadd_checks() -> None:
    proc = cpu()
    b = Builder(proc)
    secs = b.ecreate(_secs())
    free = proc.free_epc_pages(4)
    with pytest.raises(GeneralProtection):  # outside ELRANGE
        _eadd_raw(b, secs, BASE + SIZE, REG_RW, free[0])
    with pytest.raises(GeneralProtection):  # LINADDR misaligned
        _eadd_raw(b, secs, BASE + 8, REG_RW, free[0])
    with pytest.raises(GeneralProtection):  # page type VA
        _eadd_raw(b, secs, BASE, secinfo_flags(PageType.VA), free[0])
    with pytest.raises(GeneralProtection):  # SECINFO reserved bits
        _eadd_raw(b, secs, BASE, REG_RW | (1 << 20), free[0])
    with pytest.raises(PageFault):  # SECS operand is not a SECS
        _eadd_raw(b, free[1], BASE, REG_RW, free[0])
    _eadd_raw(b, secs, BASE, REG_RW, free[0])
    with pytest.raises(PageFault):  # target already valid
        _eadd_raw(b, secs, BASE + PAGE, REG_RW, free[0])
    entry = proc.epcm(free[0])
    assert (entry.valid, entry.page_type, entry.permissions, entry.linaddr) == (
        True,
        PageType.REG,
        3,
        BASE,
    )
    assert entry.enclave_secs == secs


def test_eadd_tcs_checks_and_clears_fields() -> None:
    proc = cpu()
    b = Builder(proc)
    secs = b.ecreate(_secs())
    free = proc.free_epc_pages(3)
    tcs_flags = secinfo_flags(PageType.TCS)
    with pytest.raises(GeneralProtection):  # SDM EADD: TCS.FLAGS reserved bits → #GP
        _eadd_raw(b, secs, BASE, tcs_flags, free[0], Tcs(flags=4).to_bytes())
    dirty = Tcs(state=5, flags=1, ossa=0x2000, cssa=3, nssa=1, aep=0x77).to_bytes()
    _eadd_raw(b, secs, BASE, tcs_flags | 0x7, free[0], dirty)
    entry = proc.epcm(free[0])
    assert entry.page_type == PageType.TCS and entry.permissions == 0
    base = free[0] - proc.epc_base
    stored = Tcs.from_bytes_raw(bytes(proc.state.epc[base : base + PAGE]))
    assert (stored.state, stored.flags, stored.cssa, stored.aep) == (0, 0, 0, 0)
    assert (stored.ossa, stored.nssa) == (0x2000, 1)


def test_eadd_leaves_tcs_offset_alignment_to_eenter() -> None:
    """SDM EADD checks no OSSA/OFSBASE/OGSBASE alignment (EENTER checks the SSA): a TCS with
    unaligned offsets is added, and measured."""
    proc = cpu()
    b = Builder(proc)
    secs = b.ecreate(_secs())
    page = proc.free_epc_pages(1)[0]
    _eadd_raw(
        b,
        secs,
        BASE,
        secinfo_flags(PageType.TCS),
        page,
        Tcs(ossa=0x123, ofsbase=0x10, ogsbase=0x20, nssa=1).to_bytes(),
    )
    assert proc.epcm(page).page_type == PageType.TCS


def test_eenter_refuses_an_unaligned_ssa() -> None:
    """SDM EENTER: the SSA frame (BASEADDR + OSSA + 4096·SSAFRAMESIZE·CSSA) not page-aligned
    → #GP — the check EADD does not make."""
    from sgxlaunch.cpu import build_enclave, einit, program_image
    from sgxlaunch.cpu.image import EnclaveImage, ImagePage
    from tests.support.cpu import MemoryProgram, sign_image
    from tests.support.keys import mrsigner

    good = program_image(MemoryProgram)
    tcs = Tcs(ossa=0x2010, nssa=1, oentry=0x1000).to_bytes()
    image = EnclaveImage(
        size=good.size,
        ssaframesize=good.ssaframesize,
        pages=(ImagePage(0, good.pages[0].secinfo_flags, tcs), *good.pages[1:]),
        tcs_offsets=good.tcs_offsets,
    )
    proc = cpu()
    sig = sign_image(image, "app")
    proc.register_program(image.mrenclave(), MemoryProgram)
    proc.set_lepubkeyhash(mrsigner("app"))
    from sgxlaunch.cpu import secs_for

    loaded = build_enclave(proc, image, secs_for(sig, size=image.size, ssaframesize=1))
    assert einit(proc, loaded.secs, sig, None) == SgxStatus.SUCCESS
    with pytest.raises(GeneralProtection, match="SSA"):
        proc.eenter(loaded.pages[loaded.baseaddr])


def test_eadd_32bit_tcs_needs_fslimit_and_gslimit_ending_in_fff() -> None:
    """SDM EADD: for a 32-bit enclave, TCS.FSLIMIT and GSLIMIT must have bits 11:0 set → #GP
    otherwise; a 64-bit enclave ignores them."""
    proc = cpu()
    b = Builder(proc)
    secs32 = b.ecreate(_secs(attributes=Attributes(flags=0, xfrm=0x3)))
    free = proc.free_epc_pages(1)
    tcs = secinfo_flags(PageType.TCS)
    for fs, gs in ((0, 0xFFF), (0xFFF, 0x7FE)):
        with pytest.raises(GeneralProtection, match="FSLIMIT"):
            _eadd_raw(b, secs32, BASE, tcs, free[0], Tcs(fslimit=fs, gslimit=gs).to_bytes())
    _eadd_raw(b, secs32, BASE, tcs, free[0], Tcs(fslimit=0x1FFF, gslimit=0xFFF).to_bytes())
    secs64 = b.ecreate(_secs(baseaddr=2 * SIZE + BASE))
    page64 = proc.free_epc_pages(1)[0]
    _eadd_raw(b, secs64, 2 * SIZE + BASE, tcs, page64, Tcs(fslimit=0, gslimit=0).to_bytes())


def test_eadd_measures_a_tcs_secinfo_with_rwx_cleared() -> None:
    """SDM EADD clears SECINFO.FLAGS.R/W/X of a TCS before the SHA256UPDATE (the kernel's
    comment on TCS SECINFO says the same): RWX in the SECINFO leaves MRENCLAVE unchanged."""
    digests = []
    for extra in (0, 0x7):
        proc = cpu()
        b = Builder(proc)
        secs = b.ecreate(_secs())
        page = proc.free_epc_pages(1)[0]
        _eadd_raw(b, secs, BASE, secinfo_flags(PageType.TCS) | extra, page, Tcs().to_bytes())
        enclave = proc.state.secs_state[(secs - proc.epc_base) >> 12]
        enclave.flush()
        digests.append(enclave.measurement.digest())
    ref = Measurement()
    ref.ecreate(1, SIZE)
    ref.eadd(0, secinfo_flags(PageType.TCS))
    assert digests == [ref.mrenclave(), ref.mrenclave()]


def test_eadd_refuses_w_without_r() -> None:
    """SDM EADD: SECINFO.FLAGS.W = 1 with R = 0 → #GP (a PT_REG page)."""
    proc = cpu()
    b = Builder(proc)
    secs = b.ecreate(_secs())
    page = proc.free_epc_pages(1)[0]
    with pytest.raises(GeneralProtection, match="W without R"):
        _eadd_raw(b, secs, BASE, secinfo_flags(PageType.REG, SecinfoFlag.W), page)
    assert not proc.epcm(page).valid
    _eadd_raw(b, secs, BASE, secinfo_flags(PageType.REG, SecinfoFlag.R | SecinfoFlag.W), page)


def test_eextend_checks() -> None:
    proc = cpu()
    b = Builder(proc)
    secs = b.ecreate(_secs())
    other = b.ecreate(_secs())
    page = b.eadd(secs, 0, bytes(PAGE))
    with pytest.raises(GeneralProtection):
        proc.eextend(secs, page + 8)  # not 256-aligned
    with pytest.raises(GeneralProtection):
        proc.eextend_page(secs, page + 256)  # page helper needs a page
    with pytest.raises(PageFault):
        proc.eextend(secs, proc.free_epc_pages(1)[0])  # not a valid page
    with pytest.raises(PageFault):
        proc.eextend(secs, b.ctl)  # not EPC
    with pytest.raises(GeneralProtection):
        proc.eextend(other, page)  # another enclave's page
    with pytest.raises(GeneralProtection):
        proc.eextend_page(other, page)


def test_no_eadd_or_eextend_after_einit() -> None:
    from tests.support.cpu import pending
    from tests.support.keys import mrsigner

    proc = cpu()
    proc.set_lepubkeyhash(mrsigner("app"))
    app = pending(proc)
    assert app.einit() == SgxStatus.SUCCESS
    b = Builder(proc)
    with pytest.raises(GeneralProtection):
        _eadd_raw(
            b,
            app.enclave.secs,
            app.enclave.baseaddr + 0x8000 - PAGE,
            REG_RW,
            proc.free_epc_pages(1)[0],
        )
    some_page = next(iter(app.enclave.pages.values()))
    with pytest.raises(GeneralProtection):
        proc.eextend(app.enclave.secs, some_page)
    with pytest.raises(GeneralProtection):
        proc.eextend_page(app.enclave.secs, some_page)


def test_eremove_and_edbg() -> None:
    proc = cpu()
    b = Builder(proc)
    secs = b.ecreate(_secs(attributes=Attributes(flags=PROD | int(AttributeFlag.DEBUG), xfrm=3)))
    prod = b.ecreate(_secs())
    page = b.eadd(secs, 0, bytes(range(256)) * 16)
    prod_page = b.eadd(prod, 0, bytes(PAGE))
    assert proc.edbgrd(page + 16) == (SgxStatus.SUCCESS, bytes(range(16, 24)))
    assert proc.edbgwr(page + 16, b"ABCDEFGH") == SgxStatus.SUCCESS
    assert proc.edbgrd(page + 16) == (SgxStatus.SUCCESS, b"ABCDEFGH")
    assert proc.edbgrd(prod_page)[0] == SgxStatus.PAGE_NOT_DEBUGGABLE
    assert proc.edbgwr(prod_page, bytes(8)) == SgxStatus.PAGE_NOT_DEBUGGABLE
    with pytest.raises(GeneralProtection):
        proc.edbgrd(page + 3)
    with pytest.raises(GeneralProtection):
        proc.edbgwr(secs, bytes(8))
    assert proc.eremove(secs) == SgxStatus.CHILD_PRESENT
    assert proc.eremove(page) == SgxStatus.SUCCESS
    assert proc.eremove(page) == SgxStatus.SUCCESS  # already free
    assert proc.eremove(secs) == SgxStatus.SUCCESS
    assert not proc.epcm(secs).valid
    with pytest.raises(PageFault):
        proc.eextend(secs, prod_page)
