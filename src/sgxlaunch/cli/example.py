"""``sgxlaunch example``: write the example enclave shipped with sgxlaunch, as an SGXS image."""

from __future__ import annotations

import click

from sgxlaunch.cli._common import (
    echo_json,
    handle_errors,
    info,
    json_option,
    output_option,
    write_output,
)


@click.command("example")
@output_option("Where to write the SGXS image.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option(
    "--loader",
    is_flag=True,
    help="Write the example loader instead: it fetches code after EINIT and runs it "
    "(attested-code grants).",
)
@json_option
@handle_errors
def example(output: str, force: bool, loader: bool, as_json: bool) -> None:
    """Write a small real enclave to try the tools on; print its MRENCLAVE.

    The image holds the example program (HelloEnclave, shipped with sgxlaunch): measured
    TCS, code, SSA and data pages, its code bound into MRENCLAVE. Sign it and run it, and
    `run` enters it: ECALL 0 answers with a greeting from inside.

    \b
    Example:
      sgxlaunch example -o enclave.sgxs
      sgxlaunch key generate -o author.pem
      sgxlaunch sign --key author.pem enclave.sgxs -o enclave.sig
      sgxlaunch run enclave.sgxs --sig enclave.sig --ephemeral --input reader

    With --loader, the image is the example loader (CodeLoader): `run` then has it fetch a
    page of code into memory added after EINIT, asks the owner's launch enclave for an
    attested-code grant when the owner's policy says `attested-code` (the grant is logged
    with the code hash), maps the page R-X and runs it. Sign it with ATTRIBUTES.KSS
    (`sign --attributes 0x84/0x3`) so the driver can tell its instances apart.
    """
    from sgxlaunch.formats.sgxs import measure_bytes

    if loader:
        from sgxlaunch.example_loader import loader_sgxs

        data, what = loader_sgxs(), "the example loader"
    else:
        from sgxlaunch.example import example_image

        data, what = example_image(), "the example enclave"
    write_output(output, data, force=force)
    info(f"wrote {output} ({what}, {len(data)} bytes of SGXS)")
    mrenclave = measure_bytes(data).hex()
    if as_json:
        echo_json({"output": output, "loader": loader, "size": len(data), "mrenclave": mrenclave})
    else:
        click.echo(mrenclave)


def register(main: click.Group) -> None:
    """Add ``example`` to the ``sgxlaunch`` group."""
    main.add_command(example)
