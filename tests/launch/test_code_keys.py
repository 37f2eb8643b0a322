"""The launch enclave's side of protected code (issue 20): its key-agreement key, the quote
binding it, ADD_CODE_KEY and the owner-gated RELEASE (refusals here; the attacks are in
``tests/adversarial/test_pcl_release_attacks.py``)."""

from __future__ import annotations

import pytest

from sgxlaunch.errors import MalformedInput, PolicyDenied, UsageError, VerificationFailed
from sgxlaunch.launch.ecalls import ClaimReply, ClaimRequest
from sgxlaunch.launch.enclave import KX_SEALED_MAGIC
from sgxlaunch.launch.platform import LE_KX_KEY, code_key_key
from sgxlaunch.pcl import crypto
from tests.support.codekeys import (
    ask,
    by_signer,
    code_key,
    pcl_owner,
    release,
    requester,
    wrap,
)
from tests.support.platform import Owner, allow_rule

BY_MRENCLAVE = crypto.ReleaseConstraint(bytes(range(32)), None, None, 0)


@pytest.fixture(scope="module")
def owner() -> Owner:
    return pcl_owner()


def test_the_key_agreement_key_is_made_once_sealed_and_survives_a_reopen(owner: Owner) -> None:
    public = owner.platform().le_public_key()
    sealed = owner.store.get(LE_KX_KEY)
    assert sealed is not None and sealed.startswith(KX_SEALED_MAGIC)
    again = owner.platform()  # a new launch-enclave instance unseals the same key
    assert again.le_public_key() == public
    assert owner.store.get(LE_KX_KEY) == sealed  # not made again
    assert len(public) == 32 and public != bytes(32)


def test_an_altered_key_agreement_blob_is_refused_not_replaced(owner: Owner) -> None:
    platform = owner.platform()
    platform.le_public_key()
    sealed = owner.store.get(LE_KX_KEY)
    assert sealed is not None
    owner.store.commit({LE_KX_KEY: sealed[:-1] + bytes([sealed[-1] ^ 1])})
    try:
        with pytest.raises(VerificationFailed, match="key-agreement key does not unseal"):
            owner.platform().le_public_key()
    finally:
        owner.store.commit({LE_KX_KEY: sealed})
    assert owner.platform().le_public_key() == platform.le_public_key()


def test_add_code_key_keeps_it_sealed_under_its_id_and_logs_the_constraint(owner: Owner) -> None:
    platform = owner.platform()
    key = code_key(b"add")
    _image, sig = requester(platform)
    result = platform.add_code_key(wrap(platform, key, by_signer(sig, 2)))
    key_id = crypto.key_id(key)
    assert result["key_id"] == key_id.hex()
    assert result["constraint"] == {
        "debug": False,
        "min_isvsvn": 2,
        "mrsigner": sig.mrsigner.hex(),
        "isvprodid": sig.isvprodid,
    }
    blob = owner.store.get(code_key_key(key_id))
    assert blob is not None and key not in blob
    assert key_id.hex() in platform.code_key_ids()
    record = platform.log_records()[result["log_seq"]]
    assert record["kind"] == "code-key-added"
    assert record["key_id"] == key_id.hex() and record["constraint"] == result["constraint"]
    assert platform.verify_log() == len(platform.log_records())


def test_add_code_key_before_any_key_agreement_key_says_what_to_do_first() -> None:
    owner = pcl_owner(seed=b"pcl-no-kx-key-seed-000000001")
    platform = owner.platform()
    other = Owner(seed=b"pcl-other-platform-seed-0001")
    other.set_up_launch_enclave()
    wrapped = wrap(other.platform(), code_key(), BY_MRENCLAVE)
    with pytest.raises(UsageError, match="le-key-quote"):
        platform.add_code_key(wrapped)
    assert owner.store.get(LE_KX_KEY) is None


@pytest.mark.parametrize(
    "mutate",
    [lambda w: w[:-1], lambda w: w + b"\x00", lambda w: b"X" + w[1:]],
    ids=["truncated", "trailing", "magic"],
)
def test_a_malformed_wrapped_key_is_refused_naming_the_field(owner: Owner, mutate: object) -> None:
    platform = owner.platform()
    wrapped = wrap(platform, code_key(b"malformed"), BY_MRENCLAVE)
    before = len(platform.log_records())
    with pytest.raises(MalformedInput, match="wrapped key"):
        platform.add_code_key(mutate(wrapped))  # type: ignore[operator]
    assert len(platform.log_records()) == before  # nothing stored, nothing logged


