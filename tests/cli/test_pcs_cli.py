"""`platform root`, `platform collateral`, `machine tcb-recovery`, `machine cpusvn-update`:
the emulated PCS from the command line, checked end to end with `quote verify`."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sgxlaunch.attest.pcs import EmulatedPcs
from sgxlaunch.cpu.config import DEFAULT_CPUSVN
from sgxlaunch.store import FileMachine
from tests.support.cli import run
from tests.support.pcs import make_quote, pck_key

PCESVN = 13


def _machine() -> FileMachine:
    return FileMachine(os.environ["SGXLAUNCH_MACHINE"])


def _init(tmp_path: Path) -> EmulatedPcs:
    result = run("platform", "init", "--home", tmp_path / "home")
    assert result.exit_code == 0, result.stderr
    return EmulatedPcs(_machine())


def _quote(pcs: EmulatedPcs, tmp_path: Path, cpusvn: bytes, label: bytes) -> Path:
    """A quote signed with a PCK key the machine's PCS certified (stands in for the QE)."""
    key = pck_key(label)
    now = datetime.now(UTC)  # the PKI was made at the wall clock's time by platform init
    pcs.issue_pck_certificate(key.public_key(), cpusvn=cpusvn, pcesvn=PCESVN, now=now)
    path = tmp_path / f"{label.decode()}.quote"
    path.write_bytes(make_quote(pcs, key, cpusvn=cpusvn))
    return path


def _verify(quote: Path, collateral: Path, root: Path) -> dict[str, Any]:
    result = run(
        "quote", "verify", quote, "--collateral", collateral, "--root", root, "--json"
    )  # fmt: skip
    doc: dict[str, Any] = json.loads(result.stdout)
    assert result.exit_code == (0 if doc["ok"] else 1)
    return doc


def test_platform_init_makes_the_pcs_in_the_machine_not_the_home(tmp_path: Path) -> None:
    pcs = _init(tmp_path)
    state = _machine().load()
    assert state.provisioning is not None and state.cpusvn == DEFAULT_CPUSVN
    # no issuer key, certificate or the machine's PPID anywhere in the home
    secrets = [state.provisioning.root_key, state.provisioning.pck_ca_key, pcs.ppid]
    for path in (tmp_path / "home").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(s in data or s.hex().encode() in data for s in secrets), path


def test_root_and_collateral_verify_a_quote_with_quote_verify(tmp_path: Path) -> None:
    pcs = _init(tmp_path)
    root, collateral = tmp_path / "R.der", tmp_path / "C.json"
    result = run("platform", "root", "-o", root, "--json")
    assert result.exit_code == 0, result.stderr
    facts = json.loads(result.stdout)["result"]
    assert root.read_bytes() == pcs.root_der()
    cert = x509.load_der_x509_certificate(root.read_bytes())
    assert facts["subject"] == cert.subject.rfc4514_string()
    assert len(facts["spki_sha256"]) == 64
    # platform init made the PKI at the wall clock's time: the collateral is issued after it
    result = run("platform", "collateral", "-o", collateral)
    assert result.exit_code == 0, result.stderr
    tcb_info = json.loads(json.loads(collateral.read_bytes())["tcb_info"])
    assert result.stdout == f"valid {tcb_info['issueDate']} to {tcb_info['nextUpdate']}\n"
    later = tmp_path / "later.json"
    assert run("platform", "collateral", "-o", later, "--at", "2030-01-01T00:00:00Z").exit_code == 0
    assert json.loads(json.loads(later.read_bytes())["tcb_info"])["nextUpdate"] == (
        "2030-01-31T00:00:00Z"
    )

    quote = _quote(pcs, tmp_path, DEFAULT_CPUSVN, b"first")
    doc = _verify(quote, collateral, root)
    assert doc["ok"] is True
    assert doc["result"]["verification"]["tcb_status"] == "UpToDate"

    # the same quote under Intel's root is refused as untrusted
    result = run(
        "quote", "verify", quote, "--collateral", collateral, "--at", "2026-11-27T00:00:00Z"
    )
    assert result.exit_code == 1
    assert "not the pinned Intel SGX Root CA" in result.stderr

    # PEM as well; and an existing file is not overwritten without --force
    assert run("platform", "root", "-o", root).exit_code == 2
    pem = tmp_path / "R.pem"
    assert run("platform", "root", "-o", pem, "--pem").exit_code == 0
    assert x509.load_pem_x509_certificate(pem.read_bytes()).public_bytes(Encoding.DER) == (
        root.read_bytes()
    )


