"""Benchmark: `sgxlaunch measure` on a 256 MiB fully measured SGXS vs raw SHA-256.

Generates a 256 MiB (of page data) SGXS stream in a temporary directory, shows that a copy with
one corrupted EEXTEND offset is refused, then times :func:`sgxlaunch.measure_image`
(the code path the CLI uses, all canonical checks included) and, in the same run, reading the
identical file and hashing it with ``hashlib.sha256`` (the limit). Prints MiB/s of page data for
both and ``ratio <x>`` (target ≥ 0.8).

Then the crafted stream of issue 14 (an ECREATE and bare EADD records only): measuring and
parsing 1 MiB and 4 MiB of it, and the growth ratio ``time(4 MiB) / (4 × time(1 MiB))``, which
is 1 for linear work (target ≤ 1.5), with the peak memory the 4 MiB parse allocates
(tracemalloc). Before the fix the vectorised check re-scanned the rest of the buffer at every
record: parsing took 5.7 s at 1 MiB and 43 s at 4 MiB (peak RSS 311 MiB), measuring 4.8 s at
1 MiB, on this machine under the usual shared load.

Usage: ``python bench/measure.py [--mib 256] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from sgxlaunch import measure_image
from sgxlaunch.arch.constants import PAGE_SIZE, PageType, SecinfoFlag, secinfo_flags
from sgxlaunch.errors import MalformedInput
from sgxlaunch.formats import sgxs
from sgxlaunch.measure import TAG_EADD, TAG_EEXTEND, ecreate_block

TARGET = 0.8
CRAFTED_TARGET = 1.5


def write_image(path: Path, mib: int) -> int:
    """Write a canonical, fully measured SGXS of ``mib`` MiB of page data; return its pages."""
    pages = mib * (1 << 20) // PAGE_SIZE
    size = 1 << max(13, (pages * PAGE_SIZE - 1).bit_length())
    rng = np.random.default_rng(20261126)
    flags = secinfo_flags(PageType.REG, int(SecinfoFlag.R | SecinfoFlag.W))
    batch = 2048
    with open(path, "wb") as fh:
        fh.write(ecreate_block(1, size))
        for start in range(0, pages, batch):
            n = min(batch, pages - start)
            rows = np.zeros((n, sgxs.FULL_PAGE_RECORD_SIZE), dtype=np.uint8)
            words = rows.view("<u8")
            offsets = (np.arange(start, start + n, dtype=np.uint64)) * np.uint64(PAGE_SIZE)
            words[:, 0] = int.from_bytes(TAG_EADD, "little")
            words[:, 1] = offsets
            words[:, 2] = flags
            chunks = rows[:, sgxs.HEADER_SIZE :].reshape(n, 16, sgxs.CHUNK_RECORD_SIZE)
            chunk_words = chunks.view("<u8")
            chunk_words[:, :, 0] = int.from_bytes(TAG_EEXTEND, "little")
            chunk_words[:, :, 1] = offsets[:, None] + np.arange(16, dtype=np.uint64) * 256
            chunks[:, :, sgxs.HEADER_SIZE :] = rng.integers(
                0, 256, size=(n, 16, 256), dtype=np.uint8
            )
            fh.write(rows.tobytes())
    return pages


def bare_eadds(total: int) -> bytes:
    """A crafted SGXS of ``total`` bytes: ECREATE, then bare EADD records for consecutive pages."""
    n = total // 64 - 1
    size = 1 << max(13, (n * PAGE_SIZE - 1).bit_length())
    words = np.zeros((n, 8), dtype="<u8")
    words[:, 0] = int.from_bytes(TAG_EADD, "little")
    words[:, 1] = np.arange(n, dtype=np.uint64) * np.uint64(PAGE_SIZE)
    words[:, 2] = secinfo_flags(PageType.REG, int(SecinfoFlag.R))
    return ecreate_block(1, size) + words.tobytes()


def crafted(repeat: int) -> bool:
    """Time measuring and parsing the crafted stream at 1 and 4 MiB; True if growth is linear."""
    ok = True
    for name, fn in (("measure", sgxs.measure_stream), ("parse", sgxs.parse_stream)):
        times = {}
        for mib in (1, 4):
            data = bare_eadds(mib << 20)
            times[mib], _ = best_of(repeat, lambda d=data, f=fn: f(io.BytesIO(d)))
        growth = times[4] / (4 * times[1])
        print(
            f"crafted {name:7}: 1 MiB {times[1] * 1e3:7.1f} ms, 4 MiB {times[4] * 1e3:7.1f} ms, "
            f"growth {growth:.2f} (target <= {CRAFTED_TARGET})"
        )
        ok &= growth <= CRAFTED_TARGET
    data = bare_eadds(4 << 20)
    tracemalloc.start()
    sgxs.parse_stream(io.BytesIO(data))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(
        f"crafted parse 4 MiB: peak {peak / 2**20:.1f} MiB allocated "
        f"({peak / len(data):.1f}x the file)"
    )
    return ok


def raw_sha256(path: Path, read_size: int) -> bytes:
    """The limit: read the file in the same reads and hash every byte."""
    h = hashlib.sha256()
    buf = bytearray(read_size)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while got := fh.readinto(buf):
            h.update(view[:got])
    return h.digest()


def best_of(repeat: int, fn: object) -> tuple[float, bytes]:
    assert callable(fn)
    best = float("inf")
    result = b""
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="MiB of page data (default 256)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs, best kept")
    args = parser.parse_args()
    read_size = sgxs.DEFAULT_READ_SIZE
    with tempfile.TemporaryDirectory(prefix="sgxlaunch-bench-") as tmp:
        image = Path(tmp) / "big.sgxs"
        t0 = time.perf_counter()
        pages = write_image(image, args.mib)
        print(
            f"generated {image.stat().st_size / 2**20:.1f} MiB SGXS ({pages} pages, "
            f"{args.mib} MiB of page data) in {time.perf_counter() - t0:.1f} s"
        )

        # A copy with one corrupted EEXTEND offset (page 1000, chunk 3) must be refused.
        bad = Path(tmp) / "bad.sgxs"
        data = bytearray(image.read_bytes()[: 64 + 2000 * sgxs.FULL_PAGE_RECORD_SIZE])
        at = 64 + 1000 * sgxs.FULL_PAGE_RECORD_SIZE + 64 + 3 * sgxs.CHUNK_RECORD_SIZE + 8
        data[at : at + 8] = (int.from_bytes(data[at : at + 8], "little") + 256).to_bytes(
            8, "little"
        )
        bad.write_bytes(bytes(data))
        try:
            measure_image(bad)
        except MalformedInput as exc:
            print(f"corrupted copy refused: {str(exc).splitlines()[0]}")
        else:
            print("FAIL: the corrupted copy was accepted")
            return 1

        for _ in range(1):  # warm the page cache
            raw_sha256(image, read_size)
        t_limit, want = best_of(args.repeat, lambda: raw_sha256(image, read_size))
        t_ours, got = best_of(args.repeat, lambda: measure_image(image))
        if got != want:
            print("FAIL: MRENCLAVE differs from SHA-256 of the file")
            return 1
        mib = args.mib
        ratio = t_limit / t_ours
        print(f"mrenclave {got.hex()}")
        print(f"limit  hashlib.sha256 (read+hash): {mib / t_limit:8.1f} MiB/s of page data")
        print(f"ours   measure (all checks)      : {mib / t_ours:8.1f} MiB/s of page data")
        print(f"ratio {ratio:.3f} (target >= {TARGET})")
        os.sync()
    linear = crafted(args.repeat)
    return 0 if ratio >= TARGET and linear else 1


if __name__ == "__main__":
    sys.exit(main())
