"""What a stranger's pass over the command line found, each pinned by a test: a refused command
leaves the home and the machine as they were, ``--json`` keeps stderr for warnings and errors,
the text output is words (not Python reprs), and every command's --help shows an example."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import click
import pytest

import sgxlaunch._api as api
from sgxlaunch.cli import author, load_all_commands, main
from tests.conftest import shared_vectors
from tests.support.cli import run
from tests.support.cli_json import document_of

GEN = shared_vectors() / "generated"


def _snapshot(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` (names and contents)."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def owned(tmp_path: Path) -> tuple[Path, Path]:
    """A platform with a 1-of-1 owner root and its launch enclave: (home, machine)."""
    root, le_key = tmp_path / "root.json", tmp_path / "le.pem"
    made = run("owner", "init", "--keys", "1", "--threshold", "1", "--key-dir",
               tmp_path / "keys", "-o", root)  # fmt: skip
    assert made.exit_code == 0, made.output
    assert run("key", "generate", "-o", le_key).exit_code == 0
    home, machine = tmp_path / "state" / "home", tmp_path / "state" / "machine.json"
    result = run("platform", "init", "--home", home, "--machine", machine, "--root", root,
                 "--le-key", le_key, "--epc-mib", "4")  # fmt: skip
    assert result.exit_code == 0, result.output
    return home, machine


def test_owner_install_of_a_bad_root_creates_no_home(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"not a signed root\n")
    home = tmp_path / "new-home"
    result = run("owner", "install", garbage, "--home", home, "--json")
    assert result.exit_code == 2
    error = document_of(result)["error"]
    assert error["kind"] == "malformed_input" and error["source"] == str(garbage)
    assert "envelope is not valid JSON" in error["message"]
    assert not home.exists()  # the first root is checked before the home is made


def test_owner_install_of_a_good_first_root_still_creates_the_home(tmp_path: Path) -> None:
    root = tmp_path / "root.json"
    made = run("owner", "init", "--keys", "1", "--threshold", "1", "--key-dir",
               tmp_path / "keys", "-o", root)  # fmt: skip
    assert made.exit_code == 0, made.output
    home = tmp_path / "new-home"
    result = run("owner", "install", root, "--home", home, "--json")
    assert result.exit_code == 0, result.output
    assert document_of(result)["result"]["installed"] is True
    assert (home / "state.sqlite3").exists()
    shown = run("owner", "show", "--home", home, "--json")
    assert shown.exit_code == 0 and document_of(shown)["ok"] is True


@pytest.mark.parametrize(
    "content",
    [b"not a recovery document\n", b'{"payload": "", "payloadType": "x", "signatures": []}'],
    ids=["not-json", "wrong-payload-type"],
)
def test_recovery_apply_of_a_malformed_document_changes_nothing(
    owned: tuple[Path, Path], tmp_path: Path, content: bytes
) -> None:
    """Before the fix the launch enclave was started over the home first: its own INIT was
    logged and the machine's counter moved, and only then was the document parsed."""
    home, machine = owned
    document = tmp_path / "recovery.json"
    document.write_bytes(content)
    before = _snapshot(home.parent)
    result = run("recovery", "apply", document, "--home", home, "--machine", machine, "--json")
    assert result.exit_code == 2, result.output
    error = document_of(result)["error"]
    assert error["kind"] == "malformed_input" and error["source"] == str(document)
    assert _snapshot(home.parent) == before


def _state_files(directory: Path) -> dict[str, str]:
    """:func:`_snapshot` of the home and the machine file, lock files left out (opening a
    platform takes the machine's session lock; the lock file is not state)."""
    return {
        name: digest for name, digest in _snapshot(directory).items() if not name.endswith(".lock")
    }


def _recovery_document(tmp_path: Path, machine: Path, key_dir: Path) -> Path:
    """A well-formed recovery document for this platform at the counter's current value,
    signed with the first key in ``key_dir``."""
    facts = document_of(run("machine", "show", "--machine", machine, "--json"))["result"]
    document = tmp_path / f"recovery-{key_dir.name}.json"
    signed = run("recovery", "sign", "--platform-id", facts["platform_id"], "--counter",
                 facts["counter"]["value"], "--key", next(key_dir.glob("*.key.pem")),
                 "-o", document)  # fmt: skip
    assert signed.exit_code == 0, signed.output
    return document


