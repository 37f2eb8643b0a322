"""EPC reclaim: an enclave several times larger than the EPC loads, runs and keeps every byte."""

from __future__ import annotations

import errno
import random
import struct

import pytest

from sgxlaunch.cpu import EnclaveImage, ImagePage, program_image
from sgxlaunch.driver import DriverError, LoadedEnclave, SgxDriver, as_sgxs_image, load
from sgxlaunch.formats.sgxs import SgxsImage, SgxsPage
from tests.support.cpu import DEBUG, MemoryProgram, sign_image
from tests.support.driver import platform

PAGE = 4096


def big_enclave(driver: SgxDriver, pages: int, seed: int) -> tuple[LoadedEnclave, dict[int, bytes]]:
    """A debug MemoryProgram enclave with ``pages`` data pages of random bytes."""
    rng = random.Random(seed)
    base = list(as_sgxs_image(program_image(MemoryProgram, data_pages=0)).pages)
    start = base[-1].offset + PAGE
    rw = base[-1].secinfo_flags
    contents = {start + i * PAGE: rng.randbytes(PAGE) for i in range(pages)}
    all_pages = base + [SgxsPage(off, rw, data, 0xFFFF) for off, data in contents.items()]
    size = 1 << (start + pages * PAGE - 1).bit_length()
    image = SgxsImage(1, size, tuple(all_pages))
    signed = EnclaveImage(
        size, 1, tuple(ImagePage(p.offset, p.secinfo_flags, p.data, p.measured) for p in all_pages)
    )
    sig = sign_image(signed, "app", flags=DEBUG)
    driver.cpu.register_program(sig.enclavehash, MemoryProgram)
    return load(driver.new_process(), image, sig), contents


def test_enclave_four_times_the_epc_loads_and_reads_back_intact() -> None:
    driver = platform(epc_mib=1)
    epc_pages = driver.cpu.epc_pages
    enclave, contents = big_enclave(driver, 4 * epc_pages, seed=1)
    assert driver.stats().evictions > 2 * epc_pages
    rng = random.Random(2)
    order = list(contents)
    rng.shuffle(order)
    for offset in order:  # every page, in random order, through the enclave's own reads
        assert enclave.ecall(1, struct.pack("<QQ", offset, PAGE)) == contents[offset]
    stats = driver.stats()
    assert stats.reloads > epc_pages


def test_writes_survive_eviction_and_reload() -> None:
    driver = platform(epc_mib=1)
    enclave, contents = big_enclave(driver, 3 * driver.cpu.epc_pages, seed=3)
    rng = random.Random(4)
    offsets = list(contents)
    written = {}
    for offset in rng.sample(offsets, 200):
        data = rng.randbytes(64)
        at = offset + 64 * rng.randrange(64)
        enclave.ecall(0, struct.pack("<Q", at) + data)
        written[at] = data
    for offset in rng.sample(offsets, len(offsets)):  # sweep everything out and back
        enclave.ecall(1, struct.pack("<QQ", offset, 8))
    for at, data in written.items():
        assert enclave.ecall(1, struct.pack("<QQ", at, 64)) == data


def test_debug_reads_go_through_the_reclaimer() -> None:
    driver = platform(epc_mib=1)
    enclave, contents = big_enclave(driver, 2 * driver.cpu.epc_pages, seed=5)
    rng = random.Random(6)
    for offset in rng.sample(list(contents), 100):
        word = 8 * rng.randrange(512)
        got = enclave.process.debug_read(enclave.baseaddr + offset + word, 8)
        assert got == contents[offset][word : word + 8]


def test_tampered_backing_page_is_refused_on_reload() -> None:
    driver = platform(epc_mib=1)
    enclave, contents = big_enclave(driver, 2 * driver.cpu.epc_pages, seed=7)
    page = next(
        p
        for e in driver.enclaves.values()
        for p in e.pages.values()
        if p.backing is not None and p.offset in contents
    )
    assert page.backing is not None
    data, pcmd = page.backing
    page.backing = (bytes([data[0] ^ 1]) + data[1:], pcmd)
    with pytest.raises(DriverError) as err:
        enclave.ecall(1, struct.pack("<QQ", page.offset, 8))
    assert err.value.errno == errno.EFAULT
    assert "MAC_COMPARE_FAIL" in str(err.value)


def test_replayed_old_copy_of_a_page_is_refused() -> None:
    driver = platform(epc_mib=1)
    enclave, contents = big_enclave(driver, 2 * driver.cpu.epc_pages, seed=8)
    page = next(
        p
        for e in driver.enclaves.values()
        for p in e.pages.values()
        if p.backing is not None and p.offset in contents
    )
    old = page.backing
    enclave.ecall(0, struct.pack("<Q", page.offset) + b"new!")  # reload, change, and
    for offset in contents:  # ... push it out again with a newer version
        enclave.ecall(1, struct.pack("<QQ", offset, 8))
        if page.backing is not None and page.backing != old:
            break
    assert page.backing is not None and page.backing != old
    page.backing = old
    with pytest.raises(DriverError) as err:
        enclave.ecall(1, struct.pack("<QQ", page.offset, 8))
    assert err.value.errno == errno.EFAULT
