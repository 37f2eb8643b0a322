"""The public face: ``import sgxlaunch`` (lazy names, typed, the example enclave, the refusals)."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import sgxlaunch
from sgxlaunch import _api
from sgxlaunch.formats import sdk, sgxs
from tests.conftest import REPO
from tests.support.sdk import Spec, build


def test_every_public_name_resolves() -> None:
    for name in sgxlaunch.__all__:
        assert getattr(sgxlaunch, name) is not None, name
    assert sgxlaunch.__version__ != "0+unknown"
    with pytest.raises(AttributeError, match="no attribute 'measure_file'"):
        sgxlaunch.measure_file  # noqa: B018  # the file opener is not part of the core API


def test_importing_the_package_loads_nothing_heavy() -> None:
    code = (
        "import sys, sgxlaunch; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('numpy', 'cryptography', 'click', 'rich') or m.startswith('sgxlaunch.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_package_ships_py_typed() -> None:
    assert (Path(sgxlaunch.__file__).parent / "py.typed").is_file()
    assert '"sgxlaunch" = ["py.typed"]' in (REPO / "pyproject.toml").read_text()


def test_signer_and_enclave_names_do_not_clash() -> None:
    from sgxlaunch.cpu import ProcessorEnclave
    from sgxlaunch.driver import LoadedEnclave
    from sgxlaunch.policy import PolicySigner
    from sgxlaunch.sigstruct import EnclaveSigner

    # Two protocols of different shape, two names: an SGX signer signs PKCS#1 v1.5 SHA-256 with
    # RSA-3072 e=3; a policy signer signs DSSE envelopes under its own scheme.
    assert hasattr(EnclaveSigner, "sign_pkcs1v15_sha256") and hasattr(PolicySigner, "sign")
    assert "Signer" not in dir(sgxlaunch)
    assert sgxlaunch.EnclaveSigner is EnclaveSigner and sgxlaunch.PolicySigner is PolicySigner
    # Both loaded-enclave records name SECS.BASEADDR the SDM's way.
    assert "baseaddr" in LoadedEnclave.__dataclass_fields__
    assert "baseaddr" in ProcessorEnclave.__dataclass_fields__


def test_example_image_is_real_sgxs_and_runs_its_ecall() -> None:
    data = sgxlaunch.example_image()
    image = sgxs.parse_sgxs(data)
    assert sgxlaunch.measure_image(io.BytesIO(data)) == sgxs.measure_bytes(data)
    key = sgxlaunch.generate_key()
    sig = sgxlaunch.sign(key, mrenclave=sgxs.measure_bytes(data), isvprodid=3, isvsvn=2)
    launch = sgxlaunch.run(sgxlaunch.ephemeral_platform(), image, sig, ecall_input=b"test")
    assert launch.result.enclave is not None
    assert (
        launch.ecall_output
        == (
            f"hello, test, from inside enclave {sig.enclavehash.hex()[:16]}… "
            "(isvprodid 3, isvsvn 2)"
        ).encode()
    )


def test_an_image_of_unknown_code_initializes_without_an_ecall() -> None:
    pages = (sgxs.SgxsPage(0, (1 << 8), bytes(4096), 0xFFFF, 0),)  # one TCS page, zeroed
    data = sgxs.write_sgxs(sgxs.SgxsImage(1, 8192, pages))
    sig = sgxlaunch.sign(sgxlaunch.generate_key(), image=io.BytesIO(data))
    launch = sgxlaunch.run(sgxlaunch.ephemeral_platform(), io.BytesIO(data), sig)
    assert launch.result.enclave is not None
    assert launch.ecall_output is None


def elf_header() -> bytes:
    """The first 64 bytes of an x86-64 ELF shared object (what an SDK enclave.signed.so is)."""
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    return ident + struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 64, 0, 0, 64, 56, 0, 64, 0, 0)


@pytest.mark.parametrize("reader", [_api.measure_image, _api.read_image, _api.inspect_image])
def test_an_elf_that_is_no_sdk_enclave_is_refused_naming_the_file(
    tmp_path: Path, reader: object
) -> None:
    path = tmp_path / "enclave.signed.so"
    path.write_bytes(elf_header() + bytes(151344 - 64))
    assert callable(reader)
    with pytest.raises(sgxlaunch.MalformedInput) as err:
        reader(path)
    assert str(err.value).startswith(f"{path}: the ELF has no program headers")
    assert err.value.exit_code == 2


def test_an_sdk_enclave_is_measured_read_and_inspected(tmp_path: Path) -> None:
    path = tmp_path / "enclave.so"
    data = build(Spec(version=(1, 5))).data
    path.write_bytes(data)
    mrenclave = sdk.measure_sdk(data)
    assert _api.measure_image(path) == mrenclave == _api.measure_image(io.BytesIO(data))
    image = _api.read_image(path)
    assert sgxs.measure_bytes(sgxs.write_sgxs(image)) == mrenclave
    summary = _api.inspect_image(io.BytesIO(data))
    assert summary["type"] == "sdk" and summary["mrenclave"] == mrenclave.hex()
    with pytest.raises(sgxlaunch.UsageError, match="UNSIZED"):
        _api.measure_image(path, size=1 << 20)


def test_the_sgxs_reader_points_an_sdk_enclave_to_its_reader() -> None:
    with pytest.raises(sgxlaunch.MalformedInput, match="sgxlaunch convert"):
        sgxs.measure_bytes(elf_header())


def test_a_foreign_signature_is_refused_naming_expected_and_found() -> None:
    data = sgxlaunch.example_image()
    author, other = sgxlaunch.generate_key(), sgxlaunch.generate_key()
    sig = sgxlaunch.sign(author, image=io.BytesIO(data), isvsvn=1)
    with pytest.raises(sgxlaunch.SignerMismatch) as err:
        sgxlaunch.verify(sig, mrsigner=sgxlaunch.mrsigner_of(other.public_key()))
    assert err.value.expected == sgxlaunch.mrsigner_of(other.public_key()).hex()
    assert err.value.found == sig.mrsigner.hex()
    with pytest.raises(sgxlaunch.MeasurementMismatch):
        sgxlaunch.verify(sig, mrenclave=bytes(32))


def test_open_platform_refuses_an_empty_home_without_creating_it(tmp_path: Path) -> None:
    home = tmp_path / "nothing-here"
    with (
        pytest.raises(sgxlaunch.UsageError, match="no platform here"),
        sgxlaunch.open_platform(home),
    ):
        pass
    assert not home.exists()


def test_create_platform_refuses_a_bad_root_and_writes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with (
        pytest.raises(sgxlaunch.MalformedInput),
        sgxlaunch.create_platform(home, root=b"not an envelope"),
    ):
        pass
    assert not home.exists()
