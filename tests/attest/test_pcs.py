"""The emulated PCS: Intel's formats, verified by dcap-qvl unmodified against the emulated root.

The refusals of spec §5 that concern the PCS are attacks: ``tests/adversarial/test_pcs_attacks.py``.

Formats: spec §3.1 (chain, CRLs), §3.2 (the PCK certificate's SGX extension), §3.3 (TCB info v3),
§3.4 (QE identity v2), checked against the real collateral in ``vectors/dcap/phala``.
Negatives: spec §5.1 / §5.2 — wrong root, revoked PCK, expired CRL, broken TCB info signature,
QE identity mismatch — each refused with its reason.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from sgxlaunch.attest.pcs import (
    FMSPC,
    SGX_EXTENSION_OID,
    EmulatedPcs,
    QeTcbLevel,
    TcbLevel,
    ensure_provisioning,
    sgx_extension,
    update_cpusvn,
)
from sgxlaunch.cpu.machine import MachineState, MemoryMachine
from sgxlaunch.errors import (
    MalformedInput,
    QuoteRefused,
    UsageError,
)
from sgxlaunch.formats.quote import parse_quote
from tests.support.clock import NOW
from tests.support.dcap import SGX, quote_bytes, shared
from tests.support.pcs import PCESVN, certify, make_quote, new_pcs, pck_key, verify


@pytest.fixture(scope="module")
def base() -> MachineState:
    """A machine state with its emulated PCS (made once; each test gets its own machine)."""
    return new_pcs().machine.load()


@pytest.fixture
def pcs(base: MachineState) -> EmulatedPcs:
    return EmulatedPcs(MemoryMachine(base))


# --- dcap-qvl accepts the emulated PKI ----------------------------------------------------------


def test_quote_with_certified_pck_verifies_under_dcap_qvl_with_the_emulated_root(
    pcs: EmulatedPcs,
) -> None:
    key, _ = certify(pcs)
    cpusvn = pcs.machine.load().cpusvn
    quote = make_quote(pcs, key, cpusvn=cpusvn, reportdata=b"\x42" * 64)
    result = verify(pcs, quote)
    assert result.tcb_status == "UpToDate"
    assert result.advisory_ids == ()
    assert result.quote.body.reportdata == b"\x42" * 64
    # the whole window: from the collateral's issue time to the last second before the CRLs end
    assert verify(pcs, quote, at=NOW).tcb_status == "UpToDate"
    assert verify(pcs, quote, at=NOW + timedelta(days=30, seconds=-1)).tcb_status == "UpToDate"


def test_collateral_document_has_the_nine_fields_of_pcs_collateral(pcs: EmulatedPcs) -> None:
    ours = json.loads(pcs.collateral(NOW))
    real = json.loads(shared(SGX.collateral).read_bytes())
    assert list(ours) == list(real)
    assert "pck_certificate_chain" not in ours
    certify(pcs)
    with_chain = json.loads(pcs.collateral(NOW, include_pck_chain=True))
    assert with_chain["pck_certificate_chain"].count("BEGIN CERTIFICATE") == 3


def test_pck_chain_as_quote_certification_data(pcs: EmulatedPcs) -> None:
    key, der = certify(pcs)
    cpusvn = pcs.machine.load().cpusvn
    chain = pcs.pck_chain_pem(cpusvn, PCESVN)
    certs = x509.load_pem_x509_certificates(chain)
    assert [c.public_bytes(_DER) for c in certs] == [der, pcs.pck_ca_der(), pcs.root_der()]
    quote = parse_quote(make_quote(pcs, key, cpusvn=cpusvn))
    cert_data = quote.signature_data.certification_data
    assert cert_data.cert_type == 5
    assert cert_data.data == chain + b"\x00"
    with pytest.raises(UsageError, match="no PCK certificate for CPUSVN"):
        pcs.pck_chain_pem(cpusvn, PCESVN + 1)


# --- Intel's formats ----------------------------------------------------------------------------

_DER = Encoding.DER


def _real_pck() -> x509.Certificate:
    chain = parse_quote(quote_bytes(SGX.quote)).signature_data.certification_data.pem_chain()
    assert chain is not None
    return x509.load_pem_x509_certificates(chain)[0]


def test_sgx_extension_rebuilds_a_real_pck_certificates_byte_for_byte() -> None:
    # Phala's SGX sample PCK (spec §4.3): PPID, comps 11,11,2,2,255,1,0..., PCESVN 13, PCE-ID
    # 0000, FMSPC 00a067110000, SGX type 0 — read off the certificate with openssl asn1parse.
    real = _real_pck().extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    assert real.critical is False
    assert isinstance(real.value, x509.UnrecognizedExtension)
    ours = sgx_extension(
        ppid=bytes.fromhex("d04ec06d4e6d92dc90d0ad3cf5ee2ddf"),
        cpusvn=bytes.fromhex("0b0b0202ff0100000000000000000000"),
        pcesvn=13,
        pceid=b"\x00\x00",
        fmspc=bytes.fromhex("00a067110000"),
    )
    assert ours == real.value.value


def test_pck_certificate_carries_this_platforms_tcb_in_the_sgx_extension(
    pcs: EmulatedPcs,
) -> None:
    _, der = certify(pcs)
    cert = x509.load_der_x509_certificate(der)
    ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    cpusvn = pcs.machine.load().cpusvn
    assert ext.value.value == sgx_extension(
        ppid=pcs.ppid, cpusvn=cpusvn, pcesvn=PCESVN, pceid=b"\x00\x00", fmspc=FMSPC
    )
    # the TCB components are the CPUSVN's bytes, as in Intel's certificates
    for svn in cpusvn:
        assert bytes([0x02, 0x01 if svn < 0x80 else 0x02]) in ext.value.value
    assert pcs.ppid in ext.value.value and len(pcs.ppid) == 16


def _shape(cert: x509.Certificate) -> tuple[object, ...]:
    exts = cert.extensions
    usage = exts.get_extension_for_class(x509.KeyUsage)
    basic = exts.get_extension_for_class(x509.BasicConstraints)
    return (
        cert.version,
        cert.signature_hash_algorithm.name if cert.signature_hash_algorithm else None,
        [a.oid for a in cert.subject],
        [e.oid for e in exts],
        usage.critical,
        usage.value.key_cert_sign,
        usage.value.digital_signature,
        basic.critical,
        basic.value.ca,
        basic.value.path_length,
    )


def test_certificates_have_the_shape_of_intels(pcs: EmulatedPcs) -> None:
    _, der = certify(pcs)
    real = [_real_pck(), *_real_chain(SGX.collateral, "pck_crl_issuer_chain")]
    real_tcb = _real_chain(SGX.collateral, "tcb_info_issuer_chain")[0]
    ours = [x509.load_der_x509_certificate(d) for d in (der, pcs.pck_ca_der(), pcs.root_der())]
    tcb = x509.load_der_x509_certificate(pcs.tcb_signing_der())
    for mine, theirs in zip([*ours, tcb], [*real, real_tcb], strict=True):
        assert _shape(mine) == _shape(theirs)
        assert isinstance(mine.public_key(), ec.EllipticCurvePublicKey)
        assert 0 < mine.serial_number < 2**160
    # the CNs hold what QVL looks for (spec §3.1.2, §3.3.3)
    names = [c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value for c in ours]
    assert "SGX PCK Certificate" in str(names[0])
    assert "SGX PCK Processor CA" in str(names[1])
    assert "SGX Root CA" in str(names[2])
    assert "SGX TCB Signing" in str(tcb.subject)
    # each issued by the next, the root by itself
    for child, parent in [
        (ours[0], ours[1]),
        (ours[1], ours[2]),
        (tcb, ours[2]),
        (ours[2], ours[2]),
    ]:
        child.verify_directly_issued_by(parent)


def _real_chain(collateral: str, field: str) -> list[x509.Certificate]:
    doc = json.loads(shared(collateral).read_bytes())
    return x509.load_pem_x509_certificates(doc[field].encode())


def test_crls_carry_crl_number_and_authority_key_identifier(pcs: EmulatedPcs) -> None:
    doc = json.loads(pcs.collateral(NOW))
    real = json.loads(shared(SGX.collateral).read_bytes())
    for field, issuer in (("root_ca_crl", pcs.root_der()), ("pck_crl", pcs.pck_ca_der())):
        crl = x509.load_der_x509_crl(bytes.fromhex(doc[field]))
        real_crl = x509.load_der_x509_crl(bytes.fromhex(real[field]))
        assert [e.oid for e in crl.extensions] == [e.oid for e in real_crl.extensions]
        issuer_cert = x509.load_der_x509_certificate(issuer)
        assert crl.issuer == issuer_cert.subject
        public_key = issuer_cert.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert crl.is_signature_valid(public_key)
        assert crl.last_update_utc == NOW
        assert crl.next_update_utc == NOW + timedelta(days=30)


def _keys(value: object) -> object:
    """The JSON's member names in order, recursively (values dropped)."""
    if isinstance(value, dict):
        return [(k, _keys(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [_keys(v) for v in value[:1]]
    return None


def test_tcb_info_and_qe_identity_follow_intels_layout_and_signature_encoding(
    pcs: EmulatedPcs,
) -> None:
    pcs.set_tcb_levels(
        [
            TcbLevel(
                tuple([9] * 16),
                13,
                "SWHardeningNeeded",
                "2026-01-01T00:00:00Z",
                ("INTEL-SA-00615",),
            ),
        ],
        # the real QE identity's first level carries no advisories
        qe_levels=[QeTcbLevel(8, "UpToDate", "2026-01-01T00:00:00Z")],
    )
    doc = json.loads(pcs.collateral(NOW))
    real = json.loads(shared(SGX.collateral).read_bytes())
    for field in ("tcb_info", "qe_identity"):
        body = doc[field]
        assert body == json.dumps(json.loads(body), separators=(",", ":"))  # compact, as PCS
        assert _keys(json.loads(body)) == _keys(json.loads(real[field]))
        signature = bytes.fromhex(doc[field + "_signature"])
        assert len(signature) == 64  # raw r || s (spec §3.3.1)
        signer = x509.load_der_x509_certificate(pcs.tcb_signing_der()).public_key()
        assert isinstance(signer, ec.EllipticCurvePublicKey)
        der_signature = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        signer.verify(der_signature, body.encode(), ec.ECDSA(hashes.SHA256()))
    tcb_info = json.loads(doc["tcb_info"])
    assert tcb_info["fmspc"] == FMSPC.hex().upper() and tcb_info["pceId"] == "0000"
    assert (tcb_info["issueDate"], tcb_info["nextUpdate"]) == (
        "2026-11-26T12:00:00Z",
        "2026-12-26T12:00:00Z",
    )
    qe_identity = json.loads(doc["qe_identity"])
    assert qe_identity["mrsigner"] == pcs.qe_mrsigner.hex().upper()
    assert (qe_identity["id"], qe_identity["version"], qe_identity["isvprodid"]) == ("QE", 2, 1)
    assert qe_identity["tcbEvaluationDataNumber"] == tcb_info["tcbEvaluationDataNumber"] == 2


# --- TCB levels and the CPUSVN update -----------------------------------------------------------


def test_cpusvn_update_moves_tcb_status_up_to_date_out_of_date_and_back(
    pcs: EmulatedPcs,
) -> None:
    old = pcs.machine.load().cpusvn
    key, _ = certify(pcs)
    old_quote = make_quote(pcs, key, cpusvn=old)
    assert verify(pcs, old_quote).tcb_status == "UpToDate"

    # Intel publishes a TCB recovery with a microcode update: the new level is UpToDate,
    # the level this platform is at becomes OutOfDate (and names the advisory).
    new = bytes([old[0] + 1, *old[1:]])
    pcs.publish_tcb_recovery(new, PCESVN, now=NOW, advisories=["INTEL-SA-01234"])
    result = verify(pcs, old_quote)
    assert (result.tcb_status, result.advisory_ids) == ("OutOfDate", ("INTEL-SA-01234",))

    # the PCS cannot certify the new TCB before the CPU runs it
    with pytest.raises(UsageError, match="beyond this CPU's"):
        pcs.issue_pck_certificate(pck_key(b"new").public_key(), cpusvn=new, pcesvn=PCESVN, now=NOW)
    # the microcode update: CPUSVN rises, the PCE derives a new PCK key, the PCS certifies it
    update_cpusvn(pcs.machine, new)
    assert pcs.machine.load().cpusvn == new
    new_key = pck_key(b"new")
    pcs.issue_pck_certificate(new_key.public_key(), cpusvn=new, pcesvn=PCESVN, now=NOW)
    assert verify(pcs, make_quote(pcs, new_key, cpusvn=new)).tcb_status == "UpToDate"
    # the old certificate still chains, and still says OutOfDate
    assert verify(pcs, old_quote).tcb_status == "OutOfDate"
    assert pcs.pck_certificate(old, PCESVN) is not None


@pytest.mark.parametrize(
    ("level_status", "advisories"),
    [
        ("SWHardeningNeeded", ("INTEL-SA-00615",)),
        ("ConfigurationNeeded", ()),
        ("OutOfDateConfigurationNeeded", ("INTEL-SA-00289", "INTEL-SA-00828")),
    ],
)
def test_status_and_advisories_come_from_the_level_the_pck_tcb_matches(
    pcs: EmulatedPcs, level_status: str, advisories: tuple[str, ...]
) -> None:
    cpusvn = pcs.machine.load().cpusvn
    key, _ = certify(pcs)
    higher = TcbLevel.of_cpusvn(
        bytes([c + 1 for c in cpusvn]), PCESVN, "UpToDate", "2026-06-01T00:00:00Z"
    )
    ours = TcbLevel.of_cpusvn(cpusvn, PCESVN, level_status, "2026-01-01T00:00:00Z", advisories)
    pcs.set_tcb_levels([higher, ours])
    result = verify(pcs, make_quote(pcs, key, cpusvn=cpusvn))
    assert result.tcb_status == level_status
    assert set(result.advisory_ids) == set(advisories)


def test_no_matching_tcb_level_refused(pcs: EmulatedPcs) -> None:
    cpusvn = pcs.machine.load().cpusvn
    key, _ = certify(pcs)
    # the only level needs a higher PCESVN than the PCK certificate's (spec §5.1)
    pcs.set_tcb_levels([TcbLevel.of_cpusvn(cpusvn, PCESVN + 1, "UpToDate", "2026-01-01T00:00:00Z")])
    with pytest.raises(QuoteRefused, match="No matching TCB level"):
        verify(pcs, make_quote(pcs, key, cpusvn=cpusvn))


def test_qe_out_of_date_converges_with_platform_status(pcs: EmulatedPcs) -> None:
    key, _ = certify(pcs)
    pcs.set_tcb_levels(
        qe_levels=[
            QeTcbLevel(9, "UpToDate", "2026-06-01T00:00:00Z"),
            QeTcbLevel(8, "OutOfDate", "2026-01-01T00:00:00Z", ("INTEL-SA-00477",)),
        ]
    )
    result = verify(pcs, make_quote(pcs, key, cpusvn=pcs.machine.load().cpusvn))
    assert result.tcb_status == "OutOfDate"
    assert result.advisory_ids == ("INTEL-SA-00477",)


def test_cpusvn_update_refuses_rollback_and_no_change(pcs: EmulatedPcs) -> None:
    current = pcs.machine.load().cpusvn
    lower = bytes([current[0] - 1, *current[1:]])
    with pytest.raises(UsageError, match="cannot lower a CPUSVN component"):
        update_cpusvn(pcs.machine, lower)
    with pytest.raises(UsageError, match="already"):
        update_cpusvn(pcs.machine, current)
    with pytest.raises(UsageError, match="16 bytes"):
        update_cpusvn(pcs.machine, current[:15])
    assert pcs.machine.load().cpusvn == current


def test_tcb_recovery_must_be_above_every_published_level(pcs: EmulatedPcs) -> None:
    cpusvn = pcs.machine.load().cpusvn
    before = pcs.machine.load()
    with pytest.raises(UsageError, match="above every published one"):
        pcs.publish_tcb_recovery(cpusvn, PCESVN, now=NOW)
    with pytest.raises(UsageError, match="above every published one"):
        pcs.publish_tcb_recovery(bytes([cpusvn[0] + 1, 0, *cpusvn[2:]]), PCESVN, now=NOW)
    assert pcs.machine.load() == before


def test_issue_refuses_bad_keys_and_tcbs(pcs: EmulatedPcs) -> None:
    cpusvn = pcs.machine.load().cpusvn
    before = pcs.machine.load()
    with pytest.raises(MalformedInput, match="64 bytes"):
        pcs.issue_pck_certificate(b"\x01" * 65, cpusvn=cpusvn, pcesvn=PCESVN, now=NOW)
    with pytest.raises(MalformedInput, match="not a P-256 point"):
        pcs.issue_pck_certificate(b"\x01" * 64, cpusvn=cpusvn, pcesvn=PCESVN, now=NOW)
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(UsageError, match="P-256"):
        pcs.issue_pck_certificate(p384, cpusvn=cpusvn, pcesvn=PCESVN, now=NOW)
    with pytest.raises(UsageError, match="PCESVN"):
        pcs.issue_pck_certificate(pck_key().public_key(), cpusvn=cpusvn, pcesvn=1 << 16, now=NOW)
    with pytest.raises(UsageError, match="timezone-aware"):
        pcs.issue_pck_certificate(
            pck_key().public_key(), cpusvn=cpusvn, pcesvn=PCESVN, now=NOW.replace(tzinfo=None)
        )
    assert pcs.machine.load() == before


def test_raw_point_and_key_object_give_the_same_certificate(pcs: EmulatedPcs) -> None:
    key = pck_key()
    cpusvn = pcs.machine.load().cpusvn
    numbers = key.public_key().public_numbers()
    raw = numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")
    der = pcs.issue_pck_certificate(raw, cpusvn=cpusvn, pcesvn=PCESVN, now=NOW)
    again = pcs.issue_pck_certificate(key.public_key(), cpusvn=cpusvn, pcesvn=PCESVN, now=NOW)
    first, second = (x509.load_der_x509_certificate(d) for d in (der, again))
    assert first.serial_number == second.serial_number  # bound to the key and the TCB
    assert first.public_key() == second.public_key()
    assert len(pcs.machine.load().provisioning.pck_certificates) == 1  # type: ignore[union-attr]


# --- the machine keeps it ------------------------------------------------------------------------


def test_provisioning_made_once_and_kept_in_the_machine(base: MachineState) -> None:
    machine = MemoryMachine(replace(base, provisioning=None))
    with pytest.raises(UsageError, match="no emulated PCS yet"):
        EmulatedPcs(machine)
    calls: list[int] = []

    def random(n: int) -> bytes:
        calls.append(n)
        return bytes([len(calls)]) * n

    first = ensure_provisioning(machine, now=NOW, random=random, enclave_signing_key=None)
    made = machine.load()
    assert made.provisioning is not None and calls
    second = ensure_provisioning(machine, now=NOW, random=random)
    assert machine.load() == made  # idempotent: the secrets are never replaced
    assert first.root_der() == second.root_der()
    assert MachineState.from_json(made.to_json()) == made
    # the PCE/QE signing key is made inside the machine on first use, then kept
    assert made.provisioning.enclave_signing_key is None
    signer = first.enclave_signer()
    assert signer.public_key().key_size == 3072 and signer.public_key().public_numbers().e == 3
    kept = machine.load().provisioning
    assert kept is not None and kept.enclave_signing_key is not None
    again = second.enclave_signer().public_key().public_numbers()
    assert again == signer.public_key().public_numbers()
    assert MachineState.from_json(machine.load().to_json()) == machine.load()


def test_broken_signing_key_in_the_machine_is_named(base: MachineState) -> None:
    assert base.provisioning is not None
    bad = replace(base.provisioning, enclave_signing_key=b"\x30\x03\x02\x01\x00")
    with pytest.raises(MalformedInput, match="PCE/QE signing key") as info:
        EmulatedPcs(MemoryMachine(replace(base, provisioning=bad))).enclave_signer()
    assert info.value.field == "enclave_signing_key"


def test_machine_file_round_trips_and_reads_strictly(pcs: EmulatedPcs) -> None:
    certify(pcs)
    state = pcs.machine.load()
    assert MachineState.from_json(state.to_json()) == state
    doc = json.loads(state.to_json())
    doc["provisioning"]["extra"] = 1
    with pytest.raises(MalformedInput, match="provisioning: expected an object with"):
        MachineState.from_json(json.dumps(doc).encode(), source="m.json")
    doc = json.loads(state.to_json())
    doc["provisioning"]["root_key"] = "00" * 31
    with pytest.raises(MalformedInput, match="root_key: expected 32-byte hex") as info:
        MachineState.from_json(json.dumps(doc).encode(), source="m.json")
    assert info.value.source == "m.json"
    doc = json.loads(state.to_json())
    doc["provisioning"]["tcb_levels"][0]["status"] = "Fine"
    with pytest.raises(MalformedInput, match="status 'Fine' is not one of"):
        MachineState.from_json(json.dumps(doc).encode(), source="m.json")
    doc = json.loads(state.to_json())
    doc["cpusvn"] = "00"
    with pytest.raises(MalformedInput, match="cpusvn: expected 16-byte hex"):
        MachineState.from_json(json.dumps(doc).encode(), source="m.json")
    # a machine file written before issue 19 (no cpusvn, no provisioning) still reads
    doc = json.loads(state.to_json())
    del doc["cpusvn"], doc["provisioning"]
    old = MachineState.from_json(json.dumps(doc).encode())
    assert old.provisioning is None and old.cpusvn == state.cpusvn


def test_platform_runs_the_cpu_at_the_machines_cpusvn(pcs: EmulatedPcs) -> None:
    from sgxlaunch.launch.platform import Platform
    from sgxlaunch.policy import MemoryStore
    from tests.support.clock import Clock

    store = MemoryStore()
    old = pcs.machine.load().cpusvn
    assert Platform.open(store, pcs.machine, clock=Clock()).cpu.cpusvn == old
    new = bytes([old[0], old[1] + 1, *old[2:]])
    update_cpusvn(pcs.machine, new)
    assert Platform.open(store, pcs.machine, clock=Clock()).cpu.cpusvn == new
