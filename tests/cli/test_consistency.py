"""One consistent command line: the failures a new user met, each pinned by a test (exit code,
a one-line message naming the file or field, nothing written on failure)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest

from sgxlaunch.cli import _COMMANDS, load_all_commands, main
from sgxlaunch.cli._common import MAX_INPUT_ENV
from tests.conftest import shared_vectors
from tests.support.cli import run
from tests.support.cli_json import result_of
from tests.support.json_cases import run_cases

pytestmark = pytest.mark.slow  # started first under `make test` (tests/conftest.py)

GEN = shared_vectors() / "generated"


def _commands(group: click.Group = main, prefix: str = "") -> dict[str, click.Command]:
    load_all_commands()
    out: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out |= _commands(command, f"{prefix}{name} ")
        else:
            out[f"{prefix}{name}"] = command
    return out


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


# -- options ----------------------------------------------------------------------------------


def test_every_written_file_is_named_by_o_output() -> None:
    for path, command in _commands().items():
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            assert "--out" not in param.opts, f"{path}: --out (the spelling is -o/--output)"
            if "-o" in param.opts or "--output" in param.opts:
                assert param.opts == ["-o", "--output"], f"{path}: {param.opts}"
        positional = [p.name for p in command.params if isinstance(p, click.Argument)]
        assert "out" not in positional and "output" not in positional, path


def test_home_before_or_after_the_command_and_from_the_environment(tmp_path: Path) -> None:
    home, other = tmp_path / "home", tmp_path / "other"
    assert run("--home", home, "platform", "init").exit_code == 0
    before = run("--home", home, "platform", "status", "--json")
    after = run("platform", "status", "--home", home, "--json")
    assert result_of(before) == result_of(after)
    # After the command wins over before it; both win over the environment.
    assert run("--home", other, "platform", "status", "--home", home).exit_code == 0
    missing = run("--home", home, "platform", "status", "--home", other)
    assert missing.exit_code == 2 and str(other) in missing.stderr
    os.environ["SGXLAUNCH_HOME"] = str(home)
    try:
        assert run("platform", "status").exit_code == 0
        assert run("platform", "status", "--home", other).exit_code == 2
    finally:
        del os.environ["SGXLAUNCH_HOME"]


def test_machine_before_the_command_too(tmp_path: Path) -> None:
    home, machine = tmp_path / "home", tmp_path / "m" / "machine.json"
    assert run("--machine", machine, "platform", "init", "--home", home).exit_code == 0
    assert machine.exists()
    assert run("platform", "status", "--home", home, "--machine", machine).exit_code == 0
    assert run("--machine", machine, "--home", home, "machine", "show").exit_code == 0


def test_one_install_command_platform_install_policy_is_policy_install() -> None:
    commands = _commands()
    policy_install = commands["policy install"].callback
    alias = commands["platform install-policy"].callback
    assert policy_install is not None and alias is not None
    help_text = commands["platform install-policy"].help or ""
    assert "same command as `policy install`" in help_text


# -- owner init checks every argument before writing a private key ------------------------------


def test_owner_init_threshold_above_keys_writes_nothing(tmp_path: Path) -> None:
    keys, root = tmp_path / "keys", tmp_path / "root.json"
    result = run("owner", "init", "--keys", 2, "--threshold", 3, "--key-dir", keys, "-o", root)
    assert result.exit_code == 2
    first = result.stderr.splitlines()[0]
    assert "threshold" in first and "3" in first
    assert _files(tmp_path) == []


def test_owner_init_over_an_existing_output_writes_no_key(tmp_path: Path) -> None:
    keys, root = tmp_path / "keys", tmp_path / "root.json"
    root.write_text("the owner's current root\n")
    result = run("owner", "init", "--keys", 3, "--threshold", 2, "--key-dir", keys, "-o", root)
    assert result.exit_code == 2
    assert str(root) in result.stderr.splitlines()[0] and "exists" in result.stderr
    assert _files(tmp_path) == [root] and root.read_text() == "the owner's current root\n"


def test_owner_rotate_with_a_bad_keep_writes_no_key(tmp_path: Path) -> None:
    keys, root = tmp_path / "keys", tmp_path / "root.json"
    assert (
        run("owner", "init", "--keys", 2, "--threshold", 2, "--key-dir", keys, "-o", root).exit_code
        == 0
    )
    before = _files(tmp_path)
    result = run(
        "owner",
        "rotate",
        root,
        "--keys",
        1,
        "--key-dir",
        keys,
        "--threshold",
        9,
        "--keep-all",
        "-o",
        tmp_path / "root-v2.json",
    )
    assert result.exit_code == 2 and "threshold" in result.stderr.splitlines()[0]
    assert _files(tmp_path) == before


# -- broken pipes ---------------------------------------------------------------------------


def test_broken_pipe_is_quiet_and_exits_0(tmp_path: Path) -> None:
    """`sgxlaunch inspect x.sig | head -2`: the reader is gone before the output is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE, as after `head` exits
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "sgxlaunch", "inspect", str(GEN / "case1_defaults.sig")],
            stdout=write_end,
            stderr=subprocess.PIPE,
            check=False,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 0
    assert proc.stderr == b""


