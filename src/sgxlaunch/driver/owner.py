"""The owner binding: the kernel side of taking ownership and rotating the owner root.

The machine records which owner root took ownership (SHA-256 of the root's payload). Only the
driver writes it (the launch enclave never needs to: it is built for one root), with a
compare-and-set, so two writers cannot both succeed and a stale caller fails loudly. The
caller (the Platform) has verified the new root first: a bootstrap for a machine without an
owner, a rotation signed by a threshold of the old and of the new keys otherwise. Clearing the
binding is a physical-presence operation on the machine (``sgxlaunch machine
clear-ownership``), not a driver call.

Token binding (owner mode). EINIT checks a token's MAC over its first 192 bytes; KEYID lies
outside them but is an input of the launch key (``../shared/reference/sgx-launch-spec.md``
§4.3), so it cannot be changed without breaking the MAC. The owner's launch enclave sets
KEYID = N ‖ the first 16 bytes of SHA-256(:data:`TOKEN_BINDING_DOMAIN` ‖ N ‖ SIGSTRUCT (all
1 808 bytes) ‖ policy digest), N 16 random bytes (:func:`token_keyid`). The driver's owner-mode
INIT recomputes the second half with the SIGSTRUCT it is handed and the policy digest of the
machine's counter slot (written only by the launch enclave, by the compare-and-set that commits
a policy), and refuses (EPERM) a token minted for another SIGSTRUCT or under another policy
(:func:`check_token_binding`).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace

from sgxlaunch.cpu.machine import Machine, MachineConflict
from sgxlaunch.errors import UsageError, VerificationFailed

TOKEN_BINDING_DOMAIN = b"sgxlaunch/einittoken-keyid/v1\x00"
"""Domain tag of the KEYID binding."""


def token_binding(nonce: bytes, sigstruct: bytes, policy_digest: bytes) -> bytes:
    """The 16-byte second half of a bound KEYID."""
    h = hashlib.sha256(TOKEN_BINDING_DOMAIN)
    h.update(nonce)
    h.update(sigstruct)
    h.update(policy_digest)
    return h.digest()[:16]


def token_keyid(nonce: bytes, sigstruct: bytes, policy_digest: bytes) -> bytes:
    """KEYID = ``nonce`` (16 bytes) ‖ :func:`token_binding`.

    Raises:
        UsageError: the nonce is not 16 bytes, the SIGSTRUCT not 1 808, the digest not 32.
    """
    if len(nonce) != 16 or len(sigstruct) != 1808 or len(policy_digest) != 32:
        raise UsageError("a bound KEYID takes a 16-byte nonce, a SIGSTRUCT and a 32-byte digest")
    return bytes(nonce) + token_binding(nonce, sigstruct, policy_digest)


def check_token_binding(keyid: bytes, sigstruct: bytes, policy_digest: bytes) -> None:
    """The token's KEYID binds ``sigstruct`` and ``policy_digest``.

    Raises:
        VerificationFailed: it binds another SIGSTRUCT or another policy.
    """
    want = token_binding(keyid[:16], sigstruct, policy_digest)
    if not hmac.compare_digest(keyid[16:32], want):
        raise VerificationFailed(
            "the token was minted for another SIGSTRUCT or under another launch policy",
            expected=f"KEYID binding {want.hex()}",
            found=f"KEYID binding {keyid[16:32].hex()}",
        )


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


__all__ = [
    "TOKEN_BINDING_DOMAIN",
    "bind_owner",
    "check_token_binding",
    "token_binding",
    "token_keyid",
]
