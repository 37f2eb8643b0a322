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

Per-enclave limits (issue 17). What the owner's policy says about an enclave's dynamic memory,
unmeasured executable pages and RWX pages reaches the driver in the same KEYID: its first 16
bytes N are :func:`limits_nonce` — a tag byte, the :class:`DynamicMemory` level, a flag byte and
13 random bytes (so tokens stay distinct). N is covered by the binding hash *and*, as part of
KEYID, is an input of the launch key, so user space cannot change a limit without EINIT refusing
the token's MAC. The driver decodes it with :func:`keyid_limits` after the binding check and keeps
the result in ``Enclave.owner_limits``; an enclave initialized in permissive mode gets
:data:`MAINLINE_LIMITS` (mainline's behaviour).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, replace
from enum import IntEnum

from sgxlaunch.cpu.machine import Machine, MachineConflict
from sgxlaunch.errors import UsageError, VerificationFailed

TOKEN_BINDING_DOMAIN = b"sgxlaunch/einittoken-keyid/v1\x00"
"""Domain tag of the KEYID binding."""


_BINDING = hashlib.sha256(TOKEN_BINDING_DOMAIN)
"""SHA-256 with the domain tag absorbed (copied for each binding)."""


def token_binding(nonce: bytes, sigstruct: bytes, policy_digest: bytes) -> bytes:
    """The 16-byte second half of a bound KEYID."""
    h = _BINDING.copy()
    h.update(nonce)  # three updates hash what one update of the joined bytes would, without
    h.update(sigstruct)  # copying the SIGSTRUCT into a new 1.9 KB buffer first
    h.update(policy_digest)
    return h.digest()[:16]


def token_keyid(nonce: bytes, sigstruct: bytes, policy_digest: bytes) -> bytes:
    """KEYID = ``nonce`` (16 bytes) ‖ :func:`token_binding`.

    Raises:
        UsageError: the nonce is not 16 bytes, the SIGSTRUCT not 1 808, the digest not 32.
    """
    if len(nonce) != 16 or len(sigstruct) != 1808 or len(policy_digest) != 32:
        raise UsageError("a bound KEYID takes a 16-byte nonce, a SIGSTRUCT and a 32-byte digest")
    h = _BINDING.copy()  # token_binding, in line (once per minted token)
    h.update(nonce)
    h.update(sigstruct)
    h.update(policy_digest)
    return bytes(nonce) + h.digest()[:16]


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


LIMITS_TAG = 0x4C
"""First byte of a KEYID nonce that carries :class:`OwnerLimits` (``L``)."""
_FLAG_UNMEASURED_EXEC = 0x01
_FLAG_RWX_PAGES = 0x02
_KNOWN_FLAGS = _FLAG_UNMEASURED_EXEC | _FLAG_RWX_PAGES


class DynamicMemory(IntEnum):
    """A rule's ``dynamic_memory`` level (what may happen after EINIT)."""

    NONE = 0
    """No EAUG after EINIT (SIGBUS on a fault in a hole); the SGX2 ioctls are refused (EPERM)."""
    DATA = 1
    """Pages may be added, but dynamic pages and holes are never mapped executable."""
    ATTESTED_CODE = 2
    """Dynamic code runs only on pages the launch enclave granted after an attested report."""
    CODE = 3
    """Mainline: dynamic pages may be RWX; each dynamic executable mapping is recorded."""

    @property
    def label(self) -> str:
        """The policy's spelling: ``none``, ``data``, ``attested-code``, ``code``."""
        return self.name.lower().replace("_", "-")

    @classmethod
    def from_label(cls, label: str) -> DynamicMemory:
        """The level spelled ``label``.

        Raises:
            UsageError: not one of the four spellings.
        """
        for level in cls:
            if level.label == label:
                return level
        raise UsageError(f"dynamic_memory {label!r} is not one of none, data, attested-code, code")


@dataclass(frozen=True, slots=True)
class OwnerLimits:
    """What the driver enforces for one enclave after owner-mode INIT.

    Attributes:
        dynamic_memory: the :class:`DynamicMemory` level.
        unmeasured_exec: EADDed executable pages without SGX_PAGE_MEASURE are allowed.
        rwx_pages: measured pages that are writable and executable are allowed.
    """

    dynamic_memory: DynamicMemory = DynamicMemory.CODE
    unmeasured_exec: bool = True
    rwx_pages: bool = True


MAINLINE_LIMITS = OwnerLimits()
"""Mainline's behaviour: permissive mode, and policies of ``spec_version`` 1 and 2."""

STRICT_LIMITS = OwnerLimits(DynamicMemory.NONE, unmeasured_exec=False, rwx_pages=False)
"""The tightest limits (nothing dynamic, no unmeasured or RWX executable pages)."""


@dataclass(frozen=True, slots=True)
class ExecGrant:
    """An attested grant to execute dynamic code on ``[start, end)`` (enclave offsets).

    Attributes:
        start: first byte offset (page aligned).
        end: end offset (exclusive, page aligned).
        code_hash: SHA-256 of the code bytes the enclave reported.
        challenge: the one-time challenge the grant consumed.
    """

    start: int
    end: int
    code_hash: bytes
    challenge: bytes


def limits_head(limits: OwnerLimits) -> bytes:
    """The first three bytes of a KEYID nonce carrying ``limits``: tag, level, flags."""
    flags = (_FLAG_UNMEASURED_EXEC if limits.unmeasured_exec else 0) | (
        _FLAG_RWX_PAGES if limits.rwx_pages else 0
    )
    return bytes((LIMITS_TAG, int(limits.dynamic_memory), flags))


def limits_nonce(limits: OwnerLimits, random13: bytes) -> bytes:
    """The 16-byte KEYID nonce carrying ``limits``: :func:`limits_head`, 13 random bytes.

    Raises:
        UsageError: ``random13`` is not 13 bytes.
    """
    if len(random13) != 13:
        raise UsageError("a limits nonce takes 13 random bytes")
    return limits_head(limits) + bytes(random13)


def keyid_limits(keyid: bytes) -> OwnerLimits:
    """The limits a bound KEYID carries (its first three bytes).

    Raises:
        VerificationFailed: the KEYID carries no limits, or an unknown level or flag.
    """
    if len(keyid) < 3 or keyid[0] != LIMITS_TAG:
        raise VerificationFailed(
            "the token's KEYID carries no owner limits",
            expected=f"KEYID[0] = 0x{LIMITS_TAG:02x}",
            found=f"KEYID[0] = 0x{keyid[0]:02x}" if keyid else "an empty KEYID",
        )
    level, flags = keyid[1], keyid[2]
    if level > max(DynamicMemory) or flags & ~_KNOWN_FLAGS:
        raise VerificationFailed(
            "the token's KEYID carries unknown owner limits",
            expected=f"level 0..{int(max(DynamicMemory))}, flags within 0x{_KNOWN_FLAGS:02x}",
            found=f"level {level}, flags 0x{flags:02x}",
        )
    return OwnerLimits(
        DynamicMemory(level),
        unmeasured_exec=bool(flags & _FLAG_UNMEASURED_EXEC),
        rwx_pages=bool(flags & _FLAG_RWX_PAGES),
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
    "LIMITS_TAG",
    "MAINLINE_LIMITS",
    "STRICT_LIMITS",
    "TOKEN_BINDING_DOMAIN",
    "DynamicMemory",
    "ExecGrant",
    "OwnerLimits",
    "bind_owner",
    "check_token_binding",
    "keyid_limits",
    "limits_head",
    "limits_nonce",
    "token_binding",
    "token_keyid",
]
