"""Checklist cases 25 and 26: attribute bypasses and wildcards that must not exist."""

from __future__ import annotations

import pytest

from sgxlaunch.arch.constants import AttributeFlag
from sgxlaunch.errors import MalformedInput, PolicyDenied
from sgxlaunch.policy import evaluate, install_policy, load_state
from sgxlaunch.policy._json import dumps_canonical
from tests.support.clock import NOW
from tests.support.policy import (
    ENCLAVE_X,
    SIGNER_A,
    Owner,
    identity,
    parse_policy,
    policy_doc,
    policy_payload,
)

DEBUG = int(AttributeFlag.DEBUG)
PROVISIONKEY = int(AttributeFlag.PROVISIONKEY)
KSS = int(AttributeFlag.KSS)
MODE64 = int(AttributeFlag.MODE64BIT)


def test_adv25_debug_enclave_matching_allow_rule_without_debug_denied() -> None:
    owner = Owner()
    state = owner.install(policy_payload(allow=[{"id": "prod", "mrenclave": ENCLAVE_X.hex()}]))
    assert state.evaluate(identity(flags=MODE64), NOW).allowed
    decision = state.evaluate(identity(flags=MODE64 | DEBUG), NOW)
    assert not decision.allowed
    assert [(r.rule, r.field, r.found) for r in decision.reasons] == [
        ("prod", "attributes.debug", "DEBUG=1")
    ]
    with pytest.raises(PolicyDenied) as info:
        decision.require()
    assert "attributes.debug" in str(info.value)


def test_adv25_debug_allowed_only_by_a_rule_that_says_so() -> None:
    policy = parse_policy(
        allow=[
            {"id": "prod", "mrsigner": SIGNER_A.hex(), "isvprodid": 1},
            {"id": "dev", "mrenclave": ENCLAVE_X.hex(), "debug": True},
        ]
    )
    decision = evaluate(policy, identity(flags=MODE64 | DEBUG), NOW)
    assert decision.allowed
    assert decision.rule == "dev"
    # Another enclave of the same signer, in debug mode: only "prod" matches, which forbids it.
    other = identity(mrenclave=bytes(31) + b"\x01", flags=MODE64 | DEBUG)
    assert not evaluate(policy, other, NOW).allowed


@pytest.mark.parametrize(("flag", "permission"), [(PROVISIONKEY, "provisionkey"), (KSS, "kss")])
def test_adv25_provisionkey_and_kss_need_permission(flag: int, permission: str) -> None:
    plain = parse_policy(allow=[{"id": "r", "mrsigner": SIGNER_A.hex()}])
    granted = parse_policy(allow=[{"id": "r", "mrsigner": SIGNER_A.hex(), permission: True}])
    enclave = identity(flags=MODE64 | flag)
    denied = evaluate(plain, enclave, NOW)
    assert not denied.allowed
    assert denied.reasons[0].field == f"attributes.{permission}"
    assert evaluate(granted, enclave, NOW).allowed


def test_adv25_einittoken_key_is_never_granted_by_policy() -> None:
    policy = parse_policy(
        allow=[
            {
                "id": "r",
                "mrsigner": SIGNER_A.hex(),
                "debug": True,
                "provisionkey": True,
                "kss": True,
            }
        ]
    )
    decision = evaluate(policy, identity(flags=MODE64 | int(AttributeFlag.EINITTOKEN_KEY)), NOW)
    assert not decision.allowed
    assert decision.reasons[0].field == "attributes.einittoken_key"


@pytest.mark.parametrize("bit", [0, 3, 6, 8, 9, 11, 63])
def test_adv25_reserved_or_unmodelled_flag_bits_denied(bit: int) -> None:
    policy = parse_policy(
        allow=[
            {
                "id": "r",
                "mrsigner": SIGNER_A.hex(),
                "debug": True,
                "provisionkey": True,
                "kss": True,
            }
        ]
    )
    decision = evaluate(policy, identity(flags=MODE64 | (1 << bit)), NOW)
    assert not decision.allowed
    assert decision.reasons[0].field == "attributes.flags"


