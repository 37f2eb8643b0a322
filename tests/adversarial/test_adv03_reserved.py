"""Checklist case 3: any reserved byte non-zero (each range, first and last byte) is refused."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sgxlaunch import sigstruct
from sgxlaunch.arch import EinitToken, Sigstruct
from sgxlaunch.errors import MalformedInput, SgxlaunchError, SignatureInvalid
from tests.conftest import shared_vectors
from tests.support.keys import rsa_key

VECTOR = "generated/case1_defaults.sig"

# Checklist §1 (SDM SIGSTRUCT table): (field, first, last, covered by the signature)
SIGSTRUCT_RESERVED = [
    ("reserved1", 44, 127, True),
    ("reserved2", 910, 911, True),
    ("reserved3", 992, 1007, True),
    ("reserved4", 1028, 1039, False),
]
# sgx-launch-spec.md §1.4
EINITTOKEN_RESERVED = [
    ("reserved1", 4, 47),
    ("reserved2", 96, 127),
    ("reserved3", 160, 191),
    ("reserved4", 213, 235),
]

CASES = [
    pytest.param(name, at, signed, id=f"{name}-{at}")
    for name, first, last, signed in SIGSTRUCT_RESERVED
    for at in (first, last)
]


@pytest.mark.parametrize(("name", "at", "signed"), CASES)
def test_adv03_sigstruct_reserved_byte_set_rejected(name: str, at: int, signed: bool) -> None:
    data = (shared_vectors() / VECTOR).read_bytes()
    for value in (0x01, 0x80, 0xFF):
        bad = bytearray(data)
        bad[at] = value
        with pytest.raises(MalformedInput) as info:
            Sigstruct.from_bytes(bytes(bad))
        assert info.value.field == f"sigstruct.{name}"
        assert info.value.offset == at
        raw = Sigstruct.from_bytes_raw(bytes(bad))
        assert raw.nonzero_reserved() == name
        if signed:
            with pytest.raises(SignatureInvalid):
                sigstruct.verify(raw)
        else:
            # Bytes 1028..1039 are outside the signed message: only the strict parse (and
            # EINIT's reserved check) refuses them; the signature alone cannot.
            sigstruct.verify(raw)


@pytest.mark.parametrize(
    ("name", "at"),
    [(name, at) for name, first, last in EINITTOKEN_RESERVED for at in (first, last)],
)
def test_adv03_einittoken_reserved_byte_set_rejected(name: str, at: int) -> None:
    data = bytearray(EinitToken(valid=1, keyid=bytes(range(32))).to_bytes())
    data[at] = 0x01
    with pytest.raises(MalformedInput) as info:
        EinitToken.from_bytes(bytes(data))
    assert info.value.field == f"einittoken.{name}"
    assert info.value.offset == at
    assert EinitToken.from_bytes_raw(bytes(data)).nonzero_reserved() == name


def _case1_key() -> rsa.RSAPrivateKey:
    return rsa_key("le")


@pytest.mark.parametrize(
    "changes",
    [
        {"reserved1": b"\x01" + bytes(83)},
        {"reserved2": b"\x00\x01"},
        {"reserved3": bytes(15) + b"\x80"},
        {"vendor": 5},
        {"header": bytes(16)},
    ],
    ids=["reserved1", "reserved2", "reserved3", "vendor", "header"],
)
def test_adv03_sign_does_not_emit_a_sigstruct_strict_parsing_refuses(
    changes: dict[str, object],
) -> None:
    """Signing a body that strict parsing refuses must not yield a signed SIGSTRUCT EINIT refuses.

    Either ``sign`` refuses the body (one of our errors), or what it returns parses strictly.
    """
    body = Sigstruct().replace(**changes)
    try:
        signed = sigstruct.sign(body, sigstruct.RsaKeySigner(_case1_key()))
    except SgxlaunchError:
        return
    try:
        Sigstruct.from_bytes(signed.to_bytes())
    except MalformedInput as exc:
        pytest.fail(f"sign() returned a SIGSTRUCT that strict parsing refuses: {exc}")
