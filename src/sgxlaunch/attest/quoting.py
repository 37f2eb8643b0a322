"""The host side of quoting: the PCE and QE loaded, the attestation key certified, quotes made.

This plays the part of Intel's quote library and quote provider (``sgx_qe_get_target_info``,
``sgx_qe_get_quote``): it runs no cryptography of its own. It loads the emulated PCE and QE
(:mod:`sgxlaunch.attest.pce`, :mod:`sgxlaunch.attest.qe`) through a launch callback (the
Platform's, so owner mode decides through the launch enclave, and PROVISIONKEY is granted
through ``/dev/sgx_provision`` as on Linux), passes buffers between them, and keeps the
certified attestation key in the home: the sealed key blob, the QE report the PCE signed and
that signature (:class:`CertifiedKey`, store key :data:`QE_KEY_KEY`). The home is the
attacker's; a changed record makes the QE refuse (it does not unseal, or the QE report does
not bind the key) or makes a quote that does not verify — never a quote with another key.

The machine's side — its PCE/QE signing key and the PCK certificate its PCS issued — is reached
through the :class:`Provisioning` protocol, so that key never leaves the machine.

Checks before a quote, in order: the REPORT is 432 bytes with zero reserved fields
(:class:`~sgxlaunch.errors.MalformedInput`); the REPORT's enclave is not DEBUG
(:class:`~sgxlaunch.errors.UsageError`; the QE refuses it too); the PCK chain for the current
TCB exists and its leaf certifies the PCK the PCE derives for that TCB
(:class:`~sgxlaunch.errors.VerificationFailed`: a PCE signed by another key derives another
PCK); the QE's own checks (:class:`ReportRefused` when the REPORT's MAC fails).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from sgxlaunch.arch import Attributes, Report, Sigstruct, TargetInfo
from sgxlaunch.arch.constants import AttributeFlag
from sgxlaunch.attest.pce import (
    ECALL_CERTIFY,
    ECALL_PCK_INFO,
    PCE_ATTRIBUTES,
    PCE_ISVPRODID,
    PCE_ISVSVN,
    ProvisioningCertificationEnclave,
    parse_pck_info,
    tcb_bytes,
)
from sgxlaunch.attest.qe import (
    BLOB_SIZE,
    ECALL_GEN_KEY,
    ECALL_QUOTE,
    ECALL_TARGET_INFO,
    QE_ATTRIBUTES,
    QE_ISVPRODID,
    QE_ISVSVN,
    STATUS_BINDING,
    STATUS_DEBUG,
    STATUS_KEY,
    STATUS_MALFORMED,
    STATUS_REPORT_MAC,
    STATUS_UNSEAL,
    QuotingEnclave,
)
from sgxlaunch.attest.roots import X509_ERRORS, pem_certificates
from sgxlaunch.cpu import EnclaveImage, program_image
from sgxlaunch.cpu.machine import Machine
from sgxlaunch.errors import MalformedInput, ReportRefused, UsageError, VerificationFailed
from sgxlaunch.sigstruct import EnclaveSigner, sign

if TYPE_CHECKING:
    from sgxlaunch.attest.pcs import EmulatedPcs

QE_KEY_KEY = "attest/qe-key"
"""Store key of the certified attestation key (:class:`CertifiedKey`)."""

_ALL64 = 2**64 - 1
_ALL32 = 2**32 - 1
_RECORD = struct.Struct(f"<{BLOB_SIZE}s384s64s16sH64s")
_NUL = b"\x00"


class _StaleKey(VerificationFailed):
    """The QE refused the home's certified key (it does not unseal or does not bind)."""


class Provisioning(Protocol):
    """What the machine provides for quoting (its PCS and its PCE/QE signing key)."""

    def sign_platform_enclave(self, body: Sigstruct) -> Sigstruct:
        """``body`` signed by the machine's PCE/QE signing key (the key never leaves)."""
        ...

    def pck_chain(self, cpusvn: bytes, pcesvn: int) -> bytes | None:
        """The PEM chain (PCK leaf, PCK CA, root) certifying the PCK of that TCB, or ``None``
        when the PCS has issued no PCK certificate for it."""
        ...

    def issue_pck_certificate(self, public_key: bytes, cpusvn: bytes, pcesvn: int) -> None:
        """Have the PCS certify the PCK ``public_key`` (X ‖ Y) of that TCB."""
        ...


