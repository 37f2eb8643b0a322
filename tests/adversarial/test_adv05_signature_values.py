"""Checklist case 5: SIGNATURE ∈ {0, 1, M−1, M, M+1, 2^3072−1} is rejected, never a crash.

Where the quotients fit in 384 bytes they are recomputed for the forged S, so that the
Q1/Q2 check passes and the signature check itself has to do the rejecting.
"""

from __future__ import annotations

import random

import pytest

from sgxlaunch import sigstruct
from sgxlaunch.arch import Sigstruct
from sgxlaunch.errors import QuotientInvalid, SignatureInvalid, VerificationFailed
from tests.conftest import shared_vectors, sigstruct_vectors

VECTOR = "generated/case1_defaults.sig"
LIMIT = 1 << 3072


def _base() -> Sigstruct:
    return Sigstruct.from_bytes((shared_vectors() / VECTOR).read_bytes())


def _with_signature(sig: Sigstruct, s: int) -> tuple[Sigstruct, bool]:
    """``sig`` with SIGNATURE = s and, if they fit, Q1/Q2 recomputed (SDM formulas)."""
    n = sig.modulus_int
    q1 = s * s // n
    q2 = (s**3 - q1 * s * n) // n
    fits = q1 < LIMIT and q2 < LIMIT
    changes = {"signature": s.to_bytes(384, "little")}
    if fits:
        changes |= {"q1": q1.to_bytes(384, "little"), "q2": q2.to_bytes(384, "little")}
    return sig.replace(**changes), fits


NAMED = ["0", "1", "M-1", "M", "M+1", "2^3072-1"]


def _value(name: str, n: int) -> int:
    return {"0": 0, "1": 1, "M-1": n - 1, "M": n, "M+1": n + 1, "2^3072-1": LIMIT - 1}[name]


@pytest.mark.parametrize("name", NAMED)
def test_adv05_signature_value_rejected(name: str) -> None:
    base = _base()
    n = base.modulus_int
    forged, fits = _with_signature(base, _value(name, n))
    data = forged.to_bytes()
    parsed = Sigstruct.from_bytes(data)  # structurally fine: only verification can refuse it
    assert parsed.signature_int == _value(name, n)
    with pytest.raises(SignatureInvalid) as info:
        sigstruct.verify(parsed)
    if _value(name, n) >= n:
        assert "below" in info.value.message  # refused by S < M, before anything else
    if name in ("0", "1", "M-1"):
        assert fits  # quotients consistent: the EM comparison refused it


def test_adv05_signature_equal_to_modulus_rejected() -> None:
    base = _base()
    forged, _ = _with_signature(base, base.modulus_int)
    with pytest.raises(SignatureInvalid):
        sigstruct.verify(forged)


@pytest.mark.parametrize("name", NAMED)
def test_adv05_signature_value_with_stale_quotients_rejected(name: str) -> None:
    base = _base()
    forged = base.replace(signature=_value(name, base.modulus_int).to_bytes(384, "little"))
    with pytest.raises((SignatureInvalid, QuotientInvalid)):
        sigstruct.verify(forged)


def test_adv05_valid_signature_plus_modulus_rejected() -> None:
    """S + M has the same cube mod M as S; only the S < M check can refuse it."""
    for path, _facts in sigstruct_vectors():
        sig = Sigstruct.from_bytes((shared_vectors() / path).read_bytes())
        s, n = sig.signature_int, sig.modulus_int
        if s + n < LIMIT:
            break
    else:
        pytest.fail("no vector with S + M < 2^3072")
    assert pow(s + n, 3, n) == pow(s, 3, n)
    forged, _ = _with_signature(sig, s + n)
    with pytest.raises(SignatureInvalid) as info:
        sigstruct.verify(forged)
    assert "below" in info.value.message


def test_adv05_random_signatures_only_raise_verification_failed() -> None:
    base = _base()
    rng = random.Random(5)
    for _ in range(200):
        s = int.from_bytes(rng.randbytes(384), "little")
        forged, _ = _with_signature(base, s)
        with pytest.raises(VerificationFailed):
            sigstruct.verify(forged)
