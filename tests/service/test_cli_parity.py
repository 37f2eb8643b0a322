"""The command line through sgxlaunchd prints exactly what it prints in-process: whole
multi-line error messages, ``run``'s "attempt was not logged" warnings, and the service's own
refusals in the one error shape (kind ``refused`` and its ``reason``)."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from sgxlaunch.cli import main
from sgxlaunch.service.client import DaemonClient, RemoteError
from tests.support.logfault import MESSAGE, daemon_argv, refuse_launch_records
from tests.support.parity import SCHEMA, Both, chdir_inputs, made_disk_home, result_of
from tests.support.service import as_user, shared_dir


@pytest.fixture
def inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return chdir_inputs(tmp_path, monkeypatch)


def test_multi_line_messages_are_carried_whole(tmp_path: Path, inputs: Path) -> None:
    """A file name with a line break makes the message two lines; the daemon's error object
    carries both (before: only the first, so stderr lost the rest)."""
    disk = made_disk_home(tmp_path)
    both = Both.start(disk.home, disk.machine, tmp_path)
    try:
        (inputs / "bad\npolicy.json").write_bytes(b"\x00 not a policy")
        (inputs / "policy-v2.json").write_bytes(disk.policy(2))
        (inputs / "old\npolicy.json").write_bytes(disk.policy(1))  # a rollback after v2
        both.compare("platform", "install-policy", "policy-v2.json", expect=0)
        for name, code in (("bad\npolicy.json", 2), ("old\npolicy.json", 1)):
            _, there = both.compare("platform", "install-policy", name, expect=code)
            assert name in there.stderr
            _, there = both.compare("platform", "install-policy", name, "--json", expect=code)
            message = result_of(there)["error"]["message"]
            assert message.startswith(name + ":") and "\n" in message
            # what --json says is what stderr shows, detail lines apart
            words = "error" if code == 2 else "verification failed"
            assert there.stderr.startswith(f"sgxlaunch: {words}: {message}")
    finally:
        both.stop()


def test_run_warns_of_unlogged_attempts_both_ways(tmp_path: Path, inputs: Path) -> None:
    """A store that refuses launch records (a full disk): in owner mode the launch is refused
    (EIO) and in permissive mode it goes ahead — with the same warning both ways (before: the
    daemon's run said nothing)."""
    disk = made_disk_home(tmp_path)
    both = Both.start(disk.home, disk.machine, tmp_path, argv=daemon_argv)
    undo = refuse_launch_records()
    try:
        (inputs / "enclave.sgxs").write_bytes(disk.image.read_bytes())
        (inputs / "enclave.sig").write_bytes(disk.sig.read_bytes())
        (inputs / "permissive.json").write_bytes(disk.owner.mode("permissive", version=2))
        warning = f"sgxlaunch: warning: the attempt was not logged: {MESSAGE}\n"
        for extra in ((), ("--json",)):
            here, there = both.compare("run", "enclave.sgxs", "--sig", "enclave.sig", *extra)
            assert here.exit_code == 1 and there.stderr.startswith(warning), there.stderr
        both.compare("platform", "mode", "permissive.json", expect=0)
        for extra in ((), ("--json",)):
            here, there = both.compare(
                "run", "enclave.sgxs", "--sig", "enclave.sig", *extra, expect=0
            )
            assert there.stderr == warning
        # bad input: refused before the launch, nothing to warn about
        (inputs / "short.sig").write_bytes(b"\0" * 100)
        here, there = both.compare("run", "enclave.sgxs", "--sig", "short.sig", "--json", expect=2)
        assert "warning" not in there.stderr
    finally:
        undo()
        both.stop()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Both]:
    disk = made_disk_home(tmp_path)
    both = Both.start(disk.home, disk.machine, tmp_path)
    yield both
    both.stop()


def _validate(document: dict[str, object]) -> None:
    errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(document))
    assert not errors, errors[:3]


def test_service_refusals_have_kind_refused_and_a_reason(
    served: Both, tmp_path: Path, inputs: Path
) -> None:
    """409 (another platform named), 404 and 403: kind ``refused``, the reason, exit code 2,
    in the command line's schema; the command line passes them on as they came."""
    other = tmp_path / "other-home"
    out = CliRunner().invoke(
        main, ["platform", "status", "--json", "--home", str(other), *served.remote_args]
    )
    assert out.exit_code == 2
    document = result_of(out)
    _validate(document)
    error = document["error"]
    assert (error["kind"], error["reason"], error["exit_code"]) == ("refused", "other_platform", 2)
    assert out.stderr.startswith("sgxlaunch: error: this sgxlaunchd serves home ")

    status, data = served.daemon.client().raw("GET", "/v1/no-such-thing")
    document = json.loads(data)
    _validate(document)
    assert status == 404 and document["error"]["reason"] == "not_found"
    assert document["error"]["kind"] == "refused"

    # a caller outside every role: 403, recorded, the same shape
    def attempt(path: str) -> dict[str, object]:
        try:
            DaemonClient(path).call("GET", "/v1/status")
        except RemoteError as exc:
            return {"status": exc.status, "kind": exc.remote_kind, **exc.remote_fields}
        return {"status": 200}

    with shared_dir() as shared:
        link = shared / "d.sock"
        os.link(served.daemon.socket, link)
        group = os.stat(link).st_gid  # the socket is 0660: its group may connect
        seen = as_user(4321, 4321, [group], lambda: attempt(str(link)))
    assert seen == {"status": 403, "kind": "refused", "reason": "forbidden"}


def test_refusal_documents_for_every_reason() -> None:
    """Each service status has its reason; retry_after where waiting helps; a bad request (400)
    stays kind ``usage``; every one matches the command line's schema."""
    from sgxlaunch.service.app import REFUSAL_REASONS, refusal_document

    for status, reason in REFUSAL_REASONS.items():
        retry = 3 if status in (429, 503) else None
        document = refusal_document("platform status", "no", status, retry)
        _validate(document)
        error = document["error"]
        assert (error["kind"], error["reason"], error["exit_code"]) == ("refused", reason, 2)
        assert error.get("retry_after") == retry
    bad = refusal_document("", "Content-Length is not a number", 400)
    _validate(bad)
    assert bad["error"]["kind"] == "usage" and "reason" not in bad["error"]


def test_log_export_and_attest_refuse_bad_requests_naming_the_field(served: Both) -> None:
    client = served.daemon.client()
    for body, field in (
        ({"nonce": "zz"}, "nonce"),
        ({"nonce": "ab" * 65}, "nonce"),
        ({"nonce": "01", "from": -1}, "from"),
        ({"nonce": "01", "extra": 1}, "extra"),
    ):
        with pytest.raises(RemoteError) as refused:
            client.call("POST", "/v1/log/attest", body)
        assert refused.value.status == 400, body
        assert refused.value.remote_kind == "malformed_input"
        assert refused.value.remote_fields["field"] == field
    status, data = client.raw("GET", "/v1/log/export?from=x")
    assert status == 400 and json.loads(data)["error"]["field"] == "from"
    # a good request: the whole log (empty here) in the export format
    exported = client.call("GET", "/v1/log/export")
    lines = base64.b64decode(exported["export"]).splitlines()
    assert json.loads(lines[0])["count"] == len(lines) - 1
