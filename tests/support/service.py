"""sgxlaunchd in tests: a daemon in its own process on a Unix socket; clients under other uids."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sgxlaunch.service.client import DaemonClient

READY_TIMEOUT_S = 60.0


@dataclass
class Daemon:
    """A running ``sgxlaunch serve`` and where it keeps its log."""

    proc: subprocess.Popen[bytes]
    socket: Path
    home: Path
    machine: Path
    log: Path
    ready: dict[str, Any] = field(default_factory=dict)

    def client(self, **kwargs: Any) -> DaemonClient:
        return DaemonClient(str(self.socket), **kwargs)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        code = self.proc.wait(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def kill(self) -> None:
        """kill -9."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def events(self) -> list[dict[str, Any]]:
        """The structured log lines (JSON) the daemon wrote to stderr so far."""
        out = []
        for line in self.log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    out.append(value)
        return out


def write_config(machine: Path, config: dict[str, Any]) -> Path:
    """The daemon's configuration beside the machine (root-owned, 0644: the tests run as root)."""
    path = machine.parent / "sgxlaunchd.json"
    path.write_text(json.dumps(config))
    path.chmod(0o644)
    return path


def start_daemon(
    home: Path,
    machine: Path,
    socket: Path,
    *,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    pass_fds: tuple[int, ...] = (),
    preexec: Callable[[], None] | None = None,
    argv: list[str] | None = None,
) -> Daemon:
    """Start ``sgxlaunch serve`` and wait for its readiness line."""
    log = log or socket.with_suffix(".log")
    command = argv or [
        sys.executable,
        "-m",
        "sgxlaunch",
        "serve",
        "--home",
        str(home),
        "--machine",
        str(machine),
        "--socket",
        str(socket),
        *args,
    ]
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, **(env or {})},
            pass_fds=pass_fds,
            preexec_fn=preexec,
        )
    daemon = Daemon(proc, socket, home, machine, log)
    assert proc.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, left))
        if not ready:
            daemon.kill()
            pytest.fail(f"sgxlaunchd not ready in {READY_TIMEOUT_S} s: {log.read_text()[-2000:]}")
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            proc.wait(30)
            pytest.fail(f"sgxlaunchd exited ({proc.returncode}): {log.read_text()[-2000:]}")
        line += chunk
    daemon.ready = json.loads(line)
    return daemon


@contextlib.contextmanager
def shared_dir() -> Iterator[Path]:
    """A directory other uids can traverse (pytest's tmp_path is 0700), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="sgxlaunchd-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def as_user(uid: int, gid: int, groups: list[int], fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a child process under ``uid``/``gid``/``groups`` (fork + setuid) and return
    its JSON-able result. Fails the test (never skips) when the identity cannot be taken."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_end)
        try:
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            if os.getuid() != uid or os.geteuid() != uid:
                raise RuntimeError(f"still uid {os.getuid()}")
            payload = {"ok": True, "value": fn()}
        except BaseException as exc:
            payload = {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
                "tb": traceback.format_exc(),
            }
        data = json.dumps(payload).encode()
        os.write(write_end, data)
        os._exit(0)
    os.close(write_end)
    chunks = []
    while True:
        chunk = os.read(read_end, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    result = json.loads(b"".join(chunks) or b'{"ok": false, "error": "the child wrote nothing"}')
    if not result["ok"]:
        pytest.fail(f"client under uid {uid} failed: {result['error']}\n{result.get('tb', '')}")
    return result["value"]


def kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
