"""Protected code on the owner's platform (issue 20): ``platform le-key-quote`` (what the
author verifies and wraps a code key to) and ``platform add-code-key`` (hand the wrapped key to
the launch enclave, which keeps it sealed). The key itself never passes through here in clear:
these commands see only the public key, the quote and the wrapped file."""

from __future__ import annotations

import base64
import hashlib

import click

from sgxlaunch.cli._common import (
    about,
    echo_json,
    handle_errors,
    home_option,
    info,
    json_option,
    machine_option,
    output_option,
    socket_option,
    write_output,
)
from sgxlaunch.cli._daemon import daemon_client, send_file
from sgxlaunch.cli._home import open_platform, read_platform_input
from sgxlaunch.cli.platform import platform_group


@platform_group.command("le-key-quote")
@output_option("Where to write the quote (DCAP v3).")
@click.option(
    "--public-key-out",
    "public_key_out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the launch enclave's X25519 public key (32 bytes).",
)
@click.option("--force", is_flag=True, help="Overwrite the output files.")
@home_option
@machine_option
@socket_option
@json_option
@handle_errors
def le_key_quote(
    output: str,
    public_key_out: str,
    force: bool,
    home: str | None,
    machine: str | None,
    socket: str | None,
    as_json: bool,
) -> None:
    """Write a quote of the launch enclave binding its key-agreement public key, and the key.

    The launch enclave makes its X25519 key inside itself on first use and keeps it sealed
    with its MRENCLAVE policy; REPORTDATA = SHA-256(domain ‖ public key) ‖ 32 zero bytes.
    The author verifies the quote and wraps a code key to the public key (`sgxlaunch pcl
    wrap`). In owner mode the policy must allow the PCE and QE.

    \b
    Examples:
      sgxlaunch platform le-key-quote -o le.quote --public-key-out le.pub
      sgxlaunch platform root -o root.der; sgxlaunch platform collateral -o collateral.json
    """
    client = daemon_client(home, machine, socket)
    if client is not None:
        answer = client.call("POST", "/v1/launch-enclave/key-quote")
        quote, public_key = base64.b64decode(answer["quote"]), bytes.fromhex(answer["public_key"])
        signer = None if answer["le_mrsigner"] is None else bytes.fromhex(answer["le_mrsigner"])
    else:
        with open_platform(home, machine) as platform:
            quote, public_key = platform.le_key_quote()
            signer = platform.le_signer
    write_output(output, quote, force=force)
    write_output(public_key_out, public_key, force=force)
    facts = {
        "output": output,
        "public_key_out": public_key_out,
        "public_key": public_key.hex(),
        "quote_sha256": hashlib.sha256(quote).hexdigest(),
        "le_mrsigner": None if signer is None else signer.hex(),
    }
    if as_json:
        echo_json(facts)
        return
    info(f"quote written to {output}, public key to {public_key_out}")
    click.echo(public_key.hex())


@platform_group.command("add-code-key")
@click.argument("wrapped", type=click.Path(exists=True, dir_okay=False))
@home_option
@machine_option
@socket_option
@json_option
@handle_errors
def add_code_key(
    wrapped: str, home: str | None, machine: str | None, socket: str | None, as_json: bool
) -> None:
    """Hand a wrapped code key (`sgxlaunch pcl wrap`) to the launch enclave.

    The launch enclave unwraps it with its key-agreement key, checks the key id and the
    author's release constraint (the box's associated data) and keeps the key sealed with
    its MRENCLAVE policy in the home; the owner never sees it. Logged. It is released only to
    an enclave that matches the author's constraint and whose first matching allow rule says
    `protected_code: allow`.

    \b
    Examples:
      sgxlaunch platform add-code-key wrapped.bin
    """
    data = read_platform_input(wrapped)
    client = daemon_client(home, machine, socket)
    if client is not None:
        result = send_file(client, "/v1/code-keys", wrapped, "wrapped")
    else:
        with open_platform(home, machine) as platform, about(wrapped):
            result = platform.add_code_key(data)
    if as_json:
        echo_json(result)
        return
    constraint = result["constraint"]
    who = (
        f"mrenclave {constraint['mrenclave']}"
        if "mrenclave" in constraint
        else f"mrsigner {constraint['mrsigner']}, isvprodid {constraint['isvprodid']}"
    )
    click.echo(f"code key {result['key_id']} installed (log record {result['log_seq']})")
    click.echo(f"released only to: {who}, ISVSVN >= {constraint['min_isvsvn']}, non-debug")


def register(main: click.Group) -> None:
    """The commands are added to ``platform`` on import."""
