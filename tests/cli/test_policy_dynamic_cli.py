"""The command line of issue 17's policy side: ``policy new`` writes spec_version "3" (PCE/QE
rules with dynamic_memory none; rules carried from an older policy keep code/allow/allow),
``policy allow`` writes the dynamic-memory fields, ``policy explain`` states the
dynamic-memory decision (and warns: an older spec, attested-code without KSS), and
``platform status`` warns when the installed policy is of an older spec."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from sgxlaunch.attest.quoting import QUOTING_RULE_IDS
from sgxlaunch.driver.loader import LoadFailed
from tests.support.cli import run
from tests.support.cli_json import document_of
from tests.support.home import make_disk_home
from tests.support.pages import UNMEASURED_RX, image_with_pages
from tests.support.platform import allow_rule, author_enclave

CODE_HASH = hashlib.sha256(b"the loader's fetched code").hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example enclave signed twice: default ATTRIBUTEMASK (KSS fixed at 0) and KSS set."""
    tmp = tmp_path_factory.mktemp("policy-dynamic")
    assert run("example", "-o", tmp / "hello.sgxs").exit_code == 0
    assert run("key", "generate", "-o", tmp / "author.pem").exit_code == 0
    for name, extra in (("plain.sig", ()), ("kss.sig", ("--attributes", "0x84/0x3"))):
        signed = run(
            "sign", "--key", tmp / "author.pem", tmp / "hello.sgxs", "-o", tmp / name, *extra
        )
        assert signed.exit_code == 0, signed.output
    return tmp


def _new(path: Path, *extra: str | Path) -> Any:
    result = run("policy", "new", "-o", path, "--force", *extra)
    assert result.exit_code == 0, result.output
    return result


def _allow(path: Path, sig: Path, *extra: str) -> Any:
    return run("policy", "allow", path, "--id", "hello", "--sigstruct", sig, *extra)


def _explain(policy: Path, sig: Path, *extra: str) -> Any:
    return run("policy", "explain", sig, "--policy", policy, *extra)


def test_policy_new_writes_spec_3_and_the_quoting_rules_add_no_pages(files: Path) -> None:
    path = files / "new.json"
    _new(path, "--quoting-signer", "ab" * 32)
    doc = json.loads(path.read_text())
    assert doc["spec_version"] == "3" and "issued" in doc
    assert [r["id"] for r in doc["allow"]] == list(QUOTING_RULE_IDS)
    assert all(r["dynamic_memory"] == "none" for r in doc["allow"])
    assert "unmeasured_exec" not in doc["allow"][0]  # spec 3 default: deny


def test_policy_new_from_an_older_policy_keeps_its_rules_meaning(files: Path) -> None:
    old = files / "old.json"
    _, sig = author_enclave()
    rule = allow_rule(sig)
    old.write_text(
        json.dumps(
            {
                "spec_version": "2",
                "version": 4,
                "issued": "2026-11-01T00:00:00Z",
                "expires": "2030-01-01T00:00:00Z",
                "allow": [rule],
                "deny": [],
            }
        )
    )
    new = files / "from-old.json"
    result = _new(new, "--from", old)
    assert "keep their meaning" in result.stderr
    doc = json.loads(new.read_text())
    assert doc["spec_version"] == "3" and doc["version"] == 5
    assert doc["allow"] == [
        rule | {"dynamic_memory": "code", "unmeasured_exec": "allow", "rwx_pages": "allow"}
    ]


def test_policy_allow_writes_the_dynamic_memory_fields(files: Path) -> None:
    path = files / "fields.json"
    _new(path, "--no-quoting")
    written = _allow(
        path,
        files / "kss.sig",
        "--kss",
        "--dynamic-memory",
        "attested-code",
        "--code-hash",
        CODE_HASH,
        "--unmeasured-exec",
        "allow",
    )
    assert written.exit_code == 0, written.output
    rule = json.loads(path.read_text())["allow"][0]
    assert rule["dynamic_memory"] == "attested-code" and rule["code_hashes"] == [CODE_HASH]
    assert rule["unmeasured_exec"] == "allow" and "rwx_pages" not in rule
    shown = run("policy", "show", path)
    assert f"code_hashes={CODE_HASH}" in shown.output and "spec_version 3" in shown.output


def test_policy_allow_refuses_attested_code_without_hashes_naming_the_field(files: Path) -> None:
    path = files / "nohash.json"
    _new(path, "--no-quoting")
    result = _allow(path, files / "kss.sig", "--dynamic-memory", "attested-code")
    assert result.exit_code == 2
    assert "no code_hashes" in result.stderr
    assert json.loads(path.read_text())["allow"] == []  # nothing written


def test_explain_states_the_dynamic_memory_decision(files: Path) -> None:
    path = files / "explain.json"
    _new(path, "--no-quoting")
    assert _allow(path, files / "plain.sig").exit_code == 0
    text = _explain(path, files / "plain.sig")
    assert text.exit_code == 0, text.output
    assert "dynamic memory (policy spec_version 3):" in text.output
    assert "dynamic_memory data: pages may be added after EINIT" in text.output
    assert "unmeasured_exec deny" in text.output and "rwx_pages deny" in text.output
    assert "WARNING" not in text.output
    doc = document_of(_explain(path, files / "plain.sig", "--json"))["result"]
    assert doc["limits"] == {
        "dynamic_memory": "data",
        "code_hashes": None,
        "unmeasured_exec": "deny",
        "rwx_pages": "deny",
        "protected_code": "deny",
    }
    assert doc["dynamic_memory"]["limits"] == doc["limits"]
    assert doc["dynamic_memory"]["warnings"] == []


