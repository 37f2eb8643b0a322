"""The owner binding: the kernel side of taking ownership and rotating the owner root.

The machine records which owner root took ownership (SHA-256 of the root's payload). Only the
driver writes it (the launch enclave never needs to: it is built for one root), with a
compare-and-set, so two writers cannot both succeed and a stale caller fails loudly. The
caller (the Platform) has verified the new root first: a bootstrap for a machine without an
owner, a rotation signed by a threshold of the old and of the new keys otherwise. Clearing the
binding is a physical-presence operation on the machine (``sgxlaunch machine
clear-ownership``), not a driver call.
"""

from __future__ import annotations

import hmac
from dataclasses import replace

from sgxlaunch.cpu.machine import Machine, MachineConflict
from sgxlaunch.errors import UsageError


def bind_owner(machine: Machine, expected: bytes | None, new: bytes) -> None:
    """Move the owner binding from ``expected`` (``None``: no owner) to ``new``.

    Raises:
        MachineConflict: the machine's binding is not ``expected``.
        UsageError: ``new`` is not a 32-byte digest.
    """
    if len(new) != 32:
        raise UsageError("the owner binding is a 32-byte digest")
    state = machine.load()
    current = state.owner_binding
    same = (
        current is None
        if expected is None
        else current is not None and hmac.compare_digest(current, expected)
    )
    if not same:
        raise MachineConflict(
            "the machine's owner binding is not the expected one",
            expected="none" if expected is None else expected.hex(),
            found="none" if current is None else current.hex(),
        )
    machine.swap(state, replace(state, owner_binding=bytes(new)))


__all__ = ["bind_owner"]
