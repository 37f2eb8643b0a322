"""sgxlaunchd's life: it holds the platform, starts from systemd's socket, logs, stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sgxlaunch
from sgxlaunch.errors import UsageError
from sgxlaunch.formats.sgxs import write_sgxs
from sgxlaunch.service.client import DaemonClient, b64
from tests.support.home import make_disk_home
from tests.support.platform import author_enclave
from tests.support.service import Daemon, start_daemon

pytestmark = pytest.mark.slow  # started first under `make test` (tests/conftest.py)


def _cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sgxlaunch", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_in_process_commands_refuse_and_name_the_socket(tmp_path: Path) -> None:
    disk = make_disk_home(tmp_path)
    sock = tmp_path / "d.sock"
    daemon = start_daemon(disk.home, disk.machine, sock)
    try:
        env = {"SGXLAUNCH_SOCKET": "", "XDG_RUNTIME_DIR": str(tmp_path / "no-runtime")}
        for args in (
            ("platform", "status"),
            ("run", disk.image, "--sig", disk.sig),
            ("log", "verify"),
        ):
            done = _cli(*args, "--home", disk.home, "--machine", disk.machine, env=env)
            assert done.returncode == 2, done
            assert f"--socket {sock}" in done.stderr and "held by sgxlaunchd" in done.stderr
        # `owner install` writes the home's root: refused too, and the home is left as it was.
        root_file = tmp_path / "root.json"
        root_file.write_bytes(disk.owner.root)
        before = {p: p.read_bytes() for p in sorted(disk.home.rglob("*")) if p.is_file()}
        done = _cli("owner", "install", root_file, "--home", disk.home, env=env)
        assert done.returncode == 2, done
        assert f"--socket {sock}" in done.stderr and "held by sgxlaunchd" in done.stderr
        assert {p: p.read_bytes() for p in sorted(disk.home.rglob("*")) if p.is_file()} == before
        with (
            pytest.raises(UsageError, match="held by sgxlaunchd"),
            sgxlaunch.open_platform(disk.home, disk.machine),
        ):
            pass
        # A second daemon on the same platform refuses, naming the first one's socket.
        second = _cli(
            "serve", "--home", disk.home, "--machine", disk.machine, "--socket", tmp_path / "2.sock"
        )
        assert second.returncode == 2 and str(sock) in second.stderr
        assert not (tmp_path / "2.sock").exists()
        # With the socket given, the same command goes to the daemon.
        done = _cli(
            "platform", "status", "--json", "--socket", sock, env={**env, "SGXLAUNCH_MACHINE": ""}
        )
        assert done.returncode == 0 and json.loads(done.stdout)["result"]["mode"] == "owner"
    finally:
        assert daemon.stop() == 0
    # Stopped: the in-process command runs again, and the socket is gone.
    assert not sock.exists()
    done = _cli("platform", "status", "--home", disk.home, "--machine", disk.machine)
    assert done.returncode == 0, done.stderr


def test_readiness_line_and_structured_log(tmp_path: Path) -> None:
    disk = make_disk_home(tmp_path)
    daemon = start_daemon(disk.home, disk.machine, tmp_path / "d.sock")
    try:
        assert daemon.ready == {
            "ready": True,
            "socket": str(tmp_path / "d.sock"),
            "pid": daemon.proc.pid,
        }
        assert (os.stat(tmp_path / "d.sock").st_mode & 0o777) == 0o660
        daemon.client().call("GET", "/v1/ping")
    finally:
        daemon.stop()
    requests = [e for e in daemon.events() if e.get("event") == "request"]
    assert requests, daemon.log.read_text()
    entry = requests[-1]
    assert entry["uid"] == os.getuid() and entry["operation"] == "ping"
    assert entry["outcome"] == "ok" and isinstance(entry["us"], int) and entry["us"] >= 0
    assert [e["event"] for e in daemon.events()][-2:] == ["stopping", "stopped"]


def test_readiness_is_notified_to_systemd(tmp_path: Path) -> None:
    """Type=notify (contrib/systemd): the daemon sends READY=1 to $NOTIFY_SOCKET once, when its
    socket already answers."""
    disk = make_disk_home(tmp_path)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)
    sock = tmp_path / "d.sock"
    daemon = start_daemon(
        disk.home, disk.machine, sock, env={"NOTIFY_SOCKET": str(notify.getsockname())}
    )
    try:
        assert notify.recv(4096) == b"READY=1"
        assert DaemonClient(str(sock)).call("GET", "/v1/ping") == {"pong": True}
        notify.settimeout(0.5)
        with pytest.raises(TimeoutError):
            notify.recv(4096)  # said once
    finally:
        notify.close()
        assert daemon.stop() == 0


def test_cli_finds_the_daemon_by_environment_and_default_socket(tmp_path: Path) -> None:
    """With neither --socket nor --home, a platform command goes to the daemon named by
    $SGXLAUNCH_SOCKET, else to the one on the default socket ($XDG_RUNTIME_DIR/sgxlaunch/
    sgxlaunchd.sock) when it exists; with neither, it runs in-process (and here finds no home)."""
    disk = make_disk_home(tmp_path)
    runtime = tmp_path / "runtime"
    default = runtime / "sgxlaunch" / "sgxlaunchd.sock"
    default.parent.mkdir(parents=True)
    env = {
        "XDG_RUNTIME_DIR": str(runtime),
        "SGXLAUNCH_SOCKET": "",
        "SGXLAUNCH_HOME": "",
        "SGXLAUNCH_MACHINE": "",
        "HOME": str(tmp_path / "user"),  # the default home (~/.local/share/sgxlaunch): none
    }
    done = _cli("platform", "status", "--json", env=env)
    assert done.returncode == 2, done  # in-process: no platform in the default home
    assert json.loads(done.stdout)["ok"] is False

    def statuses(daemon: Daemon) -> int:
        return sum(1 for e in daemon.events() if e.get("operation") == "status")

    daemon = start_daemon(disk.home, disk.machine, default)
    try:
        done = _cli("platform", "status", "--json", env=env)
        assert done.returncode == 0, done
        assert json.loads(done.stdout)["result"]["mode"] == "owner"
        assert statuses(daemon) == 1
    finally:
        assert daemon.stop() == 0
    named = tmp_path / "named.sock"
    daemon = start_daemon(disk.home, disk.machine, named)
    try:
        done = _cli("platform", "status", "--json", env={**env, "SGXLAUNCH_SOCKET": str(named)})
        assert done.returncode == 0, done
        assert json.loads(done.stdout)["result"]["mode"] == "owner"
        assert statuses(daemon) == 1
    finally:
        assert daemon.stop() == 0


def _as_fd3(fd: int) -> None:
    os.dup2(fd, 3)


def test_socket_activation(tmp_path: Path) -> None:
    """systemd passes the listening socket as fd 3 with LISTEN_PID/LISTEN_FDS."""
    disk = make_disk_home(tmp_path)
    path = tmp_path / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    fd = listener.fileno()
    script = 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" -m sgxlaunch serve --home "$1" --machine "$2"'
    try:
        daemon = start_daemon(
            disk.home,
            disk.machine,
            path,
            argv=["sh", "-c", script, sys.executable, str(disk.home), str(disk.machine)],
            pass_fds=(3,),
            preexec=lambda: _as_fd3(fd),
        )
    finally:
        listener.close()
    try:
        assert daemon.ready["socket"] == str(path)
        assert DaemonClient(str(path)).call("GET", "/v1/ping") == {"pong": True}
    finally:
        assert daemon.stop() == 0
    assert path.exists(), "the socket belongs to systemd: the daemon must not remove it"


def test_sigterm_finishes_the_request_in_flight_and_refuses_new_ones(tmp_path: Path) -> None:
    disk = make_disk_home(tmp_path)
    sock_path = tmp_path / "d.sock"
    daemon = start_daemon(disk.home, disk.machine, sock_path)
    image, sig = author_enclave(isvsvn=9)
    body = json.dumps({"image": b64(write_sgxs(image)), "sigstruct": b64(sig.to_bytes())}).encode()
    conn = socket.socket(socket.AF_UNIX)
    conn.settimeout(30)
    conn.connect(str(sock_path))
    conn.sendall(
        b"POST /v1/run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body[: len(body) // 2]
    )
    time.sleep(0.3)  # the head is in: the request is in flight, its body half read
    daemon.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while not any(e.get("event") == "stopping" for e in daemon.events()):
        assert time.monotonic() < deadline, daemon.log.read_text()
        time.sleep(0.05)
    # New connections are refused now.
    late = socket.socket(socket.AF_UNIX)
    with pytest.raises(ConnectionRefusedError):
        late.connect(str(sock_path))
    late.close()
    conn.sendall(body[len(body) // 2 :])
    reply = b""
    while chunk := conn.recv(65536):
        reply += chunk
    conn.close()
    assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    result = json.loads(reply.split(b"\r\n\r\n", 1)[1])["result"]
    assert result["initialized"] is True
    assert daemon.proc.wait(30) == 0
    stopping = next(e for e in daemon.events() if e.get("event") == "stopping")
    assert stopping["in_flight"] == 1
    # The launch the client saw succeed is in the log.
    with sgxlaunch.open_platform(disk.home, disk.machine) as platform:
        records = platform.log_records()
        assert platform.verify_log() == 2
    assert [(r["kind"], r.get("isvsvn"), r.get("outcome")) for r in records] == [
        ("attempt", 9, None),
        ("outcome", None, "initialized"),
    ]


def test_systemd_units_match_the_daemon() -> None:
    """contrib/systemd: the socket unit listens where the daemon looks by default (no
    XDG_RUNTIME_DIR for a system service) with mode 0660, and the service runs `sgxlaunchd`
    with options `serve` accepts, as Type=notify (the daemon sends READY=1)."""
    import configparser
    import shlex

    from sgxlaunch.cli import main
    from sgxlaunch.service.client import default_socket

    units = Path(__file__).resolve().parents[2] / "contrib" / "systemd"
    sock = configparser.ConfigParser(strict=False)
    sock.read(units / "sgxlaunchd.socket")
    assert sock["Socket"]["ListenStream"] == str(default_socket({}))
    assert sock["Socket"]["SocketMode"] == "0660"
    service = configparser.ConfigParser(strict=False)
    service.read(units / "sgxlaunchd.service")
    assert service["Service"]["Type"] == "notify"
    argv = shlex.split(service["Service"]["ExecStart"])
    assert Path(argv[0]).name == "sgxlaunchd"
    # Parsed as `sgxlaunch serve ARGS` (a context under the group, with its settings).
    parent = main.make_context("sgxlaunch", ["serve"], resilient_parsing=True)
    serve = main.get_command(parent, "serve")
    assert serve is not None
    ctx = serve.make_context("serve", argv[1:], parent=parent)
    assert ctx.params["home"] and ctx.params["machine"]