def test_a_policy_of_spec_2_never_releases_a_key(owner: Owner) -> None:
    """``protected_code`` defaults to deny in every spec_version; spec "1"/"2" cannot say
    allow, so under them nothing is released — and the refusal is logged."""
    platform = owner.platform()
    key = code_key(b"spec2")
    _image, sig = requester(platform)
    platform.install_policy(owner.policy(version=2, allow=[allow_rule(sig, "requester")]))
    platform.add_code_key(wrap(platform, key, by_signer(sig)))
    image, sig = requester(platform)
    enclave = platform.run(image, sig).enclave
    assert enclave is not None
    asked = ask(platform, enclave, crypto.key_id(key))
    with pytest.raises(PolicyDenied, match="rule requester") as denied:
        release(platform, asked, crypto.key_id(key))
    assert "protected_code: expected allow" in str(denied.value.detail)
    record = platform.log_records()[-1]
    assert record["kind"] == "code-key-release" and record["outcome"] == "refused"
    assert record["rule"] == "requester" and record["policy_version"] == 2
    assert record["reasons"][0]["field"] == "protected_code"
    assert record["mrenclave"] == sig.enclavehash.hex()
    with pytest.raises(UsageError, match="no release to claim"):
        platform._le_call(ClaimRequest(), ClaimReply)


def test_a_request_for_a_key_not_installed_is_refused_and_logged(owner: Owner) -> None:
    platform = owner.platform()
    image, sig = requester(platform)
    enclave = platform.run(image, sig).enclave
    assert enclave is not None
    missing = crypto.key_id(code_key(b"never installed"))
    with pytest.raises(VerificationFailed, match="refused to release"):
        release(platform, ask(platform, enclave, missing), missing)
    record = platform.log_records()[-1]
    assert record["outcome"] == "refused" and record["key_id"] == missing.hex()
    assert record["reasons"][0]["field"] == "key_id"


def test_the_challenge_comes_with_the_launch_enclaves_targetinfo(owner: Owner) -> None:
    platform = owner.platform()
    targetinfo, challenge = platform.release_challenge()
    _t2, other = platform.release_challenge()
    assert challenge != other and len(challenge) == 32
    le = platform.le
    assert le is not None and targetinfo[:32] == le.mrenclave


def test_the_key_quote_binds_the_public_key_to_the_owners_launch_enclave() -> None:
    """dcap-qvl verifies the quote under the machine's root; the quoted enclave is the owner's
    launch enclave (its MRENCLAVE, MRSIGNER, DEBUG clear) and REPORTDATA binds the key."""
    from sgxlaunch.arch.constants import AttributeFlag
    from sgxlaunch.attest import Collateral, TrustAnchor, verify_quote
    from sgxlaunch.attest.pcs import EmulatedPcs
    from sgxlaunch.formats.quote import ReportBody

    owner = pcl_owner(quoting=True, seed=b"pcl-quoting-seed-00000000001")
    platform = owner.platform()
    quote, public = platform.le_key_quote()
    assert public == platform.le_public_key()
    pcs = EmulatedPcs(owner.machine)
    verified = verify_quote(
        quote,
        Collateral.from_bytes(pcs.collateral(owner.clock.now)),
        owner.clock.now,
        anchor=TrustAnchor.from_certificate(pcs.root_der()),
    )
    body = verified.quote.body
    assert isinstance(body, ReportBody)
    le = platform.le_sigstruct
    assert le is not None
    assert body.mrenclave == le.enclavehash and body.mrsigner == le.mrsigner
    assert not body.attributes.flags & int(AttributeFlag.DEBUG)
    assert body.reportdata == crypto.le_key_reportdata(public)
    # The author's check (h20fmt's `pcl wrap`) would refuse another key with this quote.
    assert body.reportdata != crypto.le_key_reportdata(bytes(31) + b"\x09")
