"""The ``sgxlaunch`` command line: thin — parse, call the library, print, map errors to exit codes.

Each command family lives in its own module with a ``register(group)`` function; the modules
are listed in ``_COMMAND_MODULES``.
"""

from __future__ import annotations

import importlib

import click

_COMMAND_MODULES = (
    "sgxlaunch.cli.author",
    "sgxlaunch.cli.inspect",
    "sgxlaunch.cli.owner",
    "sgxlaunch.cli.policy",
    "sgxlaunch.cli.platform",
    "sgxlaunch.cli.run",
    "sgxlaunch.cli.log",
    "sgxlaunch.cli.machine",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="sgxlaunch")
def main() -> None:
    """sgxlaunch: owner-controlled launch of Intel SGX enclaves.

    An enclave launches only with its author's signature (SIGSTRUCT) and the platform owner's
    authorization. These commands build, measure, sign, verify and inspect enclaves, and
    (in later commands) manage the owner's policy and the emulated platform.

    Exit codes: 0 success, 1 verification failed or launch denied, 2 usage error or malformed
    input. Results go to stdout; messages to stderr.
    """


for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(main)
