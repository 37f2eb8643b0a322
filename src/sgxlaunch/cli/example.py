"""``sgxlaunch example``: write the example enclave shipped with sgxlaunch, as an SGXS image."""

from __future__ import annotations

import click

from sgxlaunch.cli._common import handle_errors, output_option, write_output


@click.command("example")
@output_option("Where to write the SGXS image.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@handle_errors
def example(output: str, force: bool) -> None:
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
    """
    from sgxlaunch.example import example_image
    from sgxlaunch.formats.sgxs import measure_bytes

    data = example_image()
    write_output(output, data, force=force)
    click.echo(f"wrote {output} (the example enclave, {len(data)} bytes of SGXS)", err=True)
    click.echo(measure_bytes(data).hex())


def register(main: click.Group) -> None:
    """Add ``example`` to the ``sgxlaunch`` group."""
    main.add_command(example)
