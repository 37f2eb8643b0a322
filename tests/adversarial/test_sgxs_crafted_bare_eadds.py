"""A crafted SGXS stream must not make parsing quadratic (issue 14).

The attack: an ECREATE, then N bare EADD records (64 bytes each, no EEXTEND). The vectorised
validation of fully measured pages used to re-run over the whole remaining buffer at every EADD
record, so a 4 MiB file took seconds and hundreds of MiB. The checks here are deterministic,
not timings: the words the vectorised path examines (every ``np.frombuffer`` view it takes)
must grow linearly with the stream, and the memory a parse takes must grow with the stream's
bytes, not with the 4 KiB pages its records name. A second crafted shape defeats the cheap
pre-check on purpose (every page has its first and last EEXTEND but fails the vectorised check
on an UNMEASRD chunk), so the bounds on failed vectorised runs are exercised too.
"""

from __future__ import annotations

import io
import tracemalloc
from typing import Any

import numpy as np
import pytest

from sgxlaunch.arch.constants import PAGE_SIZE, PageType, secinfo_flags
from sgxlaunch.formats import sgxs
from sgxlaunch.measure import TAG_EADD, ecreate_block

pytestmark = pytest.mark.slow  # started first under `make test` (tests/conftest.py)

REG_R = secinfo_flags(PageType.REG, 0b001)


def bare_eadds(n: int) -> bytes:
    """ECREATE, then ``n`` EADD records for consecutive pages and nothing else."""
    size = 1 << max(13, (n * PAGE_SIZE - 1).bit_length())
    words = np.zeros((n, 8), dtype="<u8")
    words[:, 0] = int.from_bytes(TAG_EADD, "little")
    words[:, 1] = np.arange(n, dtype=np.uint64) * np.uint64(PAGE_SIZE)
    words[:, 2] = REG_R
    return ecreate_block(1, size) + words.tobytes()


def pages_with_one_unmeasured_chunk(n: int) -> bytes:
    """Pages whose chunk 1 is UNMEASRD: first and last records EEXTEND, 5184 bytes each."""
    pages = tuple(
        sgxs.SgxsPage(i * PAGE_SIZE, REG_R, bytes([i % 251]) * PAGE_SIZE, 0xFFFD, 0x0002)
        for i in range(n)
    )
    size = 1 << max(13, (n * PAGE_SIZE - 1).bit_length())
    return sgxs.write_sgxs(sgxs.SgxsImage(1, size, pages))


def words_examined(monkeypatch: pytest.MonkeyPatch, run: Any) -> int:
    """Words of the stream the vectorised path looked at while ``run()`` executed."""
    seen = [0]
    real = np.frombuffer  # sgxs calls np.frombuffer through the shared numpy module

    def counting(buffer: Any, dtype: Any = float, count: int = -1, offset: int = 0) -> Any:
        if dtype == "<u8":
            seen[0] += count
        return real(buffer, dtype=dtype, count=count, offset=offset)

    monkeypatch.setattr(np, "frombuffer", counting)
    run()
    monkeypatch.undo()
    return seen[0]


@pytest.mark.parametrize("make", [bare_eadds, pages_with_one_unmeasured_chunk])
def test_crafted_sgxs_parsing_work_is_linear(monkeypatch: pytest.MonkeyPatch, make: Any) -> None:
    small = make(2000)
    large = make(4000)
    for parse in (sgxs.parse_sgxs, sgxs.measure_bytes):
        work_small = words_examined(monkeypatch, lambda d=small, p=parse: p(d))
        work_large = words_examined(monkeypatch, lambda d=large, p=parse: p(d))
        # Linear: twice the stream, at most about twice the work (quadratic was four times),
        # and never more than a small multiple of the stream's own words.
        assert work_large <= 2 * work_small + 4 * sgxs.FULL_PAGE_RECORD_SIZE
        assert work_large <= 16 * len(large) // 8


def test_bare_eadds_never_reach_the_vectorised_path(monkeypatch: pytest.MonkeyPatch) -> None:
    data = bare_eadds(4000)
    assert words_examined(monkeypatch, lambda: sgxs.parse_sgxs(data)) == 0


def test_crafted_4mib_stream_parses_in_memory_proportional_to_its_bytes() -> None:
    data = bare_eadds((4 << 20) // 64 - 1)  # 4 MiB naming 65535 pages (256 MiB of enclave)
    assert len(data) == 4 << 20
    tracemalloc.start()
    try:
        image = sgxs.parse_stream(io.BytesIO(data))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(image.pages) == 65535
    assert all(page.data == bytes(PAGE_SIZE) and page.measured == 0 for page in image.pages[:9])
    # One SgxsPage object per 64-byte record, never a fresh 4 KiB buffer per page (that was
    # 256 MiB here); the bound leaves room for the objects and the read buffer.
    assert peak < 8 * len(data), f"peak {peak} bytes"


def test_crafted_4mib_stream_measures_in_constant_memory() -> None:
    data = bare_eadds((4 << 20) // 64 - 1)
    stream = io.BytesIO(data)
    tracemalloc.start()
    try:
        mrenclave = sgxs.measure_stream(stream)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(mrenclave) == 32
    assert peak < 3 * sgxs.DEFAULT_READ_SIZE, f"peak {peak} bytes"


def test_crafted_stream_parses_to_the_pages_it_names() -> None:
    data = pages_with_one_unmeasured_chunk(300)
    image = sgxs.parse_sgxs(data)
    assert [p.offset for p in image.pages] == [i * PAGE_SIZE for i in range(300)]
    assert all(p.measured == 0xFFFD and p.unmeasured == 0x0002 for p in image.pages)
    assert sgxs.write_sgxs(image) == data
    loaded, mrenclave = sgxs.load_stream(io.BytesIO(data), read_size=5184 * 3 + 64)
    assert loaded == image
    assert mrenclave == sgxs.measure_bytes(data)
