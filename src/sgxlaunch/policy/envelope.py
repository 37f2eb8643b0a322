"""DSSE envelopes: a typed payload, carried as exact bytes, with signatures over its PAE.

Wire form (Dead Simple Signing Envelope, v1)::

    {"payloadType": "<media type>", "payload": "<base64>",
     "signatures": [{"keyid": "<hex sha256 of SPKI DER>", "sig": "<base64>"}, ...]}

What a key signs is the pre-authentication encoding
``PAE = "DSSEv1" SP len(type) SP type SP len(payload) SP payload`` of the *exact* payload bytes;
a verifier never re-serialises the payload, so a re-formatted document no longer verifies.
The envelope is parsed strictly (unknown fields refused, base64 canonical) and
:func:`verify_threshold` counts **distinct authorized keys**, never signatures.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sgxlaunch.errors import MalformedInput, SignatureInvalid, ThresholdNotMet, UsageError
from sgxlaunch.policy import _json
from sgxlaunch.policy.keys import MAX_SIGNATURE_SIZE, PolicySigner, PublicKey

MAX_PAYLOAD_SIZE = 64 << 20
"""Largest payload (a launch policy) accepted: 64 MiB."""
MAX_ENVELOPE_SIZE = (MAX_PAYLOAD_SIZE * 4) // 3 + (1 << 20)
"""Largest envelope accepted: the base64 of the largest payload plus room for signatures."""
MAX_SIGNATURES = 64
"""Most signature entries an envelope may carry (bounds the verification work)."""

_KEYID_LEN = 64
_HEX_LOWER = frozenset("0123456789abcdef")


def pae(payload_type: str, payload: bytes) -> bytes:
    """The DSSE v1 pre-authentication encoding of ``payload`` — the bytes that are signed."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature entry: the signer's key id and the raw signature bytes."""

    keyid: str
    sig: bytes


