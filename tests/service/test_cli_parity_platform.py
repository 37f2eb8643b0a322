"""The platform commands that were not forwarded to sgxlaunchd (issue 21): protected code's
``platform le-key-quote`` and ``platform add-code-key`` (issue 20), a run of the example loader
under an ``attested-code`` rule (issue 17's grant) and of the protected enclave (the release),
``platform le-image``, ``platform take-ownership`` and ``recovery apply`` — each run in-process
on one copy of a platform and through the daemon on another, output and exit code compared —
and the machine's physical-presence commands, which refuse while the daemon holds the
machine."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from sgxlaunch.cli import main
from sgxlaunch.formats.quote import parse_quote
from sgxlaunch.launch.enclave import RECOVERY_PAYLOAD_TYPE, recovery_payload
from sgxlaunch.pcl.crypto import le_key_reportdata
from sgxlaunch.policy.envelope import sign_payload
from sgxlaunch.store import FileMachine
from tests.support.parity import Both, chdir_inputs, made_disk_home, result_of
from tests.support.pcl_cli import pcl_scenario
from tests.support.platform import Owner

HEAD = re.compile(rb'(?<="head": ")[0-9a-f]{64}')
"""The log's chain head covers records holding fresh randomness (a token's KEYID)."""
QUOTE_SHA = re.compile(rb"(?<=\"quote_sha256\": \")[0-9a-f]{64}")
"""A quote's ECDSA signature takes a fresh nonce: two quotes of one REPORT differ."""


@pytest.fixture
def inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return chdir_inputs(tmp_path, monkeypatch)


def _cli(*args: str | Path) -> str:
    out = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert out.exit_code == 0, (args, out.output)
    return out.stdout


