"""Owner policy-signing keys: public keys with stable ids, and the :class:`PolicySigner` protocol.

Three schemes are accepted (nothing else):

* ``ed25519`` — Ed25519 (RFC 8032), 64-byte signatures;
* ``ecdsa-p256-sha256`` — ECDSA over NIST P-256 with SHA-256, DER-encoded signatures;
* ``rsa-pss-sha256`` — RSASSA-PSS, SHA-256, MGF1-SHA-256, 32-byte salt, modulus ≥ 3072 bits,
  public exponent 65537.

A key's id is the lower-case hex SHA-256 of its SubjectPublicKeyInfo DER. Public keys are
accepted only in their canonical DER encoding (the encoding ``cryptography`` writes back, e.g.
an uncompressed P-256 point), so one key cannot appear under two ids.

Private keys never enter the core as files: anything that implements :class:`PolicySigner` plugs in
(:class:`PrivateKeySigner` wraps an in-memory ``cryptography`` key; the CLI loads key files at
the edge).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from sgxlaunch.errors import MalformedInput, SignatureInvalid, UsageError

ED25519 = "ed25519"
ECDSA_P256 = "ecdsa-p256-sha256"
RSA_PSS = "rsa-pss-sha256"
SCHEMES = (ED25519, ECDSA_P256, RSA_PSS)

RSA_MIN_BITS = 3072
RSA_EXPONENT = 65537
PSS_SALT_LENGTH = 32
MAX_SPKI_SIZE = 2048
"""Largest SubjectPublicKeyInfo accepted (RSA-8192 is about 1 060 bytes)."""
MAX_SIGNATURE_SIZE = 1024

PublicKeyObject = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
PrivateKeyObject = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_LENGTH)


def _scheme_of(key: PublicKeyObject) -> str:
    """The scheme name for a ``cryptography`` public key, or :class:`MalformedInput`."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ED25519
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise MalformedInput(f"ECDSA keys must be on P-256, found {key.curve.name}")
        return ECDSA_P256
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < RSA_MIN_BITS:
            raise MalformedInput(
                f"RSA keys must have at least {RSA_MIN_BITS} bits, found {key.key_size}"
            )
        if key.public_numbers().e != RSA_EXPONENT:
            raise MalformedInput(f"RSA keys must have public exponent {RSA_EXPONENT}")
        return RSA_PSS
    raise MalformedInput(f"unsupported key type {type(key).__name__}")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class PublicKey:
    """An owner policy-signing public key.

    Attributes:
        scheme: one of :data:`SCHEMES`.
        spki: the canonical SubjectPublicKeyInfo DER.
        keyid: lower-case hex SHA-256 of ``spki``.
    """

    scheme: str
    spki: bytes
    keyid: str
    _key: PublicKeyObject = field(repr=False, compare=False)

    @classmethod
    def from_key(cls, key: PublicKeyObject) -> PublicKey:
        """Wrap a ``cryptography`` public key.

        Raises:
            MalformedInput: the key type, curve, size or exponent is not accepted.
        """
        scheme = _scheme_of(key)
        spki = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(scheme, spki, hashlib.sha256(spki).hexdigest(), key)

    @classmethod
    def from_spki(cls, der: bytes, *, scheme: str | None = None) -> PublicKey:
        """Parse a SubjectPublicKeyInfo DER, demanding its canonical encoding.

        Checks, in order: size cap; DER parses as a public key; the key is of an accepted
        scheme (and ``scheme`` matches it, when given); re-encoding gives the same bytes.

        Raises:
            MalformedInput: any check fails.
        """
        if len(der) > MAX_SPKI_SIZE:
            raise MalformedInput(f"public key is larger than {MAX_SPKI_SIZE} bytes")
        try:
            loaded = serialization.load_der_public_key(der)
        except (ValueError, UnsupportedAlgorithm):
            raise MalformedInput("public key is not a valid SubjectPublicKeyInfo DER") from None
        if not isinstance(
            loaded, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
        ):
            raise MalformedInput(f"unsupported public key type {type(loaded).__name__}")
        key = cls.from_key(loaded)
        if scheme is not None and scheme != key.scheme:
            raise MalformedInput(f"key is {key.scheme}, but the document says {scheme}")
        if key.spki != der:
            raise MalformedInput(
                "public key is not in canonical DER (one key must have one id)",
                detail=[f"canonical key id: {key.keyid}"],
            )
        return key

    @classmethod
    def from_pem(cls, pem: bytes) -> PublicKey:
        """Parse a PEM ``PUBLIC KEY`` block.

        Raises:
            MalformedInput: it is not a PEM public key of an accepted scheme.
        """
        try:
            loaded = serialization.load_pem_public_key(pem)
        except (ValueError, UnsupportedAlgorithm):
            raise MalformedInput("not a PEM public key") from None
        if not isinstance(
            loaded, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
        ):
            raise MalformedInput(f"unsupported public key type {type(loaded).__name__}")
        return cls.from_key(loaded)

    def to_pem(self) -> bytes:
        """The key as a PEM ``PUBLIC KEY`` block."""
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, signature: bytes, message: bytes) -> None:
        """Verify ``signature`` over ``message`` under this key's scheme.

        Raises:
            SignatureInvalid: the signature does not verify (or is absurdly long).
        """
        if len(signature) > MAX_SIGNATURE_SIZE:
            raise SignatureInvalid(f"signature by key {self.keyid[:16]} is too long")
        try:
            key = self._key
            if isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(signature, message)
            elif isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            else:
                key.verify(signature, message, _pss(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            raise SignatureInvalid(
                f"{self.scheme} signature by key {self.keyid[:16]} does not verify"
            ) from None


@runtime_checkable
class PolicySigner(Protocol):
    """Something that holds an owner policy-signing private key and signs with it."""

    @property
    def public_key(self) -> PublicKey:
        """The public half, with its key id."""
        ...

    def sign(self, message: bytes) -> bytes:
        """Sign ``message`` under the key's scheme (see the module docstring)."""
        ...


class PrivateKeySigner:
    """A :class:`PolicySigner` over an in-memory ``cryptography`` private key."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: PrivateKeyObject) -> None:
        if not isinstance(
            key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
        ):
            raise UsageError(f"unsupported private key type {type(key).__name__}")
        try:
            self._public = PublicKey.from_key(key.public_key())
        except MalformedInput as exc:
            raise UsageError(f"cannot sign policy with this key: {exc.message}") from None
        self._key = key

    @property
    def public_key(self) -> PublicKey:
        return self._public

    @property
    def private_key(self) -> PrivateKeyObject:
        """The wrapped key (for the edge that writes key files)."""
        return self._key

    def sign(self, message: bytes) -> bytes:
        key = self._key
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(message)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(message, ec.ECDSA(hashes.SHA256()))
        return key.sign(message, _pss(), hashes.SHA256())
