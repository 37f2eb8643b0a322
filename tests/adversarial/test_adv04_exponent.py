"""Checklist case 4: EXPONENT ≠ 3 (and the key shapes §1 lists: modulus even, short, zero)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sgxlaunch import sigstruct
from sgxlaunch.arch import Sigstruct
from sgxlaunch.errors import MalformedInput, SignatureInvalid, UsageError
from tests.conftest import shared_vectors

VECTOR = "generated/case1_defaults.sig"
EXPONENTS = [0, 1, 2, 5, 17, 65537, 0x80000003, 0xFFFFFFFF]


def _data() -> bytes:
    return (shared_vectors() / VECTOR).read_bytes()


@pytest.mark.parametrize("exponent", EXPONENTS)
def test_adv04_exponent_not_three_rejected(exponent: int) -> None:
    data = bytearray(_data())
    data[512:516] = exponent.to_bytes(4, "little")
    with pytest.raises(MalformedInput) as info:
        Sigstruct.from_bytes(bytes(data))
    assert info.value.field == "sigstruct.exponent"
    assert info.value.offset == 512
    raw = Sigstruct.from_bytes_raw(bytes(data))
    assert raw.exponent == exponent
    with pytest.raises(SignatureInvalid):
        sigstruct.verify(raw)


def test_adv04_exponent_three_is_the_vector_value() -> None:
    sig = Sigstruct.from_bytes(_data())
    assert sig.exponent == 3
    sigstruct.verify(sig)


@pytest.fixture(scope="module")
def key_65537() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def test_adv04_signing_with_e65537_key_refused(key_65537: rsa.RSAPrivateKey) -> None:
    with pytest.raises(UsageError):
        sigstruct.sign(Sigstruct(), sigstruct.RsaKeySigner(key_65537))
    body = Sigstruct()
    data = sigstruct.signing_data(body)
    signature = sigstruct.RsaKeySigner(key_65537).sign_pkcs1v15_sha256(data)
    with pytest.raises(UsageError):
        sigstruct.assemble(data, key_65537.public_key(), signature)


def test_adv04_e65537_signature_in_sigstruct_rejected(key_65537: rsa.RSAPrivateKey) -> None:
    """A real e=65537 signature stored with EXPONENT 65537 is not an SGX signature."""
    body = Sigstruct()
    s = int.from_bytes(
        sigstruct.RsaKeySigner(key_65537).sign_pkcs1v15_sha256(body.signed_bytes()), "big"
    )
    n = key_65537.public_key().public_numbers().n
    q1, q2 = s * s // n, (s * s % n) * s // n
    forged = body.replace(
        modulus=n.to_bytes(384, "little"),
        exponent=65537,
        signature=s.to_bytes(384, "little"),
        q1=q1.to_bytes(384, "little"),
        q2=q2.to_bytes(384, "little"),
    )
    with pytest.raises(MalformedInput):
        Sigstruct.from_bytes(forged.to_bytes())
    with pytest.raises(SignatureInvalid):
        sigstruct.verify(forged)
    with pytest.raises(SignatureInvalid):
        sigstruct.verify(forged.replace(exponent=3))


def test_adv04_signing_with_2048_bit_key_refused() -> None:
    small = rsa.generate_private_key(public_exponent=3, key_size=2048)
    with pytest.raises(UsageError):
        sigstruct.sign(Sigstruct(), sigstruct.RsaKeySigner(small))


def _with_modulus(n: int) -> Sigstruct:
    sig = Sigstruct.from_bytes(_data())
    s = sig.signature_int
    q1 = s * s // n if n else 0
    q2 = (s * s % n) * s // n if n else 0
    return sig.replace(
        modulus=n.to_bytes(384, "little"),
        q1=(q1 % (1 << 3072)).to_bytes(384, "little"),
        q2=(q2 % (1 << 3072)).to_bytes(384, "little"),
    )


def test_modulus_zero_rejected() -> None:
    with pytest.raises(SignatureInvalid):
        sigstruct.verify(_with_modulus(0))


def test_modulus_even_rejected() -> None:
    n = Sigstruct.from_bytes(_data()).modulus_int
    with pytest.raises(SignatureInvalid):
        sigstruct.verify(_with_modulus(n ^ 1))


def test_modulus_below_2_3071_rejected() -> None:
    n = Sigstruct.from_bytes(_data()).modulus_int
    short = (n >> 8) | 1  # top byte zero: a 3064-bit odd modulus
    assert short.to_bytes(384, "little")[-1] == 0
    with pytest.raises(SignatureInvalid):
        sigstruct.verify(_with_modulus(short))
