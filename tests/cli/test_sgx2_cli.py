"""`platform status` shows SGX2 (text and JSON)."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import run
from tests.support.cli_json import result_of


def test_platform_status_shows_sgx2(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run("--home", home, "platform", "init").exit_code == 0
    text = run("--home", home, "platform", "status")
    assert text.exit_code == 0
    assert "SGX2         on (EDMM: EAUG, EMODPR, EMODT)" in text.stdout
    assert result_of(run("--home", home, "platform", "status", "--json"))["sgx2"] is True
