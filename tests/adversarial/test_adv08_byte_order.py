"""Checklist case 8: MODULUS/SIGNATURE written big-endian are rejected; the Linux selftest
KAT reproduces MRSIGNER (SHA-256 of the little-endian modulus)."""

from __future__ import annotations

import hashlib

import pytest

from sgxlaunch import sigstruct
from sgxlaunch.arch import Sigstruct
from sgxlaunch.errors import SignatureInvalid, VerificationFailed
from tests.conftest import shared_vectors, sigstruct_vectors
from tests.support.keys import rsa_key

VECTORS = [
    "generated/case1_defaults.sig",
    "intel_linux_sgx/le_prod_css_history/le_prod_css@9fafc27e8f94.bin",
    "kselftest/ksft_test_encl.sigstruct.bin",
]


def _le(value: int) -> bytes:
    return value.to_bytes(384, "little")


def _recomputed(sig: Sigstruct) -> Sigstruct:
    """Q1/Q2 made consistent with whatever MODULUS/SIGNATURE hold (when they fit)."""
    n, s = sig.modulus_int, sig.signature_int
    if n == 0:
        return sig
    q1, q2 = s * s // n, (s * s % n) * s // n
    if q1 >= 1 << 3072 or q2 >= 1 << 3072:
        return sig
    return sig.replace(q1=_le(q1), q2=_le(q2))


CASES = {
    "modulus": lambda sig: sig.replace(modulus=sig.modulus[::-1]),
    "signature": lambda sig: sig.replace(signature=sig.signature[::-1]),
    "both": lambda sig: sig.replace(modulus=sig.modulus[::-1], signature=sig.signature[::-1]),
    "all-four": lambda sig: sig.replace(
        modulus=sig.modulus[::-1], signature=sig.signature[::-1], q1=sig.q1[::-1], q2=sig.q2[::-1]
    ),
}


@pytest.mark.parametrize("path", VECTORS)
@pytest.mark.parametrize("what", list(CASES))
def test_adv08_big_endian_fields_rejected(path: str, what: str) -> None:
    sig = Sigstruct.from_bytes((shared_vectors() / path).read_bytes())
    swapped = CASES[what](sig)
    with pytest.raises(VerificationFailed):
        sigstruct.verify(Sigstruct.from_bytes(swapped.to_bytes()))
    # With Q1/Q2 made consistent, the signature check itself must refuse it.
    with pytest.raises(SignatureInvalid):
        sigstruct.verify(_recomputed(swapped))


def test_adv08_kselftest_kat_reproduces_mrsigner() -> None:
    facts = dict(sigstruct_vectors())["kselftest/ksft_test_encl.sigstruct.bin"]
    key = rsa_key("owner-le")  # kselftest/sign_key.pem
    n = key.public_key().public_numbers().n
    recorded = bytes.fromhex(facts["mrsigner"])
    assert sigstruct.mrsigner_of(key.public_key()) == recorded
    assert hashlib.sha256(n.to_bytes(384, "big")).digest() != recorded
    sig = Sigstruct.from_bytes(
        (shared_vectors() / "kselftest" / "ksft_test_encl.sigstruct.bin").read_bytes()
    )
    assert sig.modulus == n.to_bytes(384, "little")
    assert sig.mrsigner == recorded
    assert sig.enclavehash == bytes.fromhex(facts["mrenclave"])
    sigstruct.verify(sig)


def test_adv08_signature_is_stored_little_endian() -> None:
    key = rsa_key("le")  # the key of generated/case1_defaults
    sig = Sigstruct.from_bytes((shared_vectors() / VECTORS[0]).read_bytes())
    signature_be = sigstruct.RsaKeySigner(key).sign_pkcs1v15_sha256(sig.signed_bytes())
    assert sig.signature == signature_be[::-1]
