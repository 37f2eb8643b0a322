"""Byte layouts of every SGX structure: sizes, round-trips, lengths, reserved ranges, constants.

Expected sizes and reserved ranges come from the reference (sgx-launch-spec.md §0/§1 and the
adversarial checklist), not from the implementation's tables; the tables are then checked to
agree with them and to tile each structure exactly.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from typing import Any

import pytest

from sgxlaunch.arch import (
    ALL_STRUCTURES,
    Attributes,
    EinitToken,
    KeyRequest,
    PageInfo,
    Pcmd,
    Report,
    Secinfo,
    Secs,
    Sigstruct,
    TargetInfo,
    Tcs,
)
from sgxlaunch.errors import MalformedInput
from tests.conftest import shared_vectors

# Sizes from sgx-launch-spec.md §0 / §1 (SDM, kernel, SDK static asserts).
SPEC_SIZES: dict[type[Any], int] = {
    Attributes: 16,
    Sigstruct: 1808,
    EinitToken: 304,
    Secs: 4096,
    Secinfo: 64,
    PageInfo: 32,
    Tcs: 4096,
    Report: 432,
    TargetInfo: 512,
    KeyRequest: 512,
    Pcmd: 128,
}

# Reserved ranges (first, last) from the spec tables (§1.2-§1.9) and the checklist §1.
SPEC_RESERVED: dict[type[Any], set[tuple[int, int]]] = {
    Attributes: set(),
    Sigstruct: {(44, 127), (910, 911), (992, 1007), (1028, 1039)},
    EinitToken: {(4, 47), (96, 127), (160, 191), (213, 235)},
    Secs: {(33, 47), (96, 127), (160, 191), (262, 4095)},
    Secinfo: {(8, 63)},
    PageInfo: set(),
    Tcs: {(72, 4095)},
    Report: {(21, 31), (96, 127), (160, 191), (262, 303)},
    TargetInfo: {(49, 49), (56, 63), (128, 511)},
    KeyRequest: {(6, 7), (78, 511)},
    Pcmd: {(8, 63), (72, 111)},  # SECINFO's reserved bytes inside PCMD, then PCMD's own
}

STRUCTS = list(ALL_STRUCTURES)
IDS = [cls.__name__ for cls in STRUCTS]


@dataclasses.dataclass(frozen=True)
class ReservedRange:
    """A reserved range at an absolute offset; ``outer`` is the top-level field holding it."""

    outer: str
    name: str
    offset: int
    size: int
    nested: bool

    @property
    def last(self) -> int:
        return self.offset + self.size - 1


def reserved_ranges(cls: Any, base: int = 0, outer: str | None = None) -> Iterator[ReservedRange]:
    for fld in cls.FIELDS:
        if fld.kind == "reserved":
            yield ReservedRange(
                outer or fld.name, fld.name, base + fld.offset, fld.size, outer is not None
            )
        elif fld.kind == "struct":
            yield from reserved_ranges(fld.nested, base + fld.offset, outer or fld.name)


def all_reserved() -> list[tuple[Any, ReservedRange]]:
    return [(cls, r) for cls in STRUCTS for r in reserved_ranges(cls)]


def _ranges_of(cls: Any, kind: str, base: int = 0) -> Iterator[tuple[int, int]]:
    for fld in cls.FIELDS:
        if fld.kind == kind:
            yield base + fld.offset, fld.size
        elif fld.kind == "struct":
            yield from _ranges_of(fld.nested, kind, base + fld.offset)


def valid_bytes(cls: Any, rng: random.Random) -> bytes:
    """Random bytes that a strict parser must accept: reserved zero, constants fixed."""
    buf = bytearray(rng.randbytes(cls.SIZE))
    for offset, size in _ranges_of(cls, "reserved"):
        buf[offset : offset + size] = bytes(size)
    if cls is Sigstruct:
        default = Sigstruct().to_bytes()
        buf[0:16] = default[0:16]  # HEADER
        buf[16:20] = rng.choice([0, 0x8086]).to_bytes(4, "little")
        buf[24:40] = default[24:40]  # HEADER2
        buf[512:516] = (3).to_bytes(4, "little")
    elif cls is EinitToken:
        buf[0:4] = rng.choice([0, 1]).to_bytes(4, "little")
    elif cls is Secinfo or cls is Pcmd:
        buf[0:8] = (int.from_bytes(buf[0:8], "little") & 0xFF3F).to_bytes(8, "little")
    elif cls is Tcs:
        buf[8:16] = (int.from_bytes(buf[8:16], "little") & 0x3).to_bytes(8, "little")
    return bytes(buf)


# -- sizes and the field tables --------------------------------------------------------------


@pytest.mark.parametrize("cls", STRUCTS, ids=IDS)
def test_size_matches_spec(cls: Any) -> None:
    assert SPEC_SIZES[cls] == cls.SIZE
    assert len(cls().to_bytes()) == SPEC_SIZES[cls]


def test_all_structures_lists_every_structure() -> None:
    assert set(ALL_STRUCTURES) == set(SPEC_SIZES)


@pytest.mark.parametrize("cls", STRUCTS, ids=IDS)
def test_field_table_tiles_the_structure(cls: Any) -> None:
    pos = 0
    for fld in cls.FIELDS:
        assert fld.offset == pos, f"{cls.NAME}.{fld.name}: gap or overlap at {pos}"
        assert fld.size > 0
        if fld.kind == "int":
            assert fld.size in (1, 2, 4, 8)
        elif fld.kind == "struct":
            assert fld.size == fld.nested.SIZE
        else:
            assert fld.kind in ("bytes", "reserved")
        pos += fld.size
    assert pos == cls.SIZE
    names = [f.name for f in cls.FIELDS]
    assert len(set(names)) == len(names)
    assert names == [f.name for f in dataclasses.fields(cls)]


@pytest.mark.parametrize("cls", STRUCTS, ids=IDS)
def test_reserved_ranges_match_spec(cls: Any) -> None:
    assert {(r.offset, r.last) for r in reserved_ranges(cls)} == SPEC_RESERVED[cls]


def test_sigstruct_field_offsets_match_spec() -> None:
    # sgx-launch-spec.md §1.3 and PROVENANCE.md "Field offsets used".
    spec = {
        "header": (0, 16),
        "vendor": (16, 4),
        "date": (20, 4),
        "header2": (24, 16),
        "swdefined": (40, 4),
        "modulus": (128, 384),
        "exponent": (512, 4),
        "signature": (516, 384),
        "miscselect": (900, 4),
        "miscmask": (904, 4),
        "isvfamilyid": (912, 16),
        "attributes": (928, 16),
        "attributemask": (944, 16),
        "enclavehash": (960, 32),
        "isvextprodid": (1008, 16),
        "isvprodid": (1024, 2),
        "isvsvn": (1026, 2),
        "q1": (1040, 384),
        "q2": (1424, 384),
    }
    table = {f.name: (f.offset, f.size) for f in Sigstruct.FIELDS}
    for name, where in spec.items():
        assert table[name] == where, name


def test_einittoken_field_offsets_match_spec() -> None:
    spec = {
        "valid": (0, 4),
        "attributes": (48, 16),
        "mrenclave": (64, 32),
        "mrsigner": (128, 32),
        "cpusvnle": (192, 16),
        "isvprodidle": (208, 2),
        "isvsvnle": (210, 2),
        "maskedmiscselectle": (236, 4),
        "maskedattributesle": (240, 16),
        "keyid": (256, 32),
        "mac": (288, 16),
    }
    table = {f.name: (f.offset, f.size) for f in EinitToken.FIELDS}
    for name, where in spec.items():
        assert table[name] == where, name
    assert EinitToken.MACED_SIZE == 192


def test_integers_are_little_endian() -> None:
    data = bytearray(PageInfo.SIZE)
    data[0:8] = bytes.fromhex("0102030405060708")
    assert PageInfo.from_bytes(bytes(data)).linaddr == 0x0807060504030201
    sig = bytearray(Sigstruct().to_bytes())
    sig[1024:1026] = b"\x34\x12"
    assert Sigstruct.from_bytes(bytes(sig)).isvprodid == 0x1234


# -- round-trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", STRUCTS, ids=IDS)
def test_default_instance_round_trips(cls: Any) -> None:
    obj = cls()
    data = obj.to_bytes()
    assert cls.from_bytes(data) == obj
    assert cls.from_bytes_raw(data) == obj


@pytest.mark.parametrize("cls", STRUCTS, ids=IDS)
def test_random_valid_bytes_round_trip(cls: Any) -> None:
    rng = random.Random(f"roundtrip-{cls.NAME}")
    for _ in range(20):
        data = valid_bytes(cls, rng)
        obj = cls.from_bytes(data)
        assert obj.to_bytes() == data
        assert cls.from_bytes(obj.to_bytes()) == obj
        assert obj.nonzero_reserved() is None


@pytest.mark.parametrize("cls", STRUCTS, ids=IDS)
def test_parsers_accept_bytearray_and_memoryview(cls: Any) -> None:
    data = valid_bytes(cls, random.Random(7))
    expected = cls.from_bytes(data)
    assert cls.from_bytes(bytearray(data)) == expected
    assert cls.from_bytes(memoryview(data)) == expected
    assert cls.from_bytes_raw(memoryview(data)) == expected


def _outcome(parse: Any, data: bytes) -> Any:
    """What a parser does with ``data``: the object, or the error's class, text and place."""
    try:
        return parse(data)
    except MalformedInput as exc:
        return (type(exc), str(exc), exc.field, exc.offset, exc.detail)


