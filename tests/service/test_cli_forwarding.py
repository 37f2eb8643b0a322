"""The command line through sgxlaunchd prints what it prints in-process, with the same exit code.

Two copies of one platform (home and machine): every command runs in-process on one and through
the daemon on the other, and the outputs (stdout, stderr, exit code; timestamps aside) are
compared."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgxlaunch.cli import main
from sgxlaunch.launch.enclave import sign_launch_enclave
from tests.conftest import shared_vectors
from tests.support.home import make_disk_home
from tests.support.keys import signer
from tests.support.platform import author_enclave
from tests.support.service import start_daemon

TIME = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)")
KEYID = re.compile(rb"((token[_ ]keyid|prev)\"?:? \"?)[0-9a-f]{16,64}")
"""A token's KEYID is fresh randomness at each mint (two platforms never agree on it), and so
are the log's chain links over records that hold it."""
PID = re.compile(rb'"pid": \d+')
"""The emulated driver's process ids count up for as long as the platform is open: from a
fresh start in each in-process command, from the daemon's start when served."""
MSRS = re.compile(rb'("launch_key_msrs": "|MSR hash     )[0-9a-f]{64}')
"""The launch-key MSRs are the CPU's volatile state: in permissive mode the driver writes the
last enclave's MRSIGNER there before its EINIT, which the daemon's CPU keeps (as a running
machine does) and each in-process command's freshly started CPU does not."""


def _normal(text: bytes) -> str:
    text = PID.sub(b'"pid": <pid>', TIME.sub(b"<time>", text))
    text = MSRS.sub(rb"\1<msrs>", text)
    return KEYID.sub(rb"\1<keyid>", text).decode()


def test_same_output_and_exit_codes_both_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    disk = make_disk_home(tmp_path / "a")
    shutil.copytree(disk.home, tmp_path / "b" / "home")
    shutil.copy2(disk.machine, tmp_path / "b" / "machine.json")
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(disk.image, inputs / "enclave.sgxs")
    shutil.copy(disk.sig, inputs / "enclave.sig")
    (inputs / "denied.sig").write_bytes(author_enclave(isvprodid=2)[1].to_bytes())
    (inputs / "short.sig").write_bytes(b"\0" * 100)
    (inputs / "policy-v2.json").write_bytes(disk.policy(2))
    (inputs / "policy-v3.json").write_bytes(disk.policy(3))
    (inputs / "policy-v1.json").write_bytes(disk.policy(1))
    (inputs / "permissive.json").write_bytes(disk.owner.mode("permissive", version=2))
    (inputs / "le.sig").write_bytes(
        sign_launch_enclave(disk.owner.root, signer("owner-le")).to_bytes()
    )
    shutil.copy(shared_vectors() / "kselftest" / "sign_key.pem", inputs / "le.pem")
    monkeypatch.chdir(inputs)
    monkeypatch.delenv("SGXLAUNCH_MACHINE", raising=False)
    sock = tmp_path / "d.sock"
    daemon = start_daemon(tmp_path / "b" / "home", tmp_path / "b" / "machine.json", sock)
    local = ["--home", str(disk.home), "--machine", str(disk.machine)]
    remote = ["--socket", str(sock)]
    commands = [
        ["platform", "status", "--json"],
        ["platform", "status"],
        ["run", "enclave.sgxs", "--sig", "enclave.sig", "--json"],
        ["run", "enclave.sgxs", "--sig", "enclave.sig"],
        ["run", "enclave.sgxs", "--sig", "denied.sig", "--json"],
        ["run", "enclave.sgxs", "--sig", "denied.sig"],
        ["run", "enclave.sgxs", "--sig", "short.sig", "--json"],
        ["platform", "install-policy", "policy-v2.json", "--json"],
        ["platform", "install-policy", "policy-v1.json", "--json"],
        ["platform", "install-policy", "policy-v1.json"],
        ["policy", "install", "policy-v3.json"],
        ["log", "show", "--json"],
        ["log", "show"],
        ["log", "verify", "--json"],
        ["log", "verify"],
        ["platform", "le-install", "le.sig"],
        ["platform", "le-sign", "--key", "le.pem"],
        ["platform", "le-install", "le.sig", "--json"],
        ["platform", "le-install", "short.sig", "--json"],
        ["platform", "le-sign", "--key", "le.pem", "--json"],
        ["quote", "make", "enclave.sgxs", "--sig", "enclave.sig", "-o", "q.bin", "--json"],
        ["platform", "mode", "permissive.json", "--json"],
        ["run", "enclave.sgxs", "--sig", "denied.sig", "--json"],
        ["platform", "status"],
        ["log", "verify"],
    ]
    runner = CliRunner()
    codes = []
    try:
        for command in commands:
            here = runner.invoke(main, [*command, *local], catch_exceptions=False)
            there = runner.invoke(main, [*command, *remote], catch_exceptions=False)
            assert there.exit_code == here.exit_code, (command, here.stderr, there.stderr)
            assert _normal(there.stdout_bytes) == _normal(here.stdout_bytes), command
            assert _normal(there.stderr_bytes) == _normal(here.stderr_bytes), command
            codes.append(here.exit_code)
    finally:
        assert daemon.stop() == 0
    # The comparison covered successes, denials (1) and bad input (2).
    assert {0, 1, 2} <= set(codes)
