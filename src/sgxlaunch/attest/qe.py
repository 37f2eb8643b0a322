"""The emulated Quoting Enclave (QE): turns an enclave's REPORT into a DCAP ECDSA quote v3.

The flow is Intel's ECDSA QE3 flow (``QuoteGeneration/quote_wrapper``; spec §1), with the
emulated processor's EREPORT and EGETKEY:

1. **Target info.** The application asks the QE for its TARGETINFO (:data:`ECALL_TARGET_INFO`:
   the QE's own MRENCLAVE, ATTRIBUTES, MISCSELECT, CONFIGID, CONFIGSVN, from an EREPORT about
   itself) and makes EREPORT targeted at it.
2. **Attestation key.** :data:`ECALL_GEN_KEY` (in: the PCE's TARGETINFO) makes a fresh
   ECDSA P-256 key from RDRAND, seals its private scalar, and makes a REPORT targeted at the
   PCE whose REPORTDATA binds the public key and the 32-byte QE authentication data:
   ``SHA-256(X ‖ Y ‖ auth data) ‖ 32 zero bytes`` (``sgx_quote_3.h``). The PCE signs that
   REPORT's body with the PCK: it becomes the quote's QE report and QE report signature.
3. **Quote.** :data:`ECALL_QUOTE` verifies the application's REPORT locally (EGETKEY(REPORT_KEY,
   REPORT.KEYID), AES-128-CMAC over the body: a REPORT targeted at another enclave, made on
   another CPU or altered does not verify), refuses a DEBUG enclave (verifiers refuse DEBUG
   quotes), unseals the attestation key, checks that the certified QE report is this QE's and
   binds that key, and signs header ‖ report body. The certification data (type 5, the PCK
   chain in PEM with its NUL) is handed in by the host, as Intel's quote provider library does.

Sealed key blob (:data:`BLOB_SIZE` bytes): ``magic (8) ‖ CPUSVN (16) ‖ ISVSVN (u16) ‖ public key
X ‖ Y (64) ‖ auth data (32) ‖ nonce (12) ‖ AES-128-GCM(seal key, private scalar (32))`` with
the first 122 bytes as additional data. The seal key is EGETKEY(SEAL_KEY, KEYPOLICY =
MRSIGNER, the **recorded** CPUSVN and ISVSVN): a blob sealed before a CPUSVN update still
unseals after it (EGETKEY allows any CPUSVN not beyond the CPU's; SDM EGETKEY).

``QE_ID`` (the header's user data, 16 bytes ‖ 4 zero bytes, as Intel's QE3 writes it) is
``AES-128-CMAC(EGETKEY(PROVISION_SEAL_KEY, CPUSVN 0, ISVSVN 0), "SGXLAUNCH QE_ID v1")``: per
platform and signer, stable across TCB updates, owner-independent.

Every reply starts with a status byte (:data:`STATUS_OK`, or an error code followed by a UTF-8
message).
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sgxlaunch.arch import Attributes, KeyRequest, Report, TargetInfo
from sgxlaunch.arch.constants import AttributeFlag, KeyName, KeyPolicy
from sgxlaunch.cpu import EnclaveContext, EnclaveProgram
from sgxlaunch.cpu.faults import EnclaveLeafFailed
from sgxlaunch.cpu.keys import cmac128
from sgxlaunch.formats.quote import INTEL_QE_VENDOR_ID

QE_ISVPRODID = 1
"""The QE's ISVPRODID (Intel's QE3 identity: 1)."""
QE_ISVSVN = 8
"""The QE's ISVSVN (the quote header's ``qe_svn``; the QE identity's TCB levels)."""
QE_ATTRIBUTES = Attributes(
    flags=int(AttributeFlag.MODE64BIT | AttributeFlag.PROVISIONKEY), xfrm=0x3
)
"""The QE's SIGSTRUCT ATTRIBUTES; with INIT (set by EINIT) its REPORT shows flags 0x15, which
Intel's QE identity (attributes ``11…`` under mask ``FBFF…``) accepts."""
QE_AUTH_DATA = bytes(range(32))
"""The QE authentication data: 32 bytes ``00 01 … 1f``, as Intel's QE3 emits (dcap-qvl requires
exactly 32)."""

ECALL_TARGET_INFO = 0
ECALL_GEN_KEY = 1
ECALL_QUOTE = 2

# Reply status bytes (the program itself writes the numbers: its measured source stands alone).
STATUS_OK = 0
STATUS_MALFORMED = 1
STATUS_REPORT_MAC = 2
STATUS_DEBUG = 3
STATUS_UNSEAL = 4
STATUS_BINDING = 5
STATUS_KEY = 6

BLOB_MAGIC = b"SGXLQEK1"
BLOB_HEADER_SIZE = 8 + 16 + 2 + 64 + 32
BLOB_SIZE = BLOB_HEADER_SIZE + 12 + 32 + 16


