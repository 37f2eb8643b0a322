"""One frozen dataclass per SGX structure, each driven by one field table.

Layouts follow the SDM as collected in ``../shared/reference/sgx-launch-spec.md`` §1 (offsets,
sizes, reserved ranges). Every class has ``SIZE``, strict ``from_bytes()``, raw
``from_bytes_raw()`` and ``to_bytes()``; see :mod:`sgxlaunch.arch._layout`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

from sgxlaunch.arch._layout import Field, Structure, finalize, nested, raw, reserved, u, zeros
from sgxlaunch.arch.constants import (
    SECINFO_FLAGS_RESERVED_MASK,
    SECINFO_PAGE_TYPE_MASK,
    SECINFO_PAGE_TYPE_SHIFT,
    SECINFO_PERMISSION_MASK,
    SIGSTRUCT_EXPONENT,
    SIGSTRUCT_HEADER,
    SIGSTRUCT_HEADER2,
    SIGSTRUCT_HEADER_SDK_DEBUG,
    TCS_FLAGS_RESERVED_MASK,
    VENDOR_INTEL,
    VENDOR_NONE,
    AttributeFlag,
)
from sgxlaunch.errors import MalformedInput


@finalize
@dataclass(frozen=True, slots=True, kw_only=True)
class Attributes(Structure):
    """ATTRIBUTES: FLAGS (u64) and XFRM (u64), 16 bytes (spec §1.1)."""

    SIZE: ClassVar[int] = 16
    NAME: ClassVar[str] = "ATTRIBUTES"
    FIELDS: ClassVar[tuple[Field, ...]] = (u("flags", 0, 8), u("xfrm", 8, 8))

    flags: int = 0
    xfrm: int = 0

    def __and__(self, other: Attributes) -> Attributes:
        return Attributes(flags=self.flags & other.flags, xfrm=self.xfrm & other.xfrm)

    def __or__(self, other: Attributes) -> Attributes:
        return Attributes(flags=self.flags | other.flags, xfrm=self.xfrm | other.xfrm)

    @property
    def debug(self) -> bool:
        return bool(self.flags & AttributeFlag.DEBUG)

    def __str__(self) -> str:
        return f"0x{self.flags:x}/0x{self.xfrm:x}"


@finalize
@dataclass(frozen=True, slots=True, kw_only=True)
class Sigstruct(Structure):
    """SIGSTRUCT, the enclave author's signature structure (1808 bytes; spec §1.3).

    MODULUS, SIGNATURE, Q1 and Q2 are kept as stored: 384 little-endian bytes.
    Strict parsing checks HEADER (bytes 12..15 may hold the SDK's type, see
    :attr:`header_type`), VENDOR ∈ {0, 0x8086}, HEADER2, EXPONENT = 3 and every reserved range.
    """

    SIZE: ClassVar[int] = 1808
    NAME: ClassVar[str] = "SIGSTRUCT"
    SIGNED_RANGES: ClassVar[tuple[tuple[int, int], ...]] = ((0, 128), (900, 1028))
    FIELDS: ClassVar[tuple[Field, ...]] = (
        raw("header", 0, 16),
        u("vendor", 16, 4),
        u("date", 20, 4),
        raw("header2", 24, 16),
        u("swdefined", 40, 4),
        reserved("reserved1", 44, 84),
        raw("modulus", 128, 384),
        u("exponent", 512, 4),
        raw("signature", 516, 384),
        u("miscselect", 900, 4),
        u("miscmask", 904, 4),
        u("cet_attributes", 908, 1),
        u("cet_attributes_mask", 909, 1),
        reserved("reserved2", 910, 2),
        raw("isvfamilyid", 912, 16),
        nested("attributes", 928, Attributes),
        nested("attributemask", 944, Attributes),
        raw("enclavehash", 960, 32),
        reserved("reserved3", 992, 16),
        raw("isvextprodid", 1008, 16),
        u("isvprodid", 1024, 2),
        u("isvsvn", 1026, 2),
        reserved("reserved4", 1028, 12),
        raw("q1", 1040, 384),
        raw("q2", 1424, 384),
    )

    header: bytes = SIGSTRUCT_HEADER
    vendor: int = VENDOR_NONE
    date: int = 0
    header2: bytes = SIGSTRUCT_HEADER2
    swdefined: int = 0
    reserved1: bytes = zeros(84)
    modulus: bytes = zeros(384)
    exponent: int = SIGSTRUCT_EXPONENT
    signature: bytes = zeros(384)
    miscselect: int = 0
    miscmask: int = 0
    cet_attributes: int = 0
    cet_attributes_mask: int = 0
    reserved2: bytes = zeros(2)
    isvfamilyid: bytes = zeros(16)
    attributes: Attributes = Attributes()
    attributemask: Attributes = Attributes()
    enclavehash: bytes = zeros(32)
    reserved3: bytes = zeros(16)
    isvextprodid: bytes = zeros(16)
    isvprodid: int = 0
    isvsvn: int = 0
    reserved4: bytes = zeros(12)
    q1: bytes = zeros(384)
    q2: bytes = zeros(384)

    def _check_constants(self) -> None:
        if self.header not in (SIGSTRUCT_HEADER, SIGSTRUCT_HEADER_SDK_DEBUG):
            raise MalformedInput(
                "SIGSTRUCT.HEADER is not the SGX constant",
                field="sigstruct.header",
                offset=0,
                detail=[
                    f"expected: {SIGSTRUCT_HEADER.hex()} (or SDK type 0x80000000 in bytes 12..15)",
                    f"found:    {self.header.hex()}",
                ],
            )
        if self.vendor not in (VENDOR_NONE, VENDOR_INTEL):
            raise MalformedInput(
                f"SIGSTRUCT.VENDOR must be 0x0000 or 0x8086, found 0x{self.vendor:04x}",
                field="sigstruct.vendor",
                offset=16,
            )
        if self.header2 != SIGSTRUCT_HEADER2:
            raise MalformedInput(
                "SIGSTRUCT.HEADER2 is not the SGX constant",
                field="sigstruct.header2",
                offset=24,
                detail=[f"expected: {SIGSTRUCT_HEADER2.hex()}", f"found:    {self.header2.hex()}"],
            )
        if self.exponent != SIGSTRUCT_EXPONENT:
            raise MalformedInput(
                f"SIGSTRUCT.EXPONENT must be 3, found {self.exponent}",
                field="sigstruct.exponent",
                offset=512,
            )

    @property
    def header_type(self) -> str:
        """``"standard"`` for the SDM header, ``"sdk-debug"`` for the SDK's typed header."""
        if self.header == SIGSTRUCT_HEADER:
            return "standard"
        if self.header == SIGSTRUCT_HEADER_SDK_DEBUG:
            return "sdk-debug"
        return "invalid"

    @property
    def modulus_int(self) -> int:
        return int.from_bytes(self.modulus, "little")

    @property
    def signature_int(self) -> int:
        return int.from_bytes(self.signature, "little")

    @property
    def mrsigner(self) -> bytes:
        """SHA-256 of MODULUS as stored (little-endian) (SDM EINIT; spec §2.5)."""
        return hashlib.sha256(self.modulus).digest()

    @property
    def debug(self) -> bool:
        return self.attributes.debug

    def signed_bytes(self) -> bytes:
        """The 256 bytes the author signs: bytes 0..127 ‖ 900..1027 (spec §1.3)."""
        data = self.to_bytes()
        return data[0:128] + data[900:1028]

    def date_text(self) -> str:
        """DATE as ``YYYYMMDD``: the u32 0xYYYYMMDD printed in hex."""
        return f"{self.date:08x}"


