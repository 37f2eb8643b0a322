"""Class L: byte-mutated rows and database files. 10 000 cases (7 000 rows read through the
platform's readers, 3 000 mutated SQLite files opened, listed and read): only
:class:`~sgxlaunch.errors.SgxlaunchError` may escape. Before: DatabaseError, OperationalError,
DataError, UnicodeDecodeError, ValueError, TypeError, MemoryError and RecursionError did.
``bench/store_fuzz.py`` runs the same harness for 300 000 cases."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests.support.storefuzz import fuzz_database, fuzz_rows, sample_rows, write_database

ROW_CASES = 7_000
DATABASE_CASES = 3_000


def _scratch() -> tempfile.TemporaryDirectory[str]:
    """A directory in memory when there is one (rewriting a file per case on disk is slow)."""
    shm = Path("/dev/shm")
    return tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None)


def test_mutated_rows_and_database_files_raise_only_sgxlaunch_errors() -> None:
    rows = sample_rows()
    counts = fuzz_rows(rows, ROW_CASES, seed=12)
    assert sum(counts.values()) == ROW_CASES
    assert counts["log:MalformedInput"] and counts["owner:MalformedInput"]
    with _scratch() as name:
        directory = Path(name)
        original = write_database(directory / "state.sqlite3", rows)
        db_counts = fuzz_database(original, rows, directory, DATABASE_CASES, seed=12)
    assert sum(db_counts.values()) == DATABASE_CASES
    assert db_counts["database:StoreDamaged"] > DATABASE_CASES // 2
    assert db_counts["database:ok"]  # mutations in free space leave a usable store
