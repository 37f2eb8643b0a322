"""Byte-mutation fuzz of the home's state: only SgxlaunchError may escape.

Rows of an owner-mode home (owner documents, the launch enclave's SIGSTRUCT, log records, a
legacy configuration, the active-signer key) are mutated and read through the platform's
readers; the SQLite file is mutated and opened, listed and read through SqliteStore (every
value that changed then goes through its reader). The harness is tests/support/storefuzz.py
(the test suite runs 10 000 cases of it). Prints how the cases ended, by error class; exits 1
at the first case where anything else escaped.

    python bench/store_fuzz.py [--rows 200000] [--databases 100000] [--seed 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.storefuzz import (
    fuzz_database,
    fuzz_rows,
    sample_rows,
    write_database,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--databases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rows = sample_rows()
    started = time.perf_counter()
    try:
        counts = fuzz_rows(rows, args.rows, args.seed)
        shm = Path("/dev/shm")
        with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as name:
            directory = Path(name)
            original = write_database(directory / "state.sqlite3", rows)
            counts += fuzz_database(original, rows, directory, args.databases, args.seed)
    except AssertionError as exc:
        print(f"FAIL: {exc}")
        return 1
    elapsed = time.perf_counter() - started
    total = sum(counts.values())
    for name, count in sorted(counts.items()):
        print(f"  {name:<32} {count:>8}")
    print(f"{total} cases ({args.rows} rows, {args.databases} database files) in {elapsed:.0f} s:")
    print("only SgxlaunchError escaped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
