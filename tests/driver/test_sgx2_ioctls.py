"""The SGX2 ioctls check by check, in mainline's order (``arch/x86/kernel/cpu/sgx/ioctl.c``),
and the EAUG fault path and mapping rules (``encl.c``). Each test names the kernel function
whose errno it expects; "which one wins" tests pin the order where two checks could fire."""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable

import pytest

from sgxlaunch.arch.constants import PAGE_SIZE, PageType, SgxStatus
from sgxlaunch.cpu import EpcmEntry
from sgxlaunch.driver import DriverError, Enclave, SgxDriver, uapi
from tests.support.driver import platform
from tests.support.kselftest import (
    CODE,
    DATA,
    ENCL_OP_GET_FROM_ADDRESS,
    ENCL_OP_PUT_TO_ADDRESS,
    MAGIC,
    SGX_SECINFO_PENDING,
    SGX_SECINFO_PR,
    SGX_SECINFO_R,
    SGX_SECINFO_REG,
    SGX_SECINFO_W,
    Selftest,
    selftest_image,
    sgx2_platform,
)

RW = uapi.PROT_READ | uapi.PROT_WRITE
RWX = RW | uapi.PROT_EXEC
PENDING_RW = SGX_SECINFO_R | SGX_SECINFO_W | SGX_SECINFO_REG | SGX_SECINFO_PENDING
DATA2 = DATA + PAGE_SIZE


@pytest.fixture
def t() -> Selftest:
    return Selftest(sgx2_platform())


def encl_of(t: Selftest) -> Enclave:
    (encl,) = t.driver.enclaves.values()
    return encl


def epcm(t: Selftest, offset: int) -> EpcmEntry:
    """The EPCM entry of the enclave page at ``offset`` (resident)."""
    epc = encl_of(t).pages[offset].epc
    assert epc is not None
    return t.driver.cpu.epcm(epc)


def hole(t: Selftest, pages: int = 1, prot: int = RW) -> int:
    """Map ``pages`` unbacked pages right after the image (MAP_FIXED) and return the address."""
    return t.process.mmap(
        t.encl_base + t.total_size(),
        pages * PAGE_SIZE,
        prot,
        uapi.MAP_SHARED | uapi.MAP_FIXED,
        t.fd,
    )


def count_calls(driver: SgxDriver, name: str) -> list[int]:
    """Wrap the processor leaf ``name`` to record its first operand per call."""
    calls: list[int] = []
    leaf: Callable[..., SgxStatus] = getattr(driver.cpu, name)

    def wrapped(*args: int) -> SgxStatus:
        calls.append(args[-1] if name != "etrack" else args[0])
        return leaf(*args)

    setattr(driver.cpu, name, wrapped)
    return calls


# -- sgx_ioc_sgx2_ready and the argument checks (nothing copied back) ---------------------


@pytest.mark.parametrize(
    ("cmd", "layout"),
    [
        (uapi.SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS, uapi.RESTRICT_PERMISSIONS_ARG),
        (uapi.SGX_IOC_ENCLAVE_MODIFY_TYPES, uapi.MODIFY_TYPES_ARG),
        (uapi.SGX_IOC_ENCLAVE_REMOVE_PAGES, uapi.REMOVE_PAGES_ARG),
    ],
)
def test_sgx2_ready_enodev_wins_over_a_bad_argument_on_an_sgx1_part(
    cmd: int, layout: object
) -> None:
    """sgx_ioc_sgx2_ready runs before copy_from_user: on a part without SGX2 an unmapped
    argument still gets ENODEV (the PSW / Gramine EDMM probe), never EFAULT or ENOTTY."""
    t = Selftest(platform())
    with pytest.raises(DriverError) as err:
        t.process.ioctl(t.fd, cmd, 0x10)
    assert err.value.errno == errno.ENODEV


