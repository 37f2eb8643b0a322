"""Hypothesis over the quote header: any values patched into a real quote's header are either
read back exactly or refused as MalformedInput naming the first header field that is wrong."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sgxlaunch.errors import MalformedInput
from sgxlaunch.formats.quote import INTEL_QE_VENDOR_ID, QuoteHeader, parse_quote
from tests.support.dcap import quote_bytes

SGX_V3 = quote_bytes("dcap/phala/sgx_quote")
TDX_V4 = quote_bytes("dcap/phala/tdx_quote")

headers = st.builds(
    QuoteHeader,
    version=st.one_of(st.sampled_from([3, 4, 5]), st.integers(0, 0xFFFF)),
    att_key_type=st.one_of(st.just(2), st.integers(0, 0xFFFF)),
    tee_type=st.one_of(st.sampled_from([0, 0x81]), st.integers(0, 0xFFFFFFFF)),
    qe_svn=st.integers(0, 0xFFFF),
    pce_svn=st.integers(0, 0xFFFF),
    qe_vendor_id=st.one_of(st.just(INTEL_QE_VENDOR_ID), st.binary(min_size=16, max_size=16)),
    user_data=st.binary(min_size=20, max_size=20),
)


def _first_wrong_field(header: QuoteHeader) -> str | None:
    if header.version not in (3, 4, 5):
        return "header.version"
    if header.att_key_type != 2:
        return "header.att_key_type"
    if header.tee_type not in (0, 0x81) or (header.version == 3 and header.tee_type != 0):
        return "header.tee_type"
    if header.qe_vendor_id != INTEL_QE_VENDOR_ID:
        return "header.qe_vendor_id"
    return None


@settings(max_examples=400, deadline=None)
@given(header=headers, base=st.sampled_from(["sgx_v3", "tdx_v4"]))
def test_header_fields_read_back_or_refused_by_name(header: QuoteHeader, base: str) -> None:
    original = SGX_V3 if base == "sgx_v3" else TDX_V4
    data = header.to_bytes() + original[48:]
    wrong = _first_wrong_field(header)
    same_layout = (header.version, header.tee_type) == ((3, 0) if base == "sgx_v3" else (4, 0x81))
    error: MalformedInput | None = None
    try:
        quote = parse_quote(data)
    except MalformedInput as exc:
        error = exc
    if error is not None:
        assert error.offset is not None
        if wrong is not None:
            assert error.field == wrong
        else:
            assert not same_layout  # a valid header only fails on a layout it does not fit
        return
    assert wrong is None
    assert quote.header == header
    if same_layout:
        assert quote.signature_data == parse_quote(original).signature_data