@pytest.mark.parametrize("cls", STRUCTS, ids=IDS)
def test_compiled_strict_parser_equals_the_generic_one(cls: Any) -> None:
    """``from_bytes`` (straight-line code compiled per structure) returns the object the generic
    strict parse (raw parse, then ``check_strict``) returns, and refuses with the same error,
    for valid bytes and for each of them with one byte changed anywhere (reserved ranges,
    nested structures, constants, ordinary fields) or with a wrong length."""
    from sgxlaunch.arch._layout import Structure

    generic = Structure.from_bytes.__func__  # type: ignore[attr-defined]
    assert cls.from_bytes.__func__ is not generic  # the compiled parser is what runs
    rng = random.Random(f"compiled-{cls.NAME}")
    refused = 0
    for _ in range(12):
        data = valid_bytes(cls, rng)
        cases = [data, data[:-1], data + b"\x00"]
        for _ in range(40):
            mutated = bytearray(data)
            mutated[rng.randrange(cls.SIZE)] ^= 1 << rng.randrange(8)
            cases.append(bytes(mutated))
        for case in cases:
            want = _outcome(lambda d: generic(cls, d), case)
            assert _outcome(cls.from_bytes, case) == want
            refused += isinstance(want, tuple)
    if SPEC_RESERVED[cls] or cls in (Sigstruct, EinitToken, Secinfo, Pcmd, Tcs):
        assert refused  # the mutations reached the refusals, not only the happy path


