"""The ``sgxlaunch`` command line: thin — parse, call the library, print, map errors to exit codes.

Each command family lives in its own module with a ``register(group)`` function. ``_COMMANDS``
maps each top-level command to the modules that register it and its one-line help; a module is
imported only when one of its commands runs (``sgxlaunch --help`` imports none of them), so a
new command is one line there. A test checks the one-line help against the command's own.
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

_AUTHOR = "sgxlaunch.cli.author"
_COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    "catsig": (
        (_AUTHOR,),
        "Two-step signing, step 2: assemble and verify a SIGSTRUCT from gendata's DATA.",
    ),
    "convert": (
        (_AUTHOR,),
        "Write the SGXS stream equivalent to an Intel SDK enclave IMAGE; print its MRENCLAVE.",
    ),
    "example": (
        ("sgxlaunch.cli.example",),
        "Write a small real enclave to try the tools on; print its MRENCLAVE.",
    ),
    "gendata": (
        (_AUTHOR,),
        "Two-step signing, step 1: write the exact 256 bytes the author must sign.",
    ),
    "inspect": (
        ("sgxlaunch.cli.inspect",),
        "Show an SGX structure or SGXS image field by field.",
    ),
    "key": (
        (_AUTHOR,),
        "Create SGX signing keys (RSA-3072, e = 3) and show their MRSIGNER.",
    ),
    "log": (
        ("sgxlaunch.cli.log",),
        ("The launch log: every INIT attempt, hash-chained and MACed by the launch enclave."),
    ),
    "machine": (
        ("sgxlaunch.cli.machine", "sgxlaunch.cli.pcs"),
        (
            "The machine: seed, OWNEREPOCH, firmware configuration, owner binding and "
            "monotonic counter (physical presence: these commands need the machine file "
            "itself)."
        ),
    ),
    "measure": (
        (_AUTHOR,),
        "Print the MRENCLAVE of an SGXS IMAGE or SDK enclave (lower-case hex).",
    ),
    "owner": (
        ("sgxlaunch.cli.owner",),
        "The platform owner's root: k-of-n policy-signing keys, versioned and expiring.",
    ),
    "pcl": (
        ("sgxlaunch.cli.pcl",),
        "Protected code: encrypt an enclave's code, wrap its key for an owner's launch enclave.",
    ),
    "platform": (
        (
            "sgxlaunch.cli.platform",
            "sgxlaunch.cli.machine",
            "sgxlaunch.cli.pcs",
            "sgxlaunch.cli.codekeys",
        ),
        "The emulated SGX platform kept under --home: its CPU, driver and owner control.",
    ),
    "policy": (
        ("sgxlaunch.cli.policy",),
        "Write, sign, verify, install and explain the owner's launch policy.",
    ),
    "quote": (
        ("sgxlaunch.cli.quote",),
        "Read, verify and appraise Intel DCAP ECDSA quotes (v3, v4, v5; SGX and TDX).",
    ),
    "recovery": (
        ("sgxlaunch.cli.machine",),
        (
            "Owner recovery from a refused start (lost or damaged home): a document signed by"
            " a threshold of the owner's keys, bound to the platform and the monotonic "
            "counter's value."
        ),
    ),
    "run": (
        ("sgxlaunch.cli.run",),
        ("Load and initialize an enclave on the platform, or say exactly why it was refused."),
    ),
    "serve": (
        ("sgxlaunch.cli.serve",),
        "Serve the platform on a Unix socket (HTTP/1.1 JSON; docs/service.md).",
    ),
    "sign": (
        (_AUTHOR,),
        "Sign an enclave: write its SIGSTRUCT to OUTPUT and print MRENCLAVE and MRSIGNER.",
    ),
    "verify": (
        (_AUTHOR,),
        "Verify a SIGSTRUCT: signature, Q1/Q2, and optionally MRENCLAVE and MRSIGNER.",
    ),
}
"""Top-level command → (modules whose ``register(group)`` add it, its one-line help)."""


_REGISTERED: set[str] = set()


def _register(module: str, group: click.Group) -> None:
    """Import a command module (once) and let it add its commands to ``group``."""
    if module not in _REGISTERED:
        _REGISTERED.add(module)
        importlib.import_module(module).register(group)


def load_all_commands() -> None:
    """Register every command (for walking the whole tree: docs, tests)."""
    for name in _COMMANDS:
        main.get_command(click.Context(main), name)


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the final flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


class SgxlaunchGroup(click.Group):
    """The top-level group: commands loaded on first use, click's own errors keep the JSON
    contract, broken pipes are quiet."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in _COMMANDS:
            for module in _COMMANDS[cmd_name][0]:
                _register(module, self)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from ``_COMMANDS`` (no command module is imported for --help)."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in _COMMANDS:
                text = click.Command(name, help=_COMMANDS[name][1]).get_short_help_str(limit)
            else:
                text = self.commands[name].get_short_help_str(limit)
            rows.append((name, text))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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
                    "usage",
                    exc.format_message(),
                    exc.exit_code,
                    ctx=getattr(exc, "ctx", None),
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
    authorization. The author measures, signs, verifies and inspects enclaves (example, key,
    measure, sign, gendata, catsig, verify, inspect, convert); the owner keeps a k-of-n root and a
    signed launch policy (owner, policy); the emulated platform runs enclaves under that policy
    and logs every launch (platform, machine, recovery, run, log) and appraises quotes (quote).

    --home and --machine work before or after the command, or from $SGXLAUNCH_HOME and
    $SGXLAUNCH_MACHINE. Every --json prints one JSON object, also on failure (docs/json.md).
    Exit codes: 0 success, 1 verification failed or launch denied, 2 usage error or malformed
    input. Results go to stdout; messages to stderr.
    """


main.params.extend(top_level_option(name) for name in GLOBAL_OPTIONS)
