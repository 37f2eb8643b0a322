"""SIGSTRUCT signing and verification (spec §1.3, §3).

The author signs 256 bytes, ``SIGSTRUCT[0:128] ‖ SIGSTRUCT[900:1028]``, with RSA-3072, public
exponent 3, EMSA-PKCS1-v1_5 and SHA-256. MODULUS, SIGNATURE, Q1 and Q2 are stored little-endian,
with ``Q1 = ⌊S²/M⌋`` and ``Q2 = ⌊(S³ − Q1·S·M)/M⌋`` (SDM EINIT).

Signing goes through the :class:`EnclaveSigner` protocol (key objects in, never file paths), so keys
held elsewhere (an HSM, a remote service) plug in; two-step signing is :func:`signing_data`
("gendata") then :func:`assemble` ("catsig") with a signature made elsewhere.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from sgxlaunch.arch.constants import (
    HARDCODED_PKCS1_5_PADDING,
    MODULUS_SIZE,
    SIGSTRUCT_EXPONENT,
)
from sgxlaunch.arch.structs import Attributes, Sigstruct
from sgxlaunch.errors import (
    MalformedInput,
    MeasurementMismatch,
    QuotientInvalid,
    SignatureInvalid,
    SignerMismatch,
    UsageError,
)

if TYPE_CHECKING:  # cryptography is imported where a key is used (a faster CLI start)
    from cryptography.hazmat.primitives.asymmetric import rsa

SIGNING_DATA_SIZE = 256
KEY_BITS = 3072

# Fortanix sgxs-sign's defaults (oracle: ../shared/vectors/generated/case1_defaults.sig).
DEFAULT_ATTRIBUTES = Attributes(flags=0x4, xfrm=0x3)
DEFAULT_ATTRIBUTEMASK = Attributes(flags=0xFFFFFFFFFFFFFFFD, xfrm=0xFFFFFFFFFFFFFFFC)
DEFAULT_MISCSELECT = 0
DEFAULT_MISCMASK = 0xFFFFFFFF


@runtime_checkable
class EnclaveSigner(Protocol):
    """Something that holds an RSA-3072, e=3 private key and signs with it."""

    def public_key(self) -> rsa.RSAPublicKey:
        """The public half of the signing key."""
        ...

    def sign_pkcs1v15_sha256(self, message: bytes) -> bytes:
        """RSASSA-PKCS1-v1_5 with SHA-256 over ``message``; 384 bytes, big-endian."""
        ...


@dataclass(frozen=True, slots=True)
class RsaKeySigner:
    """A :class:`EnclaveSigner` over an in-memory ``cryptography`` RSA private key."""

    key: rsa.RSAPrivateKey

    def public_key(self) -> rsa.RSAPublicKey:
        return self.key.public_key()

    def sign_pkcs1v15_sha256(self, message: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        return self.key.sign(message, padding.PKCS1v15(), hashes.SHA256())


def generate_key() -> rsa.RSAPrivateKey:
    """A fresh RSA-3072 key with public exponent 3, as SGX requires."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=SIGSTRUCT_EXPONENT, key_size=KEY_BITS)


def check_signing_key(public_key: rsa.RSAPublicKey) -> None:
    """Raise :class:`UsageError` unless the key is RSA-3072 with e = 3."""
    numbers = public_key.public_numbers()
    if public_key.key_size != KEY_BITS or numbers.e != SIGSTRUCT_EXPONENT:
        raise UsageError(
            "an SGX signing key must be RSA-3072 with public exponent 3",
            detail=[f"found: RSA-{public_key.key_size}, e = {numbers.e}"],
        )


def mrsigner_of(public_key: rsa.RSAPublicKey) -> bytes:
    """MRSIGNER = SHA-256 of the 384-byte little-endian modulus (spec §2.5)."""
    return hashlib.sha256(public_key.public_numbers().n.to_bytes(MODULUS_SIZE, "little")).digest()


def quotients(s: int, n: int) -> tuple[int, int]:
    """Q1 and Q2 for signature ``s`` and modulus ``n`` (SDM EINIT)."""
    q1 = (s * s) // n
    q2 = ((s * s) % n) * s // n
    return q1, q2


def expected_em(message: bytes) -> bytes:
    """The full 384-byte EMSA-PKCS1-v1_5 encoding of SHA-256(``message``)."""
    return HARDCODED_PKCS1_5_PADDING + hashlib.sha256(message).digest()


def signing_data(body: Sigstruct) -> bytes:
    """The exact 256 bytes an author signs (two-step signing, step 1: "gendata")."""
    return body.signed_bytes()


def _with_signature(
    body: Sigstruct, public_key: rsa.RSAPublicKey, signature_be: bytes
) -> Sigstruct:
    n = public_key.public_numbers().n
    if len(signature_be) != MODULUS_SIZE:
        raise MalformedInput(
            f"an RSA-3072 signature must be {MODULUS_SIZE} bytes, got {len(signature_be)}",
            field="signature",
        )
    s = int.from_bytes(signature_be, "big")
    q1, q2 = quotients(s, n)
    if q1.bit_length() > 8 * MODULUS_SIZE or q2.bit_length() > 8 * MODULUS_SIZE:
        raise SignatureInvalid("the signature is not below the modulus", found="S >= M")
    return body.replace(
        modulus=n.to_bytes(MODULUS_SIZE, "little"),
        exponent=SIGSTRUCT_EXPONENT,
        signature=s.to_bytes(MODULUS_SIZE, "little"),
        q1=q1.to_bytes(MODULUS_SIZE, "little"),
        q2=q2.to_bytes(MODULUS_SIZE, "little"),
    )


