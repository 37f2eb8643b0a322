"""Policy keys (three schemes, canonical SPKI, key ids) and DSSE envelopes."""

from __future__ import annotations

import hashlib
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sgxlaunch.errors import MalformedInput, SignatureInvalid, ThresholdNotMet, UsageError
from sgxlaunch.policy import (
    POLICY_PAYLOAD_TYPE,
    Envelope,
    PolicySigner,
    PrivateKeySigner,
    PublicKey,
    pae,
    sign_payload,
    verify_threshold,
)
from tests.support.policy import ecdsa_signer, ed25519_signer, rsa_signer


def test_pae_matches_the_dsse_specification_example() -> None:
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


@pytest.mark.parametrize(
    ("make", "scheme"),
    [
        (ed25519_signer, "ed25519"),
        (ecdsa_signer, "ecdsa-p256-sha256"),
        (rsa_signer, "rsa-pss-sha256"),
    ],
)
def test_each_scheme_signs_and_verifies_and_rejects_other_messages(
    make: object, scheme: str
) -> None:
    signer = make()  # type: ignore[operator]
    assert isinstance(signer, PolicySigner)
    key = signer.public_key
    assert key.scheme == scheme
    assert key.keyid == hashlib.sha256(key.spki).hexdigest()
    assert key.keyid == key.keyid.lower() and len(key.keyid) == 64
    signature = signer.sign(b"message")
    key.verify(signature, b"message")
    with pytest.raises(SignatureInvalid):
        key.verify(signature, b"messagf")
    with pytest.raises(SignatureInvalid):
        key.verify(signature[:-1] + bytes([signature[-1] ^ 1]), b"message")
    with pytest.raises(SignatureInvalid):
        key.verify(b"", b"message")
    assert PublicKey.from_spki(key.spki) == key
    assert PublicKey.from_pem(key.to_pem()) == key


def test_ecdsa_signature_is_der() -> None:
    signer = ecdsa_signer()
    signature = signer.sign(b"m")
    assert signature[0] == 0x30 and signature[1] == len(signature) - 2
    # A raw r||s signature is not accepted.
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(signature)
    with pytest.raises(SignatureInvalid):
        signer.public_key.verify(r.to_bytes(32, "big") + s.to_bytes(32, "big"), b"m")


def test_small_rsa_wrong_exponent_and_other_curves_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(MalformedInput, match="3072"):
        PublicKey.from_key(small.public_key())
    with pytest.raises(UsageError):
        PrivateKeySigner(small)
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(MalformedInput, match="P-256"):
        PublicKey.from_key(p384.public_key())
    spki = p384.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(MalformedInput):
        PublicKey.from_spki(spki)


def test_spki_with_wrong_declared_scheme_or_garbage_refused() -> None:
    key = ed25519_signer().public_key
    with pytest.raises(MalformedInput, match="says"):
        PublicKey.from_spki(key.spki, scheme="rsa-pss-sha256")
    for bad in (b"", key.spki[:-1], key.spki + b"\x00", b"\x30" * 3000):
        with pytest.raises(MalformedInput):
            PublicKey.from_spki(bad)


def test_envelope_round_trip_and_exact_payload_bytes() -> None:
    signers = [ed25519_signer(), ed25519_signer()]
    payload = b'{"odd":   "spacing"}\n'
    envelope = sign_payload(POLICY_PAYLOAD_TYPE, payload, signers)
    parsed = Envelope.from_bytes(envelope.to_bytes())
    assert parsed == envelope
    assert parsed.payload == payload
    keys = {s.public_key.keyid: s.public_key for s in signers}
    assert verify_threshold(parsed, keys, 2, role="t") == frozenset(keys)


def test_envelope_every_truncation_and_trailing_bytes_refused() -> None:
    data = sign_payload(POLICY_PAYLOAD_TYPE, b"{}", [ed25519_signer()]).to_bytes()
    Envelope.from_bytes(data)
    for length in range(len(data) - 1):  # the last byte is a newline: optional whitespace
        with pytest.raises(MalformedInput):
            Envelope.from_bytes(data[:length])
    for trailer in (b"x", b"{}", b"\x00"):
        with pytest.raises(MalformedInput):
            Envelope.from_bytes(data + trailer)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("signatures"),
        lambda d: d.update(payloadType=""),
        lambda d: d.update(payloadType=7),
        lambda d: d.update(signatures={}),
        lambda d: d["signatures"][0].update(keyid=d["signatures"][0]["keyid"].upper()),
        lambda d: d["signatures"][0].update(keyid="ab"),
        lambda d: d["signatures"][0].pop("sig"),
        lambda d: d["signatures"][0].update(extra=1),
        lambda d: d["signatures"].append("sig"),
    ],
)
def test_envelope_structure_errors_refused(mutate: object) -> None:
    doc = json.loads(sign_payload(POLICY_PAYLOAD_TYPE, b"{}", [ed25519_signer()]).to_bytes())
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(MalformedInput):
        Envelope.from_bytes(json.dumps(doc).encode())


def test_threshold_zero_is_a_usage_error_and_unsigned_fails() -> None:
    signer = ed25519_signer()
    envelope = Envelope(POLICY_PAYLOAD_TYPE, b"{}")
    keys = {signer.public_key.keyid: signer.public_key}
    with pytest.raises(UsageError):
        verify_threshold(envelope, keys, 0, role="t")
    with pytest.raises(ThresholdNotMet) as info:
        verify_threshold(envelope, keys, 1, role="t")
    assert info.value.found == "0"


def test_signed_by_replaces_a_keys_earlier_signature() -> None:
    signer = ecdsa_signer()
    once = Envelope(POLICY_PAYLOAD_TYPE, b"{}").signed_by(signer)
    twice = once.signed_by(signer)
    assert len(twice.signatures) == 1
