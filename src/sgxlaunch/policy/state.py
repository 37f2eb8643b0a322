"""The trusted state: which owner root and launch policy are in force, and how they may change.

A sans-IO state machine in the manner of TUF's trusted metadata set: bytes and ``now`` go in;
a new :class:`TrustedState` and an :class:`Update` (exactly what to persist, committed by the
caller in one atomic step) come out — or an exception, and nothing changes. Nothing is written
before every check passed.

Rules:

* **Bootstrap** (no root yet): a root must be signed by a threshold of its own keys and not be
  expired. Whoever installs the first root is trusted (trust on first use, by the owner).
* **Rotation**: a new root must be signed by a threshold of the *current* root's keys **and** a
  threshold of its *own* keys, carry a higher version, and not be expired (an expired current
  root may still be rotated away from).
* **Policy**: a launch policy must be signed by a threshold of the current root's keys, not be
  expired, and carry a version above the stored one. The stored policy stays the rollback floor
  even after it expires, and after a rotation under which it no longer verifies (then it no
  longer allows anything until a new policy is installed). Re-installing the identical payload
  is a no-op; an equal version with different bytes is refused.
* ``expires <= now`` is expired, for roots and policies alike.

Each check is a module-level function called by name, so each can be forced to fail in
isolation (adversarial case 28); every one raises, none returns a flag to be forgotten.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sgxlaunch.arch.structs import Sigstruct
from sgxlaunch.errors import (
    Expired,
    MalformedInput,
    Rollback,
    SgxlaunchError,
    ThresholdNotMet,
    UsageError,
)
from sgxlaunch.policy import _json
from sgxlaunch.policy.envelope import MAX_ENVELOPE_SIZE, Envelope, verify_threshold
from sgxlaunch.policy.evaluate import Decision, EnclaveIdentity, PolicyIndex, Reason
from sgxlaunch.policy.model import POLICY_PAYLOAD_TYPE, LaunchPolicy
from sgxlaunch.policy.root import MAX_ROOT_SIZE, ROOT_PAYLOAD_TYPE, OwnerRoot
from sgxlaunch.policy.store import Store

ROOT_KEY = "owner/root"
"""Store key of the trusted owner-root envelope."""
POLICY_KEY = "owner/policy"
"""Store key of the trusted launch-policy envelope."""


@dataclass(frozen=True, slots=True)
class Update:
    """What the caller must persist, all at once (``None`` deletes a key).

    Attributes:
        changes: store key → new bytes. Empty when nothing changes (an identical re-install).
        summary: one line saying what happened.
    """

    changes: Mapping[str, bytes | None]
    summary: str

    def apply(self, store: Store) -> None:
        """Commit the changes to ``store`` in one step (nothing when there are none)."""
        if self.changes:
            store.commit(self.changes)


# --- the checks, each one raising ------------------------------------------------------------


def check_now(now: datetime) -> None:
    """Refuse a naive ``now``.

    Raises:
        UsageError: ``now`` has no timezone.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise UsageError("now must be a timezone-aware datetime (UTC)")


def check_envelope(data: bytes, payload_type: str, *, max_size: int) -> Envelope:
    """Parse an envelope (size capped before parsing) and check its payload type.

    Raises:
        MalformedInput: too large, not a strict DSSE envelope, or the wrong payload type.
    """
    envelope = Envelope.from_bytes(data, max_size=max_size)
    if envelope.payload_type != payload_type:
        raise MalformedInput(
            f"envelope carries {envelope.payload_type!r}, expected {payload_type!r}",
            field="payloadType",
        )
    return envelope


def check_signatures(envelope: Envelope, root: OwnerRoot, role: str) -> None:
    """A threshold of ``root``'s distinct keys signed ``envelope``.

    Raises:
        ThresholdNotMet: see :func:`~sgxlaunch.policy.envelope.verify_threshold`.
    """
    verify_threshold(envelope, root.keys, root.threshold, role=role)


