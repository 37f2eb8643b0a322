"""An emulated PCS for tests, and quotes signed with a PCK key it certified.

:func:`make_quote` assembles a DCAP quote v3 the way Intel's QE3 lays it out (spec §1: header,
ISV report body, signature data with the QE report, 32 bytes of QE authentication data and the
PCK chain as certification data type 5, NUL-terminated), signed by keys the test holds: the
attestation key signs the header and body, the certified PCK key signs the QE report. It lets
the PCS be tested against dcap-qvl without the emulated QE.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from sgxlaunch.attest import Collateral, TrustAnchor, VerifiedQuote, verify_quote
from sgxlaunch.attest.pcs import (
    DEFAULT_PCESVN,
    DEFAULT_QE_ISVSVN,
    QE_ISVPRODID,
    EmulatedPcs,
    ensure_provisioning,
)
from sgxlaunch.cpu.machine import MachineState, MemoryMachine
from sgxlaunch.formats.quote import INTEL_QE_VENDOR_ID
from tests.support.clock import NOW
from tests.support.keys import rsa_key

PCESVN = DEFAULT_PCESVN
LATER = NOW + timedelta(hours=1)
"""When the tests verify (the collateral is issued at :data:`NOW`)."""

QE_AUTH_DATA = bytes(range(32))
"""Intel QE3's authentication data (spec §1.3)."""


def counter_random(label: bytes) -> functools.partial[bytes]:
    """A deterministic randomness source (SHA-256 in counter mode over ``label``)."""
    state = {"n": 0}

    def draw(label: bytes, n: int) -> bytes:
        out = b""
        while len(out) < n:
            state["n"] += 1
            out += hashlib.sha256(label + state["n"].to_bytes(8, "little")).digest()
        return out[:n]

    return functools.partial(draw, label)


def new_pcs(seed: bytes = b"pcs-test-seed-0123456789abcdef!!") -> EmulatedPcs:
    """A fresh machine (in memory) with its emulated PCS, made at :data:`NOW` (the PCE/QE
    signing key is a vector key, so no RSA key is generated)."""
    machine = MemoryMachine(MachineState(seed=seed))
    return ensure_provisioning(
        machine, now=NOW, random=counter_random(seed), enclave_signing_key=rsa_key("other")
    )


def pck_key(label: bytes = b"pck") -> ec.EllipticCurvePrivateKey:
    """A test PCK key (stands in for the key the PCE derives)."""
    scalar = int.from_bytes(hashlib.sha256(b"test-pck/" + label).digest(), "big") % (2**255) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def _raw(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def point(key: ec.EllipticCurvePublicKey) -> bytes:
    numbers = key.public_numbers()
    return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")


def report_body(
    *,
    cpusvn: bytes,
    flags: int,
    xfrm: int = 3,
    mrenclave: bytes = b"\x11" * 32,
    mrsigner: bytes = b"\x22" * 32,
    isvprodid: int = 0,
    isvsvn: int = 0,
    reportdata: bytes = bytes(64),
    miscselect: int = 0,
) -> bytes:
    """A 384-byte REPORT body (spec §1.2 offsets)."""
    body = bytearray(384)
    body[0:16] = cpusvn
    struct.pack_into("<I", body, 16, miscselect)
    struct.pack_into("<QQ", body, 48, flags, xfrm)
    body[64:96] = mrenclave
    body[128:160] = mrsigner
    struct.pack_into("<HH", body, 256, isvprodid, isvsvn)
    body[320:384] = reportdata
    return bytes(body)


@dataclass(frozen=True)
class QuoteParts:
    """What a test can vary in :func:`make_quote`."""

    qe_mrsigner: bytes | None = None  # default: the PCS's QE MRSIGNER
    qe_isvprodid: int = QE_ISVPRODID
    qe_isvsvn: int = DEFAULT_QE_ISVSVN
    qe_flags: int = 0x15  # INIT | MODE64BIT | PROVISIONKEY
    isv_flags: int = 0x05  # INIT | MODE64BIT (not DEBUG)


def make_quote(
    pcs: EmulatedPcs,
    pck: ec.EllipticCurvePrivateKey,
    *,
    cpusvn: bytes,
    pcesvn: int = DEFAULT_PCESVN,
    reportdata: bytes = b"\x5a" * 64,
    parts: QuoteParts = QuoteParts(),
    isv_body: bytes | None = None,
) -> bytes:
    """A quote v3 over an ISV report body, with ``pck``'s certificate chain from the PCS
    (it must have been issued for ``cpusvn``/``pcesvn``); ``isv_body`` replaces the default
    body (:func:`report_body`) whole."""
    attestation = ec.derive_private_key(0xA77E57, ec.SECP256R1())
    attest_pub = point(attestation.public_key())
    header = struct.pack("<HHIHH", 3, 2, 0, parts.qe_isvsvn, pcesvn) + INTEL_QE_VENDOR_ID
    header += bytes(20)
    isv = (
        report_body(cpusvn=cpusvn, flags=parts.isv_flags, reportdata=reportdata)
        if isv_body is None
        else isv_body
    )
    binding = hashlib.sha256(attest_pub + QE_AUTH_DATA).digest() + bytes(32)
    qe = report_body(
        cpusvn=cpusvn,
        flags=parts.qe_flags,
        mrsigner=parts.qe_mrsigner if parts.qe_mrsigner is not None else pcs.qe_mrsigner,
        isvprodid=parts.qe_isvprodid,
        isvsvn=parts.qe_isvsvn,
        reportdata=binding,
    )
    chain = pcs.pck_chain_pem(cpusvn, pcesvn) + b"\x00"
    signature_data = (
        _raw(attestation, header + isv)
        + attest_pub
        + qe
        + _raw(pck, qe)
        + struct.pack("<H", len(QE_AUTH_DATA))
        + QE_AUTH_DATA
        + struct.pack("<HI", 5, len(chain))
        + chain
    )
    return header + isv + struct.pack("<I", len(signature_data)) + signature_data


def certify(pcs: EmulatedPcs, label: bytes = b"pck") -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A test PCK key certified by ``pcs`` for the machine's CPUSVN (at :data:`NOW`), and its
    certificate (DER)."""
    key = pck_key(label)
    cpusvn = pcs.machine.load().cpusvn
    der = pcs.issue_pck_certificate(key.public_key(), cpusvn=cpusvn, pcesvn=PCESVN, now=NOW)
    return key, der


def verify(
    pcs: EmulatedPcs, quote: bytes, *, at: datetime = LATER, collateral: bytes | None = None
) -> VerifiedQuote:
    """Verify ``quote`` with ``pcs``'s collateral (issued at :data:`NOW` unless given) under
    ``pcs``'s root."""
    data = pcs.collateral(NOW) if collateral is None else collateral
    anchor = TrustAnchor.from_certificate(pcs.root_der())
    return verify_quote(quote, Collateral.from_bytes(data), at, anchor=anchor)
