"""The kernel's SGX2 selftests (``tools/testing/selftests/sgx/main.c``) on the emulator.

Each test is named after its selftest and makes the same calls in the same order, expecting
what the selftest expects: the ioctls' return, errno, ``result`` and ``count``; after each
ENCL_CALL, ``run.function`` (EEXIT, or ERESUME with an exception report), the exception
vector, the #PF error code and address; and the values the enclave hands back. The errnos
come from ``arch/x86/kernel/cpu/sgx/ioctl.c`` (the function is named at each check), the error
codes from the processor's paging and EPCM checks (spec §3.8: 0x8000 = X86_PF_SGX, | 4 user,
| 2 write, | 1 protection).
"""

from __future__ import annotations

import errno

import pytest

from sgxlaunch.arch.constants import PAGE_SIZE
from sgxlaunch.driver import SgxDriver, uapi
from tests.support.kselftest import (
    CODE,
    DATA,
    ENCL_HEAP_SIZE_DEFAULT,
    ENCL_OP_EMODPE,
    ENCL_OP_GET_FROM_ADDRESS,
    ENCL_OP_GET_FROM_BUFFER,
    ENCL_OP_INIT_TCS_PAGE,
    ENCL_OP_NOP,
    ENCL_OP_PUT_TO_ADDRESS,
    ENCL_OP_PUT_TO_BUFFER,
    MAGIC,
    MAGIC2,
    SGX_SECINFO_MODIFIED,
    SGX_SECINFO_PENDING,
    SGX_SECINFO_PR,
    SGX_SECINFO_R,
    SGX_SECINFO_REG,
    SGX_SECINFO_TCS,
    SGX_SECINFO_TRIM,
    SGX_SECINFO_W,
    Selftest,
    sgx2_platform,
)

PENDING_RW = SGX_SECINFO_R | SGX_SECINFO_W | SGX_SECINFO_REG | SGX_SECINFO_PENDING
SGX_PAGE_TYPE_TCS = uapi.SGX_PAGE_TYPE_TCS
SGX_PAGE_TYPE_TRIM = uapi.SGX_PAGE_TYPE_TRIM


@pytest.fixture
def driver() -> SgxDriver:
    return sgx2_platform()


def sgx2_probe_modify_types(t: Selftest) -> None:
    """The selftests' first step: a zeroed MODIFY_TYPES must fail, and not with ENOTTY (no
    ioctl) or ENODEV (no SGX2): sgx_ioc_enclave_modify_types → sgx_validate_offset_length
    (length 0) → EINVAL."""
    err, _, _ = t.modify_types(0, 0, 0)
    assert err == errno.EINVAL


def sanity_put_get(t: Selftest, addr: int) -> None:
    """Write MAGIC at ``addr`` and read it back (the selftests' sanity check)."""
    t.call(ENCL_OP_PUT_TO_ADDRESS, addr, MAGIC)
    t.expect_eexit()
    assert t.value(t.call(ENCL_OP_GET_FROM_ADDRESS, addr)) == MAGIC
    t.expect_eexit()


def test_unclobbered_vdso_oversubscribed_remove() -> None:
    """A heap as big as the EPC (CPUID.(12H,2) sections), trimmed whole (MODIFY_TYPES TRIM,
    count = heap size), each page EACCEPTed (TRIM|MODIFIED, ret 0, no exception: evicted
    pages are reloaded on the way), then removed (REMOVE_PAGES, count = heap size)."""
    driver = sgx2_platform(epc_mib=1)
    ecx, edx = driver.cpu.cpuid(0x12, 2)[2:]
    total_mem = (ecx & 0xFFFFF000) + ((edx & 0xFFFFF) << 32)
    assert total_mem == 1 << 20
    t = Selftest(driver, total_mem)
    sgx2_probe_modify_types(t)
    t.call(ENCL_OP_PUT_TO_BUFFER, MAGIC)
    t.expect_eexit()
    assert t.value(t.call(ENCL_OP_GET_FROM_BUFFER)) == MAGIC
    t.expect_eexit()
    assert driver.stats().evictions > 0  # the enclave does not fit: pages were written back

    heap = t.heap
    err, result, count = t.modify_types(heap.offset, heap.size, SGX_PAGE_TYPE_TRIM)
    assert (err, result, count) == (0, 0, heap.size)
    addr = t.encl_base + heap.offset
    for i in range(0, heap.size, PAGE_SIZE):
        assert t.eaccept(addr + i, SGX_SECINFO_TRIM | SGX_SECINFO_MODIFIED) == 0
        t.expect_eexit()
    err, count = t.remove_pages(heap.offset, heap.size)
    assert (err, count) == (0, heap.size)
    enclave = driver.enclaves[next(iter(driver.enclaves))]
    assert enclave.pages_removed == heap.size // PAGE_SIZE
    assert all(heap.offset + i not in enclave.pages for i in range(0, heap.size, PAGE_SIZE))


