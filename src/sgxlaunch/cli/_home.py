"""The platform kept under ``--home``, opened for a command; the platform commands' reader."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sgxlaunch.cli._common import (
    about,
    read_input,
    utc_now,
)
from sgxlaunch.errors import UsageError
from sgxlaunch.launch.platform import Platform
from sgxlaunch.store import STATE_FILE, open_store, resolve_home


@contextmanager
def open_platform(home: str | None, *, maintenance: bool = False) -> Iterator[Platform]:
    """Open the platform under ``home``, refusing (before creating anything) where there is none."""
    path = resolve_home(home)
    if not (path / STATE_FILE).exists():
        raise UsageError(
            f"{path}: no platform here; create one with `sgxlaunch platform init` "
            "(or use `run --ephemeral` for a throwaway permissive platform)"
        )
    with open_store(path, create=False) as store:
        yield Platform.open(store, clock=utc_now, maintenance=maintenance)


def read_platform_input(path: str) -> bytes:
    """Read a file for the platform commands (images, SIGSTRUCTs, tokens, documents)."""
    with about(path):
        return read_input(path, limit=80 << 20)
