"""SGXS reader, writer and streaming measurement."""

from __future__ import annotations

import hashlib
import io
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgxlaunch._api import measure_image
from sgxlaunch.arch.constants import PAGE_SIZE, PageType, secinfo_flags
from sgxlaunch.errors import MalformedInput, UsageError
from sgxlaunch.formats import sgxs
from sgxlaunch.measure import Measurement, eextend_header
from tests.conftest import sgxs_vectors, shared_vectors

REG_RW = secinfo_flags(PageType.REG, 0b011)
REG_RX = secinfo_flags(PageType.REG, 0b101)
TCS = secinfo_flags(PageType.TCS, 0)


def reference_mrenclave(image: sgxs.SgxsImage) -> bytes:
    """Measure an image chunk by chunk with the Measurement builder (independent of sgxs)."""
    m = Measurement()
    m.ecreate(image.ssaframesize, image.size)
    for page in image.pages:
        m.eadd(page.offset, page.secinfo_flags)
        for i in range(16):
            if page.measured & (1 << i):
                m.eextend(page.offset + 256 * i, page.data[256 * i : 256 * (i + 1)])
    return m.mrenclave()


def make_image(n_pages: int, *, seed: int = 1, full: bool = True) -> sgxs.SgxsImage:
    rnd = random.Random(seed)
    pages = []
    for i in range(n_pages):
        flags = TCS if i == 0 else rnd.choice([REG_RW, REG_RX])
        measured = 0xFFFF if full else rnd.getrandbits(16)
        unmeasured = 0 if full else rnd.getrandbits(16) & ~measured
        data = bytearray(rnd.randbytes(PAGE_SIZE))
        for c in range(16):  # chunks the stream does not carry read back as zero
            if not (measured | unmeasured) & (1 << c):
                data[256 * c : 256 * (c + 1)] = bytes(256)
        pages.append(sgxs.SgxsPage(i * PAGE_SIZE, flags, bytes(data), measured, unmeasured))
    size = 1 << max(13, (n_pages * PAGE_SIZE - 1).bit_length())
    return sgxs.SgxsImage(ssaframesize=1, size=size, pages=tuple(pages))


@pytest.mark.parametrize(("path", "sha256"), sgxs_vectors())
def test_vector_measures_to_recorded_mrenclave(path: str, sha256: str) -> None:
    file = shared_vectors() / path
    assert measure_image(file).hex() == sha256
    data = file.read_bytes()
    image = sgxs.parse_sgxs(data)
    assert reference_mrenclave(image).hex() == sha256
    assert sgxs.write_sgxs(image) == data


def test_full_pages_round_trip_and_measure() -> None:
    image = make_image(40)
    data = sgxs.write_sgxs(image)
    assert len(data) == 64 + 40 * sgxs.FULL_PAGE_RECORD_SIZE
    assert sgxs.parse_sgxs(data) == image
    assert sgxs.measure_bytes(data) == hashlib.sha256(data).digest() == reference_mrenclave(image)


def test_sparse_pages_round_trip_and_unmeasured_chunks_are_not_hashed() -> None:
    image = make_image(25, seed=7, full=False)
    assert any(p.unmeasured for p in image.pages)
    data = sgxs.write_sgxs(image)
    assert sgxs.parse_sgxs(data) == image
    assert sgxs.measure_bytes(data) == reference_mrenclave(image)
    assert sgxs.measure_bytes(data) != hashlib.sha256(data).digest()


@pytest.mark.parametrize("read_size", [5184 + 64 * k for k in (0, 1, 7, 81)] + [1 << 16])
def test_measure_is_independent_of_read_boundaries(read_size: int) -> None:
    image = make_image(30, seed=3, full=False)
    full = make_image(30, seed=4)
    for img in (image, full):
        data = sgxs.write_sgxs(img)
        got = sgxs.measure_stream(io.BytesIO(data), read_size=read_size)
        assert got == reference_mrenclave(img)


def test_progress_reports_every_byte() -> None:
    data = sgxs.write_sgxs(make_image(20))
    seen: list[int] = []
    sgxs.measure_stream(io.BytesIO(data), read_size=8192, progress=seen.append)
    assert sum(seen) == len(data)


def test_unsized_stream_needs_size_and_patches_it() -> None:
    base = make_image(4, seed=9)
    patch_at = PAGE_SIZE + 0x18  # inside page 1, chunk 0
    unsized = sgxs.SgxsImage(base.ssaframesize, base.size, base.pages, unsized_offset=patch_at)
    data = sgxs.write_sgxs(unsized)
    assert data[:8] == b"UNSIZED\x00"
    with pytest.raises(UsageError, match="UNSIZED"):
        sgxs.measure_bytes(data)
    with pytest.raises(UsageError):
        sgxs.parse_sgxs(data)
    size = 1 << 20
    parsed = sgxs.parse_sgxs(data, size=size)
    assert parsed.size == size
    assert parsed.unsized_offset == patch_at
    page1 = parsed.pages[1].data
    assert page1[0x18:0x20] == size.to_bytes(8, "little")
    expected = reference_mrenclave(sgxs.SgxsImage(parsed.ssaframesize, size, parsed.pages))
    assert sgxs.measure_bytes(data, size=size) == expected


def test_size_option_contradicting_a_sized_stream_is_refused() -> None:
    data = sgxs.write_sgxs(make_image(2))
    with pytest.raises(UsageError, match="--size"):
        sgxs.measure_bytes(data, size=1 << 30)


def test_measure_image_names_the_file(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "bad.sgxs")
    with open(path, "wb") as fh:
        fh.write(b"EADD\x00\x00\x00\x00" + bytes(56))
    with pytest.raises(MalformedInput) as err:
        measure_image(path)
    assert "bad.sgxs" in str(err.value)
    assert err.value.offset == 0


page_strategy = st.tuples(
    st.sampled_from([REG_RW, REG_RX, TCS]),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.binary(min_size=16, max_size=16),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(page_strategy, min_size=1, max_size=12),
    st.lists(st.integers(1, 3), min_size=12, max_size=12),
    st.integers(0, 50),
)
def test_property_write_parse_measure_agree(
    specs: list[tuple[int, int, int, bytes]], gaps: list[int], extra: int
) -> None:
    pages = []
    offset = 0
    for (flags, measured, unmeasured, seed), gap in zip(specs, gaps, strict=False):
        unmeasured &= ~measured
        data = bytearray(hashlib.sha256(seed).digest() * 128)
        for c in range(16):
            if not (measured | unmeasured) & (1 << c):
                data[256 * c : 256 * (c + 1)] = bytes(256)
        pages.append(sgxs.SgxsPage(offset, flags, bytes(data), measured, unmeasured))
        offset += gap * PAGE_SIZE
    size = 1 << max(13, offset.bit_length())
    image = sgxs.SgxsImage(2, size, tuple(pages))
    written = sgxs.write_sgxs(image)
    assert sgxs.parse_sgxs(written) == image
    expected = reference_mrenclave(image)
    assert sgxs.measure_bytes(written) == expected
    read_size = 5184 + 64 * extra
    assert sgxs.measure_stream(io.BytesIO(written), read_size=read_size) == expected


def test_eextend_header_layout_matches_the_stream() -> None:
    image = make_image(1)
    data = sgxs.write_sgxs(image)
    assert data[128 : 128 + 64] == eextend_header(0)
    assert sgxs.looks_like_sgxs(data)
    assert not sgxs.looks_like_sgxs(b"EADD\x00\x00\x00\x00")
