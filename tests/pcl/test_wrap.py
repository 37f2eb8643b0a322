"""``pcl wrap``'s library side: a genuine launch-enclave quote is accepted and the key wrapped
for its public key opens only with its private key."""

from __future__ import annotations

import os

from sgxlaunch.pcl.crypto import ReleaseConstraint, WrappedKey
from sgxlaunch.pcl.wrap import check_launch_enclave_quote, expected_le_mrenclave, wrap_code_key
from tests.support.pcl import LE_MRSIGNER, le_quote, owner_root

K = b"\x42" * 32
RELEASE = ReleaseConstraint(None, b"\x77" * 32, 3, 2)


def test_genuine_launch_enclave_quote_accepted_and_key_wrapped() -> None:
    q = le_quote()
    body = check_launch_enclave_quote(q.verified(), q.public_key, q.root, le_mrsigner=LE_MRSIGNER)
    assert body.mrenclave == expected_le_mrenclave(owner_root())
    wrapped = wrap_code_key(K, q.verified(), q.public_key, q.root, RELEASE, random=os.urandom)
    parsed = WrappedKey.from_bytes(wrapped.to_bytes())
    assert parsed.constraint == RELEASE
    assert parsed.le_public_key == q.public_key
    assert parsed.unwrap(q.private_key) == K


def test_expected_mrenclave_is_the_launch_enclave_image_for_the_root() -> None:
    from sgxlaunch.launch.enclave import launch_enclave_image, root_digest_of

    root = owner_root()
    assert expected_le_mrenclave(root) == launch_enclave_image(root_digest_of(root)).mrenclave()