@finalize
@dataclass(frozen=True, slots=True, kw_only=True)
class EinitToken(Structure):
    """EINITTOKEN, the launch token (304 bytes; spec §1.4). Bytes 0..191 are CMACed."""

    SIZE: ClassVar[int] = 304
    NAME: ClassVar[str] = "EINITTOKEN"
    MACED_SIZE: ClassVar[int] = 192
    FIELDS: ClassVar[tuple[Field, ...]] = (
        u("valid", 0, 4),
        reserved("reserved1", 4, 44),
        nested("attributes", 48, Attributes),
        raw("mrenclave", 64, 32),
        reserved("reserved2", 96, 32),
        raw("mrsigner", 128, 32),
        reserved("reserved3", 160, 32),
        raw("cpusvnle", 192, 16),
        u("isvprodidle", 208, 2),
        u("isvsvnle", 210, 2),
        u("cet_masked_attributes_le", 212, 1),
        reserved("reserved4", 213, 23),
        u("maskedmiscselectle", 236, 4),
        nested("maskedattributesle", 240, Attributes),
        raw("keyid", 256, 32),
        raw("mac", 288, 16),
    )

    valid: int = 0
    reserved1: bytes = zeros(44)
    attributes: Attributes = Attributes()
    mrenclave: bytes = zeros(32)
    reserved2: bytes = zeros(32)
    mrsigner: bytes = zeros(32)
    reserved3: bytes = zeros(32)
    cpusvnle: bytes = zeros(16)
    isvprodidle: int = 0
    isvsvnle: int = 0
    cet_masked_attributes_le: int = 0
    reserved4: bytes = zeros(23)
    maskedmiscselectle: int = 0
    maskedattributesle: Attributes = Attributes()
    keyid: bytes = zeros(32)
    mac: bytes = zeros(16)

    def _check_constants(self) -> None:
        if self.valid not in (0, 1):
            raise MalformedInput(
                f"EINITTOKEN.VALID must be 0 or 1 (bits 31:1 reserved), found 0x{self.valid:x}",
                field="einittoken.valid",
                offset=0,
            )

    def maced_bytes(self) -> bytes:
        """Bytes 0..191, the part the launch key's CMAC covers."""
        return self.to_bytes()[: self.MACED_SIZE]


