"""Checklist case 2: HEADER/HEADER2 altered; VENDOR ∉ {0, 0x8086}.

Strict parsing refuses each with the field named; HEADER, VENDOR and HEADER2 are signed, so the
raw-parsed structure's signature fails too (two independent defences).
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sgxlaunch import sigstruct
from sgxlaunch.arch import Sigstruct
from sgxlaunch.errors import MalformedInput, SignatureInvalid
from tests.conftest import shared_vectors

VECTORS = [
    "generated/case1_defaults.sig",
    "intel_linux_sgx/le_prod_css_history/le_prod_css@9fafc27e8f94.bin",
]
SDK_HEADER = bytes.fromhex("06000000e10000000000010000000080")


@pytest.mark.parametrize("path", VECTORS)
@pytest.mark.parametrize(("start", "field"), [(0, "header"), (24, "header2")])
def test_adv02_each_header_byte_altered_rejected(path: str, start: int, field: str) -> None:
    data = (shared_vectors() / path).read_bytes()
    sigstruct.verify(Sigstruct.from_bytes(data))
    for i in range(16):
        for xor in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[start + i] ^= xor
            raw = Sigstruct.from_bytes_raw(bytes(bad))
            with pytest.raises(SignatureInvalid):
                sigstruct.verify(raw)
            if bytes(bad[0:16]) == SDK_HEADER:
                # The SDK's typed header is accepted by decision; the signature still fails.
                assert Sigstruct.from_bytes(bytes(bad)).header_type == "sdk-debug"
                continue
            with pytest.raises(MalformedInput) as info:
                Sigstruct.from_bytes(bytes(bad))
            assert info.value.field == f"sigstruct.{field}"
            assert info.value.offset == start


@pytest.mark.parametrize(
    "vendor", [0x0001, 0x8085, 0x8087, 0x8680, 0x0086, 0x00018086, 0x80860000, 0xFFFFFFFF]
)
def test_adv02_vendor_outside_zero_and_intel_rejected(vendor: int) -> None:
    data = bytearray((shared_vectors() / VECTORS[1]).read_bytes())
    assert int.from_bytes(data[16:20], "little") == 0x8086
    data[16:20] = vendor.to_bytes(4, "little")
    with pytest.raises(MalformedInput) as info:
        Sigstruct.from_bytes(bytes(data))
    assert info.value.field == "sigstruct.vendor"
    assert info.value.offset == 16
    with pytest.raises(SignatureInvalid):
        sigstruct.verify(Sigstruct.from_bytes_raw(bytes(data)))


def test_adv02_vendor_swapped_between_allowed_values_breaks_signature() -> None:
    data = bytearray((shared_vectors() / VECTORS[1]).read_bytes())
    data[16:20] = (0).to_bytes(4, "little")
    parsed = Sigstruct.from_bytes(bytes(data))  # an allowed value: parses
    with pytest.raises(SignatureInvalid):
        sigstruct.verify(parsed)


@pytest.mark.parametrize(
    ("offset", "value", "field"),
    [(0, 0x07, "header"), (27, 0xFF, "header2"), (16, 0x01, "vendor"), (44, 0x01, "reserved1")],
)
def test_adv02_two_step_signing_refuses_malformed_signing_data(
    offset: int, value: int, field: str
) -> None:
    """catsig places gendata's bytes as they are, so it must parse them strictly."""
    data = (shared_vectors() / VECTORS[0]).read_bytes()
    sig = Sigstruct.from_bytes(data)
    public = rsa.RSAPublicNumbers(3, sig.modulus_int).public_key()
    signed = bytearray(sig.signed_bytes())
    signed[offset if offset < 128 else offset - 900 + 128] = value
    with pytest.raises(MalformedInput) as info:
        sigstruct.assemble(bytes(signed), public, sig.signature[::-1])
    assert info.value.field == f"sigstruct.{field}"
