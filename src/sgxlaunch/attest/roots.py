"""Trust anchors for DCAP: Intel's SGX Root CA, pinned by default, or a root the caller names.

Intel's SGX Root CA exists as two certificates over **one key** (spec §0; PROVENANCE.md §5):
the original (notAfter 2033-05-21, SHA-256 ``fc64f807…9404``) and a re-issue (notAfter
2049-12-31, SHA-256 ``44a0196b…74d3``), same serial, same subject, SPKI SHA-256
``a0af0312…a49e``. Real quotes and PCS collateral carry either one, so the pin is the key: both
encodings are accepted, and no other. (Intel's QVL compares the root certificate's signature
bytes instead, so it tells the two encodings apart; dcap-qvl, like webpki, trusts the key.)

:func:`check_chain_root` finds the self-issued certificate of a PEM chain and compares its key
with the anchor's, so that a collateral set from another PKI is refused as "untrusted root"
rather than as whatever the library meets first (dcap-qvl reports a CRL signature failure).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sgxlaunch.errors import MalformedInput, UntrustedRoot

_INTEL_ROOT_2033 = """
MIICjjCCAjSgAwIBAgIUImUM1lqdNInzg7SVUr9QGzknBqwwCgYIKoZIzj0EAwIwaDEaMBgGA1UEAwwRSW50ZWwg
U0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkG
A1UECAwCQ0ExCzAJBgNVBAYTAlVTMB4XDTE4MDUyMTEwNDExMVoXDTMzMDUyMTEwNDExMFowaDEaMBgGA1UEAwwR
SW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFy
YTELMAkGA1UECAwCQ0ExCzAJBgNVBAYTAlVTMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC6nEwMDIYZOj/iPW
sCzaEKi71OiOSLRFhWGjbnBVJfVnkY4u3IjkDYYL0MxO4mqsyYjlBalTVYxFP2sJBK5zlKOBuzCBuDAfBgNVHSME
GDAWgBQiZQzWWp00ifODtJVSv1AbOScGrDBSBgNVHR8ESzBJMEegRaBDhkFodHRwczovL2NlcnRpZmljYXRlcy50
cnVzdGVkc2VydmljZXMuaW50ZWwuY29tL0ludGVsU0dYUm9vdENBLmNybDAdBgNVHQ4EFgQUImUM1lqdNInzg7SV
Ur9QGzknBqwwDgYDVR0PAQH/BAQDAgEGMBIGA1UdEwEB/wQIMAYBAf8CAQEwCgYIKoZIzj0EAwIDSAAwRQIgQQs/
08rycdPauCFk8UPQXCMAlsloBe7NwaQGTcdpa0ECIQCUt8SGvxKmjpcM/z0WP9Dvo8h2k5du1iWDdBkAn+0iiA==
"""

_INTEL_ROOT_2049 = """
MIICjzCCAjSgAwIBAgIUImUM1lqdNInzg7SVUr9QGzknBqwwCgYIKoZIzj0EAwIwaDEaMBgGA1UEAwwRSW50ZWwg
U0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkG
A1UECAwCQ0ExCzAJBgNVBAYTAlVTMB4XDTE4MDUyMTEwNDUxMFoXDTQ5MTIzMTIzNTk1OVowaDEaMBgGA1UEAwwR
SW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFy
YTELMAkGA1UECAwCQ0ExCzAJBgNVBAYTAlVTMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC6nEwMDIYZOj/iPW
sCzaEKi71OiOSLRFhWGjbnBVJfVnkY4u3IjkDYYL0MxO4mqsyYjlBalTVYxFP2sJBK5zlKOBuzCBuDAfBgNVHSME
GDAWgBQiZQzWWp00ifODtJVSv1AbOScGrDBSBgNVHR8ESzBJMEegRaBDhkFodHRwczovL2NlcnRpZmljYXRlcy50
cnVzdGVkc2VydmljZXMuaW50ZWwuY29tL0ludGVsU0dYUm9vdENBLmRlcjAdBgNVHQ4EFgQUImUM1lqdNInzg7SV
Ur9QGzknBqwwDgYDVR0PAQH/BAQDAgEGMBIGA1UdEwEB/wQIMAYBAf8CAQEwCgYIKoZIzj0EAwIDSQAwRgIhAOW/
5QkR+S9CiSDcNoowLuPRLsWGf/Yi7GSX94BgwTwgAiEA4J0lrHoMs+Xo5o/sX6O9QWxHRAvZUGOdRQ7cvqRXaqI=
"""

INTEL_SGX_ROOT_CA_2033 = base64.b64decode("".join(_INTEL_ROOT_2033.split()))
"""Intel SGX Root CA, notAfter 2033-05-21 (DER; SHA-256 fc64f807…9404)."""
INTEL_SGX_ROOT_CA_2049 = base64.b64decode("".join(_INTEL_ROOT_2049.split()))
"""Intel SGX Root CA re-issued, notAfter 2049-12-31 (DER; SHA-256 44a0196b…74d3)."""
INTEL_SGX_ROOT_SPKI_SHA256 = "a0af031289f5d5d4132f9186068a7fc13628633ba235777472e29b6b6c67a49e"
"""SHA-256 of the Intel SGX Root CA's SubjectPublicKeyInfo (both encodings)."""

X509_ERRORS = (ValueError, UnsupportedAlgorithm)
"""What cryptography raises on a certificate it cannot read (it parses lazily)."""

_PEM_RE = re.compile(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.S)
MAX_ROOT_SIZE = 64 << 10


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


