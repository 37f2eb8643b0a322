"""Benchmark: re-measuring an Intel SGX SDK enclave with 256 MiB of measured content.

Builds (in memory) an SDK enclave whose two PT_LOAD segments hold 256 MiB of random bytes in
all (128 MiB code, 128 MiB data) plus a 16 MiB heap (EADDed, not measured) and 4 threads, with
the test-side builder (``tests/support/sdk.py``). Then, in the same run:

* the limit: ``hashlib.sha256`` over the identical SHA-256 input stream, prebuilt in memory
  (the ECREATE, EADD and EEXTEND blocks included: ``LoadPlan.to_sgxs()`` of the same enclave,
  whose SHA-256 is checked to equal the MRENCLAVE);
* ours: :func:`sgxlaunch.formats.sdk.measure_sdk` on the file bytes (ELF and metadata parsing,
  every check, the loader's operations, the stream formatted in batches and hashed).

Prints MiB/s of measured content for both and ``ratio <x>`` (target >= 0.8).

Usage: ``python bench/sdk.py [--mib 256] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import best_of

from sgxlaunch.formats import sdk
from tests.support.sdk import PF_R, PF_W, PF_X, Seg, Spec, build

TARGET = 0.8


def make(mib: int) -> bytes:
    rng = np.random.default_rng(20261128)
    half = (mib << 20) // 2
    code = rng.integers(0, 256, size=half, dtype=np.uint8).tobytes()
    data = rng.integers(0, 256, size=half, dtype=np.uint8).tobytes()
    base = ((half + 0x10000) // 4096 + 1) * 4096
    spec = Spec(
        version=(1, 5),
        code=code,
        data_segments=[Seg(base, data, half, PF_R | PF_W)],
        heap_pages=(16 << 20) // 4096,
        tcs_num=4,
    )
    assert PF_X  # the code segment is R|X (the builder's first segment)
    return build(spec).data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=256, help="MiB of measured content")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs, best kept")
    args = parser.parse_args()
    t0 = time.perf_counter()
    data = make(args.mib)
    plan = sdk.parse_sdk(data).plan()
    stream = plan.to_sgxs()
    measured = plan.measured_page_count * 4096 / 2**20
    print(
        f"built {len(data) / 2**20:.1f} MiB SDK enclave: {plan.page_count} pages EADDed, "
        f"{measured:.1f} MiB measured, stream {len(stream) / 2**20:.1f} MiB "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    t_limit, want = best_of(args.repeat, lambda: hashlib.sha256(stream).digest())
    t_ours, got = best_of(args.repeat, lambda: sdk.measure_sdk(data))
    if got != want:
        print("FAIL: MRENCLAVE differs from SHA-256 of the equivalent stream")
        return 1
    ratio = t_limit / t_ours
    print(f"mrenclave {got.hex()}")
    print(f"limit  hashlib.sha256 over the stream : {measured / t_limit:8.1f} MiB/s measured")
    print(f"ours   measure_sdk (parse + all checks): {measured / t_ours:8.1f} MiB/s measured")
    print(f"ratio {ratio:.3f} (target >= {TARGET})")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