def check_not_expired(expires: datetime, now: datetime, role: str) -> None:
    """The document is not expired at ``now`` (``expires <= now`` is expired).

    Raises:
        Expired: it is.
    """
    if expires <= now:
        raise Expired(
            f"{role} expired at {_json.format_time(expires)}",
            expected=f"expires after {_json.format_time(now)}",
            found=f"expires {_json.format_time(expires)}",
        )


def check_version(
    new_version: int, new_digest: bytes, old_version: int, old_digest: bytes, role: str
) -> bool:
    """The new version is above the trusted one; an identical payload is allowed as a no-op.

    Payloads are compared by their SHA-256 digests (``hmac.compare_digest``).

    Returns:
        ``True`` when the payload is byte-for-byte the trusted one (nothing to do).

    Raises:
        Rollback: the version is lower, or equal with different bytes.
    """
    same = hmac.compare_digest(new_digest, old_digest)
    if same:
        return True
    if new_version <= old_version:
        what = "equal to" if new_version == old_version else "below"
        raise Rollback(
            f"{role} version {new_version} is {what} the trusted version {old_version}",
            expected=f"version > {old_version}",
            found=f"version {new_version}" + (" with different content" if what[0] == "e" else ""),
        )
    return False


# --- the state -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrustedState:
    """The owner root and launch policy in force (immutable; updates return a new state).

    Attributes:
        root: the trusted owner root.
        root_envelope: its envelope bytes, as stored.
        policy: the stored launch policy (the rollback floor), or ``None``.
        policy_envelope: its envelope bytes, or ``None``.
        policy_in_force: whether ``policy`` verifies under ``root`` (false after a rotation
            to keys that did not sign it: it then allows nothing).
        policy_digest: SHA-256 of the policy's exact payload bytes (what its signatures
            cover), or ``None`` — for binding the policy in force into attestations and logs.
    """

    root: OwnerRoot
    root_envelope: bytes
    policy: LaunchPolicy | None = None
    policy_envelope: bytes | None = None
    policy_in_force: bool = False
    policy_digest: bytes | None = None
    _index: PolicyIndex | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.policy_in_force and self.policy is not None and self._index is None:
            object.__setattr__(self, "_index", PolicyIndex(self.policy))

    # -- construction

    @classmethod
    def bootstrap(cls, data: bytes, now: datetime) -> tuple[TrustedState, Update]:
        """Trust a first owner root.

        Checks, in order: ``now`` is aware; envelope (≤ 1 MiB + base64 room) with the root
        payload type; root payload parses; a threshold of the root's own keys signed it; not
        expired.

        Raises:
            MalformedInput, ThresholdNotMet, Expired, UsageError.
        """
        check_now(now)
        envelope = check_envelope(data, ROOT_PAYLOAD_TYPE, max_size=_ROOT_ENVELOPE_MAX)
        root = OwnerRoot.from_payload(envelope.payload)
        check_signatures(envelope, root, "new owner root (its own keys)")
        check_not_expired(root.expires, now, "owner root")
        state = cls(root, bytes(data))
        return state, Update(
            {ROOT_KEY: bytes(data)},
            f"owner root version {root.version} installed ({root.threshold} of "
            f"{len(root.keys)} keys)",
        )

    @classmethod
    def load(cls, store: Store) -> TrustedState | None:
        """Load the trusted state from ``store``; ``None`` when no owner root is stored.

        The stored root must still parse and be signed by a threshold of its own keys (expiry
        is not checked: a stored document stays trusted, it only stops new documents from
        being accepted). The stored policy must parse; if a threshold of the root's keys no
        longer signs it, it is kept as the rollback floor but not in force.

        Raises:
            MalformedInput, ThresholdNotMet: the stored documents are damaged (the message
                says the store is at fault).
        """
        root_data = store.get(ROOT_KEY)
        if root_data is None:
            return None
        try:
            envelope = check_envelope(root_data, ROOT_PAYLOAD_TYPE, max_size=_ROOT_ENVELOPE_MAX)
            root = OwnerRoot.from_payload(envelope.payload)
            check_signatures(envelope, root, "stored owner root")
            state = cls(root, root_data)
            policy_data = store.get(POLICY_KEY)
            if policy_data is not None:
                penv = check_envelope(policy_data, POLICY_PAYLOAD_TYPE, max_size=MAX_ENVELOPE_SIZE)
                policy = LaunchPolicy.from_payload(penv.payload)
                state = state._with_policy(
                    policy, policy_data, _digest(penv.payload), _verifies(penv, root)
                )
        except SgxlaunchError as exc:
            exc.message = f"trusted store is damaged: {exc.message}"
            raise
        return state

    def _with_policy(
        self, policy: LaunchPolicy, envelope: bytes, digest: bytes, in_force: bool
    ) -> TrustedState:
        index = PolicyIndex(policy) if in_force else None
        return TrustedState(
            self.root, self.root_envelope, policy, envelope, in_force, digest, index
        )

    # -- transitions

    def rotate_root(self, data: bytes, now: datetime) -> tuple[TrustedState, Update]:
        """Accept a new owner root (rotation).

        Checks, in order: ``now`` is aware; envelope and payload type; root payload parses;
        a threshold of the **current** root's keys signed it; a threshold of the **new**
        root's keys signed it; version above the current one (identical payload: no-op);
        not expired. Then the stored policy is re-checked against the new keys (kept in
        force only if it still meets the new threshold; it stays the rollback floor anyway).

        Raises:
            MalformedInput, ThresholdNotMet, Rollback, Expired, UsageError.
        """
        check_now(now)
        envelope = check_envelope(data, ROOT_PAYLOAD_TYPE, max_size=_ROOT_ENVELOPE_MAX)
        new_root = OwnerRoot.from_payload(envelope.payload)
        check_signatures(envelope, self.root, "new owner root (current keys)")
        check_signatures(envelope, new_root, "new owner root (its own keys)")
        old_payload = Envelope.from_bytes(self.root_envelope).payload
        if check_version(
            new_root.version,
            _digest(envelope.payload),
            self.root.version,
            _digest(old_payload),
            "owner root",
        ):
            return self, Update({}, f"owner root version {new_root.version} already installed")
        check_not_expired(new_root.expires, now, "new owner root")
        state = TrustedState(new_root, bytes(data))
        note = ""
        if (
            self.policy is not None
            and self.policy_envelope is not None
            and self.policy_digest is not None
        ):
            penv = Envelope.from_bytes(self.policy_envelope)
            in_force = _verifies(penv, new_root)
            state = state._with_policy(
                self.policy, self.policy_envelope, self.policy_digest, in_force
            )
            if not in_force:
                note = "; the stored policy is not signed by the new keys and is no longer in force"
        return state, Update(
            {ROOT_KEY: bytes(data)},
            f"owner root rotated to version {new_root.version}{note}",
        )

    def verify_policy(self, data: bytes, now: datetime) -> tuple[LaunchPolicy, bytes, bool]:
        """Run every check of :meth:`install_policy` without changing anything.

        Checks, in order: ``now`` is aware; the current root is not expired; envelope (size
        capped before parsing) and payload type; a threshold of the current root's keys
        signed the PAE of the exact payload bytes (before the payload is parsed); the payload
        parses (size and rule caps before parsing); not expired; version above the stored
        policy's, expired or not (identical payload: no-op).

        Returns:
            The policy, the SHA-256 of its payload, and whether it is the payload already
            stored (a no-op install).

        Raises:
            MalformedInput, ThresholdNotMet, Expired, Rollback, UsageError.
        """
        check_now(now)
        check_not_expired(self.root.expires, now, "owner root (rotate it first)")
        envelope = check_envelope(data, POLICY_PAYLOAD_TYPE, max_size=MAX_ENVELOPE_SIZE)
        check_signatures(envelope, self.root, "launch policy")
        policy = LaunchPolicy.from_payload(envelope.payload)
        check_not_expired(policy.expires, now, "launch policy")
        digest = _digest(envelope.payload)
        same = False
        if self.policy is not None and self.policy_digest is not None:
            same = check_version(
                policy.version, digest, self.policy.version, self.policy_digest, "policy"
            )
        return policy, digest, same

    def install_policy(self, data: bytes, now: datetime) -> tuple[TrustedState, Update]:
        """Accept a new launch policy (checks: see :meth:`verify_policy`).

        Raises:
            MalformedInput, ThresholdNotMet, Expired, Rollback, UsageError.
        """
        policy, digest, same = self.verify_policy(data, now)
        if same and self.policy_in_force:
            return self, Update({}, f"launch policy version {policy.version} already installed")
        state = self._with_policy(policy, bytes(data), digest, True)
        return state, Update(
            {POLICY_KEY: bytes(data)},
            f"launch policy version {policy.version} installed "
            f"({len(policy.allow)} allow, {len(policy.deny)} deny rules)",
        )

    # -- decisions

    def evaluate(self, enclave: EnclaveIdentity | Sigstruct, now: datetime) -> Decision:
        """The verdict of the policy in force for ``enclave`` at ``now``.

        Raises:
            UsageError: no launch policy is stored (the caller decides what "no policy"
                means — the platform is permissive then), or ``now`` is naive.
        """
        check_now(now)
        if self.policy is None:
            raise UsageError("no launch policy is installed")
        if self._index is None or not self.policy_in_force:
            return Decision(
                False,
                None,
                (
                    Reason(
                        None,
                        "policy",
                        "a policy signed by the current owner root",
                        f"version {self.policy.version}, signed by keys of an earlier root",
                    ),
                ),
                self.policy.version,
            )
        return self._index.evaluate(enclave, now)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "root": self.root.describe(),
            "policy": None
            if self.policy is None
            else {
                "version": self.policy.version,
                "expires": _json.format_time(self.policy.expires),
                "allow_rules": len(self.policy.allow),
                "deny_rules": len(self.policy.deny),
                "in_force": self.policy_in_force,
                "digest": None if self.policy_digest is None else self.policy_digest.hex(),
            },
        }


