"""Verification of the vector quotes through dcap-qvl, with our root pin and error mapping.

Expected statuses, advisories and windows: PROVENANCE.md "Real DCAP quotes with signed
collateral"; the QVL sample set: dcap-quote-spec.md §4.1 and the issue's acceptance list.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest

from sgxlaunch.attest import (
    INTEL_SGX_ROOT_CA_2033,
    INTEL_SGX_ROOT_CA_2049,
    INTEL_SGX_ROOT_SPKI_SHA256,
    Collateral,
    TrustAnchor,
    verify_quote,
)
from sgxlaunch.errors import (
    CollateralExpired,
    MalformedInput,
    QuoteRefused,
    UnsupportedCollateral,
    UntrustedRoot,
    UsageError,
)
from tests.support.dcap import (
    QVL_SAMPLE_TIME,
    SGX,
    TDX,
    TDX_OUTDATED,
    Case,
    quote_bytes,
    qvl_sample_collateral,
    qvl_sample_root,
    shared,
)

SECOND = timedelta(seconds=1)


def collateral(case: Case) -> Collateral:
    return Collateral.from_bytes(shared(case.collateral).read_bytes())


@pytest.mark.parametrize("case", [SGX, TDX], ids=["sgx", "tdx"])
def test_real_quote_gives_provenance_status_and_advisories_across_its_window(case: Case) -> None:
    # dcap-qvl treats a CRL as expired at its nextUpdate instant (the TDX window ends on one).
    for when in (case.start, case.inside, case.end - SECOND):
        result = verify_quote(quote_bytes(case.quote), collateral(case), when)
        assert result.tcb_status == case.status
        assert result.advisory_ids == case.advisories
        assert result.root == "Intel SGX Root CA"
        assert result.at == when


@pytest.mark.parametrize("case", [SGX, TDX], ids=["sgx", "tdx"])
def test_real_quote_outside_its_window_collateral_expired(case: Case) -> None:
    window = f"{case.start:%Y-%m-%dT%H:%M:%SZ} to {case.end:%Y-%m-%dT%H:%M:%SZ}"
    with pytest.raises(CollateralExpired, match=r"^collateral expired at ") as after:
        verify_quote(quote_bytes(case.quote), collateral(case), case.end + SECOND)
    assert window in after.value.message
    assert any(line.startswith("dcap-qvl: Verification failed") for line in after.value.detail)
    with pytest.raises(CollateralExpired, match=r"^collateral not yet valid at ") as before:
        verify_quote(quote_bytes(case.quote), collateral(case), case.start - SECOND)
    assert window in before.value.message
    assert before.value.exit_code == 1


def test_collateral_expired_far_later_when_the_crl_check_answers_first() -> None:
    later = SGX.end + timedelta(days=365 * 30)
    with pytest.raises(CollateralExpired, match="collateral expired") as info:
        verify_quote(quote_bytes(SGX.quote), collateral(SGX), later)
    assert "CrlExpired" in "\n".join(info.value.detail)


def test_outdated_tdx_quote_refused_with_the_library_words_inside_its_window() -> None:
    # PROVENANCE gives the window's end as 10:42:15Z (the QE identity's nextUpdate), but the
    # collateral's PCK CRL has nextUpdate 10:41:15Z: from then on the refusal is CrlExpired.
    pck_crl_end = TDX_OUTDATED.end - timedelta(minutes=1)
    for when in (TDX_OUTDATED.start, TDX_OUTDATED.inside, pck_crl_end - SECOND):
        with pytest.raises(QuoteRefused) as info:
            verify_quote(quote_bytes(TDX_OUTDATED.quote), collateral(TDX_OUTDATED), when)
        assert info.value.library_message == "Verification failed: No matching TCB level found"
        assert info.value.message == "quote refused by dcap-qvl: No matching TCB level found"
        assert info.value.exit_code == 1
    for when in (pck_crl_end, TDX_OUTDATED.end + SECOND):
        with pytest.raises(CollateralExpired, match=r"^collateral expired at"):
            verify_quote(quote_bytes(TDX_OUTDATED.quote), collateral(TDX_OUTDATED), when)


def test_qvl_sample_under_its_own_root_tcb_info_v2_not_supported() -> None:
    anchor = TrustAnchor.from_certificate(qvl_sample_root().read_bytes())
    sample = Collateral.from_bytes(qvl_sample_collateral().read_bytes())
    with pytest.raises(UnsupportedCollateral, match=r"^TCB info v2 not supported") as info:
        verify_quote(
            quote_bytes("dcap/qvl_sampleData/quote.dat"), sample, QVL_SAMPLE_TIME, anchor=anchor
        )
    assert info.value.found == "tcbInfo version 2"
    assert "missing field `sgxtcbcomponents`" in "\n".join(info.value.detail)


def test_qvl_sample_under_intel_root_is_an_untrusted_root_not_a_crl_failure() -> None:
    sample = Collateral.from_bytes(qvl_sample_collateral().read_bytes())
    with pytest.raises(UntrustedRoot, match="not the pinned Intel SGX Root CA") as info:
        verify_quote(quote_bytes("dcap/qvl_sampleData/quote.dat"), sample, QVL_SAMPLE_TIME)
    assert INTEL_SGX_ROOT_SPKI_SHA256 in (info.value.expected or "")
    assert "6a3b29fc4ae6ef0e" in (info.value.found or "")  # the QVL test root (PROVENANCE §5)


def test_intel_root_pinned_as_its_one_key_in_both_encodings() -> None:
    assert hashlib.sha256(INTEL_SGX_ROOT_CA_2033).hexdigest().startswith("fc64f8076d79a4fe")
    assert hashlib.sha256(INTEL_SGX_ROOT_CA_2049).hexdigest().startswith("44a0196b2b99f889")
    assert (
        shared("fortanix/pcs_tests_data/root_SGX_CA_der.cert").read_bytes()
        == INTEL_SGX_ROOT_CA_2033
    )
    intel = TrustAnchor.intel()
    assert intel.spki_sha256 == INTEL_SGX_ROOT_SPKI_SHA256
    assert set(intel.certificates) == {INTEL_SGX_ROOT_CA_2033, INTEL_SGX_ROOT_CA_2049}
    # The Phala collateral carries the 2049 encoding; naming the 2033 one as --root works too.
    old = TrustAnchor.from_certificate(INTEL_SGX_ROOT_CA_2033)
    result = verify_quote(quote_bytes(SGX.quote), collateral(SGX), SGX.inside, anchor=old)
    assert result.tcb_status == SGX.status


def test_real_quote_under_another_root_is_untrusted_root() -> None:
    anchor = TrustAnchor.from_certificate(qvl_sample_root().read_bytes())
    with pytest.raises(UntrustedRoot, match="pck_crl_issuer_chain ends in a root"):
        verify_quote(quote_bytes(SGX.quote), collateral(SGX), SGX.inside, anchor=anchor)


def test_root_file_must_be_one_self_issued_certificate() -> None:
    chain = shared("dcap/qvl_sampleData/pckSignChain.pem").read_bytes()
    with pytest.raises(MalformedInput, match="exactly one PEM certificate"):
        TrustAnchor.from_certificate(chain)
    leaf = shared("dcap/qvl_sampleData/pckCert.pem").read_bytes()
    with pytest.raises(MalformedInput, match="not self-issued"):
        TrustAnchor.from_certificate(leaf)
    with pytest.raises(MalformedInput, match=r"not an X.509"):
        TrustAnchor.from_certificate(b"\x30\x03\x02\x01\x01")


def _collateral_doc(case: Case) -> dict[str, str]:
    doc: dict[str, str] = json.loads(shared(case.collateral).read_bytes())
    return doc


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"extra": "x"}, "collateral.extra"),
        ({"pck_crl": "zz"}, "collateral.pck_crl"),
        ({"root_ca_crl": ""}, "collateral.root_ca_crl"),
        ({"tcb_info_issuer_chain": "no pem here"}, "collateral.tcb_info_issuer_chain"),
        ({"qe_identity": "[]"}, "collateral.qe_identity"),
    ],
)
def test_collateral_read_strictly(change: dict[str, str], field: str) -> None:
    doc = _collateral_doc(SGX) | change
    with pytest.raises(MalformedInput) as info:
        Collateral.from_bytes(json.dumps(doc).encode())
    assert info.value.field == field


def test_collateral_missing_field_and_duplicate_key_refused() -> None:
    doc = _collateral_doc(SGX)
    del doc["pck_crl"]
    with pytest.raises(MalformedInput, match="missing field 'pck_crl'"):
        Collateral.from_bytes(json.dumps(doc).encode())
    text = shared(SGX.collateral).read_bytes()
    with pytest.raises(MalformedInput, match="duplicate key"):
        Collateral.from_bytes(text[:-1] + b',"pck_crl":"00"}')


def test_tampered_tcb_info_signature_refused_with_library_message_kept() -> None:
    doc = _collateral_doc(SGX)
    sig = doc["tcb_info_signature"]
    doc["tcb_info_signature"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    with pytest.raises(QuoteRefused) as info:
        verify_quote(
            quote_bytes(SGX.quote), Collateral.from_bytes(json.dumps(doc).encode()), SGX.inside
        )
    assert info.value.library_message.startswith("Verification failed")
    assert info.value.detail[0] == "dcap-qvl: " + info.value.library_message.splitlines()[0]


def test_quote_without_pck_chain_and_collateral_without_one_is_unsupported() -> None:
    sample = json.loads(qvl_sample_collateral().read_bytes())
    del sample["pck_certificate_chain"]
    anchor = TrustAnchor.from_certificate(qvl_sample_root().read_bytes())
    with pytest.raises(UnsupportedCollateral, match="PCK certificate chain is neither"):
        verify_quote(
            quote_bytes("dcap/qvl_sampleData/quote.dat"),
            Collateral.from_bytes(json.dumps(sample).encode()),
            QVL_SAMPLE_TIME,
            anchor=anchor,
        )


def test_naive_time_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="timezone-aware"):
        verify_quote(quote_bytes(SGX.quote), collateral(SGX), SGX.inside.replace(tzinfo=None))


def test_malformed_quote_is_malformed_input_before_the_library() -> None:
    with pytest.raises(MalformedInput) as info:
        verify_quote(quote_bytes(SGX.quote)[:-1], collateral(SGX), SGX.inside)
    assert info.value.field == "signature_data_len"
    assert info.value.offset == 432
