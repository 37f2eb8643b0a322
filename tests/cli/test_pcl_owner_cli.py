"""Protected code end to end through the command line (issue 20, acceptance): the author
encrypts the example enclave, verifies the owner's launch-enclave quote and wraps the key to it;
the owner installs the wrapped key; with ``protected_code: allow`` the enclave runs and the log
shows the release; after a policy version without the rule the next launch is refused at
release and logged; with ``rwx_pages: deny`` EINIT is refused (``tests/support/pcl_cli.py``
runs the story)."""

from __future__ import annotations

import json

import pytest

from tests.support.pcl_cli import Scenario, pcl_scenario


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return pcl_scenario()


def test_the_protected_enclave_runs_and_the_log_shows_the_release(scenario: Scenario) -> None:
    ran = scenario.results["run"]
    assert "owner" in ran.stdout  # the example program's answer to ECALL 0 with the input
    answer = json.loads(scenario.results["run json"].stdout)["result"]
    assert answer["initialized"] is True and "json" in str(answer.get("ecall_output"))
    released = [r for r in scenario.records("log after release") if r["kind"] == "code-key-release"]
    assert [r["outcome"] for r in released] == ["released", "released"]
    assert released[0]["rule"] == "author" and released[0]["debug"] is False
    added = [r for r in scenario.records("log after release") if r["kind"] == "code-key-added"]
    assert len(added) == 2  # installed twice (json and text); the same key id
    assert added[0]["key_id"] == released[0]["key_id"] == added[1]["key_id"]


def test_after_a_policy_without_the_rule_the_launch_is_refused_at_release(
    scenario: Scenario,
) -> None:
    refused = scenario.results["run revoked"]
    assert "policy does not allow it" in refused.stderr and "protected_code" in refused.stderr
    releases = [
        r for r in scenario.records("log after revocation") if r["kind"] == "code-key-release"
    ]
    assert releases[-1]["outcome"] == "refused" and releases[-1]["policy_version"] == 2
    assert releases[-1]["reasons"][0]["field"] == "protected_code"
    # the enclave itself initialized (EINIT allowed it); the key was what was refused
    attempts = [r for r in scenario.records("log after revocation") if r["kind"] == "outcome"]
    assert attempts[-1]["outcome"] == "initialized"
    assert "REFUSED" in scenario.results["log text"].stdout


def test_with_rwx_pages_deny_einit_is_refused(scenario: Scenario) -> None:
    refused = json.loads(scenario.results["run rwx denied json"].stdout)
    assert refused["ok"] is False
    assert "EPERM" in json.dumps(refused) and "rwx" in json.dumps(refused).lower()
