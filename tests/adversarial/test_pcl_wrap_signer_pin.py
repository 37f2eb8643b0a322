"""``pcl wrap`` without ``--le-mrsigner`` (``docs/pcl.md`` "Key escrow"): a quote of the
owner's launch-enclave image signed by another key passes the checks unless the author pins
the owner's launch-enclave key. The attack and its control in one place, so the documented
behaviour cannot drift either way."""

from __future__ import annotations

import pytest

from sgxlaunch.errors import SignerMismatch
from sgxlaunch.pcl.wrap import check_launch_enclave_quote
from tests.support.pcl import LE_MRSIGNER, le_quote


def test_another_signers_build_of_the_owners_launch_enclave_refused_only_when_pinned() -> None:
    """Another key signs the owner's launch-enclave image (same MRENCLAVE, EINITTOKEN_KEY set
    on the platform that quoted it): refused with ``--le-mrsigner`` (SignerMismatch naming
    both), accepted without it. Control: the owner's own build passes pinned."""
    stranger = b"\x01" * 32
    q = le_quote(mrsigner=stranger)
    with pytest.raises(SignerMismatch) as info:
        check_launch_enclave_quote(q.verified(), q.public_key, q.root, le_mrsigner=LE_MRSIGNER)
    assert stranger.hex() in str(info.value) + str(info.value.found)
    check_launch_enclave_quote(q.verified(), q.public_key, q.root)  # not pinned: passes
    own = le_quote()
    check_launch_enclave_quote(own.verified(), own.public_key, own.root, le_mrsigner=LE_MRSIGNER)
