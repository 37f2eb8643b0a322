"""A home whose store refuses the launch log's attempt and outcome records (as a full disk
would), in this process or in a daemon's: what ``run`` then prints (the launch goes on in
permissive mode, is refused with EIO in owner mode, and warns either way)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sgxlaunch.errors import StoreDamaged
from sgxlaunch.launch.platform import Platform

MESSAGE = "database or disk is full"
REPO = Path(__file__).resolve().parents[2]


def refuse_launch_records() -> Callable[[], None]:
    """Make :meth:`Platform._append` fail for attempt and outcome records; returns the undo."""
    original = Platform._append

    def failing(self: Platform, facts: dict[str, Any]) -> int:
        if facts.get("kind") in ("attempt", "outcome"):
            raise StoreDamaged(MESSAGE)
        return original(self, facts)

    Platform._append = failing  # type: ignore[method-assign]

    def undo() -> None:
        Platform._append = original  # type: ignore[method-assign]

    return undo


def daemon_argv(home: Path, machine: Path, socket: Path) -> list[str]:
    """``sgxlaunch serve`` in a process whose store refuses launch records."""
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); "
        "from tests.support.logfault import refuse_launch_records; refuse_launch_records(); "
        "from sgxlaunch.cli import main; "
        f"main(['serve', '--home', {str(home)!r}, '--machine', {str(machine)!r}, "
        f"'--socket', {str(socket)!r}])"
    )
    return [sys.executable, "-c", code]
