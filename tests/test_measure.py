"""MRENCLAVE builder against an independent reference measurer (sgx-launch-spec.md §2.6)."""

from __future__ import annotations

import hashlib
import random
import struct

import pytest

from sgxlaunch import measure
from sgxlaunch.errors import MalformedInput, UsageError
from sgxlaunch.measure import Measurement

PAGE = 4096


def reference_mrenclave(
    secs_size: int, ssaframesize: int, pages: list[tuple[int, int, bytes, bool]]
) -> bytes:
    """sgx-launch-spec.md §2.6, written out plainly: one update per 64-byte block / chunk."""
    h = hashlib.sha256()
    h.update(struct.pack("<8sIQ44s", b"ECREATE", ssaframesize, secs_size, b""))
    for off, flags, data, measured in pages:
        h.update(struct.pack("<8sQQ40s", b"EADD", off, flags, b""))
        if measured:
            for i in range(0, PAGE, 256):
                h.update(struct.pack("<8sQ48s", b"EEXTEND", off + i, b""))
                h.update(data[i : i + 256])
    return h.digest()


def random_pages(rng: random.Random, count: int) -> tuple[int, list[tuple[int, int, bytes, bool]]]:
    slots = rng.sample(range(4 * count), count)
    pages = []
    for slot in slots:  # any order: the measurement does not sort
        flags = rng.choice([0x100, 0x201, 0x203, 0x205, 0x207, 0x200, 0x20F])
        data = rng.randbytes(PAGE)
        pages.append((slot * PAGE, flags, data, rng.random() < 0.7))
    size = 1 << max(13, (4 * count * PAGE - 1).bit_length())
    return size, pages


@pytest.mark.parametrize("seed", range(8))
def test_measurement_matches_reference_on_random_pages(seed: int) -> None:
    rng = random.Random(seed)
    size, pages = random_pages(rng, rng.randint(1, 24))
    ssa = rng.randint(1, 8)
    m = Measurement()
    m.ecreate(ssa, size)
    for off, flags, data, measured in pages:
        m.add_page(off, flags, data, measured)
    expected = reference_mrenclave(size, ssa, pages)
    assert m.mrenclave() == expected
    assert measure.mrenclave_of_pages(size, ssa, pages) == expected


def test_measurement_with_per_chunk_eextend_matches_reference() -> None:
    rng = random.Random(99)
    size, pages = random_pages(rng, 6)
    m = Measurement()
    m.ecreate(1, size)
    for off, flags, data, measured in pages:
        m.eadd(off, flags)
        if measured:
            for i in range(0, PAGE, 256):
                m.eextend(off + i, data[i : i + 256])
    assert m.mrenclave() == reference_mrenclave(size, 1, pages)


def test_empty_enclave_is_the_ecreate_block_only() -> None:
    m = Measurement()
    m.ecreate(1, 0x2000)
    assert m.mrenclave() == reference_mrenclave(0x2000, 1, [])
    assert (
        m.mrenclave()
        == hashlib.sha256(b"ECREATE\x00" + struct.pack("<IQ", 1, 0x2000) + bytes(44)).digest()
    )


def test_eextend_page_equals_sixteen_eextends() -> None:
    rng = random.Random(5)
    for _ in range(4):
        off = rng.randrange(0, 1 << 20) * PAGE
        data = rng.randbytes(PAGE)
        one, many = Measurement(), Measurement()
        for m in (one, many):
            m.ecreate(2, 1 << 33)
            m.eadd(off, 0x203)
        one.eextend_page(off, data)
        for i in range(0, PAGE, 256):
            many.eextend(off + i, data[i : i + 256])
        assert one.mrenclave() == many.mrenclave()
        assert one.update_count == many.update_count


def test_eextend_page_accepts_bytearray_and_memoryview() -> None:
    data = random.Random(3).randbytes(PAGE)
    digests = set()
    for buf in (data, bytearray(data), memoryview(data)):
        m = Measurement()
        m.ecreate(1, 0x2000)
        m.eadd(0x1000, 0x201)
        m.eextend_page(0x1000, buf)
        digests.add(m.mrenclave())
    assert len(digests) == 1


