"""Attacks on quoting (issue 19): what the emulated PCE and QE refuse, and what dcap-qvl refuses
in a quote an attacker changed or made with a look-alike PCE.

The home (where the certified attestation key is kept) and the host (which passes buffers to
the PCE and QE) are the attacker's; the machine (the PCE/QE signing key, the PCS) is not.
"""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from sgxlaunch.arch import Sigstruct, TargetInfo
from sgxlaunch.attest.pce import ECALL_CERTIFY, ECALL_TARGET_INFO, PCE_ISVSVN, tcb_bytes
from sgxlaunch.attest.pce import STATUS_NOT_PROVISIONING as PCE_NOT_PROVISIONING
from sgxlaunch.attest.qe import (
    BLOB_SIZE,
    ECALL_GEN_KEY,
    ECALL_QUOTE,
    STATUS_BINDING,
    STATUS_DEBUG,
    STATUS_OK,
)
from sgxlaunch.attest.quoting import PcsProvisioning, Quoter
from sgxlaunch.driver import load
from sgxlaunch.errors import QuoteRefused, ReportRefused, UsageError, VerificationFailed
from sgxlaunch.formats.quote import parse_quote
from sgxlaunch.sigstruct import sign
from tests.support.cpu import DEBUG
from tests.support.keys import mrsigner, signer
from tests.support.quoting import QuotingPlatform, launch_example, report_for

REPORTDATA = bytes(range(64))


@pytest.fixture(scope="module")
def qp() -> QuotingPlatform:
    return QuotingPlatform(seed=b"quoting-attacks-seed-0001")


@pytest.fixture(scope="module")
def good(qp: QuotingPlatform) -> bytes:
    platform = qp.platform
    quote = platform.quote(
        report_for(launch_example(platform), platform.qe_target_info(), REPORTDATA)
    )
    qp.verify(quote)  # the unaltered quote verifies
    return quote


def _raw_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _raw_public(key: ec.EllipticCurvePrivateKey) -> bytes:
    numbers = key.public_key().public_numbers()
    return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")


# -- quotes altered after the QE signed them (dcap-qvl refuses) -----------------------------------


def test_quote_with_a_broken_signature_is_refused(qp: QuotingPlatform, good: bytes) -> None:
    broken = bytearray(good)
    broken[436 + 5] ^= 0x01  # inside the ISV report signature (spec §1.3: offset 436)
    with pytest.raises(QuoteRefused, match="ISV enclave report signature is invalid"):
        qp.verify(bytes(broken))


def test_quote_whose_report_body_was_edited_is_refused(qp: QuotingPlatform, good: bytes) -> None:
    edited = bytearray(good)
    edited[368] ^= 0x01  # REPORTDATA (quote offset 368): the signature no longer covers it
    with pytest.raises(QuoteRefused, match="ISV enclave report signature is invalid"):
        qp.verify(bytes(edited))


def test_quote_whose_qe_report_data_does_not_bind_the_key_is_refused(
    qp: QuotingPlatform, good: bytes
) -> None:
    # The attacker's own attestation key, with a valid quote signature under it, beside the
    # genuine PCK-signed QE report (which binds the QE's key, not this one).
    key = ec.generate_private_key(ec.SECP256R1())
    forged = bytearray(good)
    forged[500:564] = _raw_public(key)
    forged[436:500] = _raw_signature(key, bytes(forged[:432]))
    with pytest.raises(QuoteRefused, match="QE report hash mismatch"):
        qp.verify(bytes(forged))


# -- REPORTs the QE must not quote ----------------------------------------------------------------


def test_report_targeted_at_another_enclave_is_refused(qp: QuotingPlatform) -> None:
    platform = qp.platform
    enclave = launch_example(platform)
    pce_target = TargetInfo.from_bytes(platform.quoter().pce().ecall(ECALL_TARGET_INFO)[1:])
    for target in (pce_target, TargetInfo()):
        with pytest.raises(ReportRefused, match="not targeted at this quoting enclave"):
            platform.quote(report_for(enclave, target, REPORTDATA))


def test_report_altered_after_ereport_is_refused(qp: QuotingPlatform) -> None:
    platform = qp.platform
    report = bytearray(report_for(launch_example(platform), platform.qe_target_info(), REPORTDATA))
    report[320] ^= 0x01  # REPORTDATA: the MAC covers the body (SDM EREPORT)
    with pytest.raises(ReportRefused):
        platform.quote(bytes(report))


def test_report_from_an_enclave_on_another_cpu_is_refused(qp: QuotingPlatform) -> None:
    other = QuotingPlatform(seed=b"quoting-attacks-seed-0002")
    enclave = launch_example(other.platform)
    # same QE code and signer's MRENCLAVE, another CPU: another report key
    target = qp.platform.qe_target_info()
    assert target == other.platform.qe_target_info()
    with pytest.raises(ReportRefused):
        qp.platform.quote(report_for(enclave, target, REPORTDATA))


