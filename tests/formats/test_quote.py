"""The strict DCAP quote parser (``sgxlaunch.formats.quote``) on every vector quote.

Expected fields come from ``../shared/reference/dcap-quote-spec.md`` (§1, §2, §4.1) and
PROVENANCE.md §5; the differential test compares with dcap-qvl's own parser.
"""

from __future__ import annotations

import struct

import dcap_qvl
import pytest

from sgxlaunch.arch import Attributes, Report
from sgxlaunch.errors import MalformedInput
from sgxlaunch.formats.quote import (
    INTEL_QE_VENDOR_ID,
    Quote,
    ReportBody,
    TdReport10,
    TdReport15,
    parse_quote,
)
from tests.support.dcap import QUOTES, quote_bytes

QE3_MRSIGNER = "8c4f5775d796503e96137f77c68a829a0056ac8ded70140b081b094490c57bff"


def test_qvl_sample_quote_field_for_field_as_spec_4_1() -> None:
    data = quote_bytes("dcap/qvl_sampleData/quote.dat")
    assert len(data) == 1054
    quote = parse_quote(data)
    h = quote.header
    assert (h.version, h.att_key_type, h.tee_type, h.qe_svn, h.pce_svn) == (3, 2, 0, 0, 3)
    assert h.qe_vendor_id == INTEL_QE_VENDOR_ID
    assert h.user_data.hex() == "ef8f440cf9a1b29e378f44ede54fb29b3b263edf"
    assert isinstance(quote.body, ReportBody)
    assert quote.body.to_bytes() == bytes(384)  # "ISV report all zeros"
    assert quote.signature_data_len == 618 == 1054 - 436
    sig = quote.signature_data
    assert sig.attestation_key.hex().startswith("5b020774")
    assert sig.attestation_key.hex().endswith("f98c")
    qe = sig.qe_report
    assert qe.cpusvn.hex() == "00030000000101000000000000000000"
    assert qe.to_bytes()[16:20].hex() == "d182b18c"  # miscselect bytes
    assert qe.to_bytes()[48:64].hex() == "70c8cbf48bd76eab9c8126ce95e96c90"  # attributes
    assert qe.mrenclave.hex().startswith("a3141a60")
    assert qe.mrenclave.hex().endswith("6a50")
    assert qe.mrsigner.hex() == QE3_MRSIGNER
    assert (qe.isvprodid, qe.isvsvn) == (1, 1)
    assert sig.qe_auth_data == b""
    cert = sig.certification_data
    assert (cert.cert_type, len(cert.data)) == (1, 34)
    assert cert.data[:16].hex() == "8461863bb7ece31f64c8e9b77fd31cad"  # PPID
    assert cert.data[16:32] == qe.cpusvn  # CPUSVN as the QE report
    assert struct.unpack("<H", cert.data[32:34])[0] == 3  # PCESVN, and no PCEID (old format)
    assert sig.qe_report_certification_size is None
    assert quote.padding == 0
    assert quote.signed_size == 432


def test_qvl_tdx_sample_quote_as_spec_2() -> None:
    quote = parse_quote(quote_bytes("dcap/qvl_sampleData/tdx/quote.dat"))
    assert (quote.version, quote.header.tee_type, quote.body_type) == (4, 0x81, 2)
    assert isinstance(quote.body, TdReport10)
    assert quote.signature_data_len == 3060 == 3696 - 636
    assert quote.signature_data.qe_report_certification_size == 2926
    assert quote.signature_data.qe_auth_data == b""
    assert quote.signature_data.certification_data.cert_type == 5
    assert len(quote.signature_data.certification_data.data) == 2470
    assert quote.signed_size == 632


def test_phala_quotes_as_provenance() -> None:
    sgx = parse_quote(quote_bytes("dcap/phala/sgx_quote"))
    assert (sgx.version, sgx.header.att_key_type, sgx.is_tdx) == (3, 2, False)
    assert sgx.signature_data.certification_data.cert_type == 5
    assert sgx.signature_data.qe_report.mrsigner.hex() == QE3_MRSIGNER
    assert sgx.signature_data.qe_auth_data == bytes(range(32))
    chain = sgx.signature_data.certification_data.pem_chain()
    assert chain is not None and chain.count(b"-----BEGIN CERTIFICATE-----") == 3
    tdx = parse_quote(quote_bytes("dcap/phala/tdx_quote"))
    assert (tdx.version, tdx.is_tdx, tdx.body_type) == (4, True, 2)
    assert tdx.padding == 70  # the quote buffer was larger than the quote; zeros
    outdated = parse_quote(quote_bytes("dcap/phala/tdx_quote_outdated"))
    assert (outdated.version, outdated.body_type) == (5, 3)
    assert isinstance(outdated.body, TdReport15)
    assert outdated.signed_size == 54 + 648