# -- lengths --------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", STRUCTS, ids=IDS)
def test_every_truncation_refused_naming_the_structure(cls: Any) -> None:
    data = valid_bytes(cls, random.Random(1))
    for length in range(cls.SIZE):
        for parse in (cls.from_bytes, cls.from_bytes_raw):
            with pytest.raises(MalformedInput) as info:
                parse(data[:length])
            assert cls.NAME in str(info.value)
            assert info.value.field == cls.NAME
            assert info.value.offset == length


@pytest.mark.parametrize("cls", STRUCTS, ids=IDS)
@pytest.mark.parametrize("extra", [1, 64])
def test_trailing_bytes_refused_naming_the_structure(cls: Any, extra: int) -> None:
    data = valid_bytes(cls, random.Random(2))
    for tail in (bytes(extra), b"\xff" * extra):
        for parse in (cls.from_bytes, cls.from_bytes_raw):
            with pytest.raises(MalformedInput) as info:
                parse(data + tail)
            assert cls.NAME in str(info.value)
            assert str(cls.SIZE) in str(info.value)


# -- reserved ranges ------------------------------------------------------------------------

RESERVED_CASES = [
    pytest.param(cls, r, at, id=f"{cls.__name__}-{r.outer}.{r.name}-{at}")
    for cls, r in all_reserved()
    for at in sorted({r.offset, r.last})
]