def test_debug_enclave_report_is_refused_by_the_host_and_by_the_qe(qp: QuotingPlatform) -> None:
    platform = qp.platform
    enclave = launch_example(platform, flags=DEBUG)
    report = report_for(enclave, platform.qe_target_info(), REPORTDATA)
    with pytest.raises(UsageError, match="non-debug"):
        platform.quote(report)
    # a host that skips its own check still gets no quote: the QE refuses (status 3)
    quoter = platform.quoter()
    reply = quoter.qe().ecall(ECALL_QUOTE, report + struct.pack("<H", 0) + bytes(384 + 64 + 2))
    assert reply[0] == STATUS_DEBUG and b"non-debug" in reply


def test_pce_refuses_to_certify_an_enclave_without_provisionkey(qp: QuotingPlatform) -> None:
    platform = qp.platform
    pce = platform.quoter().pce()
    target = TargetInfo.from_bytes(pce.ecall(ECALL_TARGET_INFO)[1:])
    report = report_for(launch_example(platform), target, bytes(64))
    reply = pce.ecall(ECALL_CERTIFY, report + tcb_bytes(platform.cpu.config.cpusvn, PCE_ISVSVN))
    assert reply[0] == PCE_NOT_PROVISIONING and b"PROVISIONKEY" in reply


def test_qe_refuses_a_certified_report_that_does_not_bind_its_sealed_key(
    qp: QuotingPlatform,
) -> None:
    platform = qp.platform
    quoter = platform.quoter()
    pce_target = quoter.pce().ecall(ECALL_TARGET_INFO)[1:]
    first = quoter.qe().ecall(ECALL_GEN_KEY, pce_target)[1:]
    second = quoter.qe().ecall(ECALL_GEN_KEY, pce_target)[1:]
    blob = first[:BLOB_SIZE]
    other_report = second[BLOB_SIZE : BLOB_SIZE + 384]  # binds the second key, not the first
    app = report_for(launch_example(platform), platform.qe_target_info(), REPORTDATA)
    request = app + struct.pack("<H", len(blob)) + blob + other_report + bytes(64 + 2)
    reply = quoter.qe().ecall(ECALL_QUOTE, request)
    assert reply[0] == STATUS_BINDING and b"does not bind" in reply


# -- a look-alike PCE and QE, signed by a key that is not the machine's ------------------------


class _LookAlike(PcsProvisioning):
    """The host signs its own PCE and QE (same code) with another key; it still shows the
    machine's genuine PCK chain."""

    def sign_platform_enclave(self, body: Sigstruct) -> Sigstruct:
        return sign(body, signer("other"))


def _look_alike(qp: QuotingPlatform) -> Quoter:
    platform = qp.open()
    return Quoter(
        launch=lambda image, sig: load(platform.new_process(), image, sig, provision=True),
        register=platform.cpu.register_program,
        provisioning=_LookAlike(qp.machine, qp.clock),
        cpusvn=platform.cpu.config.cpusvn,
        load_record=lambda: None,
        save_record=lambda blob: None,
    )


def test_look_alike_pce_signed_by_another_key_gets_no_quote_from_the_host(
    qp: QuotingPlatform,
) -> None:
    quoter = _look_alike(qp)
    platform = qp.platform
    enclave = launch_example(platform)
    report = report_for(enclave, quoter.target_info(), REPORTDATA)
    with pytest.raises(VerificationFailed, match="does not certify the PCK"):
        quoter.quote(report)
    # its PCK differs from the certified one: PROVISION_KEY depends on MRSIGNER (SDM EGETKEY)
    assert quoter.pck_info().public_key != platform.quoter().pck_info().public_key


def test_look_alike_pce_quote_does_not_verify(qp: QuotingPlatform) -> None:
    # The attacker drives its look-alike PCE and QE by hand (skipping the host's check) and
    # attaches the machine's genuine PCK chain: the QE report's PCK signature is not by the
    # certified PCK, and the QE's MRSIGNER is not the QE identity's.
    quoter = _look_alike(qp)
    cpusvn = qp.platform.cpu.config.cpusvn
    pce_target = quoter.pce().ecall(ECALL_TARGET_INFO)[1:]
    generated = quoter.qe().ecall(ECALL_GEN_KEY, pce_target)[1:]
    blob, qe_report = generated[:BLOB_SIZE], generated[BLOB_SIZE:]
    signature = quoter.pce().ecall(ECALL_CERTIFY, qe_report + tcb_bytes(cpusvn, PCE_ISVSVN))[1:]
    app = report_for(launch_example(qp.platform), quoter.target_info(), REPORTDATA)
    chain = qp.pcs.pck_chain_pem(cpusvn, PCE_ISVSVN) + b"\x00"
    request = (
        app
        + struct.pack("<H", len(blob))
        + blob
        + qe_report[:384]
        + signature
        + struct.pack("<H", PCE_ISVSVN)
        + chain
    )
    reply = quoter.qe().ecall(ECALL_QUOTE, request)
    assert reply[0] == STATUS_OK, reply
    quote = reply[1:]
    assert parse_quote(quote).signature_data.qe_report.mrsigner == mrsigner("other")
    with pytest.raises(QuoteRefused, match="Signature is invalid for qe_report"):
        qp.verify(quote)
