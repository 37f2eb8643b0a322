"""The platform commands' way to sgxlaunchd (docs/service.md).

A platform command goes to the daemon when ``--socket`` or ``$SGXLAUNCH_SOCKET`` names one, or
when the default socket exists; otherwise it runs in this process as before. The command reads
and checks its inputs here either way (so a bad file gets the same message), passes the files
to the daemon as open descriptors (never as paths), and prints the daemon's result or error
through the same code: the output and the exit code are the same.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sgxlaunch.service.client import SOCKET_ENV, DaemonClient, default_socket
from sgxlaunch.store.home import HOME_ENV
from sgxlaunch.store.machine import MACHINE_ENV


def _explicit(option: str | None, env: str) -> str | None:
    """A path the caller named (option or environment), made absolute; else ``None``."""
    given = option or os.environ.get(env)
    return None if not given else str(Path(given).expanduser().absolute())


def daemon_client(home: str | None, machine: str | None, socket: str | None) -> DaemonClient | None:
    """The daemon to send a platform command to, or ``None`` to run it in this process."""
    path = socket or os.environ.get(SOCKET_ENV)
    if not path:
        default = default_socket()
        try:
            if not stat.S_ISSOCK(default.stat().st_mode):
                return None
        except OSError:
            return None
        path = str(default)
    return DaemonClient(
        path, home=_explicit(home, HOME_ENV), machine=_explicit(machine, MACHINE_ENV)
    )


@contextlib.contextmanager
def opened(*paths: str | None) -> Iterator[list[int]]:
    """The files (``None`` skipped), open for reading, as descriptors to pass."""
    fds: list[int] = []
    try:
        for path in paths:
            if path is not None:
                fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


def send_file(
    client: DaemonClient, target: str, path: str, field: str = "document"
) -> dict[str, Any]:
    """``POST target`` with the file ``path`` passed as a descriptor (``<field>_fd``) and named
    as its ``source`` (the daemon's messages name it as the command line does)."""
    with opened(path) as fds:
        return client.call("POST", target, {f"{field}_fd": 0, "source": path}, fds=fds)


__all__ = ["daemon_client", "opened", "send_file"]
