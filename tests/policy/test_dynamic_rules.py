"""Policy ``spec_version`` "3": the dynamic-memory fields of allow rules (issue 17).

dynamic_memory none|data|attested-code|code (default data), code_hashes (only with, and
required by, attested-code), unmeasured_exec / rwx_pages deny|allow (default deny). Older
policies ("1", "2") cannot carry the fields and mean code/allow/allow.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest

from sgxlaunch.arch.structs import Attributes, Sigstruct
from sgxlaunch.driver.owner import MAINLINE_LIMITS, DynamicMemory, OwnerLimits
from sgxlaunch.errors import MalformedInput, UsageError
from sgxlaunch.policy import LaunchPolicy, evaluate
from sgxlaunch.policy._json import dumps_canonical
from sgxlaunch.policy.evaluate import EnclaveIdentity, explain_dynamic_memory, kss_allowed
from sgxlaunch.policy.model import ANY_CODE
from tests.support.policy import SIGNER_A, policy_doc

NOW = datetime(2026, 11, 28, tzinfo=UTC)
HASH = hashlib.sha256(b"fetched code").digest()


def _spec3(*allow: dict[str, Any], deny: list[dict[str, Any]] | None = None) -> LaunchPolicy:
    doc = policy_doc(allow=list(allow), deny=deny)
    doc["spec_version"] = "3"
    doc["issued"] = "2026-11-01T00:00:00Z"
    return LaunchPolicy.from_payload(dumps_canonical(doc))


def _rule(**extra: Any) -> dict[str, Any]:
    return {"id": "acme", "mrsigner": SIGNER_A.hex(), "isvprodid": 1, **extra}


def _refused(*allow: dict[str, Any], match: str, field: str) -> None:
    with pytest.raises(MalformedInput, match=match) as info:
        _spec3(*allow)
    assert info.value.field == field


def test_spec3_rules_default_to_data_deny_deny() -> None:
    rule = _spec3(_rule()).allow[0]
    assert rule.limits == OwnerLimits(DynamicMemory.DATA, unmeasured_exec=False, rwx_pages=False)
    assert rule.code_hashes is None


@pytest.mark.parametrize("spec", ["1", "2"])
def test_older_spec_rules_mean_code_allow_allow_and_warn(spec: str) -> None:
    doc = policy_doc(allow=[_rule()])
    doc["spec_version"] = spec
    if spec == "2":
        doc["issued"] = "2026-11-01T00:00:00Z"
    policy = LaunchPolicy.from_payload(dumps_canonical(doc))
    assert policy.allow[0].limits == MAINLINE_LIMITS
    assert policy.dynamic_code_unrestricted
    assert not _spec3(_rule()).dynamic_code_unrestricted


@pytest.mark.parametrize("field", ["dynamic_memory", "code_hashes", "unmeasured_exec", "rwx_pages"])
def test_a_dynamic_field_in_an_older_policy_is_refused_naming_it(field: str) -> None:
    doc = policy_doc(allow=[_rule(**{field: "allow"})])
    doc["spec_version"] = "2"
    doc["issued"] = "2026-11-01T00:00:00Z"
    with pytest.raises(
        MalformedInput, match=f"unknown field '{field}' in allow.*'2': it needs spec_version '3'"
    ) as e:
        LaunchPolicy.from_payload(dumps_canonical(doc))
    assert e.value.field == f"allow[0].{field}"


def test_a_dynamic_field_on_a_deny_rule_is_refused() -> None:
    deny = [{"id": "bad", "mrenclave": "ab" * 32, "dynamic_memory": "none"}]
    with pytest.raises(
        MalformedInput, match=r"unknown field 'dynamic_memory' in deny.*only allow rules"
    ) as info:
        _spec3(_rule(), deny=deny)
    assert info.value.field == "deny[0].dynamic_memory"


def test_spec3_needs_an_issued_time() -> None:
    doc = policy_doc(allow=[_rule()])
    doc["spec_version"] = "3"
    with pytest.raises(MalformedInput, match="issued") as info:
        LaunchPolicy.from_payload(dumps_canonical(doc))
    assert info.value.field == "policy.issued"


def test_an_unknown_spec_version_is_refused() -> None:
    doc = policy_doc(allow=[_rule()])
    doc["spec_version"] = "4"
    doc["issued"] = "2026-11-01T00:00:00Z"
    with pytest.raises(MalformedInput, match="spec_version") as info:
        LaunchPolicy.from_payload(dumps_canonical(doc))
    assert info.value.field == "policy.spec_version"


@pytest.mark.parametrize(
    ("extra", "match", "field"),
    [
        ({"dynamic_memory": "rwx"}, "one of none, data, attested-code, code", "dynamic_memory"),
        ({"dynamic_memory": 1}, "string", "dynamic_memory"),
        ({"unmeasured_exec": "yes"}, "'deny' or 'allow'", "unmeasured_exec"),
        ({"rwx_pages": True}, "string", "rwx_pages"),
        ({"code_hashes": "any"}, "needs dynamic_memory 'attested-code'", "code_hashes"),
        (
            {"dynamic_memory": "code", "code_hashes": [HASH.hex()]},
            "needs dynamic_memory 'attested-code'",
            "code_hashes",
        ),
        ({"dynamic_memory": "attested-code"}, "no code_hashes", "code_hashes"),
        ({"dynamic_memory": "attested-code", "code_hashes": []}, "is empty", "code_hashes"),
        ({"dynamic_memory": "attested-code", "code_hashes": "all"}, "a list", "code_hashes"),
        (
            {"dynamic_memory": "attested-code", "code_hashes": ["ab" * 31]},
            "32 bytes",
            "code_hashes[0]",
        ),
        (
            {"dynamic_memory": "attested-code", "code_hashes": [7]},
            "64 hex",
            "code_hashes[0]",
        ),
        (
            {"dynamic_memory": "attested-code", "code_hashes": [HASH.hex(), HASH.hex()]},
            "repeats",
            "code_hashes[1]",
        ),
    ],
)
def test_bad_dynamic_fields_are_refused_naming_the_field(
    extra: dict[str, Any], match: str, field: str
) -> None:
    _refused(_rule(**extra), match=match, field=f"allow[0] (acme).{field}")


def test_attested_code_lists_the_allowed_code() -> None:
    listed = _spec3(_rule(dynamic_memory="attested-code", code_hashes=[HASH.hex()])).allow[0]
    assert listed.dynamic_memory == DynamicMemory.ATTESTED_CODE
    assert listed.code_hashes == (HASH,)
    assert listed.allows_code(HASH)
    assert not listed.allows_code(hashlib.sha256(b"other code").digest())
    anything = _spec3(_rule(dynamic_memory="attested-code", code_hashes="any")).allow[0]
    assert anything.code_hashes == ANY_CODE and anything.allows_code(HASH)
    # Only attested-code grants: a "code" rule runs anything, but grants nothing.
    assert not _spec3(_rule(dynamic_memory="code")).allow[0].allows_code(HASH)


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"dynamic_memory": "none"},
        {"dynamic_memory": "code", "unmeasured_exec": "allow", "rwx_pages": "allow"},
        {"dynamic_memory": "attested-code", "code_hashes": [HASH.hex()], "rwx_pages": "allow"},
        {"dynamic_memory": "attested-code", "code_hashes": "any"},
    ],
)
def test_spec3_policies_round_trip_through_their_canonical_payload(extra: dict[str, Any]) -> None:
    policy = _spec3(_rule(**extra))
    assert LaunchPolicy.from_payload(policy.to_payload()) == policy
    assert policy.to_payload() == dumps_canonical(
        policy_doc(allow=[_rule(**extra)]) | {"spec_version": "3", "issued": "2026-11-01T00:00:00Z"}
    )


def test_rules_carried_into_spec3_keep_their_older_meaning() -> None:
    """``policy new --from`` an older policy: its rules are written with code/allow/allow
    spelled out, so the new spec "3" policy means what the old one did until tightened."""
    old = LaunchPolicy.from_payload(dumps_canonical(policy_doc(allow=[_rule()])))
    new = LaunchPolicy(2, old.expires, old.allow, old.deny, issued=NOW)
    assert new.spec_version == "3"
    carried = LaunchPolicy.from_payload(new.to_payload())
    assert carried.allow[0].limits == MAINLINE_LIMITS
    assert carried.describe()["allow"][0]["dynamic_memory"] == "code"


def test_limits_an_older_spec_cannot_express_are_not_written_silently() -> None:
    strict = _spec3(_rule(dynamic_memory="none")).allow
    with pytest.raises(UsageError, match="need spec_version '3'"):
        LaunchPolicy(1, NOW, strict, issued=NOW, spec_version="2").to_payload()


def test_with_rule_parses_under_the_policy_spec() -> None:
    policy = LaunchPolicy(1, NOW, issued=NOW)
    policy = policy.with_rule(_rule(dynamic_memory="none"), "allow")
    assert policy.allow[0].dynamic_memory == DynamicMemory.NONE
    with pytest.raises(UsageError, match="needs spec_version"):
        LaunchPolicy(1, NOW).with_rule(_rule(dynamic_memory="none"), "allow")


def test_the_decision_carries_the_matched_rules_limits() -> None:
    policy = _spec3(
        _rule(dynamic_memory="attested-code", code_hashes=[HASH.hex()], unmeasured_exec="allow")
    )
    decision = evaluate(policy, EnclaveIdentity(bytes(range(32)), SIGNER_A, isvprodid=1), NOW)
    assert decision.allowed and decision.matched == policy.allow[0]
    assert decision.limits == OwnerLimits(
        DynamicMemory.ATTESTED_CODE, unmeasured_exec=True, rwx_pages=False
    )
    assert decision.code_hashes == (HASH,)
    assert decision.describe()["limits"] == {
        "dynamic_memory": "attested-code",
        "code_hashes": [HASH.hex()],
        "unmeasured_exec": "allow",
        "rwx_pages": "deny",
        "protected_code": "deny",
    }
    denied = evaluate(policy, EnclaveIdentity(bytes(range(32)), SIGNER_A, isvprodid=2), NOW)
    assert not denied.allowed and "limits" not in denied.describe()
    with pytest.raises(UsageError, match="no owner limits"):
        _ = denied.limits


@pytest.mark.parametrize(
    ("flags", "mask", "allowed"),
    [
        (0x4, ~0x2 & (2**64 - 1), False),  # sgx_sign's default mask fixes KSS at 0
        (0x84, ~0x2 & (2**64 - 1), True),  # signed with KSS
        (0x4, ~0x82 & (2**64 - 1), True),  # the mask leaves KSS to the loader
    ],
)
def test_kss_is_allowed_when_signed_or_left_free_by_the_mask(
    flags: int, mask: int, allowed: bool
) -> None:
    """EINIT compares SECS.ATTRIBUTES and SIGSTRUCT.ATTRIBUTES under ATTRIBUTEMASK (SDM EINIT):
    KSS can be set at ECREATE only if the SIGSTRUCT sets it or its mask does not cover it."""
    sig = Sigstruct(
        attributes=Attributes(flags=flags, xfrm=3), attributemask=Attributes(flags=mask, xfrm=0)
    )
    assert kss_allowed(sig) is allowed


def test_explain_warns_about_attested_code_without_kss_and_older_specs() -> None:
    no_kss = Sigstruct(
        attributes=Attributes(flags=0x4, xfrm=3), attributemask=Attributes(flags=2**64 - 3, xfrm=0)
    )
    identity = EnclaveIdentity(bytes(range(32)), SIGNER_A, isvprodid=1, flags=0x4)
    policy = _spec3(_rule(dynamic_memory="attested-code", code_hashes="any"))
    out = explain_dynamic_memory(policy, evaluate(policy, identity, NOW), no_kss)
    assert out["limits"]["dynamic_memory"] == "attested-code"
    assert any("cannot use attested-code" in w for w in out["warnings"])
    kss_rule = _spec3(_rule(dynamic_memory="attested-code", code_hashes="any", kss=True))
    with_kss = Sigstruct(
        attributes=Attributes(flags=0x84, xfrm=3), attributemask=Attributes(flags=2**64 - 3, xfrm=0)
    )
    ok = explain_dynamic_memory(kss_rule, evaluate(kss_rule, identity, NOW), with_kss)
    assert ok["warnings"] == [] and "code_hashes any" in " ".join(ok["meaning"])
    legacy = LaunchPolicy.from_payload(dumps_canonical(policy_doc(allow=[_rule()])))
    denied = evaluate(legacy, EnclaveIdentity(bytes(range(32)), SIGNER_A, isvprodid=9), NOW)
    out = explain_dynamic_memory(legacy, denied)
    assert out["limits"] is None and out["meaning"] == []
    assert "dynamic code is unrestricted" in out["warnings"][0]
