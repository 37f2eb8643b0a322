"""`sgxlaunch owner mode …` end to end: new, sign (2 of 3), show, verify; exit codes 0/1/2."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sgxlaunch.arch import Sigstruct
from sgxlaunch.policy import MODE_KEY, Envelope, ModeDocument, install_mode
from sgxlaunch.policy.evaluate import EnclaveIdentity
from sgxlaunch.store import open_store
from tests.conftest import shared_vectors
from tests.support.cli import run
from tests.support.cli_json import result_of

LE = "e5" * 32
PLATFORM = "f7" * 32
OTHER_PLATFORM = "f8" * 32
LE_SIGSTRUCT = "generated/case1_defaults.sig"
EXPIRES = ("--expires", "2027-01-01T00:00:00Z")


@pytest.fixture
def owned(tmp_path: Path) -> dict[str, Path]:
    """A home with a 2-of-3 owner root installed."""
    keys = tmp_path / "keys"
    root = tmp_path / "root.json"
    home = tmp_path / "home"
    result = run("owner", "init", "--keys", 3, "--threshold", 2, "--key-dir", keys, "-o", root)
    assert result.exit_code == 0, result.output
    assert run("owner", "install", root, "--home", home).exit_code == 0
    return {"keys": keys, "root": root, "home": home, "tmp": tmp_path}


def keys_of(owned: dict[str, Path]) -> list[Path]:
    return sorted(owned["keys"].glob("*.key.pem"))


def new_mode(owned: dict[str, Path], name: str, *args: str | int | Path) -> Path:
    out = owned["tmp"] / name
    binding = () if "--platform-id" in args else ("--any-platform",)
    result = run("owner", "mode", "new", *args, *binding, "-o", out)
    assert result.exit_code == 0, result.output
    return out


def signed_mode(owned: dict[str, Path], name: str, *args: str | int) -> Path:
    keys = keys_of(owned)
    return new_mode(owned, name, *args, "--key", keys[0], "--key", keys[2])


def test_new_sign_two_of_three_verify(owned: dict[str, Path]) -> None:
    keys = keys_of(owned)
    mode = new_mode(owned, "mode.json", "--mode", "owner", "--le-mrsigner", LE, "--version", 1)
    envelope = Envelope.from_bytes(mode.read_bytes())
    assert envelope.signatures == ()
    document = ModeDocument.from_payload(envelope.payload)
    assert document.mode == "owner" and document.le_mrsigner == bytes.fromhex(LE)

    unsigned = run("owner", "mode", "verify", mode, "--home", owned["home"])
    assert unsigned.exit_code == 1
    assert "0 of the required 2" in unsigned.stderr and str(mode) in unsigned.stderr

    one = run("owner", "mode", "sign", mode, "--key", keys[0])
    assert one.exit_code == 0, one.output
    assert "signing platform-mode version 1: owner" in one.stderr  # the signer sees what
    refused = run("owner", "mode", "verify", mode, "--home", owned["home"])
    assert refused.exit_code == 1 and "1 of the required 2" in refused.stderr
    # The same key again changes nothing.
    assert run("owner", "mode", "sign", mode, "--key", keys[0]).exit_code == 0
    assert run("owner", "mode", "verify", mode, "--home", owned["home"]).exit_code == 1

    # The second holder uses the generic `owner sign`.
    two = run("owner", "sign", mode, "--key", keys[1])
    assert two.exit_code == 0, two.output
    ok = run("owner", "mode", "verify", mode, "--home", owned["home"], "--json")
    assert ok.exit_code == 0, ok.output
    info = result_of(ok)
    assert info["valid"] is True and info["already_installed"] is False
    assert info["checks"] == ["threshold", "expiry", "platform_id", "version"]
    assert info["mode"] == "owner" and info["le_mrsigner"] == LE
    text = run("owner", "mode", "verify", mode, "--root", owned["root"])
    assert text.exit_code == 0, text.output
    assert text.stdout.startswith("OK: platform-mode version 1: owner")

    shown = result_of(run("owner", "mode", "show", mode, "--json"))
    assert len(shown["signed_by"]) == 2 and shown["version"] == 1


def test_installed_mode_is_shown_floor_enforced_and_resend_reported(
    owned: dict[str, Path],
) -> None:
    v2 = signed_mode(owned, "v2.json", "--mode", "owner", "--le-mrsigner", LE, "--version", 2)
    v1 = signed_mode(owned, "v1.json", "--mode", "permissive", "--version", 1)
    assert result_of(run("owner", "mode", "show", "--home", owned["home"], "--json")) == {
        "mode": None
    }
    # What `sgxlaunch platform mode FILE` will do: install_mode into the home's store.
    with open_store(owned["home"], create=False) as store:
        install_mode(store, v2.read_bytes(), datetime.now(UTC))
        assert store.get(MODE_KEY) == v2.read_bytes()
    again = run("owner", "mode", "verify", v2, "--home", owned["home"], "--json")
    assert again.exit_code == 0 and result_of(again)["already_installed"] is True
    rollback = run("owner", "mode", "verify", v1, "--home", owned["home"])
    assert rollback.exit_code == 1
    assert "below the trusted version 2" in rollback.stderr and str(v1) in rollback.stderr
    # The same old document against a bare root has no floor to compare with.
    assert run("owner", "mode", "verify", v1, "--root", owned["root"]).exit_code == 0

    status = result_of(run("owner", "mode", "show", "--home", owned["home"], "--json"))
    assert status["mode"]["version"] == 2 and status["mode"]["in_force"] is True
    text = run("owner", "show", "--home", owned["home"])
    assert f"platform-mode version 2: owner, launch enclave MRSIGNER {LE}" in text.stdout
    assert result_of(run("owner", "show", "--home", owned["home"], "--json"))["mode"]["mode"] == (
        "owner"
    )


def test_platform_binding_on_the_command_line(owned: dict[str, Path]) -> None:
    bound = signed_mode(
        owned, "bound.json", "--mode", "permissive", "--version", 1, "--platform-id", PLATFORM
    )
    home = ("--home", owned["home"])
    missing = run("owner", "mode", "verify", bound, *home)
    assert missing.exit_code == 2 and "bound to platform" in missing.stderr
    wrong = run("owner", "mode", "verify", bound, *home, "--platform-id", OTHER_PLATFORM)
    assert wrong.exit_code == 1 and "another platform" in wrong.stderr
    right = run("owner", "mode", "verify", bound, *home, "--platform-id", PLATFORM.upper())
    assert right.exit_code == 0, right.output
    bad = run("owner", "mode", "verify", bound, *home, "--platform-id", "f7")
    assert bad.exit_code == 2


def test_le_mrsigner_from_the_launch_enclave_sigstruct(owned: dict[str, Path]) -> None:
    sig = shared_vectors() / LE_SIGSTRUCT
    expected = EnclaveIdentity.from_sigstruct(Sigstruct.from_bytes(sig.read_bytes())).mrsigner
    mode = new_mode(owned, "le.json", "--mode", "owner", "--le-sigstruct", sig, "--version", 3)
    shown = result_of(run("owner", "mode", "show", mode, "--json"))
    assert shown["le_mrsigner"] == expected.hex() and shown["signed_by"] == []
    both = run(
        "owner", "mode", "new", "--mode", "owner", "--le-sigstruct", sig, "--le-mrsigner", LE,
        "--version", 1, "--any-platform", "-o", owned["tmp"] / "both.json",
    )  # fmt: skip
    assert both.exit_code == 2 and "not both" in both.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--mode", "owner", "--version", 1), "le_mrsigner is required"),
        (("--mode", "permissive", "--le-mrsigner", LE, "--version", 1), "not allowed"),
        (("--mode", "owner", "--le-mrsigner", "00" * 32, "--version", 1), "all zero"),
        (("--mode", "enforcing", "--version", 1), "enforcing"),
        (("--mode", "permissive"), "--version"),
        (("--mode", "permissive", "--version", 0), "0"),
        (("--mode", "owner", "--le-mrsigner", "e5", "--version", 1), "64 hex"),
        (("--mode", "permissive", "--version", 1, "--expires-in", 3, *EXPIRES), "not both"),
        (("--mode", "permissive", "--version", 1, "--expires", "2027-01-01"), "RFC 3339"),
    ],
)
def test_new_refuses_bad_arguments_with_exit_2(
    owned: dict[str, Path], args: tuple[str | int, ...], message: str
) -> None:
    out = owned["tmp"] / "bad.json"
    result = run("owner", "mode", "new", *args, "--any-platform", "-o", out)
    assert result.exit_code == 2
    assert message in result.stderr
    assert not out.exists()


def test_new_expiry_options_and_no_overwrite(owned: dict[str, Path]) -> None:
    mode = new_mode(
        owned, "m.json", "--mode", "permissive", "--version", 1, "--expires", "2027-03-04T05:06:07Z"
    )
    shown = result_of(run("owner", "mode", "show", mode, "--json"))
    assert shown["expires"] == "2027-03-04T05:06:07Z"
    again = run(
        "owner", "mode", "new", "--mode", "permissive", "--version", 1, "--any-platform",
        "-o", mode,
    )  # fmt: skip
    assert again.exit_code == 2 and "exists" in again.stderr
    forced = run(
        "owner", "mode", "new", "--mode", "permissive", "--version", 2, "--expires-in", 1,
        "--any-platform", "-o", mode, "--force", "--json",
    )  # fmt: skip
    assert forced.exit_code == 0, forced.output
    info = result_of(forced)
    assert info["version"] == 2
    expires = datetime.strptime(info["expires"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert 0 < (expires - datetime.now(UTC)).total_seconds() <= 86400


def test_expired_document_fails_verification_with_exit_1(owned: dict[str, Path]) -> None:
    old = signed_mode(
        owned, "old.json", "--mode", "permissive", "--version", 1, "--expires",
        "2020-01-01T00:00:00Z",
    )  # fmt: skip
    result = run("owner", "mode", "verify", old, "--home", owned["home"])
    assert result.exit_code == 1 and "expired" in result.stderr


def test_sign_a_bare_document_needs_out(owned: dict[str, Path]) -> None:
    keys = keys_of(owned)
    mode = new_mode(owned, "m.json", "--mode", "permissive", "--version", 1)
    bare = owned["tmp"] / "bare.json"
    bare.write_bytes(Envelope.from_bytes(mode.read_bytes()).payload)
    refused = run("owner", "mode", "sign", bare, "--key", keys[0])
    assert refused.exit_code == 2 and "-o/--output" in refused.stderr
    out = owned["tmp"] / "bare.signed.json"
    signed = run("owner", "mode", "sign", bare, "--key", keys[0], "--key", keys[1], "-o", out)
    assert signed.exit_code == 0, signed.output
    assert run("owner", "mode", "verify", out, "--home", owned["home"]).exit_code == 0


def test_malformed_mode_files_are_exit_2_naming_file_and_field(owned: dict[str, Path]) -> None:
    keys = keys_of(owned)
    mode = new_mode(owned, "m.json", "--mode", "permissive", "--version", 1)
    envelope = Envelope.from_bytes(mode.read_bytes())
    doc = json.loads(envelope.payload)
    doc["extra"] = 1
    broken = owned["tmp"] / "broken.json"
    broken.write_bytes(Envelope(envelope.payload_type, json.dumps(doc).encode(), ()).to_bytes())
    for args in (
        ("owner", "mode", "show", broken),
        ("owner", "mode", "sign", broken, "--key", keys[0]),
        ("owner", "sign", broken, "--key", keys[0]),
        ("owner", "mode", "verify", broken, "--home", owned["home"]),
    ):
        result = run(*args)
        assert result.exit_code in (1, 2), (args, result.output)
        assert str(broken) in result.stderr, args
    # The signing commands refuse with 2 and name the field.
    for args in (
        ("owner", "mode", "sign", broken, "--key", keys[0]),
        ("owner", "sign", broken, "--key", keys[0]),
    ):
        result = run(*args)
        assert result.exit_code == 2 and "mode.extra" in result.stderr
    policy_like = run("owner", "mode", "show", owned["root"])
    assert policy_like.exit_code == 2 and "platform-mode" in policy_like.stderr