def test_sgx2_ready_einval_for_an_uninitialized_enclave_before_the_argument() -> None:
    """sgx_ioc_sgx2_ready: an enclave not yet initialized → EINVAL, before copy_from_user
    (an unmapped argument does not turn it into EFAULT)."""
    driver = sgx2_platform()
    p = driver.new_process()
    fd = p.open(uapi.DEV_SGX_ENCLAVE)
    for cmd in (
        uapi.SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS,
        uapi.SGX_IOC_ENCLAVE_MODIFY_TYPES,
        uapi.SGX_IOC_ENCLAVE_REMOVE_PAGES,
    ):
        with pytest.raises(DriverError) as err:
            p.ioctl(fd, cmd, 0x10)
        assert err.value.errno == errno.EINVAL


def test_unmapped_argument_is_efault(t: Selftest) -> None:
    """copy_from_user of the struct: EFAULT once sgx2_ready passed."""
    with pytest.raises(DriverError) as err:
        t.process.ioctl(t.fd, uapi.SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS, 0x10)
    assert err.value.errno == errno.EFAULT


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (DATA + 1, PAGE_SIZE),
        (DATA, 0),
        (DATA, 100),
        (DATA, 1 << 40),
        (2**64 - PAGE_SIZE, 2 * PAGE_SIZE),
    ],
)
def test_sgx_validate_offset_length(t: Selftest, offset: int, length: int) -> None:
    """sgx_validate_offset_length: unaligned offset, zero or unaligned length, past the
    enclave, offset + length overflowing → EINVAL; the struct is not copied back."""
    assert t.restrict_permissions(offset, length, SGX_SECINFO_R) == (errno.EINVAL, 0, 0)
    assert t.modify_types(offset, length, uapi.SGX_PAGE_TYPE_TRIM) == (errno.EINVAL, 0, 0)
    assert t.remove_pages(offset, length) == (errno.EINVAL, 0)


def test_restrict_permissions_argument_checks_in_order(t: Selftest) -> None:
    """sgx_ioc_enclave_restrict_permissions: permissions beyond R|W|X, W without R, then a
    non-zero result or count → EINVAL, each before the loop: the caller's struct is left as
    it was (a non-zero result stays), and no page changes."""
    arg = uapi.RESTRICT_PERMISSIONS_ARG
    cmd = uapi.SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS
    for fields in [
        (DATA2, PAGE_SIZE, 0x8, 0, 0),
        (DATA2, PAGE_SIZE, SGX_SECINFO_W, 0, 0),
        (DATA2, PAGE_SIZE, SGX_SECINFO_R, 5, 0),
        (DATA2, PAGE_SIZE, SGX_SECINFO_R, 0, 4096),
        (DATA2, 0, 0x8, 5, 0),  # offset/length wins over permissions and result
    ]:
        err, out = t.ioctl(cmd, arg, *fields)
        assert err == errno.EINVAL
        assert out == fields
    page = encl_of(t).pages[DATA2]
    assert not epcm(t, page.offset).pr


def test_restrict_permissions_effect_pr_and_etrack(t: Selftest) -> None:
    """Success: per page EMODPR then ETRACK (sgx_enclave_etrack), EPCM R only with PR set,
    vm_max_prot_bits unchanged (mprotect RW still allowed), count = length, result 0."""
    etracks = count_calls(t.driver, "etrack")
    emodprs = count_calls(t.driver, "emodpr")
    encl = encl_of(t)
    err, result, count = t.restrict_permissions(DATA, 2 * PAGE_SIZE, SGX_SECINFO_R)
    assert (err, result, count) == (0, 0, 2 * PAGE_SIZE)
    assert len(etracks) == 2 and len(emodprs) == 2
    for offset in (DATA, DATA2):
        entry = epcm(t, offset)
        assert entry.pr and entry.permissions == SGX_SECINFO_R
        assert encl.pages[offset].max_prot == RW
    t.process.mprotect(t.encl_base + DATA, 2 * PAGE_SIZE, RW)


