"""The process's enclave mappings and page tables: VMA splits, PTE protection, zaps."""

from __future__ import annotations

import errno

import pytest

from sgxlaunch.arch.constants import PAGE_SIZE
from sgxlaunch.driver import DriverError, LoadedEnclave, SgxDriver, load, uapi
from tests.support.cpu import MemoryProgram
from tests.support.driver import platform, program

RW = uapi.PROT_READ | uapi.PROT_WRITE


def loaded() -> tuple[SgxDriver, LoadedEnclave]:
    driver = platform()
    image, sig = program()
    driver.cpu.register_program(sig.enclavehash, MemoryProgram)
    return driver, load(driver.new_process(), image, sig)


def test_mprotect_of_one_page_splits_the_vma_and_changes_only_its_pte() -> None:
    """mprotect of the middle of a mapping splits it in three (mm/mprotect.c); only the PTE of
    the range takes the new protection (change_protection)."""
    _, encl = loaded()
    p = encl.process
    base = encl.baseaddr
    start = base + 0x2000  # SSA + data: RW pages 0x2000, 0x3000
    p.munmap(start, 2 * PAGE_SIZE)
    p.mmap(start, 2 * PAGE_SIZE, RW, uapi.MAP_SHARED | uapi.MAP_FIXED, encl.fd)
    p.touch(start)
    p.touch(start + PAGE_SIZE)
    assert p.ptes[start] == RW and p.ptes[start + PAGE_SIZE] == RW
    p.mprotect(start + PAGE_SIZE, PAGE_SIZE, uapi.PROT_READ)
    spans = [(v.start, v.end, v.prot) for v in p.vmas if start <= v.start < start + 2 * PAGE_SIZE]
    assert spans == [
        (start, start + PAGE_SIZE, RW),
        (start + PAGE_SIZE, start + 2 * PAGE_SIZE, uapi.PROT_READ),
    ]
    assert p.ptes[start] == RW and p.ptes[start + PAGE_SIZE] == uapi.PROT_READ
    p.mprotect(start, 2 * PAGE_SIZE, uapi.PROT_NONE)
    assert start not in p.ptes and start + PAGE_SIZE not in p.ptes


def test_munmap_removes_ptes_and_eviction_zaps_them() -> None:
    """munmap drops the range's PTEs; the reclaimer zaps a page's PTE before EBLOCK
    (sgx_reclaimer_block), so the next access faults and reloads it."""
    driver, encl = loaded()
    p = encl.process
    data = encl.baseaddr + 0x3000
    encl.ecall(0, (0x3000).to_bytes(8, "little") + b"hello")
    assert data in p.ptes
    (enclave,) = driver.enclaves.values()
    driver.epc.reclaim(64)
    assert enclave.pages[0x3000].epc is None and data not in p.ptes
    assert encl.ecall(1, (0x3000).to_bytes(8, "little") + (5).to_bytes(8, "little")) == b"hello"
    assert data in p.ptes
    p.munmap(data, PAGE_SIZE)
    assert data not in p.ptes
    with pytest.raises(DriverError) as err:
        p.touch(data)
    assert err.value.errno == errno.EFAULT