class PcsProvisioning:
    """:class:`Provisioning` by the machine's emulated PCS (:mod:`sgxlaunch.attest.pcs`), made
    on first use if the machine has none yet (``ensure_provisioning``).

    Args:
        machine: the machine holding the PCS and the PCE/QE signing key.
        clock: the time certificates are issued at.
        random: randomness for a PCS made on first use (default :func:`os.urandom`, as the
            processor's).
    """

    def __init__(
        self,
        machine: Machine,
        clock: Callable[[], datetime],
        random: Callable[[int], bytes] | None = None,
    ) -> None:
        self.machine = machine
        self.clock = clock
        self.random = random if random is not None else os.urandom
        self._signer: EnclaveSigner | None = None

    def _pcs(self) -> EmulatedPcs:
        from sgxlaunch.attest.pcs import ensure_provisioning

        return ensure_provisioning(self.machine, now=self.clock(), random=self.random)

    def sign_platform_enclave(self, body: Sigstruct) -> Sigstruct:
        if self._signer is None:  # loading the RSA key is slow: once per instance
            self._signer = self._pcs().enclave_signer()
        return sign(body, self._signer)

    def pck_chain(self, cpusvn: bytes, pcesvn: int) -> bytes | None:
        pcs = self._pcs()
        if pcs.pck_certificate(cpusvn, pcesvn) is None:
            return None
        return pcs.pck_chain_pem(cpusvn, pcesvn)

    def issue_pck_certificate(self, public_key: bytes, cpusvn: bytes, pcesvn: int) -> None:
        self._pcs().issue_pck_certificate(
            public_key, cpusvn=cpusvn, pcesvn=pcesvn, now=self.clock()
        )


QUOTING_RULE_IDS = ("platform-pce", "platform-qe")
"""Ids of the owner-policy rules :func:`quoting_rules` makes."""


def quoting_rules(mrsigner: bytes) -> list[dict[str, Any]]:
    """The allow rules an owner policy needs for quoting in owner mode: the platform's PCE and
    QE, signed by the machine's PCE/QE key (``mrsigner``; only they are signed by it), by
    ISVPRODID, with PROVISIONKEY permitted and DEBUG not. ``sgxlaunch policy new`` puts them
    in every new policy (``docs/attest.md``)."""
    return [
        {
            "id": rule_id,
            "mrsigner": mrsigner.hex(),
            "isvprodid": isvprodid,
            "provisionkey": True,
        }
        for rule_id, isvprodid in zip(QUOTING_RULE_IDS, (PCE_ISVPRODID, QE_ISVPRODID), strict=True)
    ]


def machine_quoting_signer(machine: Machine) -> bytes:
    """MRSIGNER of the machine's PCE/QE signing key.

    Raises:
        UsageError: the machine has no provisioning secrets (made before them).
    """
    from sgxlaunch.attest.pcs import EmulatedPcs

    return EmulatedPcs(machine).qe_mrsigner


def pce_image() -> EnclaveImage:
    """The PCE's image (deterministic: MRENCLAVE binds the program's source)."""
    return program_image(ProvisioningCertificationEnclave)


def qe_image() -> EnclaveImage:
    """The QE's image."""
    return program_image(QuotingEnclave)


def _body(image: EnclaveImage, attributes: Attributes, isvprodid: int, isvsvn: int) -> Sigstruct:
    return Sigstruct(
        attributes=attributes,
        attributemask=Attributes(flags=_ALL64, xfrm=_ALL64),
        miscmask=_ALL32,
        isvprodid=isvprodid,
        isvsvn=isvsvn,
        enclavehash=image.mrenclave(),
    )


