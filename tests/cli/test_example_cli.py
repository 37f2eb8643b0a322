"""The example enclave in one command, the two-step signing flow made whole (`key public`),
and images refused clearly (an SDK ELF) or read in linear time (a crafted SGXS) by every
command that reads one."""

from __future__ import annotations

import json
import stat
import struct
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from sgxlaunch.arch.constants import PAGE_SIZE, PageType, secinfo_flags
from sgxlaunch.example import example_image
from sgxlaunch.formats import sgxs
from sgxlaunch.measure import TAG_EADD, ecreate_block
from sgxlaunch.sigstruct import mrsigner_of
from tests.support.cli import run
from tests.support.keys import rsa_key

NOT_AN_SDK_ENCLAVE = "the ELF has no program headers"


def write_author_key(path: Path) -> None:
    path.write_bytes(
        rsa_key("app").private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def test_example_writes_a_real_image_that_run_enters(tmp_path: Path) -> None:
    image, key, sig = tmp_path / "enclave.sgxs", tmp_path / "author.pem", tmp_path / "e.sig"
    result = run("example", "-o", image)
    assert result.exit_code == 0, result.output
    data = image.read_bytes()
    assert data == example_image()
    assert result.stdout.strip() == sgxs.measure_bytes(data).hex()
    write_author_key(key)
    assert run("sign", "--key", key, image, "--isvprodid", 4, "-o", sig).exit_code == 0
    shown = run("run", image, "--sig", sig, "--ephemeral", "--input", "tester")
    assert shown.exit_code == 0, shown.output
    assert (
        f"ecall 0: hello, tester, from inside enclave {sgxs.measure_bytes(data).hex()[:16]}… "
        "(isvprodid 4, isvsvn 0)"
    ) in shown.stdout
    as_json = run("run", image, "--sig", sig, "--ephemeral", "--json")
    assert json.loads(as_json.stdout)["result"]["ecall_output"].startswith("hello, world, ")


def test_example_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    image = tmp_path / "enclave.sgxs"
    image.write_bytes(b"mine")
    result = run("example", "-o", image)
    assert result.exit_code == 2
    assert str(image) in result.stderr and "exists" in result.stderr
    assert image.read_bytes() == b"mine"
    assert run("example", "-o", image, "--force").exit_code == 0
    assert image.read_bytes() == example_image()


def test_key_public_completes_the_two_step_flow(tmp_path: Path) -> None:
    """key public → gendata → sign elsewhere → catsig with the public key = one-step sign."""
    key, pub = tmp_path / "author.pem", tmp_path / "author.pub.pem"
    image = tmp_path / "enclave.sgxs"
    image.write_bytes(example_image())
    write_author_key(key)
    result = run("key", "public", key, "-o", pub)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == mrsigner_of(rsa_key("app").public_key()).hex()
    assert b"PRIVATE" not in pub.read_bytes()
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    assert run("key", "public", key, "-o", pub).exit_code == 2  # never overwritten silently

    fields = ("--isvprodid", "7", "--isvsvn", "1", "--date", "20260101")
    assert run("gendata", image, *fields, "-o", tmp_path / "e.data").exit_code == 0
    signature = rsa_key("app").sign(
        (tmp_path / "e.data").read_bytes(), padding.PKCS1v15(), hashes.SHA256()
    )
    (tmp_path / "e.sig.raw").write_bytes(signature)
    two = run(
        "catsig", tmp_path / "e.data", "--key", pub, "--signature", tmp_path / "e.sig.raw",
        "-o", tmp_path / "two.sig",
    )  # fmt: skip
    assert two.exit_code == 0, two.output
    one = run("sign", "--key", key, image, *fields, "-o", tmp_path / "one.sig")
    assert one.exit_code == 0
    assert (tmp_path / "two.sig").read_bytes() == (tmp_path / "one.sig").read_bytes()


def elf_file(path: Path) -> Path:
    """An x86-64 ELF shared object's header and zeros: what an SDK enclave.signed.so starts as."""
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 64, 0, 0, 64, 56, 0, 64, 0, 0)
    path.write_bytes(header + bytes(151344 - len(header)))
    return path


@pytest.mark.parametrize(
    "command",
    [
        ["inspect", "{so}"],
        ["measure", "{so}"],
        ["sign", "--key", "{key}", "{so}", "-o", "{out}"],
        ["gendata", "{so}", "-o", "{out}"],
        ["verify", "{sig}", "--image", "{so}"],
        ["run", "{so}", "--sig", "{sig}", "--ephemeral"],
    ],
)
def test_an_elf_that_is_no_sdk_enclave_is_refused_by_every_image_reader(
    tmp_path: Path, command: list[str]
) -> None:
    so = elf_file(tmp_path / "enclave.signed.so")
    key, sig, out = tmp_path / "author.pem", tmp_path / "e.sig", tmp_path / "out.bin"
    write_author_key(key)
    (tmp_path / "e.sgxs").write_bytes(example_image())
    assert run("sign", "--key", key, tmp_path / "e.sgxs", "-o", sig).exit_code == 0
    argv = [a.format(so=so, key=key, sig=sig, out=out) for a in command]
    result = run(*argv)
    assert result.exit_code == 2
    # Every image reader sends an ELF to the SDK reader (docs/sdk.md), which names the file
    # and what is wrong with it.
    assert result.stderr.splitlines()[0].startswith(f"sgxlaunch: error: {so}: {NOT_AN_SDK_ENCLAVE}")
    assert not out.exists()


def crafted_bare_eadds(path: Path, total: int) -> int:
    """ECREATE, then bare EADD records filling ``total`` bytes; returns the page count."""
    n = total // 64 - 1
    words = np.zeros((n, 8), dtype="<u8")
    words[:, 0] = int.from_bytes(TAG_EADD, "little")
    words[:, 1] = np.arange(n, dtype=np.uint64) * np.uint64(PAGE_SIZE)
    words[:, 2] = secinfo_flags(PageType.REG, 0b001)
    size = 1 << (n * PAGE_SIZE - 1).bit_length()
    path.write_bytes(ecreate_block(1, size) + words.tobytes())
    return n


def test_inspect_reads_a_crafted_4mib_sgxs_in_one_linear_pass(tmp_path: Path) -> None:
    """4 MiB of bare EADD records (65535 pages named): inspected completely; this took 19 s
    and 412 MiB when the parser re-scanned the buffer at every record (issue 14)."""
    image = tmp_path / "crafted.sgxs"
    pages = crafted_bare_eadds(image, 4 << 20)
    result = run("inspect", image, "--json")
    assert result.exit_code == 0, result.stderr
    value = json.loads(result.stdout)["result"]
    assert len(value["pages"]) == pages == 65535
    assert value["mrenclave"] == sgxs.measure_bytes(image.read_bytes()).hex()
    assert {p["measured"] for p in value["pages"]} == {"0000"}