@pytest.mark.parametrize(("cls", "rng_", "at"), RESERVED_CASES)
def test_reserved_byte_refused_strictly_accepted_raw(
    cls: Any, rng_: ReservedRange, at: int
) -> None:
    base = bytearray(cls().to_bytes())
    for value in (0x01, 0x80, 0xFF):
        data = bytearray(base)
        data[at] = value
        with pytest.raises(MalformedInput) as info:
            cls.from_bytes(bytes(data))
        err = info.value
        assert err.offset == at
        expected_field = f"{cls.NAME.lower()}.{rng_.outer}"
        assert err.field == expected_field
        assert "reserved" in err.message
        if not rng_.nested:
            assert f"{rng_.offset}..{rng_.last}" in err.message
        raw = cls.from_bytes_raw(bytes(data))
        assert raw.to_bytes() == bytes(data)


@pytest.mark.parametrize(("cls", "rng_", "at"), RESERVED_CASES)
def test_nonzero_reserved_names_the_range(cls: Any, rng_: ReservedRange, at: int) -> None:
    data = bytearray(cls().to_bytes())
    data[at] = 0x5A
    raw = cls.from_bytes_raw(bytes(data))
    found = raw.nonzero_reserved()
    # A reserved range nested inside another structure (PCMD's SECINFO) is still a reserved
    # range of the outer layout: strict parsing refuses it, so nonzero_reserved must report it.
    assert found is not None, f"{cls.NAME}: byte {at} in {rng_.outer}.{rng_.name} not reported"
    if not rng_.nested:
        assert found == rng_.name
    else:
        assert rng_.name in found


@pytest.mark.parametrize("cls", STRUCTS, ids=IDS)
def test_nonzero_reserved_is_none_when_clean(cls: Any) -> None:
    assert cls().nonzero_reserved() is None


MULTI_RESERVED = [c for c in STRUCTS if len([r for r in reserved_ranges(c) if not r.nested]) > 1]


@pytest.mark.parametrize("cls", MULTI_RESERVED, ids=lambda c: c.NAME)
def test_first_nonzero_reserved_range_is_reported_first(cls: Any) -> None:
    ranges = [r for r in reserved_ranges(cls) if not r.nested]
    data = bytearray(cls().to_bytes())
    data[ranges[-1].last] = 1
    data[ranges[0].offset] = 1
    raw = cls.from_bytes_raw(bytes(data))
    assert raw.nonzero_reserved() == ranges[0].name
    with pytest.raises(MalformedInput) as info:
        cls.from_bytes(bytes(data))
    assert info.value.offset == ranges[0].offset


# -- SIGSTRUCT constants ----------------------------------------------------------------------

HEADER = bytes.fromhex("06000000e10000000000010000000000")  # spec §0
HEADER2 = bytes.fromhex("01010000600000006000000001000000")  # spec §0
SDK_TYPE = (0x80000000).to_bytes(4, "little")


def _sigstruct_bytes() -> bytearray:
    data = bytearray(Sigstruct().to_bytes())
    assert data[0:16] == HEADER
    assert data[24:40] == HEADER2
    return data


def test_sigstruct_default_header_is_the_spec_constant() -> None:
    obj = Sigstruct.from_bytes(bytes(_sigstruct_bytes()))
    assert obj.header_type == "standard"
    assert obj.exponent == 3


@pytest.mark.parametrize(("start", "name"), [(0, "header"), (24, "header2")])
def test_sigstruct_every_header_byte_altered_refused(start: int, name: str) -> None:
    base = _sigstruct_bytes()
    tried = 0
    for i in range(16):
        for xor in (0x01, 0x80, 0xFF):
            data = bytearray(base)
            data[start + i] ^= xor
            if name == "header" and data[0:16] == HEADER[:12] + SDK_TYPE:
                continue  # the SDK's typed header, accepted by decision (see below)
            with pytest.raises(MalformedInput) as info:
                Sigstruct.from_bytes(bytes(data))
            assert info.value.field == f"sigstruct.{name}"
            assert info.value.offset == start
            assert Sigstruct.from_bytes_raw(bytes(data)).to_bytes() == bytes(data)
            tried += 1
    assert tried >= 47


