"""Attacks on the owner's second factor, through the Platform (issue 6 acceptance).

Each failure path is also checked to leave the stored state byte-for-byte unchanged.
"""

from __future__ import annotations

import errno

import pytest

from sgxlaunch.arch.constants import SgxStatus
from sgxlaunch.driver import LoadFailed
from sgxlaunch.errors import (
    PolicyDenied,
    Rollback,
    SgxlaunchError,
    ThresholdNotMet,
    VerificationFailed,
)
from sgxlaunch.launch.enclave import sign_launch_enclave
from sgxlaunch.launch.log import LogTampered
from sgxlaunch.launch.platform import Platform, log_prefix
from sgxlaunch.policy import POLICY_KEY
from tests.support.cpu import DEBUG, KeyProbe, MemoryProgram
from tests.support.keys import signer
from tests.support.platform import Owner, allow_rule, author_enclave


def owner_platform(*, seed: bytes = b"platform-seed-for-tests-0001") -> tuple[Owner, Platform]:
    """An owner whose policy allows the author's MemoryProgram (ISVPRODID 1), in owner mode."""
    owner = Owner(seed=seed)
    owner.set_up_launch_enclave()
    platform = owner.platform()
    _, sig = author_enclave(MemoryProgram)
    platform.install_policy(owner.policy(version=1, allow=[allow_rule(sig)]))
    platform.set_mode(owner.mode("owner", version=1))
    return owner, owner.platform()


def minted_token(platform: Platform) -> bytes:
    """Run the allowed enclave once; return the token the launch enclave minted for it."""
    image, sig = author_enclave(MemoryProgram)
    tokens: list[bytes] = []
    platform.driver.observers.append(lambda a: tokens.append(a.token or b""))
    assert platform.run(image, sig).decision == "allowed"
    return tokens[-1]


def unchanged(owner: Owner, action: object, error: type[BaseException]) -> BaseException:
    before = owner.store.snapshot()
    assert callable(action)
    with pytest.raises(error) as err:
        action()
    assert owner.store.snapshot() == before
    return err.value


def test_token_minted_for_one_enclave_refused_for_another() -> None:
    _, platform = owner_platform()
    token = minted_token(platform)
    # The driver's owner-mode INIT refuses first (EPERM: the KEYID binds another SIGSTRUCT;
    # sgxlaunch.driver.owner); EINIT would answer INVALID_MEASUREMENT (SDM EINIT step 12).
    image_b, sig_b = author_enclave(KeyProbe)  # same author, other code
    with pytest.raises(LoadFailed) as err:
        platform.run(image_b, sig_b, token=token)
    assert err.value.errno == errno.EPERM and "another SIGSTRUCT" in str(err.value)
    image_c, sig_c = author_enclave(MemoryProgram, key="other")  # same code, other signer
    with pytest.raises(LoadFailed) as err2:
        platform.run(image_c, sig_c, token=token)
    assert err2.value.errno == errno.EPERM and "another SIGSTRUCT" in str(err2.value)


def test_token_from_another_platform_refused() -> None:
    _, platform_a = owner_platform(seed=b"platform-A-seed-000000000000")
    _, platform_b = owner_platform(seed=b"platform-B-seed-000000000000")
    token = minted_token(platform_a)
    image, sig = author_enclave(MemoryProgram)
    with pytest.raises(LoadFailed) as err:
        platform_b.run(image, sig, token=token)
    assert err.value.status == SgxStatus.INVALID_EINITTOKEN


def test_token_after_owner_changed_the_launch_enclave_signer_refused() -> None:
    owner, platform = owner_platform()
    token = minted_token(platform)
    # The owner signs its launch enclave with a second key and switches to it (2 of 3).
    platform.set_launch_enclave(sign_launch_enclave(owner.root, signer("fourth")))
    platform.set_mode(owner.mode("owner", version=2, le="fourth"))
    switched = owner.platform()
    assert switched.le_signer is not None
    assert switched.cpu.lepubkeyhash == switched.le_signer
    image, sig = author_enclave(MemoryProgram)
    with pytest.raises(LoadFailed) as err:
        switched.run(image, sig, token=token)
    assert err.value.status == SgxStatus.INVALID_EINITTOKEN
    assert switched.run(image, sig).decision == "allowed"  # a token from the new LE works


def test_mode_naming_a_signer_without_its_launch_enclave_refused() -> None:
    owner, platform = owner_platform()
    data = owner.mode("owner", version=2, le="fourth")
    unchanged(owner, lambda: platform.set_mode(data), SgxlaunchError)


def test_policy_signed_below_threshold_refused() -> None:
    owner, platform = owner_platform()
    _, sig = author_enclave(KeyProbe)
    data = owner.policy(version=2, allow=[allow_rule(sig)], signers=1)
    unchanged(owner, lambda: platform.install_policy(data), ThresholdNotMet)


