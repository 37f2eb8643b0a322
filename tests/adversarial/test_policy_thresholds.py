"""Checklist cases 21 and 22: thresholds count distinct authorized keys; rotation needs both.

Every refused document leaves the store byte-for-byte unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import serialization

from sgxlaunch.errors import MalformedInput, Rollback, ThresholdNotMet
from sgxlaunch.policy import (
    POLICY_PAYLOAD_TYPE,
    ROOT_PAYLOAD_TYPE,
    Envelope,
    OwnerRoot,
    PublicKey,
    Signature,
    install_policy,
    install_root,
    load_state,
    sign_payload,
)
from sgxlaunch.policy._json import dumps_canonical
from tests.support.clock import LATER, NOW
from tests.support.policy import Owner, ecdsa_signer, ed25519_signer, policy_payload


def test_adv21_one_key_signing_twice_counts_once() -> None:
    owner = Owner()
    payload = policy_payload()
    one = sign_payload(POLICY_PAYLOAD_TYPE, payload, [owner.keys[0]])
    sig = one.signatures[0]
    doubled = Envelope(POLICY_PAYLOAD_TYPE, payload, (sig, sig, sig))
    before = owner.store.snapshot()
    with pytest.raises(ThresholdNotMet) as info:
        install_policy(owner.store, doubled.to_bytes(), NOW)
    assert info.value.found == "1"
    assert owner.store.snapshot() == before


def test_adv21_ecdsa_key_with_two_distinct_signatures_counts_once() -> None:
    # ECDSA signatures are randomised (and malleable): two different valid signatures by
    # the same key must still count as one key.
    key = ecdsa_signer()
    owner = Owner(keys=[key, ed25519_signer(), ed25519_signer()])
    payload = policy_payload()
    envelope = Envelope(POLICY_PAYLOAD_TYPE, payload)
    first, second = key.sign(envelope.pae()), key.sign(envelope.pae())
    assert first != second
    keyid = key.public_key.keyid
    doubled = Envelope(
        POLICY_PAYLOAD_TYPE, payload, (Signature(keyid, first), Signature(keyid, second))
    )
    before = owner.store.snapshot()
    with pytest.raises(ThresholdNotMet):
        install_policy(owner.store, doubled.to_bytes(), NOW)
    assert owner.store.snapshot() == before


def _compressed_point_spki(key: PublicKey) -> bytes:
    loaded = serialization.load_der_public_key(key.spki)
    compressed = loaded.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    uncompressed = loaded.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    # The SPKI ends with the BIT STRING holding the point; rebuild it around the compressed one.
    assert key.spki.endswith(uncompressed)
    prefix = key.spki[: -len(uncompressed)]
    # SEQUENCE { algorithm (19 bytes incl. header), BIT STRING (len+1, 0 unused bits) }
    algorithm = prefix[2:-3]
    bit_string = bytes([0x03, len(compressed) + 1, 0x00]) + compressed
    body = algorithm + bit_string
    return bytes([0x30, len(body)]) + body


def test_adv21_one_key_under_two_key_ids_is_refused_in_the_root() -> None:
    key = ecdsa_signer()
    other = ed25519_signer()
    alias_spki = _compressed_point_spki(key.public_key)
    assert alias_spki != key.public_key.spki
    # cryptography loads the compressed encoding as the same key ...
    loaded = serialization.load_der_public_key(alias_spki)
    assert PublicKey.from_key(loaded).keyid == key.public_key.keyid  # type: ignore[arg-type]
    # ... so a root listing it under its own id (sha256 of the alias SPKI) must be refused.
    doc = json.loads(
        OwnerRoot.create(
            version=1, expires=LATER, threshold=2, keys=[key.public_key, other.public_key]
        ).to_payload()
    )
    doc["keys"].append(
        {
            "keyid": hashlib.sha256(alias_spki).hexdigest(),
            "scheme": "ecdsa-p256-sha256",
            "public_key": base64.b64encode(alias_spki).decode(),
        }
    )
    with pytest.raises(MalformedInput) as info:
        OwnerRoot.from_payload(dumps_canonical(doc))
    assert "canonical" in info.value.message
    assert info.value.field == "root.keys[2].public_key"


def test_adv21_same_key_listed_twice_in_root_refused() -> None:
    key = ed25519_signer()
    doc = json.loads(
        OwnerRoot.create(version=1, expires=LATER, threshold=1, keys=[key.public_key]).to_payload()
    )
    doc["keys"].append(dict(doc["keys"][0]))
    with pytest.raises(MalformedInput) as info:
        OwnerRoot.from_payload(dumps_canonical(doc))
    assert "twice" in info.value.message


def test_adv21_unauthorized_signatures_do_not_count() -> None:
    owner = Owner()
    strangers = [ed25519_signer(), ed25519_signer()]
    envelope = sign_payload(POLICY_PAYLOAD_TYPE, policy_payload(), [owner.keys[0], *strangers])
    before = owner.store.snapshot()
    with pytest.raises(ThresholdNotMet) as info:
        install_policy(owner.store, envelope.to_bytes(), NOW)
    assert info.value.found == "1"
    assert any("not an authorized key" in line for line in info.value.detail)
    assert owner.store.snapshot() == before


def test_adv21_signature_by_authorized_key_under_wrong_keyid_does_not_count() -> None:
    owner = Owner()
    payload = policy_payload()
    envelope = Envelope(POLICY_PAYLOAD_TYPE, payload)
    sig0 = owner.keys[0].sign(envelope.pae())
    # key 0's signature presented as key 1's: it must not verify under key 1.
    forged = Envelope(
        POLICY_PAYLOAD_TYPE,
        payload,
        (
            Signature(owner.keys[0].public_key.keyid, sig0),
            Signature(owner.keys[1].public_key.keyid, sig0),
        ),
    )
    with pytest.raises(ThresholdNotMet):
        install_policy(owner.store, forged.to_bytes(), NOW)


def test_adv21_threshold_met_by_distinct_keys_accepted() -> None:
    owner = Owner()
    state = owner.install(policy_payload())
    assert state.policy is not None


def test_adv22_rotation_signed_only_by_new_keys_rejected() -> None:
    owner = Owner()
    new_keys = [ed25519_signer() for _ in range(3)]
    rotation = owner.root(version=2, keys=new_keys, signers=new_keys)
    before = owner.store.snapshot()
    with pytest.raises(ThresholdNotMet) as info:
        install_root(owner.store, rotation, NOW)
    assert "current keys" in info.value.message
    assert owner.store.snapshot() == before


def test_adv22_rotation_signed_only_by_old_keys_rejected() -> None:
    owner = Owner()
    new_keys = [ed25519_signer() for _ in range(3)]
    rotation = owner.root(version=2, keys=new_keys, signers=owner.keys)
    before = owner.store.snapshot()
    with pytest.raises(ThresholdNotMet) as info:
        install_root(owner.store, rotation, NOW)
    assert "its own keys" in info.value.message
    assert owner.store.snapshot() == before


def test_adv22_rotation_below_threshold_on_either_side_rejected() -> None:
    owner = Owner()
    new_keys = [ed25519_signer() for _ in range(3)]
    before = owner.store.snapshot()
    for signers in ([owner.keys[0], *new_keys[:2]], [*owner.keys[:2], new_keys[0]]):
        rotation = owner.root(version=2, keys=new_keys, signers=signers)
        with pytest.raises(ThresholdNotMet):
            install_root(owner.store, rotation, NOW)
        assert owner.store.snapshot() == before


def test_adv22_rotation_signed_by_old_and_new_thresholds_accepted() -> None:
    owner = Owner()
    owner.install(policy_payload(version=4))
    new_keys = [ed25519_signer() for _ in range(3)]
    rotation = owner.root(version=2, keys=new_keys, signers=[*owner.keys[:2], *new_keys[:2]])
    state, _ = install_root(owner.store, rotation, NOW)
    assert set(state.root.keys) == {k.public_key.keyid for k in new_keys}
    # The old policy was signed by keys no longer in the root: kept as the floor, not in force.
    assert not state.policy_in_force
    assert not load_state(owner.store).policy_in_force
    owner.keys = new_keys
    changed = policy_payload(version=4, allow=[])
    with pytest.raises(Rollback):
        install_policy(owner.store, owner.sign_policy(changed), NOW)
    # The same payload re-signed by the new keys puts it back in force.
    state = owner.install(policy_payload(version=4))
    assert state.policy_in_force
    state = owner.install(policy_payload(version=5))
    assert state.policy_in_force


def test_adv22_old_keys_no_longer_sign_policies_after_rotation() -> None:
    owner = Owner()
    old_keys = owner.keys
    new_keys = [ed25519_signer() for _ in range(3)]
    install_root(
        owner.store,
        owner.root(version=2, keys=new_keys, signers=[*old_keys[:2], *new_keys[:2]]),
        NOW,
    )
    before = owner.store.snapshot()
    with pytest.raises(ThresholdNotMet):
        install_policy(owner.store, owner.sign_policy(policy_payload(), old_keys), NOW)
    assert owner.store.snapshot() == before


def test_adv22_root_envelope_is_not_accepted_as_a_policy_and_vice_versa() -> None:
    owner = Owner()
    before = owner.store.snapshot()
    with pytest.raises(MalformedInput):
        install_policy(owner.store, owner.root(version=2), NOW)
    policy_as_root = sign_payload(ROOT_PAYLOAD_TYPE, policy_payload(), owner.keys).to_bytes()
    with pytest.raises(MalformedInput):
        install_root(owner.store, policy_as_root, NOW)
    assert owner.store.snapshot() == before