@pytest.mark.parametrize("vendor", [1, 0x8085, 0x8087, 0x0080, 0x86800000, 0x00018086, 0xFFFFFFFF])
def test_sigstruct_vendor_outside_set_refused(vendor: int) -> None:
    data = _sigstruct_bytes()
    data[16:20] = vendor.to_bytes(4, "little")
    with pytest.raises(MalformedInput) as info:
        Sigstruct.from_bytes(bytes(data))
    assert info.value.field == "sigstruct.vendor"
    assert info.value.offset == 16
    assert Sigstruct.from_bytes_raw(bytes(data)).vendor == vendor


@pytest.mark.parametrize("vendor", [0, 0x8086])
def test_sigstruct_vendor_in_set_accepted(vendor: int) -> None:
    data = _sigstruct_bytes()
    data[16:20] = vendor.to_bytes(4, "little")
    assert Sigstruct.from_bytes(bytes(data)).vendor == vendor


@pytest.mark.parametrize("exponent", [0, 1, 2, 65537, 0xFFFFFFFF])
def test_sigstruct_exponent_not_three_refused(exponent: int) -> None:
    data = _sigstruct_bytes()
    data[512:516] = exponent.to_bytes(4, "little")
    with pytest.raises(MalformedInput) as info:
        Sigstruct.from_bytes(bytes(data))
    assert info.value.field == "sigstruct.exponent"
    assert info.value.offset == 512
    assert Sigstruct.from_bytes_raw(bytes(data)).exponent == exponent


def test_sigstruct_sdk_header_type_accepted_as_sdk_debug() -> None:
    data = _sigstruct_bytes()
    data[12:16] = SDK_TYPE
    obj = Sigstruct.from_bytes(bytes(data))
    assert obj.header_type == "sdk-debug"
    assert obj.to_bytes() == bytes(data)


@pytest.mark.parametrize("header_type", [1, 0x40000000, 0x80000001, 0xC0000000, 0xFFFFFFFF, 0x80])
def test_sigstruct_other_header_types_refused(header_type: int) -> None:
    data = _sigstruct_bytes()
    data[12:16] = header_type.to_bytes(4, "little")
    with pytest.raises(MalformedInput) as info:
        Sigstruct.from_bytes(bytes(data))
    assert info.value.field == "sigstruct.header"
    raw = Sigstruct.from_bytes_raw(bytes(data))
    assert raw.header_type not in ("standard", "sdk-debug")


def test_sigstruct_header_type_on_the_real_sdk_launch_enclave() -> None:
    """Intel's SDK-signed LE carries type 0x80000000 in HEADER bytes 12..15 (issue 2 decision)."""
    path = "intel_ae_extracted/ratel-psw@184dc82b_libsgx_le.sigstruct.bin"
    data = (shared_vectors() / path).read_bytes()
    assert data[0:12] == HEADER[:12]
    assert data[12:16] == SDK_TYPE
    obj = Sigstruct.from_bytes(data)
    assert obj.header_type == "sdk-debug"
    assert obj.to_bytes() == data
    for value in (0x00000001, 0x40000000, 0x80000001, 0x00000080, 0xFFFFFFFF):
        bad = bytearray(data)
        bad[12:16] = value.to_bytes(4, "little")
        with pytest.raises(MalformedInput) as info:
            Sigstruct.from_bytes(bytes(bad))
        assert info.value.field == "sigstruct.header"
        assert Sigstruct.from_bytes_raw(bytes(bad)).header_type == "invalid"
    standard = bytearray(data)
    standard[12:16] = bytes(4)
    assert Sigstruct.from_bytes(bytes(standard)).header_type == "standard"


# -- EINITTOKEN, SECINFO, TCS flags ------------------------------------------------------------


@pytest.mark.parametrize("valid", [2, 3, 0x100, 0x80000000, 0x80000001, 0xFFFFFFFF])
def test_einittoken_valid_outside_zero_one_refused(valid: int) -> None:
    data = bytearray(EinitToken().to_bytes())
    data[0:4] = valid.to_bytes(4, "little")
    with pytest.raises(MalformedInput) as info:
        EinitToken.from_bytes(bytes(data))
    assert info.value.field == "einittoken.valid"
    assert info.value.offset == 0
    assert EinitToken.from_bytes_raw(bytes(data)).valid == valid


