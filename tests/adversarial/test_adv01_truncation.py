"""Checklist case 1: SIGSTRUCT truncated to every length 0…1807, and 1809+ bytes."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sgxlaunch import sigstruct
from sgxlaunch.arch import EinitToken, Sigstruct
from sgxlaunch.errors import MalformedInput
from tests.conftest import shared_vectors

VECTORS = [
    "generated/case1_defaults.sig",
    "intel_linux_sgx/le_prod_css_history/le_prod_css@9fafc27e8f94.bin",
]


@pytest.mark.parametrize("path", VECTORS)
def test_adv01_every_truncation_of_a_real_sigstruct_is_malformed(path: str) -> None:
    data = (shared_vectors() / path).read_bytes()
    assert len(data) == 1808
    Sigstruct.from_bytes(data)  # the whole input parses
    for length in range(1808):
        for parse in (Sigstruct.from_bytes, Sigstruct.from_bytes_raw):
            with pytest.raises(MalformedInput) as info:
                parse(data[:length])
            assert "SIGSTRUCT" in str(info.value)
            assert info.value.offset == length


@pytest.mark.parametrize("path", VECTORS)
@pytest.mark.parametrize("extra", [1, 2, 15, 16, 64, 240, 1808, 4096 - 1808])
def test_adv01_sigstruct_with_trailing_bytes_is_malformed(path: str, extra: int) -> None:
    data = (shared_vectors() / path).read_bytes()
    for tail in (bytes(extra), (data * 3)[:extra]):
        for parse in (Sigstruct.from_bytes, Sigstruct.from_bytes_raw):
            with pytest.raises(MalformedInput) as info:
                parse(data + tail)
            assert "SIGSTRUCT" in str(info.value)
            assert "1808" in str(info.value)


def test_adv01_einittoken_every_truncation_and_trailing_bytes_is_malformed() -> None:
    data = EinitToken(valid=1, keyid=bytes(range(32))).to_bytes()
    for length in [*range(EinitToken.SIZE), EinitToken.SIZE + 1, EinitToken.SIZE + 64]:
        candidate = (data + bytes(64))[:length]
        with pytest.raises(MalformedInput) as info:
            EinitToken.from_bytes(candidate)
        assert "EINITTOKEN" in str(info.value)


def test_adv01_two_step_signing_refuses_wrong_lengths() -> None:
    data = (shared_vectors() / VECTORS[0]).read_bytes()
    sig = Sigstruct.from_bytes(data)
    n = sig.modulus_int
    public = rsa.RSAPublicNumbers(3, n).public_key()
    signed = sig.signed_bytes()
    signature_be = sig.signature[::-1]
    assert sigstruct.assemble(signed, public, signature_be).to_bytes() == data
    for length in (0, 1, 128, 255, 257, 1808):
        with pytest.raises(MalformedInput):
            sigstruct.assemble((signed * 8)[:length], public, signature_be)
    for length in (0, 383, 385):
        with pytest.raises(MalformedInput):
            sigstruct.assemble(signed, public, (signature_be * 2)[:length])