def sign(body: Sigstruct, signer: EnclaveSigner) -> Sigstruct:
    """Sign ``body`` (its signed fields set; MODULUS etc. ignored) and verify the result.

    Raises:
        MalformedInput: the body has a non-zero reserved range or a wrong constant (a
            SIGSTRUCT strict parsing would refuse is never produced).
        UsageError: the signer's key is not RSA-3072 with e = 3.
        VerificationFailed: the signer returned a signature that does not verify.
    """
    public_key = signer.public_key()
    check_signing_key(public_key)
    body.replace(exponent=SIGSTRUCT_EXPONENT).check_strict()  # never sign what EINIT refuses
    signature = signer.sign_pkcs1v15_sha256(signing_data(body))
    signed = _with_signature(body, public_key, signature)
    verify(signed)
    return signed


def assemble(data: bytes, public_key: rsa.RSAPublicKey, signature_be: bytes) -> Sigstruct:
    """Two-step signing, step 2 ("catsig"): put a signature made elsewhere into a SIGSTRUCT.

    ``data`` is exactly what :func:`signing_data` produced; it is placed as it is (never rebuilt
    from options), the result is parsed strictly and verified.

    Raises:
        MalformedInput: ``data`` is not 256 bytes or does not form a valid SIGSTRUCT.
        UsageError: the key is not RSA-3072 with e = 3.
        VerificationFailed: the signature does not verify over ``data`` with ``public_key``.
    """
    if len(data) != SIGNING_DATA_SIZE:
        raise MalformedInput(
            f"signing data must be exactly {SIGNING_DATA_SIZE} bytes, got {len(data)}",
            field="signing-data",
        )
    check_signing_key(public_key)
    buf = bytearray(Sigstruct.SIZE)
    buf[0:128] = data[0:128]
    buf[900:1028] = data[128:256]
    buf[512:516] = SIGSTRUCT_EXPONENT.to_bytes(4, "little")  # unsigned; set by _with_signature
    body = Sigstruct.from_bytes(bytes(buf))
    signed = _with_signature(body, public_key, signature_be)
    verify(signed)
    return signed


def verify(sig: Sigstruct) -> None:
    """Verify a SIGSTRUCT's signature the way EINIT does, strictly.

    Checks, in order (SDM EINIT step 3 then step 4):

    1. EXPONENT = 3.
    2. MODULUS is a 3072-bit odd number (top bit set).
    3. S < M.
    4. Q1 = ⌊S²/M⌋ and Q2 = ⌊(S³ − Q1·S·M)/M⌋ (raises :class:`QuotientInvalid`).
    5. S³ mod M, as 384 big-endian bytes, equals the whole EMSA-PKCS1-v1_5 encoding of
       SHA-256(bytes 0..127 ‖ 900..1027); the padding is re-encoded and compared, never parsed.

    Raises:
        SignatureInvalid: checks 1-3 or 5 failed.
        QuotientInvalid: check 4 failed.
    """
    if sig.exponent != SIGSTRUCT_EXPONENT:
        raise SignatureInvalid("SIGSTRUCT.EXPONENT is not 3", expected="3", found=str(sig.exponent))
    n = sig.modulus_int
    if n.bit_length() != KEY_BITS or n % 2 == 0:
        raise SignatureInvalid(
            "SIGSTRUCT.MODULUS is not an odd 3072-bit number",
            expected="odd, 3072 bits",
            found=f"{n.bit_length()} bits, {'odd' if n % 2 else 'even'}",
        )
    s = sig.signature_int
    if s >= n:
        raise SignatureInvalid("SIGSTRUCT.SIGNATURE is not below MODULUS", found="S >= M")
    q1, q2 = quotients(s, n)
    if q1 != int.from_bytes(sig.q1, "little"):
        raise QuotientInvalid(
            "SIGSTRUCT.Q1 is not floor(S^2 / M)",
            expected=q1.to_bytes(MODULUS_SIZE, "little").hex()[:32] + "…",
            found=sig.q1.hex()[:32] + "…",
        )
    if q2 != int.from_bytes(sig.q2, "little"):
        raise QuotientInvalid(
            "SIGSTRUCT.Q2 is not floor((S^3 - Q1*S*M) / M)",
            expected=q2.to_bytes(MODULUS_SIZE, "little").hex()[:32] + "…",
            found=sig.q2.hex()[:32] + "…",
        )
    em = pow(s, SIGSTRUCT_EXPONENT, n).to_bytes(MODULUS_SIZE, "big")
    want = expected_em(sig.signed_bytes())
    if not hmac.compare_digest(em, want):
        raise SignatureInvalid(
            "SIGSTRUCT signature does not verify with the enclosed modulus",
            detail=["S^3 mod M is not the PKCS#1 v1.5 SHA-256 encoding of the signed bytes"],
        )


def check_mrenclave(sig: Sigstruct, mrenclave: bytes) -> None:
    """Raise :class:`MeasurementMismatch` unless ENCLAVEHASH equals ``mrenclave``."""
    if not hmac.compare_digest(sig.enclavehash, mrenclave):
        raise MeasurementMismatch(
            "the image's MRENCLAVE differs from SIGSTRUCT.ENCLAVEHASH",
            expected=sig.enclavehash.hex(),
            found=mrenclave.hex(),
        )


def check_mrsigner(sig: Sigstruct, mrsigner: bytes) -> None:
    """Raise :class:`SignerMismatch` unless the SIGSTRUCT's MRSIGNER equals ``mrsigner``."""
    if not hmac.compare_digest(sig.mrsigner, mrsigner):
        raise SignerMismatch(
            "the SIGSTRUCT is signed by another key",
            expected=mrsigner.hex(),
            found=sig.mrsigner.hex(),
        )
