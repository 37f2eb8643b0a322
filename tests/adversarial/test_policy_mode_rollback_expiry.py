"""Checklist cases 18, 19, 20 for platform-mode documents: rollback, expiry, the expired floor.

Every refused document leaves the store byte-for-byte unchanged.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from sgxlaunch.errors import Expired, MalformedInput, Rollback, UsageError
from sgxlaunch.policy import MODE_KEY, ModeDocument, install_mode, install_root, load_state
from tests.support.clock import NOW
from tests.support.policy import OTHER_LE_SIGNER, Owner, ed25519_signer, mode_payload


def _refused(owner: Owner, data: bytes, error: type[Exception], now: datetime = NOW) -> Exception:
    before = owner.store.snapshot()
    with pytest.raises(error) as info:
        install_mode(owner.store, data, now)
    assert owner.store.snapshot() == before
    return info.value


def test_adv18_mode_rollback_to_lower_version_rejected() -> None:
    # The old, validly signed "permissive" document replayed after the owner moved on.
    owner = Owner()
    old = owner.sign_mode(mode_payload(version=1, mode="permissive"))
    install_mode(owner.store, old, NOW)
    owner.install_mode(mode_payload(version=2))
    error = _refused(owner, old, Rollback)
    assert isinstance(error, Rollback)
    assert "below" in error.message and error.expected == "version > 2"
    assert load_state(owner.store).mode.mode == "owner"  # type: ignore[union-attr]


def test_adv18_mode_equal_version_different_bytes_rejected() -> None:
    owner = Owner()
    owner.install_mode(mode_payload(version=4))
    for other in (
        mode_payload(version=4, mode="permissive"),
        mode_payload(version=4, le_mrsigner=OTHER_LE_SIGNER.hex()),
        mode_payload(version=4, expires="2027-01-02T00:00:00Z"),
    ):
        error = _refused(owner, owner.sign_mode(other), Rollback)
        assert "equal" in str(error)


def test_adv18_mode_identical_bytes_resent_is_a_noop() -> None:
    owner = Owner()
    payload = mode_payload(version=4)
    owner.install_mode(payload)
    before = owner.store.snapshot()
    _, update = install_mode(owner.store, owner.sign_mode(payload), NOW)
    assert dict(update.changes) == {}
    assert owner.store.snapshot() == before


def test_adv19_expired_mode_document_rejected() -> None:
    owner = Owner()
    data = owner.sign_mode(mode_payload(mode="permissive", expires="2026-11-26T11:59:59Z"))
    error = _refused(owner, data, Expired)
    assert "platform-mode document expired" in str(error)


def test_adv19_mode_expiring_exactly_now_rejected_one_second_before_accepted() -> None:
    owner = Owner()
    expires = NOW + timedelta(days=1)
    data = owner.sign_mode(mode_payload(mode="permissive", expires="2026-11-27T12:00:00Z"))
    _refused(owner, data, Expired, now=expires)
    state, _ = install_mode(owner.store, data, expires - timedelta(seconds=1))
    assert state.mode is not None and state.mode.mode == "permissive"


def test_adv19_non_utc_expiry_and_naive_now_rejected() -> None:
    owner = Owner()
    offset = mode_payload(expires="2027-01-01T00:00:00Z").replace(
        b"2027-01-01T00:00:00Z", b"2027-01-01T00:00:00+01:00"
    )
    _refused(owner, owner.sign_mode(offset), MalformedInput)
    data = owner.sign_mode(mode_payload())
    _refused(owner, data, UsageError, now=datetime(2026, 11, 26, 12))  # naive
    # An aware non-UTC now is the same instant and works.
    state, _ = install_mode(owner.store, data, NOW.astimezone(timezone(timedelta(hours=-5))))
    assert state.mode_in_force


def test_adv20_expired_stored_mode_is_still_the_rollback_floor() -> None:
    owner = Owner()
    owner.install_mode(mode_payload(version=7, expires="2026-11-27T00:00:00Z"))
    later = datetime(2026, 12, 30, tzinfo=UTC)
    state = load_state(owner.store)
    assert state.mode is not None and state.mode.is_expired(later)
    for version in (6, 7):
        older = owner.sign_mode(
            mode_payload(version=version, mode="permissive", expires="2027-06-01T00:00:00Z")
        )
        _refused(owner, older, Rollback, now=later)
    state, _ = install_mode(
        owner.store,
        owner.sign_mode(mode_payload(version=8, mode="permissive", expires="2027-06-01T00:00:00Z")),
        later,
    )
    assert state.mode == ModeDocument.from_payload(
        mode_payload(version=8, mode="permissive", expires="2027-06-01T00:00:00Z")
    )


def test_adv20_expired_installed_mode_stays_in_force_never_falls_back_to_permissive() -> None:
    owner = Owner()
    owner.install_mode(mode_payload(version=1, expires="2026-11-27T00:00:00Z"))
    state = load_state(owner.store)
    assert state.mode is not None and state.mode.mode == "owner" and state.mode_in_force
    assert owner.store.get(MODE_KEY) is not None


def test_adv20_rotation_floor_holds_for_a_mode_no_longer_in_force() -> None:
    owner = Owner()
    owner.install_mode(mode_payload(version=5))
    new_keys = [ed25519_signer() for _ in range(3)]
    install_root(
        owner.store,
        owner.root(version=2, keys=new_keys, signers=[*owner.keys[:2], *new_keys[:2]]),
        NOW,
    )
    owner.keys = new_keys
    error = _refused(owner, owner.sign_mode(mode_payload(version=4, mode="permissive")), Rollback)
    assert "below" in str(error)