def test_policy_rollback_refused_at_install_and_after_restart() -> None:
    owner, platform = owner_platform()
    _, sig = author_enclave(MemoryProgram)
    v1 = owner.store.get(POLICY_KEY)
    assert v1 is not None
    platform.install_policy(owner.policy(version=2, allow=[allow_rule(sig)]))
    older = owner.policy(version=1, allow=[allow_rule(sig), {"id": "x", "mrenclave": "ab" * 32}])
    unchanged(owner, lambda: platform.install_policy(older), Rollback)
    # Someone with write access to the store puts version 1 back: the sealed mark refuses it.
    owner.store.commit({POLICY_KEY: v1})
    with pytest.raises(VerificationFailed, match="rollback"):
        owner.platform()


def test_mode_switch_without_threshold_refused() -> None:
    owner, platform = owner_platform()
    data = owner.mode("permissive", version=2, signers=1)
    unchanged(owner, lambda: platform.set_mode(data), ThresholdNotMet)
    assert owner.platform().mode == "owner"


def test_mode_document_rollback_after_restart_refused() -> None:
    owner, platform = owner_platform()
    v1 = owner.store.get("owner/mode")
    assert v1 is not None
    platform.set_mode(owner.mode("owner", version=2))
    owner.store.commit({"owner/mode": v1})  # an older (owner) document put back
    with pytest.raises(SgxlaunchError, match=r"rollback|version"):
        owner.platform()


def test_debug_build_of_allowed_enclave_refused() -> None:
    _, platform = owner_platform()
    image, sig = author_enclave(MemoryProgram, flags=DEBUG)
    with pytest.raises(PolicyDenied) as err:
        platform.run(image, sig)
    assert any("DEBUG" in line or "debug" in line for line in err.value.detail)


def test_launch_enclave_for_another_root_refused() -> None:
    owner, platform = owner_platform()
    other = Owner(seed=b"another-platform-seed-000000")
    foreign = sign_launch_enclave(other.root, signer("owner-le"))
    unchanged(owner, lambda: platform.set_launch_enclave(foreign), VerificationFailed)


def test_tokens_carry_distinct_random_keyids() -> None:
    _, platform = owner_platform()
    first = minted_token(platform)
    second = minted_token(platform)
    assert first[256:288] != second[256:288]
    assert first[4:48] == bytes(44)  # reserved bytes zero


# -- the launch log -------------------------------------------------------------------------


def logged_platform() -> tuple[Owner, Platform, list[str]]:
    owner, platform = owner_platform()
    image, sig = author_enclave(MemoryProgram)
    platform.run(image, sig)
    platform.run(image, sig)
    other_image, other_sig = author_enclave(KeyProbe, isvprodid=2)
    with pytest.raises(PolicyDenied):
        platform.run(other_image, other_sig)
    platform.run(image, sig)
    assert platform.le_signer is not None
    keys = owner.store.keys(log_prefix(platform.le_signer))
    assert len(keys) == 8  # four attempts, each with its outcome
    assert platform.verify_log() == 8
    return owner, platform, keys


def test_log_tail_deletion_detected() -> None:
    owner, _platform, keys = logged_platform()
    owner.store.commit({keys[-1]: None})
    with pytest.raises(LogTampered) as err:
        owner.platform().verify_log()
    assert err.value.index == 7


def test_log_reorder_detected() -> None:
    owner, _platform, keys = logged_platform()
    a, b = owner.store.get(keys[1]), owner.store.get(keys[2])
    owner.store.commit({keys[1]: b, keys[2]: a})
    with pytest.raises(LogTampered) as err:
        owner.platform().verify_log()
    assert err.value.index == 1


def test_log_edit_detected() -> None:
    owner, _platform, keys = logged_platform()
    blob = owner.store.get(keys[4])
    assert blob is not None and b'"decision":"denied"' in blob
    owner.store.commit({keys[4]: blob.replace(b'"decision":"denied"', b'"decision":"allowed"')})
    with pytest.raises(LogTampered) as err:
        owner.platform().verify_log()
    assert err.value.index == 4


def test_log_insertion_detected() -> None:
    owner, _platform, keys = logged_platform()
    blobs = [owner.store.get(k) for k in keys]
    prefix = keys[0].rsplit("/", 1)[0]
    # Shift records 1..3 up by one and insert a copy of record 0 at position 1.
    shifted = [blobs[0], blobs[0], *blobs[1:]]
    owner.store.commit({f"{prefix}/{i:016d}": blob for i, blob in enumerate(shifted)})
    with pytest.raises(LogTampered) as err:
        owner.platform().verify_log()
    assert err.value.index == 1


