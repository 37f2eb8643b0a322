"""Checklist case 9: flipping any bit of the signed bytes (0..127 and 900..1027) breaks the
signature — 2048 flips per vector.

Flips that strict parsing already refuses (HEADER, VENDOR, reserved bytes...) are checked on the
raw-parsed structure, so every flip is shown to break the signature itself.
"""

from __future__ import annotations

import pytest

from sgxlaunch import sigstruct
from sgxlaunch.arch import Sigstruct
from sgxlaunch.errors import MalformedInput, SignatureInvalid
from tests.conftest import shared_vectors

VECTORS = [
    "generated/case1_defaults.sig",
    "intel_linux_sgx/le_prod_css_history/le_prod_css@9fafc27e8f94.bin",
    "intel_ae_extracted/ratel-psw@184dc82b_libsgx_le.sigstruct.bin",
    "kselftest/ksft_test_encl.sigstruct.bin",
]
SIGNED = [*range(0, 128), *range(900, 1028)]


@pytest.mark.parametrize("path", VECTORS)
def test_adv09_every_single_bit_flip_of_signed_bytes_fails(path: str) -> None:
    data = (shared_vectors() / path).read_bytes()
    sigstruct.verify(Sigstruct.from_bytes(data))
    assert len(SIGNED) * 8 == 2048
    strict_refused = 0
    for offset in SIGNED:
        for bit in range(8):
            flipped = bytearray(data)
            flipped[offset] ^= 1 << bit
            raw = Sigstruct.from_bytes_raw(bytes(flipped))
            with pytest.raises(SignatureInvalid):
                sigstruct.verify(raw)
            try:
                strict = Sigstruct.from_bytes(bytes(flipped))
            except MalformedInput:
                strict_refused += 1
                continue
            with pytest.raises(SignatureInvalid):
                sigstruct.verify(strict)
    # HEADER, HEADER2 and the signed reserved ranges alone account for this many refusals.
    assert strict_refused >= 8 * (16 + 16 + 84 + 2 + 16) - 1


@pytest.mark.parametrize("path", VECTORS[:1])
def test_adv09_unsigned_ranges_do_not_enter_the_signed_message(path: str) -> None:
    """Control: the flips above matter because those bytes are signed; bytes outside are not."""
    data = (shared_vectors() / path).read_bytes()
    base = Sigstruct.from_bytes(data).signed_bytes()
    for offset in (128, 511, 512, 515, 516, 899, 1028, 1039, 1040, 1807):
        flipped = bytearray(data)
        flipped[offset] ^= 0x01
        assert Sigstruct.from_bytes_raw(bytes(flipped)).signed_bytes() == base