def test_protected_code_and_attested_code_both_ways(tmp_path: Path, inputs: Path) -> None:
    """On a copy of the protected-code story's platform (its launch enclave already holds a
    key-agreement key, so both copies quote the same public key): the key quote, the wrapped
    key, the protected enclave's run (the release), the loader's run (the grant) and the log."""
    s = pcl_scenario()
    both = Both.start(s.home, s.tmp / "machine.json", tmp_path)
    try:
        for name in ("hello.enc.sgxs", "hello.enc.sig", "wrapped.bin"):
            shutil.copy(s.tmp / name, inputs / name)
        (inputs / "garbage.bin").write_bytes(b"\x01" * 63)
        # the loader, signed by the author; policy 4 allows it (attested-code) and the
        # protected enclave (release and RWX pages)
        loader = _cli("example", "--loader", "-o", "loader.sgxs").strip()
        _cli("sign", "--key", s.tmp / "author.pem", "loader.sgxs", "--isvprodid", "4",
             "--attributes", "0x84/0x3", "-o", "loader.sig")  # fmt: skip
        doc = json.loads((s.tmp / "policy-v3.json").read_text())
        doc["version"] = 4
        author = next(r for r in doc["allow"] if r.get("id") == "author")
        author.update(protected_code="allow", rwx_pages="allow")
        doc["allow"].append({"id": "loader", "mrenclave": loader, "kss": True,
                             "dynamic_memory": "attested-code", "code_hashes": "any"})  # fmt: skip
        (inputs / "policy-v4.json").write_text(json.dumps(doc))
        keys = sorted(str(p) for p in (s.tmp / "keys").glob("*.key.pem"))
        _cli("policy", "sign", "policy-v4.json", "--key", keys[0], "--key", keys[1], "-o",
             "policy-v4.signed.json")  # fmt: skip
        both.compare("platform", "install-policy", "policy-v4.signed.json", expect=0)

        for extra in ((), ("--json",)):
            both.compare("platform", "add-code-key", "wrapped.bin", *extra, expect=0)
            both.compare("platform", "add-code-key", "garbage.bin", *extra, expect=2)

        enclave = ("run", "hello.enc.sgxs", "--sig", "hello.enc.sig")
        _here, there = both.compare(*enclave, "--input", "both", expect=0)
        assert "both" in there.stdout
        both.compare(*enclave, "--input", "json", "--json", expect=0)
        _here, there = both.compare("run", "loader.sgxs", "--sig", "loader.sig", "--input",
                                    "both", "--json", expect=0)  # fmt: skip
        assert (
            result_of(there)["result"]["ecall_output"] == "fetched code ran inside the loader: both"
        )
        _here, there = both.compare("log", "show", "--json", expect=0)
        kinds = [r["kind"] for r in result_of(there)["result"]["records"]]
        assert "grant" in kinds and "code-key-release" in kinds and "code-key-added" in kinds
        both.compare("log", "verify", expect=0)
        _here, there = both.compare("log", "export", "-o", "log.jsonl", "--force", "--json")
        assert result_of(there)["result"]["records"] == len(kinds)
        assert (inputs / "log.jsonl").read_bytes().count(b"\n") == len(kinds) + 1
        both.compare("log", "export", "-o", "log.jsonl", "--from", "999", "--force", expect=2)
        attest = ("log", "attest", "-o", "head.quote", "--force", "--nonce")
        _here, there = both.compare(*attest, "5f1c0a9e", "--json", expect=0, varies=(HEAD,))
        attested = result_of(there)["result"]
        assert attested["count"] > len(kinds)  # the PCE and QE launched first
        # what the daemon wrote (last) verifies remotely, as a collector checks it
        remote_machine = both.remote[1]
        _cli("platform", "root", "-o", "pcs-root.der", "--machine", remote_machine)
        _cli("platform", "collateral", "-o", "collateral.json", "--machine", remote_machine)
        _cli("log", "verify", "--records", "head.quote.records.jsonl", "--quote", "head.quote",
             "--collateral", "collateral.json", "--root", "pcs-root.der", "--nonce", "5f1c0a9e",
             "--le-mrsigner", attested["le_mrsigner"], "--owner-root", s.tmp / "root.json",
             "--platform-id", attested["platform_id"])  # fmt: skip
        both.compare(*attest, "", "--json", expect=2)
        # Last: in-process, each quoting command launches the PCE and QE afresh (their
        # launch records), the daemon's keep running (recorded once), so the logs part here.
        quote = ("platform", "le-key-quote", "-o", "le.quote", "--public-key-out", "le.pub")
        both.compare(*quote, "--force", expect=0)
        _here, there = both.compare(*quote, "--force", "--json", expect=0, varies=(QUOTE_SHA,))
        assert result_of(there)["result"]["public_key"] == (inputs / "le.pub").read_bytes().hex()
        # the daemon's quote (written last) binds the key it wrote beside it
        public = (inputs / "le.pub").read_bytes()
        body = parse_quote((inputs / "le.quote").read_bytes()).body
        assert bytes(body.reportdata) == le_key_reportdata(public)
        both.compare(*quote, expect=2)  # the files exist: refused after the quote, both ways
        both.compare(*quote, "--json", expect=2)

    finally:
        both.stop()


def test_le_image_and_take_ownership_both_ways(tmp_path: Path, inputs: Path) -> None:
    disk = made_disk_home(tmp_path)
    both = Both.start(disk.home, disk.machine, tmp_path)
    try:
        written: list[bytes] = []

        def keep() -> None:  # the in-process image, moved aside for the daemon's
            written.append((inputs / "le.sgxs").read_bytes())
            (inputs / "le.sgxs").unlink()

        both.compare("platform", "le-image", "-o", "le.sgxs", expect=0, between=keep)
        assert (inputs / "le.sgxs").read_bytes() == written[0]
        both.compare("platform", "le-image", "-o", "le.sgxs", expect=2)  # exists, both ways
        both.compare("platform", "le-image", "-o", "le.sgxs", "--json", expect=2)
        _here, there = both.compare(
            "platform", "le-image", "-o", "le.sgxs", "--force", "--json", expect=0
        )
        assert result_of(there)["result"]["size"] == len(written[0])

        (inputs / "root.json").write_bytes(disk.owner.root)
        (inputs / "other-root.json").write_bytes(Owner().root)
        (inputs / "garbage.json").write_bytes(b"\x00garbage")
        # the root the machine is bound to: the home's copy restored; another: refused
        both.compare("platform", "take-ownership", "root.json", expect=0)
        _here, there = both.compare("platform", "take-ownership", "other-root.json", expect=2)
        assert "already has an owner" in there.stderr and "bound owner root digest" in there.stderr
        both.compare("platform", "take-ownership", "garbage.json", expect=2)
        _here, there = both.compare("platform", "take-ownership", "root.json", "--json", expect=0)
        digest = result_of(there)["result"]["owner_root_digest"]
        shown = _cli("machine", "show", "--machine", both.remote[1], "--json")
        assert json.loads(shown)["result"]["owner_root_digest"] == digest
        both.compare("platform", "take-ownership", "other-root.json", "--json", expect=2)
        both.compare("platform", "status", "--json", expect=0)
        # quoting the log head needs the PCE and QE, which this owner's policy does not allow
        both.compare("log", "attest", "--nonce", "01", "-o", "h.quote", "--json", expect=1)
    finally:
        both.stop()


