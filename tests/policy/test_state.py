"""The trusted-state machine over the in-memory and SQLite stores."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from sgxlaunch.errors import Expired, MalformedInput, Rollback, ThresholdNotMet, UsageError
from sgxlaunch.policy import (
    POLICY_KEY,
    ROOT_KEY,
    MemoryStore,
    Store,
    TrustedState,
    install_policy,
    install_root,
    load_state,
)
from sgxlaunch.store import SqliteStore, ensure_home, open_store, resolve_home
from tests.support.clock import NOW
from tests.support.policy import Owner, ed25519_signer, identity, policy_payload, root_envelope


def test_empty_store_has_no_state() -> None:
    assert TrustedState.load(MemoryStore()) is None
    with pytest.raises(UsageError, match="no owner root"):
        load_state(MemoryStore())
    with pytest.raises(UsageError):
        install_policy(MemoryStore(), b"{}", NOW)


def test_bootstrap_requires_self_signature_threshold() -> None:
    keys = [ed25519_signer() for _ in range(3)]
    store = MemoryStore()
    with pytest.raises(ThresholdNotMet):
        install_root(store, root_envelope(keys=keys, signers=keys[:1], threshold=2), NOW)
    assert store.snapshot() == {}
    state, update = install_root(
        store, root_envelope(keys=keys, signers=keys[:2], threshold=2), NOW
    )
    assert set(update.changes) == {ROOT_KEY}
    assert state.root.threshold == 2


def test_update_is_what_gets_persisted_and_reload_gives_the_same_state() -> None:
    owner = Owner()
    state = load_state(owner.store)
    new_state, update = state.install_policy(owner.sign_policy(policy_payload(version=3)), NOW)
    assert set(update.changes) == {POLICY_KEY}
    assert owner.store.get(POLICY_KEY) is None  # the core did not write anything itself
    update.apply(owner.store)
    reloaded = load_state(owner.store)
    assert reloaded.policy == new_state.policy
    assert reloaded.policy_in_force
    assert reloaded.evaluate(identity(), NOW) == new_state.evaluate(identity(), NOW)


def test_evaluate_without_policy_is_a_usage_error() -> None:
    owner = Owner()
    with pytest.raises(UsageError, match="no launch policy"):
        load_state(owner.store).evaluate(identity(), NOW)


def test_policy_not_signed_by_current_root_allows_nothing() -> None:
    owner = Owner()
    owner.install(policy_payload())
    new_keys = [ed25519_signer() for _ in range(3)]
    install_root(
        owner.store,
        owner.root(version=2, keys=new_keys, signers=[*owner.keys[:2], *new_keys[:2]]),
        NOW,
    )
    decision = load_state(owner.store).evaluate(identity(), NOW)
    assert not decision.allowed
    assert decision.reasons[0].field == "policy"


def test_rotation_keeping_keys_keeps_policy_in_force() -> None:
    owner = Owner()
    owner.install(policy_payload())
    extra = ed25519_signer()
    rotation = owner.root(version=2, keys=[*owner.keys, extra], signers=owner.keys[:2])
    state, _ = install_root(owner.store, rotation, NOW)
    assert state.policy_in_force
    assert state.evaluate(identity(), NOW).allowed


def test_expired_root_blocks_policies_but_can_be_rotated() -> None:
    owner = Owner()
    later = NOW.replace(year=2028)
    before = owner.store.snapshot()
    with pytest.raises(Expired, match="owner root"):
        install_policy(
            owner.store,
            owner.sign_policy(policy_payload(expires="2029-01-01T00:00:00Z")),
            later,
        )
    assert owner.store.snapshot() == before
    rotation = owner.root(version=2, expires=later.replace(year=2029))
    install_root(owner.store, rotation, later)
    install_policy(
        owner.store, owner.sign_policy(policy_payload(expires="2029-01-01T00:00:00Z")), later
    )


def test_damaged_store_is_reported_not_trusted() -> None:
    owner = Owner()
    owner.store.commit({ROOT_KEY: b"{garbage"})
    with pytest.raises(MalformedInput, match="trusted store is damaged"):
        load_state(owner.store)


def test_sqlite_store_commits_atomically(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = SqliteStore(path)
    assert isinstance(store, Store)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    store.commit({"a": b"1", "b": b"2"})
    with pytest.raises(UsageError):
        store.commit({"a": b"changed", "": b"bad key"})
    assert store.get("a") == b"1"

    class Exploding(dict[str, bytes | None]):
        def items(self):  # type: ignore[no-untyped-def]
            yield ("a", b"changed")
            raise RuntimeError("crash in the middle of a commit")

    with pytest.raises(RuntimeError):
        store.commit(Exploding({"a": b"x"}))
    assert store.get("a") == b"1"
    store.commit({"a": None, "c": b"3"})
    assert store.keys() == ["b", "c"]
    assert store.keys("c") == ["c"]
    store.close()
    with SqliteStore(path) as again:
        assert again.get("b") == b"2"
        assert again.get("a") is None


def test_state_machine_over_sqlite_survives_reopen(tmp_path: Path) -> None:
    owner = Owner()
    with SqliteStore(tmp_path / "s.db") as store:
        install_root(store, owner.root(), NOW)
        install_policy(store, owner.sign_policy(policy_payload(version=2)), NOW)
        before = {k: store.get(k) for k in store.keys("")}
        with pytest.raises(Rollback):
            install_policy(store, owner.sign_policy(policy_payload(version=1)), NOW)
        assert {k: store.get(k) for k in store.keys("")} == before
    with SqliteStore(tmp_path / "s.db") as store:
        state = load_state(store)
        assert state.policy is not None and state.policy.version == 2
        assert state.evaluate(identity(), NOW).allowed


def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(MalformedInput):
        SqliteStore(path)


def test_home_resolution_and_creation(tmp_path: Path) -> None:
    assert resolve_home(str(tmp_path / "x"), {}) == tmp_path / "x"
    assert resolve_home(None, {"SGXLAUNCH_HOME": str(tmp_path / "y")}) == tmp_path / "y"
    assert resolve_home(None, {}).name == "sgxlaunch"
    home = ensure_home(tmp_path / "h")
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    with pytest.raises(UsageError):
        open_store(tmp_path / "empty", create=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError):
        ensure_home(tmp_path / "file")


def test_policy_digest_is_the_sha256_of_the_signed_payload() -> None:
    owner = Owner()
    payload = policy_payload(version=3)
    state = owner.install(payload)
    assert state.policy_digest == hashlib.sha256(payload).digest()
    assert load_state(owner.store).policy_digest == state.policy_digest
    assert state.describe()["policy"]["digest"] == hashlib.sha256(payload).hexdigest()