@dataclass(frozen=True, slots=True)
class Envelope:
    """A DSSE envelope (parsed; the payload is kept as the exact bytes that were signed)."""

    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...] = ()

    @classmethod
    def from_bytes(cls, data: bytes, *, max_size: int = MAX_ENVELOPE_SIZE) -> Envelope:
        """Parse an envelope strictly.

        Checks, in order: size ≤ ``max_size`` (before any parsing); strict JSON (see
        :func:`~sgxlaunch.policy._json.loads_strict`); exactly the fields ``payloadType``,
        ``payload``, ``signatures``; payload canonical base64 within
        :data:`MAX_PAYLOAD_SIZE`; at most :data:`MAX_SIGNATURES` entries, each exactly
        ``keyid`` (64 lower-case hex digits) and ``sig`` (canonical base64).

        Raises:
            MalformedInput: any check fails (``field`` names the place).
        """
        if len(data) > max_size:
            raise MalformedInput(
                f"envelope is {len(data)} bytes, more than the {max_size}-byte limit",
                field="envelope",
            )
        doc = _json.expect_object(_json.loads_strict(data, what="envelope"), "envelope")
        _json.check_keys(doc, required=("payloadType", "payload", "signatures"), field="envelope")
        payload_type = _json.get_str(doc, "payloadType", "envelope")
        if not payload_type or len(payload_type) > 256 or not payload_type.isascii():
            raise MalformedInput("envelope.payloadType is not a media type", field="payloadType")
        max_b64 = ((MAX_PAYLOAD_SIZE + 2) // 3) * 4
        payload = _json.get_b64(doc, "payload", "envelope", max_len=max_b64)
        entries = _json.expect_list(doc["signatures"], "envelope.signatures")
        if len(entries) > MAX_SIGNATURES:
            raise MalformedInput(
                f"envelope carries {len(entries)} signatures, more than {MAX_SIGNATURES}",
                field="envelope.signatures",
            )
        signatures = []
        for index, entry in enumerate(entries):
            name = f"envelope.signatures[{index}]"
            item = _json.expect_object(entry, name)
            _json.check_keys(item, required=("keyid", "sig"), field=name)
            keyid = _json.get_str(item, "keyid", name)
            if len(keyid) != _KEYID_LEN or not set(keyid) <= _HEX_LOWER:
                raise MalformedInput(
                    f"{name}.keyid must be 64 lower-case hex digits", field=f"{name}.keyid"
                )
            max_sig = ((MAX_SIGNATURE_SIZE + 2) // 3) * 4
            sig = _json.get_b64(item, "sig", name, max_len=max_sig)
            signatures.append(Signature(keyid, sig))
        return cls(payload_type, payload, tuple(signatures))

    def to_bytes(self) -> bytes:
        """The envelope as JSON (the payload travels as base64 of its exact bytes)."""
        return _json.dumps_canonical(
            {
                "payloadType": self.payload_type,
                "payload": base64.b64encode(self.payload).decode("ascii"),
                "signatures": [
                    {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                    for s in self.signatures
                ],
            }
        )

    def pae(self) -> bytes:
        """The bytes every signature in this envelope must cover."""
        return pae(self.payload_type, self.payload)

    def signed_by(self, signer: PolicySigner) -> Envelope:
        """A copy with ``signer``'s signature added (replacing any earlier one by the same key).

        Raises:
            UsageError: the envelope already holds :data:`MAX_SIGNATURES` signatures.
        """
        keyid = signer.public_key.keyid
        kept = tuple(s for s in self.signatures if s.keyid != keyid)
        if len(kept) >= MAX_SIGNATURES:
            raise UsageError(f"an envelope holds at most {MAX_SIGNATURES} signatures")
        sig = signer.sign(self.pae())
        return Envelope(self.payload_type, self.payload, (*kept, Signature(keyid, sig)))


def sign_payload(payload_type: str, payload: bytes, signers: Iterable[PolicySigner]) -> Envelope:
    """A new envelope over ``payload`` signed by each of ``signers``."""
    envelope = Envelope(payload_type, payload)
    for signer in signers:
        envelope = envelope.signed_by(signer)
    return envelope


def check_payload_type(envelope: Envelope, expected: str) -> None:
    """Refuse an envelope whose payload type is not ``expected``.

    Raises:
        MalformedInput: the payload type differs (a root is not a policy and vice versa).
    """
    if envelope.payload_type != expected:
        raise MalformedInput(
            f"envelope carries {envelope.payload_type!r}, expected {expected!r}",
            field="payloadType",
        )


def verify_threshold(
    envelope: Envelope,
    keys: Mapping[str, PublicKey],
    threshold: int,
    *,
    role: str,
) -> frozenset[str]:
    """Check that at least ``threshold`` distinct authorized keys signed the envelope's PAE.

    Checks, in order, for each signature entry: its key id is one of ``keys`` (others are
    ignored); that key has not already been counted (a key that signs twice, or whose
    signature is repeated, counts once); the signature verifies over the PAE of the exact
    payload bytes. Keys are counted by their canonical SPKI, so one key listed under two ids
    would still count once. Verification stops as soon as the threshold is reached.

    Args:
        envelope: the parsed envelope.
        keys: authorized keys by key id.
        threshold: how many distinct keys must have signed (≥ 1).
        role: a name for the error message (``"owner root"``, ``"launch policy"``).

    Returns:
        The key ids that were counted.

    Raises:
        UsageError: ``threshold`` < 1 (a zero threshold would accept anything).
        ThresholdNotMet: fewer than ``threshold`` distinct authorized keys signed validly.
    """
    if threshold < 1:
        raise UsageError("a signature threshold must be at least 1")
    message = envelope.pae()
    counted: dict[bytes, str] = {}
    notes: list[str] = []
    for entry in envelope.signatures:
        key = keys.get(entry.keyid)
        if key is None:
            notes.append(f"key {entry.keyid[:16]}: not an authorized key, ignored")
            continue
        if key.spki in counted:
            notes.append(f"key {entry.keyid[:16]}: already counted, ignored")
            continue
        try:
            key.verify(entry.sig, message)
        except SignatureInvalid as exc:
            notes.append(f"key {entry.keyid[:16]}: {exc.message}")
            continue
        counted[key.spki] = key.keyid
        if len(counted) >= threshold:
            return frozenset(counted.values())
    raise ThresholdNotMet(
        f"{role}: {len(counted)} of the required {threshold} distinct authorized keys signed",
        expected=f"{threshold} valid signatures by distinct authorized keys",
        found=f"{len(counted)}",
        detail=notes,
    )
