"""Checklist cases 23, 24, 26, 27 for platform-mode documents: what a signed document may say.

Signed, valid-threshold documents that are malformed are refused as ``MalformedInput`` (after
the signatures, before anything is trusted); the envelope and payload sizes are capped before
parsing. Every refused document leaves the store byte-for-byte unchanged.
"""

from __future__ import annotations

import json
import time

import pytest

from sgxlaunch.errors import MalformedInput, ThresholdNotMet
from sgxlaunch.policy import (
    MAX_MODE_ENVELOPE_SIZE,
    MODE_PAYLOAD_TYPE,
    POLICY_PAYLOAD_TYPE,
    ROOT_PAYLOAD_TYPE,
    Envelope,
    install_mode,
    install_policy,
    sign_payload,
)
from tests.support.clock import NOW
from tests.support.policy import LE_SIGNER, Owner, mode_payload, policy_payload


def _refused(owner: Owner, data: bytes, error: type[Exception] = MalformedInput) -> Exception:
    before = owner.store.snapshot()
    with pytest.raises(error) as info:
        install_mode(owner.store, data, NOW)
    assert owner.store.snapshot() == before
    return info.value


def test_adv23_reserialized_mode_payload_no_longer_verifies() -> None:
    owner = Owner()
    signed = Envelope.from_bytes(owner.sign_mode(mode_payload(mode="permissive")))
    compact = json.dumps(json.loads(signed.payload), separators=(",", ":")).encode()
    reordered = json.dumps(json.loads(signed.payload), indent=1).encode()  # key order changed
    for payload in (compact, reordered):
        assert payload != signed.payload
        forged = Envelope(MODE_PAYLOAD_TYPE, payload, signed.signatures)
        _refused(owner, forged.to_bytes(), ThresholdNotMet)


def test_adv23_signed_mode_with_unknown_field_rejected() -> None:
    # e.g. a future "not_before" an old verifier would silently ignore: refused instead.
    owner = Owner()
    error = _refused(owner, owner.sign_mode(mode_payload(not_before="2027-01-01T00:00:00Z")))
    assert isinstance(error, MalformedInput) and error.field == "mode.not_before"


def test_signed_owner_mode_without_le_mrsigner_rejected() -> None:
    owner = Owner()
    error = _refused(owner, owner.sign_mode(mode_payload(le_mrsigner=None)))
    assert isinstance(error, MalformedInput) and error.field == "mode.le_mrsigner"


def test_signed_permissive_mode_with_le_mrsigner_rejected() -> None:
    owner = Owner()
    data = owner.sign_mode(mode_payload(mode="permissive", le_mrsigner=LE_SIGNER.hex()))
    error = _refused(owner, data)
    assert isinstance(error, MalformedInput) and error.field == "mode.le_mrsigner"


@pytest.mark.parametrize(
    "payload",
    [
        mode_payload().replace(b'"mode": "owner"', b'"mode": "owner", "mode": "permissive"'),
        mode_payload().replace(b'"version": 1', b'"version": NaN'),
        mode_payload().replace(b'"version": 1', b'"version": Infinity'),
        mode_payload().replace(b'"version": 1', b'"version": true'),
        mode_payload().replace(b'"version": 1', b'"version": ' + b"1" * 100_000),
        b"[" * 10_000 + b"]" * 10_000,
    ],
    ids=["duplicate-key", "nan", "infinity", "true-as-version", "huge-int", "deep-nesting"],
)
def test_adv24_strict_json_traps_in_a_signed_mode_rejected_quickly(payload: bytes) -> None:
    owner = Owner()
    started = time.perf_counter()
    _refused(owner, owner.sign_mode(payload))
    assert time.perf_counter() - started < 1.0


def test_adv26_all_zero_le_mrsigner_is_nobody_and_rejected() -> None:
    owner = Owner()
    error = _refused(owner, owner.sign_mode(mode_payload(le_mrsigner="00" * 32)))
    assert "all zero" in str(error)


def test_adv27_oversize_mode_envelope_rejected_before_parsing() -> None:
    owner = Owner()
    huge = b" " * (MAX_MODE_ENVELOPE_SIZE + 1)
    error = _refused(owner, huge)
    assert "limit" in str(error)


def test_adv27_oversize_mode_payload_rejected_before_parsing() -> None:
    owner = Owner()
    payload = mode_payload()
    padded = payload[:-2] + b" " * (20 << 10) + payload[-2:]
    error = _refused(owner, owner.sign_mode(padded))
    assert isinstance(error, MalformedInput) and error.field == "mode"


@pytest.mark.parametrize("payload_type", [POLICY_PAYLOAD_TYPE, ROOT_PAYLOAD_TYPE])
def test_type_confusion_other_owner_documents_are_not_mode_switches(payload_type: str) -> None:
    owner = Owner()
    data = sign_payload(payload_type, mode_payload(mode="permissive"), owner.keys).to_bytes()
    error = _refused(owner, data)
    assert isinstance(error, MalformedInput) and error.field == "payloadType"
    policy = owner.sign_policy(policy_payload())
    _refused(owner, policy)


def test_type_confusion_a_mode_switch_is_not_a_policy() -> None:
    owner = Owner()
    data = owner.sign_mode(mode_payload(mode="permissive"))
    before = owner.store.snapshot()
    with pytest.raises(MalformedInput):
        install_policy(owner.store, data, NOW)
    # A mode payload relabelled as a policy and properly signed still is no policy.
    relabelled = sign_payload(POLICY_PAYLOAD_TYPE, mode_payload(), owner.keys).to_bytes()
    with pytest.raises(MalformedInput):
        install_policy(owner.store, relabelled, NOW)
    assert owner.store.snapshot() == before


def test_adv24_type_field_must_say_platform_mode() -> None:
    owner = Owner()
    data = owner.sign_mode(mode_payload(type="launch-policy"))
    error = _refused(owner, data)
    assert isinstance(error, MalformedInput) and error.field == "mode.type"
