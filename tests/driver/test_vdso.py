"""The vDSO model: exception reports, ERESUME, and what happens to a parked enclave thread."""

from __future__ import annotations

import errno

import pytest

from sgxlaunch.arch.constants import PAGE_SIZE
from sgxlaunch.driver import DriverError, uapi
from sgxlaunch.driver.vdso import EnclaveRun
from tests.support.kselftest import (
    DATA,
    ENCL_OP_GET_FROM_ADDRESS,
    ENCL_OP_NOP,
    ENCL_OP_PUT_TO_ADDRESS,
    MAGIC,
    Selftest,
    sgx2_platform,
)


def test_eresume_without_a_reported_exception_is_efault() -> None:
    """ERESUME on a TCS with no AEX to resume (ERESUME #GPs: CSSA is 0) fails; an unknown
    leaf is EINVAL."""
    t = Selftest(sgx2_platform())
    with pytest.raises(DriverError) as err:
        t.eresume()
    assert err.value.errno == errno.EFAULT
    with pytest.raises(DriverError) as err:
        t.process.vdso_sgx_enter_enclave(7, EnclaveRun(tcs=t.encl_base))
    assert err.value.errno == errno.EINVAL


def test_a_parked_thread_keeps_its_tcs_busy_and_close_gives_it_up() -> None:
    """After an exception report the call waits on its TCS: EENTER there is refused (TCS busy,
    EFAULT), the other TCS works; closing the enclave ends the parked call first, then the
    driver tears the enclave down (its EPC pages freed)."""
    driver = sgx2_platform()
    t = Selftest(driver)
    free_before = driver.stats().epc_free
    t.modify_types(DATA + PAGE_SIZE, PAGE_SIZE, uapi.SGX_PAGE_TYPE_TRIM)
    t.call(ENCL_OP_GET_FROM_ADDRESS, t.data_start())
    t.expect_exception(0x8005, t.data_start())
    with pytest.raises(DriverError) as err:
        t.call(ENCL_OP_NOP)
    assert err.value.errno == errno.EFAULT
    t.run.tcs = t.encl_base + PAGE_SIZE
    t.call(ENCL_OP_NOP)
    t.expect_eexit()
    t.close()
    assert not driver.enclaves
    assert driver.stats().epc_free > free_before


def test_without_the_vdso_an_unfixed_fault_ends_the_ecall() -> None:
    """Process.ecall has no exception fixup: the EPCM fault ends the ECALL with EFAULT
    (the signal), naming the #PF."""
    t = Selftest(sgx2_platform())
    t.restrict_permissions(DATA + PAGE_SIZE, PAGE_SIZE, 1)
    data = (ENCL_OP_PUT_TO_ADDRESS).to_bytes(8, "little")
    data += t.data_start().to_bytes(8, "little") + MAGIC.to_bytes(8, "little")
    with pytest.raises(DriverError, match="SIGSEGV in enclave") as err:
        t.process.ecall(t.encl_base, 0, data)
    assert err.value.errno == errno.EFAULT