def test_log_full_recomputation_detected() -> None:
    import hashlib
    import hmac
    import json

    owner, _platform, keys = logged_platform()
    prev = bytes(32)
    wrong_key = b"\x42" * 16
    for index, key in enumerate(keys):
        blob = owner.store.get(key)
        assert blob is not None
        fields = json.loads(blob[32:])
        fields["decision"] = "allowed"
        fields["prev"] = prev.hex()
        body = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        owner.store.commit({key: hmac.new(wrong_key, body, hashlib.sha256).digest() + body})
        prev = hashlib.sha256(body).digest()
        del index
    with pytest.raises(LogTampered) as err:
        owner.platform().verify_log()
    assert err.value.index == 0


def test_init_bypassing_run_is_logged() -> None:
    from sgxlaunch.driver import load

    _owner, platform = owner_platform()
    image, sig = author_enclave(KeyProbe)
    with pytest.raises(LoadFailed):
        load(platform.new_process(), image, sig)  # straight to the driver, mainline INIT
    records = platform.log_records()
    attempt, outcome = records[-2], records[-1]
    assert attempt["kind"] == "attempt"
    assert attempt["decision"] == "not requested through sgxlaunch run"
    assert attempt["mrenclave"] == sig.enclavehash.hex()
    assert outcome["kind"] == "outcome" and outcome["attempt"] == attempt["seq"]
    assert outcome["errno"] == "EPERM"
    assert platform.verify_log() == len(records)


def test_unsigned_mode_document_written_into_the_store_refused() -> None:
    """Someone with write access to the state writes a mode document signed by one key."""
    owner, _ = owner_platform()
    forged = owner.mode("permissive", version=9, signers=1)
    owner.store.commit({"owner/mode": forged})
    with pytest.raises(VerificationFailed, match="not signed by the current owner root"):
        owner.platform()
    blocked = owner.platform(maintenance=True)
    image, sig = author_enclave(MemoryProgram)
    with pytest.raises(SgxlaunchError, match="nothing can be launched"):
        blocked.run(image, sig)


def test_root_rotation_then_resigned_launch_enclave_and_mode_document() -> None:
    """Rotating the owner root (k old + k new signatures) stops the platform until the owner
    re-signs its launch enclave and mode document; the sealed state carries over."""
    from datetime import timedelta

    from sgxlaunch.policy import (
        ROOT_PAYLOAD_TYPE,
        OwnerRoot,
        PrivateKeySigner,
        install_root,
        sign_payload,
    )
    from sgxlaunch.policy.control import MODE_PAYLOAD_TYPE, ModeDocument
    from sgxlaunch.sigstruct import mrsigner_of

    owner, _platform = owner_platform()
    from cryptography.hazmat.primitives.asymmetric import ed25519

    new_keys = [PrivateKeySigner(ed25519.Ed25519PrivateKey.generate()) for _ in range(3)]
    root = OwnerRoot.create(
        version=2,
        expires=owner.clock.now + timedelta(days=300),
        threshold=2,
        keys=[k.public_key for k in new_keys],
    )
    rotated = sign_payload(ROOT_PAYLOAD_TYPE, root.to_payload(), [*owner.keys[:2], *new_keys[:2]])
    install_root(owner.store, rotated.to_bytes(), owner.clock.now)
    with pytest.raises(VerificationFailed):
        owner.platform()  # the mode document is signed by the old keys only
    maintenance = owner.platform(maintenance=True)
    maintenance.set_launch_enclave(sign_launch_enclave(rotated.to_bytes(), signer("owner-le")))
    doc = ModeDocument.create(
        version=2,
        expires=owner.clock.now + timedelta(days=7),
        mode="owner",
        le_mrsigner=mrsigner_of(signer("owner-le").public_key()),
    )
    # The re-signed launch enclave starts at the next open and commits the new document.
    owner.platform(maintenance=True).set_mode(
        sign_payload(MODE_PAYLOAD_TYPE, doc.to_payload(), new_keys[1:]).to_bytes()
    )
    # The policy was signed by the old keys: re-sign it with the new ones (version 2).
    from sgxlaunch.policy import POLICY_PAYLOAD_TYPE
    from sgxlaunch.policy._json import dumps_canonical

    _, sig = author_enclave(MemoryProgram)
    payload = dumps_canonical(
        {
            "spec_version": "1",
            "version": 2,
            "expires": "2027-06-01T00:00:00Z",
            "allow": [allow_rule(sig)],
            "deny": [],
        }
    )
    reopened = owner.platform()
    reopened.install_policy(sign_payload(POLICY_PAYLOAD_TYPE, payload, new_keys[:2]).to_bytes())
    image, sig = author_enclave(MemoryProgram)
    assert owner.platform().run(image, sig).decision == "allowed"
    assert owner.platform().verify_log() >= 1
