"""Running the command line in-process."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from sgxlaunch.cli import main


def run(*args: str | Path | int) -> Result:
    """``sgxlaunch ARGS…`` with exceptions propagated (a traceback fails the test)."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
