"""The sgxlaunch demo: the story so far, told through the real command line.

Each step runs ``sgxlaunch`` as a user would, shows what it printed and asserts the outcome;
the demo exits non-zero as soon as any outcome differs from what it should be.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from sgxlaunch.arch.constants import PAGE_SIZE, PageType, secinfo_flags
from sgxlaunch.formats.sgxs import SgxsImage, SgxsPage, write_sgxs

STEP = 0


def say(text: str) -> None:
    global STEP
    STEP += 1
    print(f"\n== {STEP}. {text}")


def sgxlaunch(*args: str | Path, expect: int) -> str:
    """Run the CLI, echo it, and check its exit code."""
    argv = [sys.executable, "-m", "sgxlaunch", *map(str, args)]
    shown = " ".join(["sgxlaunch", *(Path(a).name if isinstance(a, Path) else a for a in args)])
    print(f"$ {shown}")
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    for line in (proc.stdout + proc.stderr).rstrip().splitlines():
        print(textwrap.indent(line, "  "))
    if proc.returncode != expect:
        print(f"DEMO FAILED: exit code {proc.returncode}, expected {expect}", file=sys.stderr)
        sys.exit(1)
    return proc.stdout


def check(condition: bool, what: str) -> None:
    if not condition:
        print(f"DEMO FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"  ✓ {what}")


def build_enclave(path: Path, message: bytes) -> None:
    """A small enclave image: TCS, code, data and an SSA page, every page measured."""
    tcs = bytearray(PAGE_SIZE)
    tcs[16:24] = (3 * PAGE_SIZE).to_bytes(8, "little")  # OSSA
    tcs[28:32] = (1).to_bytes(4, "little")  # NSSA
    tcs[32:40] = PAGE_SIZE.to_bytes(8, "little")  # OENTRY
    code = hashlib.sha256(message).digest().ljust(PAGE_SIZE, b"\x90")
    data = message.ljust(PAGE_SIZE, b"\x00")
    pages = (
        SgxsPage(0, secinfo_flags(PageType.TCS), bytes(tcs), 0xFFFF),
        SgxsPage(PAGE_SIZE, secinfo_flags(PageType.REG, 0b101), code, 0xFFFF),
        SgxsPage(2 * PAGE_SIZE, secinfo_flags(PageType.REG, 0b011), data, 0xFFFF),
        SgxsPage(3 * PAGE_SIZE, secinfo_flags(PageType.REG, 0b011), bytes(PAGE_SIZE), 0xFFFF),
    )
    path.write_bytes(write_sgxs(SgxsImage(ssaframesize=1, size=0x10000, pages=pages)))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="sgxlaunch-demo-") as tmp:
        work = Path(tmp)
        key, image = work / "author.pem", work / "hello.sgxs"
        sig, tampered = work / "hello.sig", work / "hello-tampered.sgxs"

        say("The enclave author makes an SGX signing key (RSA-3072, e = 3)")
        mrsigner = sgxlaunch("key", "generate", key, expect=0).strip()
        check(len(bytes.fromhex(mrsigner)) == 32, "the key's MRSIGNER is a 32-byte hash")

        say("The author builds a small enclave image (SGXS) and measures it")
        build_enclave(image, b"hello from inside the enclave")
        mrenclave = sgxlaunch("measure", image, expect=0).strip()
        check(
            mrenclave == hashlib.sha256(image.read_bytes()).hexdigest(),
            "MRENCLAVE is the SHA-256 of the measurement stream",
        )

        say("The author signs it: the SIGSTRUCT is the first factor")
        out = sgxlaunch(
            "sign", "--key", key, image, "--isvprodid", "7", "--isvsvn", "1", "-o", sig, expect=0
        )
        check(f"mrenclave {mrenclave}" in out, "the SIGSTRUCT carries the measured MRENCLAVE")
        check(f"mrsigner  {mrsigner}" in out, "and the author's MRSIGNER")

        say("Anyone can inspect the SIGSTRUCT")
        shown = sgxlaunch("inspect", sig, expect=0)
        check("isvprodid: 7" in shown, "ISVPRODID 7 is in the signed fields")
        check("signature_valid: True" in shown, "the signature is valid")

        say("Verification: signature, Q1/Q2, MRENCLAVE of the image and the expected signer")
        sgxlaunch("verify", sig, "--image", image, "--mrsigner", mrsigner, expect=0)

        say("A tampered image (one byte of enclave data changed) is refused")
        data = bytearray(image.read_bytes())
        data[-100] ^= 0x01
        tampered.write_bytes(bytes(data))
        sgxlaunch("verify", sig, "--image", tampered, expect=1)

        say("So is a SIGSTRUCT whose signed ISVSVN was raised after signing")
        forged = bytearray(sig.read_bytes())
        forged[1026] = 2
        (work / "forged.sig").write_bytes(bytes(forged))
        sgxlaunch("verify", work / "forged.sig", expect=1)

    print("\nDemo complete: every outcome was as expected.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