@pytest.mark.parametrize(
    ("sig", "kss", "warning"),
    [
        ("plain.sig", False, "does not allow KSS"),
        ("kss.sig", True, None),
        ("kss.sig", False, None),  # the rule lacks kss: the enclave is denied outright
    ],
    ids=["sigstruct-fixes-kss-0", "kss-allowed", "rule-without-kss"],
)
def test_explain_says_when_attested_code_cannot_work(
    files: Path, sig: str, kss: bool, warning: str | None
) -> None:
    """A loader whose SIGSTRUCT does not allow KSS gets no CONFIGID, so attested-code can
    never grant it anything: explain says so. (A SIGSTRUCT that sets KSS under a rule without
    kss: true is denied by the attribute check itself.)"""
    path = files / f"attested-{sig}-{kss}.json"
    _new(path, "--no-quoting")
    extra = ["--kss"] if kss else []
    written = _allow(path, files / sig, *extra, "--dynamic-memory", "attested-code", "--any-code")
    assert written.exit_code == 0, written.output
    result = _explain(path, files / sig, "--json")
    if sig == "kss.sig" and not kss:
        assert result.exit_code == 1
        assert "attributes.kss" in result.output
        return
    assert result.exit_code == 0, result.output
    warnings = document_of(result)["result"]["dynamic_memory"]["warnings"]
    if warning is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warning in warnings[0]
        assert "cannot use attested-code" in warnings[0]
        assert "cannot use attested-code" in _explain(path, files / sig).output


def test_explain_warns_that_an_older_spec_leaves_dynamic_code_unrestricted(
    files: Path,
) -> None:
    path = files / "spec2.json"
    sig = files / "plain.sig"
    _new(path, "--no-quoting")
    assert _allow(path, sig).exit_code == 0
    doc = json.loads(path.read_text())
    doc["spec_version"] = "2"
    doc["allow"][0] = {k: v for k, v in doc["allow"][0].items() if k != "dynamic_memory"}
    path.write_text(json.dumps(doc))
    text = _explain(path, sig)
    assert text.exit_code == 0
    assert "WARNING: the launch policy (version 1) is of spec_version '2'" in text.output
    assert "dynamic code is unrestricted" in text.output
    assert "dynamic_memory code: mainline" in text.output
    result = document_of(_explain(path, sig, "--json"))["result"]
    assert result["limits"]["dynamic_memory"] == "code"
    assert "dynamic code is unrestricted" in result["dynamic_memory"]["warnings"][0]
    assert "WARNING" in run("policy", "show", path).output


def test_platform_status_warns_about_an_older_spec_policy(tmp_path: Path) -> None:
    disk = make_disk_home(tmp_path)  # installs a spec_version "2" policy
    where = ("--home", disk.home, "--machine", disk.machine)
    text = run("platform", "status", *where)
    assert text.exit_code == 0, text.output
    assert "WARNING: the launch policy (version 1) is of spec_version '2'" in text.output
    assert "(spec_version 2)" in text.output
    policy = document_of(run("platform", "status", *where, "--json"))["result"]["policy"]
    assert policy["spec_version"] == "2" and policy["dynamic_code_unrestricted"] is True
    assert "dynamic code is unrestricted" in policy["warnings"][0]

    _, sig = author_enclave()
    platform = disk.open()
    platform.install_policy(disk.owner.policy(version=2, allow=[allow_rule(sig)], spec_version="3"))
    assert "WARNING" not in run("platform", "status", *where).output
    policy = document_of(run("platform", "status", *where, "--json"))["result"]["policy"]
    assert policy["spec_version"] == "3" and policy["dynamic_code_unrestricted"] is False
    assert policy["warnings"] == []


def test_log_show_lists_the_limits_of_each_launch_and_the_refused_pages(
    tmp_path: Path,
) -> None:
    """Under a spec "3" policy the attempt record names the token's limits; an INIT the
    EINIT-time checks refused shows how many pages and where."""
    disk = make_disk_home(tmp_path)
    where = ("--home", disk.home, "--machine", disk.machine)
    image, sig = image_with_pages([])
    platform = disk.open()
    platform.install_policy(disk.owner.policy(version=2, allow=[allow_rule(sig)], spec_version="3"))
    platform.run(image, sig)
    bad_image, bad_sig = image_with_pages([UNMEASURED_RX], count=2)
    with pytest.raises(LoadFailed):
        platform.run(bad_image, bad_sig)
    shown = run("log", "show", *where)
    assert shown.exit_code == 0, shown.output
    assert "dynamic_memory data, unmeasured_exec deny, rwx_pages deny" in shown.output
    assert "2 pages refused: " in shown.output
    assert "2 pages are executable but not measured" in shown.output
