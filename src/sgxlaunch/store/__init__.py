"""The edge where owner state meets the disk: the SQLite :class:`~sgxlaunch.policy.Store`
backend, the ``--home`` directory, and policy key files.

Only this package (and the CLI) touches the file system; the core sees the ``Store`` protocol.
"""

from sgxlaunch.store.home import DEFAULT_HOME, STATE_FILE, ensure_home, open_store, resolve_home
from sgxlaunch.store.keyfiles import (
    generate_private_key,
    load_public_key,
    load_signer,
    write_private_key,
    write_public_key,
)
from sgxlaunch.store.machine import DEFAULT_MACHINE, FileMachine, resolve_machine
from sgxlaunch.store.sqlite import SqliteStore

__all__ = [
    "DEFAULT_HOME",
    "DEFAULT_MACHINE",
    "STATE_FILE",
    "FileMachine",
    "SqliteStore",
    "ensure_home",
    "generate_private_key",
    "load_public_key",
    "load_signer",
    "open_store",
    "resolve_home",
    "resolve_machine",
    "write_private_key",
    "write_public_key",
]
