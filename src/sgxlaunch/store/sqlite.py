"""A :class:`~sgxlaunch.policy.Store` in one SQLite file: every commit is one transaction.

The table is a plain key/value map (``key TEXT PRIMARY KEY, value BLOB``), so the Platform can
keep its own records beside the owner's documents. ``commit`` writes all changes inside a
single ``BEGIN IMMEDIATE … COMMIT`` with ``synchronous=FULL``: after a crash either every change
of a commit is there or none is.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from sgxlaunch.errors import MalformedInput, UsageError

_SCHEMA = "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)"
_MAX_KEY_LEN = 256


def _check_key(key: str) -> None:
    if not key or len(key) > _MAX_KEY_LEN or not key.isascii() or not key.isprintable():
        raise UsageError(f"store key {key!r} must be 1-{_MAX_KEY_LEN} printable ASCII characters")


class SqliteStore:
    """Key/value byte store in an SQLite database file (created 0600 if missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise MalformedInput(f"not a usable state database: {exc}", source=str(path)) from None

    def get(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def keys(self, prefix: str = "") -> list[str]:
        rows = self._db.execute("SELECT key FROM kv ORDER BY key").fetchall()
        return [str(r[0]) for r in rows if str(r[0]).startswith(prefix)]

    def commit(self, changes: Mapping[str, bytes | None]) -> None:
        for key in changes:
            _check_key(key)
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for key, value in changes.items():
                if value is None:
                    db.execute("DELETE FROM kv WHERE key = ?", (key,))
                else:
                    db.execute(
                        "INSERT INTO kv (key, value) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (key, bytes(value)),
                    )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