def test_restrict_permissions_without_etrack_leaves_eaccept_not_tracked() -> None:
    """Why the ETRACK matters: with the driver's ETRACK suppressed, the enclave's
    EACCEPT(REG|PR|R) answers SGX_NOT_TRACKED (SDM EACCEPT); with it, SUCCESS."""
    t = Selftest(sgx2_platform())
    t.driver.cpu.etrack = lambda secs: SgxStatus.SUCCESS
    assert t.restrict_permissions(DATA2, PAGE_SIZE, SGX_SECINFO_R) == (0, 0, PAGE_SIZE)
    flags = SGX_SECINFO_R | SGX_SECINFO_REG | SGX_SECINFO_PR
    assert t.eaccept(t.data_start(), flags) == SgxStatus.NOT_TRACKED


def test_restrict_permissions_on_a_hole_is_efault_with_progress(t: Selftest) -> None:
    """sgx_encl_load_page finds no page → EFAULT; count = the bytes done before it."""
    total = t.total_size()
    err, result, count = t.restrict_permissions(total - PAGE_SIZE, 2 * PAGE_SIZE, SGX_SECINFO_R)
    assert (err, result, count) == (errno.EFAULT, 0, PAGE_SIZE)


def test_restrict_permissions_of_a_pending_page_reports_the_sgx_code(t: Selftest) -> None:
    """An EAUGed page not yet EACCEPTed: EMODPR returns SGX_PAGE_NOT_MODIFIABLE (SDM EMODPR
    step 6) → result = 20, EFAULT, count 0 (sgx_enclave_restrict_permissions)."""
    addr = hole(t)
    t.process.touch(addr)  # EAUG from outside: the page is PENDING
    offset = addr - t.encl_base
    err, result, count = t.restrict_permissions(offset, PAGE_SIZE, SGX_SECINFO_R)
    assert (err, result, count) == (errno.EFAULT, SgxStatus.PAGE_NOT_MODIFIABLE, 0)


def test_modify_types_argument_checks(t: Selftest) -> None:
    """sgx_ioc_enclave_modify_types: page_type beyond 8 bits or non-zero result/count →
    EINVAL before the loop (struct untouched); a type other than TCS/TRIM → EINVAL inside
    sgx_enclave_modify_types, so the struct comes back (count 0)."""
    arg, cmd = uapi.MODIFY_TYPES_ARG, uapi.SGX_IOC_ENCLAVE_MODIFY_TYPES
    for fields in [
        (DATA2, PAGE_SIZE, 0x104, 0, 0),
        (DATA2, PAGE_SIZE, 4, 1, 0),
        (DATA2, PAGE_SIZE, 4, 0, 1),
    ]:
        err, out = t.ioctl(cmd, arg, *fields)
        assert (err, out) == (errno.EINVAL, fields)
    for page_type in (PageType.REG, PageType.SECS, PageType.VA):
        err, out = t.ioctl(cmd, arg, DATA2, PAGE_SIZE, page_type, 0, 0)
        assert (err, out[3], out[4]) == (errno.EINVAL, 0, 0)


def test_modify_types_transitions_allowed(t: Selftest) -> None:
    """Only REG→TCS, REG→TRIM and TCS→TRIM (sgx_enclave_modify_types): TCS→TCS and
    TRIM→anything → EINVAL with count 0; TCS→TRIM works."""
    assert t.modify_types(0, PAGE_SIZE, uapi.SGX_PAGE_TYPE_TCS) == (errno.EINVAL, 0, 0)
    assert t.modify_types(PAGE_SIZE, PAGE_SIZE, uapi.SGX_PAGE_TYPE_TRIM) == (0, 0, PAGE_SIZE)
    assert encl_of(t).pages[PAGE_SIZE].page_type == PageType.TRIM
    assert t.modify_types(PAGE_SIZE, PAGE_SIZE, uapi.SGX_PAGE_TYPE_TRIM) == (errno.EINVAL, 0, 0)
    assert t.modify_types(PAGE_SIZE, PAGE_SIZE, uapi.SGX_PAGE_TYPE_TCS) == (errno.EINVAL, 0, 0)


def test_modify_types_reg_to_tcs_needs_rw_vetting(t: Selftest) -> None:
    """REG→TCS of a page whose vm_max_prot_bits lack W (the R-X code page) → EPERM, the
    page's maximum protection kept, nothing done."""
    encl = encl_of(t)
    assert t.modify_types(CODE, PAGE_SIZE, uapi.SGX_PAGE_TYPE_TCS) == (errno.EPERM, 0, 0)
    assert encl.pages[CODE].max_prot == uapi.PROT_READ | uapi.PROT_EXEC
    assert epcm(t, CODE).page_type == PageType.REG


