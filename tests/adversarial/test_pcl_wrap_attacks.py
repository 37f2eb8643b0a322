"""Attacks on key escrow (``pcl wrap``): the author's code key is wrapped only for the owner's
non-debug launch enclave, for the key that enclave vouched for (docs/pcl.md, "Key escrow")."""

from __future__ import annotations

import os

import pytest

from sgxlaunch.attest import VerifiedQuote
from sgxlaunch.errors import (
    MeasurementMismatch,
    QuoteRefused,
    SignerMismatch,
    VerificationFailed,
)
from sgxlaunch.formats.quote import parse_quote
from sgxlaunch.pcl import crypto
from sgxlaunch.pcl.crypto import ReleaseConstraint, WrappedKey
from sgxlaunch.pcl.wrap import check_launch_enclave_quote, wrap_code_key
from tests.support.clock import NOW
from tests.support.pcl import LE_FLAGS, LE_MRSIGNER, le_quote
from tests.support.policy import ecdsa_signer, root_envelope

K = b"\x42" * 32
RELEASE = ReleaseConstraint(b"\x77" * 32, None, None, 0)


def test_quote_from_another_mrenclave_rejected() -> None:
    q = le_quote(mrenclave=b"\x99" * 32)
    with pytest.raises(MeasurementMismatch, match="not sgxlaunch's launch enclave"):
        wrap_code_key(K, q.verified(), q.public_key, q.root, RELEASE, random=os.urandom)


def test_quote_of_another_owners_launch_enclave_rejected() -> None:
    key = ecdsa_signer()
    other_root = root_envelope(keys=[key], signers=[key], threshold=1)
    q = le_quote(root=other_root)  # the launch enclave image of another owner root
    from tests.support.pcl import owner_root

    with pytest.raises(MeasurementMismatch):
        check_launch_enclave_quote(q.verified(), q.public_key, owner_root())


def test_quote_from_another_mrsigner_rejected() -> None:
    q = le_quote(mrsigner=b"\x01" * 32)
    with pytest.raises(SignerMismatch):
        check_launch_enclave_quote(q.verified(), q.public_key, q.root, le_mrsigner=LE_MRSIGNER)


def test_quote_from_a_debug_launch_enclave_rejected() -> None:
    """dcap-qvl refuses a DEBUG quote; our own check refuses it too, had the library let it
    through (the check does not depend on the library's)."""
    q = le_quote(flags=LE_FLAGS | 0x2)
    with pytest.raises(QuoteRefused, match="Debug"):
        q.verified()
    unchecked = VerifiedQuote(parse_quote(q.quote), "UpToDate", (), NOW, "test")
    with pytest.raises(VerificationFailed, match="DEBUG"):
        wrap_code_key(K, unchecked, q.public_key, q.root, RELEASE, random=os.urandom)


def test_quote_from_an_enclave_without_the_launch_key_attribute_rejected() -> None:
    """Same MRENCLAVE, but not running as the platform's launch enclave: EINIT only grants
    EINITTOKEN_KEY to the signer IA32_SGXLEPUBKEYHASH names (SDM EINIT step 10)."""
    q = le_quote(flags=LE_FLAGS & ~0x20)
    with pytest.raises(VerificationFailed, match="not running as the platform's launch enclave"):
        check_launch_enclave_quote(q.verified(), q.public_key, q.root)
    q = le_quote(isvprodid=7)
    with pytest.raises(VerificationFailed, match="ISVPRODID"):
        check_launch_enclave_quote(q.verified(), q.public_key, q.root)


def test_key_wrapped_for_another_platforms_launch_enclave_rejected() -> None:
    """The public key given is not the one the quoted launch enclave vouched for (another
    platform's launch enclave made it): REPORTDATA differs, nothing is wrapped; and a file
    wrapped for another launch enclave's key does not open with this one's."""
    here, there = le_quote(), le_quote()
    with pytest.raises(VerificationFailed, match="REPORTDATA differs"):
        wrap_code_key(K, here.verified(), there.public_key, here.root, RELEASE, random=os.urandom)
    wrapped = wrap_code_key(
        K, there.verified(), there.public_key, there.root, RELEASE, random=os.urandom
    )
    with pytest.raises(VerificationFailed, match="another launch enclave"):
        WrappedKey.from_bytes(wrapped.to_bytes()).unwrap(here.private_key)


def test_reportdata_without_the_domain_tag_rejected() -> None:
    """A launch enclave REPORT whose REPORTDATA is the bare key (no domain) is not a vouching."""
    private = crypto.private_key(os.urandom)
    public = crypto.public_key(private)
    q = le_quote(reportdata=public + bytes(32))
    with pytest.raises(VerificationFailed, match="REPORTDATA"):
        check_launch_enclave_quote(q.verified(), public, q.root)


def test_key_id_mismatch_rejected_at_unwrap() -> None:
    q = le_quote()
    wrapped = wrap_code_key(K, q.verified(), q.public_key, q.root, RELEASE, random=os.urandom)
    other_id = crypto.key_id(b"\x01" * 32)
    forged = WrappedKey(wrapped.constraint, other_id, wrapped.le_public_key, wrapped.box)
    with pytest.raises(VerificationFailed):
        forged.unwrap(q.private_key)
