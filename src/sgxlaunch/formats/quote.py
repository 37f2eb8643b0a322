"""DCAP ECDSA quotes v3, v4 and v5, read strictly (``../shared/reference/dcap-quote-spec.md``).

Bytes in, frozen dataclasses out; nothing here verifies a signature or a certificate (that is
:mod:`sgxlaunch.attest`, through the ``dcap-qvl`` library). Field names are the spec's, in lower
case: the header of ``sgx_quote_header_t`` / ``sgx_quote4_header_t`` (§1.1, §2), the SGX report
body (``sgx_report_body_t``, §1.2, the first 384 bytes of REPORT), the TD report 1.0 / 1.5
(``sgx_report2_body_t``, §2), the signature data (§1.3 for v3; §2 for v4/v5, whose outer
certification data of type 6 holds the QE report, its signature, the QE authentication data and
the inner certification data).

Checks, in order, each raising :class:`~sgxlaunch.errors.MalformedInput` with the byte offset
(from the start of the quote) and the field at fault:

1. at least the 48-byte header; ``version`` ∈ {3, 4, 5}; ``att_key_type`` = 2 (ECDSA-256 with
   P-256, the only one QVL accepts); ``tee_type`` ∈ {0 (SGX), 0x81 (TDX)}, and 0 for v3;
   ``qe_vendor_id`` = Intel's QE vendor ID (QVL ``Quote::validate``);
2. v5 only: ``body_type`` ∈ {1, 2, 3} with ``body_size`` 384 / 584 / 648; SGX needs type 1 and
   TDX refuses it (QVL ``Quote::validate``);
3. the report body is complete; in an SGX report body every reserved range is zero;
4. ``signature_data_len`` fits in the rest of the quote (QVL: ``<=``), and whatever follows
   the signature data is zero padding (a quote buffer larger than the quote, as in the real
   TDX sample); a non-zero byte there is refused;
5. v3: ISV signature, attestation key, QE report (reserved ranges zero), QE report signature,
   QE authentication data (its size within the signature data), certification data type
   1…5 whose size ends exactly at the end of the signature data;
6. v4/v5: quote signature, attestation key, certification data type 6 whose size ends exactly
   at the end; inside it the QE report, its signature, the QE authentication data and the
   inner certification data (type 1…5) ending exactly at the end of the outer one.

:func:`parse_quote` does all of it; the dataclasses' ``to_dict`` give JSON-ready views.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from sgxlaunch.arch._layout import Field, Structure, finalize, raw, u, zeros
from sgxlaunch.arch.structs import REPORT_BODY_FIELDS, Attributes
from sgxlaunch.errors import MalformedInput

QUOTE_VERSIONS = (3, 4, 5)
"""Quote versions read here (QVL ``ALLOWED_QUOTE_VERSIONS``)."""
ATT_KEY_TYPE_ECDSA_P256 = 2
"""``sgx_ql_attestation_algorithm_id_t``: ECDSA-256-with-P-256 curve, the one QVL accepts."""
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
"""QVL ``INTEL_QE_VENDOR_ID``."""

BODY_TYPE_SGX = 1
BODY_TYPE_TD10 = 2
BODY_TYPE_TD15 = 3
BODY_SIZES = {BODY_TYPE_SGX: 384, BODY_TYPE_TD10: 584, BODY_TYPE_TD15: 648}
"""v5 body type → body size (``sgx_quote_5.h``)."""

CERT_TYPE_PPID_CLEARTEXT = 1
CERT_TYPE_PPID_RSA2048 = 2
CERT_TYPE_PPID_RSA3072 = 3
CERT_TYPE_PCK_LEAF = 4
CERT_TYPE_PCK_CHAIN = 5
CERT_TYPE_QE_REPORT = 6
CERT_TYPE_NAMES = {
    1: "PPID cleartext",
    2: "PPID RSA-2048-OAEP",
    3: "PPID RSA-3072-OAEP",
    4: "PCK leaf certificate",
    5: "PCK certificate chain",
    6: "QE report certification data",
}
"""``sgx_ql_cert_key_type_t`` (``sgx_quote_3.h``)."""

HEADER_SIZE = 48
SIGNATURE_SIZE = 64
"""An ECDSA-P256 signature: r ‖ s, 32 bytes each, big-endian."""
ATTESTATION_KEY_SIZE = 64
"""An ECDSA-P256 public key: X ‖ Y, 32 bytes each, big-endian."""
MIN_QUOTE_SIZE = 48 + 384 + 4 + (64 + 64 + 384 + 64 + 2 + 2 + 4)
"""QVL ``QUOTE_MIN_BYTE_LEN`` (1020): the shortest v3 quote with empty auth and cert data."""
MAX_QUOTE_SIZE = 1 << 20
"""Largest quote read (1 MiB; real ones are about 5 KB)."""

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_T = TypeVar("_T", bound=Structure)
_NO_ATTRIBUTES = Attributes()


# --- fixed-layout structures (one table each, as in sgxlaunch.arch) -----------------------------


@finalize
@dataclass(frozen=True, slots=True, kw_only=True)
class QuoteHeader(Structure):
    """The 48-byte quote header (spec §1.1 for v3, §2 for v4/v5).

    Bytes 4..7 are ``att_key_data_0`` in ``sgx_quote_3.h`` and ``tee_type`` in
    ``sgx_quote4_header_t``; QVL reads them as ``teeType`` in every version (0 for v3). Bytes
    8..11 are ``qe_svn`` and ``pce_svn`` in v3 and ``reserved`` in ``sgx_quote4_header_t``;
    QVL (and dcap-qvl) keep reading them as ``qe_svn`` / ``pce_svn``, and so do we (neither is
    compared with anything by a verifier).
    """

    SIZE: ClassVar[int] = 48
    NAME: ClassVar[str] = "QUOTE_HEADER"
    FIELDS: ClassVar[tuple[Field, ...]] = (
        u("version", 0, 2),
        u("att_key_type", 2, 2),
        u("tee_type", 4, 4),
        u("qe_svn", 8, 2),
        u("pce_svn", 10, 2),
        raw("qe_vendor_id", 12, 16),
        raw("user_data", 28, 20),
    )

    version: int = 3
    att_key_type: int = ATT_KEY_TYPE_ECDSA_P256
    tee_type: int = TEE_TYPE_SGX
    qe_svn: int = 0
    pce_svn: int = 0
    qe_vendor_id: bytes = INTEL_QE_VENDOR_ID
    user_data: bytes = zeros(20)


@finalize
@dataclass(frozen=True, slots=True, kw_only=True)
class ReportBody(Structure):
    """The SGX report body (384 bytes, ``sgx_report_body_t``; spec §1.2): REPORT[0:384]."""

    SIZE: ClassVar[int] = 384
    NAME: ClassVar[str] = "REPORT_BODY"
    FIELDS: ClassVar[tuple[Field, ...]] = REPORT_BODY_FIELDS  # REPORT's first 384 bytes

    cpusvn: bytes = zeros(16)
    miscselect: int = 0
    cet_attributes: int = 0
    reserved1: bytes = zeros(11)
    isvextprodid: bytes = zeros(16)
    attributes: Attributes = _NO_ATTRIBUTES
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


_TD10_FIELDS: tuple[Field, ...] = (
    raw("tee_tcb_svn", 0, 16),
    raw("mrseam", 16, 48),
    raw("mrsignerseam", 64, 48),
    raw("seamattributes", 112, 8),
    raw("tdattributes", 120, 8),
    raw("xfam", 128, 8),
    raw("mrtd", 136, 48),
    raw("mrconfigid", 184, 48),
    raw("mrowner", 232, 48),
    raw("mrownerconfig", 280, 48),
    raw("rtmr0", 328, 48),
    raw("rtmr1", 376, 48),
    raw("rtmr2", 424, 48),
    raw("rtmr3", 472, 48),
    raw("reportdata", 520, 64),
)


@finalize
@dataclass(frozen=True, slots=True, kw_only=True)
class TdReport10(Structure):
    """The TD report 1.0 body (584 bytes, ``sgx_report2_body_t``; spec §2).

    ``seamattributes``, ``tdattributes`` and ``xfam`` are kept as their 8 stored bytes (as the
    spec and dcap-qvl do).
    """

    SIZE: ClassVar[int] = 584
    NAME: ClassVar[str] = "TD_REPORT10"
    FIELDS: ClassVar[tuple[Field, ...]] = _TD10_FIELDS

    tee_tcb_svn: bytes = zeros(16)
    mrseam: bytes = zeros(48)
    mrsignerseam: bytes = zeros(48)
    seamattributes: bytes = zeros(8)
    tdattributes: bytes = zeros(8)
    xfam: bytes = zeros(8)
    mrtd: bytes = zeros(48)
    mrconfigid: bytes = zeros(48)
    mrowner: bytes = zeros(48)
    mrownerconfig: bytes = zeros(48)
    rtmr0: bytes = zeros(48)
    rtmr1: bytes = zeros(48)
    rtmr2: bytes = zeros(48)
    rtmr3: bytes = zeros(48)
    reportdata: bytes = zeros(64)


@finalize
@dataclass(frozen=True, slots=True, kw_only=True)
class TdReport15(Structure):
    """The TD report 1.5 body (648 bytes; spec §2): 1.0 + TEE_TCB_SVN2 + MRSERVICETD."""

    SIZE: ClassVar[int] = 648
    NAME: ClassVar[str] = "TD_REPORT15"
    FIELDS: ClassVar[tuple[Field, ...]] = (
        *_TD10_FIELDS,
        raw("tee_tcb_svn2", 584, 16),
        raw("mrservicetd", 600, 48),
    )

    tee_tcb_svn: bytes = zeros(16)
    mrseam: bytes = zeros(48)
    mrsignerseam: bytes = zeros(48)
    seamattributes: bytes = zeros(8)
    tdattributes: bytes = zeros(8)
    xfam: bytes = zeros(8)
    mrtd: bytes = zeros(48)
    mrconfigid: bytes = zeros(48)
    mrowner: bytes = zeros(48)
    mrownerconfig: bytes = zeros(48)
    rtmr0: bytes = zeros(48)
    rtmr1: bytes = zeros(48)
    rtmr2: bytes = zeros(48)
    rtmr3: bytes = zeros(48)
    reportdata: bytes = zeros(64)
    tee_tcb_svn2: bytes = zeros(16)
    mrservicetd: bytes = zeros(48)


QuoteBody = ReportBody | TdReport10 | TdReport15
"""The attested body: an SGX report body or a TD report."""

_BODY_CLASSES: dict[int, type[ReportBody] | type[TdReport10] | type[TdReport15]] = {
    BODY_TYPE_SGX: ReportBody,
    BODY_TYPE_TD10: TdReport10,
    BODY_TYPE_TD15: TdReport15,
}


# --- variable-length parts ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertificationData:
    """Certification data: its type (``sgx_ql_cert_key_type_t``) and its bytes as stored.

    Attributes:
        cert_type: 1 … 5 (6 is the v4/v5 outer wrapper, parsed into :class:`SignatureData`).
        data: the payload; for type 5 the PEM chain (PCK leaf, intermediate, root, in any order)
            usually followed by one NUL byte, counted in the size.
        offset: where the payload starts in the quote.
    """

    cert_type: int
    data: bytes
    offset: int

    @property
    def type_name(self) -> str:
        return CERT_TYPE_NAMES.get(self.cert_type, "unknown")

    def pem_chain(self) -> bytes | None:
        """The PEM text of a type-5 chain (trailing NUL bytes dropped), else ``None``."""
        if self.cert_type != CERT_TYPE_PCK_CHAIN:
            return None
        return self.data.rstrip(b"\x00")

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "cert_type": self.cert_type,
            "cert_type_name": self.type_name,
            "size": len(self.data),
        }
        chain = self.pem_chain()
        if chain is not None and chain.isascii():
            doc["pem"] = chain.decode("ascii")
        else:
            doc["data"] = self.data.hex()
        return doc


@dataclass(frozen=True, slots=True)
class SignatureData:
    """The quote's signature data (spec §1.3 for v3, §2 for v4/v5).

    Attributes:
        quote_signature: ECDSA signature by the attestation key over the header and body
            (v3: the "ISV report signature" over quote[0:432]).
        attestation_key: the attestation public key, X ‖ Y.
        qe_report: the Quoting Enclave's report body.
        qe_report_signature: signature over ``qe_report`` by the PCK leaf key.
        qe_auth_data: the QE authentication data (Intel's QE3 emits 32 bytes ``00 … 1f``).
        certification_data: the certification data (v4/v5: the inner one).
        qe_report_certification_size: v4/v5 only: the size of the outer type-6 certification
            data (``None`` for v3).
    """

    quote_signature: bytes
    attestation_key: bytes
    qe_report: ReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification_data: CertificationData
    qe_report_certification_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "quote_signature": self.quote_signature.hex(),
            "attestation_key": self.attestation_key.hex(),
        }
        if self.qe_report_certification_size is not None:
            doc["qe_report_certification_data"] = {
                "cert_type": CERT_TYPE_QE_REPORT,
                "size": self.qe_report_certification_size,
            }
        doc["qe_report"] = self.qe_report.to_dict()
        doc["qe_report_signature"] = self.qe_report_signature.hex()
        doc["qe_auth_data"] = self.qe_auth_data.hex()
        doc["certification_data"] = self.certification_data.to_dict()
        return doc


@dataclass(frozen=True, slots=True)
class Quote:
    """A parsed DCAP quote.

    Attributes:
        header: the 48-byte header.
        body_type: 1 (SGX report), 2 (TD report 1.0) or 3 (TD report 1.5); stored in the quote
            for v5, implied by ``tee_type`` for v3/v4.
        body: the attested report body.
        signature_data_len: the stored length of the signature data.
        signature_data: the parsed signature data.
        signed_size: how many leading bytes the quote signature covers (432, 632, or
            54 + body size for v5).
        padding: how many zero bytes follow the signature data (a quote buffer larger than
            the quote; the real TDX sample carries 70).
    """

    header: QuoteHeader
    body_type: int
    body: QuoteBody
    signature_data_len: int
    signature_data: SignatureData
    signed_size: int
    padding: int = 0

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def is_tdx(self) -> bool:
        return self.header.tee_type == TEE_TYPE_TDX

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (integers as numbers, bytes as lower-case hex)."""
        body_key = "report_body" if isinstance(self.body, ReportBody) else "td_report"
        doc: dict[str, Any] = {
            "header": self.header.to_dict(),
            "tee": "TDX" if self.is_tdx else "SGX",
            "body_type": self.body_type,
        }
        doc[body_key] = self.body.to_dict()
        doc["signature_data_len"] = self.signature_data_len
        doc["signature_data"] = self.signature_data.to_dict()
        doc["padding"] = self.padding
        return doc


# --- the parser ---------------------------------------------------------------------------------


def _fail(message: str, field: str, offset: int) -> MalformedInput:
    return MalformedInput(f"quote: {message}", field=field, offset=offset)


class _Reader:
    """Reads the quote front to back, naming the field and offset of whatever is missing."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data = data
        self.pos = pos
        self.end = end

    def take(self, size: int, field: str) -> bytes:
        if self.end - self.pos < size:
            raise _fail(
                f"{field} needs {size} bytes at offset {self.pos}, "
                f"only {max(self.end - self.pos, 0)} remain",
                field,
                self.pos,
            )
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def u16(self, field: str) -> int:
        value: int = _U16.unpack(self.take(2, field))[0]
        return value

    def u32(self, field: str) -> int:
        value: int = _U32.unpack(self.take(4, field))[0]
        return value


def _unpack(cls: type[_T], data: bytes) -> _T:
    """Build a structure from exactly ``cls.SIZE`` bytes in one ``struct`` call.

    ``struct.unpack`` already yields integers and byte strings of the table's sizes, so the
    per-field validation a constructed instance gets (``__post_init__``) is skipped: it would
    only re-check what the format guarantees, at several times the cost of the parse.
    """
    build = _BUILDERS.get(cls) or _builder(cls)
    obj: _T = build(cls._STRUCT.unpack(data))
    return obj


_BUILDERS: dict[type[Any], Any] = {}


def _builder(cls: type[Any]) -> Any:
    """Generate, once per structure, a function that stores unpacked values field by field.

    The fields are stored through the slots' own descriptors (the frozen ``__setattr__`` is
    bypassed, as the dataclass's generated ``__init__`` does); nested structures are built by
    their own generated function. The generated source is only this table walk.
    """
    setters = [cls.__dict__[f.name].__set__ for f in cls.FIELDS]
    nested_builders = {}
    lines = ["def build(values):", "    obj = new(cls)"]
    for index, fld in enumerate(cls.FIELDS):
        value = f"values[{index}]"
        if fld.kind == "struct":
            nested_builders[index] = _BUILDERS.get(fld.nested) or _builder(fld.nested)
            value = f"nested[{index}](nested_struct[{index}].unpack({value}))"
        lines.append(f"    setters[{index}](obj, {value})")
    lines.append("    return obj")
    namespace: dict[str, Any] = {
        "new": object.__new__,
        "cls": cls,
        "setters": setters,
        "nested": nested_builders,
        "nested_struct": {i: cls.FIELDS[i].nested._STRUCT for i in nested_builders},
    }
    exec(compile("\n".join(lines), f"<build {cls.__name__}>", "exec"), namespace)  # noqa: S102
    _BUILDERS[cls] = namespace["build"]
    return namespace["build"]


def _structure(cls: type[_T], data: bytes, offset: int, field: str) -> _T:
    """Strictly parse a fixed structure at ``offset``: every reserved range zero.

    Raises:
        MalformedInput: naming ``field.reserved…`` and the quote offset of the first
            non-zero reserved byte.
    """
    reserved = _RESERVED.get(cls)
    if reserved is None:
        reserved = _RESERVED[cls] = tuple(f for f in cls.FIELDS if f.kind == "reserved")
    for fld in reserved:
        if data.count(0, fld.offset, fld.end) != fld.size:
            value = data[fld.offset : fld.end]
            first = next(i for i, b in enumerate(value) if b)
            raise _fail(
                f"{field}: reserved bytes {fld.offset}..{fld.end - 1} must be zero",
                f"{field}.{fld.name}",
                offset + fld.offset + first,
            )
    return _unpack(cls, data)


_RESERVED: dict[type[Any], tuple[Field, ...]] = {}


def parse_header(data: bytes) -> QuoteHeader:
    """Read and check the 48-byte header (checks 1 of the module docstring).

    Raises:
        MalformedInput: naming the field and offset.
    """
    if len(data) < HEADER_SIZE:
        raise _fail(
            f"a quote is at least {HEADER_SIZE} bytes of header, got {len(data)}",
            "header",
            len(data),
        )
    header = _unpack(QuoteHeader, data[:HEADER_SIZE])
    if header.version not in QUOTE_VERSIONS:
        raise _fail(
            f"version {header.version} is not supported (expected 3, 4 or 5)", "header.version", 0
        )
    if header.att_key_type != ATT_KEY_TYPE_ECDSA_P256:
        raise _fail(
            f"att_key_type {header.att_key_type} is not supported "
            f"(expected {ATT_KEY_TYPE_ECDSA_P256}, ECDSA-256-with-P-256)",
            "header.att_key_type",
            2,
        )
    if header.tee_type not in (TEE_TYPE_SGX, TEE_TYPE_TDX):
        raise _fail(
            f"tee_type 0x{header.tee_type:x} is not SGX (0x0) or TDX (0x81)", "header.tee_type", 4
        )
    if header.version == 3 and header.tee_type != TEE_TYPE_SGX:
        raise _fail(
            f"a version 3 quote is SGX only: tee_type (att_key_data_0) must be 0, "
            f"found 0x{header.tee_type:x}",
            "header.tee_type",
            4,
        )
    if header.qe_vendor_id != INTEL_QE_VENDOR_ID:
        raise _fail(
            f"qe_vendor_id {header.qe_vendor_id.hex()} is not Intel's QE vendor ID "
            f"{INTEL_QE_VENDOR_ID.hex()}",
            "header.qe_vendor_id",
            12,
        )
    return header


def parse_quote(data: bytes | bytearray | memoryview) -> Quote:
    """Parse a DCAP quote v3/v4/v5 strictly (the checks are listed in the module docstring).

    Args:
        data: the whole quote, nothing before or after it.

    Returns:
        The parsed :class:`Quote`.

    Raises:
        MalformedInput: the first check that fails, with the field and the byte offset.
    """
    data = bytes(data)
    if len(data) > MAX_QUOTE_SIZE:
        raise _fail(f"{len(data)} bytes is more than the {MAX_QUOTE_SIZE}-byte limit", "quote", 0)
    header = parse_header(data)
    reader = _Reader(data, HEADER_SIZE, len(data))
    tdx = header.tee_type == TEE_TYPE_TDX
    if header.version == 5:
        body_type = reader.u16("body_type")
        body_size = reader.u32("body_size")
        if body_type not in BODY_SIZES:
            raise _fail(
                f"body_type {body_type} is not 1 (SGX report), 2 (TD report 1.0) "
                f"or 3 (TD report 1.5)",
                "body_type",
                HEADER_SIZE,
            )
        if tdx == (body_type == BODY_TYPE_SGX):
            expected = "2 or 3 (a TD report)" if tdx else "1 (an SGX report)"
            raise _fail(
                f"body_type {body_type} does not fit tee_type 0x{header.tee_type:x}: "
                f"expected {expected}",
                "body_type",
                HEADER_SIZE,
            )
        if body_size != BODY_SIZES[body_type]:
            raise _fail(
                f"body_size {body_size} is not the {BODY_SIZES[body_type]} bytes of "
                f"body type {body_type}",
                "body_size",
                HEADER_SIZE + 2,
            )
    else:
        body_type = BODY_TYPE_TD10 if tdx else BODY_TYPE_SGX
    body_offset = reader.pos
    body_name = "report_body" if body_type == BODY_TYPE_SGX else "td_report"
    body_bytes = reader.take(BODY_SIZES[body_type], body_name)
    body: QuoteBody = _structure(_BODY_CLASSES[body_type], body_bytes, body_offset, body_name)
    signed_size = reader.pos
    len_offset = reader.pos
    signature_data_len = reader.u32("signature_data_len")
    remaining = reader.end - reader.pos
    if signature_data_len > remaining:
        raise _fail(
            f"signature_data_len {signature_data_len} is more than the {remaining} bytes after it",
            "signature_data_len",
            len_offset,
        )
    end = reader.pos + signature_data_len
    padding = data[end:]
    if padding.count(0) != len(padding):
        first = next(i for i, b in enumerate(padding) if b)
        raise _fail(
            f"{len(padding)} bytes follow the signature data and are not zero padding "
            f"(byte {end + first} is 0x{padding[first]:02x})",
            "padding",
            end + first,
        )
    reader.end = end
    if header.version == 3:
        signature_data = _signature_data_v3(reader)
    else:
        signature_data = _signature_data_v4(reader)
    return Quote(
        header, body_type, body, signature_data_len, signature_data, signed_size, len(padding)
    )


def _qe_part(reader: _Reader) -> tuple[ReportBody, bytes, bytes]:
    qe_offset = reader.pos
    qe_report = _structure(ReportBody, reader.take(384, "qe_report"), qe_offset, "qe_report")
    qe_report_signature = reader.take(SIGNATURE_SIZE, "qe_report_signature")
    auth_offset = reader.pos
    auth_size = reader.u16("qe_auth_data_size")
    if auth_size > reader.end - reader.pos:
        raise _fail(
            f"qe_auth_data size {auth_size} is more than the {reader.end - reader.pos} "
            f"bytes that remain",
            "qe_auth_data_size",
            auth_offset,
        )
    qe_auth_data = reader.take(auth_size, "qe_auth_data")
    return qe_report, qe_report_signature, qe_auth_data


def _certification(reader: _Reader, allowed: tuple[int, ...], name: str) -> CertificationData:
    type_offset = reader.pos
    cert_type = reader.u16(f"{name}_type")
    if cert_type not in allowed:
        expected = ", ".join(str(t) for t in allowed)
        raise _fail(
            f"{name} type {cert_type} is not supported here (expected {expected})",
            f"{name}_type",
            type_offset,
        )
    size_offset = reader.pos
    size = reader.u32(f"{name}_size")
    remaining = reader.end - reader.pos
    if size != remaining:
        raise _fail(
            f"{name} size {size} does not end exactly at the end of the data that holds it "
            f"({remaining} bytes remain)",
            f"{name}_size",
            size_offset,
        )
    offset = reader.pos
    return CertificationData(cert_type, reader.take(size, name), offset)


def _signature_data_v3(reader: _Reader) -> SignatureData:
    quote_signature = reader.take(SIGNATURE_SIZE, "quote_signature")
    attestation_key = reader.take(ATTESTATION_KEY_SIZE, "attestation_key")
    qe_report, qe_report_signature, qe_auth_data = _qe_part(reader)
    certification = _certification(reader, (1, 2, 3, 4, 5), "certification_data")
    return SignatureData(
        quote_signature,
        attestation_key,
        qe_report,
        qe_report_signature,
        qe_auth_data,
        certification,
    )


def _signature_data_v4(reader: _Reader) -> SignatureData:
    quote_signature = reader.take(SIGNATURE_SIZE, "quote_signature")
    attestation_key = reader.take(ATTESTATION_KEY_SIZE, "attestation_key")
    outer = _certification(reader, (CERT_TYPE_QE_REPORT,), "qe_report_certification_data")
    inner_reader = _Reader(reader.data, outer.offset, outer.offset + len(outer.data))
    qe_report, qe_report_signature, qe_auth_data = _qe_part(inner_reader)
    certification = _certification(inner_reader, (1, 2, 3, 4, 5), "certification_data")
    return SignatureData(
        quote_signature,
        attestation_key,
        qe_report,
        qe_report_signature,
        qe_auth_data,
        certification,
        len(outer.data),
    )


__all__ = [
    "ATT_KEY_TYPE_ECDSA_P256",
    "BODY_SIZES",
    "CERT_TYPE_NAMES",
    "INTEL_QE_VENDOR_ID",
    "MAX_QUOTE_SIZE",
    "MIN_QUOTE_SIZE",
    "QUOTE_VERSIONS",
    "TEE_TYPE_SGX",
    "TEE_TYPE_TDX",
    "CertificationData",
    "Quote",
    "QuoteBody",
    "QuoteHeader",
    "ReportBody",
    "SignatureData",
    "TdReport10",
    "TdReport15",
    "parse_header",
    "parse_quote",
]
