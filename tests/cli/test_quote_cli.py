"""``sgxlaunch quote inspect|verify|appraisal``: exit codes 0 acceptable / 1 not / 2 malformed,
one JSON object with ``schema`` and ``ok`` on success and on failure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sgxlaunch.policy._json import dumps_canonical
from tests.support.cli import run
from tests.support.cli_json import document_of
from tests.support.dcap import (
    SGX,
    TDX,
    TDX_OUTDATED,
    qvl_sample_collateral,
    qvl_sample_root,
    shared,
)

MRSIGNER = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"


def at(when: Any) -> str:
    return f"{when:%Y-%m-%dT%H:%M:%SZ}"


def verify(*extra: str | Path) -> Any:
    return run(
        "quote",
        "verify",
        shared(SGX.quote),
        "--collateral",
        shared(SGX.collateral),
        "--at",
        at(SGX.inside),
        *extra,
    )


def appraisal_file(tmp_path: Path, name: str = "appraisal.json", **changes: Any) -> Path:
    doc: dict[str, Any] = {
        "spec_version": "1",
        "type": "quote-appraisal",
        "version": 1,
        "expires": "2099-01-01T00:00:00Z",
        "identities": [{"id": "phala", "mrsigner": MRSIGNER, "min_isvsvn": 0}],
        "tcb_statuses": ["ConfigurationAndSWHardeningNeeded"],
        "denied_advisories": [],
    } | changes
    path = tmp_path / name
    path.write_bytes(dumps_canonical(doc))
    return path


def test_inspect_prints_spec_names_and_json_schema() -> None:
    text = run("quote", "inspect", shared("dcap/qvl_sampleData/quote.dat"))
    assert text.exit_code == 0
    assert "header.pce_svn: 3" in text.stdout
    assert "signature_data.certification_data.cert_type: 1" in text.stdout
    as_json = run("quote", "inspect", shared(TDX_OUTDATED.quote), "--json")
    doc = document_of(as_json)
    assert (doc["command"], doc["ok"]) == ("quote inspect", True)
    assert doc["result"]["header"]["version"] == 5
    assert doc["result"]["td_report"]["mrservicetd"] == "00" * 48


def test_inspect_malformed_exit_2_names_file_field_and_offset(tmp_path: Path) -> None:
    bad = tmp_path / "bad.quote"
    bad.write_bytes(shared(SGX.quote).read_bytes()[:1000])
    result = run("quote", "inspect", bad, "--json")
    assert result.exit_code == 2
    error = document_of(result)["error"]
    assert error["kind"] == "malformed_input"
    assert error["source"] == str(bad)
    assert (error["field"], error["offset"]) == ("signature_data_len", 432)
    assert result.stderr.startswith(f"sgxlaunch: error: {bad}: quote: signature_data_len 4164")


def test_verify_real_sgx_quote_inside_window_exit_0() -> None:
    result = verify("--json")
    assert result.exit_code == 0, result.stderr
    doc = document_of(result)
    assert (doc["command"], doc["ok"], doc["result"]["appraisal"]) == ("quote verify", True, None)
    assert doc["result"]["verification"]["tcb_status"] == SGX.status
    assert doc["result"]["verification"]["advisory_ids"] == list(SGX.advisories)
    text = run(
        "quote",
        "verify",
        shared(TDX.quote),
        "--collateral",
        shared(TDX.collateral),
        "--at",
        at(TDX.inside),
    )
    assert text.exit_code == 0 and "tcb_status: UpToDate" in text.stdout


def test_verify_outside_window_exit_1_collateral_expired() -> None:
    result = run(
        "quote",
        "verify",
        shared(SGX.quote),
        "--collateral",
        shared(SGX.collateral),
        "--at",
        "2025-08-01T00:00:00Z",
        "--json",
    )
    assert result.exit_code == 1
    error = document_of(result)["error"]
    assert (error["kind"], error["check"]) == ("verification_failed", "collateral-time")
    assert error["message"].startswith("collateral expired at 2025-08-01T00:00:00Z")
    assert "verification failed: collateral expired" in result.stderr


def test_verify_outdated_tdx_exit_1_with_library_words() -> None:
    result = run(
        "quote",
        "verify",
        shared(TDX_OUTDATED.quote),
        "--collateral",
        shared(TDX_OUTDATED.collateral),
        "--at",
        at(TDX_OUTDATED.inside),
    )
    assert result.exit_code == 1
    assert "No matching TCB level found" in result.stderr


def test_verify_qvl_sample_tcb_info_v2_not_supported_or_untrusted_root() -> None:
    args = (
        "quote",
        "verify",
        shared("dcap/qvl_sampleData/quote.dat"),
        "--collateral",
        qvl_sample_collateral(),
        "--at",
        "2025-01-01T00:00:00Z",
    )
    own_root = run(*args, "--root", qvl_sample_root())
    assert own_root.exit_code == 1
    assert "verification failed: TCB info v2 not supported" in own_root.stderr
    intel = run(*args)
    assert intel.exit_code == 1
    assert "not the pinned Intel SGX Root CA" in intel.stderr


def test_verify_malformed_collateral_or_root_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "c.json"
    broken.write_text('{"pck_crl": "00"}')
    result = run("quote", "verify", shared(SGX.quote), "--collateral", broken, "--json")
    assert result.exit_code == 2
    assert document_of(result)["error"]["source"] == str(broken)
    root = tmp_path / "root.der"
    root.write_bytes(b"not a certificate")
    assert verify("--root", root).exit_code == 2


def test_verify_with_local_appraisal_acceptable_and_refused(tmp_path: Path) -> None:
    ok = verify("--appraisal", appraisal_file(tmp_path), "--json")
    assert ok.exit_code == 0, ok.stderr
    doc = document_of(ok)["result"]
    assert doc["appraisal"]["acceptable"] is True and doc["appraisal"]["signed"] is False
    denied = appraisal_file(tmp_path, "deny.json", denied_advisories=["INTEL-SA-00615"])
    refused = verify("--appraisal", denied, "--json")
    assert refused.exit_code == 1
    doc = document_of(refused)
    assert doc["ok"] is False
    assert (doc["error"]["kind"], doc["error"]["rule"]) == ("denied", "advisories")
    assert doc["result"]["appraisal"]["reasons"] == [
        {
            "rule": None,
            "field": "advisories",
            "expected": "none of INTEL-SA-00615",
            "found": "INTEL-SA-00615",
        }
    ]
    assert [f["ok"] for f in doc["result"]["appraisal"]["findings"]] == [True, True, True, False]
    assert "sgxlaunch: denied: quote not acceptable: advisories" in refused.stderr
    text = verify("--appraisal", denied)
    assert "FAIL advisories: expected none of INTEL-SA-00615; found INTEL-SA-00615" in text.stdout


@pytest.fixture
def owned(tmp_path: Path) -> dict[str, Path]:
    keys, root, home = tmp_path / "keys", tmp_path / "root.json", tmp_path / "home"
    result = run("owner", "init", "--keys", 3, "--threshold", 2, "--key-dir", keys, "-o", root)
    assert result.exit_code == 0, result.output
    assert run("owner", "install", root, "--home", home).exit_code == 0
    return {"keys": keys, "home": home}


def test_signed_appraisal_sign_install_verify_and_rollback(
    owned: dict[str, Path], tmp_path: Path
) -> None:
    keys = sorted(owned["keys"].glob("*.key.pem"))
    home = owned["home"]
    v2, signed = appraisal_file(tmp_path, "v2.json", version=2), tmp_path / "v2.dsse.json"
    one = run("quote", "appraisal", "sign", v2, "--key", keys[0], "-o", signed)
    assert one.exit_code == 0, one.stderr
    below = verify("--appraisal", signed, "--home", home)
    assert below.exit_code == 1 and "1 of the required 2" in below.stderr
    assert run("quote", "appraisal", "sign", signed, "--key", keys[1]).exit_code == 0
    installed = run("quote", "appraisal", "install", signed, "--home", home, "--json")
    assert document_of(installed)["result"]["summary"] == "quote appraisal version 2 installed"
    ok = verify("--appraisal", signed, "--home", home, "--json")
    assert ok.exit_code == 0, ok.stderr
    assert document_of(ok)["result"]["appraisal"]["signed"] is True
    v1, old = appraisal_file(tmp_path, "v1.json", version=1), tmp_path / "v1.dsse.json"
    assert (
        run(
            "quote", "appraisal", "sign", v1, "--key", keys[0], "--key", keys[2], "-o", old
        ).exit_code
        == 0
    )
    rolled_back = verify("--appraisal", old, "--home", home)
    assert rolled_back.exit_code == 1 and "version 1 is below the trusted version 2" in (
        rolled_back.stderr
    )
    assert run("quote", "appraisal", "install", old, "--home", home).exit_code == 1


def test_signed_appraisal_expiry_is_judged_at_the_real_time_not_at(
    owned: dict[str, Path], tmp_path: Path
) -> None:
    keys = sorted(owned["keys"].glob("*.key.pem"))
    stale = appraisal_file(tmp_path, "stale.json", expires="2025-08-01T00:00:00Z")
    signed = tmp_path / "stale.dsse.json"
    assert (
        run(
            "quote", "appraisal", "sign", stale, "--key", keys[0], "--key", keys[1], "-o", signed
        ).exit_code
        == 0
    )
    result = verify("--appraisal", signed, "--home", owned["home"])  # --at is 2025-07
    assert result.exit_code == 1
    assert "quote appraisal expired at 2025-08-01T00:00:00Z" in result.stderr
