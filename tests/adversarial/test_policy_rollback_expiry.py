"""Checklist cases 18, 19, 20: rollback, expiry (exact boundary, non-UTC), expired floor.

Every refused document leaves the store byte-for-byte unchanged.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from sgxlaunch.errors import Expired, MalformedInput, Rollback, UsageError
from sgxlaunch.policy import POLICY_KEY, ROOT_KEY, install_policy, install_root, load_state
from tests.support.clock import NOW
from tests.support.policy import Owner, identity, policy_payload


def test_adv18_policy_rollback_lower_version_rejected() -> None:
    owner = Owner()
    owner.install(policy_payload(version=5))
    before = owner.store.snapshot()
    with pytest.raises(Rollback) as info:
        install_policy(owner.store, owner.sign_policy(policy_payload(version=4)), NOW)
    assert "below" in info.value.message
    assert info.value.expected == "version > 5"
    assert owner.store.snapshot() == before
    assert load_state(owner.store).policy is not None
    assert load_state(owner.store).policy.version == 5  # type: ignore[union-attr]


def test_adv18_policy_equal_version_different_bytes_rejected() -> None:
    owner = Owner()
    owner.install(policy_payload(version=5))
    before = owner.store.snapshot()
    changed = policy_payload(version=5, allow=[{"id": "other", "mrsigner": "ee" * 32}])
    with pytest.raises(Rollback) as info:
        install_policy(owner.store, owner.sign_policy(changed), NOW)
    assert "equal" in info.value.message
    assert owner.store.snapshot() == before


def test_adv18_policy_equal_version_same_bytes_is_a_noop() -> None:
    owner = Owner()
    payload = policy_payload(version=5)
    owner.install(payload)
    before = owner.store.snapshot()
    _, update = install_policy(owner.store, owner.sign_policy(payload), NOW)
    assert dict(update.changes) == {}
    assert owner.store.snapshot() == before


def test_adv18_root_rollback_lower_and_equal_version_rejected() -> None:
    owner = Owner()
    install_root(owner.store, owner.root(version=3), NOW)
    before = owner.store.snapshot()
    for version in (2, 3):
        older = owner.root(version=version, expires=NOW + timedelta(days=10))
        with pytest.raises(Rollback):
            install_root(owner.store, older, NOW)
        assert owner.store.snapshot() == before


def test_adv19_policy_expired_rejected() -> None:
    owner = Owner()
    before = owner.store.snapshot()
    with pytest.raises(Expired):
        install_policy(
            owner.store, owner.sign_policy(policy_payload(expires="2026-11-01T00:00:00Z")), NOW
        )
    assert owner.store.snapshot() == before


def test_adv19_policy_expiring_exactly_now_is_expired() -> None:
    owner = Owner()
    before = owner.store.snapshot()
    payload = policy_payload(expires="2026-11-26T12:00:00Z")  # == NOW
    with pytest.raises(Expired):
        install_policy(owner.store, owner.sign_policy(payload), NOW)
    assert owner.store.snapshot() == before
    # One second earlier it was still acceptable.
    install_policy(owner.store, owner.sign_policy(payload), NOW - timedelta(seconds=1))
    assert owner.store.get(POLICY_KEY) is not None


def test_adv19_installed_policy_allows_nothing_from_its_expiry_instant() -> None:
    owner = Owner()
    state = owner.install(policy_payload(expires="2026-11-26T12:00:01Z"))
    assert state.evaluate(identity(), NOW).allowed
    expiry = NOW + timedelta(seconds=1)
    decision = state.evaluate(identity(), expiry)
    assert not decision.allowed
    assert decision.reasons[0].field == "expires"


def test_adv19_root_expiring_exactly_now_is_expired() -> None:
    owner = Owner()
    before = owner.store.snapshot()
    with pytest.raises(Expired):
        install_root(owner.store, owner.root(version=2, expires=NOW), NOW)
    assert owner.store.snapshot() == before


@pytest.mark.parametrize(
    "expires",
    [
        "2027-01-01T00:00:00",  # naive
        "2027-01-01T00:00:00+00:00",  # offset instead of Z
        "2027-01-01T01:00:00+01:00",
        "2027-01-01T00:00:00.5Z",  # fractional seconds
        "2027-01-01 00:00:00Z",
        "2027-02-30T00:00:00Z",  # not a date
        "２０２７-01-01T00:00:00Z",  # non-ASCII digits
    ],
)
def test_adv19_non_utc_or_naive_expiry_rejected(expires: str) -> None:
    owner = Owner()
    before = owner.store.snapshot()
    with pytest.raises(MalformedInput) as info:
        install_policy(owner.store, owner.sign_policy(policy_payload(expires=expires)), NOW)
    assert info.value.field == "policy.expires"
    assert owner.store.snapshot() == before


def test_adv19_naive_now_refused() -> None:
    owner = Owner()
    before = owner.store.snapshot()
    with pytest.raises(UsageError):
        install_policy(owner.store, owner.sign_policy(policy_payload()), datetime(2026, 11, 26))
    assert owner.store.snapshot() == before


def test_adv19_non_utc_now_is_compared_as_an_instant() -> None:
    owner = Owner()
    state = owner.install(policy_payload(expires="2026-11-26T13:00:00Z"))
    plus_two = timezone(timedelta(hours=2))
    # 14:30 at +02:00 is 12:30Z: still valid; 15:00 at +02:00 is 13:00Z: expired.
    assert state.evaluate(identity(), datetime(2026, 11, 26, 14, 30, tzinfo=plus_two)).allowed
    assert not state.evaluate(identity(), datetime(2026, 11, 26, 15, 0, tzinfo=plus_two)).allowed


def test_adv20_expired_stored_policy_is_still_the_rollback_floor() -> None:
    owner = Owner()
    owner.install(policy_payload(version=9, expires="2026-12-01T00:00:00Z"))
    after_expiry = datetime(2026, 12, 15, tzinfo=NOW.tzinfo)
    state = load_state(owner.store)
    assert not state.evaluate(identity(), after_expiry).allowed  # expired: allows nothing
    before = owner.store.snapshot()
    for version in (1, 8, 9):
        older = policy_payload(version=version, expires="2027-06-01T00:00:00Z")
        with pytest.raises(Rollback):
            install_policy(owner.store, owner.sign_policy(older), after_expiry)
        assert owner.store.snapshot() == before
    newer = policy_payload(version=10, expires="2027-06-01T00:00:00Z")
    install_policy(owner.store, owner.sign_policy(newer), after_expiry)
    assert load_state(owner.store).policy.version == 10  # type: ignore[union-attr]


def test_adv20_rollback_floor_survives_reload_from_store() -> None:
    owner = Owner()
    owner.install(policy_payload(version=3))
    reloaded = load_state(owner.store)  # a fresh process
    with pytest.raises(Rollback):
        reloaded.install_policy(owner.sign_policy(policy_payload(version=2)), NOW)
    assert owner.store.get(ROOT_KEY) is not None