def test_update_count_follows_the_sdm_block_count() -> None:
    # ECREATE and EADD hash one 64-byte block each; EEXTEND hashes 64 + 256 bytes = 5 blocks.
    m = Measurement()
    m.ecreate(1, 0x4000)
    m.eadd(0, 0x201)
    for i in range(0, PAGE, 256):
        m.eextend(i, bytes(256))
    assert m.update_count == 1 + 1 + 16 * 5


def test_update_count_of_a_measured_page() -> None:
    m = Measurement()
    m.ecreate(1, 0x4000)
    m.eadd(0x1000, 0x201)
    m.eextend_page(0x1000, bytes(PAGE))
    assert m.update_count == 1 + 1 + 16 * 5


def test_mrenclave_leaves_builder_usable() -> None:
    m = Measurement()
    m.ecreate(1, 0x4000)
    first = m.mrenclave()
    assert m.mrenclave() == first
    m.eadd(0, 0x201)
    assert m.mrenclave() != first
    copy = m.copy()
    copy.eadd(0x1000, 0x201)
    assert copy.mrenclave() != m.mrenclave()
    assert m.mrenclave() == reference_mrenclave(0x4000, 1, [(0, 0x201, b"", False)])


# -- ordering ---------------------------------------------------------------------------------


def test_eadd_before_ecreate_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        Measurement().eadd(0, 0x201)


def test_eextend_before_ecreate_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        Measurement().eextend(0, bytes(256))
    with pytest.raises(UsageError):
        Measurement().eextend_page(0, bytes(PAGE))


def test_mrenclave_before_ecreate_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        Measurement().mrenclave()


def test_second_ecreate_is_a_usage_error() -> None:
    m = Measurement()
    m.ecreate(1, 0x2000)
    before = m.mrenclave()
    with pytest.raises(UsageError):
        m.ecreate(1, 0x2000)
    assert m.mrenclave() == before


# -- alignment --------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [1, 0x800, 0xFFF, 0x1001, 0x10100])
def test_misaligned_eadd_is_malformed(offset: int) -> None:
    m = Measurement()
    m.ecreate(1, 0x20000)
    with pytest.raises(MalformedInput):
        m.eadd(offset, 0x201)


@pytest.mark.parametrize("offset", [1, 0x80, 0xFF, 0x101, 0x1010])
def test_misaligned_eextend_is_malformed(offset: int) -> None:
    m = Measurement()
    m.ecreate(1, 0x20000)
    with pytest.raises(MalformedInput):
        m.eextend(offset, bytes(256))


@pytest.mark.parametrize("length", [0, 255, 257, 512])
def test_eextend_of_wrong_length_is_malformed(length: int) -> None:
    m = Measurement()
    m.ecreate(1, 0x20000)
    with pytest.raises(MalformedInput):
        m.eextend(0x100, bytes(length))


@pytest.mark.parametrize("offset", [0x100, 0x800, 0x1F00])
def test_misaligned_eextend_page_is_malformed(offset: int) -> None:
    m = Measurement()
    m.ecreate(1, 0x20000)
    with pytest.raises(MalformedInput):
        m.eextend_page(offset, bytes(PAGE))


def test_update_stream_needs_whole_blocks() -> None:
    m = Measurement()
    m.ecreate(1, 0x2000)
    with pytest.raises(MalformedInput):
        m.update_stream(bytes(65))


def _reference_stream(pages: list[tuple[int, int, bytes, bool]]) -> bytes:
    out = bytearray()
    for off, flags, data, measured in pages:
        out += struct.pack("<8sQQ40s", b"EADD", off, flags, b"")
        if measured:
            for i in range(0, PAGE, 256):
                out += struct.pack("<8sQ48s", b"EEXTEND", off + i, b"") + data[i : i + 256]
    return bytes(out)


def test_update_stream_equals_leaf_calls() -> None:
    rng = random.Random(11)
    size, pages = random_pages(rng, 3)
    m = Measurement()
    m.ecreate(1, size)
    m.update_stream(_reference_stream(pages))
    assert m.mrenclave() == reference_mrenclave(size, 1, pages)


def test_page_measured_bytes_is_the_reference_stream() -> None:
    data = random.Random(12).randbytes(PAGE)
    reference = _reference_stream([(0x3000, 0, data, True)])[64:]
    assert measure.page_measured_bytes(0x3000, data) == reference
