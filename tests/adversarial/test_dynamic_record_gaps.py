"""The ``code`` level's record (``docs/driver.md`` "Owner limits on dynamic memory": under
``code`` the driver records every dynamic executable mapping and every EAUG into an executable
VMA). The attack: make a dynamic page executable without any step the driver records — EAUG it
through a non-executable mapping in a second process, then run it through an executable VMA
the first process made before INIT (Gramine's premap; nothing is recorded before INIT).
"""

from __future__ import annotations

import pytest

from sgxlaunch.arch.constants import PAGE_SIZE
from sgxlaunch.driver import SgxDriver, uapi
from sgxlaunch.driver.dynamic import ALLOWED
from sgxlaunch.driver.owner import DynamicMemory, OwnerLimits
from tests.support.dynamic import FETCHED_OUTPUT, Loader, R, W, X
from tests.support.kselftest import sgx2_platform

CODE = OwnerLimits(DynamicMemory.CODE)


@pytest.fixture
def driver() -> SgxDriver:
    return sgx2_platform(epc_mib=2)


def test_code_page_eaugd_from_another_process_and_run_through_a_premapped_vma_is_recorded(
    driver: SgxDriver,
) -> None:
    """A second process holding the enclave fd maps a hole RW and stores to it (EAUG through a
    non-executable VMA: nothing to record). The enclave accepts the page, writes code there and
    runs it through the RWX VMA its loader mapped before INIT. The executable PTE the fault
    path installs for that dynamic page must be recorded (allowed, ``fault``). Control: the
    code ran (the record is about a real execution)."""
    t = Loader(driver, CODE, premap=R | W | X)
    address = t.hole()
    other = driver.new_process()
    fd = t.process.send_fd(t.fd, other)
    other.mmap(address, PAGE_SIZE, R | W, uapi.MAP_SHARED | uapi.MAP_FIXED, fd)
    other.touch(address, write=True)
    assert t.offset(address) in t.enclave.pages and t.enclave.pages[t.offset(address)].dynamic
    assert t.events() == []  # the EAUG went through an RW mapping: nothing executable yet
    assert t.grow_heap(address) == 0
    t.expect_eexit()
    t.fetch_code(address)
    assert t.execute(address) == FETCHED_OUTPUT
    executable = [e for e in t.events() if e.prot & X and e.outcome == ALLOWED]
    assert executable, "dynamic code ran under 'code' and nothing was recorded"
    assert executable[0].start == t.offset(address)
