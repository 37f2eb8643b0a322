"""Non-canonical SGXS streams: each rule refused, naming the record index and file offset.

Every case is checked on both validation paths: a stream of a few records (the per-record path)
and the same fault buried inside a long run of fully measured pages (the vectorised path).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from sgxlaunch.arch.constants import PAGE_SIZE, PageType, secinfo_flags
from sgxlaunch.errors import MalformedInput, SgxlaunchError, UsageError
from sgxlaunch.formats import sgxs
from sgxlaunch.measure import ecreate_block

REG_RW = secinfo_flags(PageType.REG, 0b011)
FULL = sgxs.FULL_PAGE_RECORD_SIZE


def full_pages(n: int, size: int = 1 << 24) -> bytearray:
    pages = tuple(
        sgxs.SgxsPage(i * PAGE_SIZE, REG_RW, bytes([i % 251]) * PAGE_SIZE, 0xFFFF, 0)
        for i in range(n)
    )
    return bytearray(sgxs.write_sgxs(sgxs.SgxsImage(1, size, pages)))


def eadd_at(page: int) -> int:
    """File offset of page ``page``'s EADD record in a full-page stream."""
    return 64 + page * FULL


def eextend_at(page: int, chunk: int) -> int:
    return eadd_at(page) + 64 + chunk * sgxs.CHUNK_RECORD_SIZE


def index_of_eadd(page: int) -> int:
    return 1 + page * 17


def put_u64(data: bytearray, at: int, value: int) -> None:
    data[at : at + 8] = struct.pack("<Q", value)


def refused(data: bytes | bytearray) -> MalformedInput:
    with pytest.raises(MalformedInput) as err:
        sgxs.measure_bytes(data)
    with pytest.raises(MalformedInput) as err2:
        sgxs.parse_sgxs(data)
    assert str(err.value) == str(err2.value)
    return err.value


# Each case: (name, mutate(data, page) -> expected (record index, file offset), message part)
Mutation = Callable[[bytearray, int], tuple[int, int]]


def _eadd_unaligned(d: bytearray, p: int) -> tuple[int, int]:
    put_u64(d, eadd_at(p) + 8, p * PAGE_SIZE + 0x10)
    return index_of_eadd(p), eadd_at(p) + 8


def _eadd_not_increasing(d: bytearray, p: int) -> tuple[int, int]:
    put_u64(d, eadd_at(p) + 8, (p - 1) * PAGE_SIZE)
    return index_of_eadd(p), eadd_at(p) + 8


def _eadd_beyond_size(d: bytearray, p: int) -> tuple[int, int]:
    put_u64(d, eadd_at(p) + 8, 1 << 24)
    return index_of_eadd(p), eadd_at(p) + 8


def _eextend_unaligned(d: bytearray, p: int) -> tuple[int, int]:
    put_u64(d, eextend_at(p, 3) + 8, p * PAGE_SIZE + 3 * 256 + 8)
    return index_of_eadd(p) + 4, eextend_at(p, 3) + 8


def _eextend_outside_page(d: bytearray, p: int) -> tuple[int, int]:
    put_u64(d, eextend_at(p, 3) + 8, (p + 1) * PAGE_SIZE + 3 * 256)
    return index_of_eadd(p) + 4, eextend_at(p, 3) + 8


def _eextend_duplicate(d: bytearray, p: int) -> tuple[int, int]:
    put_u64(d, eextend_at(p, 3) + 8, p * PAGE_SIZE + 2 * 256)
    return index_of_eadd(p) + 4, eextend_at(p, 3) + 8


def _tcs_with_permissions(d: bytearray, p: int) -> tuple[int, int]:
    put_u64(d, eadd_at(p) + 16, secinfo_flags(PageType.TCS, 0b001))
    return index_of_eadd(p), eadd_at(p) + 16


def _secinfo_reserved_bit(d: bytearray, p: int) -> tuple[int, int]:
    put_u64(d, eadd_at(p) + 16, REG_RW | (1 << 40))
    return index_of_eadd(p), eadd_at(p) + 16


def _secinfo_bad_page_type(d: bytearray, p: int) -> tuple[int, int]:
    put_u64(d, eadd_at(p) + 16, secinfo_flags(PageType.VA, 0))
    return index_of_eadd(p), eadd_at(p) + 17


def _eadd_reserved_byte(d: bytearray, p: int) -> tuple[int, int]:
    d[eadd_at(p) + 63] = 1
    return index_of_eadd(p), eadd_at(p) + 24


def _eextend_reserved_byte(d: bytearray, p: int) -> tuple[int, int]:
    d[eextend_at(p, 5) + 40] = 1
    return index_of_eadd(p) + 6, eextend_at(p, 5) + 16


