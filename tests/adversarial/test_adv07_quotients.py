"""Checklist case 7: Q1/Q2 off by one or swapped are rejected; a valid signature whose S, Q1 and
Q2 have leading (most significant) zero bytes round-trips and verifies."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from sgxlaunch import sigstruct
from sgxlaunch.arch import Sigstruct
from sgxlaunch.errors import QuotientInvalid, SignatureInvalid
from tests.conftest import REPO, shared_vectors
from tests.support.keys import rsa_key

VECTORS = [
    "generated/case1_defaults.sig",
    "intel_linux_sgx/le_prod_css_history/le_prod_css@9fafc27e8f94.bin",
    "kselftest/ksft_test_encl.sigstruct.bin",
]
SHORT = REPO / "tests" / "vectors" / "adv07_short_signature.sigstruct.bin"


def _maker() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_adv_vectors", REPO / "tests" / "vectors" / "make_adv_vectors.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _le(value: int) -> bytes:
    return value.to_bytes(384, "little")


def _tamperings(sig: Sigstruct) -> dict[str, Sigstruct]:
    q1 = int.from_bytes(sig.q1, "little")
    q2 = int.from_bytes(sig.q2, "little")
    return {
        "q1+1": sig.replace(q1=_le(q1 + 1)),
        "q1-1": sig.replace(q1=_le(q1 - 1)),
        "q2+1": sig.replace(q2=_le(q2 + 1)),
        "q2-1": sig.replace(q2=_le(q2 - 1)),
        "swapped": sig.replace(q1=sig.q2, q2=sig.q1),
        "q1-big-endian": sig.replace(q1=sig.q1[::-1]),
        "q2-zero": sig.replace(q2=bytes(384)),
    }


@pytest.mark.parametrize("path", VECTORS)
@pytest.mark.parametrize(
    "how", ["q1+1", "q1-1", "q2+1", "q2-1", "swapped", "q1-big-endian", "q2-zero"]
)
def test_adv07_quotient_tampering_rejected(path: str, how: str) -> None:
    sig = Sigstruct.from_bytes((shared_vectors() / path).read_bytes())
    sigstruct.verify(sig)
    bad = _tamperings(sig)[how]
    parsed = Sigstruct.from_bytes(bad.to_bytes())  # Q1/Q2 are not reserved: parsing succeeds
    with pytest.raises(QuotientInvalid) as info:
        sigstruct.verify(parsed)
    assert info.value.check == "q1q2"


def test_adv07_short_signature_regression_file_round_trips_and_verifies() -> None:
    data = SHORT.read_bytes()
    sig = Sigstruct.from_bytes(data)
    assert sig.to_bytes() == data
    for name in ("signature", "q1", "q2"):
        assert getattr(sig, name)[-1] == 0, name  # top byte of the little-endian value
    assert sig.signature_int < 1 << 3064
    sigstruct.verify(sig)
    key = rsa_key("le")  # the key of generated/case1_defaults
    assert sig.mrsigner == sigstruct.mrsigner_of(key.public_key())


def test_adv07_short_signature_found_by_bounded_search() -> None:
    maker = _maker()
    key = maker.case1_key()
    sig = maker.short_signature(key, tries=8192)
    for name in ("signature", "q1", "q2"):
        assert getattr(sig, name)[-1] == 0, name
    data = sig.to_bytes()
    again = Sigstruct.from_bytes(data)
    assert again == sig
    assert again.to_bytes() == data
    sigstruct.verify(again)
    # The same bytes, re-signed from the body by sign(), are byte-identical (deterministic).
    assert sigstruct.sign(again, sigstruct.RsaKeySigner(key)).to_bytes() == data
    # Two-step signing handles the short big-endian signature (leading zero byte) as well.
    signature_be = sig.signature[::-1]
    assert signature_be[0] == 0
    assert sigstruct.assemble(sig.signed_bytes(), key.public_key(), signature_be) == sig


def test_adv07_modulus_with_leading_zero_byte_rejected() -> None:
    """M must be a full 3072-bit number; a zero top byte means a different (shorter) key."""
    sig = Sigstruct.from_bytes((shared_vectors() / VECTORS[0]).read_bytes())
    n = sig.modulus_int >> 8 | 1
    s = sig.signature_int % n
    q1, q2 = sigstruct.quotients(s, n)
    short = sig.replace(modulus=_le(n), signature=_le(s), q1=_le(q1), q2=_le(q2))
    assert short.modulus[-1] == 0
    with pytest.raises(SignatureInvalid):
        sigstruct.verify(short)
