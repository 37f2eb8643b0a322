"""``sgxlaunch serve`` (and ``sgxlaunchd``): the platform as a service on a Unix socket."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sgxlaunch.cli._common import handle_errors, home_option, machine_option, socket_option
from sgxlaunch.store import resolve_home, resolve_machine


@click.command("serve")
@home_option
@machine_option
@socket_option
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="The daemon's configuration (default: sgxlaunchd.json beside the machine file; "
    "root-owned, never in the home).",
)
@handle_errors
def serve(
    home: str | None, machine: str | None, socket: str | None, config_path: str | None
) -> None:
    """Serve the platform on a Unix socket (HTTP/1.1 JSON; docs/service.md).

    Holds the machine and the home for as long as it runs (an in-process command on them
    refuses and names the socket). The socket is --socket, $SGXLAUNCH_SOCKET, a socket passed
    by systemd (LISTEN_FDS), or $XDG_RUNTIME_DIR/sgxlaunch/sgxlaunchd.sock; mode 0660. Prints
    one readiness line (JSON) on stdout, logs JSON lines on stderr, and stops on SIGTERM after
    the requests in flight.

    \b
    Example:
      sgxlaunch serve --home /var/lib/sgxlaunch --machine /var/lib/sgxlaunch-machine/machine.json
    """
    from sgxlaunch.service.server import serve as run_daemon

    code = run_daemon(
        resolve_home(home),
        resolve_machine(machine),
        socket_path=None if socket is None else Path(socket),
        config_path=None if config_path is None else Path(config_path),
    )
    sys.exit(code)


def daemon_main() -> None:
    """The ``sgxlaunchd`` entry point: ``sgxlaunch serve`` with the same options."""
    from sgxlaunch.cli import main

    main.main(["serve", *sys.argv[1:]], prog_name="sgxlaunchd")


def register(main: click.Group) -> None:
    """Add ``serve`` to the ``sgxlaunch`` group."""
    main.add_command(serve)
