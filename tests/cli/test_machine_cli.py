"""The machine through the command line: a file outside the home, physical-presence commands,
owner recovery and migration (every command is given ``--machine`` explicitly)."""

from __future__ import annotations

import json
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import shared_vectors
from tests.support.cli import run

GEN = shared_vectors() / "generated"


@dataclass
class World:
    home: Path
    machine: Path
    root: Path
    keys: list[str]


@pytest.fixture
def world(tmp_path: Path) -> World:
    """A permissive platform with a 2-of-3 owner root and a launch enclave."""
    keys_dir = tmp_path / "keys"
    root = tmp_path / "root.json"
    assert run("owner", "init", "--keys", "3", "--threshold", "2", "--key-dir", keys_dir,
               "-o", root).exit_code == 0  # fmt: skip
    le_key = tmp_path / "le.pem"
    assert run("key", "generate", "-o", le_key).exit_code == 0
    home, machine = tmp_path / "home", tmp_path / "machine" / "machine.json"
    result = run("platform", "init", "--home", home, "--machine", machine, "--root", root,
                 "--le-key", le_key, "--epc-mib", "4")  # fmt: skip
    assert result.exit_code == 0, result.output
    return World(home, machine, root, sorted(str(p) for p in keys_dir.glob("*.key.pem")))


def at(world: World) -> list[str | Path]:
    return ["--home", world.home, "--machine", world.machine]


def launch(world: World) -> int:
    return run(
        "run", GEN / "case1_defaults.sgxs", "--sig", GEN / "case1_defaults.sig", *at(world)
    ).exit_code


def test_the_machine_file_is_0600_outside_the_home_and_the_home_holds_no_seed(
    world: World, tmp_path: Path
) -> None:
    machine = world.machine
    assert stat.S_IMODE(machine.stat().st_mode) == 0o600
    seed = json.loads(machine.read_text())["seed"]
    with sqlite3.connect(world.home / "state.sqlite3") as db:
        values = [bytes(v) for (v,) in db.execute("SELECT value FROM kv")]
    assert not any(bytes.fromhex(seed) in v or seed.encode() in v for v in values)
    shown = run("machine", "show", "--machine", machine, "--json")
    assert shown.exit_code == 0
    assert seed not in shown.stdout
    assert json.loads(shown.stdout)["result"]["owner_root_digest"] is not None
    again = run("platform", "init", *at(world))
    assert again.exit_code == 2 and "never overwritten" in again.stderr
    inside = run("platform", "init", "--home", tmp_path / "h2", "--machine",
                 tmp_path / "h2" / "machine.json")  # fmt: skip
    assert inside.exit_code == 2 and "outside the home" in inside.stderr


def test_a_damaged_machine_file_is_named_with_its_field(
    world: World,
) -> None:
    machine = world.machine
    value = json.loads(machine.read_text())
    value["counter"]["digest"] = "zz"
    machine.write_text(json.dumps(value))
    result = run("platform", "status", *at(world))
    assert result.exit_code == 2
    assert str(machine) in result.stderr and "digest" in result.stderr


def test_refused_start_then_owner_recovery_through_the_cli(world: World, tmp_path: Path) -> None:
    assert launch(world) == 0  # an attempt and its outcome record: the counter is at 2
    with sqlite3.connect(world.home / "state.sqlite3") as db:
        db.execute("DELETE FROM kv WHERE key LIKE 'platform/le-sealed/%'")
    refused = run("platform", "status", *at(world))
    assert refused.exit_code == 1
    assert "monotonic counter is at 2" in refused.stderr and "recovery" in refused.stderr
    facts = json.loads(run("machine", "show", "--machine", world.machine, "--json").stdout)[
        "result"
    ]
    keys = world.keys
    doc = tmp_path / "recovery.json"
    signed = run("recovery", "sign", "--platform-id", facts["platform_id"], "--counter", "2",
                 "--key", keys[0], "--key", keys[1], "-o", doc)  # fmt: skip
    assert signed.exit_code == 0, signed.output
    applied = run("recovery", "apply", doc, *at(world))
    assert applied.exit_code == 0, applied.output
    assert launch(world) == 0
    assert run("recovery", "apply", doc, *at(world)).exit_code == 1  # bound to counter 2


def test_clear_ownership_then_take_ownership_again(
    world: World,
) -> None:
    machine = world.machine
    before = json.loads(run("machine", "show", "--machine", machine, "--json").stdout)["result"]
    assert run("machine", "clear-ownership", "--machine", machine, "--yes").exit_code == 0
    after = json.loads(run("machine", "show", "--machine", machine, "--json").stdout)["result"]
    assert after["owner_epoch"] == before["owner_epoch"] + 1
    assert after["owner_root_digest"] is None and after["counter"]["value"] == 0
    refused = run("platform", "status", *at(world))
    assert refused.exit_code == 1 and "take-ownership" in refused.stderr
    assert run("platform", "take-ownership", world.root, *at(world)).exit_code == 0
    assert run("platform", "status", *at(world)).exit_code == 0


def test_a_home_with_the_seed_inside_is_refused_and_migrated(world: World, tmp_path: Path) -> None:
    home = world.home
    with sqlite3.connect(home / "state.sqlite3") as db:
        db.execute("INSERT INTO kv VALUES ('platform/seed', ?)", (b"old-seed-0123456789abcdef",))
    refused = run("platform", "status", *at(world))
    assert refused.exit_code == 2 and "machine migrate" in refused.stderr
    new_machine = tmp_path / "new-machine" / "machine.json"
    migrated = run("machine", "migrate", "--home", home, "--machine", new_machine)
    assert migrated.exit_code == 0, migrated.output
    assert "platform le-sign" in migrated.stdout and str(new_machine) in migrated.stdout
    status = run("platform", "status", "--home", home, "--machine", new_machine, "--json")
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["result"]["launch_enclave"] is None
