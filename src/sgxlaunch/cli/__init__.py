"""The ``sgxlaunch`` command line: thin — parse, call the library, print, map errors to exit codes.

Each command family lives in its own module with a ``register(group)`` function; the modules
are listed in ``_COMMAND_MODULES`` (adding a module is one line there).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from sgxlaunch.cli._common import GLOBAL_OPTIONS, top_level_option
from sgxlaunch.cli._output import echo_json_error

_COMMAND_MODULES = (
    "sgxlaunch.cli.author",
    "sgxlaunch.cli.inspect",
    "sgxlaunch.cli.example",
    "sgxlaunch.cli.owner",
    "sgxlaunch.cli.policy",
    "sgxlaunch.cli.platform",
    "sgxlaunch.cli.run",
    "sgxlaunch.cli.log",
    "sgxlaunch.cli.machine",
    "sgxlaunch.cli.quote",
)


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the final flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


class SgxlaunchGroup(click.Group):
    """The top-level group: click's own errors keep the JSON contract, broken pipes are quiet."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if not standalone_mode:
            return super().main(argv, prog_name, complete_var, False, **extra)
        try:
            code = super().main(argv, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:
            # Raised before the command ran (bad option, missing file, unknown command).
            if "--json" in argv:
                echo_json_error(
                    "usage", exc.format_message(), exc.exit_code, ctx=getattr(exc, "ctx", None)
                )
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except BrokenPipeError:
            # The reader went away (`sgxlaunch inspect x.sig | head -2`): what it wanted, it got.
            _quiet_stdout()
            sys.exit(0)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # Caught here, before click's own handler (which exits 1): `| head` is not an error.
            _quiet_stdout()
            sys.exit(0)


@click.group(
    cls=SgxlaunchGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="sgxlaunch")
def main() -> None:
    """sgxlaunch: owner-controlled launch of Intel SGX enclaves.

    An enclave launches only with its author's signature (SIGSTRUCT) and the platform owner's
    authorization. The author measures, signs, verifies and inspects enclaves (key, measure,
    sign, gendata, catsig, verify, inspect); the owner keeps a k-of-n root and a signed launch
    policy (owner, policy); the emulated platform runs enclaves under that policy and logs
    every launch (platform, machine, recovery, run, log).

    --home and --machine work before or after the command, or from $SGXLAUNCH_HOME and
    $SGXLAUNCH_MACHINE. Every --json prints one JSON object, also on failure (docs/json.md).
    Exit codes: 0 success, 1 verification failed or launch denied, 2 usage error or malformed
    input. Results go to stdout; messages to stderr.
    """


main.params.extend(top_level_option(name) for name in GLOBAL_OPTIONS)

for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(main)