def _unknown_tag(d: bytearray, p: int) -> tuple[int, int]:
    d[eextend_at(p, 9) : eextend_at(p, 9) + 8] = b"EXTEND\x00\x00"
    return index_of_eadd(p) + 10, eextend_at(p, 9)


def _second_ecreate(d: bytearray, p: int) -> tuple[int, int]:
    d[eadd_at(p) : eadd_at(p) + 64] = ecreate_block(1, 1 << 24)
    return index_of_eadd(p), eadd_at(p)


CASES: dict[str, tuple[Mutation, str]] = {
    "eadd_offset_not_page_aligned": (_eadd_unaligned, "not page-aligned"),
    "eadd_offset_not_increasing": (_eadd_not_increasing, "does not increase"),
    "eadd_offset_outside_enclave": (_eadd_beyond_size, "outside the enclave"),
    "eextend_offset_not_256_aligned": (_eextend_unaligned, "not 256-byte aligned"),
    "eextend_outside_page_of_eadd": (_eextend_outside_page, "outside the page"),
    "eextend_chunk_repeated": (_eextend_duplicate, "repeats a chunk"),
    "tcs_page_with_permissions": (_tcs_with_permissions, "TCS page must have no permission"),
    "secinfo_reserved_flag_bit": (_secinfo_reserved_bit, "reserved bits"),
    "secinfo_page_type_not_reg_or_tcs": (_secinfo_bad_page_type, "neither REG"),
    "eadd_reserved_byte_set": (_eadd_reserved_byte, "reserved bytes"),
    "eextend_reserved_byte_set": (_eextend_reserved_byte, "reserved header bytes"),
    "unknown_record_tag": (_unknown_tag, "unknown record tag"),
    "second_ecreate": (_second_ecreate, "only be the first record"),
}


@pytest.mark.parametrize("page", [1, 150], ids=["per-record-path", "vectorised-path"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_noncanonical_stream_refused_naming_record(case: str, page: int) -> None:
    mutate, words = CASES[case]
    data = full_pages(3 if page == 1 else 300)
    index, offset = mutate(data, page)
    err = refused(data)
    assert words in err.message
    assert err.field == f"record[{index}]"
    assert err.offset == offset
    assert f"record {index}" in str(err)


def test_first_record_must_be_ecreate() -> None:
    data = full_pages(2)
    err = refused(data[64:])
    assert err.field == "record[0]"
    assert err.offset == 0


def test_eextend_before_any_eadd_refused() -> None:
    data = full_pages(1)
    stream = data[:64] + data[128 : 128 + sgxs.CHUNK_RECORD_SIZE]
    err = refused(stream)
    assert "before any EADD" in err.message
    assert err.field == "record[1]"


@pytest.mark.parametrize("size", [0, 4096, 0x3000, (1 << 20) + 4096])
def test_enclave_size_must_be_power_of_two_at_least_8k(size: int) -> None:
    err = refused(ecreate_block(1, size))
    assert "power of two" in err.message


def test_empty_file_refused() -> None:
    refused(b"")


def test_every_truncation_refused_or_a_shorter_canonical_stream() -> None:
    data = bytes(full_pages(2))
    boundaries = {0}
    for _index, offset, tag in sgxs.iter_records(data):
        size = sgxs.CHUNK_RECORD_SIZE if tag.startswith((b"EEXTEND", b"UNMEASRD")) else 64
        boundaries.add(offset + size)
    for cut in range(len(data)):
        prefix = data[:cut]
        if cut in boundaries and cut:
            sgxs.parse_sgxs(prefix)  # a shorter stream, still canonical
            continue
        with pytest.raises(MalformedInput):
            sgxs.measure_bytes(prefix)


@pytest.mark.parametrize("extra", [b"\x00", b"\x00" * 63, b"\x00" * 64, b"EEXTEND\x00" * 40])
def test_trailing_bytes_refused(extra: bytes) -> None:
    data = bytes(full_pages(2)) + extra
    with pytest.raises(MalformedInput):
        sgxs.measure_bytes(data)


def test_parsers_raise_only_project_errors_on_random_mutations() -> None:
    import random

    rnd = random.Random(1234)
    base = bytes(full_pages(3))
    for _ in range(400):
        data = bytearray(base)
        for _ in range(rnd.randint(1, 4)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        try:
            sgxs.measure_bytes(data)
            sgxs.parse_sgxs(data)
        except (MalformedInput, UsageError):
            pass
        except SgxlaunchError as exc:  # pragma: no cover - would be a bug
            pytest.fail(f"unexpected project error {exc!r}")
