"""The launch policy and owner root documents: parsing, round trips, truncations."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from sgxlaunch.errors import MalformedInput, UsageError
from sgxlaunch.policy import Envelope, LaunchPolicy, OwnerRoot
from sgxlaunch.policy._json import dumps_canonical
from tests.support.clock import LATER, NOW
from tests.support.policy import SIGNER_A, ed25519_signer, policy_doc, root_envelope

FULL_RULE = {
    "id": "full.rule:1-a_b",
    "mrsigner": "a1" * 32,
    "mrenclave": "c3" * 32,
    "isvprodid": 65535,
    "isvsvn": {"min": 0, "max": 65535},
    "isvfamilyid": "01" * 16,
    "isvextprodid": "02" * 16,
    "debug": True,
    "provisionkey": True,
    "kss": True,
    "xfrm_mask": (1 << 64) - 1,
    "miscselect_mask": (1 << 32) - 1,
}


def test_policy_round_trips_through_its_canonical_payload() -> None:
    deny_rule = {
        k: v
        for k, v in FULL_RULE.items()
        if k not in {"debug", "provisionkey", "kss", "xfrm_mask", "miscselect_mask"}
    }
    deny_rule["id"] = "deny-1"
    payload = dumps_canonical(policy_doc(allow=[FULL_RULE], deny=[deny_rule]))
    policy = LaunchPolicy.from_payload(payload)
    assert policy.to_payload() == payload
    rule = policy.allow[0]
    assert rule.mrsigner == SIGNER_A
    assert rule.isvsvn == (0, 65535)
    assert rule.debug and rule.provisionkey and rule.kss
    assert policy.deny[0].effect == "deny"
    assert json.loads(payload)["allow"][0] == rule.to_doc(policy.spec_version)


def test_policy_every_truncation_and_trailing_bytes_refused() -> None:
    payload = dumps_canonical(policy_doc(allow=[FULL_RULE]))
    for length in range(len(payload) - 1):
        with pytest.raises(MalformedInput):
            LaunchPolicy.from_payload(payload[:length])
    for trailer in (b"x", b"{}", b"]"):
        with pytest.raises(MalformedInput):
            LaunchPolicy.from_payload(payload + trailer)


@pytest.mark.parametrize(
    ("change", "field_part"),
    [
        ({"isvprodid": 65536}, "isvprodid"),
        ({"isvprodid": -1}, "isvprodid"),
        ({"isvsvn": {"min": 5, "max": 4}}, "isvsvn"),
        ({"isvsvn": {"min": 1}}, "isvsvn.max"),
        ({"isvsvn": [1, 2]}, "isvsvn"),
        ({"isvfamilyid": "01" * 15}, "isvfamilyid"),
        ({"debug": 1}, "debug"),
        ({"xfrm_mask": 1 << 64}, "xfrm_mask"),
        ({"miscselect_mask": 1 << 32}, "miscselect_mask"),
        ({"id": "has space"}, "id"),
        ({"id": ""}, "id"),
        ({"id": "x" * 129}, "id"),
        ({"id": 5}, "id"),
    ],
)
def test_rule_field_errors_name_the_field(change: dict[str, object], field_part: str) -> None:
    rule = dict(FULL_RULE) | change
    with pytest.raises(MalformedInput) as info:
        LaunchPolicy.from_payload(dumps_canonical(policy_doc(allow=[rule])))
    assert info.value.field is not None
    assert field_part in info.value.field


def test_rule_ids_unique_across_allow_and_deny() -> None:
    doc = policy_doc(
        allow=[{"id": "x", "mrsigner": "a1" * 32}], deny=[{"id": "x", "mrsigner": "b2" * 32}]
    )
    with pytest.raises(MalformedInput, match="used twice"):
        LaunchPolicy.from_payload(dumps_canonical(doc))


@pytest.mark.parametrize("missing", ["spec_version", "version", "expires", "allow", "deny"])
def test_policy_missing_top_level_field_refused(missing: str) -> None:
    doc = policy_doc()
    del doc[missing]
    with pytest.raises(MalformedInput) as info:
        LaunchPolicy.from_payload(dumps_canonical(doc))
    assert info.value.field == f"policy.{missing}"


def test_policy_spec_version_must_be_known() -> None:
    doc = policy_doc() | {"spec_version": "3"}
    with pytest.raises(MalformedInput):
        LaunchPolicy.from_payload(dumps_canonical(doc))


def test_policy_issued_needs_spec_version_2_and_precedes_expiry() -> None:
    doc = policy_doc() | {"spec_version": "2", "issued": "2026-11-01T00:00:00Z"}
    policy = LaunchPolicy.from_payload(dumps_canonical(doc))
    assert policy.issued == datetime(2026, 11, 1, tzinfo=UTC)
    assert LaunchPolicy.from_payload(policy.to_payload()) == policy
    for bad, where in (
        (policy_doc() | {"spec_version": "2"}, "policy.issued"),
        (policy_doc() | {"issued": "2026-11-01T00:00:00Z"}, "policy.issued"),
        (doc | {"issued": "2099-01-01T00:00:00Z"}, "policy.issued"),
    ):
        with pytest.raises(MalformedInput) as info:
            LaunchPolicy.from_payload(dumps_canonical(bad))
        assert info.value.field == where


def test_with_rule_appends_and_checks() -> None:
    policy = LaunchPolicy(1, LATER)
    policy = policy.with_rule({"id": "a", "mrsigner": "a1" * 32}, "allow")
    policy = policy.with_rule({"id": "d", "mrenclave": "c3" * 32}, "deny")
    assert [r.id for r in policy.allow] == ["a"] and [r.id for r in policy.deny] == ["d"]
    with pytest.raises(UsageError, match="already used"):
        policy.with_rule({"id": "a", "mrsigner": "b2" * 32}, "deny")
    with pytest.raises(UsageError):
        policy.with_rule({"id": "z", "mrsigner": "00" * 32}, "allow")
    assert LaunchPolicy.from_payload(policy.to_payload()) == policy


def test_owner_root_round_trip_and_checks() -> None:
    keys = [ed25519_signer() for _ in range(3)]
    envelope = Envelope.from_bytes(root_envelope(keys=keys, signers=keys, threshold=2))
    root = OwnerRoot.from_payload(envelope.payload)
    assert root.to_payload() == envelope.payload
    assert list(root.keys) == [k.public_key.keyid for k in keys]
    assert root.is_expired(LATER) and not root.is_expired(LATER - timedelta(seconds=1))
    for threshold in (0, 4):
        with pytest.raises(UsageError):
            OwnerRoot.create(
                version=1, expires=NOW, threshold=threshold, keys=[k.public_key for k in keys]
            )
    with pytest.raises(UsageError):
        OwnerRoot.create(version=1, expires=NOW, threshold=1, keys=[])


def test_owner_root_every_truncation_refused() -> None:
    keys = [ed25519_signer()]
    payload = Envelope.from_bytes(root_envelope(keys=keys, signers=keys, threshold=1)).payload
    for length in range(len(payload) - 1):
        with pytest.raises(MalformedInput):
            OwnerRoot.from_payload(payload[:length])


def test_owner_root_keyid_must_be_the_spki_hash() -> None:
    keys = [ed25519_signer()]
    payload = Envelope.from_bytes(root_envelope(keys=keys, signers=keys, threshold=1)).payload
    doc = json.loads(payload)
    doc["keys"][0]["keyid"] = "0" * 64
    with pytest.raises(MalformedInput) as info:
        OwnerRoot.from_payload(dumps_canonical(doc))
    assert info.value.field == "root.keys[0].keyid"
