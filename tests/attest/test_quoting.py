"""The emulated PCE and QE: quotes in Intel's format that dcap-qvl verifies under the machine's
root, the PCK certificate made at provisioning, the home's certified key, CPUSVN updates and
owner mode. Attacks on them are in ``tests/adversarial/test_quoting_attacks.py``."""

from __future__ import annotations

import hashlib
import struct

import pytest

import sgxlaunch
from sgxlaunch.arch import Report
from sgxlaunch.attest import Collateral, TrustAnchor, VerifiedQuote, verify_quote
from sgxlaunch.attest.pce import PCE_ISVSVN
from sgxlaunch.attest.pcs import EmulatedPcs, update_cpusvn
from sgxlaunch.attest.qe import ECALL_QUOTE, QE_AUTH_DATA, QE_ISVPRODID, QE_ISVSVN
from sgxlaunch.attest.quoting import (
    QE_KEY_KEY,
    QUOTING_RULE_IDS,
    CertifiedKey,
    pce_sigstruct_body,
    qe_sigstruct_body,
    quoting_rules,
)
from sgxlaunch.errors import PolicyDenied, UsageError
from sgxlaunch.formats.quote import CERT_TYPE_PCK_CHAIN, ReportBody, parse_quote
from sgxlaunch.launch.platform import le_sealed_key
from tests.support.clock import NOW
from tests.support.platform import Owner, allow_rule
from tests.support.quoting import (
    QuotingPlatform,
    example,
    launch_example,
    provision,
    report_for,
)

REPORTDATA = hashlib.sha256(b"nonce").digest() + bytes(32)


@pytest.fixture(scope="module")
def qp() -> QuotingPlatform:
    return QuotingPlatform()


def test_emulated_quote_verifies_under_dcap_qvl_with_the_machines_root(qp: QuotingPlatform) -> None:
    platform = qp.platform
    enclave = launch_example(platform)
    report = report_for(enclave, platform.qe_target_info(), REPORTDATA)
    quote = platform.quote(report)
    verified = qp.verify(quote)
    assert verified.tcb_status == "UpToDate"
    body = verified.quote.body
    assert isinstance(body, ReportBody)
    assert body.to_bytes() == Report.from_bytes(report).body_bytes()
    assert body.reportdata == REPORTDATA and body.mrenclave == enclave.mrenclave
    assert verified.quote.version == 3
    header = verified.quote.header
    assert (header.qe_svn, header.pce_svn) == (QE_ISVSVN, PCE_ISVSVN)
    signature_data = verified.quote.signature_data
    qe = signature_data.qe_report
    assert qe.mrsigner == qp.pcs.qe_mrsigner and qe.isvprodid == QE_ISVPRODID
    assert qe.mrenclave == qe_sigstruct_body().enclavehash
    assert signature_data.qe_auth_data == QE_AUTH_DATA
    cert = signature_data.certification_data
    assert cert.cert_type == CERT_TYPE_PCK_CHAIN
    cpusvn = platform.cpu.config.cpusvn
    assert cert.data == qp.pcs.pck_chain_pem(cpusvn, PCE_ISVSVN) + b"\x00"
    assert qe.reportdata == hashlib.sha256(
        signature_data.attestation_key + QE_AUTH_DATA
    ).digest() + bytes(32)


def test_the_attestation_key_is_sealed_in_the_home_and_reused(qp: QuotingPlatform) -> None:
    platform = qp.platform
    enclave = launch_example(platform)
    first = platform.quote(report_for(enclave, platform.qe_target_info(), REPORTDATA))
    stored = CertifiedKey.from_bytes(qp.store.get(QE_KEY_KEY) or b"")
    assert stored.blob.find(stored.pck_public_key) == -1  # the blob holds no PCK
    # another process (a new Platform over the same home and machine) uses the same key
    other = qp.open()
    again = other.quote(report_for(launch_example(other), other.qe_target_info(), REPORTDATA))
    assert (
        parse_quote(first).signature_data.attestation_key
        == parse_quote(again).signature_data.attestation_key
    )
    qp.verify(again)


def test_an_altered_home_record_gets_a_new_certified_key_never_a_bad_quote(
    qp: QuotingPlatform,
) -> None:
    platform = qp.open()
    enclave = launch_example(platform)
    old = platform.quote(report_for(enclave, platform.qe_target_info(), REPORTDATA))
    record = bytearray(qp.store.get(QE_KEY_KEY) or b"")
    record[140] ^= 1  # inside the sealed private key
    qp.store.commit({QE_KEY_KEY: bytes(record)})
    fresh = qp.open()
    quote = fresh.quote(report_for(launch_example(fresh), fresh.qe_target_info(), REPORTDATA))
    qp.verify(quote)
    assert (
        parse_quote(quote).signature_data.attestation_key
        != parse_quote(old).signature_data.attestation_key
    )
    assert qp.store.get(QE_KEY_KEY) != bytes(record)


def test_make_quote_runs_the_example_enclave_and_refuses_debug(qp: QuotingPlatform) -> None:
    data, sig = example()
    quote = sgxlaunch.make_quote(qp.platform, data_image(data), sig, reportdata=REPORTDATA)
    verified = qp.verify(quote)
    body = verified.quote.body
    assert isinstance(body, ReportBody)
    assert (body.mrsigner, body.isvprodid, body.isvsvn) == (sig.mrsigner, 5, 3)
    with pytest.raises(UsageError, match="non-debug"):
        sgxlaunch.make_quote(qp.platform, data_image(data), example(flags=0x6)[1])
    with pytest.raises(UsageError, match="64 bytes"):
        sgxlaunch.make_quote(qp.platform, data_image(data), sig, reportdata=b"short")


