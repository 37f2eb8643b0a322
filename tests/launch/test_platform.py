"""The Platform's ordinary behaviour, and that every refused owner operation changes nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sgxlaunch.arch.constants import AttributeFlag
from sgxlaunch.errors import (
    Expired,
    MalformedInput,
    PolicyDenied,
    SgxlaunchError,
    UsageError,
    VerificationFailed,
)
from sgxlaunch.launch.enclave import launch_enclave_image, root_digest_of, sign_launch_enclave
from sgxlaunch.launch.platform import Platform, PlatformConfig, platform_id_of
from sgxlaunch.policy import MemoryStore
from tests.support.clock import NOW, Clock
from tests.support.cpu import KeyProbe, MemoryProgram
from tests.support.keys import signer
from tests.support.platform import Owner, allow_rule, author_enclave


def test_bare_permissive_platform_launches_and_keeps_no_log() -> None:
    store = MemoryStore()
    platform = Platform.create(store, seed=b"bare-platform-seed-0000", clock=Clock())
    image, sig = author_enclave(MemoryProgram)
    result = platform.run(image, sig)
    assert result.enclave is not None
    assert result.decision == "permissive"
    assert platform.cpu.lepubkeyhash == sig.mrsigner  # mainline rewrote the MSRs
    status = platform.status()
    assert status["launch_enclave"] is None
    assert status["log_records"] == 0
    assert status["owner_root"] is None


def test_same_seed_same_cpu_other_seed_other_cpu() -> None:
    a = Platform.create(MemoryStore(), seed=b"seed-one-0000000000", clock=Clock())
    b = Platform.create(MemoryStore(), seed=b"seed-one-0000000000", clock=Clock())
    c = Platform.create(MemoryStore(), seed=b"seed-two-0000000000", clock=Clock())
    assert a.platform_id == b.platform_id == platform_id_of(b"seed-one-0000000000")
    assert a.platform_id != c.platform_id


def test_create_refuses_a_legacy_home_and_short_seeds() -> None:
    legacy = MemoryStore({"platform/seed": b"platform-seed-0000000"})
    with pytest.raises(UsageError, match="machine migrate"):
        Platform.create(legacy, seed=b"platform-seed-1111111", clock=Clock())
    with pytest.raises(UsageError, match="16 bytes"):
        Platform.create(MemoryStore(), seed=b"short", clock=Clock())


def test_launch_enclave_runs_without_einittoken_key_in_permissive_mode() -> None:
    owner = Owner()
    sig = owner.set_up_launch_enclave()
    platform = owner.platform()
    assert platform.le is not None
    assert platform.mode == "permissive"
    le_secs = next(
        addr for addr, encl in platform.driver.enclaves.items() if encl.mrsigner == sig.mrsigner
    )
    info = platform.cpu.secs_info(le_secs)
    assert info["initialized"]
    assert not info["attributes_flags"] & AttributeFlag.EINITTOKEN_KEY
    assert sig.attributes.flags & AttributeFlag.EINITTOKEN_KEY
    assert not sig.attributemask.flags & AttributeFlag.EINITTOKEN_KEY


def test_launch_enclave_image_binds_the_owner_root() -> None:
    owner = Owner()
    other = Owner(seed=b"other-platform-seed-00000000")
    mine = launch_enclave_image(root_digest_of(owner.root)).mrenclave()
    theirs = launch_enclave_image(root_digest_of(other.root)).mrenclave()
    assert mine != theirs
    assert sign_launch_enclave(owner.root, signer("owner-le")).enclavehash == mine


def test_owner_mode_without_policy_denies_everything() -> None:
    owner = Owner()
    owner.set_up_launch_enclave()
    owner.platform().set_mode(owner.mode("owner", version=1))
    image, sig = author_enclave(MemoryProgram)
    with pytest.raises(PolicyDenied) as err:
        owner.platform().run(image, sig)
    assert any("policy" in line for line in err.value.detail)


def test_policy_and_mode_need_an_owner_root_and_a_launch_enclave() -> None:
    store = MemoryStore()
    platform = Platform.create(store, seed=b"bare-platform-seed-0000", clock=Clock())
    with pytest.raises(UsageError):
        platform.install_policy(b"{}")
    with pytest.raises(UsageError):
        platform.set_mode(b"{}")
    owner = Owner()
    _, sig = author_enclave(MemoryProgram)
    with pytest.raises(UsageError, match="launch enclave"):
        owner.platform().install_policy(owner.policy(version=1, allow=[allow_rule(sig)]))


def _owner_in_owner_mode() -> Owner:
    owner = Owner()
    owner.set_up_launch_enclave()
    platform = owner.platform()
    _, sig = author_enclave(MemoryProgram)
    platform.install_policy(owner.policy(version=1, allow=[allow_rule(sig)]))
    platform.set_mode(owner.mode("owner", version=1))
    return owner


@pytest.mark.parametrize(
    ("what", "error"),
    [
        ("malformed policy", MalformedInput),
        ("expired policy", Expired),
        ("policy of another payload type", SgxlaunchError),
        ("mode for another platform", VerificationFailed),
        ("mode of an equal version, other bytes", VerificationFailed),
        ("launch enclave with a bad signature", VerificationFailed),
    ],
)
def test_every_refused_owner_operation_leaves_the_store_unchanged(
    what: str, error: type[BaseException]
) -> None:
    owner = _owner_in_owner_mode()
    platform = owner.platform()
    _, sig = author_enclave(KeyProbe, isvprodid=2)
    from sgxlaunch.policy import sign_payload
    from sgxlaunch.policy.control import MODE_PAYLOAD_TYPE, ModeDocument

    def action() -> object:
        if what == "malformed policy":
            return platform.install_policy(b"not an envelope")
        if what == "expired policy":
            data = owner.policy(version=2, allow=[allow_rule(sig)], expires="2026-11-26T11:00:00Z")
            return platform.install_policy(data)
        if what == "policy of another payload type":
            return platform.install_policy(owner.mode("owner", version=5))
        if what == "mode for another platform":
            doc = ModeDocument.create(
                version=3,
                expires=NOW + timedelta(days=1),
                mode="permissive",
                platform_id=bytes(range(32)),
            )
            env = sign_payload(MODE_PAYLOAD_TYPE, doc.to_payload(), owner.keys[:2]).to_bytes()
            return platform.set_mode(env)
        if what == "mode of an equal version, other bytes":
            return platform.set_mode(owner.mode("permissive", version=1))
        le = sign_launch_enclave(owner.root, signer("owner-le"))
        platform.set_launch_enclave(le.replace(isvsvn=le.isvsvn + 1))
        return None

    before = owner.store.snapshot()
    with pytest.raises(error):
        action()
    assert owner.store.snapshot() == before
    assert owner.platform().mode == "owner"


def test_back_to_permissive_with_the_threshold() -> None:
    owner = _owner_in_owner_mode()
    owner.platform().set_mode(owner.mode("permissive", version=2))
    platform = owner.platform()
    assert platform.mode == "permissive"
    image, sig = author_enclave(KeyProbe, isvprodid=2)  # not in the policy: permissive allows it
    assert platform.run(image, sig).decision == "permissive"
    assert platform.verify_log() == len(platform.log_records())


def test_platform_config_round_trips_and_locked_hash_needs_a_hash() -> None:
    config = PlatformConfig(
        epc_size=2 << 20, firmware="locked-hash", firmware_lepubkeyhash="ab" * 32
    )
    assert PlatformConfig.from_json(config.to_json()) == config
    with pytest.raises(UsageError):
        PlatformConfig(firmware="locked-hash").cpu_config()
    with pytest.raises(MalformedInput):
        PlatformConfig.from_json(b"[]")


def test_a_token_on_a_permissive_platform_is_a_usage_error() -> None:
    platform = Platform.create(MemoryStore(), seed=b"bare-platform-seed-0000", clock=Clock())
    image, sig = author_enclave(MemoryProgram)
    with pytest.raises(UsageError, match="owner mode"):
        platform.run(image, sig, token=bytes(304))
    assert platform.status()["log_errors"] == []