_ROOT_ENVELOPE_MAX = (MAX_ROOT_SIZE * 4) // 3 + (64 << 10)


def _digest(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()


def _verifies(envelope: Envelope, root: OwnerRoot) -> bool:
    try:
        check_signatures(envelope, root, "launch policy")
    except ThresholdNotMet:
        return False
    return True


# --- store-level helpers (load, check, commit) --------------------------------------------------


def load_state(store: Store) -> TrustedState:
    """The trusted state in ``store``.

    Raises:
        UsageError: no owner root is installed.
        MalformedInput, VerificationFailed: the store is damaged.
    """
    state = TrustedState.load(store)
    if state is None:
        raise UsageError("no owner root is installed; run `sgxlaunch owner install` first")
    return state


def install_root(store: Store, data: bytes, now: datetime) -> tuple[TrustedState, Update]:
    """Bootstrap or rotate the owner root in ``store``; commit only after every check passed.

    Raises:
        MalformedInput, VerificationFailed, UsageError: nothing was written.
    """
    state = TrustedState.load(store)
    if state is None:
        new_state, update = TrustedState.bootstrap(data, now)
    else:
        new_state, update = state.rotate_root(data, now)
    update.apply(store)
    return new_state, update


def install_policy(store: Store, data: bytes, now: datetime) -> tuple[TrustedState, Update]:
    """Install a launch policy in ``store``; commit only after every check passed.

    Raises:
        MalformedInput, VerificationFailed, UsageError: nothing was written.
    """
    new_state, update = load_state(store).install_policy(data, now)
    update.apply(store)
    return new_state, update


__all__ = [
    "POLICY_KEY",
    "ROOT_KEY",
    "TrustedState",
    "Update",
    "check_envelope",
    "check_not_expired",
    "check_now",
    "check_signatures",
    "check_version",
    "install_policy",
    "install_root",
    "load_state",
]