def test_tcb_recovery_then_cpusvn_update_out_of_date_then_up_to_date(tmp_path: Path) -> None:
    pcs = _init(tmp_path)
    root, collateral = tmp_path / "R.der", tmp_path / "C.json"
    assert run("platform", "root", "-o", root).exit_code == 0
    old_quote = _quote(pcs, tmp_path, DEFAULT_CPUSVN, b"old")
    new = bytes([DEFAULT_CPUSVN[0] + 1, *DEFAULT_CPUSVN[1:]])

    result = run(
        "machine", "tcb-recovery", "--cpusvn", new.hex(), "--advisory", "INTEL-SA-01234", "--json"
    )
    assert result.exit_code == 0, result.stderr
    levels = json.loads(result.stdout)["result"]["tcb_levels"]
    assert [(lv["cpusvn"], lv["status"]) for lv in levels] == [
        (new.hex(), "UpToDate"),
        (DEFAULT_CPUSVN.hex(), "OutOfDate"),
    ]
    assert run("platform", "collateral", "-o", collateral).exit_code == 0
    doc = _verify(old_quote, collateral, root)
    verification = doc["result"]["verification"]
    assert (verification["tcb_status"], verification["advisory_ids"]) == (
        "OutOfDate",
        ["INTEL-SA-01234"],
    )

    result = run("machine", "cpusvn-update", "--cpusvn", new.hex(), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["result"] == {
        "cpusvn_before": DEFAULT_CPUSVN.hex(),
        "cpusvn": new.hex(),
    }
    assert _machine().load().cpusvn == new
    new_quote = _quote(pcs, tmp_path, new, b"new")
    doc = _verify(new_quote, collateral, root)
    assert doc["result"]["verification"]["tcb_status"] == "UpToDate"
    # the platform still opens, its CPU at the new CPUSVN
    status = run("platform", "status", "--home", tmp_path / "home", "--json")
    assert status.exit_code == 0, status.stderr


def test_cpusvn_update_refusals_name_what_was_wrong(tmp_path: Path) -> None:
    _init(tmp_path)
    lower = bytes([DEFAULT_CPUSVN[0] - 1, *DEFAULT_CPUSVN[1:]])
    result = run("machine", "cpusvn-update", "--cpusvn", lower.hex())
    assert result.exit_code == 2
    assert "cannot lower a CPUSVN component" in result.stderr
    result = run("machine", "cpusvn-update", "--cpusvn", "00")
    assert result.exit_code == 2 and "--cpusvn" in result.stderr
    result = run("machine", "tcb-recovery", "--cpusvn", DEFAULT_CPUSVN.hex())
    assert result.exit_code == 2
    assert "above every published one" in result.stderr
    result = run("machine", "tcb-recovery", "--cpusvn", "ff" * 16, "--advisory", "bad id!")
    assert result.exit_code == 2 and "advisories" in result.stderr
    assert _machine().load().cpusvn == DEFAULT_CPUSVN


def test_microcode_update_with_the_platforms_own_quoting_enclave(tmp_path: Path) -> None:
    """The whole flow with the emulated QE: quotes UpToDate, a TCB recovery makes them
    OutOfDate, the CPUSVN update makes the next quote's PCK certificate (issued for the new
    TCB on first use) UpToDate again."""
    pcs = _init(tmp_path)
    home = tmp_path / "home"
    image, sig, key = tmp_path / "e.sgxs", tmp_path / "e.sig", tmp_path / "author.pem"
    root, collateral = tmp_path / "R.der", tmp_path / "C.json"
    for argv in (
        ("example", "-o", image),
        ("key", "generate", "-o", key),
        ("sign", image, "--key", key, "-o", sig),
        ("platform", "root", "-o", root),
        ("quote", "make", image, "--sig", sig, "--home", home, "-o", tmp_path / "old.quote"),
    ):
        result = run(*argv)
        assert result.exit_code == 0, (argv, result.stderr)
    old_pck = pcs.pck_certificate(DEFAULT_CPUSVN, PCESVN)
    assert old_pck is not None  # issued when the PCE was first provisioned
    assert run("platform", "collateral", "-o", collateral).exit_code == 0
    doc = _verify(tmp_path / "old.quote", collateral, root)
    assert doc["result"]["verification"]["tcb_status"] == "UpToDate"

    new = bytes([DEFAULT_CPUSVN[0] + 1, *DEFAULT_CPUSVN[1:]])
    assert run("machine", "tcb-recovery", "--cpusvn", new.hex()).exit_code == 0
    assert run("platform", "collateral", "-o", collateral, "--force").exit_code == 0
    doc = _verify(tmp_path / "old.quote", collateral, root)
    assert doc["result"]["verification"]["tcb_status"] == "OutOfDate"

    assert run("machine", "cpusvn-update", "--cpusvn", new.hex()).exit_code == 0
    assert pcs.pck_certificate(new, PCESVN) is None
    result = run("quote", "make", image, "--sig", sig, "--home", home, "-o", tmp_path / "new.quote")
    assert result.exit_code == 0, result.stderr
    new_pck = pcs.pck_certificate(new, PCESVN)
    assert new_pck is not None and new_pck != old_pck
    doc = _verify(tmp_path / "new.quote", collateral, root)
    assert doc["result"]["verification"]["tcb_status"] == "UpToDate"
    assert doc["result"]["verification"]["advisory_ids"] == []
