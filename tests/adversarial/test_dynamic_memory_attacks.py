"""Attacks on the owner's ``dynamic_memory`` limits (issue 17; ``docs/driver.md``).

The enclave controls its EPCM permissions alone (EMODPE, EACCEPTCOPY: ENCLU leaves no driver
sees, ``../shared/reference/sgx2-spec.md`` §9), so every test here gives the enclave EPCM X on a
dynamic page and checks that the kernel's half — the VMA and the PTE (§6.6: a fetch needs both
and EPCM.X) — stays closed: the fetch faults with U|I|P (0x15) and the code never runs.
"""

from __future__ import annotations

import errno

import pytest

from sgxlaunch.arch.constants import PAGE_SIZE
from sgxlaunch.driver import SgxDriver, uapi
from sgxlaunch.driver.dynamic import REFUSED
from sgxlaunch.driver.owner import DynamicMemory, OwnerLimits
from tests.support.dynamic import FETCHED_OUTPUT, Loader, R, W, X
from tests.support.kselftest import (
    SGX_SECINFO_MODIFIED,
    SGX_SECINFO_TRIM,
    sgx2_platform,
)

DATA = OwnerLimits(DynamicMemory.DATA, unmeasured_exec=False, rwx_pages=False)
ATTESTED = OwnerLimits(DynamicMemory.ATTESTED_CODE, unmeasured_exec=False, rwx_pages=False)
FETCH_FAULT = 0x15  # #PF: user | instruction fetch | present (a PTE without X)


@pytest.fixture
def driver() -> SgxDriver:
    return sgx2_platform(epc_mib=2)


def _epcm_x(t: Loader, address: int) -> bool:
    epc = t.enclave.pages[t.offset(address)].epc
    assert epc is not None
    return bool(t.driver.cpu.epcm(epc).permissions & X)


def _vma_prot(t: Loader, address: int) -> int:
    found = t.process.find_vma(address)
    assert found is not None
    prot: int = found[0]
    return prot


@pytest.mark.parametrize("limits", [DATA, ATTESTED], ids=["data", "attested-code"])
def test_emodpe_without_a_grant_fetch_faults(driver: SgxDriver, limits: OwnerLimits) -> None:
    """The enclave EMODPEs X onto its dynamic page and writes code there: the EPCM has X, but
    the mapping cannot get it (mprotect R-X → EACCES, no grant) and the fetch faults (0x15)."""
    t = Loader(driver, limits)
    code = t.add_pages()
    t.fetch_code(code)
    assert _epcm_x(t, code)
    assert t.mprotect(code, 1, R | X) == errno.EACCES  # sgx_vma_mprotect → sgx_encl_may_map
    assert _vma_prot(t, code) == R | W  # the refusal changed nothing
    assert t.execute(code) == b""
    t.expect_exception(FETCH_FAULT, code)


@pytest.mark.parametrize("limits", [DATA, ATTESTED], ids=["data", "attested-code"])
def test_emodpe_in_an_executable_vma_made_before_init_fetch_faults(
    driver: SgxDriver, limits: OwnerLimits
) -> None:
    """The loader mapped ELRANGE RWX before ECREATE (nothing existed to refuse it), so the VMA
    allows fetches: the EAUGed page still gets a PTE without X (door 3) and the EMODPEd code's
    fetch faults — the VMA alone grants nothing."""
    t = Loader(driver, limits, premap=R | W | X)
    code = t.add_pages(mapped=True)
    t.fetch_code(code)
    assert _epcm_x(t, code)
    assert t.execute(code) == b""
    t.expect_exception(FETCH_FAULT, code)
    t.eresume()  # user space retries: the fault is reported again, the code still does not run
    t.expect_exception(FETCH_FAULT, code)


def test_trim_remove_and_re_eaug_stays_non_executable(driver: SgxDriver) -> None:
    """Removing a dynamic page and EAUGing a fresh one at the same address (in an RWX VMA)
    gives the new page no executable PTE either."""
    t = Loader(driver, DATA, premap=R | W | X)
    code = t.add_pages(mapped=True)
    off = t.offset(code)
    assert t.modify_types(off, PAGE_SIZE, uapi.SGX_PAGE_TYPE_TRIM) == (0, 0, PAGE_SIZE)
    assert t.eaccept(code, SGX_SECINFO_TRIM | SGX_SECINFO_MODIFIED) == 0
    t.expect_eexit()
    assert t.remove_pages(off, PAGE_SIZE) == (0, PAGE_SIZE)
    assert off not in t.enclave.pages
    assert t.grow_heap(code) == 0
    t.expect_eexit()
    t.fetch_code(code)
    assert t.execute(code) == b""
    t.expect_exception(FETCH_FAULT, code)


def test_second_mapping_of_the_enclave_fd_cannot_execute(driver: SgxDriver) -> None:
    """A second mapping of the same enclave pages (another VMA of the fd, made after INIT) is
    checked as the first: R-X over the dynamic page → EACCES."""
    t = Loader(driver, DATA)
    code = t.add_pages()
    t.fetch_code(code)
    t.events()
    assert t.mmap(code, 1, R | X) == errno.EACCES  # sgx_mmap → sgx_encl_may_map
    assert _vma_prot(t, code) == R | W  # MAP_FIXED refused: the first mapping is still there
    assert [(e.action, e.outcome) for e in t.events()] == [("mmap", REFUSED)]


def test_code_level_runs_what_data_refuses(driver: SgxDriver) -> None:
    """Control: the same steps under ``code`` run the fetched code (the refusals above are the
    policy's, not an emulator limitation)."""
    t = Loader(driver, OwnerLimits(DynamicMemory.CODE), premap=R | W | X)
    code = t.add_pages(mapped=True)
    t.fetch_code(code)
    assert t.execute(code) == FETCHED_OUTPUT
