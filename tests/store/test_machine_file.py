"""The machine file: strict parsing, mode 0600, never overwritten, compare-and-set, and one
platform session per machine at a time."""

from __future__ import annotations

import json
import stat
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from sgxlaunch._api import open_platform, read_image, read_sigstruct
from sgxlaunch.cpu.machine import MachineConflict, MachineState
from sgxlaunch.errors import MalformedInput, UsageError
from sgxlaunch.store import FileMachine
from tests.conftest import shared_vectors
from tests.support.cli import run

GEN = shared_vectors() / "generated"


def new_machine(tmp_path: Path) -> FileMachine:
    return FileMachine.create(tmp_path / "m" / "machine.json", MachineState(seed=b"s" * 32))


def test_created_0600_never_overwritten_and_round_trips(tmp_path: Path) -> None:
    machine = new_machine(tmp_path)
    assert stat.S_IMODE(machine.path.stat().st_mode) == 0o600
    assert machine.load() == MachineState(seed=b"s" * 32)
    with pytest.raises(UsageError, match="already exists"):
        FileMachine.create(machine.path, MachineState(seed=b"t" * 32))
    assert machine.load().seed == b"s" * 32


def test_compare_and_set_refuses_a_stale_read(tmp_path: Path) -> None:
    machine = new_machine(tmp_path)
    first = machine.load()
    machine.swap(first, replace(first, owner_epoch=1))
    with pytest.raises(MachineConflict):
        machine.swap(first, replace(first, owner_epoch=2))
    assert machine.load().owner_epoch == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("format", "other"),
        ("seed", "abc"),
        ("platform_id", "00" * 32),
        ("epc_size", -1),
        ("owner_epoch", True),
        ("owner_binding", "00"),
        ("counter", {"value": 0}),
        ("surprise", 1),
    ],
)
def test_a_damaged_field_is_named(tmp_path: Path, field: str, value: object) -> None:
    machine = new_machine(tmp_path)
    data = json.loads(machine.path.read_text())
    data[field] = value
    machine.path.write_text(json.dumps(data))
    with pytest.raises(MalformedInput) as err:
        machine.load()
    assert err.value.source == str(machine.path)
    assert field in str(err.value)


def test_concurrent_sessions_are_serialised_and_the_platform_keeps_starting(
    tmp_path: Path,
) -> None:
    """Two processes launching at once would each prepare a state from the same counter value;
    the session lock makes them take turns, so every record is committed and the platform
    starts afterwards."""
    keys, root, le = tmp_path / "keys", tmp_path / "root.json", tmp_path / "le.pem"
    assert run("owner", "init", "--keys", "1", "--threshold", "1", "--key-dir", keys,
               "-o", root).exit_code == 0  # fmt: skip
    assert run("key", "generate", "-o", le).exit_code == 0
    home, machine = tmp_path / "home", tmp_path / "machine" / "machine.json"
    assert run("platform", "init", "--home", home, "--machine", machine, "--root", root,
               "--le-key", le, "--epc-mib", "4").exit_code == 0  # fmt: skip
    image, sig = read_image(GEN / "case1_defaults.sgxs"), read_sigstruct(GEN / "case1_defaults.sig")
    errors: list[str] = []

    def launcher() -> None:
        for _ in range(3):
            with open_platform(home, machine) as platform:
                platform.run(image, sig)
                errors.extend(platform.log_errors)

    threads = [threading.Thread(target=launcher) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with open_platform(home, machine) as platform:
        assert platform.verify_log() == 12  # six attempts, each with its outcome
    held, other = FileMachine(machine), FileMachine(machine)
    with held.session(), pytest.raises(UsageError, match="in use"), other.session(wait=False):
        pass
