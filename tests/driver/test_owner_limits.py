"""The KEYID nonce that carries the owner's per-enclave limits (driver/owner.py)."""

from __future__ import annotations

import itertools
import os

import pytest

from sgxlaunch.driver.encl import Enclave
from sgxlaunch.driver.owner import (
    LIMITS_TAG,
    MAINLINE_LIMITS,
    STRICT_LIMITS,
    DynamicMemory,
    OwnerLimits,
    keyid_limits,
    limits_nonce,
    token_keyid,
)
from sgxlaunch.errors import UsageError, VerificationFailed


@pytest.mark.parametrize(
    ("level", "unmeasured", "rwx"),
    list(itertools.product(DynamicMemory, (False, True), (False, True))),
)
def test_every_limit_combination_round_trips_through_a_bound_keyid(
    level: DynamicMemory, unmeasured: bool, rwx: bool
) -> None:
    limits = OwnerLimits(level, unmeasured_exec=unmeasured, rwx_pages=rwx)
    nonce = limits_nonce(limits, os.urandom(13))
    keyid = token_keyid(nonce, bytes(1808), bytes(32))
    assert keyid[:16] == nonce
    assert keyid_limits(keyid) == limits


def test_nonces_stay_distinct_for_the_same_limits() -> None:
    nonces = {limits_nonce(STRICT_LIMITS, os.urandom(13)) for _ in range(64)}
    assert len(nonces) == 64


def test_a_keyid_without_the_tag_carries_no_limits() -> None:
    keyid = token_keyid(bytes(1) + os.urandom(15), bytes(1808), bytes(32))
    with pytest.raises(VerificationFailed, match="carries no owner limits"):
        keyid_limits(keyid)


@pytest.mark.parametrize(("level", "flags"), [(4, 0), (255, 0), (0, 0x04), (3, 0x80)])
def test_unknown_levels_and_flags_are_refused(level: int, flags: int) -> None:
    keyid = bytes((LIMITS_TAG, level, flags)) + bytes(29)
    with pytest.raises(VerificationFailed, match="unknown owner limits"):
        keyid_limits(keyid)


def test_the_nonce_needs_thirteen_random_bytes() -> None:
    with pytest.raises(UsageError):
        limits_nonce(MAINLINE_LIMITS, bytes(12))


def test_level_labels_are_the_policy_spellings() -> None:
    assert [level.label for level in DynamicMemory] == ["none", "data", "attested-code", "code"]
    for level in DynamicMemory:
        assert DynamicMemory.from_label(level.label) is level
    with pytest.raises(UsageError, match="not one of"):
        DynamicMemory.from_label("rwx")


def test_a_new_enclave_starts_with_mainline_limits_and_no_grants() -> None:
    enclave = Enclave(eid=1)
    assert enclave.owner_limits == MAINLINE_LIMITS
    assert MAINLINE_LIMITS.dynamic_memory is DynamicMemory.CODE
    assert enclave.exec_grants == {}
    assert enclave.configid == bytes(64)