def data_image(data: bytes) -> sgxlaunch.SgxsImage:
    import io

    return sgxlaunch.read_image(io.BytesIO(data))


def test_pck_certificate_follows_a_cpusvn_update_and_the_launch_log_still_verifies() -> None:
    owner = Owner()
    pcs = provision(owner.machine)
    sig = owner.set_up_launch_enclave()
    platform = owner.platform()
    platform.quoter().provision()
    _app_image, app_sig = example()
    policy = owner.policy(version=1, allow=[*quoting_rules(pcs.qe_mrsigner), allow_rule(app_sig)])
    platform.install_policy(policy)
    platform.set_mode(owner.mode("owner", version=1))
    platform = owner.platform()
    old_cpusvn = platform.cpu.config.cpusvn
    platform.quote(report_for(launch_example(platform), platform.qe_target_info(), REPORTDATA))
    records = platform.verify_log()
    assert records > 0
    sealed_key = le_sealed_key(sig.mrsigner)
    assert _recorded_cpusvn(owner.store.get(sealed_key)) == old_cpusvn
    old_key = CertifiedKey.from_bytes(owner.store.get(QE_KEY_KEY) or b"")
    assert old_key.blob[8:24] == old_cpusvn  # the QE's blob records its CPUSVN too
    new_cpusvn = bytes([old_cpusvn[0] + 1]) + old_cpusvn[1:]
    update_cpusvn(owner.machine, new_cpusvn)
    assert pcs.pck_certificate(new_cpusvn, PCE_ISVSVN) is None
    after = owner.platform()  # the launch enclave unseals what it sealed under the old CPUSVN
    assert after.cpu.config.cpusvn == new_cpusvn
    assert after.verify_log() == records
    enclave = launch_example(after)
    # the QE still unseals its old blob (EGETKEY with the recorded, lower CPUSVN): with the old
    # TCB's PCK chain that key still makes quotes that verify
    target = after.qe_target_info()
    old_chain = pcs.pck_chain_pem(old_cpusvn, PCE_ISVSVN) + b"\x00"
    request = b"".join(
        (
            report_for(enclave, target, REPORTDATA),
            struct.pack("<H", len(old_key.blob)),
            old_key.blob,
            old_key.qe_report,
            old_key.qe_report_signature,
            struct.pack("<H", old_key.pcesvn),
            old_chain,
        )
    )
    reply = after.quoter().qe().ecall(ECALL_QUOTE, request)
    assert reply[0] == 0, reply
    verify(pcs, reply[1:])
    # the platform itself moves to the new TCB: a new PCK certificate, a new certified key
    quote = after.quote(report_for(enclave, target, REPORTDATA))
    assert pcs.pck_certificate(new_cpusvn, PCE_ISVSVN) is not None
    parsed = verify(pcs, quote).quote
    assert isinstance(parsed.body, ReportBody) and parsed.body.cpusvn == new_cpusvn
    assert parsed.signature_data.qe_report.cpusvn == new_cpusvn
    assert parsed.signature_data.attestation_key != old_key.blob[26:90]
    assert after.verify_log() > records  # new records, MACed with the log's recorded CPUSVN
    assert _recorded_cpusvn(owner.store.get(sealed_key)) == new_cpusvn  # resealed since
    assert after.le_sigstruct is not None and after.le_sigstruct.mrsigner == sig.mrsigner
    assert owner.platform().verify_log() == after.verify_log()


def _recorded_cpusvn(sealed: bytes | None) -> bytes:
    """The CPUSVN a launch-enclave sealed blob records (after its 20-byte magic)."""
    assert sealed is not None and sealed.startswith(b"sgxlaunch-sealed/v2\x00")
    return sealed[20:36]


def verify(pcs: EmulatedPcs, quote: bytes) -> VerifiedQuote:
    collateral = Collateral.from_bytes(pcs.collateral(NOW))
    return verify_quote(quote, collateral, NOW, anchor=TrustAnchor.from_certificate(pcs.root_der()))


def test_owner_mode_launches_the_pce_and_qe_only_under_the_quoting_rules() -> None:
    owner = Owner(seed=b"platform-seed-for-tests-0002")
    pcs = provision(owner.machine)
    owner.set_up_launch_enclave()
    platform = owner.platform()
    _image, app_sig = example()
    platform.install_policy(owner.policy(version=1, allow=[allow_rule(app_sig)]))
    platform.set_mode(owner.mode("owner", version=1))
    platform = owner.platform()
    with pytest.raises(PolicyDenied):
        platform.qe_target_info()
    denied = [r for r in platform.log_records() if r.get("decision") == "denied"]
    assert denied and denied[-1]["mrsigner"] == pcs.qe_mrsigner.hex()
    platform.install_policy(
        owner.policy(version=2, allow=[allow_rule(app_sig), *quoting_rules(pcs.qe_mrsigner)])
    )
    platform = owner.platform()
    quote = platform.quote(
        report_for(launch_example(platform), platform.qe_target_info(), REPORTDATA)
    )
    allowed = {r.get("rule") for r in platform.log_records() if r.get("decision") == "allowed"}
    assert set(QUOTING_RULE_IDS) <= allowed
    assert parse_quote(quote).signature_data.qe_report.mrsigner == pcs.qe_mrsigner


def test_the_quoting_rules_allow_only_the_machines_pce_and_qe_with_provisionkey() -> None:
    rules = quoting_rules(bytes(range(32)))
    assert [r["id"] for r in rules] == list(QUOTING_RULE_IDS)
    assert [r["isvprodid"] for r in rules] == [
        pce_sigstruct_body().isvprodid,
        qe_sigstruct_body().isvprodid,
    ]
    assert all(r["provisionkey"] is True and "debug" not in r for r in rules)
    assert all(r["mrsigner"] == bytes(range(32)).hex() for r in rules)