def test_recovery_apply_of_a_document_with_bad_signatures_changes_nothing(
    owned: tuple[Path, Path], tmp_path: Path
) -> None:
    """Well-formed, for this platform and counter, signed by a key outside the owner root.
    Before the fix a second launch enclave was started to check it: its launch was logged and
    the counter moved (0 -> 2) before the refusal."""
    home, machine = owned
    other = run("owner", "init", "--keys", "1", "--threshold", "1", "--key-dir",
                tmp_path / "other-keys", "-o", tmp_path / "other-root.json")  # fmt: skip
    assert other.exit_code == 0, other.output
    document = _recovery_document(tmp_path, machine, tmp_path / "other-keys")
    before = _state_files(home.parent)
    result = run("recovery", "apply", document, "--home", home, "--machine", machine, "--json")
    assert result.exit_code == 1, result.output
    error = document_of(result)["error"]
    assert error["kind"] == "verification_failed" and error["check"] == "threshold"
    assert _state_files(home.parent) == before


def test_recovery_apply_on_a_platform_that_started_normally_changes_nothing(
    owned: tuple[Path, Path], tmp_path: Path
) -> None:
    """The owner's own document for the current counter, on a platform whose launch enclave
    started: recovery is for a refused start. Before the fix the second launch enclave's
    start moved the counter past the document's value and the refusal came after."""
    home, machine = owned
    document = _recovery_document(tmp_path, machine, tmp_path / "keys")
    before = _state_files(home.parent)
    result = run("recovery", "apply", document, "--home", home, "--machine", machine, "--json")
    assert result.exit_code == 2, result.output
    error = document_of(result)["error"]
    assert error["kind"] == "usage" and "started normally" in error["message"]
    assert _state_files(home.parent) == before


def test_installing_the_policy_in_force_again_says_so_and_changes_nothing(
    owned: tuple[Path, Path], tmp_path: Path
) -> None:
    """The same signed policy twice: the second install reports ``installed: false`` ("already
    installed") and commits nothing. Before the fix it said ``installed: true`` and the launch
    enclave committed its state again (the counter moved)."""
    home, machine = owned
    draft, signed = tmp_path / "policy.json", tmp_path / "policy.signed.json"
    assert run("policy", "new", "-o", draft).exit_code == 0
    key = next((tmp_path / "keys").glob("*.key.pem"))
    assert run("policy", "sign", draft, "--key", key, "-o", signed).exit_code == 0
    where = ("--home", home, "--machine", machine, "--json")
    first = run("platform", "install-policy", signed, *where)
    assert first.exit_code == 0, first.output
    installed = document_of(first)["result"]
    assert installed["installed"] is True and "already" not in installed["summary"]
    before = _state_files(home.parent)
    again = run("platform", "install-policy", signed, *where)
    assert again.exit_code == 0, again.output
    result = document_of(again)["result"]
    assert result["installed"] is False and "already installed" in result["summary"]
    assert (result["version"], result["digest"]) == (installed["version"], installed["digest"])
    assert _state_files(home.parent) == before
    text = run("platform", "install-policy", signed, "--home", home, "--machine", machine)
    assert text.exit_code == 0 and "already installed" in text.stdout


def test_machine_show_prints_words_not_python_values(owned: tuple[Path, Path]) -> None:
    _, machine = owned
    result = run("machine", "show", "--machine", machine)
    assert result.exit_code == 0, result.output
    assert "None" not in result.stdout and "{" not in result.stdout
    facts = document_of(run("machine", "show", "--machine", machine, "--json"))["result"]
    counter = facts["counter"]
    line = next(x for x in result.stdout.splitlines() if x.startswith("counter "))
    assert line.split()[1] == str(counter["value"])
    owner = counter["owner_mrsigner"]
    assert (owner if owner is not None else "not owned") in line
    lepubkeyhash = next(x for x in result.stdout.splitlines() if x.startswith("firmware_lep"))
    assert facts["firmware_lepubkeyhash"] is None and lepubkeyhash.split()[1] == "none"


def test_status_lines_are_not_printed_under_json(tmp_path: Path) -> None:
    """``wrote FILE`` lines go to stderr for a person; under --json stdout's object says it."""
    keys = tmp_path / "keys"
    plain = run("owner", "init", "--keys", "1", "--threshold", "1", "--key-dir", keys,
                "-o", tmp_path / "a.json")  # fmt: skip
    assert plain.exit_code == 0 and "wrote " in plain.stderr
    quiet = run("owner", "init", "--keys", "1", "--threshold", "1", "--key-dir", keys,
                "-o", tmp_path / "b.json", "--json")  # fmt: skip
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert document_of(quiet)["ok"] is True


