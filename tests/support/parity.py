"""The command line run both ways — in this process on one copy of a platform, through
sgxlaunchd on another copy — and the two outputs compared (docs/service.md, "The command line
through the daemon")."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from click.testing import CliRunner, Result

from sgxlaunch.cli import main
from tests.support.home import DiskHome, make_disk_home
from tests.support.service import Daemon, start_daemon

TIME = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)")
KEYID = re.compile(rb"((token[_ ]keyid|prev)\"?:? \"?)[0-9a-f]{16,64}")
"""A token's KEYID is fresh randomness at each mint, and so are the log's links over it."""
PID = re.compile(rb'"pid": \d+')
"""Emulated process ids count from each command's start in-process, from the daemon's start."""
MSRS = re.compile(rb'("launch_key_msrs": "|MSR hash     )[0-9a-f]{64}')
"""The launch-key MSRs are volatile CPU state the daemon's running CPU keeps."""
CONFIGID = re.compile(rb'("configid": ")[0-9a-f]{128}')
"""The driver gives each KSS enclave instance a fresh CONFIGID (the example loader's)."""
SCHEMA = json.loads(resources.files("sgxlaunch.cli").joinpath("output.schema.json").read_text())


def normal(text: bytes, extra: tuple[re.Pattern[bytes], ...] = ()) -> str:
    text = PID.sub(b'"pid": <pid>', TIME.sub(b"<time>", text))
    text = MSRS.sub(rb"\1<msrs>", text)
    text = CONFIGID.sub(rb"\1<configid>", text)
    for pattern in extra:
        text = pattern.sub(b"<varies>", text)
    return KEYID.sub(rb"\1<keyid>", text).decode()


def chdir_inputs(tmp_path: Path, monkeypatch: Any) -> Path:
    """A directory of inputs, made the working directory (file names in messages are then the
    same both ways), with no machine or socket from the environment."""
    monkeypatch.delenv("SGXLAUNCH_MACHINE", raising=False)
    monkeypatch.delenv("SGXLAUNCH_SOCKET", raising=False)
    path = tmp_path / "in"
    path.mkdir()
    monkeypatch.chdir(path)
    return path


def made_disk_home(tmp_path: Path) -> DiskHome:
    """An owner-mode platform on disk (``tests.support.home``) under ``tmp_path/made``."""
    (tmp_path / "made").mkdir()
    return make_disk_home(tmp_path / "made")


def copy_platform(home: Path, machine: Path, into: Path) -> tuple[Path, Path]:
    """A byte-for-byte copy of a platform (home and machine) under ``into``."""
    into.mkdir()
    shutil.copytree(home, into / "home")
    shutil.copy2(machine, into / "machine.json")
    return into / "home", into / "machine.json"


@dataclass
class Both:
    """One platform in two copies: ``local`` run in-process, ``remote`` served by ``daemon``."""

    local: tuple[Path, Path]
    remote: tuple[Path, Path]
    daemon: Daemon
    runner: CliRunner = field(default_factory=CliRunner)
    codes: list[int] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        home: Path,
        machine: Path,
        base: Path,
        argv: Callable[[Path, Path, Path], list[str]] | None = None,
    ) -> Both:
        """Copy the platform of ``home``/``machine`` twice under ``base`` and serve one copy."""
        local = copy_platform(home, machine, base / "local")
        remote = copy_platform(home, machine, base / "remote")
        sock = base / "d.sock"
        command = None if argv is None else argv(*remote, sock)
        return cls(local, remote, start_daemon(*remote, sock, argv=command))

    @property
    def local_args(self) -> list[str]:
        return ["--home", str(self.local[0]), "--machine", str(self.local[1])]

    @property
    def remote_args(self) -> list[str]:
        return ["--socket", str(self.daemon.socket)]

    def run_here(self, *command: str) -> Result:
        return self.runner.invoke(main, [*command, *self.local_args], catch_exceptions=False)

    def run_there(self, *command: str) -> Result:
        return self.runner.invoke(main, [*command, *self.remote_args], catch_exceptions=False)

    def compare(
        self,
        *command: str,
        expect: int | None = None,
        varies: tuple[re.Pattern[bytes], ...] = (),
        between: Callable[[], None] | None = None,
    ) -> tuple[Result, Result]:
        """Run ``command`` both ways; stdout, stderr and exit code must agree (and be
        ``expect``); a ``--json`` document must match the output schema. ``between`` runs
        after the in-process run (to restore an input the command consumed)."""
        here = self.run_here(*command)
        if between is not None:
            between()
        there = self.run_there(*command)
        assert there.exit_code == here.exit_code, (command, here.output, there.output)
        assert normal(there.stdout_bytes, varies) == normal(here.stdout_bytes, varies), command
        assert normal(there.stderr_bytes, varies) == normal(here.stderr_bytes, varies), command
        if expect is not None:
            assert here.exit_code == expect, (command, here.stdout, here.stderr)
        if "--json" in command:
            document = json.loads(here.stdout)
            errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(document))
            assert not errors, (command, errors[:3])
            assert document["ok"] == (here.exit_code == 0)
        self.codes.append(here.exit_code)
        return here, there

    def stop(self) -> None:
        assert self.daemon.stop() == 0


def result_of(out: Result) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(out.stdout)
    return value
