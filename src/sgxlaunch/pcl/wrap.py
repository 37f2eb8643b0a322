"""The author's side of key escrow: ``sgxlaunch pcl wrap`` (docs/pcl.md).

:func:`check_launch_enclave_quote` decides whether a verified quote is the owner's launch
enclave holding the key-agreement key it names; :func:`wrap_code_key` then boxes the code key
to that key with the author's release constraint as associated data
(:meth:`sgxlaunch.pcl.crypto.WrappedKey.wrap`). Quote verification itself (certificate chains,
CRLs, TCB, signatures) is :func:`sgxlaunch.attest.verify_quote`'s, run by the caller exactly
as ``sgxlaunch quote verify`` runs it.
"""

from __future__ import annotations

import hmac

from sgxlaunch.arch.constants import AttributeFlag
from sgxlaunch.attest.verify import VerifiedQuote
from sgxlaunch.errors import MeasurementMismatch, SignerMismatch, VerificationFailed
from sgxlaunch.formats.quote import ReportBody
from sgxlaunch.pcl.crypto import (
    PUBLIC_KEY_SIZE,
    Random,
    ReleaseConstraint,
    WrappedKey,
    le_key_reportdata,
)

_DEBUG = int(AttributeFlag.DEBUG)
_EINITTOKEN_KEY = int(AttributeFlag.EINITTOKEN_KEY)


def expected_le_mrenclave(root_envelope: bytes) -> bytes:
    """MRENCLAVE of sgxlaunch's launch enclave built for the owner root ``root_envelope``.

    Raises:
        MalformedInput: the root is not a signed envelope.
    """
    from sgxlaunch.launch.enclave import launch_enclave_image, root_digest_of

    return launch_enclave_image(root_digest_of(root_envelope)).mrenclave()


def check_launch_enclave_quote(
    verified: VerifiedQuote,
    le_public_key: bytes,
    root_envelope: bytes,
    *,
    le_mrsigner: bytes | None = None,
) -> ReportBody:
    """Check that a verified quote is the owner's launch enclave vouching for ``le_public_key``.

    Checks, in order:

    1. the quote is an SGX enclave quote (a TDX quote is refused);
    2. MRENCLAVE = sgxlaunch's launch-enclave image for the owner root
       (:func:`expected_le_mrenclave`) — another program, or the launch enclave of another
       owner, is refused (:class:`MeasurementMismatch`);
    3. MRSIGNER = ``le_mrsigner`` when given (:class:`SignerMismatch`);
    4. ATTRIBUTES.DEBUG = 0 (a debug enclave's memory is readable by the host);
    5. ATTRIBUTES.EINITTOKEN_KEY = 1 and ISVPRODID = the launch enclave's: only an enclave
       whose signer the platform's IA32_SGXLEPUBKEYHASH names gets EINITTOKEN_KEY at EINIT
       (SDM EINIT step 10, spec reference §4: a controlled attribute with MRSIGNER ≠
       IA32_SGXLEPUBKEYHASH → SGX_INVALID_ATTRIBUTE);
    6. REPORTDATA = SHA-256(:data:`~sgxlaunch.pcl.crypto.LE_KEY_REPORTDATA_DOMAIN` ‖ public
       key) ‖ zeros: the public key is the one this enclave made.

    Returns:
        The quoted report body.

    Raises:
        VerificationFailed: the first check that fails (expected vs found).
    """
    from sgxlaunch.launch.enclave import LE_ISVPRODID

    body = verified.quote.body
    if not isinstance(body, ReportBody):
        raise VerificationFailed(
            "the quote is not an SGX enclave quote (TDX?)", expected="SGX report body"
        )
    want = expected_le_mrenclave(root_envelope)
    if not hmac.compare_digest(body.mrenclave, want):
        raise MeasurementMismatch(
            "the quoted enclave is not sgxlaunch's launch enclave for this owner root",
            expected=want.hex(),
            found=body.mrenclave.hex(),
        )
    if le_mrsigner is not None and not hmac.compare_digest(body.mrsigner, le_mrsigner):
        raise SignerMismatch(
            "the quoted launch enclave is signed by another key than the owner's",
            expected=le_mrsigner.hex(),
            found=body.mrsigner.hex(),
        )
    flags = body.attributes.flags
    if flags & _DEBUG:
        raise VerificationFailed(
            "the quoted launch enclave runs in DEBUG mode (its memory is readable by the "
            "host); a code key is never wrapped for it",
            expected="DEBUG = 0",
            found="DEBUG = 1",
        )
    if not flags & _EINITTOKEN_KEY or body.isvprodid != LE_ISVPRODID:
        raise VerificationFailed(
            "the quoted enclave is not running as the platform's launch enclave",
            expected=f"EINITTOKEN_KEY = 1, ISVPRODID = {LE_ISVPRODID}",
            found=f"EINITTOKEN_KEY = {int(bool(flags & _EINITTOKEN_KEY))}, "
            f"ISVPRODID = {body.isvprodid}",
        )
    if len(le_public_key) != PUBLIC_KEY_SIZE:
        raise VerificationFailed(
            "the launch-enclave public key is not an X25519 key",
            expected=f"{PUBLIC_KEY_SIZE} bytes",
            found=f"{len(le_public_key)} bytes",
        )
    bound = le_key_reportdata(le_public_key)
    if not hmac.compare_digest(body.reportdata, bound):
        raise VerificationFailed(
            "the quote does not vouch for this public key (REPORTDATA differs): a key of "
            "another launch enclave or another platform",
            expected=bound.hex(),
            found=body.reportdata.hex(),
        )
    return body


def wrap_code_key(
    code_key: bytes,
    verified: VerifiedQuote,
    le_public_key: bytes,
    root_envelope: bytes,
    constraint: ReleaseConstraint,
    *,
    random: Random,
    le_mrsigner: bytes | None = None,
) -> WrappedKey:
    """:func:`check_launch_enclave_quote`, then box ``code_key`` to ``le_public_key`` with
    ``constraint`` as associated data.

    Raises:
        VerificationFailed: as :func:`check_launch_enclave_quote`.
        MalformedInput: the key is not 32 bytes.
    """
    check_launch_enclave_quote(verified, le_public_key, root_envelope, le_mrsigner=le_mrsigner)
    return WrappedKey.wrap(code_key, le_public_key, constraint, random=random)


__all__ = ["check_launch_enclave_quote", "expected_le_mrenclave", "wrap_code_key"]
