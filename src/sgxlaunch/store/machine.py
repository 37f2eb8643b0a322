"""The machine file: the emulated silicon, fuses and non-volatile store, kept outside ``--home``.

Resolution: the ``--machine`` option, then ``$SGXLAUNCH_MACHINE``, then
``~/.local/state/sgxlaunch/machine.json`` (:data:`DEFAULT_MACHINE`) — never inside the home.
The file is JSON (:meth:`~sgxlaunch.cpu.machine.MachineState.to_json`), mode 0600, written only
by :meth:`FileMachine.swap`: under an exclusive ``flock`` on ``<file>.lock`` it re-reads the
file, compares it with what the caller read (compare-and-set), writes a temporary file, fsyncs
it, renames it over the old one and fsyncs the directory, so after a crash the file holds either
the old or the new state. :meth:`FileMachine.session` serialises platform sessions on one
machine. In the attacker model the file belongs to another user (the
attacker cannot open it) and the ``machine`` commands stand for physical presence.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from sgxlaunch.cpu.machine import MachineConflict, MachineState
from sgxlaunch.errors import UsageError

DEFAULT_MACHINE = Path("~/.local/state/sgxlaunch/machine.json")
MACHINE_ENV = "SGXLAUNCH_MACHINE"
MAX_MACHINE_FILE = 64 << 10


def resolve_machine(option: str | Path | None, environ: Mapping[str, str] | None = None) -> Path:
    """The machine file to use (not created)."""
    env = os.environ if environ is None else environ
    if option is not None:
        return Path(option).expanduser()
    if env.get(MACHINE_ENV):
        return Path(env[MACHINE_ENV]).expanduser()
    return DEFAULT_MACHINE.expanduser()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


class FileMachine:
    """A :class:`~sgxlaunch.cpu.machine.Machine` in one file (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise UsageError(
                f"{self.path}: no machine here; create one with `sgxlaunch platform init "
                "--machine PATH`"
            )

    @classmethod
    def create(cls, path: str | Path, state: MachineState) -> FileMachine:
        """Write a new machine file (mode 0600; its directory 0700 if created).

        Raises:
            UsageError: a file already exists there (a machine is never overwritten).
        """
        path = Path(path)
        if path.exists():
            raise UsageError(f"{path}: a machine already exists here (it is never overwritten)")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise UsageError(f"{path}: a machine already exists here") from None
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(state.to_json())
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
        return cls(path)

    @contextmanager
    def session(self, *, wait: bool = True) -> Iterator[None]:
        """Hold the machine for one platform session (an exclusive ``flock`` on
        ``<file>.session.lock``): one launch enclave serves a machine at a time, as on a real
        platform, so two processes never prepare competing states from the same counter value.

        Raises:
            UsageError: ``wait`` is false and another process holds the machine.
        """
        lock = self.path.with_name(self.path.name + ".session.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise UsageError(f"{self.path}: the machine is in use by another process") from None
            yield
        finally:
            os.close(fd)

    def load(self) -> MachineState:
        try:
            with open(self.path, "rb") as fh:
                data = fh.read(MAX_MACHINE_FILE + 1)
        except FileNotFoundError:
            raise UsageError(f"{self.path}: the machine file is gone") from None
        if len(data) > MAX_MACHINE_FILE:
            raise UsageError(f"{self.path}: larger than {MAX_MACHINE_FILE} bytes")
        return MachineState.from_json(data, source=str(self.path))

    def swap(self, expected: MachineState, new: MachineState) -> None:
        lock = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self.load() != expected:
                raise MachineConflict(f"{self.path}: the machine changed since it was read")
            _write_atomic(self.path, new.to_json())
        finally:
            os.close(fd)


__all__ = ["DEFAULT_MACHINE", "MACHINE_ENV", "FileMachine", "resolve_machine"]
