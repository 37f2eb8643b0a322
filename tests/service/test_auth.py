"""Authorization by the caller's credentials (SO_PEERCRED / SO_PEERGROUPS), with real clients
under other uids (fork + setuid: the suite runs as root; where that cannot happen the test
fails, it does not skip)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sgxlaunch.service.client import DaemonClient, RemoteError, b64
from tests.support.home import DiskHome, make_disk_home
from tests.support.service import Daemon, as_user, shared_dir, start_daemon, write_config

pytestmark = pytest.mark.slow  # started first under `make test` (tests/conftest.py)

SOCKET_GID, ENCLAVE_GID, READER_GID, OWNER_GID = 4200, 4201, 4202, 4203
CONFIG = {
    "owner_uids": [0],
    "owner_gids": [OWNER_GID],
    "enclave_gids": [ENCLAVE_GID],
    "reader_gids": [READER_GID],
    "socket_gid": SOCKET_GID,
    "limits": {"owner_burst": 3, "owner_rate_per_minute": 1},
}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Daemon, DiskHome, Path]]:
    if os.geteuid() != 0:
        pytest.fail("these tests need root to run clients under other uids (CI runs as root)")
    disk = make_disk_home(tmp_path)
    write_config(disk.machine, CONFIG)
    with shared_dir() as shared:
        for name in ("image", "sig"):
            source: Path = getattr(disk, name)
            copy = shared / source.name
            copy.write_bytes(source.read_bytes())
            copy.chmod(0o644)
        daemon = start_daemon(disk.home, disk.machine, shared / "d.sock")
        try:
            yield daemon, disk, shared
        finally:
            daemon.stop()


def _statuses(socket_path: str, shared: str, policy: str) -> dict[str, Any]:
    """Runs in the child under the other uid: one request of each role."""
    client = DaemonClient(socket_path)
    out: dict[str, Any] = {}

    def attempt(
        name: str, method: str, target: str, body: Any = None, fds: list[int] | None = None
    ) -> None:
        try:
            client.call(method, target, body, fds=fds or [])
            out[name] = 200
        except RemoteError as exc:
            out[name] = exc.status
            out[name + "_message"] = exc.message

    attempt("ping", "GET", "/v1/ping")
    attempt("status", "GET", "/v1/status")
    attempt("records", "GET", "/v1/log/records")
    fds = [
        os.open(f"{shared}/enclave.sgxs", os.O_RDONLY),
        os.open(f"{shared}/enclave.sig", os.O_RDONLY),
    ]
    attempt("run", "POST", "/v1/run", {"image_fd": 0, "sigstruct_fd": 1}, fds)
    attempt("token", "POST", "/v1/token", {"sigstruct_fd": 1}, fds)
    attempt("policy", "POST", "/v1/policy", {"document": policy})
    return out


@pytest.mark.parametrize(
    ("uid", "groups", "expected"),
    [
        # Only the socket's group: may connect, may do nothing.
        (
            5001,
            [SOCKET_GID],
            {"ping": 403, "status": 403, "records": 403, "run": 403, "token": 403, "policy": 403},
        ),
        # The enclave device's group: launches and tokens (and reads), not owner operations.
        (
            5002,
            [SOCKET_GID, ENCLAVE_GID],
            {"ping": 200, "status": 200, "records": 200, "run": 200, "token": 200, "policy": 403},
        ),
        # A reader: status and the log only.
        (
            5003,
            [SOCKET_GID, READER_GID],
            {"ping": 200, "status": 200, "records": 200, "run": 403, "token": 403, "policy": 403},
        ),
        # An owner by group: everything.
        (
            5004,
            [SOCKET_GID, OWNER_GID],
            {"ping": 200, "status": 200, "records": 200, "run": 200, "token": 200, "policy": 200},
        ),
    ],
)
def test_roles_from_peer_credentials(
    served: tuple[Daemon, DiskHome, Path], uid: int, groups: list[int], expected: dict[str, int]
) -> None:
    daemon, disk, shared = served
    policy = b64(disk.policy(2))
    got = as_user(uid, uid, groups, lambda: _statuses(str(daemon.socket), str(shared), policy))
    assert {k: v for k, v in got.items() if not k.endswith("_message")} == expected
    if expected["policy"] == 403:
        assert f"uid {uid}" in got["policy_message"] and "owner operation" in got["policy_message"]
    # Every refusal is recorded with the caller's uid.
    refused = [
        e
        for e in daemon.events()
        if e.get("event") == "request" and e.get("uid") == uid and e.get("status") == 403
    ]
    assert sorted(e["operation"] for e in refused) == sorted(
        {
            "ping": "ping",
            "status": "status",
            "records": "log_records",
            "run": "run",
            "token": "token",
            "policy": "install_policy",
        }[k]
        for k, v in expected.items()
        if v == 403
    )
    assert all(e["outcome"] == "forbidden" for e in refused)
    # The effect of what was allowed: the launch is in the log; the policy is installed.
    status = daemon.client().call("GET", "/v1/status")
    assert status["policy"]["version"] == (2 if expected["policy"] == 200 else 1)
    assert status["log_records"] == (2 if expected["run"] == 200 else 0)


def test_without_the_socket_group_no_connection(served: tuple[Daemon, DiskHome, Path]) -> None:
    daemon, _disk, _shared = served

    def connect() -> str:
        try:
            DaemonClient(str(daemon.socket)).call("GET", "/v1/ping")
        except Exception as exc:
            return str(exc)
        return "connected"

    message = as_user(5005, 5005, [], connect)
    assert "Permission denied" in message
    assert oct(os.stat(daemon.socket).st_mode & 0o777) == oct(0o660)
    assert os.stat(daemon.socket).st_gid == SOCKET_GID


def test_owner_operations_are_rate_limited(served: tuple[Daemon, DiskHome, Path]) -> None:
    daemon, _disk, _shared = served
    client = daemon.client()
    statuses = []
    for _ in range(4):
        try:
            client.call("POST", "/v1/launch-enclave", {"sigstruct": b64(b"not one")})
        except RemoteError as exc:
            statuses.append(exc.status)
    assert statuses == [400, 400, 400, 429]
    status, _data = client.raw("POST", "/v1/launch-enclave", {})
    assert status == 429
    # Launches are not owner operations: not limited.
    assert client.call("GET", "/v1/ping") == {"pong": True}
    limited = [e for e in daemon.events() if e.get("outcome") == "rate_limited"]
    assert len(limited) == 2 and limited[0]["uid"] == 0


def _owner_attempts(socket_path: str, count: int) -> list[int]:
    """Runs in the child: ``count`` owner operations (refused as bad input, 400, unless the
    rate limit refuses them first, 429); the statuses."""
    client = DaemonClient(socket_path)
    statuses = []
    for _ in range(count):
        try:
            client.call("POST", "/v1/launch-enclave", {"sigstruct": b64(b"not one")})
        except RemoteError as exc:
            statuses.append(exc.status)
    return statuses


def _raw_head(socket_path: str, request: bytes) -> bytes:
    """The response head the daemon sends for one raw request."""
    conn = socket.socket(socket.AF_UNIX)
    conn.settimeout(30)
    conn.connect(socket_path)
    conn.sendall(request)
    reply = b""
    while b"\r\n\r\n" not in reply and (chunk := conn.recv(65536)):
        reply += chunk
    conn.close()
    return reply.partition(b"\r\n\r\n")[0]


def test_owner_rate_limit_is_per_uid_with_retry_after(
    served: tuple[Daemon, DiskHome, Path],
) -> None:
    """The bucket is the caller's uid's: once uid 0 is limited (429 with Retry-After), another
    owner uid (5004, by the owner group) still has its whole burst, then is limited in turn;
    uid 0 stays limited, and each refusal is recorded under its own uid."""
    daemon, _disk, _shared = served
    sock = str(daemon.socket)
    assert _owner_attempts(sock, 4) == [400, 400, 400, 429]
    body = json.dumps({"sigstruct": b64(b"not one")}).encode()
    head = _raw_head(
        sock,
        b"POST /v1/launch-enclave HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body,
    )
    assert head.startswith(b"HTTP/1.1 429"), head
    retry = [line for line in head.split(b"\r\n") if line.lower().startswith(b"retry-after:")]
    assert len(retry) == 1 and int(retry[0].split(b":", 1)[1]) >= 1, head
    other = as_user(5004, 5004, [SOCKET_GID, OWNER_GID], lambda: _owner_attempts(sock, 4))
    assert other == [400, 400, 400, 429]
    assert _owner_attempts(sock, 1) == [429]
    limited = [e["uid"] for e in daemon.events() if e.get("outcome") == "rate_limited"]
    assert sorted(limited) == [0, 0, 0, 5004]


def _serve(disk: DiskHome, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sgxlaunch",
            "serve",
            "--home",
            str(disk.home),
            "--machine",
            str(disk.machine),
            "--socket",
            str(disk.home.parent / "x.sock"),
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_config_must_be_root_owned_and_outside_the_home(tmp_path: Path) -> None:
    disk = make_disk_home(tmp_path)
    config = write_config(disk.machine, CONFIG)
    os.chown(config, 5001, 0)
    done = _serve(disk)
    assert done.returncode == 2 and "must be owned by root" in done.stderr
    os.chown(config, 0, 0)
    config.chmod(0o666)
    done = _serve(disk)
    assert done.returncode == 2 and "writable by group or others" in done.stderr
    inside = disk.home / "sgxlaunchd.json"
    inside.write_text("{}")
    done = _serve(disk, "--config", str(inside))
    assert done.returncode == 2 and "must not live in the home" in done.stderr
    config.chmod(0o644)
    config.write_text('{"owner_uids": [0], "enclave_gids": ["wheel"]}')
    done = _serve(disk)
    assert done.returncode == 2 and "enclave_gids" in done.stderr
    assert not (disk.home.parent / "x.sock").exists()
