"""Checklist case 6: e=3 Bleichenbacher'06 forgery, BER lengths, missing NULL, SHA-1 OID.

The forgery is built against a fresh RSA-3072 e=3 key without its private half; the three bad
encodings are signed with the real private key by raw RSA (S = EM^d mod n), so each is a genuine
RSA signature and only the encoding is wrong. The construction lives in
``tests/vectors/make_adv_vectors.py``, which also made the regression files replayed here.
"""

from __future__ import annotations

import hashlib
import importlib.util
from types import ModuleType

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from sgxlaunch import sigstruct
from sgxlaunch.arch import Sigstruct
from sgxlaunch.errors import SignatureInvalid
from tests.conftest import REPO

VECTORS_DIR = REPO / "tests" / "vectors"


def _maker() -> ModuleType:
    path = VECTORS_DIR / "make_adv_vectors.py"
    spec = importlib.util.spec_from_file_location("make_adv_vectors", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKER = _maker()


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return sigstruct.generate_key()


def lax_verify(sig: Sigstruct) -> bool:
    """The CVE-2016-1494 style check: parse the padding, read the digest, ignore what follows."""
    em = pow(sig.signature_int, 3, sig.modulus_int).to_bytes(384, "big")
    if em[:2] != b"\x00\x01":
        return False
    end = em.index(b"\x00", 2)
    if any(b != 0xFF for b in em[2:end]):
        return False
    info = bytes.fromhex("3031300d060960864801650304020105000420")
    rest = em[end + 1 :]
    return rest.startswith(info) and rest[19:51] == hashlib.sha256(sig.signed_bytes()).digest()


def test_adv06_e3_cube_root_forgery_rejected(key: rsa.RSAPrivateKey) -> None:
    n = key.public_key().public_numbers().n
    body = MAKER.forgery_body()
    message = body.signed_bytes()
    s = MAKER.cube_root_forgery(message)
    prefix = MAKER.forgery_prefix(message)
    cube = s**3
    assert cube < n  # so S^3 mod n = S^3: no key material was needed
    em = cube.to_bytes(384, "big")
    assert em[: len(prefix)] == prefix  # the high bytes survive the rounding up
    assert em[len(prefix) :] != bytes(384 - len(prefix))  # and garbage follows
    assert (s - 1) ** 3 < int.from_bytes(prefix + bytes(384 - len(prefix)), "big")
    forged = MAKER.with_raw_signature(body, n, s)
    parsed = Sigstruct.from_bytes(forged.to_bytes())
    assert lax_verify(parsed)  # a padding-parsing verifier would accept this
    with pytest.raises(SignatureInvalid):
        sigstruct.verify(parsed)


@pytest.mark.parametrize("name", ["ber_length", "missing_null", "sha1_oid", "trailing_garbage"])
def test_adv06_bad_encoding_signed_with_real_key_rejected(
    key: rsa.RSAPrivateKey, name: str
) -> None:
    n = key.public_key().public_numbers().n
    body = MAKER.forgery_body()
    em = MAKER.bad_encodings(body.signed_bytes())[name]
    assert len(em) == 384
    assert em != sigstruct.expected_em(body.signed_bytes())
    s = MAKER.raw_sign(key, em)
    assert pow(s, 3, n).to_bytes(384, "big") == em  # a genuine signature of that encoding
    forged = Sigstruct.from_bytes(MAKER.with_raw_signature(body, n, s).to_bytes())
    with pytest.raises(SignatureInvalid):
        sigstruct.verify(forged)
    if name == "trailing_garbage":
        assert lax_verify(forged)  # what CVE-2016-1494-style parsing would have accepted


def test_adv06_encodings_are_what_they_claim() -> None:
    digest = hashlib.sha256(b"m").digest()
    der = MAKER.digest_info(digest)
    assert der == bytes.fromhex("3031300d060960864801650304020105000420") + digest
    ber = MAKER.digest_info(digest, ber=True)
    assert ber[:3] == b"\x30\x81\x33"
    assert ber.endswith(b"\x04\x81\x20" + digest)
    assert MAKER.digest_info(digest, null=False)[:4] == bytes.fromhex("302f300b")
    sha1 = MAKER.bad_encodings(b"m")["sha1_oid"]
    assert sha1.endswith(
        bytes.fromhex("3021300906052b0e03021a05000414") + hashlib.sha1(b"m").digest()  # noqa: S324
    )


def test_adv06_control_correct_encoding_by_raw_rsa_verifies(key: rsa.RSAPrivateKey) -> None:
    """The same raw-RSA path with the correct encoding verifies: only the encoding was wrong."""
    n = key.public_key().public_numbers().n
    body = MAKER.forgery_body()
    em = MAKER.pkcs1_em(MAKER.digest_info(hashlib.sha256(body.signed_bytes()).digest()))
    assert em == sigstruct.expected_em(body.signed_bytes())
    good = MAKER.with_raw_signature(body, n, MAKER.raw_sign(key, em))
    sigstruct.verify(Sigstruct.from_bytes(good.to_bytes()))
    assert good == sigstruct.sign(body, sigstruct.RsaKeySigner(key))


@pytest.mark.parametrize(
    "name",
    [
        "adv06_e3_cube_root_forgery",
        "adv06_ber_length",
        "adv06_missing_null",
        "adv06_sha1_oid",
        "adv06_trailing_garbage",
    ],
)
def test_adv06_regression_files_rejected(name: str) -> None:
    data = (VECTORS_DIR / f"{name}.sigstruct.bin").read_bytes()
    parsed = Sigstruct.from_bytes(data)
    assert parsed.enclavehash == MAKER.forgery_body().enclavehash
    with pytest.raises(SignatureInvalid):
        sigstruct.verify(parsed)


def test_adv06_icbrt_ceil() -> None:
    for x in [0, 1, 2, 7, 8, 9, 26, 27, 28, 10**30, 10**30 + 1, (1 << 3057) + 12345]:
        r = MAKER.icbrt_ceil(x)
        assert r**3 >= x
        assert r == 0 or (r - 1) ** 3 < x