def test_modify_types_reg_to_tcs_zaps_ptes_and_sets_rw(t: Selftest) -> None:
    """REG→TCS: vm_max_prot_bits := RW and the page's PTEs are zapped before EMODT; on an
    SGX code (a PENDING page: EMODT step 7, NOT_MODIFIABLE) the old maximum is restored."""
    addr = hole(t, prot=RWX)
    t.call(ENCL_OP_GET_FROM_ADDRESS, addr)  # EAUG, then the EPCM refuses the PENDING page
    assert addr in t.process.ptes
    offset = addr - t.encl_base
    encl = encl_of(t)
    err, result, count = t.modify_types(offset, PAGE_SIZE, uapi.SGX_PAGE_TYPE_TCS)
    assert (err, result, count) == (errno.EFAULT, SgxStatus.PAGE_NOT_MODIFIABLE, 0)
    assert encl.pages[offset].max_prot == RWX  # restored
    assert addr not in t.process.ptes  # zapped before EMODT ran

    data2 = t.data_start()
    t.run.tcs = t.encl_base + PAGE_SIZE  # the first TCS waits in its exception report
    t.call(ENCL_OP_PUT_TO_ADDRESS, data2, MAGIC)
    t.expect_eexit()
    assert data2 in t.process.ptes
    assert t.modify_types(DATA2, PAGE_SIZE, uapi.SGX_PAGE_TYPE_TCS) == (0, 0, PAGE_SIZE)
    assert encl.pages[DATA2].max_prot == RW and encl.pages[DATA2].page_type == PageType.TCS
    assert data2 not in t.process.ptes


def test_remove_pages_checks(t: Selftest) -> None:
    """sgx_ioc_enclave_remove_pages: count ≠ 0 → EINVAL (untouched); sgx_encl_remove_pages:
    a REG page → EPERM; a hole → EFAULT; both with count = bytes done."""
    err, out = t.ioctl(
        uapi.SGX_IOC_ENCLAVE_REMOVE_PAGES, uapi.REMOVE_PAGES_ARG, DATA2, PAGE_SIZE, 7
    )
    assert (err, out) == (errno.EINVAL, (DATA2, PAGE_SIZE, 7))
    assert t.remove_pages(DATA2, PAGE_SIZE) == (errno.EPERM, 0)
    total = t.total_size()
    assert t.remove_pages(total, PAGE_SIZE) == (errno.EFAULT, 0)


# -- EAUG on a fault (sgx_vma_fault → sgx_encl_eaug_page) ---------------------------------


def test_eaug_page_state_and_vm_max_prot(t: Selftest) -> None:
    """The EAUGed page: EPCM REG, RW, PENDING at the faulting address (SDM EAUG); the driver
    page is dynamic with vm_max_prot_bits RWX, so mprotect to RWX is allowed (encl.c: "the
    enclave decides the permissions"), while an EADDed RW page refuses X (EACCES)."""
    addr = hole(t)
    t.process.touch(addr)
    encl = encl_of(t)
    page = encl.pages[addr - t.encl_base]
    assert page.dynamic and page.max_prot == RWX and encl.pages_added == 1
    entry = epcm(t, page.offset)
    assert entry.valid and entry.pending and entry.permissions == 0b011
    assert entry.page_type == PageType.REG and entry.linaddr == addr
    t.process.mprotect(addr, PAGE_SIZE, RWX)
    with pytest.raises(DriverError) as err:
        t.process.mprotect(t.data_start(), PAGE_SIZE, RWX)
    assert err.value.errno == errno.EACCES


def test_no_eaug_on_an_sgx1_part_sigbus() -> None:
    """sgx_vma_fault without X86_FEATURE_SGX2: a hole is not added; the access gets SIGBUS
    (sgx_encl_load_page_in_vma: no page → -EFAULT → VM_FAULT_SIGBUS)."""
    t = Selftest(platform())
    addr = hole(t)
    with pytest.raises(DriverError, match="SIGBUS") as err:
        t.process.touch(addr)
    assert err.value.errno == errno.EFAULT
    assert encl_of(t).pages_added == 0