class QuotingEnclave(EnclaveProgram):
    """The emulated QE (see the module docstring for its ECALLs, blob and quote)."""

    _N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    _AUTH = bytes(range(32))
    _VENDOR = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
    _MAGIC = b"SGXLQEK1"
    _BLOB_SIZE = 122 + 12 + 32 + 16

    def __init__(self) -> None:
        self._me: Report | None = None
        self._qe_id: bytes | None = None
        self._unsealed: dict[bytes, ec.EllipticCurvePrivateKey] = {}
        self._report_keys: dict[bytes, bytes] = {}

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        try:
            if function == 0:
                return b"\x00" + self._target_info(ctx).to_bytes()
            if function == 1:
                return self._gen_key(ctx, data)
            if function == 2:
                return self._quote(ctx, data)
            raise _Refused(1, f"unknown QE ECALL {function}")
        except _Refused as refused:
            return bytes([refused.code]) + refused.message.encode()

    # -- identity and keys ----------------------------------------------------------------------

    def _self(self, ctx: EnclaveContext) -> Report:
        if self._me is None:
            self._me = ctx.ereport(TargetInfo(), bytes(64))
        return self._me

    def _target_info(self, ctx: EnclaveContext) -> TargetInfo:
        me = self._self(ctx)
        return TargetInfo(
            mrenclave=me.mrenclave,
            attributes=me.attributes,
            cet_attributes=me.cet_attributes,
            configsvn=me.configsvn,
            miscselect=me.miscselect,
            configid=me.configid,
        )

    def _seal_key(self, ctx: EnclaveContext, cpusvn: bytes, isvsvn: int) -> bytes:
        try:
            return ctx.egetkey(
                KeyRequest(
                    keyname=int(KeyName.SEAL),
                    keypolicy=int(KeyPolicy.MRSIGNER),
                    isvsvn=isvsvn,
                    cpusvn=cpusvn,
                    attributemask=Attributes(flags=0xFF0000000000000B, xfrm=0),
                    keyid=hashlib.sha256(b"SGXLAUNCH QE attestation key v1").digest(),
                    miscmask=0xFFFFFFFF,
                )
            )
        except EnclaveLeafFailed as exc:
            raise _Refused(6, f"EGETKEY(SEAL_KEY) refused the blob's TCB: {exc}") from None

    def _qe_identifier(self, ctx: EnclaveContext) -> bytes:
        if self._qe_id is None:
            key = ctx.egetkey(
                KeyRequest(
                    keyname=int(KeyName.PROVISION_SEAL),
                    attributemask=Attributes(flags=0x3, xfrm=0),
                    miscmask=0xFFFFFFFF,
                )
            )
            self._qe_id = cmac128(key, b"SGXLAUNCH QE_ID v1")
        return self._qe_id

    @staticmethod
    def _raw_public(key: ec.EllipticCurvePrivateKey) -> bytes:
        numbers = key.public_key().public_numbers()
        return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")

    @staticmethod
    def _raw_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    # -- ECALLs ---------------------------------------------------------------------------------

    def _gen_key(self, ctx: EnclaveContext, data: bytes) -> bytes:
        """GEN_KEY: a new attestation key, sealed, and its binding REPORT for the PCE."""
        if len(data) != 512:
            raise _Refused(1, f"GEN_KEY takes the PCE's TARGETINFO (512 bytes), got {len(data)}")
        pce = TargetInfo.from_bytes_raw(data)
        if pce.nonzero_reserved() is not None:
            raise _Refused(1, "the PCE's TARGETINFO has reserved bytes set")
        scalar = int.from_bytes(ctx.rdrand(40), "big") % (self._N - 1) + 1
        private = ec.derive_private_key(scalar, ec.SECP256R1())
        public = self._raw_public(private)
        me = self._self(ctx)
        header = self._MAGIC + me.cpusvn + struct.pack("<H", me.isvsvn) + public + self._AUTH
        nonce = ctx.rdrand(12)
        sealed = AESGCM(self._seal_key(ctx, me.cpusvn, me.isvsvn)).encrypt(
            nonce, scalar.to_bytes(32, "big"), header
        )
        reportdata = hashlib.sha256(public + self._AUTH).digest() + bytes(32)
        report = ctx.ereport(pce, reportdata)
        return b"\x00" + header + nonce + sealed + report.to_bytes()

    def _unseal(self, ctx: EnclaveContext, blob: bytes) -> ec.EllipticCurvePrivateKey:
        cached = self._unsealed.get(blob)
        if cached is not None:
            return cached
        if len(blob) != self._BLOB_SIZE or not blob.startswith(self._MAGIC):
            raise _Refused(4, "the attestation-key blob is not a QE key blob")
        header, nonce, sealed = blob[:122], blob[122:134], blob[134:]
        cpusvn, (isvsvn,) = header[8:24], struct.unpack("<H", header[24:26])
        try:
            plain = AESGCM(self._seal_key(ctx, cpusvn, isvsvn)).decrypt(nonce, sealed, header)
        except InvalidTag:
            raise _Refused(
                4,
                "the attestation-key blob does not unseal (altered, or sealed by another "
                "platform or QE signer)",
            ) from None
        private = ec.derive_private_key(int.from_bytes(plain, "big"), ec.SECP256R1())
        if not hmac.compare_digest(self._raw_public(private), header[26:90]):
            raise _Refused(4, "the attestation-key blob's public key is not its private key's")
        if len(self._unsealed) >= 16:
            self._unsealed.clear()
        self._unsealed[blob] = private
        return private

    def _quote(self, ctx: EnclaveContext, data: bytes) -> bytes:
        """QUOTE: verify the application's REPORT, then sign a quote v3 over its body."""
        fixed = 432 + 2
        if len(data) < fixed:
            raise _Refused(1, "QUOTE takes a REPORT, a key blob, the QE report and the cert data")
        body, keyid, mac = data[:384], data[384:416], data[416:432]
        (flags,) = struct.unpack_from("<Q", data, 48)
        (blob_size,) = struct.unpack_from("<H", data, 432)
        at = fixed + blob_size
        if len(data) < at + 384 + 64 + 2:
            raise _Refused(1, "QUOTE input is truncated")
        blob = data[fixed:at]
        qe_report = data[at : at + 384]
        qe_signature = data[at + 384 : at + 448]
        (pce_svn,) = struct.unpack_from("<H", data, at + 448)
        cert_data = data[at + 450 :]
        if not hmac.compare_digest(mac, cmac128(self._report_key(ctx, keyid), body)):
            raise _Refused(
                2,
                "the REPORT's MAC does not verify under the QE's report key: it was not "
                "targeted at this quoting enclave, was made on another CPU, or was altered",
            )
        if flags & int(AttributeFlag.DEBUG):
            raise _Refused(
                3,
                f"enclave {body[64:96].hex()} is a DEBUG enclave: quoted enclaves must "
                "be non-debug (verifiers refuse DEBUG quotes)",
            )
        private = self._unseal(ctx, blob)
        me = self._self(ctx)
        binding = hashlib.sha256(blob[26:122]).digest() + bytes(32)
        if not hmac.compare_digest(qe_report[64:96], me.mrenclave) or not hmac.compare_digest(
            qe_report[128:160], me.mrsigner
        ):
            raise _Refused(5, "the certified QE report is not this quoting enclave's")
        if not hmac.compare_digest(qe_report[320:384], binding):
            raise _Refused(
                5, "the certified QE report's REPORTDATA does not bind the sealed attestation key"
            )
        (qe_svn,) = struct.unpack_from("<H", qe_report, 258)
        header = struct.pack(
            "<HHIHH16s16s4s",
            3,
            2,
            0,
            qe_svn,
            pce_svn,
            self._VENDOR,
            self._qe_identifier(ctx),
            bytes(4),
        )
        signed = header + body
        signature_data = b"".join(
            (
                self._raw_signature(private, signed),
                blob[26:90],
                qe_report,
                qe_signature,
                struct.pack("<H", 32),
                blob[90:122],
                struct.pack("<HI", 5, len(cert_data)),
                cert_data,
            )
        )
        return b"\x00" + signed + struct.pack("<I", len(signature_data)) + signature_data

    def _report_key(self, ctx: EnclaveContext, keyid: bytes) -> bytes:
        """EGETKEY(REPORT_KEY, KEYID), kept in enclave memory per KEYID (CR_REPORT_KEYID is
        fixed for a boot, so one derivation serves every REPORT of the boot)."""
        key = self._report_keys.get(keyid)
        if key is None:
            key = ctx.egetkey(KeyRequest(keyname=int(KeyName.REPORT), keyid=keyid))
            if len(self._report_keys) >= 16:
                self._report_keys.clear()
            self._report_keys[keyid] = key
        return key


class _Refused(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


assert QuotingEnclave._AUTH == QE_AUTH_DATA
assert QuotingEnclave._VENDOR == INTEL_QE_VENDOR_ID
assert QuotingEnclave._MAGIC == BLOB_MAGIC and QuotingEnclave._BLOB_SIZE == BLOB_SIZE

__all__ = [
    "BLOB_SIZE",
    "ECALL_GEN_KEY",
    "ECALL_QUOTE",
    "ECALL_TARGET_INFO",
    "QE_ATTRIBUTES",
    "QE_AUTH_DATA",
    "QE_ISVPRODID",
    "QE_ISVSVN",
    "STATUS_BINDING",
    "STATUS_DEBUG",
    "STATUS_KEY",
    "STATUS_MALFORMED",
    "STATUS_OK",
    "STATUS_REPORT_MAC",
    "STATUS_UNSEAL",
    "QuotingEnclave",
]