def test_pte_permissions(driver: SgxDriver) -> None:
    """PTE read-only over an EPCM-RW page: the write faults with a plain #PF (0x7: present,
    write, user), no SGX bit; mprotect back to RW and ERESUME completes the write."""
    t = Selftest(driver)
    data_start = t.data_start()
    sanity_put_get(t, data_start)
    t.process.mprotect(data_start, PAGE_SIZE, uapi.PROT_READ)
    t.call(ENCL_OP_PUT_TO_ADDRESS, data_start, MAGIC2)
    t.expect_exception(0x7, data_start)
    t.process.mprotect(data_start, PAGE_SIZE, uapi.PROT_READ | uapi.PROT_WRITE)
    t.eresume()
    t.expect_eexit()
    assert t.value(t.call(ENCL_OP_GET_FROM_ADDRESS, data_start)) == MAGIC2
    t.expect_eexit()


def test_tcs_permissions(driver: SgxDriver) -> None:
    """RESTRICT_PERMISSIONS on a TCS page: sgx_enclave_restrict_permissions refuses a page
    whose type is not REG (EINVAL) inside the loop, so result = 0 and count = 0 come back."""
    t = Selftest(driver)
    err, _, _ = t.restrict_permissions(0, 0, 0)
    assert err == errno.EINVAL  # the zeroed probe: not ENOTTY, not ENODEV
    err, result, count = t.restrict_permissions(0, PAGE_SIZE, SGX_SECINFO_R)
    assert (err, result, count) == (errno.EINVAL, 0, 0)


def test_epcm_permissions(driver: SgxDriver) -> None:
    """EMODPR to R (RESTRICT_PERMISSIONS: 0, result 0, count 4096), EACCEPT(R|REG|PR) → 0; a
    write then faults on the EPCM (0x8007) though the PTE allows it; EMODPE(R|W) from the
    second TCS fixes the EPCM and ERESUME on the first completes the write."""
    t = Selftest(driver)
    err, _, _ = t.restrict_permissions(0, 0, 0)
    assert err == errno.EINVAL
    data_start = t.data_start()
    sanity_put_get(t, data_start)
    err, result, count = t.restrict_permissions(DATA + PAGE_SIZE, PAGE_SIZE, SGX_SECINFO_R)
    assert (err, result, count) == (0, 0, 4096)
    assert t.eaccept(data_start, SGX_SECINFO_R | SGX_SECINFO_REG | SGX_SECINFO_PR) == 0
    t.expect_eexit()

    t.call(ENCL_OP_PUT_TO_ADDRESS, data_start, MAGIC2)
    t.expect_exception(0x8007, data_start)

    t.run.tcs = t.encl_base + PAGE_SIZE
    t.call(ENCL_OP_EMODPE, data_start, SGX_SECINFO_R | SGX_SECINFO_W)
    t.expect_eexit()

    t.run.tcs = t.encl_base
    t.eresume()
    t.expect_eexit()
    assert t.value(t.call(ENCL_OP_GET_FROM_ADDRESS, data_start)) == MAGIC2
    t.expect_eexit()


