"""``sgxlaunch pcl encrypt|wrap``: files in, files out, clear errors naming the file, and the
code key never printed."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from sgxlaunch.example import example_image
from sgxlaunch.formats.sgxs import measure_bytes, parse_sgxs
from sgxlaunch.pcl import crypto
from sgxlaunch.pcl.crypto import WrappedKey
from sgxlaunch.pcl.format import find_header
from tests.support.cli import run
from tests.support.pcl import LE_MRSIGNER, le_quote

K = bytes(range(100, 132))


def _secret_forms() -> list[str]:
    return [K.hex(), K.hex().upper(), base64.b64encode(K).decode(), repr(K)]


def _no_key(*texts: str) -> None:
    for text in texts:
        for form in _secret_forms():
            assert form not in text


def _setup(tmp_path: Path, key: bytes = K) -> tuple[Path, Path]:
    image = tmp_path / "enclave.sgxs"
    image.write_bytes(example_image())
    key_file = tmp_path / "code.key"
    key_file.write_bytes(key)
    return image, key_file


def test_encrypt_writes_an_encrypted_image_and_prints_its_mrenclave(tmp_path: Path) -> None:
    image, key_file = _setup(tmp_path)
    out = tmp_path / "enc.sgxs"
    result = run("pcl", "encrypt", image, "--code-key-file", key_file, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)["result"]
    data = out.read_bytes()
    assert doc["mrenclave"] == measure_bytes(data).hex()
    assert doc["key_id"] == crypto.key_id(K).hex()
    header = find_header(parse_sgxs(data))
    assert header is not None and header.page_count == doc["page_count"] == 1
    _no_key(result.stdout, result.stderr)
    plain = run("pcl", "encrypt", image, "--code-key-file", key_file, "-o", out, "--force")
    assert plain.exit_code == 0
    assert plain.stdout.strip() == measure_bytes(out.read_bytes()).hex()


def test_encrypt_hex_key_file_accepted(tmp_path: Path) -> None:
    image, key_file = _setup(tmp_path)
    key_file.write_text(K.hex() + "\n")
    result = run(
        "pcl", "encrypt", image, "--code-key-file", key_file, "-o", tmp_path / "e", "--json"
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["result"]["key_id"] == crypto.key_id(K).hex()


def test_encrypt_bad_key_file_named_and_nothing_written(tmp_path: Path) -> None:
    image, key_file = _setup(tmp_path, key=K[:31])
    out = tmp_path / "enc.sgxs"
    result = run("pcl", "encrypt", image, "--code-key-file", key_file, "-o", out)
    assert result.exit_code == 2
    assert str(key_file) in result.stderr and "32 raw bytes or 64 hex digits" in result.stderr
    assert not out.exists()
    _no_key(result.stderr)


def test_encrypt_refuses_an_encrypted_image(tmp_path: Path) -> None:
    image, key_file = _setup(tmp_path)
    out = tmp_path / "enc.sgxs"
    assert run("pcl", "encrypt", image, "--code-key-file", key_file, "-o", out).exit_code == 0
    again = run("pcl", "encrypt", out, "--code-key-file", key_file, "-o", tmp_path / "x")
    assert again.exit_code == 2 and "already encrypted" in again.stderr


def test_key_is_never_an_argument() -> None:
    result = run("pcl", "encrypt", "--help")
    assert "--code-key-file" in result.stdout and "--code-key " not in result.stdout
    assert "--code-key " not in run("pcl", "wrap", "--help").stdout


def _wrap_args(files: dict[str, Path], key_file: Path, out: Path) -> list[str | Path]:
    return [
        "pcl",
        "wrap",
        "--code-key-file",
        key_file,
        "--le-quote",
        files["quote"],
        "--le-public-key",
        files["public"],
        "--collateral",
        files["collateral"],
        "--root",
        files["root"],
        "--owner-root",
        files["owner"],
        "--release",
        f"mrsigner={'ab' * 32},isvprodid=3",
        "--min-isvsvn",
        "2",
        "--at",
        "2026-11-28T01:00:00Z",
        "-o",
        out,
    ]


def test_wrap_verifies_the_quote_and_writes_the_wrapped_key(tmp_path: Path) -> None:
    q = le_quote()
    files = q.write(tmp_path)
    _, key_file = _setup(tmp_path)
    out = tmp_path / "wrapped.bin"
    args = [*_wrap_args(files, key_file, out), "--le-mrsigner", LE_MRSIGNER.hex(), "--json"]
    result = run(*args)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)["result"]
    assert doc["key_id"] == crypto.key_id(K).hex()
    assert doc["release"] == {
        "debug": False,
        "min_isvsvn": 2,
        "mrsigner": "ab" * 32,
        "isvprodid": 3,
    }
    wrapped = WrappedKey.from_bytes(out.read_bytes())
    assert wrapped.unwrap(q.private_key) == K
    _no_key(result.stdout, result.stderr, out.read_bytes().hex())


def test_wrap_refuses_another_enclaves_quote_exit_1_nothing_written(tmp_path: Path) -> None:
    q = le_quote(mrenclave=b"\x99" * 32)
    files = q.write(tmp_path)
    _, key_file = _setup(tmp_path)
    out = tmp_path / "wrapped.bin"
    result = run(*_wrap_args(files, key_file, out))
    assert result.exit_code == 1
    assert "not sgxlaunch's launch enclave" in result.stderr
    assert str(files["quote"]) in result.stderr
    assert not out.exists()
    _no_key(result.stderr)


def test_wrap_bad_release_named(tmp_path: Path) -> None:
    files = le_quote().write(tmp_path)
    _, key_file = _setup(tmp_path)
    args = _wrap_args(files, key_file, tmp_path / "w")
    args[args.index("--release") + 1] = "mrsigner=zz"
    result = run(*args)
    assert result.exit_code == 2 and "release" in result.stderr
