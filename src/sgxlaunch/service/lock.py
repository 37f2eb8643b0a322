"""The daemon's hold on a machine and a home, and how an in-process command notices it.

While it runs, the daemon holds an exclusive ``flock`` on ``<machine>.sgxlaunchd`` and on
``<home>/sgxlaunchd.lock`` (each holding ``{"pid", "socket"}``), and the machine's session lock
(:meth:`~sgxlaunch.store.machine.FileMachine.session`) for its whole life. A command that would
open the platform in its own process first asks :func:`served_by`; if the daemon holds the
machine or the home it refuses, naming the socket to use instead (rather than waiting for a lock
the daemon never releases).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

from sgxlaunch.errors import UsageError

MACHINE_MARKER_SUFFIX = ".sgxlaunchd"
HOME_MARKER = "sgxlaunchd.lock"


def machine_marker(machine: Path) -> Path:
    return machine.with_name(machine.name + MACHINE_MARKER_SUFFIX)


def home_marker(home: Path) -> Path:
    return home / HOME_MARKER


def _holder(marker: Path) -> dict[str, object] | None:
    """What a marker held by a live daemon says, or ``None`` when nobody holds it."""
    try:
        fd = os.open(marker, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            data = os.read(fd, 4096)
            try:
                value = json.loads(data)
            except ValueError:
                value = None
            return value if isinstance(value, dict) else {"socket": "?", "pid": "?"}
        return None
    finally:
        os.close(fd)


def served_by(home: Path | None, machine: Path | None) -> dict[str, object] | None:
    """The daemon (``{"pid", "socket"}``) holding ``machine`` or ``home``, if one does."""
    for marker in (
        None if machine is None else machine_marker(machine),
        None if home is None else home_marker(home),
    ):
        if marker is not None:
            holder = _holder(marker)
            if holder is not None:
                return holder
    return None


def refuse_if_served(home: Path | None, machine: Path | None) -> None:
    """Refuse to open the platform in this process while a daemon holds it.

    Raises:
        UsageError: naming the daemon's socket and how to use it.
    """
    holder = served_by(home, machine)
    if holder is not None:
        socket = holder.get("socket")
        raise UsageError(
            f"the platform is held by sgxlaunchd (pid {holder.get('pid')}) on socket {socket}; "
            f"use it: --socket {socket} (or SGXLAUNCH_SOCKET={socket})"
        )


class Hold:
    """The daemon's exclusive hold on the markers of one machine and one home."""

    def __init__(self, home: Path, machine: Path, socket: str) -> None:
        self._fds: list[int] = []
        content = json.dumps({"pid": os.getpid(), "socket": socket}).encode()
        try:
            for marker in (machine_marker(machine), home_marker(home)):
                fd = os.open(marker, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    holder = _holder(marker) or {}
                    raise UsageError(
                        f"{marker}: another sgxlaunchd (pid {holder.get('pid')}, socket "
                        f"{holder.get('socket')}) already serves this platform"
                    ) from None
                self._fds.append(fd)
                os.ftruncate(fd, 0)
                os.pwrite(fd, content, 0)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)


__all__ = ["Hold", "home_marker", "machine_marker", "refuse_if_served", "served_by"]