def test_augment(driver: SgxDriver) -> None:
    """A write to an unbacked page of ELRANGE: the first #PF (not present) EAUGs the page,
    the retried write faults on the PENDING page (0x8007, reported); EACCEPT(R|W|REG|PENDING)
    from the second TCS → 0; ERESUME completes the write; the value reads back. The mmap of
    the hole with RWX is allowed (sgx_encl_may_map: holes impose nothing)."""
    t = Selftest(driver)
    total_size = t.total_size()
    assert total_size + PAGE_SIZE < t.encl_size
    addr = t.process.mmap(
        t.encl_base + total_size,
        PAGE_SIZE,
        uapi.PROT_READ | uapi.PROT_WRITE | uapi.PROT_EXEC,
        uapi.MAP_SHARED | uapi.MAP_FIXED,
        t.fd,
    )
    t.call(ENCL_OP_PUT_TO_ADDRESS, addr, MAGIC)
    t.expect_exception(0x8007, addr)

    t.run.tcs = t.encl_base + PAGE_SIZE
    assert (
        t.eaccept(addr, SGX_SECINFO_R | SGX_SECINFO_W | SGX_SECINFO_REG | SGX_SECINFO_PENDING) == 0
    )
    t.expect_eexit()

    t.run.tcs = t.encl_base
    t.eresume()
    t.expect_eexit()
    assert t.value(t.call(ENCL_OP_GET_FROM_ADDRESS, addr)) == MAGIC
    t.expect_eexit()
    enclave = driver.enclaves[next(iter(driver.enclaves))]
    assert enclave.pages_added == 1
    t.process.munmap(addr, PAGE_SIZE)


def test_augment_via_eaccept(driver: SgxDriver) -> None:
    """EACCEPT first on an unbacked page: #PF (not present) → EAUG → EACCEPT retried →
    0, all transparent to user space (EEXIT, no exception); the page is then usable."""
    t = Selftest(driver)
    total_size = t.total_size()
    addr = t.process.mmap(
        t.encl_base + total_size,
        PAGE_SIZE,
        uapi.PROT_READ | uapi.PROT_WRITE | uapi.PROT_EXEC,
        uapi.MAP_SHARED | uapi.MAP_FIXED,
        t.fd,
    )
    assert (
        t.eaccept(addr, SGX_SECINFO_R | SGX_SECINFO_W | SGX_SECINFO_REG | SGX_SECINFO_PENDING) == 0
    )
    t.expect_eexit()
    sanity_put_get(t, addr)
    t.process.munmap(addr, PAGE_SIZE)


def test_tcs_create(driver: SgxDriver) -> None:
    """Phase 1: three pages EAUGed by EACCEPT (stack, TCS, SSA), the TCS page filled from
    inside, MODIFY_TYPES → TCS (0, result 0, count 4096), EACCEPT(TCS|MODIFIED) → 0, and an
    ECALL through the new TCS. Phase 2: MODIFY_TYPES → TRIM over the three (count 12288),
    EACCEPT(TRIM|MODIFIED) each, REMOVE_PAGES (count 12288), then an EACCEPT at the old TCS
    address EAUGs a fresh regular page there, which takes a write and a read."""
    t = Selftest(driver)
    sgx2_probe_modify_types(t)
    total_size = t.total_size()
    assert total_size + 3 * PAGE_SIZE < t.encl_size
    addr = t.process.mmap(
        t.encl_base + total_size,
        3 * PAGE_SIZE,
        uapi.PROT_READ | uapi.PROT_WRITE,
        uapi.MAP_SHARED | uapi.MAP_FIXED,
        t.fd,
    )
    stack_end = t.encl_base + total_size
    tcs = t.encl_base + total_size + PAGE_SIZE
    ssa = t.encl_base + total_size + 2 * PAGE_SIZE
    for page in (stack_end, ssa, tcs):
        assert t.eaccept(page, PENDING_RW) == 0
        t.expect_eexit()

    t.call(ENCL_OP_INIT_TCS_PAGE, tcs, total_size + 2 * PAGE_SIZE, CODE)
    t.expect_eexit()
    err, result, count = t.modify_types(total_size + PAGE_SIZE, PAGE_SIZE, SGX_PAGE_TYPE_TCS)
    assert (err, result, count) == (0, 0, 4096)
    assert t.eaccept(tcs, SGX_SECINFO_TCS | SGX_SECINFO_MODIFIED) == 0
    t.expect_eexit()

    t.run.tcs = tcs
    t.call(ENCL_OP_PUT_TO_BUFFER, MAGIC)
    t.expect_eexit()
    assert t.value(t.call(ENCL_OP_GET_FROM_BUFFER)) == MAGIC
    t.expect_eexit()

    err, result, count = t.modify_types(total_size, 3 * PAGE_SIZE, SGX_PAGE_TYPE_TRIM)
    assert (err, result, count) == (0, 0, 3 * PAGE_SIZE)
    t.run.tcs = t.encl_base
    for page in (stack_end, tcs, ssa):
        assert t.eaccept(page, SGX_SECINFO_TRIM | SGX_SECINFO_MODIFIED) == 0
        t.expect_eexit()
    err, count = t.remove_pages(total_size, 3 * PAGE_SIZE)
    assert (err, count) == (0, 3 * PAGE_SIZE)

    assert t.eaccept(tcs, PENDING_RW) == 0
    t.expect_eexit()
    sanity_put_get(t, tcs)
    enclave = driver.enclaves[next(iter(driver.enclaves))]
    assert (enclave.pages_added, enclave.pages_removed) == (4, 3)
    t.process.munmap(addr, 3 * PAGE_SIZE)


