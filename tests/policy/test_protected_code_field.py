"""The ``protected_code`` allow-rule field (issue 20): deny by default in every spec_version,
"allow" only in spec "3" allow rules, parsed strictly and written back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sgxlaunch.errors import MalformedInput, UsageError
from sgxlaunch.policy.model import LaunchPolicy, Rule

SIGNER = "ab" * 32


def _policy(
    spec: str, allow: list[dict[str, Any]], deny: list[dict[str, Any]] | None = None
) -> bytes:
    doc: dict[str, Any] = {
        "spec_version": spec,
        "version": 1,
        "expires": "2027-06-01T00:00:00Z",
        "allow": allow,
        "deny": deny or [],
    }
    if spec != "1":
        doc["issued"] = "2026-11-01T00:00:00Z"
    return json.dumps(doc).encode()


@pytest.mark.parametrize("spec", ["1", "2", "3"])
def test_protected_code_is_denied_unless_a_spec_3_rule_says_allow(spec: str) -> None:
    policy = LaunchPolicy.from_payload(_policy(spec, [{"id": "a", "mrsigner": SIGNER}]))
    assert policy.allow[0].protected_code is False


def test_allow_and_deny_parse_and_round_trip() -> None:
    rules: list[dict[str, Any]] = [
        {"id": "a", "mrsigner": SIGNER, "protected_code": "allow"},
        {"id": "b", "mrsigner": SIGNER, "isvprodid": 2, "protected_code": "deny"},
    ]
    policy = LaunchPolicy.from_payload(_policy("3", rules))
    assert [r.protected_code for r in policy.allow] == [True, False]
    assert policy.allow[0].to_doc()["protected_code"] == "allow"
    assert "protected_code" not in policy.allow[1].to_doc()  # the default is left out
    again = LaunchPolicy.from_payload(policy.to_payload())
    assert [r.protected_code for r in again.allow] == [True, False]


@pytest.mark.parametrize("value", ["yes", True, 1, None, "ALLOW"])
def test_a_value_other_than_deny_or_allow_is_refused_naming_the_field(value: object) -> None:
    rule = {"id": "a", "mrsigner": SIGNER, "protected_code": value}
    with pytest.raises(MalformedInput, match="protected_code") as refused:
        LaunchPolicy.from_payload(_policy("3", [rule]))
    assert refused.value.field == "allow[0] (a).protected_code"


@pytest.mark.parametrize("spec", ["1", "2"])
def test_older_spec_versions_cannot_carry_it(spec: str) -> None:
    rule = {"id": "a", "mrsigner": SIGNER, "protected_code": "allow"}
    with pytest.raises(MalformedInput, match="needs spec_version '3'"):
        LaunchPolicy.from_payload(_policy(spec, [rule]))


def test_deny_rules_cannot_carry_it() -> None:
    rule = {"id": "d", "mrsigner": SIGNER, "protected_code": "allow"}
    with pytest.raises(MalformedInput, match="only allow rules carry it"):
        LaunchPolicy.from_payload(_policy("3", [], [rule]))


def test_a_rule_allowing_protected_code_cannot_be_written_as_spec_2() -> None:
    rule = Rule("a", "allow", 0, mrsigner=bytes(range(32)), protected_code=True)
    with pytest.raises(UsageError, match="protected_code needs spec_version '3'"):
        rule.to_doc("2")