@pytest.mark.parametrize("valid", [0, 1])
def test_einittoken_valid_zero_or_one_accepted(valid: int) -> None:
    data = bytearray(EinitToken().to_bytes())
    data[0:4] = valid.to_bytes(4, "little")
    assert EinitToken.from_bytes(bytes(data)).valid == valid


# SECINFO.FLAGS (spec §1.5): bits 0..5 R/W/X/PENDING/MODIFIED/PR, 15:8 page type, rest reserved.
SECINFO_DEFINED_BITS = [*range(0, 6), *range(8, 16)]
SECINFO_RESERVED_BITS = [b for b in range(64) if b not in SECINFO_DEFINED_BITS]


def test_secinfo_reserved_flag_bits_refused() -> None:
    for bit in SECINFO_RESERVED_BITS:
        data = bytearray(Secinfo.SIZE)
        data[0:8] = ((1 << bit) | 0x201).to_bytes(8, "little")
        with pytest.raises(MalformedInput) as info:
            Secinfo.from_bytes(bytes(data))
        assert info.value.field == "secinfo.flags", bit
        assert info.value.offset == 0
        assert Secinfo.from_bytes_raw(bytes(data)).flags == (1 << bit) | 0x201


def test_secinfo_defined_flag_bits_accepted() -> None:
    for bit in SECINFO_DEFINED_BITS:
        data = bytearray(Secinfo.SIZE)
        data[0:8] = (1 << bit).to_bytes(8, "little")
        assert Secinfo.from_bytes(bytes(data)).flags == 1 << bit
    obj = Secinfo.from_bytes((0x207).to_bytes(8, "little") + bytes(56))
    assert obj.page_type == 2
    assert obj.permissions == 7


def test_pcmd_nested_secinfo_flags_refused_with_absolute_offset() -> None:
    data = bytearray(Pcmd.SIZE)
    data[0:8] = (1 << 40).to_bytes(8, "little")
    with pytest.raises(MalformedInput) as info:
        Pcmd.from_bytes(bytes(data))
    assert info.value.field == "pcmd.secinfo"
    assert info.value.offset == 0


def test_tcs_reserved_flag_bits_refused() -> None:
    for bit in range(2, 64):
        data = bytearray(Tcs.SIZE)
        data[8:16] = (1 << bit).to_bytes(8, "little")
        with pytest.raises(MalformedInput) as info:
            Tcs.from_bytes(bytes(data))
        assert info.value.field == "tcs.flags", bit
        assert info.value.offset == 8
        assert Tcs.from_bytes_raw(bytes(data)).flags == 1 << bit
    for flags in (0, 1, 2, 3):  # DBGOPTIN, AEXNOTIFY (spec §1.7)
        data = bytearray(Tcs.SIZE)
        data[8:16] = flags.to_bytes(8, "little")
        assert Tcs.from_bytes(bytes(data)).flags == flags


# -- constructed values ---------------------------------------------------------------------


def test_constructor_refuses_values_that_do_not_fit() -> None:
    with pytest.raises(MalformedInput):
        Sigstruct(isvprodid=1 << 16)
    with pytest.raises(MalformedInput):
        Sigstruct(isvsvn=-1)
    with pytest.raises(MalformedInput):
        Sigstruct(enclavehash=bytes(31))
    with pytest.raises(MalformedInput):
        Sigstruct(isvprodid=True)
    with pytest.raises(MalformedInput):
        Sigstruct(attributes=b"\x00" * 16)  # type: ignore[arg-type]
    with pytest.raises(MalformedInput):
        Attributes(flags=1 << 64)


def test_attributes_nested_in_sigstruct_round_trip() -> None:
    attrs = Attributes(flags=0x24, xfrm=0x3)
    mask = Attributes(flags=0xFF00FFFFFFFFFFFF, xfrm=0xFFFFFFFFFFFFFF1B)
    obj = Sigstruct(attributes=attrs, attributemask=mask)
    data = obj.to_bytes()
    assert data[928:936] == (0x24).to_bytes(8, "little")
    assert data[944:960] == mask.to_bytes()
    back = Sigstruct.from_bytes(data)
    assert back.attributes == attrs
    assert back.attributemask == mask
    assert (attrs & mask) == Attributes(flags=0x24 & mask.flags, xfrm=0x3 & mask.xfrm)