@finalize
@dataclass(frozen=True, slots=True, kw_only=True)
class Secs(Structure):
    """SECS, the enclave control structure (4096 bytes; spec §1.2).

    The micro-architectural state the SDM keeps in the reserved tail (EID, PADDING, ISVFAMILYID,
    ISVEXTPRODID) has no architectural offset; the emulated processor keeps it beside the page.
    """

    SIZE: ClassVar[int] = 4096
    NAME: ClassVar[str] = "SECS"
    FIELDS: ClassVar[tuple[Field, ...]] = (
        u("size", 0, 8),
        u("baseaddr", 8, 8),
        u("ssaframesize", 16, 4),
        u("miscselect", 20, 4),
        u("cet_leg_bitmap_offset", 24, 8),
        u("cet_attributes", 32, 1),
        reserved("reserved1", 33, 15),
        nested("attributes", 48, Attributes),
        raw("mrenclave", 64, 32),
        reserved("reserved2", 96, 32),
        raw("mrsigner", 128, 32),
        reserved("reserved3", 160, 32),
        raw("configid", 192, 64),
        u("isvprodid", 256, 2),
        u("isvsvn", 258, 2),
        u("configsvn", 260, 2),
        reserved("reserved4", 262, 3834),
    )

    size: int = 0
    baseaddr: int = 0
    ssaframesize: int = 0
    miscselect: int = 0
    cet_leg_bitmap_offset: int = 0
    cet_attributes: int = 0
    reserved1: bytes = zeros(15)
    attributes: Attributes = Attributes()
    mrenclave: bytes = zeros(32)
    reserved2: bytes = zeros(32)
    mrsigner: bytes = zeros(32)
    reserved3: bytes = zeros(32)
    configid: bytes = zeros(64)
    isvprodid: int = 0
    isvsvn: int = 0
    configsvn: int = 0
    reserved4: bytes = zeros(3834)


@finalize
@dataclass(frozen=True, slots=True, kw_only=True)
class Secinfo(Structure):
    """SECINFO (64 bytes; spec §1.5): FLAGS (R/W/X, state bits, page type in 15:8)."""

    SIZE: ClassVar[int] = 64
    NAME: ClassVar[str] = "SECINFO"
    FIELDS: ClassVar[tuple[Field, ...]] = (u("flags", 0, 8), reserved("reserved1", 8, 56))

    flags: int = 0
    reserved1: bytes = zeros(56)

    def _check_constants(self) -> None:
        if self.flags & SECINFO_FLAGS_RESERVED_MASK:
            raise MalformedInput(
                f"SECINFO.FLAGS has reserved bits set: 0x{self.flags:x}",
                field="secinfo.flags",
                offset=0,
            )

    @property
    def page_type(self) -> int:
        return (self.flags & SECINFO_PAGE_TYPE_MASK) >> SECINFO_PAGE_TYPE_SHIFT

    @property
    def permissions(self) -> int:
        return self.flags & SECINFO_PERMISSION_MASK