def pce_sigstruct_body() -> Sigstruct:
    """The PCE's SIGSTRUCT fields before signing (PROVISIONKEY in ATTRIBUTES)."""
    return _body(pce_image(), PCE_ATTRIBUTES, PCE_ISVPRODID, PCE_ISVSVN)


def qe_sigstruct_body() -> Sigstruct:
    """The QE's SIGSTRUCT fields before signing (PROVISIONKEY in ATTRIBUTES)."""
    return _body(qe_image(), QE_ATTRIBUTES, QE_ISVPRODID, QE_ISVSVN)


@dataclass(frozen=True, slots=True)
class PckInfo:
    """What the PCE reports about the PCK of one TCB (for the PCS to certify)."""

    pceid: int
    pcesvn: int
    cpusvn: bytes
    public_key: bytes
    """X ‖ Y, 32 bytes each, big-endian."""


@dataclass(frozen=True, slots=True)
class CertifiedKey:
    """The QE's attestation key as the home keeps it (all of it is checked inside the QE).

    Attributes:
        blob: the sealed key blob (:mod:`sgxlaunch.attest.qe`).
        qe_report: the QE report body (384) whose REPORTDATA binds the key.
        qe_report_signature: the PCE's PCK signature over it (r ‖ s).
        cpusvn, pcesvn: the TCB whose PCK signed.
        pck_public_key: that PCK (X ‖ Y), to notice a PCK certificate for another key.
    """

    blob: bytes
    qe_report: bytes
    qe_report_signature: bytes
    cpusvn: bytes
    pcesvn: int
    pck_public_key: bytes

    def to_bytes(self) -> bytes:
        return _RECORD.pack(
            self.blob,
            self.qe_report,
            self.qe_report_signature,
            self.cpusvn,
            self.pcesvn,
            self.pck_public_key,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> CertifiedKey:
        """Raises :class:`MalformedInput` naming the store key for a record of the wrong size."""
        if len(data) != _RECORD.size:
            raise MalformedInput(
                f"{QE_KEY_KEY}: a certified attestation key is {_RECORD.size} bytes, "
                f"found {len(data)}",
                field=QE_KEY_KEY,
            )
        return cls(*_RECORD.unpack(data))


def _reply(data: bytes, what: str) -> bytes:
    """The body of an enclave's reply, or the project's error for its status byte."""
    if not data:
        raise VerificationFailed(f"{what}: empty reply")
    status, body = data[0], data[1:]
    if status == 0:
        return body
    message = f"{what}: {body.decode('utf-8', errors='replace')}"
    if status == STATUS_MALFORMED:  # the same code in the PCE and the QE
        raise MalformedInput(message)
    if what == "quoting enclave":
        if status == STATUS_REPORT_MAC:
            raise ReportRefused(message)
        if status == STATUS_DEBUG:
            raise UsageError(message)
        if status in (STATUS_UNSEAL, STATUS_BINDING, STATUS_KEY):
            raise _StaleKey(message)
    raise VerificationFailed(message)


class LoadedProgram(Protocol):
    """An initialized enclave the host can call (``driver.LoadedEnclave``)."""

    def ecall(self, function: int = 0, data: bytes = b"", *, thread: int = 0) -> bytes: ...


Launcher = Callable[[EnclaveImage, Sigstruct], LoadedProgram]
"""Loads and initializes an image with PROVISIONKEY granted; returns the enclave."""


class Quoter:
    """The PCE and QE of one platform and the quotes they make.

    Args:
        launch: loads an enclave (the Platform's launch path, PROVISIONKEY granted).
        register: registers a program for an MRENCLAVE on the processor.
        provisioning: the machine's signing key and PCS.
        cpusvn: the CPU's current CPUSVN (CR_CPUSVN).
        load_record, save_record: the home's copy of the certified key.
    """

    def __init__(
        self,
        *,
        launch: Launcher,
        register: Callable[[bytes, type[ProvisioningCertificationEnclave | QuotingEnclave]], None],
        provisioning: Provisioning,
        cpusvn: bytes,
        load_record: Callable[[], bytes | None],
        save_record: Callable[[bytes], None],
    ) -> None:
        self._launch = launch
        self._register = register
        self._provisioning = provisioning
        self.cpusvn = cpusvn
        self._load_record = load_record
        self._save_record = save_record
        self._pce: LoadedProgram | None = None
        self._qe: LoadedProgram | None = None
        self._key: CertifiedKey | None = None
        self._chain: bytes | None = None

    # -- the enclaves -----------------------------------------------------------------------------

    def pce(self) -> LoadedProgram:
        if self._pce is None:
            body = pce_sigstruct_body()
            self._register(body.enclavehash, ProvisioningCertificationEnclave)
            sig = self._provisioning.sign_platform_enclave(body)
            self._pce = self._launch(pce_image(), sig)
        return self._pce

    def qe(self) -> LoadedProgram:
        if self._qe is None:
            body = qe_sigstruct_body()
            self._register(body.enclavehash, QuotingEnclave)
            sig = self._provisioning.sign_platform_enclave(body)
            self._qe = self._launch(qe_image(), sig)
        return self._qe

    def pck_info(self, cpusvn: bytes | None = None, pcesvn: int = PCE_ISVSVN) -> PckInfo:
        """The PCE's PCK for a TCB (default: the CPU's current CPUSVN and the PCE's ISVSVN)."""
        cpusvn = self.cpusvn if cpusvn is None else cpusvn
        reply = _reply(self.pce().ecall(ECALL_PCK_INFO, tcb_bytes(cpusvn, pcesvn)), "PCE")
        return PckInfo(*parse_pck_info(reply))

    def target_info(self) -> TargetInfo:
        """The QE's TARGETINFO (what an application's EREPORT targets)."""
        return TargetInfo.from_bytes(_reply(self.qe().ecall(ECALL_TARGET_INFO), "quoting enclave"))

    # -- the attestation key --------------------------------------------------------------------

    def _pce_target_info(self) -> bytes:
        from sgxlaunch.attest.pce import ECALL_TARGET_INFO as PCE_TARGET_INFO

        return _reply(self.pce().ecall(PCE_TARGET_INFO), "PCE")

    def certify(self) -> CertifiedKey:
        """A new attestation key in the QE, certified by the PCE with the current TCB's PCK,
        saved in the home."""
        reply = _reply(self.qe().ecall(ECALL_GEN_KEY, self._pce_target_info()), "quoting enclave")
        blob, report = reply[:BLOB_SIZE], reply[BLOB_SIZE:]
        info = self.pck_info()
        signature = _reply(
            self.pce().ecall(ECALL_CERTIFY, report + tcb_bytes(info.cpusvn, info.pcesvn)), "PCE"
        )
        key = CertifiedKey(
            blob=blob,
            qe_report=report[:384],
            qe_report_signature=signature,
            cpusvn=info.cpusvn,
            pcesvn=info.pcesvn,
            pck_public_key=info.public_key,
        )
        self._save_record(key.to_bytes())
        self._key = key
        return key

    def provision(self) -> bytes:
        """The PCK chain for the current TCB, the PCK certificate issued first if there is
        none (at ``platform init``; after a CPUSVN update): the PCE reports the PCK it derives
        for (CPUSVN, PCESVN) and the machine's PCS certifies it."""
        chain = self._provisioning.pck_chain(self.cpusvn, PCE_ISVSVN)
        if chain is None:
            info = self.pck_info()
            self._provisioning.issue_pck_certificate(info.public_key, info.cpusvn, info.pcesvn)
            chain = self._provisioning.pck_chain(self.cpusvn, PCE_ISVSVN)
            if chain is None:
                raise VerificationFailed(
                    "the PCS issued no PCK certificate for this platform's current TCB",
                    expected=f"a certificate for CPUSVN {self.cpusvn.hex()}, PCESVN {PCE_ISVSVN}",
                    found="none",
                )
        return chain

    def _current(self) -> tuple[CertifiedKey, bytes]:
        """The certified key for the current TCB and the PCK chain that certifies its PCK
        (kept for this Quoter's life once checked: its CPUSVN is fixed)."""
        if self._key is not None and self._chain is not None:
            return self._key, self._chain
        chain = self.provision()
        leaf = _leaf_public_key(chain)
        key = self._key
        if key is None:
            stored = self._load_record()
            if stored is not None:
                try:
                    key = CertifiedKey.from_bytes(stored)
                except MalformedInput:
                    key = None  # the home's copy is damaged: certify a new key
        if key is None or key.cpusvn != self.cpusvn or key.pck_public_key != leaf:
            info = self.pck_info()
            if info.public_key != leaf:
                raise VerificationFailed(
                    "the PCK certificate does not certify the PCK this platform's PCE derives "
                    "(a PCE signed by another key, or a certificate for another platform)",
                    expected=f"PCK public key {info.public_key.hex()[:32]}…",
                    found=f"certificate key {leaf.hex()[:32]}…",
                )
            key = self.certify()
        self._key, self._chain = key, chain
        return key, chain

    # -- quotes ---------------------------------------------------------------------------------

    def quote(self, report: Report | bytes) -> bytes:
        """A DCAP quote v3 over ``report`` (a REPORT targeted at :meth:`target_info`).

        Raises:
            MalformedInput: not a 432-byte REPORT with zero reserved fields.
            UsageError: the REPORT's enclave is a DEBUG enclave.
            ReportRefused: the QE's check of the REPORT's MAC failed.
            VerificationFailed: no PCK certificate for the current TCB, or one for another PCK.
        """
        raw = report.to_bytes() if isinstance(report, Report) else bytes(report)
        parsed = Report.from_bytes(raw)
        if parsed.attributes.flags & int(AttributeFlag.DEBUG):
            raise UsageError(
                f"enclave {parsed.mrenclave.hex()} is a DEBUG enclave: quoted enclaves must be "
                "non-debug (verifiers refuse DEBUG quotes)"
            )
        key, chain = self._current()
        try:
            return self._quote(raw, key, chain)
        except _StaleKey:
            # The home's record does not unseal or bind (altered, or sealed by another QE
            # signer): certify a new key, once.
            return self._quote(raw, self.certify(), chain)

    def _quote(self, raw: bytes, key: CertifiedKey, chain: bytes) -> bytes:
        request = b"".join(
            (
                raw,
                struct.pack("<H", len(key.blob)),
                key.blob,
                key.qe_report,
                key.qe_report_signature,
                struct.pack("<H", key.pcesvn),
                chain,
                _NUL,
            )
        )
        return _reply(self.qe().ecall(ECALL_QUOTE, request), "quoting enclave")


def _leaf_public_key(chain: bytes) -> bytes:
    """X ‖ Y of the chain's PCK leaf (the certificate whose subject names "SGX PCK Certificate",
    as QVL finds it; else the first).

    Raises:
        MalformedInput: no certificate, or the first is not an ECDSA P-256 certificate.
    """
    ders = pem_certificates(chain, "PCK certificate chain")
    if not ders:
        raise MalformedInput("the PCK certificate chain holds no certificate")
    try:
        certs = [x509.load_der_x509_certificate(der) for der in ders]
        leaf = next(
            (c for c in certs if "SGX PCK Certificate" in c.subject.rfc4514_string()), certs[0]
        )
        public = leaf.public_key()
    except X509_ERRORS as exc:
        raise MalformedInput(f"the PCK certificate does not parse: {exc}") from None
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise MalformedInput("the PCK certificate's key is not an ECDSA P-256 key")
    numbers = public.public_numbers()
    return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")


__all__ = [
    "QE_KEY_KEY",
    "QUOTING_RULE_IDS",
    "CertifiedKey",
    "PckInfo",
    "PcsProvisioning",
    "Provisioning",
    "Quoter",
    "machine_quoting_signer",
    "pce_image",
    "pce_sigstruct_body",
    "qe_image",
    "qe_sigstruct_body",
    "quoting_rules",
]