# -- one documented, overridable size limit ---------------------------------------------------


def test_size_limit_names_file_size_and_how_to_raise_it(tmp_path: Path) -> None:
    sig = GEN / "case1_defaults.sig"
    os.environ[MAX_INPUT_ENV] = "1000"
    try:
        refused = run("inspect", sig)
        assert refused.exit_code == 2
        first = refused.stderr.splitlines()[0]
        assert str(sig) in first and "1808 bytes" in first and MAX_INPUT_ENV in first
        # Images are streamed: the limit does not apply to them.
        image = GEN / "case1_defaults.sgxs"
        assert image.stat().st_size > 1000
        assert run("inspect", image).exit_code == 0
        assert run("run", image, "--sig", sig, "--ephemeral").exit_code == 2  # the SIGSTRUCT
        os.environ[MAX_INPUT_ENV] = "2000"
        assert run("run", image, "--sig", sig, "--ephemeral").exit_code == 0
        os.environ[MAX_INPUT_ENV] = "lots"
        bad = run("inspect", sig)
        assert bad.exit_code == 2 and MAX_INPUT_ENV in bad.stderr
    finally:
        del os.environ[MAX_INPUT_ENV]


# -- human text ------------------------------------------------------------------------------

_REPR = re.compile(r"\bb'|\bb\"|\bTrue\b|\bFalse\b|\bNone\b|\\x[0-9a-f]{2}")


def test_human_text_shows_no_python_reprs(tmp_path: Path) -> None:
    """Every --json command of the contract test, run again without --json (same inputs)."""
    cases = list(run_cases(tmp_path / "json"))
    seen = 0
    for case in cases:
        argv = [a for a in case.argv if a != "--json"]
        if case.command in ("owner init", "owner rotate", "platform init", "owner mode new"):
            continue  # these write files; their text is checked by their own runs below
        result = run(*argv)
        text = result.stdout + result.stderr
        assert not _REPR.search(text), f"{' '.join(argv)}:\n{text}"
        seen += 1
    assert seen > 20


def test_text_of_a_sigstruct_and_a_bad_tag(tmp_path: Path) -> None:
    shown = run("inspect", GEN / "case1_defaults.sig").stdout
    assert "debug: no" in shown and "signature_valid: yes" in shown
    bad = tmp_path / "bad.sgxs"
    bad.write_bytes(bytes([0xE4, 0x7E, 1, 2, 3, 4, 5, 6]) + bytes(56))
    refused = run("measure", bad)
    assert refused.exit_code == 2
    assert "found tag 0xe47e010203040506" in refused.stderr and "b'" not in refused.stderr


def test_plurals(tmp_path: Path) -> None:
    home, keys, root, le = (
        tmp_path / "h",
        tmp_path / "k",
        tmp_path / "root.json",
        tmp_path / "le.pem",
    )
    assert (
        run("owner", "init", "--keys", 1, "--threshold", 1, "--key-dir", keys, "-o", root).exit_code
        == 0
    )
    assert run("key", "generate", "-o", le).exit_code == 0
    assert run("platform", "init", "--home", home, "--root", root, "--le-key", le).exit_code == 0
    sig = GEN / "case1_defaults.sig"
    assert run("run", GEN / "case1_defaults.sgxs", "--sig", sig, "--home", home).exit_code == 0
    # one launch: its attempt and its outcome record
    assert run("log", "verify", "--home", home).stdout == "OK: 2 records verify\n"
    status = run("platform", "status", "--home", home).stdout
    assert "log          2 records\n" in status and "1 of 1 key\n" in status


def test_top_level_help_is_accurate() -> None:
    text = run("--help").stdout
    assert "later commands" not in text and "build" not in text
    load_all_commands()
    assert set(main.commands) == set(_COMMANDS)
    for name in main.commands:
        assert re.search(rf"^  {re.escape(name)}\b", text, re.M), name


# -- read-only commands do not write --------------------------------------------------------


def test_read_only_commands_leave_the_state_and_machine_unchanged(tmp_path: Path) -> None:
    cases = list(run_cases(tmp_path / "json"))  # a whole owner setup, log and all
    home = tmp_path / "json" / "home"
    machine = tmp_path / "json" / "machine" / "machine.json"
    files = [home / "state.sqlite3", machine]

    def digests() -> list[str]:
        return [hashlib.sha256(p.read_bytes()).hexdigest() for p in files]

    before = digests()
    env = ("--home", home, "--machine", machine)
    for argv in (
        ("platform", "status", *env),
        ("platform", "status", "--json", *env),
        ("log", "show", *env),
        ("owner", "show", "--home", home),
        ("owner", "mode", "show", "--home", home),
        ("machine", "show", "--machine", machine),
    ):
        run(*argv)
        assert digests() == before, argv
    assert cases


