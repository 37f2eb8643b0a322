"""``sgxlaunch quote make`` and the quoting rules of ``policy new``: a quote made on one
platform verifies with ``quote verify`` and nothing but the platform's root and collateral."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sgxlaunch.attest.pce import PCE_ISVSVN
from sgxlaunch.attest.pcs import EmulatedPcs
from sgxlaunch.attest.quoting import QUOTING_RULE_IDS, machine_quoting_signer
from sgxlaunch.formats.quote import ReportBody, parse_quote
from sgxlaunch.store import FileMachine
from tests.support.cli import run
from tests.support.cli_json import document_of


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A platform (home + machine), the example enclave signed twice (production, DEBUG)."""
    tmp = tmp_path_factory.mktemp("quote-make")
    assert (
        run("platform", "init", "--home", tmp / "home", "--machine", tmp / "m.json").exit_code == 0
    )
    assert run("example", "-o", tmp / "hello.sgxs").exit_code == 0
    assert run("key", "generate", "-o", tmp / "author.pem").exit_code == 0
    for name, extra in (("hello.sig", ()), ("hello-debug.sig", ("--debug",))):
        signed = run(
            "sign", "--key", tmp / "author.pem", tmp / "hello.sgxs", "-o", tmp / name, *extra
        )
        assert signed.exit_code == 0, signed.output
    return tmp


def where(tmp: Path) -> tuple[str, ...]:
    return ("--home", str(tmp / "home"), "--machine", str(tmp / "m.json"))


def test_platform_init_has_the_pck_certificate_issued_before_any_quote(made: Path) -> None:
    machine = FileMachine(made / "m.json")
    cpusvn = machine.load().cpusvn
    assert EmulatedPcs(machine).pck_certificate(cpusvn, PCE_ISVSVN) is not None


def test_quote_make_then_quote_verify_with_the_platforms_root_and_collateral(made: Path) -> None:
    quote = made / "quote.bin"
    result = run(
        "quote", "make", made / "hello.sgxs", "--sig", made / "hello.sig",
        "--reportdata", "c0ffee", "-o", quote, *where(made), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = document_of(result)["result"]
    parsed = parse_quote(quote.read_bytes())
    assert isinstance(parsed.body, ReportBody)
    assert doc["reportdata"] == ("c0ffee" + "00" * 61) == parsed.body.reportdata.hex()
    assert doc["certification_data_type"] == 5 and doc["version"] == 3
    # what `platform root` / `platform collateral` export, taken from the machine's PCS
    pcs = EmulatedPcs(FileMachine(made / "m.json"))
    (made / "root.der").write_bytes(pcs.root_der())
    (made / "c.json").write_bytes(pcs.collateral(datetime.now(UTC)))
    verified = run(
        "quote", "verify", quote, "--collateral", made / "c.json", "--root", made / "root.der",
        "--json",
    )  # fmt: skip
    assert verified.exit_code == 0, verified.output
    assert document_of(verified)["result"]["verification"]["tcb_status"] == "UpToDate"
    # without the platform's root (Intel's pinned by default) the same quote is refused
    assert run("quote", "verify", quote, "--collateral", made / "c.json").exit_code == 1


def test_quote_make_refuses_a_debug_enclave_and_writes_nothing(made: Path) -> None:
    out = made / "debug.quote"
    result = run(
        "quote", "make", made / "hello.sgxs", "--sig", made / "hello-debug.sig", "-o", out,
        *where(made),
    )  # fmt: skip
    assert result.exit_code == 2
    assert "non-debug" in result.stderr
    assert not out.exists()


def test_quote_make_refuses_reportdata_longer_than_64_bytes(made: Path) -> None:
    result = run(
        "quote", "make", made / "hello.sgxs", "--sig", made / "hello.sig",
        "--reportdata", "00" * 65, "-o", made / "long.quote", *where(made),
    )  # fmt: skip
    assert result.exit_code == 2
    assert "at most 64 bytes" in result.stderr


def test_policy_new_holds_the_quoting_rules_for_the_machines_pce_and_qe(made: Path) -> None:
    policy = made / "policy.json"
    assert run("policy", "new", "-o", policy, "--machine", made / "m.json").exit_code == 0
    rules = json.loads(policy.read_text())["allow"]
    assert [r["id"] for r in rules] == list(QUOTING_RULE_IDS)
    signer = machine_quoting_signer(FileMachine(made / "m.json")).hex()
    assert all(r["mrsigner"] == signer and r["provisionkey"] is True for r in rules)
    bare = made / "bare.json"
    assert (
        run("policy", "new", "-o", bare, "--no-quoting", "--machine", made / "m.json").exit_code
        == 0
    )
    assert json.loads(bare.read_text())["allow"] == []
    given = made / "given.json"
    assert run("policy", "new", "-o", given, "--quoting-signer", "ab" * 32).exit_code == 0
    assert {r["mrsigner"] for r in json.loads(given.read_text())["allow"]} == {"ab" * 32}
    nowhere = run("policy", "new", "-o", made / "none.json", "--machine", made / "no.json")
    assert nowhere.exit_code == 0 and "left out" in nowhere.stderr
    assert json.loads((made / "none.json").read_text())["allow"] == []
