"""The real RSA-3072 (e = 3) SGX signing keys of the shared vectors (read-only), by role.

One loader for every test: a role names one key file, and each key has exactly one role.
"""

from __future__ import annotations

import functools

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from sgxlaunch.sigstruct import RsaKeySigner, mrsigner_of
from tests.conftest import shared_vectors

KEY_FILES = {
    # the processor tests' launch enclave; signed generated/case1_defaults.sig
    "le": "generated/case1_defaults.key.pem",
    # an enclave author
    "app": "generated/case2_prodid_svn_debug.key.pem",
    # a second, unrelated signer
    "other": "generated/case3_misc_xfrm_swdef.key.pem",
    # a third signer (a rotated owner launch-enclave key in the platform tests)
    "fourth": "generated/case4_kss_like_attrs.key.pem",
    # the owner's launch-enclave key in driver and platform tests: the kernel selftest key,
    # which signed none of the SGXS vectors (so every vector needs a token in owner mode)
    "owner-le": "kselftest/sign_key.pem",
    # the key of the Fortanix sgxs-tools vector sig1
    "fortanix": "fortanix/sgxs-tools__tests__data__sig1.key.pem",
}


@functools.cache
def vector_rsa_key(path: str) -> rsa.RSAPrivateKey:
    """The RSA private key in the shared vectors at ``path`` (relative to the vectors)."""
    key = load_pem_private_key((shared_vectors() / path).read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def rsa_key(role: str) -> rsa.RSAPrivateKey:
    """The private key of ``role`` (see :data:`KEY_FILES`)."""
    return vector_rsa_key(KEY_FILES[role])


@functools.cache
def signer(role: str) -> RsaKeySigner:
    return RsaKeySigner(rsa_key(role))


def mrsigner(role: str) -> bytes:
    return mrsigner_of(signer(role).public_key())
