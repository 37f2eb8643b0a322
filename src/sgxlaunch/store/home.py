"""The ``--home`` directory: where the owner's trusted state lives.

Resolution order: the ``--home`` option, then ``$SGXLAUNCH_HOME``, then
``~/.local/share/sgxlaunch``. The directory is created ``0700``; the state database inside it
is :data:`STATE_FILE`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from sgxlaunch.errors import UsageError
from sgxlaunch.store.sqlite import SqliteStore

DEFAULT_HOME = Path("~/.local/share/sgxlaunch")
STATE_FILE = "state.sqlite3"
HOME_ENV = "SGXLAUNCH_HOME"


def resolve_home(option: str | Path | None, environ: Mapping[str, str] | None = None) -> Path:
    """The home directory to use (not created)."""
    env = os.environ if environ is None else environ
    if option is not None:
        return Path(option).expanduser()
    if env.get(HOME_ENV):
        return Path(env[HOME_ENV]).expanduser()
    return DEFAULT_HOME.expanduser()


def ensure_home(home: Path) -> Path:
    """Create ``home`` (mode 0700) if missing; refuse a path that is not a directory.

    Raises:
        UsageError: ``home`` exists and is not a directory.
    """
    if home.exists() and not home.is_dir():
        raise UsageError(f"{home}: not a directory")
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    return home


def open_store(home: Path, *, create: bool = True) -> SqliteStore:
    """The state database under ``home``.

    Raises:
        UsageError: ``create`` is false and there is no state under ``home``.
    """
    path = home / STATE_FILE
    if not create and not path.exists():
        raise UsageError(f"{home}: no sgxlaunch state here (install an owner root first)")
    ensure_home(home)
    return SqliteStore(path)
