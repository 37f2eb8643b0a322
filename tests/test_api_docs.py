"""docs/api.md's recipes run as written: every ```python block, in order, in one empty
directory, each in a fresh namespace (as a reader would paste them into new sessions)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def recipes() -> list[str]:
    return BLOCK.findall((REPO / "docs" / "api.md").read_text())


def test_api_doc_has_the_four_recipes() -> None:
    assert len(recipes()) == 4


def test_api_doc_recipes_run_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SGXLAUNCH_HOME", raising=False)
    monkeypatch.delenv("SGXLAUNCH_MACHINE", raising=False)
    for number, block in enumerate(recipes(), start=1):
        code = compile(block, f"docs/api.md recipe {number}", "exec")
        exec(code, {"__name__": "__main__"})  # noqa: S102  # running the docs is the point
    out = capsys.readouterr().out
    # What the recipes print is the effect they claim: the ECALL answered from inside the
    # enclave, the stranger refused and denied, the log's three records verified.
    assert "refused: the SIGSTRUCT is signed by another key" in out
    assert "owner allowed hello" in out
    assert "hello, owner, from inside enclave" in out
    assert "denied: launch denied by the owner's policy" in out
    assert "6 records verify" in out
    assert "quote verifies: UpToDate" in out
    assert "refused: enclave" in out and "must be non-debug" in out
    assert (tmp_path / "home").is_dir()
