"""docs/cli.md is generated from the click tree and current; shell completion works."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from click.testing import CliRunner

from sgxlaunch.cli import load_all_commands, main

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_cli_md_is_current() -> None:
    rendered = _generator().render()
    committed = (ROOT / "docs" / "cli.md").read_text()
    assert committed == rendered, "docs/cli.md is stale: run `python scripts/gen_cli_docs.py`"


def test_docs_cli_md_covers_every_command() -> None:
    load_all_commands()
    text = (ROOT / "docs" / "cli.md").read_text()
    for name in main.commands:
        assert f"### `sgxlaunch {name}`" in text, name
    assert "_SGXLAUNCH_COMPLETE" in text


def test_shell_completion_as_documented() -> None:
    runner = CliRunner()
    script = runner.invoke(
        main, [], prog_name="sgxlaunch", env={"_SGXLAUNCH_COMPLETE": "bash_source"}
    )
    assert script.exit_code == 0 and "_sgxlaunch_completion" in script.stdout
    words = runner.invoke(
        main,
        [],
        prog_name="sgxlaunch",
        env={
            "_SGXLAUNCH_COMPLETE": "bash_complete",
            "COMP_WORDS": "sgxlaunch pol",
            "COMP_CWORD": "1",
        },
    )
    assert words.exit_code == 0 and words.stdout.splitlines() == ["plain,policy"]
    options = runner.invoke(
        main,
        [],
        prog_name="sgxlaunch",
        env={
            "_SGXLAUNCH_COMPLETE": "bash_complete",
            "COMP_WORDS": "sgxlaunch log show --ho",
            "COMP_CWORD": "3",
        },
    )
    assert options.stdout.splitlines() == ["plain,--home"]