@finalize
@dataclass(frozen=True, slots=True, kw_only=True)
class PageInfo(Structure):
    """PAGEINFO (32 bytes; spec §1.6): the operand block of EADD, ECREATE, EWB, ELDU."""

    SIZE: ClassVar[int] = 32
    NAME: ClassVar[str] = "PAGEINFO"
    FIELDS: ClassVar[tuple[Field, ...]] = (
        u("linaddr", 0, 8),
        u("srcpge", 8, 8),
        u("secinfo", 16, 8),
        u("secs", 24, 8),
    )

    linaddr: int = 0
    srcpge: int = 0
    secinfo: int = 0
    secs: int = 0


@finalize
@dataclass(frozen=True, slots=True, kw_only=True)
class Tcs(Structure):
    """TCS, the thread control structure (4096 bytes; spec §1.7, SDM field names)."""

    SIZE: ClassVar[int] = 4096
    NAME: ClassVar[str] = "TCS"
    FIELDS: ClassVar[tuple[Field, ...]] = (
        u("state", 0, 8),
        u("flags", 8, 8),
        u("ossa", 16, 8),
        u("cssa", 24, 4),
        u("nssa", 28, 4),
        u("oentry", 32, 8),
        u("aep", 40, 8),
        u("ofsbase", 48, 8),
        u("ogsbase", 56, 8),
        u("fslimit", 64, 4),
        u("gslimit", 68, 4),
        reserved("reserved1", 72, 4024),
    )

    state: int = 0
    flags: int = 0
    ossa: int = 0
    cssa: int = 0
    nssa: int = 0
    oentry: int = 0
    aep: int = 0
    ofsbase: int = 0
    ogsbase: int = 0
    fslimit: int = 0
    gslimit: int = 0
    reserved1: bytes = zeros(4024)

    def _check_constants(self) -> None:
        if self.flags & TCS_FLAGS_RESERVED_MASK:
            raise MalformedInput(
                f"TCS.FLAGS has reserved bits set: 0x{self.flags:x}", field="tcs.flags", offset=8
            )


REPORT_BODY_FIELDS: tuple[Field, ...] = (
    raw("cpusvn", 0, 16),
    u("miscselect", 16, 4),
    u("cet_attributes", 20, 1),
    reserved("reserved1", 21, 11),
    raw("isvextprodid", 32, 16),
    nested("attributes", 48, Attributes),
    raw("mrenclave", 64, 32),
    reserved("reserved2", 96, 32),
    raw("mrsigner", 128, 32),
    reserved("reserved3", 160, 32),
    raw("configid", 192, 64),
    u("isvprodid", 256, 2),
    u("isvsvn", 258, 2),
    u("configsvn", 260, 2),
    reserved("reserved4", 262, 42),
    raw("isvfamilyid", 304, 16),
    raw("reportdata", 320, 64),
)
"""The report body's layout (bytes 0..383 of a REPORT, ``sgx_report_body_t``; spec §1.9): the
fields :class:`Report` starts with and the quote's REPORT_BODY
(:class:`sgxlaunch.formats.quote.ReportBody`) consists of."""


@finalize
@dataclass(frozen=True, slots=True, kw_only=True)
class Report(Structure):
    """REPORT (432 bytes; spec §1.9): body (0..383), KEYID, MAC."""

    SIZE: ClassVar[int] = 432
    NAME: ClassVar[str] = "REPORT"
    BODY_SIZE: ClassVar[int] = 384
    FIELDS: ClassVar[tuple[Field, ...]] = (
        *REPORT_BODY_FIELDS,
        raw("keyid", 384, 32),
        raw("mac", 416, 16),
    )

    cpusvn: bytes = zeros(16)
    miscselect: int = 0
    cet_attributes: int = 0
    reserved1: bytes = zeros(11)
    isvextprodid: bytes = zeros(16)
    attributes: Attributes = Attributes()
    mrenclave: bytes = zeros(32)
    reserved2: bytes = zeros(32)
    mrsigner: bytes = zeros(32)
    reserved3: bytes = zeros(32)
    configid: bytes = zeros(64)
    isvprodid: int = 0
    isvsvn: int = 0
    configsvn: int = 0
    reserved4: bytes = zeros(42)
    isvfamilyid: bytes = zeros(16)
    reportdata: bytes = zeros(64)
    keyid: bytes = zeros(32)
    mac: bytes = zeros(16)

    def body_bytes(self) -> bytes:
        """Bytes 0..383, the part the report MAC covers."""
        return self.to_bytes()[: self.BODY_SIZE]


