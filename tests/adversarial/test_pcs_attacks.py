"""Attacks on emulated attestation that the PCS's collateral must defeat (spec §5.1, §5.2):
another root, a PCK from another machine's PCS, a revoked PCK, stale collateral, an edited or
re-signed TCB info, and a quote whose QE is not the QE identity's — each refused with its
reason (docs/attest.md, "The emulated PCS")."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from cryptography import x509

from sgxlaunch.attest import Collateral, TrustAnchor, verify_quote
from sgxlaunch.attest.pcs import EmulatedPcs
from sgxlaunch.cpu.machine import MachineState, MemoryMachine
from sgxlaunch.errors import CollateralExpired, QuoteRefused, UntrustedRoot
from tests.support.clock import NOW
from tests.support.pcs import LATER, QuoteParts, certify, make_quote, new_pcs, verify


@pytest.fixture(scope="module")
def base() -> MachineState:
    return new_pcs().machine.load()


@pytest.fixture
def pcs(base: MachineState) -> EmulatedPcs:
    return EmulatedPcs(MemoryMachine(base))


def test_quote_under_intels_or_another_machines_root_rejected(pcs: EmulatedPcs) -> None:
    key, _ = certify(pcs)
    quote = make_quote(pcs, key, cpusvn=pcs.machine.load().cpusvn)
    collateral = Collateral.from_bytes(pcs.collateral(NOW))
    with pytest.raises(UntrustedRoot, match="not the pinned Intel SGX Root CA"):
        verify_quote(quote, collateral, LATER)  # Intel's root by default
    other = new_pcs(b"another-machine-seed-0123456789!")
    with pytest.raises(UntrustedRoot, match="ends in a root that is not the pinned") as info:
        verify_quote(
            quote, collateral, LATER, anchor=TrustAnchor.from_certificate(other.root_der())
        )
    assert info.value.exit_code == 1


def test_quote_with_revoked_pck_rejected(pcs: EmulatedPcs) -> None:
    key, der = certify(pcs)
    quote = make_quote(pcs, key, cpusvn=pcs.machine.load().cpusvn)
    assert verify(pcs, quote).tcb_status == "UpToDate"
    pcs.revoke_pck(der)
    crl = x509.load_der_x509_crl(pcs.pck_crl(NOW))
    serial = x509.load_der_x509_certificate(der).serial_number
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    with pytest.raises(QuoteRefused) as info:
        verify(pcs, quote)
    assert "CertRevoked" in "\n".join(info.value.detail)


def test_stale_collateral_with_expired_crl_rejected(pcs: EmulatedPcs) -> None:
    key, _ = certify(pcs)
    quote = make_quote(pcs, key, cpusvn=pcs.machine.load().cpusvn)
    end = NOW + timedelta(days=30)  # the CRLs' nextUpdate (webpki: expired at that instant)
    with pytest.raises(CollateralExpired, match="collateral expired at 2026-12-26T12:00:00Z"):
        verify(pcs, quote, at=end)
    # fresh collateral (the PCS signs it again) is accepted at the same instant
    assert verify(pcs, quote, at=end, collateral=pcs.collateral(end)).tcb_status == "UpToDate"


def test_tcb_info_with_broken_signature_or_edited_body_rejected(pcs: EmulatedPcs) -> None:
    key, _ = certify(pcs)
    quote = make_quote(pcs, key, cpusvn=pcs.machine.load().cpusvn)
    doc = json.loads(pcs.collateral(NOW))
    signature = bytearray.fromhex(doc["tcb_info_signature"])
    signature[40] ^= 1
    doc["tcb_info_signature"] = signature.hex()
    with pytest.raises(QuoteRefused, match="Signature is invalid for tcb_info"):
        verify(pcs, quote, collateral=json.dumps(doc).encode())
    # and a body edited under an intact signature (a level raised to UpToDate)
    doc = json.loads(pcs.collateral(NOW))
    doc["tcb_info"] = doc["tcb_info"].replace(
        '"tcbEvaluationDataNumber":1', '"tcbEvaluationDataNumber":9'
    )
    with pytest.raises(QuoteRefused, match="Signature is invalid for tcb_info"):
        verify(pcs, quote, collateral=json.dumps(doc).encode())


@pytest.mark.parametrize(
    ("parts", "reason"),
    [
        (QuoteParts(qe_mrsigner=b"\x33" * 32), "QE MRSIGNER mismatch"),
        (QuoteParts(qe_isvprodid=2), "QE ISVPRODID mismatch: expected 1, got 2"),
        (QuoteParts(qe_flags=0x05), "attributes"),  # PROVISIONKEY clear
        (QuoteParts(qe_isvsvn=7), "QE ISVSVN 7 is below minimum required 8"),
    ],
    ids=["mrsigner", "isvprodid", "attributes", "isvsvn"],
)
def test_quote_from_a_qe_not_matching_the_qe_identity_rejected(
    pcs: EmulatedPcs, parts: QuoteParts, reason: str
) -> None:
    key, _ = certify(pcs)
    quote = make_quote(pcs, key, cpusvn=pcs.machine.load().cpusvn, parts=parts)
    with pytest.raises(QuoteRefused) as info:
        verify(pcs, quote)
    assert reason.lower() in info.value.message.lower()


def test_pck_certified_by_another_machines_pcs_rejected(pcs: EmulatedPcs) -> None:
    """A PCK certified by another machine's PCS does not chain to this one's root."""
    other = EmulatedPcs(MemoryMachine(new_pcs(b"another-machine-seed-0123456789!").machine.load()))
    key, _ = certify(other)
    quote = make_quote(other, key, cpusvn=other.machine.load().cpusvn)
    with pytest.raises(UntrustedRoot, match="quote PCK certificate chain"):
        verify(pcs, quote)
