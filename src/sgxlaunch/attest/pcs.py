"""The emulated PCS: the DCAP PKI of the emulated platform, held by the machine.

Intel's Provisioning Certification Service certifies each platform's PCK key and publishes the
collateral a verifier needs (spec §3): CRLs, a TCB info and a QE identity signed by the TCB
Signing key, and the certificate chains up to the SGX Root CA. The emulated platform has the
same PKI, in the same formats, with its own root — so ``dcap-qvl`` verifies an emulated quote
unmodified once it is handed that root instead of Intel's:

* **Root CA** (self-signed, CA, pathlen 1), **PCK Processor CA** (CA, pathlen 0) and **TCB
  Signing** (end entity) certificates: ECDSA P-256 / SHA-256, the extensions Intel's carry
  (authority and subject key identifiers, CRL distribution point, critical key usage and basic
  constraints), names with Intel's five attributes (CN, O, L, ST, C) and CNs that contain what
  QVL looks for ("SGX Root CA", "SGX PCK … CA", "SGX PCK Certificate", "SGX TCB Signing"), but
  say *emulated*: this is not Intel's PKI.
* **PCK certificates** with the SGX extension (OID 1.2.840.113741.1.13.1, spec §3.2): PPID,
  TCB (16 component SVNs, PCESVN, CPUSVN), PCE-ID, FMSPC, SGX type 0 (Standard) — the five
  entries of a Processor-CA PCK, DER-encoded exactly as Intel's (a test rebuilds the extension
  of a real PCK certificate byte for byte).
* **CRLs** (v2, CRL Number and Authority Key Identifier, as QVL requires, spec §3.1.5): the root
  CA's (30 days here; Intel's runs about a year) and the PCK CA's (30 days, as Intel's).
* **TCB info v3** (``id`` SGX, ``tcbType`` 0, levels with ``sgxtcbcomponents`` and
  ``pcesvn``) and **QE identity v2** (``id`` QE), compact JSON in Intel's member order,
  signed with raw ``r‖s`` (64 bytes, hex) over the body's bytes (spec §3.3, §3.4); 30 days
  from ``issueDate`` to ``nextUpdate``.

Every key, certificate and published level lives in the machine
(:class:`~sgxlaunch.cpu.provisioning.ProvisioningState`), never in the home; so does the
PCE/QE signing key (RSA-3072, e = 3), which only :meth:`EmulatedPcs.enclave_signer` hands out,
to the code that signs the PCE and QE images. Collateral is signed afresh at the ``now`` it
is asked for, as a PCCS serves what the PCS signed last.

The core takes ``now`` and a randomness source; it opens no file and reads no clock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from sgxlaunch.cpu.machine import Machine, MachineConflict, MachineState
from sgxlaunch.cpu.msr import cpusvn_beyond
from sgxlaunch.cpu.provisioning import (
    MAX_ISSUED_PCKS,
    IssuedPck,
    ProvisioningState,
    QeTcbLevel,
    TcbLevel,
)
from sgxlaunch.errors import MalformedInput, UsageError
from sgxlaunch.sigstruct import RsaKeySigner, check_signing_key, generate_key, mrsigner_of

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
"""The PCK certificate's SGX extension (spec §3.2)."""

ROOT_CN = "sgxlaunch Emulated SGX Root CA"
PCK_CA_CN = "sgxlaunch Emulated SGX PCK Processor CA"
PCK_CN = "sgxlaunch Emulated SGX PCK Certificate"
TCB_SIGNING_CN = "sgxlaunch Emulated SGX TCB Signing"
ORGANIZATION = "sgxlaunch emulated PCS"

PCEID = b"\x00\x00"
"""The PCE-ID of the emulated PCE (Intel's PCE has 0000)."""
FMSPC = bytes.fromhex("00a0656d7500")
"""The FMSPC of the emulated part (an arbitrary fixed value, not a real processor family)."""
DEFAULT_PCESVN = 13
"""The PCE ISVSVN of the first published TCB level (the emulated PCE's)."""
QE_ISVPRODID = 1
DEFAULT_QE_ISVSVN = 8
"""The QE ISVSVN of the first published QE TCB level (the emulated QE's)."""
QE_MISCSELECT = "00000000"
QE_MISCSELECT_MASK = "FFFFFFFF"
QE_ATTRIBUTES = "11000000000000000000000000000000"
QE_ATTRIBUTES_MASK = "FBFFFFFFFFFFFFFF0000000000000000"
"""Intel's QE identity values (spec §3.7): INIT and PROVISIONKEY set, DEBUG clear,
MODE64BIT and XFRM ignored."""

