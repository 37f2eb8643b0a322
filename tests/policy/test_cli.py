"""The owner/policy CLI end to end (exit codes 0/1/2, --json, files named in errors)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.conftest import shared_vectors
from tests.support.cli import run
from tests.support.cli_json import result_of

CASE1 = "generated/case1_defaults.sig"
CASE2 = "generated/case2_prodid_svn_debug.sig"


@pytest.fixture
def owned(tmp_path: Path) -> dict[str, Path]:
    """A home with a 2-of-3 owner root installed; returns useful paths."""
    keys = tmp_path / "keys"
    root = tmp_path / "root.json"
    home = tmp_path / "home"
    result = run("owner", "init", "--keys", 3, "--threshold", 2, "--key-dir", keys, "-o", root)
    assert result.exit_code == 0, result.output
    assert run("owner", "install", root, "--home", home).exit_code == 0
    return {"keys": keys, "root": root, "home": home, "tmp": tmp_path}


def private_keys(owned: dict[str, Path]) -> list[Path]:
    return sorted(owned["keys"].glob("*.key.pem"))


def test_owner_init_writes_private_keys_0600_and_a_signed_root(owned: dict[str, Path]) -> None:
    keys = private_keys(owned)
    assert len(keys) == 3
    for key in keys:
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    shown = run("owner", "show", owned["root"], "--json")
    assert shown.exit_code == 0
    info = result_of(shown)
    assert info["threshold"] == 2 and len(info["keys"]) == 3 and len(info["signed_by"]) == 3
    status = result_of(run("owner", "show", "--home", owned["home"], "--json"))
    assert status["root"]["version"] == 1 and status["policy"] is None


def _make_policy(
    owned: dict[str, Path], version: int = 1, name: str = "policy", days: int = 30
) -> Path:
    vectors = shared_vectors()
    policy = owned["tmp"] / f"{name}.json"
    assert (
        run("policy", "new", "-o", policy, "--version", version, "--valid-days", days).exit_code
        == 0
    )
    allow = run(
        "policy",
        "allow",
        policy,
        "--id",
        "case1",
        "--sigstruct",
        vectors / CASE1,
        "--match",
        "mrenclave",
    )
    assert allow.exit_code == 0, allow.output
    deny = run(
        "policy",
        "deny",
        policy,
        "--id",
        "no-case2",
        "--sigstruct",
        vectors / CASE2,
        "--match",
        "mrenclave",
    )
    assert deny.exit_code == 0, deny.output
    return policy


def _sign(owned: dict[str, Path], policy: Path, count: int) -> Path:
    envelope = policy.with_suffix(".signed.json")
    keys = private_keys(owned)
    args: list[str | Path] = ["policy", "sign", policy, "-o", envelope]
    for key in keys[:count]:
        args += ["--key", key]
    result = run(*args)
    assert result.exit_code == 0, result.output
    return envelope


def test_policy_flow_sign_verify_install_explain(owned: dict[str, Path]) -> None:
    vectors = shared_vectors()
    policy = _make_policy(owned)
    shown = result_of(run("policy", "show", policy, "--json"))
    assert [r["id"] for r in shown["allow"]] == ["case1"]
    envelope = _sign(owned, policy, 1)
    refused = run("policy", "verify", envelope, "--home", owned["home"])
    assert refused.exit_code == 1
    assert "1 of the required 2" in refused.stderr
    assert str(envelope) in refused.stderr
    # The second holder adds a signature in place.
    added = run("owner", "sign", envelope, "--key", private_keys(owned)[1])
    assert added.exit_code == 0, added.output
    ok = run("policy", "verify", envelope, "--home", owned["home"], "--json")
    assert ok.exit_code == 0, ok.output
    assert result_of(ok)["checks"] == ["threshold", "expiry", "version"]
    assert run("policy", "verify", envelope, "--root", owned["root"]).exit_code == 0
    assert run("policy", "install", envelope, "--home", owned["home"]).exit_code == 0

    allowed = run("policy", "explain", vectors / CASE1, "--home", owned["home"], "--json")
    assert allowed.exit_code == 0, allowed.output
    assert result_of(allowed)["rule"] == "case1"
    denied = run("policy", "explain", vectors / CASE2, "--home", owned["home"])
    assert denied.exit_code == 1
    assert "DENIED by rule no-case2" in denied.stdout
    draft = run("policy", "explain", vectors / CASE1, "--policy", policy, "--json")
    assert draft.exit_code == 0 and result_of(draft)["allowed"] is True
    signed = run(
        "policy", "explain", vectors / CASE1, "--policy", envelope, "--root", owned["root"]
    )
    assert signed.exit_code == 0, signed.output

    # Re-installing an older version is refused with exit 1, state unchanged.
    older = _sign(owned, _make_policy(owned, version=1, name="other", days=29), 2)
    content = (owned["home"] / "state.sqlite3").read_bytes()
    rollback = run("policy", "install", older, "--home", owned["home"])
    assert rollback.exit_code == 1
    assert "version" in rollback.stderr
    assert str(older) in rollback.stderr
    assert (owned["home"] / "state.sqlite3").read_bytes() == content


def test_malformed_policy_file_is_exit_2_naming_file_and_field(owned: dict[str, Path]) -> None:
    policy = _make_policy(owned)
    doc = json.loads(policy.read_text())
    doc["allow"][0]["debugg"] = True
    policy.write_text(json.dumps(doc))
    result = run("policy", "show", policy)
    assert result.exit_code == 2
    assert str(policy) in result.stderr
    assert "debugg" in result.stderr


def test_editing_refuses_bad_rules_with_exit_2(owned: dict[str, Path]) -> None:
    policy = _make_policy(owned)
    dup = run("policy", "allow", policy, "--id", "case1", "--mrsigner", "ab" * 32)
    assert dup.exit_code == 2 and "already used" in dup.stderr
    nothing = run("policy", "allow", policy, "--id", "x", "--isvprodid", 3)
    assert nothing.exit_code == 2
    zero = run("policy", "deny", policy, "--id", "z", "--mrsigner", "00" * 32)
    assert zero.exit_code == 2 and "wildcard" in zero.stderr
    bad_range = run(
        "policy", "allow", policy, "--id", "r", "--mrsigner", "ab" * 32, "--isvsvn", "5..2"
    )
    assert bad_range.exit_code == 2


def test_owner_rotate_needs_old_and_new_signatures(owned: dict[str, Path]) -> None:
    old_keys = private_keys(owned)
    root_info = result_of(run("owner", "show", owned["root"], "--json"))
    keep = [k["keyid"][:12] for k in root_info["keys"][:2]]
    new_root = owned["tmp"] / "root-v2.json"
    new_dir = owned["tmp"] / "newkeys"
    rotated = run(
        "owner",
        "rotate",
        owned["root"],
        "--keep",
        keep[0],
        "--keep",
        keep[1],
        "--keys",
        1,
        "--key-dir",
        new_dir,
        "-o",
        new_root,
        "--json",
    )
    assert rotated.exit_code == 0, rotated.output
    assert result_of(rotated)["version"] == 2
    # Signed only by the one new key: refused (old threshold not met).
    refused = run("owner", "install", new_root, "--home", owned["home"])
    assert refused.exit_code == 1
    assert "current keys" in refused.stderr
    kept_files = [p for p in old_keys if any(p.name.startswith(f"owner-{k}") for k in keep)]
    assert len(kept_files) == 2
    signed = run("owner", "sign", new_root, "--key", kept_files[0], "--key", kept_files[1])
    assert signed.exit_code == 0, signed.output
    installed = run("owner", "install", new_root, "--home", owned["home"], "--json")
    assert installed.exit_code == 0, installed.output
    assert result_of(installed)["root"]["version"] == 2


def test_owner_init_from_public_keys_then_sign(tmp_path: Path) -> None:
    keys = tmp_path / "k"
    scratch = tmp_path / "scratch.json"
    assert (
        run(
            "owner",
            "init",
            "--keys",
            2,
            "--threshold",
            1,
            "--key-dir",
            keys,
            "--scheme",
            "ecdsa-p256-sha256",
            "-o",
            scratch,
        ).exit_code
        == 0
    )
    pubs = sorted(keys.glob("*.pub.pem"))
    root = tmp_path / "root.json"
    made = run(
        "owner",
        "init",
        "--public-key",
        pubs[0],
        "--public-key",
        pubs[1],
        "--threshold",
        2,
        "-o",
        root,
        "--json",
    )
    assert made.exit_code == 0, made.output
    assert result_of(made)["signatures"] == 0
    home = tmp_path / "home"
    assert run("owner", "install", root, "--home", home).exit_code == 1
    privs = sorted(keys.glob("*.key.pem"))
    assert run("owner", "sign", root, "--key", privs[0], "--key", privs[1]).exit_code == 0
    assert run("owner", "install", root, "--home", home).exit_code == 0


def test_commands_without_state_are_usage_errors(tmp_path: Path) -> None:
    result = run("policy", "explain", shared_vectors() / CASE1, "--home", tmp_path / "none")
    assert result.exit_code == 2
    assert "no sgxlaunch state" in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["owner", "init"],
        ["owner", "rotate"],
        ["owner", "sign"],
        ["owner", "install"],
        ["policy", "new"],
        ["policy", "allow"],
        ["policy", "deny"],
        ["policy", "show"],
        ["policy", "sign"],
        ["policy", "verify"],
        ["policy", "install"],
        ["policy", "explain"],
    ],
)
def test_help_teaches_with_examples(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "sgxlaunch " + " ".join(command) in result.stdout