@dataclass(frozen=True, slots=True)
class TrustAnchor:
    """A pinned root key and the certificate encodings of it that are known.

    Attributes:
        name: how messages name it.
        spki: the root's SubjectPublicKeyInfo (DER) — what is pinned.
        certificates: DER certificates carrying that key (the first is handed to dcap-qvl).
    """

    name: str
    spki: bytes
    certificates: tuple[bytes, ...]

    @property
    def spki_sha256(self) -> str:
        return hashlib.sha256(self.spki).hexdigest()

    @property
    def pem_bodies(self) -> tuple[bytes, ...]:
        """The anchor's certificates as PEM bodies (base64 in 64-character lines, RFC 7468)."""
        return tuple(_pem_body(der) for der in self.certificates)

    @property
    def der(self) -> bytes:
        """The certificate handed to the verification library as its trust anchor."""
        return self.certificates[0]

    @classmethod
    def intel(cls) -> TrustAnchor:
        """Intel's SGX Root CA (both encodings of its one key)."""
        return _INTEL

    @classmethod
    def from_certificate(cls, data: bytes) -> TrustAnchor:
        """A root given as one certificate, DER or PEM; it must be self-issued.

        Raises:
            MalformedInput: not one parsable X.509 certificate, or not self-issued.
        """
        if len(data) > MAX_ROOT_SIZE:
            raise MalformedInput(f"root certificate is more than {MAX_ROOT_SIZE} bytes")
        der = data
        if data.lstrip().startswith(b"-----BEGIN"):
            blocks = _PEM_RE.findall(data)
            if len(blocks) != 1:
                raise MalformedInput(
                    f"root file must hold exactly one PEM certificate, found {len(blocks)}"
                )
            der = _b64(blocks[0], "root certificate")
        try:
            cert = x509.load_der_x509_certificate(der)
            spki = _spki(cert)
            subject, issuer = _subject(cert), cert.issuer.rfc4514_string()
        except X509_ERRORS as exc:
            raise MalformedInput(f"root is not an X.509 certificate: {exc}") from None
        if subject != issuer:
            raise MalformedInput(
                f"root certificate is not self-issued (subject {subject}, issuer {issuer})"
            )
        return cls(subject, spki, (der,))


@functools.cache
def _pem_body(der: bytes) -> bytes:
    text = base64.b64encode(der)
    return b"\n".join(text[i : i + 64] for i in range(0, len(text), 64)) + b"\n"


def _b64(text: bytes, what: str) -> bytes:
    try:
        return base64.b64decode(b"".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise MalformedInput(f"{what}: PEM body is not base64") from None


def _intel() -> TrustAnchor:
    cert = x509.load_der_x509_certificate(INTEL_SGX_ROOT_CA_2049)
    spki = _spki(cert)
    assert hashlib.sha256(spki).hexdigest() == INTEL_SGX_ROOT_SPKI_SHA256
    other = x509.load_der_x509_certificate(INTEL_SGX_ROOT_CA_2033)
    assert _spki(other) == spki
    return TrustAnchor("Intel SGX Root CA", spki, (INTEL_SGX_ROOT_CA_2049, INTEL_SGX_ROOT_CA_2033))


_INTEL = _intel()


def pem_certificates(chain: bytes, what: str) -> list[bytes]:
    """The DER certificates of a PEM chain, in order.

    Raises:
        MalformedInput: a block is not base64.
    """
    return [_b64(block, what) for block in _PEM_RE.findall(chain)]


def check_chain_root(chain: bytes, anchor: TrustAnchor, what: str) -> None:
    """The PEM ``chain`` ends in ``anchor``'s key.

    Checks, in order: one of the chain's certificates is byte-for-byte one of the anchor's
    known encodings (done); otherwise every certificate parses, one is self-issued (the root),
    and its key is the anchor's. Chain signatures are left to the library.

    Raises:
        MalformedInput: the chain holds no certificate, or one does not parse.
        UntrustedRoot: no self-issued certificate, or the root's key is not the anchor's.
    """
    if any(body in chain for body in anchor.pem_bodies):
        return  # one of the anchor's own certificates, as PCS writes PEM: nothing to parse
    ders = pem_certificates(chain, what)
    if not ders:
        raise MalformedInput(f"{what} holds no PEM certificate", field=what)
    known = anchor.certificates
    if any(der in known for der in ders):
        return
    roots = []
    for index, der in enumerate(ders):
        try:  # cryptography parses lazily: the names and the key can fail on first use too
            cert = x509.load_der_x509_certificate(der)
            if cert.issuer == cert.subject:
                roots.append((cert, _spki(cert)))
        except X509_ERRORS as exc:
            raise MalformedInput(
                f"{what}: certificate {index} is not X.509: {exc}", field=what
            ) from None
    if not roots:
        raise UntrustedRoot(
            f"{what} does not reach a root certificate",
            expected=f"a chain ending in {anchor.name} (SPKI SHA-256 {anchor.spki_sha256})",
            found=f"{len(ders)} certificates, none self-issued",
        )
    for _root, spki in roots:
        if spki == anchor.spki:
            return
    found, spki = roots[0]
    raise UntrustedRoot(
        f"{what} ends in a root that is not the pinned {anchor.name}",
        expected=f"{anchor.name}, SPKI SHA-256 {anchor.spki_sha256}",
        found=f"{_subject(found)}, SPKI SHA-256 {hashlib.sha256(spki).hexdigest()}",
    )
