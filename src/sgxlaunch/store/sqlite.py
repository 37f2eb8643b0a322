"""A :class:`~sgxlaunch.policy.Store` in one SQLite file: every commit is one transaction.

The table is a plain key/value map (``key TEXT PRIMARY KEY, value BLOB``), so the Platform can
keep its own records beside the owner's documents. ``commit`` writes all changes inside a
single ``BEGIN IMMEDIATE … COMMIT`` with ``synchronous=FULL``: after a crash either every change
of a commit is there or none is.

The file is in the attacker's directory, so nothing read from it is trusted to be what this
module wrote. Opening checks the schema (exactly the one table and its index, ``user_version``
:data:`SCHEMA_VERSION`, or 0 for a home made before it was set); every key read must be
printable ASCII of at most 256 bytes, every value a BLOB of at most :data:`MAX_VALUE_BYTES`
(its type and length are asked of SQLite before the value is fetched). Any SQLite error, any
other type, size or encoding raises :class:`~sgxlaunch.errors.StoreDamaged` naming the key (or
the operation) and the recovery path — never a ``sqlite3`` exception.

:meth:`SqliteStore.locked` is the lock that serializes processes over one home (an exclusive
``flock`` on ``<file>.lock``, reentrant within the process): the Platform holds it from reading
the launch enclave's committed state until the monotonic counter has advanced. A SQLite
transaction alone ends at its commit, before the counter moves.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from sgxlaunch.errors import StoreDamaged, UsageError
from sgxlaunch.policy.envelope import MAX_ENVELOPE_SIZE

SCHEMA_VERSION = 1
"""``PRAGMA user_version`` of the state database this code writes."""
MAX_VALUE_BYTES = MAX_ENVELOPE_SIZE + (1 << 20)
"""Largest value read (the largest signed document the policy layer accepts, and a margin)."""
BUSY_TIMEOUT_S = 60.0
_TABLE_SQL = "CREATE TABLE kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL)"
_SCHEMA = {("table", "kv", "kv", _TABLE_SQL), ("index", "sqlite_autoindex_kv_1", "kv", None)}
_MAX_KEY_LEN = 256
_DB_ERRORS = (sqlite3.Error, MemoryError, OverflowError, ValueError, UnicodeError)

RECOVERY_HINT = (
    "move the damaged file aside and restore the home from a copy; or rebuild it: "
    "`sgxlaunch platform take-ownership ROOT`, `platform le-sign`, install the policy and mode "
    "again, then `sgxlaunch recovery sign` / `recovery apply` (docs/launch.md)"
)


def _check_key(key: str) -> None:
    if not key or len(key) > _MAX_KEY_LEN or not key.isascii() or not key.isprintable():
        raise UsageError(f"store key {key!r} must be 1-{_MAX_KEY_LEN} printable ASCII characters")


def _key_text(raw: object) -> str:
    """A key as read from the database (``text_factory`` is bytes), checked."""
    if not isinstance(raw, bytes):
        raise ValueError(f"a key of SQLite type {type(raw).__name__}")
    if not 0 < len(raw) <= _MAX_KEY_LEN:
        raise ValueError(f"a key of {len(raw)} bytes")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError(f"key {raw[:40]!r} is not ASCII") from None
    if not text.isprintable():
        raise ValueError(f"key {text[:40]!r} is not printable")
    return text


class SqliteStore:
    """Key/value byte store in an SQLite database file (created 0600 if missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._lock_depth = 0
        if not self.path.exists():
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
        self._db: sqlite3.Connection | None = None
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
            self._db.text_factory = bytes
            self._db.execute("PRAGMA synchronous=FULL")
            self._check_schema()
        except _DB_ERRORS as exc:
            self.close()
            raise self._damaged(f"not a usable state database ({exc})") from None
        except StoreDamaged:
            self.close()
            raise

    def _damaged(self, what: str) -> StoreDamaged:
        return StoreDamaged(
            f"the state database is damaged: {what}; {RECOVERY_HINT}", source=str(self.path)
        )

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise UsageError(f"{self.path}: the state database is closed")
        return self._db

    def _check_schema(self) -> None:
        db = self._conn()
        rows = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
        found = {
            tuple(None if v is None else bytes(v).decode("utf-8", "replace") for v in row)
            for row in rows
        }
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if not found:
            db.execute("BEGIN IMMEDIATE")
            try:
                if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                    db.execute(_TABLE_SQL)
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return
        if found != _SCHEMA:
            names = sorted(str(row[1]) for row in found)
            raise self._damaged(f"unexpected schema (objects {names}; expected table kv only)")
        if version not in (0, SCHEMA_VERSION):
            raise self._damaged(
                f"schema version {version} (this sgxlaunch reads version {SCHEMA_VERSION})"
            )

    def get(self, key: str) -> bytes | None:
        """The value of ``key`` (``None`` if absent).

        Raises:
            StoreDamaged: the value is not a BLOB of at most :data:`MAX_VALUE_BYTES`, or SQLite
                fails reading it.
        """
        try:
            db = self._conn()
            row = db.execute(
                "SELECT typeof(value), length(CAST(value AS BLOB)) FROM kv WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                return None
            kind, size = bytes(row[0]).decode("ascii", "replace"), row[1]
            if kind != "blob":
                raise self._damaged(f"key {key!r} holds an SQLite {kind}, expected a blob")
            if not isinstance(size, int) or size > MAX_VALUE_BYTES:
                raise self._damaged(
                    f"key {key!r} holds {size} bytes, more than the {MAX_VALUE_BYTES}-byte limit"
                )
            value = db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        except _DB_ERRORS as exc:
            raise self._damaged(f"reading key {key!r} failed ({exc})") from None
        if value is None or not isinstance(value[0], bytes) or len(value[0]) != size:
            raise self._damaged(f"key {key!r} changed while it was read")
        return bytes(value[0])

    def keys(self, prefix: str = "") -> list[str]:
        """Every key starting with ``prefix``, sorted.

        Raises:
            StoreDamaged: a key is not 1-256 printable ASCII bytes, or SQLite fails.
        """
        out = []
        try:
            for raw, kind in self._conn().execute("SELECT key, typeof(key) FROM kv ORDER BY key"):
                try:
                    if kind != b"text":
                        raise ValueError(f"a key of SQLite type {kind!r}, expected text")
                    key = _key_text(raw)
                except ValueError as exc:
                    raise self._damaged(str(exc)) from None
                if key.startswith(prefix):
                    out.append(key)
        except _DB_ERRORS as exc:
            raise self._damaged(f"listing keys failed ({exc})") from None
        return out

    def commit(self, changes: Mapping[str, bytes | None]) -> None:
        """Apply every change in one transaction.

        Raises:
            UsageError: a key is not 1-256 printable ASCII characters (nothing written).
            StoreDamaged: SQLite fails (nothing written).
        """
        for key in changes:
            _check_key(key)
        try:
            db = self._conn()
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
        except _DB_ERRORS as exc:
            raise self._damaged(f"writing {sorted(changes)[:3]} failed ({exc})") from None

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the home's process lock (reentrant in this process; see the module docstring).

        Raises:
            UsageError: the lock file cannot be opened.
        """
        if self._lock_depth == 0:
            lock = self.path.with_name(self.path.name + ".lock")
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise UsageError(f"{lock}: cannot open the home's lock ({exc.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            self._lock_fd = fd
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0 and self._lock_fd is not None:
                os.close(self._lock_fd)  # closing the last descriptor releases the flock
                self._lock_fd = None

    def close(self) -> None:
        """Close the database connection."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