def test_remove_added_page_no_eaccept(driver: SgxDriver) -> None:
    """MODIFY_TYPES → TRIM without the enclave's EACCEPT: REMOVE_PAGES' EMODPR probe returns
    SGX_PAGE_NOT_MODIFIABLE instead of faulting, so sgx_encl_remove_pages → EPERM, count 0."""
    t = Selftest(driver)
    sgx2_probe_modify_types(t)
    sanity_put_get(t, t.data_start())
    err, result, count = t.modify_types(DATA + PAGE_SIZE, PAGE_SIZE, SGX_PAGE_TYPE_TRIM)
    assert (err, result, count) == (0, 0, 4096)
    err, count = t.remove_pages(DATA + PAGE_SIZE, PAGE_SIZE)
    assert (err, count) == (errno.EPERM, 0)


def test_remove_added_page_invalid_access(driver: SgxDriver) -> None:
    """A read of a page after MODIFY_TYPES → TRIM, not yet accepted: the PTE is still
    present, the EPCM refuses it (#PF 0x8005: SGX | user | present)."""
    t = Selftest(driver)
    sgx2_probe_modify_types(t)
    data_start = t.data_start()
    sanity_put_get(t, data_start)
    err, result, count = t.modify_types(DATA + PAGE_SIZE, PAGE_SIZE, SGX_PAGE_TYPE_TRIM)
    assert (err, result, count) == (0, 0, 4096)
    t.call(ENCL_OP_GET_FROM_ADDRESS, data_start)
    t.expect_exception(0x8005, data_start)


def test_remove_added_page_invalid_access_after_eaccept(driver: SgxDriver) -> None:
    """As above with the TRIM EACCEPTed (→ 0) but not removed: the read still faults 0x8005."""
    t = Selftest(driver)
    sgx2_probe_modify_types(t)
    data_start = t.data_start()
    sanity_put_get(t, data_start)
    err, result, count = t.modify_types(DATA + PAGE_SIZE, PAGE_SIZE, SGX_PAGE_TYPE_TRIM)
    assert (err, result, count) == (0, 0, 4096)
    assert t.eaccept(data_start, SGX_SECINFO_TRIM | SGX_SECINFO_MODIFIED) == 0
    t.expect_eexit()
    t.call(ENCL_OP_GET_FROM_ADDRESS, data_start)
    t.expect_exception(0x8005, data_start)


def test_remove_untouched_page(driver: SgxDriver) -> None:
    """TRIM, EACCEPT, REMOVE_PAGES of a page never touched: 0 and count 4096 each step."""
    t = Selftest(driver)
    sgx2_probe_modify_types(t)
    data_start = t.data_start()
    err, result, count = t.modify_types(DATA + PAGE_SIZE, PAGE_SIZE, SGX_PAGE_TYPE_TRIM)
    assert (err, result, count) == (0, 0, 4096)
    assert t.eaccept(data_start, SGX_SECINFO_TRIM | SGX_SECINFO_MODIFIED) == 0
    t.expect_eexit()
    err, count = t.remove_pages(DATA + PAGE_SIZE, PAGE_SIZE)
    assert (err, count) == (0, 4096)


def test_tcs_entry_and_nop_heap_default(driver: SgxDriver) -> None:
    """tcs_entry: both hard-coded TCS pages can be entered (the fixture's own sanity)."""
    t = Selftest(driver, ENCL_HEAP_SIZE_DEFAULT)
    t.call(ENCL_OP_NOP)
    t.expect_eexit()
    t.run.tcs = t.encl_base + PAGE_SIZE
    t.call(ENCL_OP_NOP)
    t.expect_eexit()
