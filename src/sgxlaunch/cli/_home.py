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
from sgxlaunch.service.lock import refuse_if_served
from sgxlaunch.store import STATE_FILE, FileMachine, open_store, resolve_home, resolve_machine


def platform_exists(home: str | None, machine: str | None) -> bool:
    """Whether ``platform init`` has made a platform of ``machine`` over ``home`` (read-only)."""
    return (resolve_home(home) / STATE_FILE).exists() and resolve_machine(machine).exists()


@contextmanager
def open_platform(
    home: str | None, machine: str | None, *, maintenance: bool = False
) -> Iterator[Platform]:
    """Open the platform of ``machine`` over ``home``, refusing (before creating anything) where
    there is none."""
    path = resolve_home(home)
    machine_path = resolve_machine(machine)
    if not (path / STATE_FILE).exists() or not machine_path.exists():
        missing = path if not (path / STATE_FILE).exists() else machine_path
        raise UsageError(
            f"{missing}: no platform here; create one with `sgxlaunch platform init --home HOME "
            "--machine MACHINE` (or use `run --ephemeral` for a throwaway permissive platform)"
        )
    refuse_if_served(path, machine_path)
    file_machine = FileMachine(machine_path)
    with file_machine.session(), open_store(path, create=False) as store:
        yield Platform.open(store, file_machine, clock=utc_now, maintenance=maintenance)


def read_platform_input(path: str) -> bytes:
    """Read a file for the platform commands (images, SIGSTRUCTs, tokens, documents)."""
    with about(path):
        return read_input(path)