@pytest.mark.parametrize("name", QUOTES)
def test_every_vector_quote_parses_and_round_trips_its_pieces(name: str) -> None:
    data = quote_bytes(name)
    quote = parse_quote(data)
    start = quote.signed_size - len(quote.body.to_bytes())
    assert data[start : quote.signed_size] == quote.body.to_bytes()
    assert data[:48] == quote.header.to_bytes()
    assert quote.signed_size + 4 + quote.signature_data_len + quote.padding == len(data)
    cert = quote.signature_data.certification_data
    assert data[cert.offset : cert.offset + len(cert.data)] == cert.data
    assert quote.to_dict()["header"]["version"] == quote.version


def _library_report_fields(report: object, body: ReportBody | TdReport10 | TdReport15) -> None:
    if isinstance(body, ReportBody):
        assert report.cpu_svn == body.cpusvn  # type: ignore[attr-defined]
        assert report.attributes == body.attributes.to_bytes()  # type: ignore[attr-defined]
        assert report.mr_enclave == body.mrenclave  # type: ignore[attr-defined]
        assert report.mr_signer == body.mrsigner  # type: ignore[attr-defined]
        assert report.report_data == body.reportdata  # type: ignore[attr-defined]
        return
    pairs = {
        "tee_tcb_svn": body.tee_tcb_svn,
        "mr_seam": body.mrseam,
        "mr_signer_seam": body.mrsignerseam,
        "seam_attributes": body.seamattributes,
        "td_attributes": body.tdattributes,
        "xfam": body.xfam,
        "mr_td": body.mrtd,
        "mr_config_id": body.mrconfigid,
        "mr_owner": body.mrowner,
        "mr_owner_config": body.mrownerconfig,
        "rt_mr0": body.rtmr0,
        "rt_mr1": body.rtmr1,
        "rt_mr2": body.rtmr2,
        "rt_mr3": body.rtmr3,
        "report_data": body.reportdata,
    }
    if isinstance(body, TdReport15):
        pairs |= {"tee_tcb_svn2": body.tee_tcb_svn2, "mr_service_td": body.mrservicetd}
    for name, ours in pairs.items():
        assert bytes(getattr(report, name)) == ours, name


@pytest.mark.parametrize("name", QUOTES)
def test_differential_against_dcap_qvl_parse_quote(name: str) -> None:
    data = quote_bytes(name)
    ours: Quote = parse_quote(data)
    theirs = dcap_qvl.parse_quote(data)
    h = theirs.header
    assert h.version == ours.header.version
    assert h.attestation_key_type == ours.header.att_key_type
    assert h.tee_type == ours.header.tee_type
    assert h.qe_svn == ours.header.qe_svn
    assert h.pce_svn == ours.header.pce_svn
    assert bytes(h.qe_vendor_id) == ours.header.qe_vendor_id
    assert bytes(h.user_data) == ours.header.user_data
    assert theirs.is_tdx() == ours.is_tdx
    kind = {ReportBody: "SgxEnclaveReport", TdReport10: "TdReport10", TdReport15: "TdReport15"}
    assert type(theirs.report).__name__ == "Py" + kind[type(ours.body)]
    _library_report_fields(theirs.report, ours.body)
    chain = ours.signature_data.certification_data.pem_chain()
    if chain is not None:
        assert bytes(theirs.cert_chain_pem_bytes() or b"").rstrip(b"\x00") == chain


# --- malformed input -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", QUOTES)
def test_every_truncation_is_malformed_input_with_an_offset(name: str) -> None:
    data = quote_bytes(name)
    whole = parse_quote(data)
    end = len(data) - whole.padding
    for size in range(len(data)):
        if size >= end:  # only zero padding removed: the same quote
            assert parse_quote(data[:size]).signature_data == whole.signature_data
            continue
        with pytest.raises(MalformedInput) as info:
            parse_quote(data[:size])
        assert info.value.offset is not None and 0 <= info.value.offset <= size, size


@pytest.mark.parametrize("name", QUOTES)
def test_trailing_non_zero_byte_refused_zero_padding_counted(name: str) -> None:
    data = quote_bytes(name)
    with pytest.raises(MalformedInput, match="not zero padding") as info:
        parse_quote(data + b"\x01")
    assert info.value.offset == len(data)
    assert parse_quote(data + bytes(3)).padding == parse_quote(data).padding + 3


