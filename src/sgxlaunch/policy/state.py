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
* **Platform mode** (:mod:`sgxlaunch.policy.control`): a platform-mode document is checked
  like a policy — a threshold of the current root's keys, not expired, bound to the verifying
  platform if it names one, a version above the stored one (identical payload: no-op). An
  installed mode stays in force after its document expires (expiry only bounds how long a
  signed, unused document can be installed: a platform must not silently fall back to
  ``permissive``); after a rotation under which it no longer verifies it is kept as the
  rollback floor but is no longer in force (see :attr:`TrustedState.mode_in_force`).
* ``expires <= now`` is expired, for roots, policies and mode documents alike.

Each check is a module-level function called by name, so each can be forced to fail in
isolation (adversarial case 28); every one raises, none returns a flag to be forgotten.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
from sgxlaunch.policy.control import (
    MAX_MODE_ENVELOPE_SIZE,
    MODE_PAYLOAD_TYPE,
    ModeDocument,
    PlatformMismatch,
)
from sgxlaunch.policy.envelope import MAX_ENVELOPE_SIZE, Envelope, verify_threshold
from sgxlaunch.policy.evaluate import (
    Decision,
    EnclaveIdentity,
    PolicyIndex,
    Reason,
    legacy_spec_warning,
)
from sgxlaunch.policy.model import POLICY_PAYLOAD_TYPE, LaunchPolicy
from sgxlaunch.policy.root import MAX_ROOT_SIZE, ROOT_PAYLOAD_TYPE, OwnerRoot
from sgxlaunch.policy.store import Store

