"""Checklist cases 21 and 22 for platform-mode documents: a mode switch without the threshold.

Switching the platform to ``owner`` mode, back to ``permissive`` or to another launch-enclave
signer needs a threshold of **distinct** keys of the **current** owner root. Every refused
document leaves the store byte-for-byte unchanged.
"""

from __future__ import annotations

import pytest

from sgxlaunch.errors import MalformedInput, ThresholdNotMet
from sgxlaunch.policy import (
    MODE_KEY,
    MODE_PAYLOAD_TYPE,
    POLICY_PAYLOAD_TYPE,
    Envelope,
    Signature,
    install_mode,
    install_root,
    load_state,
    sign_payload,
)
from tests.support.clock import NOW
from tests.support.policy import OTHER_LE_SIGNER, Owner, ecdsa_signer, ed25519_signer, mode_payload


def _refused(owner: Owner, data: bytes) -> ThresholdNotMet:
    before = owner.store.snapshot()
    with pytest.raises(ThresholdNotMet) as info:
        install_mode(owner.store, data, NOW)
    assert owner.store.snapshot() == before
    return info.value


def test_adv21_switch_to_permissive_signed_by_one_key_of_two_of_three_rejected() -> None:
    owner = Owner()
    owner.install_mode(mode_payload(version=1))
    error = _refused(
        owner, owner.sign_mode(mode_payload(version=2, mode="permissive"), [owner.keys[0]])
    )
    assert error.found == "1"
    assert "platform-mode document: 1 of the required 2" in error.message
    assert load_state(owner.store).mode.mode == "owner"  # type: ignore[union-attr]


def test_adv21_unsigned_mode_switch_rejected() -> None:
    owner = Owner()
    unsigned = sign_payload(MODE_PAYLOAD_TYPE, mode_payload(mode="permissive"), []).to_bytes()
    assert _refused(owner, unsigned).found == "0"


def test_adv21_one_key_signing_twice_counts_once() -> None:
    owner = Owner()
    payload = mode_payload(mode="permissive")
    sig = sign_payload(MODE_PAYLOAD_TYPE, payload, [owner.keys[0]]).signatures[0]
    doubled = Envelope(MODE_PAYLOAD_TYPE, payload, (sig, sig, sig))
    assert _refused(owner, doubled.to_bytes()).found == "1"


def test_adv21_ecdsa_key_with_two_distinct_signatures_counts_once() -> None:
    key = ecdsa_signer()
    owner = Owner(keys=[key, ed25519_signer(), ed25519_signer()])
    payload = mode_payload(le_mrsigner=OTHER_LE_SIGNER.hex())
    envelope = Envelope(MODE_PAYLOAD_TYPE, payload)
    first, second = key.sign(envelope.pae()), key.sign(envelope.pae())
    assert first != second
    keyid = key.public_key.keyid
    doubled = Envelope(
        MODE_PAYLOAD_TYPE, payload, (Signature(keyid, first), Signature(keyid, second))
    )
    assert _refused(owner, doubled.to_bytes()).found == "1"


def test_adv21_one_key_under_two_key_ids_counts_once() -> None:
    # The same signature presented under a second key id: either the id is not the root's
    # (ignored) or it is another root key's (the signature does not verify under that key).
    owner = Owner()
    payload = mode_payload(mode="permissive")
    envelope = Envelope(MODE_PAYLOAD_TYPE, payload)
    sig0 = owner.keys[0].sign(envelope.pae())
    alias = "ab" * 32
    for second_id in (alias, owner.keys[1].public_key.keyid, owner.keys[2].public_key.keyid):
        forged = Envelope(
            MODE_PAYLOAD_TYPE,
            payload,
            (Signature(owner.keys[0].public_key.keyid, sig0), Signature(second_id, sig0)),
        )
        assert _refused(owner, forged.to_bytes()).found == "1"


def test_adv21_signatures_by_keys_outside_the_root_do_not_count() -> None:
    owner = Owner()
    strangers = [ed25519_signer(), ed25519_signer(), ed25519_signer()]
    data = owner.sign_mode(mode_payload(mode="permissive"), [owner.keys[0], *strangers])
    error = _refused(owner, data)
    assert error.found == "1"
    assert any("not an authorized key" in line for line in error.detail)


def test_adv21_policy_signatures_do_not_sign_a_mode_switch() -> None:
    # Signatures made for a launch-policy envelope over the same bytes do not carry over:
    # the payload type is part of what is signed (PAE).
    owner = Owner()
    payload = mode_payload(mode="permissive")
    as_policy = sign_payload(POLICY_PAYLOAD_TYPE, payload, owner.keys[:2])
    relabelled = Envelope(MODE_PAYLOAD_TYPE, payload, as_policy.signatures)
    assert _refused(owner, relabelled.to_bytes()).found == "0"
    before = owner.store.snapshot()
    with pytest.raises(MalformedInput) as info:
        install_mode(owner.store, as_policy.to_bytes(), NOW)
    assert info.value.field == "payloadType"
    assert owner.store.snapshot() == before


def test_adv22_mode_signed_by_rotated_out_root_keys_rejected_after_rotation() -> None:
    owner = Owner()
    old_keys = owner.keys
    new_keys = [ed25519_signer() for _ in range(3)]
    rotation = owner.root(version=2, keys=new_keys, signers=[*old_keys[:2], *new_keys[:2]])
    # Signed by the old owner before the rotation, presented afterwards.
    prepared = owner.sign_mode(mode_payload(mode="permissive"), old_keys)
    install_root(owner.store, rotation, NOW)
    error = _refused(owner, prepared)
    assert error.found == "0"
    # Mixed: one old key and one new key is one authorized key.
    mixed = owner.sign_mode(mode_payload(mode="permissive"), [old_keys[0], new_keys[0]])
    assert _refused(owner, mixed).found == "1"
    # The new owner's threshold is accepted.
    owner.keys = new_keys
    state = owner.install_mode(mode_payload(mode="permissive"))
    assert state.mode_in_force


def test_adv22_rotated_out_keys_cannot_bring_back_their_old_mode() -> None:
    # A mode installed under the old root is no longer in force after the rotation; its
    # old signatures cannot put it back (it needs the new keys).
    owner = Owner()
    old_envelope = owner.sign_mode(mode_payload(version=3, mode="permissive"))
    install_mode(owner.store, old_envelope, NOW)
    new_keys = [ed25519_signer() for _ in range(3)]
    rotation = owner.root(version=2, keys=new_keys, signers=[*owner.keys[:2], *new_keys[:2]])
    install_root(owner.store, rotation, NOW)
    assert not load_state(owner.store).mode_in_force
    _refused(owner, old_envelope)
    assert owner.store.get(MODE_KEY) == old_envelope
    assert not load_state(owner.store).mode_in_force


def test_adv21_threshold_of_distinct_current_keys_accepted() -> None:
    owner = Owner()
    for signers in (owner.keys[:2], owner.keys[1:], [owner.keys[2], owner.keys[0]]):
        state = load_state(owner.store)
        state.verify_mode(owner.sign_mode(mode_payload(mode="permissive"), signers), NOW)