def test_no_eaug_before_einit_sigbus() -> None:
    """sgx_encl_eaug_page: an enclave not yet initialized → SIGBUS. A mapping over ELRANGE
    made before INIT (as Gramine maps the whole range before ECREATE) is allowed."""
    driver = sgx2_platform()
    p = driver.new_process()
    fd = p.open(uapi.DEV_SGX_ENCLAVE)
    image = selftest_image()
    base = p.reserve(image.size)
    p.mmap(base, image.size, RWX, uapi.MAP_SHARED | uapi.MAP_FIXED, fd)
    from tests.support.driver import Raw, small_secs

    raw = Raw(p, fd, p.alloc(PAGE_SIZE), p.alloc(PAGE_SIZE), p.alloc(PAGE_SIZE), 0, 0)
    secs = small_secs(image.size).replace(baseaddr=base)
    raw.create(secs)
    with pytest.raises(DriverError, match="SIGBUS"):
        p.touch(base + 0x5000)
    (encl,) = driver.enclaves.values()
    assert not encl.pages


def test_write_through_a_read_only_vma_is_sigsegv_without_eaug(t: Selftest) -> None:
    """arch/x86/mm/fault.c access_error runs before sgx_vma_fault: a write to a VMA without
    VM_WRITE never reaches the EAUG path (from inside: #PF 0x6 reported, nothing added)."""
    addr = hole(t, prot=uapi.PROT_READ)
    t.call(ENCL_OP_PUT_TO_ADDRESS, addr, MAGIC)
    t.expect_exception(0x6, addr)
    assert encl_of(t).pages_added == 0
    with pytest.raises(DriverError, match="SIGSEGV"):
        t.process.touch(addr, write=True)


def test_load_page_in_vma_refuses_a_vma_beyond_max_prot() -> None:
    """sgx_encl_load_page_in_vma: a VMA made before INIT with RWX over the R-X code page →
    SIGBUS at the first fault on it ((vm_max_prot_bits & vm_prot_bits) != vm_prot_bits)."""
    t = Selftest(sgx2_platform())
    code = t.encl_base + CODE
    t.process.munmap(code, PAGE_SIZE)
    t.process.vmas.append(type(t.process.vmas[0])(code, code + PAGE_SIZE, RWX, encl_of(t)))
    with pytest.raises(DriverError, match="SIGBUS"):
        t.process.touch(code)


def test_hole_mapping_rules(t: Selftest) -> None:
    """sgx_encl_may_map after INIT: a hole inside ELRANGE takes any protection; a range
    leaving ELRANGE → EACCES."""
    hole(t, prot=RWX)
    with pytest.raises(DriverError) as err:
        t.process.mmap(
            t.encl_base + t.encl_size - PAGE_SIZE,
            2 * PAGE_SIZE,
            uapi.PROT_READ,
            uapi.MAP_SHARED | uapi.MAP_FIXED,
            t.fd,
        )
    assert err.value.errno == errno.EACCES


def test_eaug_reclaims_when_the_epc_is_full() -> None:
    """The EPC full of one enclave's pages: an EAUG fault still succeeds (the reclaimer writes
    pages back first; mainline retries the fault after ksgxd)."""
    driver = sgx2_platform(epc_mib=1)
    t = Selftest(driver, 220 * PAGE_SIZE, size=2 << 20)
    assert driver.stats().epc_free < 48
    before = driver.stats().evictions
    addr = hole(t, pages=48)
    for k in range(48):
        assert t.eaccept(addr + k * PAGE_SIZE, PENDING_RW) == 0
    assert driver.stats().evictions > before
    assert encl_of(t).pages_added == 48
    t.call(ENCL_OP_PUT_TO_ADDRESS, addr, MAGIC)
    assert struct.unpack("<Q", t.call(ENCL_OP_GET_FROM_ADDRESS, addr))[0] == MAGIC