def test_policy_explain_json_says_the_policy_was_a_draft(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    assert run("policy", "new", "-o", policy, "--no-quoting").exit_code == 0
    sig = GEN / "case1_defaults.sig"
    assert run("policy", "allow", policy, "--id", "one", "--sigstruct", sig).exit_code == 0
    text = run("policy", "explain", sig, "--policy", policy)
    assert text.exit_code == 0 and "unsigned draft" in text.stderr
    result = run("policy", "explain", sig, "--policy", policy, "--json")
    assert result.exit_code == 0 and result.stderr == ""
    assert document_of(result)["result"]["policy_source"] == "draft"


def test_no_progress_bar_under_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """The progress bar (large images on a terminal) is drawn without --json, never with it."""
    monkeypatch.setattr(author, "PROGRESS_THRESHOLD", 0)
    monkeypatch.setattr(author, "_stderr_is_terminal", lambda: True)
    shown: list[bool] = []
    original = api.measure_image

    def measure(*args: Any, **kwargs: Any) -> bytes:
        shown.append(kwargs.get("progress") is not None)
        return original(*args, **kwargs)

    monkeypatch.setattr(api, "measure_image", measure)
    image = GEN / "case1_defaults.sgxs"
    assert run("measure", image).exit_code == 0
    quiet = run("measure", image, "--json")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert json.loads(quiet.stdout)["ok"] is True
    assert shown == [True, False]  # a bar for the person, none for the script


def _leaves(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    out: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out |= _leaves(command, f"{prefix}{name} ")
        else:
            out[f"{prefix}{name}"] = command
    return out


def test_every_command_help_shows_an_example() -> None:
    load_all_commands()
    missing = [
        path
        for path, command in sorted(_leaves(main).items())
        if f"sgxlaunch {path}" not in (command.help or "")
    ]
    assert not missing, f"--help without an example of the command itself: {missing}"


def test_take_ownership_refused_makes_no_home(tmp_path: Path) -> None:
    garbage = tmp_path / "root.json"
    garbage.write_bytes(b"not a signed root\n")
    home, machine = tmp_path / "home", tmp_path / "machine.json"
    nowhere = run("platform", "take-ownership", garbage, "--home", home, "--machine", machine)
    assert nowhere.exit_code == 2 and f"{machine}: no machine here" in nowhere.stderr
    assert not home.exists() and not machine.exists()
    assert "machine init" not in nowhere.stderr  # no such command (the text once named it)
    other = tmp_path / "other-home"
    assert run("platform", "init", "--home", other, "--machine", machine).exit_code == 0
    before = machine.read_bytes()
    bad = run("platform", "take-ownership", garbage, "--home", home, "--machine", machine)
    assert bad.exit_code == 2 and f"{garbage}: envelope is not valid JSON" in bad.stderr
    assert not home.exists() and machine.read_bytes() == before


def test_take_ownership_of_a_machine_another_root_owns_makes_no_home(
    owned: tuple[Path, Path], tmp_path: Path
) -> None:
    """A valid root, but the machine is bound to another: refused (usage) before a home is
    made. Before the fix the refusal came from inside the new home's store (an empty home
    was left behind)."""
    _, machine = owned
    other = tmp_path / "other-root.json"
    made = run("owner", "init", "--keys", "1", "--threshold", "1", "--key-dir",
               tmp_path / "other-keys", "-o", other)  # fmt: skip
    assert made.exit_code == 0, made.output
    home = tmp_path / "second-home"
    before = machine.read_bytes()
    result = run("platform", "take-ownership", other, "--home", home, "--machine", machine,
                 "--json")  # fmt: skip
    assert result.exit_code == 2, result.output
    error = document_of(result)["error"]
    assert error["kind"] == "usage" and "already has an owner" in error["message"]
    assert not home.exists() and machine.read_bytes() == before


def test_policy_sign_names_what_is_wrong_with_the_file_first(tmp_path: Path) -> None:
    garbage = tmp_path / "policy.json"
    garbage.write_bytes(b"not a policy\n")
    key = tmp_path / "keys"
    made = run("owner", "init", "--keys", "1", "--threshold", "1", "--key-dir", key,
               "-o", tmp_path / "root.json")  # fmt: skip
    assert made.exit_code == 0
    signer = next(key.glob("*.key.pem"))
    result = run("policy", "sign", garbage, "--key", signer)
    assert result.exit_code == 2
    assert f"{garbage}: launch policy is not valid JSON" in result.stderr
    assert "is a policy document" not in result.stderr
