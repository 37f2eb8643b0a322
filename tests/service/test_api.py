"""sgxlaunchd's API on a real Unix socket: each operation, its effect, the one document shape."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sgxlaunch.arch import EinitToken
from sgxlaunch.formats.sgxs import write_sgxs
from sgxlaunch.service.client import DaemonClient, RemoteError, b64
from tests.support.home import DiskHome, make_disk_home
from tests.support.platform import author_enclave
from tests.support.service import Daemon, start_daemon

pytestmark = pytest.mark.slow  # started first under `make test` (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]


def _schema() -> dict[str, Any]:
    text = resources.files("sgxlaunch.cli").joinpath("output.schema.json").read_text()
    value: dict[str, Any] = json.loads(text)
    return value


SCHEMA = _schema()


@pytest.fixture
def disk(tmp_path: Path) -> DiskHome:
    return make_disk_home(tmp_path)


@pytest.fixture
def daemon(disk: DiskHome, tmp_path: Path) -> Iterator[Daemon]:
    served = start_daemon(disk.home, disk.machine, tmp_path / "d.sock")
    yield served
    assert served.stop() == 0


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, DiskHome]]:
    """One daemon for the tests that change nothing on the platform."""
    base = tmp_path_factory.mktemp("shared")
    disk = make_disk_home(base)
    served = start_daemon(disk.home, disk.machine, base / "d.sock")
    yield served, disk
    assert served.stop() == 0


def raw(client: DaemonClient, method: str, target: str, body: Any = None) -> tuple[int, Any]:
    status, data = client.raw(method, target, body)
    document = json.loads(data)
    jsonschema.validate(document, SCHEMA)
    return status, document


def run_body(isvsvn: int = 1, isvprodid: int = 1) -> dict[str, Any]:
    image, sig = author_enclave(isvsvn=isvsvn, isvprodid=isvprodid)
    return {"image": b64(write_sgxs(image)), "sigstruct": b64(sig.to_bytes())}


def test_run_is_initialized_and_logged(daemon: Daemon) -> None:
    client = daemon.client()
    status, doc = raw(client, "POST", "/v1/run", run_body())
    assert status == 200, doc
    result = doc["result"]
    assert (result["initialized"], result["mode"], result["decision"]) == (True, "owner", "allowed")
    assert result["rule"] == "author-app"
    page = client.call("GET", "/v1/log/records")
    kinds = [(r["kind"], r.get("outcome")) for r in page["records"]]
    assert kinds == [("attempt", None), ("outcome", "initialized")]
    assert page["records"][0]["mrenclave"] == result["mrenclave"]
    assert client.call("POST", "/v1/log/verify") == {"valid": True, "records": 2}
    assert client.call("GET", "/v1/status")["log_records"] == 2


def test_run_with_passed_descriptors(daemon: Daemon, disk: DiskHome) -> None:
    """The image and SIGSTRUCT as descriptors (SCM_RIGHTS), never as paths."""
    client = daemon.client()
    fds = [os.open(disk.image, os.O_RDONLY), os.open(disk.sig, os.O_RDONLY)]
    try:
        result = client.call("POST", "/v1/run", {"image_fd": 0, "sigstruct_fd": 1}, fds=fds)
    finally:
        for fd in fds:
            os.close(fd)
    assert result["initialized"] is True
    # A path is not an input: the field does not exist.
    with pytest.raises(RemoteError) as refused:
        client.call("POST", "/v1/run", {"image_path": str(disk.image), "sigstruct_fd": 0})
    assert refused.value.remote_kind == "malformed_input"
    assert refused.value.remote_fields["field"] == "image_path"
    # A descriptor index that was not passed names the field.
    with pytest.raises(RemoteError) as missing:
        client.call("POST", "/v1/run", {"image_fd": 0, "sigstruct_fd": 1})
    assert missing.value.remote_fields["field"] == "image_fd"


def test_write_only_descriptor_refused(shared: tuple[Daemon, DiskHome], tmp_path: Path) -> None:
    daemon, disk = shared
    target = tmp_path / "w"
    target.write_bytes(disk.image.read_bytes())
    fds = [os.open(target, os.O_WRONLY), os.open(disk.sig, os.O_RDONLY)]
    try:
        with pytest.raises(RemoteError) as refused:
            daemon.client().call("POST", "/v1/run", {"image_fd": 0, "sigstruct_fd": 1}, fds=fds)
    finally:
        for fd in fds:
            os.close(fd)
    assert "not open for reading" in refused.value.message


def test_denied_run_reports_the_decision(daemon: Daemon) -> None:
    status, doc = raw(daemon.client(), "POST", "/v1/run", run_body(isvprodid=2))
    assert status == 422
    assert doc["error"]["kind"] == "denied" and doc["error"]["exit_code"] == 1
    assert doc["result"]["decision"] == "denied"
    assert doc["result"]["reasons"], doc
    records = daemon.client().call("GET", "/v1/log/records")["records"]
    assert records[0]["decision"] == "denied"


def test_token_mint_then_launch_with_it(daemon: Daemon) -> None:
    client = daemon.client()
    body = run_body()
    minted = client.call("POST", "/v1/token", {"sigstruct": body["sigstruct"]})
    assert minted["allowed"] is True and minted["rule"] == "author-app"
    token = bytes.fromhex(minted["token"])
    assert len(token) == EinitToken.SIZE
    assert EinitToken.from_bytes_raw(token).valid & 1
    assert minted["token_keyid"] == EinitToken.from_bytes_raw(token).keyid.hex()
    launched = client.call("POST", "/v1/run", {**body, "token": b64(token)})
    assert (launched["initialized"], launched["decision"]) == (True, "token supplied")
    # A token for another enclave's SIGSTRUCT does not launch this one (KEYID binding).
    other = run_body(isvsvn=2)
    with pytest.raises(RemoteError) as refused:
        client.call("POST", "/v1/run", {**other, "token": b64(token)})
    assert refused.value.remote_kind == "launch_failed"


def test_token_denied(shared: tuple[Daemon, DiskHome]) -> None:
    daemon, _disk = shared
    status, doc = raw(
        daemon.client(), "POST", "/v1/token", {"sigstruct": run_body(isvprodid=2)["sigstruct"]}
    )
    assert status == 422 and doc["error"]["kind"] == "denied"
    assert doc["result"]["allowed"] is False and doc["result"]["token"] is None


def test_owner_operations(daemon: Daemon, disk: DiskHome) -> None:
    client = daemon.client()
    installed = client.call("POST", "/v1/policy", {"document": b64(disk.policy(2))})
    assert installed["version"] == 2 and installed["installed"] is True
    assert client.call("GET", "/v1/status")["policy"]["version"] == 2
    # Rollback is refused by the launch enclave, and nothing changes.
    with pytest.raises(RemoteError) as rollback:
        client.call("POST", "/v1/policy", {"document": b64(disk.policy(1)), "source": "v1.json"})
    assert rollback.value.remote_kind == "verification_failed"
    assert rollback.value.message.startswith("v1.json: ")
    assert client.call("GET", "/v1/status")["policy"]["version"] == 2
    # The owner's mode document: permissive, then the platform is reopened in that mode.
    switched = client.call(
        "POST", "/v1/mode", {"document": b64(disk.owner.mode("permissive", version=2))}
    )
    assert switched["mode"] == "permissive"
    assert client.call("GET", "/v1/status")["mode"] == "permissive"
    launched = client.call("POST", "/v1/run", run_body(isvprodid=2))
    assert launched["decision"] == "permissive"
    # The owner root (to sign the launch enclave for) and the launch enclave's installation.
    root = base64.b64decode(client.call("GET", "/v1/owner/root")["root"])
    assert root == disk.owner.root
    from sgxlaunch.launch.enclave import sign_launch_enclave
    from tests.support.keys import signer

    le = sign_launch_enclave(root, signer("owner-le"))
    answer = client.call("POST", "/v1/launch-enclave", {"sigstruct": b64(le.to_bytes())})
    assert answer == {"mrsigner": le.mrsigner.hex()}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"image": "!!", "sigstruct": ""}, "image"),
        ({"image": b64(b"x"), "sigstruct": b64(b"x"), "extra": 1}, "extra"),
        ({"sigstruct": b64(b"x")}, "image"),
        ({"image": b64(b"x"), "image_fd": 0, "sigstruct": b64(b"x")}, "image"),
        ({"image": 5, "sigstruct": b64(b"x")}, "image"),
        ({"image": b64(b"x"), "sigstruct": b64(b"x"), "size": -1}, "size"),
    ],
)
def test_bad_run_bodies_name_the_field(
    shared: tuple[Daemon, DiskHome], body: dict[str, Any], field: str
) -> None:
    daemon, _disk = shared
    status, doc = raw(daemon.client(), "POST", "/v1/run", body)
    assert status == 400
    assert doc["error"]["kind"] == "malformed_input"
    assert doc["error"]["field"] == field
    assert doc["error"]["source"] == "request"


def test_bad_image_and_sigstruct_are_named(shared: tuple[Daemon, DiskHome]) -> None:
    daemon, _disk = shared
    body = run_body()
    status, doc = raw(daemon.client(), "POST", "/v1/run", {**body, "sigstruct": b64(b"\0" * 1808)})
    assert status == 400 and doc["error"]["source"] == "request field sigstruct"
    status, doc = raw(daemon.client(), "POST", "/v1/run", {**body, "image": b64(b"\1" * 100)})
    assert status == 400 and doc["error"]["source"] == "request field image"


def test_service_errors_keep_the_shape(shared: tuple[Daemon, DiskHome]) -> None:
    daemon, _disk = shared
    client = daemon.client()
    for method, target, code in [
        ("GET", "/v1/nothing", 404),
        ("GET", "/v1/run", 405),
        ("GET", "/v1/log/records?start=x", 400),
    ]:
        status, doc = raw(client, method, target)
        assert status == code, (target, doc)
        assert doc["ok"] is False and doc["error"]["exit_code"] == 2
    status, data = client.raw("POST", "/v1/run", None)
    assert status == 400 and json.loads(data)["error"]["field"] == "image"
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(daemon.socket))
    sock.sendall(
        b"POST /v1/run HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\n{{{"
    )
    reply = b""
    while chunk := sock.recv(65536):
        reply += chunk
    sock.close()
    head, body = reply.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 400")
    doc = json.loads(body)
    jsonschema.validate(doc, SCHEMA)
    assert doc["error"]["message"] == "request: the request body is not JSON"


def test_log_records_are_paged(daemon: Daemon) -> None:
    client = daemon.client()
    for svn in (1, 2, 3):
        client.call("POST", "/v1/run", run_body(isvsvn=svn))
    seen, start = [], 0
    while start is not None:
        page = client.call("GET", f"/v1/log/records?start={start}&limit=4")
        assert page["count"] == 6 and len(page["records"]) <= 4
        seen.extend(page["records"])
        start = page["next"]
    assert [r["seq"] for r in seen] == list(range(6))
    assert [r["isvsvn"] for r in seen if r["kind"] == "attempt"] == [1, 2, 3]


def test_log_follow_streams_new_records(daemon: Daemon) -> None:
    client = daemon.client()
    client.call("POST", "/v1/run", run_body(isvsvn=1))
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(20)
    sock.connect(str(daemon.socket))
    sock.sendall(b"GET /v1/log/follow HTTP/1.1\r\nHost: x\r\n\r\n")
    buffer = b""
    while b": following" not in buffer:
        buffer += sock.recv(4096)
    assert b"200 OK" in buffer and b"text/event-stream" in buffer
    client.call("POST", "/v1/run", run_body(isvsvn=7))
    deadline = time.monotonic() + 20
    while buffer.count(b"event: record") < 2 and time.monotonic() < deadline:
        buffer += sock.recv(4096)
    sock.close()
    events = [
        json.loads(line[len(b"data: ") :])
        for line in buffer.split(b"\n")
        if line.startswith(b"data: ")
    ]
    # Only the records appended after the follower joined (2 and 3), in order.
    assert [(e["seq"], e["kind"]) for e in events[:2]] == [(2, "attempt"), (3, "outcome")]
    assert events[0]["isvsvn"] == 7


def test_openapi_document_is_committed(shared: tuple[Daemon, DiskHome]) -> None:
    daemon, _disk = shared
    status, data = daemon.client().raw("GET", "/v1/openapi.json")
    assert status == 200
    committed = (REPO / "docs" / "openapi.json").read_bytes()
    assert data == committed, "regenerate: python -m sgxlaunch.service.openapi > docs/openapi.json"
    document = json.loads(data)
    assert document["openapi"] == "3.1.0"
    from sgxlaunch.service.app import OPERATIONS

    for op in OPERATIONS:
        assert op.method.lower() in document["paths"][op.path]


def test_other_platform_is_refused(shared: tuple[Daemon, DiskHome], tmp_path: Path) -> None:
    daemon, _disk = shared
    client = DaemonClient(str(daemon.socket), home=str(tmp_path / "elsewhere"))
    with pytest.raises(RemoteError, match="serves home") as refused:
        client.call("GET", "/v1/status")
    assert refused.value.status == 409
    same = DaemonClient(str(daemon.socket), home=str(daemon.home), machine=str(daemon.machine))
    assert same.call("GET", "/v1/ping") == {"pong": True}