# -- expiry is visible ----------------------------------------------------------------------


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_new_documents_that_expire_soon_or_have_expired_warn(tmp_path: Path) -> None:
    old = run("policy", "new", "-o", tmp_path / "old.json", "--expires", "2020-01-01T00:00:00Z")
    assert old.exit_code == 0
    assert "EXPIRED" in old.stderr and "2020-01-01T00:00:00Z" in old.stderr
    soon = datetime.now(UTC) + timedelta(hours=3)
    near = run("policy", "new", "-o", tmp_path / "near.json", "--expires", _stamp(soon))
    assert "expires within a day" in near.stderr
    fine = run("policy", "new", "-o", tmp_path / "fine.json", "--valid-days", 30)
    assert "warning" not in fine.stderr
    keys, root = tmp_path / "keys", tmp_path / "root.json"
    made = run("owner", "init", "--keys", 1, "--threshold", 1, "--key-dir", keys, "-o", root)
    assert made.exit_code == 0 and "warning" not in made.stderr
    key = next(keys.glob("*.key.pem"))
    signed = run("policy", "sign", tmp_path / "old.json", "--key", key, "-o", tmp_path / "o.s.json")
    assert signed.exit_code == 0 and "EXPIRED" in signed.stderr
    mode = run(
        "owner",
        "mode",
        "new",
        "--mode",
        "permissive",
        "--version",
        1,
        "--expires",
        _stamp(soon),
        "--any-platform",
        "-o",
        tmp_path / "mode.json",
    )
    assert mode.exit_code == 0 and "expires within a day" in mode.stderr


def test_an_expired_installed_policy_is_said_first(tmp_path: Path) -> None:
    home, keys, root = tmp_path / "h", tmp_path / "k", tmp_path / "root.json"
    assert (
        run("owner", "init", "--keys", 1, "--threshold", 1, "--key-dir", keys, "-o", root).exit_code
        == 0
    )
    key = next(keys.glob("*.key.pem"))
    le = tmp_path / "le.pem"
    assert run("key", "generate", "-o", le).exit_code == 0
    assert run("platform", "init", "--home", home, "--root", root, "--le-key", le).exit_code == 0
    policy, signed = tmp_path / "p.json", tmp_path / "p.signed.json"
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    assert run("policy", "new", "-o", policy, "--expires", _stamp(expires)).exit_code == 0
    sig = GEN / "case1_defaults.sig"
    assert run("policy", "allow", policy, "--id", "case1", "--sigstruct", sig).exit_code == 0
    assert run("policy", "sign", policy, "--key", key, "-o", signed).exit_code == 0
    assert run("policy", "install", signed, "--home", home).exit_code == 0
    in_force = result_of(run("platform", "status", "--home", home, "--json"))["policy"]
    assert in_force["in_force"] is True and in_force["expired"] is False
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 1.1)
    status = run("platform", "status", "--home", home)
    assert status.stdout.startswith("EXPIRED: the launch policy (version 1) expired at ")
    assert _stamp(expires) in status.stdout.splitlines()[0]
    policy_json = result_of(run("platform", "status", "--home", home, "--json"))["policy"]
    assert policy_json["in_force"] is False and policy_json["expired"] is True
    explained = run("policy", "explain", sig, "--home", home)
    assert explained.exit_code == 1
    assert explained.stdout.startswith("DENIED: the launch policy EXPIRED")
    as_json = run("policy", "explain", sig, "--home", home, "--json")
    assert json.loads(as_json.stdout)["result"]["policy_expired"] is True
    shown = run("owner", "show", "--home", home)
    assert shown.stdout.startswith("EXPIRED: the launch policy")


# -- start-up: the command modules and heavy libraries load only when needed ------------------

_PROBE = """
import sys
from click.testing import CliRunner
from sgxlaunch.cli import main
result = CliRunner().invoke(main, sys.argv[1:])
assert result.exit_code == 0, result.output
heavy = ("numpy", "cryptography", "rich", "sgxlaunch.cpu", "sgxlaunch.launch", "sgxlaunch.policy")
ours = "sgxlaunch.cli."
print(" ".join(sorted(m for m in sys.modules if m.startswith(heavy) or m.startswith(ours))))
"""


def _loaded(*args: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return set(proc.stdout.split())


def test_help_loads_no_command_module_and_no_heavy_library() -> None:
    assert _loaded("--help") <= {"sgxlaunch.cli._common", "sgxlaunch.cli._output"}


def test_inspect_of_a_sigstruct_loads_no_heavy_library() -> None:
    loaded = _loaded("inspect", str(GEN / "case1_defaults.sig"))
    assert "sgxlaunch.cli.inspect" in loaded
    assert not {m for m in loaded if not m.startswith("sgxlaunch.cli.")}, loaded


def test_top_level_help_lines_are_the_commands_own() -> None:
    load_all_commands()
    for name, (_modules, line) in _COMMANDS.items():
        assert main.commands[name].get_short_help_str(limit=1000) == line, name
