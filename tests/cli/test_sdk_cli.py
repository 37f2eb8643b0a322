"""The command line on Intel SDK enclaves (``enclave.signed.so``): every author command,
inspect, policy allow --enclave, run and convert (exit codes 0/1/2)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import jsonschema
import pytest

from sgxlaunch.formats import sdk
from tests.cli.test_json_contract import shipped_schema
from tests.conftest import shared_vectors
from tests.support.cli import run
from tests.support.cli_json import document_of, result_of
from tests.support.keys import KEY_FILES, mrsigner
from tests.support.sdk import PF_R, PF_W, Seg, Spec, build

KEY = KEY_FILES["app"]


@pytest.fixture
def unsigned(tmp_path: Path) -> Path:
    spec = Spec(version=(2, 1), compat=((1, 4),), data_segments=[Seg(0x3000, b"\x42" * 900,
                0x2000, PF_R | PF_W)], tcs_num=2)  # fmt: skip
    path = tmp_path / "enclave.so"
    path.write_bytes(build(spec).data)
    return path


@pytest.fixture
def signed(unsigned: Path, tmp_path: Path) -> Path:
    out = tmp_path / "enclave.signed.so"
    result = run("sign", "--key", shared_vectors() / KEY, unsigned, "-o", out, "--isvprodid", 9)
    assert result.exit_code == 0, result.output
    return out


def test_measure_recomputes_from_the_pages(signed: Path) -> None:
    result = run("measure", signed)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == sdk.measure_sdk(signed.read_bytes()).hex()


def test_sign_writes_the_sigstruct_into_every_metadata_copy(unsigned: Path, signed: Path) -> None:
    before, after = unsigned.read_bytes(), signed.read_bytes()
    assert len(before) == len(after)
    enclave = sdk.parse_sdk(after)
    assert len(enclave.copies) == 2
    want = sdk.measure_sdk(after)
    for meta in enclave.copies:
        assert meta.sigstruct.enclavehash == want
        assert meta.sigstruct.isvprodid == 9
        assert meta.sigstruct.mrsigner == mrsigner("app")
    verified = run("verify", signed)
    assert verified.exit_code == 0, verified.output
    assert "mrenclave" in verified.stdout


def test_verify_of_a_tampered_enclave_exits_1_with_both_hashes(signed: Path) -> None:
    data = bytearray(signed.read_bytes())
    seg = sdk.parse_sdk(bytes(data)).segments[1]
    data[seg.offset + 100] ^= 1  # one measured byte of the data segment
    signed.write_bytes(bytes(data))
    result = run("verify", signed)
    assert result.exit_code == 1
    stored = sdk.parse_sdk(bytes(data)).primary.sigstruct.enclavehash.hex()
    assert stored in result.output
    assert sdk.measure_sdk(bytes(data)).hex() in result.output


def test_inspect_shows_the_dump_fields_and_the_recomputed_mrenclave(signed: Path) -> None:
    result = run("inspect", signed, "--json")
    assert result.exit_code == 0, result.output
    validator = jsonschema.Draft202012Validator(shipped_schema())
    assert not list(validator.iter_errors(document_of(result)))
    value = result_of(result)
    assert value["type"] == "sdk"
    assert value["matches"] is True
    assert value["mrenclave"] == value["enclavehash"] == sdk.measure_sdk(signed.read_bytes()).hex()
    assert [m["version"] for m in value["metadata"]] == ["2.1", "1.4"]
    assert value["selected"] == "1.4"
    first = value["metadata"][0]
    assert first["tcs_count"] == 2 and first["tcs_policy"] == "unbind"
    assert first["heap_size"] == 3 * 4096 and first["stack_size"] == 3 * 4096
    assert first["layout"][0]["id"] == "HEAP_MIN"
    assert value["sigstruct"]["signature_valid"] is True
    text = run("inspect", signed)
    assert text.exit_code == 0
    assert "matches: yes" in text.stdout and "metadata 2.1:" in text.stdout


def test_inspect_of_an_unsigned_enclave_shows_the_layout(unsigned: Path) -> None:
    result = run("inspect", unsigned, "--json")
    assert result.exit_code == 0, result.output
    value = result_of(result)
    assert value["sigstruct"] is None and value["matches"] is False
    assert "enclave_css" in value["sigstruct_error"]


def test_gendata_then_catsig_into_the_enclave(unsigned: Path, tmp_path: Path) -> None:
    data, raw, out = tmp_path / "e.data", tmp_path / "e.raw", tmp_path / "e.signed.so"
    assert run("gendata", unsigned, "-o", data).exit_code == 0
    subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", shared_vectors() / KEY, "-out", raw, data],
        check=True,
    )
    result = run("catsig", data, "--key", shared_vectors() / KEY, "--signature", raw,
                 "--enclave", unsigned, "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert run("verify", out).exit_code == 0
    # The same signature does not fit a different enclave: refused, nothing written.
    other = tmp_path / "other.so"
    other.write_bytes(build(Spec(version=(1, 5))).data)
    refused = run("catsig", data, "--key", shared_vectors() / KEY, "--signature", raw,
                  "--enclave", other, "-o", tmp_path / "x.so")  # fmt: skip
    assert refused.exit_code == 1
    assert not (tmp_path / "x.so").exists()


def test_convert_then_measure_equals_measure(signed: Path, tmp_path: Path) -> None:
    out = tmp_path / "enclave.sgxs"
    converted = run("convert", signed, "-o", out)
    assert converted.exit_code == 0, converted.output
    direct = run("measure", signed).stdout.strip()
    assert run("measure", out).stdout.strip() == direct == converted.stdout.strip()
    assert hashlib.sha256(out.read_bytes()).hexdigest() == direct


def test_convert_refuses_an_sgxs_input(signed: Path, tmp_path: Path) -> None:
    out = tmp_path / "enclave.sgxs"
    assert run("convert", signed, "-o", out).exit_code == 0
    assert run("convert", out, "-o", tmp_path / "again.sgxs").exit_code == 2


def test_policy_allow_enclave_takes_the_rule_from_the_note(signed: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    created = run("policy", "new", "-o", policy)
    assert created.exit_code == 0, created.output
    result = run("policy", "allow", policy, "--id", "sdk-app", "--enclave", signed,
                 "--match", "mrsigner,mrenclave,isvprodid")  # fmt: skip
    assert result.exit_code == 0, result.output
    rule = next(r for r in json.loads(policy.read_text())["allow"] if r["id"] == "sdk-app")
    assert rule["mrsigner"] == mrsigner("app").hex()
    assert rule["mrenclave"] == sdk.measure_sdk(signed.read_bytes()).hex()
    assert rule["isvprodid"] == 9


def test_run_loads_and_initializes_then_says_it_stops(signed: Path) -> None:
    result = run("run", signed, "--ephemeral")
    assert result.exit_code == 0, result.output
    assert f"initialized: mrenclave {sdk.measure_sdk(signed.read_bytes()).hex()}" in result.stdout
    assert "stopped after EINIT" in result.stderr


def test_run_of_a_tampered_enclave_is_refused_by_einit(signed: Path) -> None:
    """SDM EINIT step: MRENCLAVE != SIGSTRUCT.ENCLAVEHASH → SGX_INVALID_MEASUREMENT (exit 1)."""
    data = bytearray(signed.read_bytes())
    data[sdk.parse_sdk(bytes(data)).segments[1].offset] ^= 0xFF
    signed.write_bytes(bytes(data))
    result = run("run", signed, "--ephemeral")
    assert result.exit_code == 1
    assert "INVALID_MEASUREMENT" in result.output


def test_a_malformed_enclave_exits_2_naming_file_and_field(signed: Path) -> None:
    data = bytearray(signed.read_bytes())
    at = sdk.parse_sdk(bytes(data)).metadata_offset
    data[at : at + 8] = bytes(8)
    signed.write_bytes(bytes(data))
    result = run("measure", signed)
    assert result.exit_code == 2
    assert str(signed) in result.output and "metadata.magic_num" in result.output
