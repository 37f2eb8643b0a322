"""Hypothesis round-trips for every SGX structure, and the fuzz invariant of their parsers.

Strategies are built from each class's field table: integers within their size, byte strings of
exact size, reserved ranges zero (strict) or arbitrary (raw), nested ATTRIBUTES/SECINFO built
the same way. The few constants strict parsing demands come from the reference (spec §0, §1).
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgxlaunch import sigstruct
from sgxlaunch.arch import ALL_STRUCTURES, EinitToken, Secinfo, Sigstruct, Tcs
from sgxlaunch.errors import MalformedInput
from tests.conftest import shared_vectors

pytestmark = pytest.mark.slow  # started first under `make test` (tests/conftest.py)

HEADER = bytes.fromhex("06000000e10000000000010000000000")
HEADER_SDK = bytes.fromhex("06000000e10000000000010000000080")
HEADER2 = bytes.fromhex("01010000600000006000000001000000")

# Values strict parsing accepts for the fields it checks (spec §0, §1.3-§1.7).
STRICT_OVERRIDES: dict[tuple[Any, str], st.SearchStrategy[Any]] = {
    (Sigstruct, "header"): st.sampled_from([HEADER, HEADER_SDK]),
    (Sigstruct, "header2"): st.just(HEADER2),
    (Sigstruct, "vendor"): st.sampled_from([0, 0x8086]),
    (Sigstruct, "exponent"): st.just(3),
    (EinitToken, "valid"): st.sampled_from([0, 1]),
    # SECINFO.FLAGS: bits 0..5 and the page type (15:8); TCS.FLAGS: DBGOPTIN, AEXNOTIFY.
    (Secinfo, "flags"): st.integers(0, 0xFFFF).map(lambda f: f & 0xFF3F),
    (Tcs, "flags"): st.integers(0, 3),
}

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
FUZZ_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

STRUCTS = list(ALL_STRUCTURES)
IDS = [cls.__name__ for cls in STRUCTS]


def field_strategy(cls: Any, fld: Any, *, strict: bool) -> st.SearchStrategy[Any]:
    if strict and (cls, fld.name) in STRICT_OVERRIDES:
        return STRICT_OVERRIDES[(cls, fld.name)]
    if fld.kind == "int":
        return st.integers(0, (1 << (8 * fld.size)) - 1)
    if fld.kind == "struct":
        return structure(fld.nested, strict=strict)
    if fld.kind == "reserved" and strict:
        return st.just(bytes(fld.size))
    return st.binary(min_size=fld.size, max_size=fld.size)


def structure(cls: Any, *, strict: bool) -> st.SearchStrategy[Any]:
    return st.builds(
        cls, **{fld.name: field_strategy(cls, fld, strict=strict) for fld in cls.FIELDS}
    )


@pytest.mark.parametrize("cls", STRUCTS, ids=IDS)
def test_strict_round_trip(cls: Any) -> None:
    @SETTINGS
    @given(obj=structure(cls, strict=True))
    def check(obj: Any) -> None:
        data = obj.to_bytes()
        assert len(data) == cls.SIZE
        back = cls.from_bytes(data)
        assert back == obj
        assert back.to_bytes() == data
        assert back.nonzero_reserved() is None
        for fld in cls.FIELDS:
            if fld.kind == "int":
                raw = data[fld.offset : fld.offset + fld.size]
                assert int.from_bytes(raw, "little") == getattr(obj, fld.name)
            elif fld.kind in ("bytes", "reserved"):
                assert data[fld.offset : fld.offset + fld.size] == getattr(obj, fld.name)
            else:
                assert data[fld.offset : fld.offset + fld.size] == getattr(obj, fld.name).to_bytes()

    check()


@pytest.mark.parametrize("cls", STRUCTS, ids=IDS)
def test_raw_round_trip_with_any_field_values(cls: Any) -> None:
    @SETTINGS
    @given(obj=structure(cls, strict=False))
    def check(obj: Any) -> None:
        data = obj.to_bytes()
        assert cls.from_bytes_raw(data) == obj
        assert cls.from_bytes_raw(data).to_bytes() == data

    check()


@pytest.mark.parametrize("cls", STRUCTS, ids=IDS)
def test_raw_parse_then_serialize_is_identity_on_any_bytes(cls: Any) -> None:
    @SETTINGS
    @given(data=st.binary(min_size=cls.SIZE, max_size=cls.SIZE))
    def check(data: bytes) -> None:
        assert cls.from_bytes_raw(data).to_bytes() == data

    check()


def _fuzz_inputs(cls: Any) -> st.SearchStrategy[bytes]:
    valid = structure(cls, strict=True).map(lambda obj: obj.to_bytes())

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(valid))
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, cls.SIZE - 1))
            data[i] = draw(st.integers(0, 255))
        return bytes(data)

    return st.one_of(
        st.binary(max_size=cls.SIZE + 80),
        st.binary(min_size=cls.SIZE, max_size=cls.SIZE),
        mutated(),
        valid.flatmap(lambda d: st.integers(0, len(d) + 16).map(lambda n: (d * 2)[:n])),
    )


@pytest.mark.parametrize("cls", STRUCTS, ids=IDS)
def test_fuzz_parsers_raise_only_malformed_input(cls: Any) -> None:
    @FUZZ_SETTINGS
    @given(data=_fuzz_inputs(cls))
    def check(data: bytes) -> None:
        for parse in (cls.from_bytes, cls.from_bytes_raw):
            try:
                obj = parse(data)
            except MalformedInput:
                continue
            assert len(data) == cls.SIZE
            assert obj.to_bytes() == data
        try:
            strict = cls.from_bytes(data)
        except MalformedInput:
            return
        assert strict.nonzero_reserved() is None

    check()


@pytest.fixture(scope="module")
def vector_signer() -> sigstruct.RsaKeySigner:
    key = serialization.load_pem_private_key(
        (shared_vectors() / "generated" / "case1_defaults.key.pem").read_bytes(), password=None
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    return sigstruct.RsaKeySigner(key)


def test_sign_then_strict_parse_then_verify(vector_signer: sigstruct.RsaKeySigner) -> None:
    """Any strictly valid body signs; the result parses strictly, round-trips and verifies."""

    @settings(max_examples=60, deadline=None)
    @given(body=structure(Sigstruct, strict=True))
    def check(body: Sigstruct) -> None:
        signed = sigstruct.sign(body, vector_signer)
        data = signed.to_bytes()
        assert data[0:128] == body.to_bytes()[0:128]
        assert data[900:1028] == body.to_bytes()[900:1028]
        again = Sigstruct.from_bytes(data)
        assert again == signed
        sigstruct.verify(again)

    check()
