"""The platform, run and log commands, end to end through the CLI (in-process, one --home)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.conftest import shared_vectors
from tests.support.cli import run
from tests.support.cli_json import result_of

GEN = shared_vectors() / "generated"


@pytest.fixture
def owner_home(tmp_path: Path) -> tuple[Path, list[str], str]:
    """A platform with a 2-of-3 owner root and a launch enclave, permissive."""
    home = tmp_path / "home"
    keys_dir = tmp_path / "keys"
    root = tmp_path / "root.json"
    assert (
        run(
            "owner",
            "init",
            "--keys",
            "3",
            "--threshold",
            "2",
            "--key-dir",
            keys_dir,
            "-o",
            root,
        ).exit_code
        == 0
    )
    keys = sorted(str(p) for p in keys_dir.glob("*.key.pem"))
    le_key = tmp_path / "le.pem"
    le_signer = run("key", "generate", "-o", le_key).stdout.strip()
    result = run(
        "platform",
        "init",
        "--home",
        home,
        "--root",
        root,
        "--le-key",
        le_key,
        "--epc-mib",
        "4",
        "--json",
    )
    assert result.exit_code == 0, result.output
    status = result_of(result)
    assert status["mode"] == "permissive"
    assert status["launch_enclave"]["mrsigner"] == le_signer
    return home, keys, le_signer


def test_platform_story_through_the_cli(
    owner_home: tuple[Path, list[str], str], tmp_path: Path
) -> None:
    home, keys, le_signer = owner_home
    allowed: list[str | Path] = [
        "run",
        GEN / "case1_defaults.sgxs",
        "--sig",
        GEN / "case1_defaults.sig",
        "--home",
        home,
    ]
    other: list[str | Path] = [
        "run",
        GEN / "case2_prodid_svn_debug.sgxs",
        "--sig",
        GEN / "case2_prodid_svn_debug.sig",
        "--home",
        home,
    ]
    assert run(*allowed).exit_code == 0
    assert run(*other).exit_code == 0
    policy = tmp_path / "policy.json"
    signed = tmp_path / "policy.signed.json"
    assert run("policy", "new", "-o", policy).exit_code == 0
    assert (
        run(
            "policy",
            "allow",
            policy,
            "--id",
            "case1",
            "--sigstruct",
            GEN / "case1_defaults.sig",
        ).exit_code
        == 0
    )
    assert (
        run("policy", "sign", policy, "--key", keys[0], "--key", keys[1], "-o", signed).exit_code
        == 0
    )
    assert run("platform", "install-policy", signed, "--home", home).exit_code == 0
    mode = tmp_path / "mode.json"
    platform_id = result_of(run("platform", "status", "--home", home, "--json"))["platform_id"]
    assert (
        run(
            "owner",
            "mode",
            "new",
            "--mode",
            "owner",
            "--le-mrsigner",
            le_signer,
            "--version",
            "1",
            "--platform-id",
            platform_id,
            "--key",
            keys[1],
            "--key",
            keys[2],
            "-o",
            mode,
        ).exit_code
        == 0
    )
    assert run("platform", "mode", mode, "--home", home).exit_code == 0
    status = result_of(run("platform", "status", "--home", home, "--json"))
    assert status["mode"] == "owner"
    assert status["launch_key_msrs"] == le_signer

    ok = run(*allowed, "--json")
    assert ok.exit_code == 0, ok.output
    assert result_of(ok)["rule"] == "case1"
    denied = run(*other)
    assert denied.exit_code == 1
    assert "denied" in denied.stderr
    assert "expected" in denied.stderr

    records = result_of(run("log", "show", "--home", home, "--json"))["records"]
    assert [r["kind"] for r in records] == ["attempt", "outcome"] * 4
    assert [r["decision"] for r in records[::2]] == [
        "permissive",
        "permissive",
        "allowed",
        "denied",
    ]
    assert [r["outcome"] for r in records[1::2]] == ["initialized"] * 3 + ["refused"]
    verified = run("log", "verify", "--home", home, "--json")
    assert verified.exit_code == 0
    assert result_of(verified) == {"valid": True, "records": 8}

    with sqlite3.connect(home / "state.sqlite3") as db:
        keys_in_log = [
            k for (k,) in db.execute("SELECT key FROM kv WHERE key LIKE 'log/%' ORDER BY key")
        ]
        db.execute("DELETE FROM kv WHERE key = ?", (keys_in_log[-1],))
    broken = run("log", "verify", "--home", home, "--json")
    assert broken.exit_code == 1
    assert result_of(broken)["first_bad_record"] == 7


def test_mode_switch_with_one_signature_refused(
    owner_home: tuple[Path, list[str], str], tmp_path: Path
) -> None:
    home, keys, le_signer = owner_home
    mode = tmp_path / "mode.json"
    assert (
        run(
            "owner",
            "mode",
            "new",
            "--mode",
            "owner",
            "--le-mrsigner",
            le_signer,
            "--version",
            "1",
            "--any-platform",
            "--key",
            keys[0],
            "-o",
            mode,
        ).exit_code
        == 0
    )
    before = (home / "state.sqlite3").read_bytes()
    result = run("platform", "mode", mode, "--home", home)
    assert result.exit_code == 1
    assert "1 of the required 2" in result.stderr
    assert (home / "state.sqlite3").read_bytes() == before


def test_platform_init_refuses_twice_and_owner_mode_without_document(tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert run("platform", "init", "--home", home, "--seed", "11" * 32).exit_code == 0
    again = run("platform", "init", "--home", home)
    assert again.exit_code == 2
    assert "already exists" in again.stderr
    other = tmp_path / "o"
    refused = run("platform", "init", "--home", other, "--mode", "owner")
    assert refused.exit_code == 2
    assert not (other / "state.sqlite3").exists()


def test_commands_without_a_platform_say_how_to_make_one(tmp_path: Path) -> None:
    result = run("log", "show", "--home", tmp_path / "none")
    assert result.exit_code == 2
    assert "platform init" in result.stderr


def test_run_ephemeral_explains_a_measurement_mismatch() -> None:
    result = run(
        "run",
        GEN / "case1_defaults.sgxs",
        "--sig",
        GEN / "case2_prodid_svn_debug.sig",
        "--ephemeral",
        "--json",
    )
    assert result.exit_code == 1
    value = result_of(result)
    assert value["sgx_status"] == "INVALID_MEASUREMENT"
    assert value["errno"] == "EPERM"
    assert any("ENCLAVEHASH expects 08cf317b" in line for line in value["why"])


@pytest.mark.skipif(
    __import__("shutil").which("openssl") is None, reason="needs the openssl command"
)
def test_launch_enclave_signed_elsewhere_with_two_step_signing(
    owner_home: tuple[Path, list[str], str], tmp_path: Path
) -> None:
    """le-image → gendata (with the printed options) → openssl → catsig → le-install gives the
    same SIGSTRUCT as `le-sign` with the same key."""
    import subprocess

    from sgxlaunch.cli.platform import LE_SIGNING_OPTIONS

    home, _keys, _ = owner_home
    image = tmp_path / "le.sgxs"
    shown = run("platform", "le-image", "--home", home, "-o", image)
    assert shown.exit_code == 0, shown.output
    assert LE_SIGNING_OPTIONS in shown.stderr
    key = tmp_path / "second-le.pem"
    assert run("key", "generate", "-o", key).exit_code == 0
    data, raw, sig = tmp_path / "le.data", tmp_path / "le.raw", tmp_path / "le.sig"
    gendata = run("gendata", image, *LE_SIGNING_OPTIONS.split(), "-o", data)
    assert gendata.exit_code == 0, gendata.output
    subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(key), "-out", str(raw), str(data)], check=True
    )
    assert run("catsig", data, "--key", key, "--signature", raw, "-o", sig).exit_code == 0
    installed = run("platform", "le-install", sig, "--home", home)
    assert installed.exit_code == 0, installed.output
    direct = tmp_path / "direct.sig"
    assert run("platform", "le-sign", "--home", home, "--key", key, "-o", direct).exit_code == 0
    assert direct.read_bytes() == sig.read_bytes()


def test_launch_enclave_with_einittoken_key_inside_the_mask_refused(
    owner_home: tuple[Path, list[str], str], tmp_path: Path
) -> None:
    home, _keys, _ = owner_home
    image = tmp_path / "le.sgxs"
    assert run("platform", "le-image", "--home", home, "-o", image).exit_code == 0
    key = tmp_path / "k.pem"
    assert run("key", "generate", "-o", key).exit_code == 0
    sig = tmp_path / "le.sig"
    assert run("sign", "--key", key, image, "--attributes", "0x24/0x3", "-o", sig).exit_code == 0
    result = run("platform", "le-install", sig, "--home", home)
    assert result.exit_code == 2
    assert "ATTRIBUTEMASK" in result.stderr
