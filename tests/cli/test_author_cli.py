"""The author CLI: keys, measure, sign, gendata/catsig, verify, inspect (exit codes 0/1/2)."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sgxlaunch.arch import Sigstruct
from tests.conftest import shared_vectors, sigstruct_vectors
from tests.support.cli import run
from tests.support.cli_json import result_of
from tests.support.keys import rsa_key

GENERATED = [
    "case1_defaults",
    "case2_prodid_svn_debug",
    "case3_misc_xfrm_swdef",
    "case4_kss_like_attrs",
]


def manifest_case(name: str) -> dict[str, Any]:
    data = json.loads((shared_vectors() / "generated" / "manifest.json").read_text())
    return next(c for c in data["cases"] if c["name"] == name)


def sign_args_from_fields(fields: dict[str, Any]) -> list[str]:
    """Our CLI options for the recorded SIGSTRUCT field values (literal masks)."""
    args = [
        "--date",
        fields["date"],
        "--vendor",
        "intel" if int(fields["vendor"], 16) == 0x8086 else "none",
        "--swdefined",
        fields["swdefined"],
        "--miscselect",
        fields["miscselect"],
        "--misc-mask",
        fields["miscmask"],
        "--attributes",
        f"{fields['attributes.flags']}/{fields['attributes.xfrm']}",
        "--attributes-mask",
        f"{fields['attributemask.flags']}/{fields['attributemask.xfrm']}",
        "--isvprodid",
        str(fields["isvprodid"]),
        "--isvsvn",
        str(fields["isvsvn"]),
        "--isvfamilyid",
        fields["isvfamilyid"],
        "--isvextprodid",
        fields["isvextprodid"],
    ]
    return args


@pytest.mark.parametrize("name", GENERATED)
def test_sign_reproduces_generated_case_byte_identical(name: str, tmp_path: Path) -> None:
    case = manifest_case(name)
    gen = shared_vectors() / "generated"
    out = tmp_path / "out.sig"
    result = run(
        "sign",
        "--key",
        gen / case["key"],
        gen / case["sgxs"],
        "-o",
        out,
        *sign_args_from_fields(case["sigstruct_fields"]),
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == (gen / case["sig"]).read_bytes()
    assert f"mrenclave {case['expected_mrenclave']}" in result.stdout
    assert f"mrsigner  {case['expected_mrsigner']}" in result.stdout


def test_sign_defaults_are_fortanix_defaults(tmp_path: Path) -> None:
    gen = shared_vectors() / "generated"
    out = tmp_path / "c1.sig"
    result = run(
        "sign",
        "--key",
        gen / "case1_defaults.key.pem",
        gen / "case1_defaults.sgxs",
        "--date",
        "20240101",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == (gen / "case1_defaults.sig").read_bytes()


def test_sign_debug_flag_matches_case2(tmp_path: Path) -> None:
    gen = shared_vectors() / "generated"
    out = tmp_path / "c2.sig"
    result = run(
        "sign",
        "--key",
        gen / "case2_prodid_svn_debug.key.pem",
        gen / "case2_prodid_svn_debug.sgxs",
        "--debug",
        "--isvprodid",
        "0x1234",
        "--isvsvn",
        "7",
        "--date",
        "20201231",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == (gen / "case2_prodid_svn_debug.sig").read_bytes()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@pytest.mark.parametrize("name", GENERATED)
def test_gendata_openssl_catsig_reproduces_case(name: str, tmp_path: Path) -> None:
    case = manifest_case(name)
    gen = shared_vectors() / "generated"
    data, raw, out = tmp_path / "x.data", tmp_path / "x.raw", tmp_path / "x.sig"
    result = run(
        "gendata", gen / case["sgxs"], "-o", data, *sign_args_from_fields(case["sigstruct_fields"])
    )
    assert result.exit_code == 0, result.output
    assert data.stat().st_size == 256
    subprocess.run(
        [
            "openssl",
            "dgst",
            "-sha256",
            "-sign",
            str(gen / case["key"]),
            "-out",
            str(raw),
            str(data),
        ],
        check=True,
    )
    pub = tmp_path / "pub.pem"
    subprocess.run(
        ["openssl", "pkey", "-in", str(gen / case["key"]), "-pubout", "-out", str(pub)], check=True
    )
    result = run("catsig", data, "--key", pub, "--signature", raw, "-o", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == (gen / case["sig"]).read_bytes()


def test_catsig_rereads_data_and_refuses_a_mismatch(tmp_path: Path) -> None:
    gen = shared_vectors() / "generated"
    data, out = tmp_path / "x.data", tmp_path / "x.sig"
    assert run("gendata", "--mrenclave", "11" * 32, "--date", "20240101", "-o", data).exit_code == 0
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    key = rsa_key("le")  # the key of generated/case1_defaults
    sig = key.sign(data.read_bytes(), padding.PKCS1v15(), hashes.SHA256())
    raw = tmp_path / "x.raw"
    raw.write_bytes(sig)
    tampered = bytearray(data.read_bytes())
    tampered[200] ^= 1
    data.write_bytes(bytes(tampered))
    result = run(
        "catsig", data, "--key", gen / "case1_defaults.key.pem", "--signature", raw, "-o", out
    )
    assert result.exit_code == 1
    assert "signature" in result.stderr
    assert not out.exists()


def test_verify_exit_codes(tmp_path: Path) -> None:
    gen = shared_vectors() / "generated"
    sig = gen / "case2_prodid_svn_debug.sig"
    ok = run(
        "verify",
        sig,
        "--image",
        gen / "case2_prodid_svn_debug.sgxs",
        "--mrsigner",
        "7193277b8158227d8d03670514430ceac568f2f34246dbb715cadd485f115037",
    )
    assert ok.exit_code == 0
    assert ok.stdout.startswith("OK: signature, q1q2, mrenclave, mrsigner verified")
    wrong_image = run("verify", sig, "--image", gen / "case1_defaults.sgxs")
    assert wrong_image.exit_code == 1
    assert "MRENCLAVE" in wrong_image.stderr
    assert "expected: 08cf317b" in wrong_image.stderr
    assert "found:    043ed9b4" in wrong_image.stderr
    wrong_signer = run("verify", sig, "--mrsigner", "00" * 32)
    assert wrong_signer.exit_code == 1
    truncated = tmp_path / "t.sig"
    truncated.write_bytes(sig.read_bytes()[:1000])
    bad = run("verify", truncated)
    assert bad.exit_code == 2
    assert "t.sig" in bad.stderr
    assert "1808" in bad.stderr
    flipped = tmp_path / "f.sig"
    data = bytearray(sig.read_bytes())
    data[1024] ^= 1  # ISVPRODID, a signed field
    flipped.write_bytes(bytes(data))
    assert run("verify", flipped).exit_code == 1


def test_verify_json() -> None:
    sig = shared_vectors() / "kselftest" / "ksft_test_encl.sigstruct.bin"
    result = run("verify", sig, "--json")
    assert result.exit_code == 0
    value = result_of(result)
    assert value["valid"] is True
    assert value["mrsigner"] == "2f9f8fd4fe12d77232f1d87571ca8252ca27714efe7705e46222cffd5a22e8c4"


def test_sdk_typed_le_header_verifies_with_a_warning() -> None:
    le = shared_vectors() / "intel_ae_extracted" / "ratel-psw@184dc82b_libsgx_le.sigstruct.bin"
    result = run("verify", le)
    assert result.exit_code == 0
    assert "SGX_INVALID_SIG_STRUCT" in result.stderr
    assert "warning" in result.stderr
    shown = result_of(run("inspect", le, "--json"))
    assert shown["header_type"] == "sdk-debug"


@pytest.mark.parametrize(("path", "facts"), sigstruct_vectors())
def test_inspect_json_reports_recorded_fields(path: str, facts: dict[str, Any]) -> None:
    result = run("inspect", shared_vectors() / path, "--json")
    assert result.exit_code == 0
    shown = result_of(result)
    assert shown["mrsigner"] == facts["mrsigner"]
    assert shown["mrenclave"] == facts["mrenclave"]
    assert shown["isvprodid"] == facts["isvprodid"]
    assert shown["isvsvn"] == facts["isvsvn"]
    assert shown["date"] == facts["date"]
    assert shown["vendor"] == int(facts["vendor"], 16)
    for name in ("attributes", "attributemask"):
        flags, xfrm = int(facts[f"{name}.flags"], 16), int(facts[f"{name}.xfrm"], 16)
        assert shown[name] == {
            "flags": flags,
            "xfrm": xfrm,
            "flags_hex": hex(flags),
            "xfrm_hex": hex(xfrm),
        }
    assert shown["miscmask"] == int(facts["miscmask"], 16)
    assert shown["signature_valid"] is facts["signature_valid"]
    for key in (
        "header",
        "header_type",
        "swdefined",
        "miscselect",
        "isvfamilyid",
        "isvextprodid",
        "debug",
    ):
        assert key in shown


def test_inspect_sgxs_and_ambiguous_sizes(tmp_path: Path) -> None:
    gen = shared_vectors() / "generated"
    shown = result_of(run("inspect", gen / "case3_misc_xfrm_swdef.sgxs", "--json"))
    assert shown["type"] == "sgxs"
    assert shown["mrenclave"] == manifest_case("case3_misc_xfrm_swdef")["expected_mrenclave"]
    blob = tmp_path / "x.bin"
    blob.write_bytes(bytes(512))
    assert run("inspect", blob).exit_code == 2
    result = run("inspect", blob, "--type", "targetinfo", "--json")
    assert result.exit_code == 0
    assert result_of(result)["type"] == "targetinfo"
    token = tmp_path / "t.bin"
    token.write_bytes(bytes(304))
    assert result_of(run("inspect", token, "--json"))["valid"] == 0
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"x" * 77)
    result = run("inspect", junk)
    assert result.exit_code == 2
    assert "junk.bin" in result.stderr


def test_key_generate_mode_no_overwrite_and_mrsigner(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    first = run("key", "generate", "-o", key)
    assert first.exit_code == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_bytes()
    again = run("key", "generate", "-o", key)
    assert again.exit_code == 2
    assert "--force" in again.stderr
    assert key.read_bytes() == before
    mrsigner = run("key", "mrsigner", key).stdout.strip()
    assert mrsigner == first.stdout.strip()
    assert len(bytes.fromhex(mrsigner)) == 32
    assert run("key", "generate", "-o", key, "--force").exit_code == 0
    assert key.read_bytes() != before


def test_sign_options_written_verbatim_and_contradictions_refused(tmp_path: Path) -> None:
    key = shared_vectors() / "generated" / "case1_defaults.key.pem"
    out = tmp_path / "o.sig"
    result = run(
        "sign",
        "--key",
        key,
        "--mrenclave",
        "22" * 32,
        "--attributes",
        "0x5/0x3",
        "--attributes-mask",
        "0/0",
        "--misc-mask",
        "0",
        "--date",
        "00000000",
        "--vendor",
        "intel",
        "-o",
        out,
    )
    assert result.exit_code == 0, result.output
    sig = Sigstruct.from_bytes(out.read_bytes())
    assert (sig.attributes.flags, sig.attributes.xfrm) == (5, 3)
    assert (sig.attributemask.flags, sig.attributemask.xfrm) == (0, 0)
    assert sig.miscmask == 0
    assert sig.date == 0
    assert sig.vendor == 0x8086
    clash = run(
        "sign",
        "--key",
        key,
        "--mrenclave",
        "22" * 32,
        "--attributes",
        "0x4/0x3",
        "--debug",
        "-o",
        tmp_path / "p.sig",
    )
    assert clash.exit_code == 2
    assert not (tmp_path / "p.sig").exists()
    both = run(
        "sign",
        "--key",
        key,
        shared_vectors() / "generated" / "case1_defaults.sgxs",
        "--mrenclave",
        "22" * 32,
        "-o",
        tmp_path / "q.sig",
    )
    assert both.exit_code == 2
    for bad in ("20241301", "2024011", "2024-01-01"):
        assert (
            run(
                "sign",
                "--key",
                key,
                "--mrenclave",
                "22" * 32,
                "--date",
                bad,
                "-o",
                tmp_path / "r.sig",
            ).exit_code
            == 2
        )
    assert (
        run(
            "sign",
            "--key",
            key,
            "--mrenclave",
            "22" * 32,
            "--isvsvn",
            "65536",
            "-o",
            tmp_path / "s.sig",
        ).exit_code
        == 2
    )
    assert (
        run(
            "sign",
            "--key",
            key,
            "--mrenclave",
            "22" * 32,
            "--isvsvn",
            "1_0",
            "-o",
            tmp_path / "s.sig",
        ).exit_code
        == 2
    )


def test_sign_refuses_a_non_sgx_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "k.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    result = run("sign", "--key", path, "--mrenclave", "22" * 32, "-o", tmp_path / "o.sig")
    assert result.exit_code == 2
    assert "exponent 3" in result.stderr
    not_a_key = tmp_path / "n.pem"
    not_a_key.write_text("hello")
    result = run("sign", "--key", not_a_key, "--mrenclave", "22" * 32, "-o", tmp_path / "o.sig")
    assert result.exit_code == 2
    assert "n.pem" in result.stderr


def test_measure_prints_only_the_result_and_names_bad_records(tmp_path: Path) -> None:
    gen = shared_vectors() / "generated"
    result = run("measure", gen / "case1_defaults.sgxs")
    assert result.exit_code == 0
    assert result.stdout == manifest_case("case1_defaults")["expected_mrenclave"] + "\n"
    as_json = result_of(run("measure", gen / "case1_defaults.sgxs", "--json"))
    assert as_json["mrenclave"] == manifest_case("case1_defaults")["expected_mrenclave"]
    bad = tmp_path / "bad.sgxs"
    data = bytearray((gen / "case1_defaults.sgxs").read_bytes())
    data[64 + 8] = 0x10  # first EADD offset no longer page-aligned
    bad.write_bytes(bytes(data))
    result = run("measure", bad)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "record 1" in result.stderr
    assert "bad.sgxs" in result.stderr
