"""The protected-code loader's box, tags, key id, release constraint and wrapped-key file."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sgxlaunch.errors import MacInvalid, MalformedInput, SgxlaunchError, VerificationFailed
from sgxlaunch.pcl import crypto
from sgxlaunch.pcl.crypto import (
    RELEASE_DOMAIN,
    WRAP_DOMAIN,
    ReleaseConstraint,
    WrappedKey,
    open_box,
    seal_box,
)

K = bytes(range(32))


def _keypair() -> tuple[bytes, bytes]:
    private = crypto.private_key(os.urandom)
    return private, crypto.public_key(private)


def test_box_round_trip_and_construction_as_documented() -> None:
    private, public = _keypair()
    eph_private = b"\x11" * 32
    box = seal_box(public, K, domain=WRAP_DOMAIN, aad=b"aad", random=lambda n: eph_private)
    assert open_box(private, box, domain=WRAP_DOMAIN, aad=b"aad") == K
    # recompute the documented construction independently from its parts
    eph_public = X25519PrivateKey.from_private_bytes(eph_private).public_key().public_bytes_raw()
    assert box[:8] == b"SGXLBOX1" and box[8:40] == eph_public
    shared = X25519PrivateKey.from_private_bytes(private).exchange(
        X25519PrivateKey.from_private_bytes(eph_private).public_key()
    )
    info = b"sgxlaunch pcl box v1\x00" + len(WRAP_DOMAIN).to_bytes(2, "little") + WRAP_DOMAIN
    key = HKDF(SHA256(), 32, None, info + eph_public + public).derive(shared)
    assert AESGCM(key).decrypt(bytes(12), box[40:], b"aad") == K
    assert len(box) == len(K) + crypto.BOX_OVERHEAD


def test_box_wrong_key_refused() -> None:
    _private, public = _keypair()
    other, _ = _keypair()
    box = seal_box(public, K, domain=WRAP_DOMAIN, aad=b"", random=os.urandom)
    with pytest.raises(MacInvalid):
        open_box(other, box, domain=WRAP_DOMAIN, aad=b"")


def test_box_wrong_aad_refused() -> None:
    private, public = _keypair()
    box = seal_box(public, K, domain=WRAP_DOMAIN, aad=b"mrenclave=a", random=os.urandom)
    with pytest.raises(MacInvalid):
        open_box(private, box, domain=WRAP_DOMAIN, aad=b"mrenclave=b")


def test_box_other_domain_refused() -> None:
    private, public = _keypair()
    box = seal_box(public, K, domain=WRAP_DOMAIN, aad=b"", random=os.urandom)
    with pytest.raises(MacInvalid):
        open_box(private, box, domain=RELEASE_DOMAIN, aad=b"")


@pytest.mark.parametrize("index", [8, 20, 39, 40, 60, 71, 87])
def test_box_every_tampered_byte_refused(index: int) -> None:
    private, public = _keypair()
    box = bytearray(seal_box(public, K, domain=WRAP_DOMAIN, aad=b"", random=os.urandom))
    box[index] ^= 1
    with pytest.raises(VerificationFailed):
        open_box(private, bytes(box), domain=WRAP_DOMAIN, aad=b"")


def test_box_truncations_and_trailing_bytes_raise_only_project_errors() -> None:
    private, public = _keypair()
    box = seal_box(public, K, domain=WRAP_DOMAIN, aad=b"", random=os.urandom)
    for n in range(len(box)):
        with pytest.raises(SgxlaunchError):
            open_box(private, box[:n], domain=WRAP_DOMAIN, aad=b"")
    with pytest.raises(MacInvalid):
        open_box(private, box + b"\x00", domain=WRAP_DOMAIN, aad=b"")
    with pytest.raises(MalformedInput, match="magic"):
        open_box(private, b"X" + box[1:], domain=WRAP_DOMAIN, aad=b"")


def test_box_small_order_public_key_refused() -> None:
    with pytest.raises(VerificationFailed, match="small order"):
        seal_box(bytes(32), K, domain=WRAP_DOMAIN, aad=b"", random=os.urandom)
    private, _ = _keypair()
    crafted = b"SGXLBOX1" + bytes(32) + bytes(48)
    with pytest.raises(VerificationFailed, match="small order"):
        open_box(private, crafted, domain=WRAP_DOMAIN, aad=b"")


def test_box_fresh_ephemeral_each_time() -> None:
    _private, public = _keypair()
    a = seal_box(public, K, domain=WRAP_DOMAIN, aad=b"", random=os.urandom)
    b = seal_box(public, K, domain=WRAP_DOMAIN, aad=b"", random=os.urandom)
    assert a[8:40] != b[8:40] and a[40:] != b[40:]


def test_domain_tags_distinct_and_reportdata_as_documented() -> None:
    assert len(set(crypto.DOMAINS)) == len(crypto.DOMAINS)
    public = b"\x07" * 32
    assert crypto.le_key_reportdata(public) == (
        hashlib.sha256(crypto.LE_KEY_REPORTDATA_DOMAIN + public).digest() + bytes(32)
    )
    challenge, eph, kid = b"\x01" * 32, b"\x02" * 32, crypto.key_id(K)
    assert crypto.release_reportdata(challenge, eph, kid) == (
        hashlib.sha256(crypto.RELEASE_REPORTDATA_DOMAIN + challenge + eph + kid).digest()
        + bytes(32)
    )
    assert kid == hashlib.sha256(crypto.KEY_ID_DOMAIN + K).digest()
    assert crypto.release_aad(challenge, kid) == challenge + kid
    with pytest.raises(MalformedInput):
        crypto.le_key_reportdata(public[:31])
    with pytest.raises(MalformedInput):
        crypto.key_id(K[:16])


def test_check_key_id_mismatch_names_ids_not_key() -> None:
    crypto.check_key_id(K, crypto.key_id(K))
    other = crypto.key_id(b"\xff" * 32)
    with pytest.raises(VerificationFailed, match="key id mismatch") as info:
        crypto.check_key_id(K, other)
    assert K.hex() not in str(info.value)
    assert other.hex() in str(info.value)


MRE = bytes.fromhex("aa" * 32)
MRS = bytes.fromhex("bb" * 32)


def test_constraint_parse_encode_round_trip() -> None:
    by_enclave = ReleaseConstraint.parse(f"mrenclave={MRE.hex()}", 3)
    by_signer = ReleaseConstraint.parse(f"isvprodid=7, mrsigner={MRS.hex().upper()}", 0)
    assert by_enclave == ReleaseConstraint(MRE, None, None, 3)
    assert by_signer == ReleaseConstraint(None, MRS, 7, 0)
    for c in (by_enclave, by_signer):
        raw = c.to_bytes()
        assert len(raw) == crypto.CONSTRAINT_SIZE
        assert ReleaseConstraint.from_bytes(raw) == c
        assert ReleaseConstraint.parse(c.text(), c.min_isvsvn) == c


@pytest.mark.parametrize(
    "text",
    [
        "",
        "mrenclave=zz",
        f"mrenclave={MRE.hex()},isvprodid=1",
        f"mrsigner={MRS.hex()}",
        f"mrenclave={MRE.hex()},mrsigner={MRS.hex()}",
        f"mrsigner={MRS.hex()},isvprodid=70000",
        f"mrsigner={MRS.hex()},isvprodid=-1",
        f"mrenclave={MRE.hex()},mrenclave={MRE.hex()}",
        "debug=1",
    ],
)
def test_constraint_parse_refuses(text: str) -> None:
    with pytest.raises(MalformedInput) as info:
        ReleaseConstraint.parse(text, 0)
    assert info.value.field == "release"


def test_constraint_from_bytes_strict() -> None:
    raw = ReleaseConstraint(MRE, None, None, 1).to_bytes()
    for n in range(len(raw)):
        with pytest.raises(MalformedInput):
            ReleaseConstraint.from_bytes(raw[:n])
    with pytest.raises(MalformedInput):
        ReleaseConstraint.from_bytes(raw + b"\x00")
    for index, field in ((0, "version"), (1, "kind"), (34, "isvprodid"), (38, "reserved")):
        bad = bytearray(raw)
        bad[index] ^= 0x40
        with pytest.raises(MalformedInput) as info:
            ReleaseConstraint.from_bytes(bytes(bad))
        assert info.value.field == field


def test_constraint_check() -> None:
    by_signer = ReleaseConstraint(None, MRS, 7, 2)
    ok = {"mrenclave": MRE, "mrsigner": MRS, "isvprodid": 7, "isvsvn": 2, "flags": 0x4}
    by_signer.check(**ok)  # type: ignore[arg-type]
    for change, message in (
        ({"flags": 0x6}, "DEBUG"),
        ({"mrsigner": MRE}, "MRSIGNER"),
        ({"isvprodid": 8}, "ISVPRODID"),
        ({"isvsvn": 1}, "ISVSVN"),
    ):
        with pytest.raises(VerificationFailed, match=message):
            by_signer.check(**{**ok, **change})  # type: ignore[arg-type]
    by_enclave = ReleaseConstraint(MRE, None, None, 0)
    by_enclave.check(**{**ok, "mrsigner": MRE})  # type: ignore[arg-type]
    with pytest.raises(VerificationFailed, match="MRENCLAVE"):
        by_enclave.check(**{**ok, "mrenclave": MRS})  # type: ignore[arg-type]


def test_wrapped_key_round_trip_and_unwrap() -> None:
    private, public = _keypair()
    constraint = ReleaseConstraint(None, MRS, 7, 2)
    wrapped = WrappedKey.wrap(K, public, constraint, random=os.urandom)
    raw = wrapped.to_bytes()
    assert len(raw) == crypto.WRAPPED_SIZE
    assert K not in raw
    parsed = WrappedKey.from_bytes(raw)
    assert parsed == wrapped
    assert parsed.unwrap(private) == K
    assert parsed.key_id == crypto.key_id(K)


def test_wrapped_key_for_another_launch_enclave_refused() -> None:
    _private, public = _keypair()
    other, _ = _keypair()
    wrapped = WrappedKey.wrap(K, public, ReleaseConstraint(MRE, None, None, 0), random=os.urandom)
    with pytest.raises(VerificationFailed, match="another launch enclave"):
        wrapped.unwrap(other)


def test_wrapped_key_altered_constraint_refused() -> None:
    """The constraint travels in clear; changing it (say, to another MRSIGNER) breaks the tag."""
    private, public = _keypair()
    wrapped = WrappedKey.wrap(K, public, ReleaseConstraint(MRE, None, None, 5), random=os.urandom)
    for changed in (
        ReleaseConstraint(MRS, None, None, 5),
        ReleaseConstraint(MRE, None, None, 0),
    ):
        forged = WrappedKey(changed, wrapped.key_id, wrapped.le_public_key, wrapped.box)
        with pytest.raises(MacInvalid):
            WrappedKey.from_bytes(forged.to_bytes()).unwrap(private)


def test_wrapped_key_id_mismatch_refused() -> None:
    private, public = _keypair()
    wrapped = WrappedKey.wrap(K, public, ReleaseConstraint(MRE, None, None, 0), random=os.urandom)
    other_id = crypto.key_id(b"\x01" * 32)
    # a file claiming another key id with a box whose AAD matches that claim: the author side
    # would never make one, but the key inside must still be the named one
    head = WrappedKey(wrapped.constraint, other_id, public, bytes(crypto.WRAPPED_BOX_SIZE))
    box = seal_box(public, K, domain=WRAP_DOMAIN, aad=head.head(), random=os.urandom)
    with pytest.raises(VerificationFailed, match="key id mismatch"):
        WrappedKey(wrapped.constraint, other_id, public, box).unwrap(private)
    # and changing only the clear key id breaks the tag
    forged = WrappedKey(wrapped.constraint, other_id, public, wrapped.box)
    with pytest.raises(MacInvalid):
        forged.unwrap(private)


def test_wrapped_key_parser_strict() -> None:
    _private, public = _keypair()
    raw = WrappedKey.wrap(
        K, public, ReleaseConstraint(MRE, None, None, 0), random=os.urandom
    ).to_bytes()
    for n in range(len(raw)):
        with pytest.raises(MalformedInput):
            WrappedKey.from_bytes(raw[:n])
    with pytest.raises(MalformedInput):
        WrappedKey.from_bytes(raw + b"\x00")
    for index, field in (
        (0, "magic"),
        (8, "version"),
        (9, "version"),
        (crypto.WRAPPED_HEAD_SIZE, "magic"),
    ):
        bad = bytearray(raw)
        bad[index] ^= 0x40
        with pytest.raises(MalformedInput) as info:
            WrappedKey.from_bytes(bytes(bad))
        assert info.value.field == field