def test_recovery_apply_both_ways(tmp_path: Path, inputs: Path) -> None:
    """A refused start (the launch enclave's sealed state lost from the home): the daemon
    starts anyway and serves the owner's recovery, as `recovery apply` does in-process."""
    disk = made_disk_home(tmp_path)
    (inputs / "enclave.sgxs").write_bytes(disk.image.read_bytes())
    (inputs / "enclave.sig").write_bytes(disk.sig.read_bytes())
    assert _cli("run", "enclave.sgxs", "--sig", "enclave.sig", "--home", disk.home,
                "--machine", disk.machine)  # fmt: skip
    with sqlite3.connect(disk.home / "state.sqlite3") as db:
        db.execute("DELETE FROM kv WHERE key LIKE 'platform/le-sealed/%'")
    state = FileMachine(disk.machine).load()
    document = sign_payload(
        RECOVERY_PAYLOAD_TYPE,
        recovery_payload(state.platform_id, state.counter.value),
        disk.owner.keys[:2],
    )
    (inputs / "recovery.json").write_bytes(document.to_bytes())
    (inputs / "garbage.json").write_bytes(b"{")
    both = Both.start(disk.home, disk.machine, tmp_path)
    try:
        _here, there = both.compare("platform", "status", expect=1)
        assert "recovery" in there.stderr
        both.compare("recovery", "apply", "garbage.json", "--json", expect=2)
        both.compare("recovery", "apply", "recovery.json", "--json", expect=0)
        both.compare("run", "enclave.sgxs", "--sig", "enclave.sig", expect=0)
        both.compare("recovery", "apply", "recovery.json", expect=1)  # bound to the old counter
        both.compare("log", "verify", expect=0)
    finally:
        both.stop()


def test_physical_presence_commands_refuse_while_the_daemon_holds_the_machine(
    tmp_path: Path, inputs: Path
) -> None:
    """`machine clear-ownership` and `machine migrate` are the administrator's, at the machine:
    while the daemon holds it they refuse, say why and what to do, and change nothing;
    `machine show` (read-only) still answers."""
    disk = made_disk_home(tmp_path)
    both = Both.start(disk.home, disk.machine, tmp_path)
    home, machine = both.remote
    try:
        before = machine.read_bytes()
        pid = both.daemon.proc.pid
        for command in (
            ["machine", "clear-ownership", "--yes", "--machine", str(machine)],
            ["machine", "migrate", "--home", str(home), "--machine", str(tmp_path / "new.json")],
        ):
            out = CliRunner().invoke(main, command, catch_exceptions=False)
            assert out.exit_code == 2, out.output
            assert out.stderr.startswith(
                f"sgxlaunch: error: {' '.join(command[:2])}: sgxlaunchd (pid {pid}"
            )
            assert "Stop the daemon first" in out.stderr and f"kill -TERM {pid}" in out.stderr
            assert machine.read_bytes() == before
        assert not (tmp_path / "new.json").exists()
        shown = CliRunner().invoke(main, ["machine", "show", "--machine", str(machine), "--json"])
        assert shown.exit_code == 0 and result_of(shown)["result"]["owner_root_digest"]
    finally:
        both.stop()
    # stopped: the same command goes ahead
    out = CliRunner().invoke(
        main, ["machine", "clear-ownership", "--yes", "--machine", str(machine)]
    )
    assert out.exit_code == 0, out.output
