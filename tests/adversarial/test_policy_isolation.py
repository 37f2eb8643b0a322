"""Checklist case 28: each verification step forced to fail in isolation fails the whole.

Two ways: (1) every check of the install and rotation pipelines is wrapped so that exactly one
call raises while all others run for real; (2) genuine inputs that break exactly one check
each. Either way the overall result is a failure and the store is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sgxlaunch.errors import SgxlaunchError, SignatureInvalid, VerificationFailed
from sgxlaunch.policy import (
    POLICY_PAYLOAD_TYPE,
    Envelope,
    LaunchPolicy,
    OwnerRoot,
    install_policy,
    install_root,
)
from sgxlaunch.policy import envelope as envelope_module
from sgxlaunch.policy import keys as keys_module
from sgxlaunch.policy import state as state_module
from tests.support.clock import NOW
from tests.support.policy import Owner, ed25519_signer, policy_payload

_POLICY_STEPS = [
    ("check_now", 1),
    ("check_not_expired", 2),  # root expiry, then policy expiry
    ("check_envelope", 1),
    ("check_signatures", 1),
    ("check_version", 1),
]
_ROOT_STEPS = [
    ("check_now", 1),
    ("check_envelope", 1),
    ("check_signatures", 2),  # current keys, then the new root's own keys
    ("check_version", 1),
    ("check_not_expired", 1),
]


def _fail_nth_call(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, nth: int) -> list[int]:
    """Make the ``nth`` call (1-based) of ``module.name`` raise; the others run for real."""
    real: Callable[..., Any] = getattr(module, name)
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == nth:
            raise VerificationFailed(f"forced failure of {name} (call {nth})")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def _expand(steps: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return [(name, nth) for name, count in steps for nth in range(1, count + 1)]


@pytest.mark.parametrize(("step", "nth"), _expand(_POLICY_STEPS))
def test_adv28_each_policy_install_step_forced_to_fail_fails_the_install(
    monkeypatch: pytest.MonkeyPatch, step: str, nth: int
) -> None:
    owner = Owner()
    owner.install(policy_payload(version=1))
    candidate = owner.sign_policy(policy_payload(version=2))
    state = state_module.load_state(owner.store)
    before = owner.store.snapshot()
    calls = _fail_nth_call(monkeypatch, state_module, step, nth)
    with pytest.raises(VerificationFailed, match="forced failure"):
        state_module.install_policy(owner.store, candidate, NOW)
    assert calls[0] >= nth
    assert owner.store.snapshot() == before
    monkeypatch.undo()
    # Without the forced failure the very same bytes are accepted (the step was isolated).
    state.install_policy(candidate, NOW)


@pytest.mark.parametrize(("step", "nth"), _expand(_ROOT_STEPS))
def test_adv28_each_root_rotation_step_forced_to_fail_fails_the_rotation(
    monkeypatch: pytest.MonkeyPatch, step: str, nth: int
) -> None:
    owner = Owner()
    new_keys = [ed25519_signer() for _ in range(3)]
    rotation = owner.root(version=2, keys=new_keys, signers=[*owner.keys[:2], *new_keys[:2]])
    before = owner.store.snapshot()
    state = state_module.load_state(owner.store)
    calls = _fail_nth_call(monkeypatch, state_module, step, nth)
    with pytest.raises(VerificationFailed, match="forced failure"):
        state.rotate_root(rotation, NOW)
    assert calls[0] >= nth
    assert owner.store.snapshot() == before
    monkeypatch.undo()
    install_root(owner.store, rotation, NOW)


@pytest.mark.parametrize("nth", [1, 2])
def test_adv28_a_failing_signature_primitive_is_never_counted(
    monkeypatch: pytest.MonkeyPatch, nth: int
) -> None:
    owner = Owner()
    candidate = owner.sign_policy(policy_payload(), owner.keys[:2])  # exactly the threshold
    before = owner.store.snapshot()
    state = state_module.load_state(owner.store)
    real = keys_module.PublicKey.verify
    calls = [0]

    def verify(self: keys_module.PublicKey, signature: bytes, message: bytes) -> None:
        calls[0] += 1
        if calls[0] == nth:
            raise SignatureInvalid("forced")
        real(self, signature, message)

    monkeypatch.setattr(keys_module.PublicKey, "verify", verify)
    with pytest.raises(VerificationFailed):
        state.install_policy(candidate, NOW)
    assert owner.store.snapshot() == before


@pytest.mark.parametrize("parser", [(LaunchPolicy, "from_payload"), (Envelope, "from_bytes")])
def test_adv28_a_failing_parser_fails_the_install(
    monkeypatch: pytest.MonkeyPatch, parser: tuple[type, str]
) -> None:
    owner = Owner()
    candidate = owner.sign_policy(policy_payload())
    state = state_module.load_state(owner.store)
    before = owner.store.snapshot()
    cls, name = parser

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise VerificationFailed("forced parser failure")

    monkeypatch.setattr(cls, name, classmethod(broken))
    with pytest.raises(SgxlaunchError):
        state.install_policy(candidate, NOW)
    assert owner.store.snapshot() == before


def test_adv28_threshold_check_failure_is_raised_not_returned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A verifier that reported failure through a return value could be ignored; ours raises,
    # and the caller does not consult its return value for the decision.
    owner = Owner()
    envelope = Envelope.from_bytes(owner.sign_policy(policy_payload(), owner.keys[:1]))
    root = OwnerRoot.from_payload(Envelope.from_bytes(owner.root()).payload)
    with pytest.raises(VerificationFailed):
        envelope_module.verify_threshold(envelope, root.keys, root.threshold, role="policy")


def _genuine_failures(owner: Owner) -> dict[str, bytes]:
    good = policy_payload(version=2)
    wrong_type = Envelope("application/json", good)
    return {
        "malformed envelope": b'{"payloadType": "x"}',
        "wrong payload type": wrong_type.signed_by(owner.keys[0])
        .signed_by(owner.keys[1])
        .to_bytes(),
        "below threshold": owner.sign_policy(good, owner.keys[:1]),
        "tampered payload": Envelope(
            POLICY_PAYLOAD_TYPE,
            policy_payload(version=3),
            Envelope.from_bytes(owner.sign_policy(good)).signatures,
        ).to_bytes(),
        "malformed payload": owner.sign_policy(good.replace(b'"version"', '"versión"'.encode())),
        "expired": owner.sign_policy(policy_payload(version=2, expires="2026-01-01T00:00:00Z")),
        "rollback": owner.sign_policy(policy_payload(version=1, allow=[])),
    }


@pytest.mark.parametrize(
    "case",
    [
        "malformed envelope",
        "wrong payload type",
        "below threshold",
        "tampered payload",
        "malformed payload",
        "expired",
        "rollback",
    ],
)
def test_adv28_genuine_single_check_failures_each_fail(case: str) -> None:
    owner = Owner()
    owner.install(policy_payload(version=1))
    before = owner.store.snapshot()
    with pytest.raises(SgxlaunchError):
        install_policy(owner.store, _genuine_failures(owner)[case], NOW)
    assert owner.store.snapshot() == before