def _patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    patched = bytearray(data)
    struct.pack_into(fmt, patched, offset, value)
    return bytes(patched)


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "field", "message"),
    [
        (0, "<H", 2, "header.version", "version 2 is not supported"),
        (0, "<H", 6, "header.version", "version 6"),
        (2, "<H", 3, "header.att_key_type", "att_key_type 3"),
        (4, "<I", 0x81, "header.tee_type", "version 3 quote is SGX only"),
        (4, "<I", 0x7, "header.tee_type", "tee_type 0x7"),
        (12, "<B", 0x94, "header.qe_vendor_id", "not Intel's QE vendor ID"),
        (432, "<I", 10_000, "signature_data_len", "more than the"),
        (1012, "<H", 60_000, "qe_auth_data_size", "qe_auth_data size 60000"),
        (1014 + 32, "<H", 7, "certification_data_type", "type 7"),
        (1014 + 32, "<H", 6, "certification_data_type", "type 6"),
        (1016 + 32, "<I", 5, "certification_data_size", "does not end exactly"),
    ],
)
def test_v3_field_checks_name_field_and_offset(
    offset: int, fmt: str, value: int, field: str, message: str
) -> None:
    data = quote_bytes("dcap/phala/sgx_quote")
    with pytest.raises(MalformedInput, match=message) as info:
        parse_quote(_patch(data, offset, fmt, value))
    assert info.value.field == field
    assert info.value.offset == offset


def test_reserved_bytes_in_report_body_refused_with_offset() -> None:
    data = quote_bytes("dcap/phala/sgx_quote")
    for body_offset, name in ((21, "reserved1"), (96, "reserved2"), (160, "reserved3")):
        with pytest.raises(MalformedInput, match="reserved") as info:
            parse_quote(_patch(data, 48 + body_offset, "<B", 1))
        assert info.value.offset == 48 + body_offset
        assert info.value.field == f"report_body.{name}"
    qe_reserved4 = 564 + 262
    with pytest.raises(MalformedInput) as info:
        parse_quote(_patch(data, qe_reserved4 + 5, "<B", 1))
    assert info.value.offset == qe_reserved4 + 5
    assert info.value.field == "qe_report.reserved4"


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "field", "message"),
    [
        (48, "<H", 1, "body_type", "does not fit tee_type 0x81"),
        (48, "<H", 4, "body_type", "body_type 4"),
        (50, "<I", 584, "body_size", "body_size 584"),
        (48 + 6 + 648 + 4 + 128, "<H", 5, "qe_report_certification_data_type", "type 5"),
    ],
)
def test_v5_body_and_outer_certification_checks(
    offset: int, fmt: str, value: int, field: str, message: str
) -> None:
    data = quote_bytes("dcap/phala/tdx_quote_outdated")
    with pytest.raises(MalformedInput, match=message) as info:
        parse_quote(_patch(data, offset, fmt, value))
    assert info.value.field == field
    assert info.value.offset == offset


def test_v4_inner_certification_must_end_with_the_outer_one() -> None:
    data = quote_bytes("dcap/phala/tdx_quote")
    quote = parse_quote(data)
    inner = quote.signature_data.certification_data
    size_offset = inner.offset - 4
    with pytest.raises(MalformedInput, match="does not end exactly") as info:
        parse_quote(_patch(data, size_offset, "<I", len(inner.data) - 1))
    assert info.value.field == "certification_data_size"
    assert info.value.offset == size_offset


def test_report_body_is_a_reports_first_384_bytes() -> None:
    """One layout table serves both: a REPORT's body bytes parse as the quote's REPORT_BODY
    with every field equal, and REPORT_BODY writes them back byte for byte."""
    report = Report(
        cpusvn=bytes(range(16)),
        miscselect=0x11223344,
        isvextprodid=b"\x05" * 16,
        attributes=Attributes(flags=0x5, xfrm=0x3),
        mrenclave=b"\xaa" * 32,
        mrsigner=b"\xbb" * 32,
        configid=b"\xcc" * 64,
        isvprodid=0x1234,
        isvsvn=0x5678,
        configsvn=9,
        isvfamilyid=b"\x0f" * 16,
        reportdata=b"\xdd" * 64,
        keyid=b"\xee" * 32,
        mac=b"\xff" * 16,
    )
    body = ReportBody.from_bytes(report.body_bytes())
    assert body.to_bytes() == report.to_bytes()[: Report.BODY_SIZE]
    for field in ReportBody.FIELDS:
        assert getattr(body, field.name) == getattr(report, field.name), field.name