ROOT_NOT_AFTER = datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)
"""The root's end of validity (as Intel's re-issued root)."""
CA_LIFETIME = timedelta(days=15 * 365)
LEAF_LIFETIME = timedelta(days=7 * 365)
CRL_LIFETIME = timedelta(days=30)
COLLATERAL_LIFETIME = timedelta(days=30)
"""TCB info and QE identity: ``nextUpdate`` − ``issueDate`` (Intel's are 30 days)."""

_ROOT_CRL_URL = "https://pcs.sgxlaunch.invalid/sgx/certification/v4/rootcacrl"
_PCK_CRL_URL = "https://pcs.sgxlaunch.invalid/sgx/certification/v4/pckcrl?ca=processor"

Random = Callable[[int], bytes]


# --- DER for the SGX extension (cryptography has no general ASN.1 encoder) -------------------


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _der_oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return _der(0x06, bytes(out))


def _der_int(value: int, tag: int = 0x02) -> bytes:
    size = value.bit_length() // 8 + 1  # room for the sign bit
    return _der(tag, value.to_bytes(size, "big"))


def _der_seq(*items: bytes) -> bytes:
    return _der(0x30, b"".join(items))


def _entry(suffix: str, value: bytes) -> bytes:
    return _der_seq(_der_oid(f"{SGX_EXTENSION_OID}.{suffix}"), value)


def sgx_extension(*, ppid: bytes, cpusvn: bytes, pcesvn: int, pceid: bytes, fmspc: bytes) -> bytes:
    """The DER value of a Processor-CA PCK certificate's SGX extension (spec §3.2).

    ``SEQUENCE`` of five ``SEQUENCE {OID, value}``: PPID (OCTET STRING 16); TCB (``SEQUENCE``
    of SGXTCBCOMP01..16SVN as INTEGERs = the bytes of ``cpusvn``, PCESVN INTEGER, CPUSVN OCTET
    STRING 16); PCE-ID (OCTET STRING 2); FMSPC (OCTET STRING 6); SGX Type (ENUMERATED 0,
    Standard).
    """
    if len(ppid) != 16 or len(cpusvn) != 16 or len(pceid) != 2 or len(fmspc) != 6:
        raise UsageError("PPID and CPUSVN are 16 bytes, PCE-ID 2, FMSPC 6")
    tcb = [_entry(f"2.{i + 1}", _der_int(svn)) for i, svn in enumerate(cpusvn)]
    tcb.append(_entry("2.17", _der_int(pcesvn)))
    tcb.append(_entry("2.18", _der(0x04, cpusvn)))
    return _der_seq(
        _entry("1", _der(0x04, ppid)),
        _entry("2", _der_seq(*tcb)),
        _entry("3", _der(0x04, pceid)),
        _entry("4", _der(0x04, fmspc)),
        _entry("5", _der_int(0, tag=0x0A)),
    )


# --- keys, names, certificates ------------------------------------------------------------------


def _scalar(random: Random) -> bytes:
    """A P-256 private scalar in [1, n − 1] from 32 random bytes (reduced; bias < 2^-127)."""
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    value = int.from_bytes(random(32), "big") % (order - 1) + 1
    return value.to_bytes(32, "big")


def _ec_key(scalar: bytes) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )


