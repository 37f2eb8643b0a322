"""The persistence protocol the core writes through, and an in-memory implementation.

The core never touches files: it reads trusted documents from a :class:`Store` and tells the
caller what to write (an ``Update``), all of which the store commits in one atomic step. The
SQLite backend lives at the edge (:mod:`sgxlaunch.store`).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol, runtime_checkable


@runtime_checkable
class Store(Protocol):
    """A small key/value store of byte strings with atomic multi-key commits.

    Keys are short ``/``-separated names (``"owner/root"``); values are bytes.
    """

    def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or ``None``."""
        ...

    def keys(self, prefix: str = "") -> list[str]:
        """Every key starting with ``prefix``, sorted."""
        ...

    def commit(self, changes: Mapping[str, bytes | None]) -> None:
        """Apply every change at once (``None`` deletes): all of them, or none on failure."""
        ...

    def locked(self) -> AbstractContextManager[None]:
        """Hold the lock that serializes every process using this store (reentrant)."""
        ...


class MemoryStore:
    """A :class:`Store` in a dict (tests, and callers that persist elsewhere)."""

    __slots__ = ("_data",)

    def __init__(self, initial: Mapping[str, bytes] | None = None) -> None:
        self._data: dict[str, bytes] = dict(initial or {})

    def get(self, key: str) -> bytes | None:
        return self._data.get(key)

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self._data if k.startswith(prefix))

    def commit(self, changes: Mapping[str, bytes | None]) -> None:
        data = dict(self._data)
        for key, value in changes.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = bytes(value)
        self._data = data

    def locked(self) -> AbstractContextManager[None]:
        """One process holds a memory store: nothing to serialize."""
        return nullcontext()

    def snapshot(self) -> dict[str, bytes]:
        """A copy of everything stored (for tests that check nothing changed)."""
        return dict(self._data)