@finalize
@dataclass(frozen=True, slots=True, kw_only=True)
class TargetInfo(Structure):
    """TARGETINFO (512 bytes; spec §1.9): who a REPORT is for."""

    SIZE: ClassVar[int] = 512
    NAME: ClassVar[str] = "TARGETINFO"
    FIELDS: ClassVar[tuple[Field, ...]] = (
        raw("mrenclave", 0, 32),
        nested("attributes", 32, Attributes),
        u("cet_attributes", 48, 1),
        reserved("reserved1", 49, 1),
        u("configsvn", 50, 2),
        u("miscselect", 52, 4),
        reserved("reserved2", 56, 8),
        raw("configid", 64, 64),
        reserved("reserved3", 128, 384),
    )

    mrenclave: bytes = zeros(32)
    attributes: Attributes = Attributes()
    cet_attributes: int = 0
    reserved1: bytes = zeros(1)
    configsvn: int = 0
    miscselect: int = 0
    reserved2: bytes = zeros(8)
    configid: bytes = zeros(64)
    reserved3: bytes = zeros(384)


@finalize
@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRequest(Structure):
    """KEYREQUEST (512 bytes; spec §1.9): the operand of EGETKEY."""

    SIZE: ClassVar[int] = 512
    NAME: ClassVar[str] = "KEYREQUEST"
    FIELDS: ClassVar[tuple[Field, ...]] = (
        u("keyname", 0, 2),
        u("keypolicy", 2, 2),
        u("isvsvn", 4, 2),
        reserved("reserved1", 6, 2),
        raw("cpusvn", 8, 16),
        nested("attributemask", 24, Attributes),
        raw("keyid", 40, 32),
        u("miscmask", 72, 4),
        u("configsvn", 76, 2),
        reserved("reserved2", 78, 434),
    )

    keyname: int = 0
    keypolicy: int = 0
    isvsvn: int = 0
    reserved1: bytes = zeros(2)
    cpusvn: bytes = zeros(16)
    attributemask: Attributes = Attributes()
    keyid: bytes = zeros(32)
    miscmask: int = 0
    configsvn: int = 0
    reserved2: bytes = zeros(434)


@finalize
@dataclass(frozen=True, slots=True, kw_only=True)
class Pcmd(Structure):
    """PCMD, the paging crypto metadata (128 bytes; spec §1.8)."""

    SIZE: ClassVar[int] = 128
    NAME: ClassVar[str] = "PCMD"
    FIELDS: ClassVar[tuple[Field, ...]] = (
        nested("secinfo", 0, Secinfo),
        u("enclaveid", 64, 8),
        reserved("reserved1", 72, 40),
        raw("mac", 112, 16),
    )

    secinfo: Secinfo = Secinfo()
    enclaveid: int = 0
    reserved1: bytes = zeros(40)
    mac: bytes = zeros(16)


ALL_STRUCTURES: tuple[type[Structure], ...] = (
    Attributes,
    Sigstruct,
    EinitToken,
    Secs,
    Secinfo,
    PageInfo,
    Tcs,
    Report,
    TargetInfo,
    KeyRequest,
    Pcmd,
)

assert Sigstruct.SIZE == 1808 and EinitToken.SIZE == 304 and Report.SIZE == 432
assert Secs.SIZE == Tcs.SIZE == 4096 and Secinfo.SIZE == 64 and PageInfo.SIZE == 32
assert TargetInfo.SIZE == KeyRequest.SIZE == 512 and Pcmd.SIZE == 128