def _serial(label: bytes, public_key: ec.EllipticCurvePublicKey, extra: bytes = b"") -> int:
    """A positive 20-byte serial number bound to the certified key and ``extra`` (deterministic:
    reissuing the same certificate gives the same serial, as PCS does per platform and TCB)."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.sha256(b"sgxlaunch/pcs-serial/v1\x00" + label + spki + extra).digest()
    return int.from_bytes(digest[:20], "big") >> 1 | 1


def _certificate(
    *,
    subject: str,
    issuer_name: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    public_key: ec.EllipticCurvePublicKey,
    serial: int,
    not_before: datetime,
    not_after: datetime,
    ca_path_length: int | None,
    crl_url: str,
    extra: x509.ExtensionType | None = None,
) -> bytes:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier(crl_url)], None, None, None
                    )
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    ca = ca_path_length is not None
    builder = builder.add_extension(
        x509.KeyUsage(
            digital_signature=not ca,
            content_commitment=not ca,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=ca,
            crl_sign=ca,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    ).add_extension(x509.BasicConstraints(ca=ca, path_length=ca_path_length), critical=True)
    if extra is not None:
        builder = builder.add_extension(extra, critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.DER)


def _pem(der: bytes) -> str:
    cert = x509.load_der_x509_certificate(der)
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _whole_seconds(when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise UsageError("now must be a timezone-aware datetime (UTC)")
    return when.astimezone(UTC).replace(microsecond=0)


def _time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _raw_signature(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _public_key(value: ec.EllipticCurvePublicKey | bytes) -> ec.EllipticCurvePublicKey:
    if isinstance(value, ec.EllipticCurvePublicKey):
        if not isinstance(value.curve, ec.SECP256R1):
            raise UsageError(f"a PCK key is ECDSA P-256, not {value.curve.name}")
        return value
    if len(value) != 64:
        raise MalformedInput(
            f"a PCK public key is 64 bytes (X || Y), not {len(value)}", field="pck_public_key"
        )
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + value)
    except ValueError:
        raise MalformedInput(
            "the PCK public key is not a P-256 point", field="pck_public_key"
        ) from None


# --- creating the machine's PCS -----------------------------------------------------------------


def _pkcs8(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def new_provisioning(
    now: datetime,
    random: Random,
    *,
    cpusvn: bytes,
    enclave_signing_key: rsa.RSAPrivateKey | None = None,
    pcesvn: int = DEFAULT_PCESVN,
    qe_isvsvn: int = DEFAULT_QE_ISVSVN,
) -> ProvisioningState:
    """A new emulated PCS: issuer keys and certificates, PPID, and the first published levels
    (``cpusvn`` with ``pcesvn`` UpToDate; QE ``qe_isvsvn`` UpToDate). The PCE/QE signing key is
    ``enclave_signing_key`` when given, else made on first use
    (:meth:`EmulatedPcs.enclave_signer`: an RSA-3072 key takes about a second to make).

    Raises:
        UsageError: ``now`` is naive; the signing key is not RSA-3072 with e = 3.
    """
    now = _whole_seconds(now)
    root_scalar, ca_scalar, tcb_scalar = _scalar(random), _scalar(random), _scalar(random)
    root, ca, tcb = _ec_key(root_scalar), _ec_key(ca_scalar), _ec_key(tcb_scalar)
    root_cert = _certificate(
        subject=ROOT_CN,
        issuer_name=ROOT_CN,
        issuer_key=root,
        public_key=root.public_key(),
        serial=_serial(b"root", root.public_key()),
        not_before=now,
        not_after=ROOT_NOT_AFTER,
        ca_path_length=1,
        crl_url=_ROOT_CRL_URL,
    )
    ca_cert = _certificate(
        subject=PCK_CA_CN,
        issuer_name=ROOT_CN,
        issuer_key=root,
        public_key=ca.public_key(),
        serial=_serial(b"pck-ca", ca.public_key()),
        not_before=now,
        not_after=min(now + CA_LIFETIME, ROOT_NOT_AFTER),
        ca_path_length=0,
        crl_url=_ROOT_CRL_URL,
    )
    tcb_cert = _certificate(
        subject=TCB_SIGNING_CN,
        issuer_name=ROOT_CN,
        issuer_key=root,
        public_key=tcb.public_key(),
        serial=_serial(b"tcb-signing", tcb.public_key()),
        not_before=now,
        not_after=min(now + LEAF_LIFETIME, ROOT_NOT_AFTER),
        ca_path_length=None,
        crl_url=_ROOT_CRL_URL,
    )
    if enclave_signing_key is not None:
        check_signing_key(enclave_signing_key.public_key())
    date = _time(now)
    return ProvisioningState(
        root_key=root_scalar,
        root_cert=root_cert,
        pck_ca_key=ca_scalar,
        pck_ca_cert=ca_cert,
        tcb_signing_key=tcb_scalar,
        tcb_signing_cert=tcb_cert,
        enclave_signing_key=None if enclave_signing_key is None else _pkcs8(enclave_signing_key),
        ppid=random(16),
        fmspc=FMSPC,
        pceid=PCEID,
        tcb_levels=(TcbLevel.of_cpusvn(cpusvn, pcesvn, "UpToDate", date),),
        qe_tcb_levels=(QeTcbLevel(qe_isvsvn, "UpToDate", date),),
    )


def ensure_provisioning(
    machine: Machine,
    *,
    now: datetime,
    random: Random,
    enclave_signing_key: rsa.RSAPrivateKey | None = None,
    pcesvn: int = DEFAULT_PCESVN,
    qe_isvsvn: int = DEFAULT_QE_ISVSVN,
) -> EmulatedPcs:
    """The machine's emulated PCS, made on first use (kept if it exists: idempotent).

    The secrets are written with the machine's compare-and-set; if another process made them
    first, theirs are kept. See :func:`new_provisioning` for the arguments.

    Raises:
        UsageError: as :func:`new_provisioning`.
        MachineConflict: the machine changed otherwise while they were being made.
    """
    state = machine.load()
    if state.provisioning is None:
        made = new_provisioning(
            now,
            random,
            cpusvn=state.cpusvn,
            enclave_signing_key=enclave_signing_key,
            pcesvn=pcesvn,
            qe_isvsvn=qe_isvsvn,
        )
        current = machine.load()
        if current.provisioning is None:
            machine.swap(current, replace(current, provisioning=made))
    return EmulatedPcs(machine)


def update_cpusvn(machine: Machine, cpusvn: bytes) -> MachineState:
    """A microcode update: the emulated CPU's CPUSVN rises to ``cpusvn``.

    Every key derived with the new CPUSVN changes (EGETKEY may still derive with the old one:
    KEYREQUEST.CPUSVN not beyond CR_CPUSVN); the PCK certificate for the new TCB is issued when
    the PCE derives the new PCK key (:meth:`EmulatedPcs.issue_pck_certificate`). The processor
    picks the new value up when the platform is next opened.

    Checks: 16 bytes; no component lower than the current one (microcode is not rolled back
    here); at least one higher.

    Raises:
        UsageError: the checks above.
        MachineConflict: the machine changed while updating.
    """
    if len(cpusvn) != 16:
        raise UsageError(f"CPUSVN is 16 bytes, not {len(cpusvn)}")
    state = machine.load()
    if cpusvn_beyond(state.cpusvn, cpusvn):
        raise UsageError(
            "a microcode update cannot lower a CPUSVN component",
            detail=[f"current: {state.cpusvn.hex()}", f"asked:   {cpusvn.hex()}"],
        )
    if cpusvn == state.cpusvn:
        raise UsageError(f"the CPUSVN is already {cpusvn.hex()}")
    new = replace(state, cpusvn=bytes(cpusvn))
    machine.swap(state, new)
    return new


# --- the PCS ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignedDocument:
    """A signed PCS JSON document: the body exactly as signed, and the raw ``r‖s`` signature."""

    body: str
    signature: bytes

    def served(self, key: str) -> str:
        """The document as PCS serves it: ``{"<key>":<body>,"signature":"<hex>"}``."""
        return f'{{"{key}":{self.body},"signature":"{self.signature.hex()}"}}'


class EmulatedPcs:
    """The emulated PCS of one machine (see the module docstring).

    Reads the machine at each call (nothing is cached) and changes it only through
    ``swap`` (compare-and-set).
    """

    __slots__ = ("machine",)

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self._state()

    def _state(self) -> ProvisioningState:
        state = self.machine.load().provisioning
        if state is None:
            raise UsageError(
                "this machine has no emulated PCS yet (made by `sgxlaunch platform init`, or "
                "on first use by `sgxlaunch platform root` / `platform collateral`)"
            )
        return state

    def _update(self, change: Callable[[ProvisioningState], ProvisioningState]) -> None:
        machine_state = self.machine.load()
        current = machine_state.provisioning
        if current is None:  # pragma: no cover - checked at construction
            raise UsageError("this machine has no emulated PCS")
        self.machine.swap(machine_state, replace(machine_state, provisioning=change(current)))

    # -- identities ------------------------------------------------------------------------

    @property
    def ppid(self) -> bytes:
        return self._state().ppid

    @property
    def fmspc(self) -> bytes:
        return self._state().fmspc

    @property
    def pceid(self) -> bytes:
        return self._state().pceid

    def root_der(self) -> bytes:
        """The root CA certificate (DER): the verifier's trust anchor."""
        return self._state().root_cert

    def pck_ca_der(self) -> bytes:
        return self._state().pck_ca_cert

    def tcb_signing_der(self) -> bytes:
        return self._state().tcb_signing_cert

    def enclave_signer(self) -> RsaKeySigner:
        """The PCE/QE signing key (RSA-3072, e = 3), for signing the PCE and QE SIGSTRUCTs.

        Made inside the machine on first use (written with the machine's compare-and-set; if
        another process made one first, that one is kept and returned).

        Raises:
            MalformedInput: the machine's key is not an RSA-3072, e = 3 key.
        """
        stored = self._state().enclave_signing_key
        made: bytes | None = None
        for _ in range(8):  # the counter may move meanwhile: retry the compare-and-set
            if stored is not None:
                break
            made = made or _pkcs8(generate_key())
            machine_state = self.machine.load()
            current = machine_state.provisioning
            if current is not None and current.enclave_signing_key is None:
                new = replace(current, enclave_signing_key=made)
                with contextlib.suppress(MachineConflict):
                    self.machine.swap(machine_state, replace(machine_state, provisioning=new))
            stored = self._state().enclave_signing_key
        if stored is None:
            raise MachineConflict("the machine kept changing: the PCE/QE signing key was not kept")
        try:
            key = serialization.load_der_private_key(stored, None)
        except ValueError:
            key = None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise MalformedInput(
                "the machine's PCE/QE signing key is not an RSA key", field="enclave_signing_key"
            )
        try:
            check_signing_key(key.public_key())
        except UsageError as exc:
            raise MalformedInput(exc.message, field="enclave_signing_key") from None
        return RsaKeySigner(key)

    @property
    def qe_mrsigner(self) -> bytes:
        """MRSIGNER of the PCE/QE signing key (the QE identity's ``mrsigner``)."""
        return mrsigner_of(self.enclave_signer().public_key())

    # -- PCK certificates --------------------------------------------------------------------

    def issue_pck_certificate(
        self,
        pck_public_key: ec.EllipticCurvePublicKey | bytes,
        *,
        cpusvn: bytes,
        pcesvn: int,
        now: datetime,
    ) -> bytes:
        """Certify the PCK key the PCE derived for TCB (``cpusvn``, ``pcesvn``); kept in the
        machine (replacing an earlier one for the same TCB; the oldest beyond
        :data:`~sgxlaunch.cpu.provisioning.MAX_ISSUED_PCKS` are dropped).

        Checks, in order: ``now`` aware; the key is a P-256 point; ``cpusvn`` is 16 bytes and
        not beyond the machine's CPUSVN (a PCE on this CPU cannot derive a key for a newer
        TCB); ``pcesvn`` in 0..65535.

        Returns:
            The PCK certificate (DER), issued by the PCK Processor CA.

        Raises:
            UsageError / MalformedInput: a check above failed.
        """
        now = _whole_seconds(now)
        key = _public_key(pck_public_key)
        machine_cpusvn = self.machine.load().cpusvn
        if len(cpusvn) != 16:
            raise UsageError(f"CPUSVN is 16 bytes, not {len(cpusvn)}")
        if cpusvn_beyond(cpusvn, machine_cpusvn):
            raise UsageError(
                "no PCK certificate for a TCB beyond this CPU's",
                detail=[f"CPU: {machine_cpusvn.hex()}", f"asked: {cpusvn.hex()}"],
            )
        if type(pcesvn) is not int or not 0 <= pcesvn <= 0xFFFF:
            raise UsageError(f"PCESVN is 0..65535, not {pcesvn!r}")
        state = self._state()
        ca = _ec_key(state.pck_ca_key)
        ca_cert = x509.load_der_x509_certificate(state.pck_ca_cert)
        extension = sgx_extension(
            ppid=state.ppid, cpusvn=cpusvn, pcesvn=pcesvn, pceid=state.pceid, fmspc=state.fmspc
        )
        der = _certificate(
            subject=PCK_CN,
            issuer_name=PCK_CA_CN,
            issuer_key=ca,
            public_key=key,
            serial=_serial(b"pck", key, cpusvn + pcesvn.to_bytes(2, "little")),
            not_before=now,
            not_after=min(now + LEAF_LIFETIME, ca_cert.not_valid_after_utc),
            ca_path_length=None,
            crl_url=_PCK_CRL_URL,
            extra=x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSION_OID), extension),
        )

        def add(current: ProvisioningState) -> ProvisioningState:
            kept = tuple(
                p for p in current.pck_certificates if (p.cpusvn, p.pcesvn) != (cpusvn, pcesvn)
            )
            issued = (*kept, IssuedPck(bytes(cpusvn), pcesvn, der))[-MAX_ISSUED_PCKS:]
            return replace(current, pck_certificates=issued)

        self._update(add)
        return der

    def pck_certificate(self, cpusvn: bytes, pcesvn: int) -> bytes | None:
        """The PCK certificate issued for exactly this TCB (DER), or ``None``."""
        issued = self._state().pck_for(cpusvn, pcesvn)
        return None if issued is None else issued.der

    def pck_chain_pem(self, cpusvn: bytes, pcesvn: int) -> bytes:
        """The PCK chain as the QE's certification data type 5 carries it: PEM of the PCK
        certificate, the PCK Processor CA and the root, in that order (the QE appends the
        terminating NUL).

        Raises:
            UsageError: no PCK certificate was issued for this TCB.
        """
        state = self._state()
        issued = state.pck_for(cpusvn, pcesvn)
        if issued is None:
            raise UsageError(
                f"no PCK certificate for CPUSVN {cpusvn.hex()} / PCESVN {pcesvn}: the PCE has "
                "not been provisioned at this TCB"
            )
        chain = _pem(issued.der) + _pem(state.pck_ca_cert) + _pem(state.root_cert)
        return chain.encode("ascii")

    def revoke_pck(self, certificate: bytes | int) -> None:
        """Put a PCK certificate (DER, or its serial number) into the PCK CRL (raising its CRL
        Number).

        Raises:
            MalformedInput: ``certificate`` is not DER X.509.
        """
        if isinstance(certificate, int):
            serial = certificate
        else:
            try:
                serial = x509.load_der_x509_certificate(certificate).serial_number
            except ValueError as exc:
                raise MalformedInput(f"not a DER certificate: {exc}") from None

        def add(current: ProvisioningState) -> ProvisioningState:
            if serial in current.revoked:
                return current
            return replace(
                current,
                revoked=(*current.revoked, serial),
                pck_crl_number=current.pck_crl_number + 1,
            )

        self._update(add)

    # -- TCB levels ----------------------------------------------------------------------------

    @property
    def tcb_levels(self) -> tuple[TcbLevel, ...]:
        return self._state().tcb_levels

    @property
    def qe_tcb_levels(self) -> tuple[QeTcbLevel, ...]:
        return self._state().qe_tcb_levels

    def set_tcb_levels(
        self,
        levels: Sequence[TcbLevel] | None = None,
        *,
        qe_levels: Sequence[QeTcbLevel] | None = None,
    ) -> None:
        """Publish new platform and/or QE TCB levels (``tcbEvaluationDataNumber`` + 1).

        Raises:
            MalformedInput: no level, more than 64, or two levels with the same TCB.
        """

        def publish(current: ProvisioningState) -> ProvisioningState:
            return replace(
                current,
                tcb_levels=current.tcb_levels if levels is None else tuple(levels),
                qe_tcb_levels=current.qe_tcb_levels if qe_levels is None else tuple(qe_levels),
                tcb_evaluation_data_number=current.tcb_evaluation_data_number + 1,
            )

        self._update(publish)

    def publish_tcb_recovery(
        self,
        cpusvn: bytes,
        pcesvn: int,
        *,
        now: datetime,
        advisories: Sequence[str] = (),
    ) -> None:
        """A TCB recovery, as Intel publishes one with a microcode update: a new level
        (``cpusvn``, ``pcesvn``) is UpToDate, and every level that was UpToDate becomes
        OutOfDate (carrying ``advisories``, the advisories the update fixes).

        Raises:
            UsageError: the new level is not above every published level (it must be at least
                as high in every component and PCESVN, and differ).
            MalformedInput: an advisory ID is not of the form ``INTEL-SA-00615``.
        """
        now = _whole_seconds(now)
        new = TcbLevel.of_cpusvn(cpusvn, pcesvn, "UpToDate", _time(now))
        for level in self.tcb_levels:
            if (
                any(a < b for a, b in zip(new.components, level.components, strict=True))
                or new.pcesvn < level.pcesvn
                or (new.components, new.pcesvn) == (level.components, level.pcesvn)
            ):
                raise UsageError(
                    "a TCB recovery publishes a level above every published one",
                    detail=[
                        f"published: {bytes(level.components).hex()} / PCESVN {level.pcesvn}",
                        f"new:       {cpusvn.hex()} / PCESVN {pcesvn}",
                    ],
                )

        def publish(current: ProvisioningState) -> ProvisioningState:
            older = tuple(
                replace(
                    level,
                    status="OutOfDate",
                    advisories=tuple(dict.fromkeys((*level.advisories, *advisories))),
                )
                if level.status == "UpToDate"
                else level
                for level in current.tcb_levels
            )
            return replace(
                current,
                tcb_levels=(new, *older),
                tcb_evaluation_data_number=current.tcb_evaluation_data_number + 1,
            )

        self._update(publish)

    # -- signed collateral -------------------------------------------------------------------

    def tcb_info(self, now: datetime) -> SignedDocument:
        """TCB info v3 (spec §3.3), issued at ``now``, signed by the TCB signing key."""
        now = _whole_seconds(now)
        state = self._state()
        levels = sorted(state.tcb_levels, key=lambda lv: (lv.components, lv.pcesvn), reverse=True)
        body = {
            "id": "SGX",
            "version": 3,
            "issueDate": _time(now),
            "nextUpdate": _time(now + COLLATERAL_LIFETIME),
            "fmspc": state.fmspc.hex().upper(),
            "pceId": state.pceid.hex().upper(),
            "tcbType": 0,
            "tcbEvaluationDataNumber": state.tcb_evaluation_data_number,
            "tcbLevels": [
                {
                    "tcb": {
                        "sgxtcbcomponents": [{"svn": svn} for svn in level.components],
                        "pcesvn": level.pcesvn,
                    },
                    "tcbDate": level.date,
                    "tcbStatus": level.status,
                    **({"advisoryIDs": list(level.advisories)} if level.advisories else {}),
                }
                for level in levels
            ],
        }
        return self._sign_json(state, body)

    def qe_identity(self, now: datetime) -> SignedDocument:
        """QE identity v2 (spec §3.4): Intel's MISCSELECT / ATTRIBUTES values and masks, the
        PCE/QE signing key's MRSIGNER, ISVPRODID 1, the published QE TCB levels (highest
        ISVSVN first, as PCS serves them: QVL takes the first level at or below the QE's)."""
        now = _whole_seconds(now)
        state = self._state()
        levels = sorted(state.qe_tcb_levels, key=lambda lv: lv.isvsvn, reverse=True)
        body = {
            "id": "QE",
            "version": 2,
            "issueDate": _time(now),
            "nextUpdate": _time(now + COLLATERAL_LIFETIME),
            "tcbEvaluationDataNumber": state.tcb_evaluation_data_number,
            "miscselect": QE_MISCSELECT,
            "miscselectMask": QE_MISCSELECT_MASK,
            "attributes": QE_ATTRIBUTES,
            "attributesMask": QE_ATTRIBUTES_MASK,
            "mrsigner": self.qe_mrsigner.hex().upper(),
            "isvprodid": QE_ISVPRODID,
            "tcbLevels": [
                {
                    "tcb": {"isvsvn": level.isvsvn},
                    "tcbDate": level.date,
                    "tcbStatus": level.status,
                    **({"advisoryIDs": list(level.advisories)} if level.advisories else {}),
                }
                for level in levels
            ],
        }
        return self._sign_json(state, body)

    @staticmethod
    def _sign_json(state: ProvisioningState, body: object) -> SignedDocument:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=True)
        signature = _raw_signature(_ec_key(state.tcb_signing_key), text.encode("utf-8"))
        return SignedDocument(text, signature)

    def root_ca_crl(self, now: datetime) -> bytes:
        """The root CA's CRL (DER; no entries), valid 30 days from ``now``."""
        now = _whole_seconds(now)
        state = self._state()
        return _crl(_ec_key(state.root_key), ROOT_CN, now, (), 1)

    def pck_crl(self, now: datetime) -> bytes:
        """The PCK Processor CA's CRL (DER; the revoked PCK serials), valid 30 days."""
        now = _whole_seconds(now)
        state = self._state()
        return _crl(_ec_key(state.pck_ca_key), PCK_CA_CN, now, state.revoked, state.pck_crl_number)

    def collateral(self, now: datetime, *, include_pck_chain: bool = False) -> bytes:
        """The collateral document (dcap-qvl's ``QuoteCollateralV3`` JSON, the form
        :meth:`sgxlaunch.attest.Collateral.from_bytes` reads), issued at ``now``.

        ``include_pck_chain`` adds ``pck_certificate_chain`` for the machine's current TCB
        (for quotes whose certification data is not the chain; the emulated QE's is).
        """
        now = _whole_seconds(now)
        state = self._state()
        root = _pem(state.root_cert)
        tcb_chain = _pem(state.tcb_signing_cert) + root
        tcb_info = self.tcb_info(now)
        qe_identity = self.qe_identity(now)
        doc = {
            "pck_crl_issuer_chain": _pem(state.pck_ca_cert) + root,
            "root_ca_crl": self.root_ca_crl(now).hex(),
            "pck_crl": self.pck_crl(now).hex(),
            "tcb_info_issuer_chain": tcb_chain,
            "tcb_info": tcb_info.body,
            "tcb_info_signature": tcb_info.signature.hex(),
            "qe_identity_issuer_chain": tcb_chain,
            "qe_identity": qe_identity.body,
            "qe_identity_signature": qe_identity.signature.hex(),
        }
        if include_pck_chain:
            cpusvn = self.machine.load().cpusvn
            newest = [p for p in state.pck_certificates if p.cpusvn == cpusvn]
            if not newest:
                raise UsageError(f"no PCK certificate for this CPU's TCB ({cpusvn.hex()})")
            doc["pck_certificate_chain"] = self.pck_chain_pem(cpusvn, newest[-1].pcesvn).decode()
        return json.dumps(doc, indent=1).encode("ascii") + b"\n"


def _crl(
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    now: datetime,
    revoked: Sequence[int],
    number: int,
) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(_name(issuer))
        .last_update(now)
        .next_update(now + CRL_LIFETIME)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    crl = builder.sign(key, hashes.SHA256())
    return crl.public_bytes(serialization.Encoding.DER)


__all__ = [
    "DEFAULT_PCESVN",
    "DEFAULT_QE_ISVSVN",
    "FMSPC",
    "PCEID",
    "QE_ISVPRODID",
    "SGX_EXTENSION_OID",
    "EmulatedPcs",
    "QeTcbLevel",
    "SignedDocument",
    "TcbLevel",
    "ensure_provisioning",
    "new_provisioning",
    "sgx_extension",
    "update_cpusvn",
]
