"""SGX2 where the platform shows it: ``status()["sgx2"]`` and the launch log's teardown record
with the pages an enclave had added after EINIT."""

from __future__ import annotations

import struct

from sgxlaunch.arch.constants import PAGE_SIZE
from sgxlaunch.driver import as_sgxs_image, uapi
from sgxlaunch.launch.log import TEARDOWN, check_exactly_once
from tests.support.cpu import sign_image
from tests.support.kselftest import (
    ENCL_OP_EACCEPT,
    SGX_SECINFO_PENDING,
    SGX_SECINFO_R,
    SGX_SECINFO_REG,
    SGX_SECINFO_W,
    SelftestEnclave,
    selftest_image,
)
from tests.support.platform import Owner


def test_status_reports_sgx2() -> None:
    """The platform's part has SGX2 (CPUID.(12H,0):EAX[1]), and status says so."""
    platform = Owner().platform()
    assert platform.cpu.cpuid(0x12, 0)[0] & 0x2
    assert platform.status()["sgx2"] is True


def test_teardown_record_counts_pages_added_after_einit() -> None:
    """An enclave that EACCEPTs three unbacked pages (EAUG on the fault each time), then is
    closed: the log's last record is a teardown record naming its MRENCLAVE with
    pages_added_after_einit = 3; the log still verifies and pairs attempts with outcomes."""
    owner = Owner()
    owner.set_up_launch_enclave()
    platform = owner.platform()
    image = selftest_image()
    sig = sign_image(image, "app")
    platform.cpu.register_program(sig.enclavehash, SelftestEnclave)
    result = platform.run(as_sgxs_image(image), sig)
    enclave = result.enclave
    assert enclave is not None
    end = max(p.offset for p in image.pages) + PAGE_SIZE
    start = enclave.baseaddr + end
    rw = uapi.PROT_READ | uapi.PROT_WRITE
    enclave.process.mmap(start, 3 * PAGE_SIZE, rw, uapi.MAP_SHARED | uapi.MAP_FIXED, enclave.fd)
    flags = SGX_SECINFO_R | SGX_SECINFO_W | SGX_SECINFO_REG | SGX_SECINFO_PENDING
    for k in range(3):
        out = enclave.ecall(0, struct.pack("<QQQ", ENCL_OP_EACCEPT, start + k * PAGE_SIZE, flags))
        assert struct.unpack("<Q", out)[0] == 0
    before = platform.status()["log_records"]
    enclave.close()
    records = platform.log_records()
    assert len(records) == before + 1
    last = records[-1]
    assert last["kind"] == TEARDOWN
    assert last["mrenclave"] == sig.enclavehash.hex()
    assert last["pages_added_after_einit"] == 3
    assert last["pages_removed"] == 0
    assert platform.verify_log() == len(records)
    check_exactly_once(records)
