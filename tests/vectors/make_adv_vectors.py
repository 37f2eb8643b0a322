"""Make the adversarial SIGSTRUCT regression inputs in this folder (checklist cases 6 and 7).

Run from the repository root:  .venv/bin/python tests/vectors/make_adv_vectors.py

Outputs (1808 bytes each):

* ``adv06_e3_cube_root_forgery.sigstruct.bin`` — Bleichenbacher'06 forgery against a freshly
  generated RSA-3072 e=3 key: S = ⌈∛EM'⌉ with EM' = 00 01 FF 00 DigestInfo‖SHA-256 ‖ garbage, so
  S³ (computed without the private key) starts with a well-formed PKCS#1 v1.5 prefix followed by
  garbage. Q1/Q2 are consistent, so only the full-EM comparison can reject it.
* ``adv06_ber_length.sigstruct.bin``, ``adv06_missing_null.sigstruct.bin``,
  ``adv06_sha1_oid.sigstruct.bin``, ``adv06_trailing_garbage.sigstruct.bin`` — the same key
  signs (raw RSA, S = m^d mod n) a wrongly encoded EM: DigestInfo with BER long-form lengths,
  without the NULL parameters, with the SHA-1 OID and digest, and a short FF run followed by
  garbage after the digest. Each is a real RSA signature of a bad encoding.
* ``adv07_short_signature.sigstruct.bin`` — a *valid* SIGSTRUCT, signed with the shared
  vector key ``generated/case1_defaults.key.pem``, whose SIGNATURE, Q1 and Q2 each have a zero
  top byte (found by varying ISVSVN; deterministic since PKCS#1 v1.5 signing is).

The forgeries' key is fresh on each run, so those files change when regenerated; what they
must do (be refused) does not. The construction functions are imported by the tests.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sgxlaunch import sigstruct
from sgxlaunch.arch import Attributes, Sigstruct

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent.parent / "shared" / "vectors"
EM_SIZE = 384

SHA256_OID = bytes.fromhex("0609608648016503040201")  # 06 09 2.16.840.1.101.3.4.2.1
SHA1_OID = bytes.fromhex("06052b0e03021a")  # 06 05 1.3.14.3.2.26
NULL = b"\x05\x00"


def der_length(n: int, *, long_form: bool = False) -> bytes:
    """DER length, or its BER long form (0x81 nn) when ``long_form``."""
    if long_form or n >= 0x80:
        return b"\x81" + bytes([n])
    return bytes([n])


def digest_info(
    digest: bytes, oid: bytes = SHA256_OID, *, null: bool = True, ber: bool = False
) -> bytes:
    """A DigestInfo: SEQUENCE { SEQUENCE { OID, [NULL] }, OCTET STRING digest }."""
    algorithm = oid + (NULL if null else b"")
    algorithm_seq = b"\x30" + der_length(len(algorithm), long_form=ber) + algorithm
    octets = b"\x04" + der_length(len(digest), long_form=ber) + digest
    body = algorithm_seq + octets
    return b"\x30" + der_length(len(body), long_form=ber) + body


def pkcs1_em(t: bytes) -> bytes:
    """EMSA-PKCS1-v1_5: 00 01 FF.. 00 T, 384 bytes."""
    return b"\x00\x01" + b"\xff" * (EM_SIZE - 3 - len(t)) + b"\x00" + t


def icbrt_ceil(x: int) -> int:
    """The smallest integer r with r³ ≥ x (x ≥ 0)."""
    if x == 0:
        return 0
    r = 1 << -(-x.bit_length() // 3)  # above the cube root
    while True:
        y = (2 * r + x // (r * r)) // 3
        if y >= r:
            break
        r = y
    while r**3 < x:
        r += 1
    while r > 0 and (r - 1) ** 3 >= x:
        r -= 1
    return r


def forgery_prefix(message: bytes) -> bytes:
    """00 01 FF 00 ‖ DigestInfo(SHA-256(message)): the part a lax verifier reads."""
    return b"\x00\x01\xff\x00" + digest_info(hashlib.sha256(message).digest())


def cube_root_forgery(message: bytes) -> int:
    """Bleichenbacher'06: S with S³ = forgery_prefix ‖ garbage (no key needed, e = 3)."""
    prefix = forgery_prefix(message)
    target = int.from_bytes(prefix + bytes(EM_SIZE - len(prefix)), "big")
    return icbrt_ceil(target)