def test_adv25_xfrm_and_miscselect_outside_masks_denied() -> None:
    policy = parse_policy(
        allow=[{"id": "r", "mrsigner": SIGNER_A.hex(), "xfrm_mask": 0x7, "miscselect_mask": 0x1}]
    )
    assert evaluate(policy, identity(xfrm=0x7, miscselect=0x1), NOW).allowed
    wide = evaluate(policy, identity(xfrm=0xE7, miscselect=0x3), NOW)
    assert not wide.allowed
    assert {r.field for r in wide.reasons} == {"xfrm", "miscselect"}


def test_adv26_empty_allow_list_denies_everything() -> None:
    owner = Owner()
    state = owner.install(policy_payload(allow=[], deny=[]))
    for enclave in (identity(), identity(mrsigner=bytes(32)), identity(flags=0)):
        decision = state.evaluate(enclave, NOW)
        assert not decision.allowed
        assert "allow list is empty" in decision.reasons[0].found


def test_adv26_deny_only_policy_denies_everything() -> None:
    policy = parse_policy(allow=[], deny=[{"id": "d", "mrsigner": "ee" * 32}])
    assert not evaluate(policy, identity(), NOW).allowed


@pytest.mark.parametrize("field", ["mrsigner", "mrenclave"])
@pytest.mark.parametrize("effect", ["allow", "deny"])
def test_adv26_all_zero_mrsigner_rule_refused_never_wildcard(field: str, effect: str) -> None:
    owner = Owner()
    owner.install(policy_payload(version=1))
    before = owner.store.snapshot()
    rule = {"id": "zero", field: "00" * 32}
    doc = policy_doc(version=2, **{effect: [rule]})  # type: ignore[arg-type]
    with pytest.raises(MalformedInput) as info:
        install_policy(owner.store, owner.sign_policy(dumps_canonical(doc)), NOW)
    assert "not a wildcard" in info.value.message
    assert owner.store.snapshot() == before
    # And the installed policy still does not let an unknown signer through.
    stranger = identity(mrsigner=bytes.fromhex("77" * 32), mrenclave=bytes.fromhex("66" * 32))
    assert not load_state(owner.store).evaluate(stranger, NOW).allowed


@pytest.mark.parametrize(
    "rule",
    [
        {"id": "empty"},
        {"id": "prodid-only", "isvprodid": 0},
        {"id": "svn-only", "isvsvn": {"min": 0, "max": 65535}},
        {"id": "family-only", "isvfamilyid": "00" * 16},
        {"id": "blank", "mrsigner": ""},
    ],
)
def test_adv26_rule_without_identity_refused(rule: dict[str, object]) -> None:
    with pytest.raises(MalformedInput):
        parse_policy(allow=[rule])


def test_adv26_zero_isvfamilyid_is_matched_literally_not_as_wildcard() -> None:
    policy = parse_policy(allow=[{"id": "r", "mrsigner": SIGNER_A.hex(), "isvfamilyid": "00" * 16}])
    assert evaluate(policy, identity(), NOW).allowed  # the enclave's family id is zero
    other = identity(isvfamilyid=b"\x01" + bytes(15))
    decision = evaluate(policy, other, NOW)
    assert not decision.allowed
    assert decision.reasons[0].field == "isvfamilyid"


def test_adv26_deny_beats_allow_whatever_the_order() -> None:
    policy = parse_policy(
        allow=[{"id": "a", "mrenclave": ENCLAVE_X.hex()}],
        deny=[{"id": "d", "mrsigner": SIGNER_A.hex(), "isvsvn": {"min": 0, "max": 5}}],
    )
    decision = evaluate(policy, identity(isvsvn=5), NOW)
    assert not decision.allowed
    assert decision.rule == "d"
    assert evaluate(policy, identity(isvsvn=6), NOW).rule == "a"
