"""The README's "Using the tools" runs as written: each ```sh block, verbatim, in a fresh empty
directory, with the venv's ``sgxlaunch`` on PATH and the default home and machine pointed into
the temporary directory (so nothing outside it is touched). A block fails on the first command
that fails (``set -e``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # started first under `make test` (tests/conftest.py)

SECTION = re.compile(r"^## Using the tools\n(.*?)^## ", re.S | re.M)
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)


def blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = SECTION.search(text)
    assert section is not None, "README.md has no 'Using the tools' section"
    return BLOCK.findall(section.group(1))


def test_quick_start_is_exactly_two_commands() -> None:
    text = (REPO / "README.md").read_text()
    quick = re.search(r"^## Quick start\n.*?^```sh\n(.*?)^```", text, re.S | re.M)
    assert quick is not None
    commands = [line.split("#")[0].strip() for line in quick.group(1).splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]


def test_readme_has_the_three_walkthroughs() -> None:
    assert len(blocks()) == 3


@pytest.mark.parametrize("index", range(3), ids=["author", "two-step", "owner"])
def test_readme_block_runs_verbatim(index: int, tmp_path: Path) -> None:
    block = blocks()[index]
    if "openssl " in block and shutil.which("openssl") is None:
        pytest.skip("this block uses the openssl command")
    work = tmp_path / "work"
    work.mkdir()
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "sgxlaunch").exists(), "the venv's sgxlaunch script is missing"
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path / "user"),
        "SGXLAUNCH_HOME": str(tmp_path / "default-home"),
        "SGXLAUNCH_MACHINE": str(tmp_path / "default-machine.json"),
        "LANG": "C.UTF-8",
    }
    proc = subprocess.run(
        ["bash", "-e", "-c", block],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, f"block {index} failed:\n{proc.stdout}\n{proc.stderr}"
    out = proc.stdout
    if index == 0:
        assert "ecall 0: hello, you, from inside enclave" in out
        assert "OK: signature" in out
    elif index == 1:
        assert "the same SIGSTRUCT" in out
    else:
        assert "decision allowed (rule app)" in out
        assert "ecall 0: hello, owner, from inside enclave" in out
        assert "denied (exit 1)" in out
        assert not (tmp_path / "default-home").exists()  # the block's own home was used