def with_raw_signature(body: Sigstruct, n: int, s: int) -> Sigstruct:
    """``body`` carrying MODULUS n and SIGNATURE s (little-endian) with consistent Q1/Q2."""
    q1 = s * s // n
    q2 = (s**3 - q1 * s * n) // n  # the SDM's formula, written independently
    return body.replace(
        modulus=n.to_bytes(EM_SIZE, "little"),
        exponent=3,
        signature=s.to_bytes(EM_SIZE, "little"),
        q1=q1.to_bytes(EM_SIZE, "little"),
        q2=q2.to_bytes(EM_SIZE, "little"),
    )


def raw_sign(key: rsa.RSAPrivateKey, em: bytes) -> int:
    """Textbook RSA on an already encoded message: S = EM^d mod n."""
    numbers = key.private_numbers()
    return pow(int.from_bytes(em, "big"), numbers.d, numbers.public_numbers.n)


def _short_padding_with_garbage(t: bytes) -> bytes:
    """00 01 FF×8 00 T ‖ garbage: well-formed up to the digest, then bytes a lax parser skips."""
    head = b"\x00\x01" + b"\xff" * 8 + b"\x00" + t
    garbage = hashlib.sha256(b"garbage").digest() * 12
    return head + garbage[: EM_SIZE - len(head)]


def bad_encodings(message: bytes) -> dict[str, bytes]:
    """The wrongly encoded EMs of checklist case 6 (names → 384-byte EM)."""
    digest = hashlib.sha256(message).digest()
    return {
        "ber_length": pkcs1_em(digest_info(digest, ber=True)),
        "trailing_garbage": _short_padding_with_garbage(digest_info(digest)),
        "missing_null": pkcs1_em(digest_info(digest, null=False)),
        "sha1_oid": pkcs1_em(digest_info(hashlib.sha1(message).digest(), SHA1_OID)),  # noqa: S324
    }


def forgery_body() -> Sigstruct:
    """The SIGSTRUCT body the forgeries claim to sign (an enclave an attacker wants to run)."""
    return Sigstruct(
        date=0x20261126,
        attributes=Attributes(flags=0x6, xfrm=0x3),
        attributemask=Attributes(flags=0xFFFFFFFFFFFFFFFF, xfrm=0xFFFFFFFFFFFFFFFF),
        enclavehash=hashlib.sha256(b"attacker enclave").digest(),
        isvprodid=1,
        isvsvn=1,
    )


def short_signature(key: rsa.RSAPrivateKey, tries: int = 8192) -> Sigstruct:
    """A valid SIGSTRUCT whose SIGNATURE, Q1, Q2 have a zero top byte (bounded search)."""
    signer = sigstruct.RsaKeySigner(key)
    base = forgery_body()
    for isvsvn in range(tries):
        signed = sigstruct.sign(base.replace(isvsvn=isvsvn), signer)
        if signed.signature[-1] == 0 and signed.q1[-1] == 0 and signed.q2[-1] == 0:
            return signed
    raise AssertionError(f"no short signature within {tries} tries")


def case1_key() -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(
        (SHARED / "generated" / "case1_defaults.key.pem").read_bytes(), password=None
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def main() -> int:
    key = sigstruct.generate_key()
    n = key.public_key().public_numbers().n
    body = forgery_body()
    message = body.signed_bytes()
    outputs = {
        "adv06_e3_cube_root_forgery": with_raw_signature(body, n, cube_root_forgery(message))
    }
    for name, em in bad_encodings(message).items():
        outputs[f"adv06_{name}"] = with_raw_signature(body, n, raw_sign(key, em))
    outputs["adv07_short_signature"] = short_signature(case1_key())
    for name, sig in outputs.items():
        path = HERE / f"{name}.sigstruct.bin"
        path.write_bytes(sig.to_bytes())
        print(f"wrote {path.relative_to(HERE.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
