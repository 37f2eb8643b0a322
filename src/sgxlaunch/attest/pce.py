"""The emulated Provisioning Certification Enclave (PCE): the platform's PCK key, inside an enclave.

The PCE is an :class:`~sgxlaunch.cpu.EnclaveProgram` signed by the machine's PCE/QE signing key
with ATTRIBUTES.PROVISIONKEY, so EGETKEY gives it the PROVISION_KEY: a key that depends on the
CPU (its fused root key), the CPUSVN and ISVSVN asked for, and the PCE's MRSIGNER and ISVPRODID,
but not on the owner epoch (SDM EGETKEY, PROVISION_KEY row). From it the PCE derives the
platform's **PCK** (Provisioning Certification Key), an ECDSA P-256 key, the way Intel's PCE
does: one key per (CPUSVN, PCESVN) — a "raw TCB" — so a CPUSVN update gives a new PCK, which the
PCS certifies again.

Derivation (ours; Intel's PCE uses its own KDF, not published as a specification): with
``K = EGETKEY(KEYNAME = PROVISION_KEY, CPUSVN, ISVSVN, ATTRIBUTEMASK = INIT|DEBUG,
MISCMASK = all)``, the 40-byte string ``B = C(1) ‖ C(2) ‖ C(3)[0:8]`` where
``C(i) = AES-128-CMAC(K, i ‖ "SGXLAUNCH PCK P-256 v1" ‖ 0x00 ‖ 0x0140)`` (NIST SP 800-108
counter mode, 320 bits), and the private scalar ``d = (B mod (n − 1)) + 1`` (FIPS 186-4
B.4.1: 64 extra bits make the bias negligible).

ECALLs (the host's buffers in and out; each reply starts with a status byte,
:data:`STATUS_OK` or an error code followed by a UTF-8 message):

* :data:`ECALL_PCK_INFO` — in: CPUSVN (16) ‖ PCESVN (u16); out: PCEID (u16) ‖ PCESVN (u16) ‖
  CPUSVN (16) ‖ PCK public key X ‖ Y (64). Used once at ``platform init`` (and after a CPUSVN
  update) so the machine's PCS can issue the PCK certificate.
* :data:`ECALL_TARGET_INFO` — out: the PCE's TARGETINFO (512), from an EREPORT about itself.
* :data:`ECALL_CERTIFY` — in: a REPORT (432) targeted at the PCE ‖ CPUSVN (16) ‖ PCESVN (u16);
  the PCE verifies the REPORT (EGETKEY(REPORT_KEY, REPORT.KEYID), CMAC — SDM EREPORT/EGETKEY),
  refuses an enclave without ATTRIBUTES.PROVISIONKEY or with DEBUG (Intel's PCE certifies only
  provisioning enclaves), and signs the 384-byte REPORT body with the PCK of that TCB; out: the
  signature r ‖ s (64, big-endian), as a DCAP quote carries it.
"""

from __future__ import annotations

import hmac
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from sgxlaunch.arch import Attributes, KeyRequest, Report, TargetInfo
from sgxlaunch.arch.constants import AttributeFlag, KeyName
from sgxlaunch.cpu import EnclaveContext, EnclaveProgram
from sgxlaunch.cpu.faults import EnclaveLeafFailed
from sgxlaunch.cpu.keys import cmac128

PCE_ISVPRODID = 0
"""The PCE's ISVPRODID."""
PCE_ISVSVN = 13
"""The PCE's ISVSVN: the PCESVN of the PCK certificate and the TCB info."""
PCEID = 0
"""PCE-ID (u16; ``0000`` in the PCK certificate and the TCB info, as on Intel parts)."""
PCE_ATTRIBUTES = Attributes(
    flags=int(AttributeFlag.MODE64BIT | AttributeFlag.PROVISIONKEY), xfrm=0x3
)
"""The PCE's SIGSTRUCT ATTRIBUTES (EINIT adds INIT)."""

ECALL_PCK_INFO = 0
ECALL_CERTIFY = 1
ECALL_TARGET_INFO = 2

# Reply status bytes (the program itself writes the numbers: its measured source stands alone).
STATUS_OK = 0
STATUS_MALFORMED = 1
STATUS_REPORT_MAC = 2
STATUS_NOT_PROVISIONING = 3
STATUS_DEBUG = 4
STATUS_KEY = 5
"""EGETKEY refused the TCB asked for (a CPUSVN beyond the CPU's, an ISVSVN above the PCE's)."""

PCK_INFO_SIZE = 2 + 2 + 16 + 64
_TCB = struct.Struct("<16sH")
_INFO = struct.Struct("<HH16s64s")