ROOT_KEY = "owner/root"
"""Store key of the trusted owner-root envelope."""
POLICY_KEY = "owner/policy"
"""Store key of the trusted launch-policy envelope."""
MODE_KEY = "owner/mode"
"""Store key of the trusted platform-mode envelope (:mod:`sgxlaunch.policy.control`)."""
ROOT_PREVIOUS_KEY = "owner/root-previous"
"""Store key of the root a rotation replaced: a platform whose machine is still bound to it
checks the rotation and moves the binding (``sgxlaunch.launch.platform``)."""


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
    tz = now.tzinfo
    if tz is not UTC and (tz is None or now.utcoffset() is None):  # UTC: an offset, always
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
        mode: the stored platform-mode document (the rollback floor for new ones), or
            ``None`` when none was ever installed. It stays in force after it expires.
        mode_envelope: its envelope bytes, or ``None``.
        mode_in_force: whether ``mode`` verifies under ``root``. ``False`` after a rotation to
            keys that did not sign it: then it selects nothing, and the caller must fail
            closed (keep owner launch control with the launch enclave it already trusts,
            never fall back to permissive) until a mode document signed under the current
            root is installed.
        mode_digest: SHA-256 of the mode document's exact payload bytes, or ``None``.
    """

    root: OwnerRoot
    root_envelope: bytes
    policy: LaunchPolicy | None = None
    policy_envelope: bytes | None = None
    policy_in_force: bool = False
    policy_digest: bytes | None = None
    _index: PolicyIndex | None = field(default=None, repr=False, compare=False)
    mode: ModeDocument | None = None
    mode_envelope: bytes | None = None
    mode_in_force: bool = False
    mode_digest: bytes | None = None

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
        longer signs it, it is kept as the rollback floor but not in force. The stored
        platform-mode document is treated the same way (it must parse; in force only if a
        threshold of the root's keys signs it; its expiry is not checked).

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
            mode_data = store.get(MODE_KEY)
            if mode_data is not None:
                menv = check_envelope(mode_data, MODE_PAYLOAD_TYPE, max_size=MAX_MODE_ENVELOPE_SIZE)
                mode = ModeDocument.from_payload(menv.payload)
                state = state._with_mode(
                    mode, mode_data, _digest(menv.payload), _verifies(menv, root)
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
            self.root,
            self.root_envelope,
            policy,
            envelope,
            in_force,
            digest,
            index,
            self.mode,
            self.mode_envelope,
            self.mode_in_force,
            self.mode_digest,
        )

    # -- transitions

    def rotate_root(self, data: bytes, now: datetime) -> tuple[TrustedState, Update]:
        """Accept a new owner root (rotation).

        Checks, in order: ``now`` is aware; envelope and payload type; root payload parses;
        a threshold of the **current** root's keys signed it; a threshold of the **new**
        root's keys signed it; version above the current one (identical payload: no-op);
        not expired. Then the stored policy is re-checked against the new keys (kept in
        force only if it still meets the new threshold; it stays the rollback floor anyway),
        and so is the stored platform-mode document.

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
        if (
            self.mode is not None
            and self.mode_envelope is not None
            and self.mode_digest is not None
        ):
            mode_in_force = _verifies(Envelope.from_bytes(self.mode_envelope), new_root)
            state = state._with_mode(self.mode, self.mode_envelope, self.mode_digest, mode_in_force)
            if not mode_in_force:
                note += (
                    "; the platform-mode document is not signed by the new keys and is no longer"
                    " in force (re-sign it)"
                )
        return state, Update(
            {ROOT_KEY: bytes(data), ROOT_PREVIOUS_KEY: bytes(self.root_envelope)},
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
        if now.tzinfo is not UTC:  # UTC passes check_now
            check_now(now)
        if self.policy is None:
            raise UsageError("no launch policy is installed")
        index = self._index
        if index is None or not self.policy_in_force:
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
        return index.evaluate(enclave, now)

    def describe(self, now: datetime | None = None) -> dict[str, Any]:
        """A JSON-ready summary.

        With ``now``, the policy's ``expired`` is stated and ``in_force`` is false for an
        expired policy (every launch is denied then); without it, ``in_force`` speaks of the
        signatures only and ``expired`` is ``None``.
        """
        expired = None if now is None or self.policy is None else self.policy.is_expired(now)
        return {
            "root": self.root.describe(),
            "policy": None
            if self.policy is None
            else {
                "version": self.policy.version,
                "expires": _json.format_time(self.policy.expires),
                "expired": expired,
                "allow_rules": len(self.policy.allow),
                "deny_rules": len(self.policy.deny),
                "in_force": self.policy_in_force and not expired,
                "digest": None if self.policy_digest is None else self.policy_digest.hex(),
                "spec_version": self.policy.spec_version,
                "dynamic_code_unrestricted": self.policy.dynamic_code_unrestricted,
                "warnings": [w for w in (legacy_spec_warning(self.policy),) if w is not None],
            },
            "mode": None
            if self.mode is None
            else self.mode.describe()
            | {
                "in_force": self.mode_in_force,
                "digest": None if self.mode_digest is None else self.mode_digest.hex(),
            },
        }

    # -- platform mode (owner control of the platform; see sgxlaunch.policy.control)

    def verify_mode(
        self, data: bytes, now: datetime, *, platform_id: bytes | None = None
    ) -> ModeDocument:
        """Run every check of :meth:`install_mode` without changing anything.

        Checks, in order: ``now`` is aware and ``platform_id`` (if given) is 32 bytes; the
        current root is not expired (rotate it first); envelope (size capped before parsing)
        and payload type ``application/vnd.sgxlaunch.platform-mode+json``; a threshold of
        **distinct** keys of the **current** root signed the PAE of the exact payload bytes
        (before the payload is parsed); the payload parses strictly (see
        :meth:`ModeDocument.from_payload`); not expired (``expires <= now`` is expired); the
        document's ``platform_id``, if any, equals ``platform_id``; version above the stored
        mode document's — expired, or not in force, or not (identical payload: accepted as a
        no-op; equal version with different bytes: refused).

        Args:
            data: the envelope bytes.
            now: the current time (timezone-aware).
            platform_id: the id of the platform the mode is for; a document bound to a
                platform is refused when this is ``None``.

        Returns:
            The document.

        Raises:
            UsageError: ``now`` is naive, ``platform_id`` is not 32 bytes, or the document is
                bound to a platform and no ``platform_id`` was given.
            Expired: the root or the document is expired.
            MalformedInput: the envelope or the document is malformed or of another type.
            ThresholdNotMet: fewer than the threshold of distinct current keys signed.
            PlatformMismatch: the document is bound to another platform.
            Rollback: the version is not above the stored one (and the payload differs).
        """
        return self._check_mode(data, now, platform_id)[0]

    def install_mode(
        self, data: bytes, now: datetime, *, platform_id: bytes | None = None
    ) -> tuple[TrustedState, Update]:
        """Accept a platform-mode document (checks: see :meth:`verify_mode`).

        The :class:`Update` stores the envelope under :data:`MODE_KEY`; it is empty when the
        identical payload is already installed and in force. Re-installing the identical
        payload re-signed under a new root puts it back in force.

        Raises:
            MalformedInput, ThresholdNotMet, Expired, PlatformMismatch, Rollback, UsageError.
        """
        document, digest, same = self._check_mode(data, now, platform_id)
        if same and self.mode_in_force:
            return self, Update({}, f"platform mode version {document.version} already installed")
        state = self._with_mode(document, bytes(data), digest, True)
        return state, Update(
            {MODE_KEY: bytes(data)},
            f"platform mode version {document.version} installed: {_mode_text(document)}",
        )

    def _check_mode(
        self, data: bytes, now: datetime, platform_id: bytes | None
    ) -> tuple[ModeDocument, bytes, bool]:
        check_now(now)
        if platform_id is not None:
            if not isinstance(platform_id, bytes | bytearray) or len(platform_id) != 32:
                raise UsageError("platform_id must be 32 bytes")
            platform_id = bytes(platform_id)
        check_not_expired(self.root.expires, now, "owner root (rotate it first)")
        envelope = check_envelope(data, MODE_PAYLOAD_TYPE, max_size=MAX_MODE_ENVELOPE_SIZE)
        check_signatures(envelope, self.root, "platform-mode document")
        document = ModeDocument.from_payload(envelope.payload)
        check_not_expired(document.expires, now, "platform-mode document")
        check_platform_id(document.platform_id, platform_id)
        digest = _digest(envelope.payload)
        same = False
        if self.mode is not None and self.mode_digest is not None:
            same = check_version(
                document.version, digest, self.mode.version, self.mode_digest, "platform mode"
            )
        return document, digest, same

    def _with_mode(
        self, mode: ModeDocument, envelope: bytes, digest: bytes, in_force: bool
    ) -> TrustedState:
        return TrustedState(
            self.root,
            self.root_envelope,
            self.policy,
            self.policy_envelope,
            self.policy_in_force,
            self.policy_digest,
            self._index,
            mode,
            envelope,
            in_force,
            digest,
        )


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


def check_platform_id(bound: bytes | None, platform_id: bytes | None) -> None:
    """A platform-mode document bound to a platform is verified on that platform only.

    A document without ``platform_id`` applies to every platform of the owner; one with it
    applies only where the verifier's ``platform_id`` is equal (``hmac.compare_digest``).

    Raises:
        UsageError: the document is bound to a platform but the verifier gave no platform id.
        PlatformMismatch: the document is bound to another platform.
    """
    if bound is None:
        return
    if platform_id is None:
        raise UsageError(
            f"the platform-mode document is bound to platform {bound.hex()}; "
            "the verifier must give its platform id"
        )
    if not hmac.compare_digest(bound, platform_id):
        raise PlatformMismatch(
            "the platform-mode document is bound to another platform",
            expected=f"platform_id {platform_id.hex()}",
            found=f"platform_id {bound.hex()}",
        )


def _mode_text(document: ModeDocument) -> str:
    if document.mode == "owner" and document.le_mrsigner is not None:
        text = f"owner launch control, launch enclave MRSIGNER {document.le_mrsigner.hex()}"
    else:
        text = "permissive launch control"
    if document.platform_id is not None:
        text += f" (platform {document.platform_id.hex()[:16]}…)"
    return text


def install_mode(
    store: Store, data: bytes, now: datetime, *, platform_id: bytes | None = None
) -> tuple[TrustedState, Update]:
    """Install a platform-mode document in ``store``; commit only after every check passed.

    Checks: see :meth:`TrustedState.verify_mode`.

    Raises:
        MalformedInput, VerificationFailed, UsageError: nothing was written.
    """
    new_state, update = load_state(store).install_mode(data, now, platform_id=platform_id)
    update.apply(store)
    return new_state, update


__all__ = [
    "MODE_KEY",
    "POLICY_KEY",
    "ROOT_KEY",
    "ROOT_PREVIOUS_KEY",
    "TrustedState",
    "Update",
    "check_envelope",
    "check_not_expired",
    "check_now",
    "check_platform_id",
    "check_signatures",
    "check_version",
    "install_mode",
    "install_policy",
    "install_root",
    "load_state",
]
