"""Multi-page enclave reads and writes take the per-page checks in one pass (``Enclu``'s
whole-page path) and behave exactly as page by page: same bytes, same faults, same partial
effect before a fault (SDM 37.3 access checks; the EPCM refuses with #PF and the SGX bit)."""

from __future__ import annotations

import struct

import pytest

from sgxlaunch.cpu import PageFault
from sgxlaunch.cpu.edmm import PF_SGX
from tests.support.cpu import Launched, MemoryProgram, cpu, launch

PAGE = 4096


def _enclave(data_pages: int = 4) -> Launched:
    return launch(cpu(), MemoryProgram, "app", data_pages=data_pages)


def _write(le: Launched, offset: int, data: bytes) -> bytes:
    return le.call(0, struct.pack("<Q", offset) + data)


def _read(le: Launched, offset: int, length: int) -> bytes:
    return le.call(1, struct.pack("<QQ", offset, length))


def test_whole_pages_round_trip_and_unaligned_still_page_by_page() -> None:
    le = _enclave()
    data = bytes(range(256)) * 64  # 4 pages
    _write(le, 0x2000, data)  # SSA + three data pages, all RW
    assert _read(le, 0x2000, 4 * PAGE) == data
    assert _read(le, 0x2000 + 10, 2 * PAGE) == data[10 : 10 + 2 * PAGE]
    _write(le, 0x3000 + 5, b"\xee" * PAGE)
    assert (
        _read(le, 0x3000, 2 * PAGE)
        == data[PAGE : 2 * PAGE][:5] + b"\xee" * PAGE + data[2 * PAGE + 5 : 3 * PAGE]
    )


def test_read_across_code_and_data_pages() -> None:
    le = _enclave()
    code_and_ssa = _read(le, 0x1000, 2 * PAGE)
    assert code_and_ssa[:32] == le.image.pages[1].data[:32]


def test_write_into_a_read_only_page_faults_with_the_sgx_bit_as_page_by_page() -> None:
    le = _enclave()
    with pytest.raises(PageFault) as info:
        _write(le, 0x1000, b"\x01" * (2 * PAGE))  # the code page has no W in the EPCM
    assert info.value.error_code & PF_SGX


def test_write_running_off_the_enclave_writes_the_pages_before_the_fault() -> None:
    le = _enclave(data_pages=1)
    last = max(p.offset for p in le.image.pages)
    with pytest.raises(PageFault):
        _write(le, last, b"\x07" * (2 * PAGE))  # the next page is not in the enclave
    assert _read(le, last, PAGE) == b"\x07" * PAGE  # as the page-by-page path leaves it