class ProvisioningCertificationEnclave(EnclaveProgram):
    """The emulated PCE (see the module docstring for its ECALLs and its PCK derivation)."""

    _LABEL = b"SGXLAUNCH PCK P-256 v1"
    _N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    _PCEID = 0

    def __init__(self) -> None:
        self._keys: dict[tuple[bytes, int], ec.EllipticCurvePrivateKey] = {}

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        try:
            if function == 0:
                return self._pck_info(ctx, data)
            if function == 1:
                return self._certify(ctx, data)
            if function == 2:
                me = ctx.ereport(TargetInfo(), bytes(64))
                return (
                    b"\x00"
                    + TargetInfo(
                        mrenclave=me.mrenclave,
                        attributes=me.attributes,
                        cet_attributes=me.cet_attributes,
                        configsvn=me.configsvn,
                        miscselect=me.miscselect,
                        configid=me.configid,
                    ).to_bytes()
                )
            return self._error(1, f"unknown PCE ECALL {function}")
        except _Refused as refused:
            return self._error(refused.code, refused.message)

    @staticmethod
    def _error(code: int, message: str) -> bytes:
        return bytes([code]) + message.encode()

    def _tcb(self, data: bytes) -> tuple[bytes, int]:
        if len(data) != 18:
            raise _Refused(1, f"the TCB is CPUSVN (16) and PCESVN (2): got {len(data)} bytes")
        cpusvn, pcesvn = struct.unpack("<16sH", data)
        return cpusvn, pcesvn

    def _pck(self, ctx: EnclaveContext, cpusvn: bytes, pcesvn: int) -> ec.EllipticCurvePrivateKey:
        """The PCK of the raw TCB (CPUSVN, PCESVN), derived from PROVISION_KEY."""
        cached = self._keys.get((cpusvn, pcesvn))
        if cached is not None:
            return cached
        try:
            key = ctx.egetkey(
                KeyRequest(
                    keyname=int(KeyName.PROVISION),
                    cpusvn=cpusvn,
                    isvsvn=pcesvn,
                    attributemask=Attributes(flags=0x3, xfrm=0),
                    miscmask=0xFFFFFFFF,
                )
            )
        except EnclaveLeafFailed as exc:
            raise _Refused(5, f"EGETKEY(PROVISION_KEY) refused the TCB: {exc}") from None
        context = self._LABEL + b"\x00" + struct.pack(">H", 320)
        stream = b"".join(cmac128(key, bytes([i]) + context) for i in (1, 2, 3))[:40]
        scalar = int.from_bytes(stream, "big") % (self._N - 1) + 1
        private = ec.derive_private_key(scalar, ec.SECP256R1())
        self._keys[(cpusvn, pcesvn)] = private
        return private

    def _pck_info(self, ctx: EnclaveContext, data: bytes) -> bytes:
        cpusvn, pcesvn = self._tcb(data)
        numbers = self._pck(ctx, cpusvn, pcesvn).public_key().public_numbers()
        public = numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")
        return b"\x00" + struct.pack("<HH16s64s", self._PCEID, pcesvn, cpusvn, public)

    def _certify(self, ctx: EnclaveContext, data: bytes) -> bytes:
        if len(data) != 432 + 18:
            raise _Refused(1, f"CERTIFY takes a REPORT (432) and a TCB (18): got {len(data)}")
        report = Report.from_bytes_raw(data[:432])
        cpusvn, pcesvn = self._tcb(data[432:])
        key = ctx.egetkey(KeyRequest(keyname=int(KeyName.REPORT), keyid=report.keyid))
        if not hmac.compare_digest(report.mac, cmac128(key, report.body_bytes())):
            raise _Refused(
                2,
                "the REPORT's MAC does not verify under the PCE's report key (not targeted "
                "at this PCE, made on another CPU, or altered)",
            )
        flags = report.attributes.flags
        if not flags & int(AttributeFlag.PROVISIONKEY):
            raise _Refused(3, "the reporting enclave lacks ATTRIBUTES.PROVISIONKEY")
        if flags & int(AttributeFlag.DEBUG):
            raise _Refused(4, "the reporting enclave is a DEBUG enclave")
        der = self._pck(ctx, cpusvn, pcesvn).sign(report.body_bytes(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return b"\x00" + r.to_bytes(32, "big") + s.to_bytes(32, "big")


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_pck_info(data: bytes) -> tuple[int, int, bytes, bytes]:
    """``(pceid, pcesvn, cpusvn, public key X ‖ Y)`` of an :data:`ECALL_PCK_INFO` reply body."""
    pceid, pcesvn, cpusvn, public = _INFO.unpack(data)
    return pceid, pcesvn, cpusvn, public


def tcb_bytes(cpusvn: bytes, pcesvn: int) -> bytes:
    """The TCB argument of both ECALLs: CPUSVN (16) ‖ PCESVN (u16)."""
    return _TCB.pack(cpusvn, pcesvn)


__all__ = [
    "ECALL_CERTIFY",
    "ECALL_PCK_INFO",
    "ECALL_TARGET_INFO",
    "PCEID",
    "PCE_ATTRIBUTES",
    "PCE_ISVPRODID",
    "PCE_ISVSVN",
    "PCK_INFO_SIZE",
    "STATUS_DEBUG",
    "STATUS_KEY",
    "STATUS_MALFORMED",
    "STATUS_NOT_PROVISIONING",
    "STATUS_OK",
    "STATUS_REPORT_MAC",
    "ProvisioningCertificationEnclave",
    "parse_pck_info",
    "tcb_bytes",
]
