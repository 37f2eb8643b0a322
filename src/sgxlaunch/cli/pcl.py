"""Protected code, the author's commands: ``sgxlaunch pcl encrypt|wrap`` (docs/pcl.md).

Thin: read files, call :mod:`sgxlaunch.pcl`, write, print. Keys come from files only (never
from argv) and never appear in output or error messages. Exit codes: 0 done, 1 verification
failed (the quote, the launch enclave's identity), 2 malformed input or usage.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

import click

from sgxlaunch.cli._common import (
    HexBytesParam,
    about,
    echo_json,
    handle_errors,
    info,
    json_option,
    output_option,
    read_input,
    utc_now,
    write_output,
)
from sgxlaunch.cli._documents import TimeParam
from sgxlaunch.errors import MalformedInput

_SMALL = 4096
_HEX = frozenset(b"0123456789abcdefABCDEF")


def _read_32(path: str, what: str) -> bytes:
    """A 32-byte secret or key from a file: 32 raw bytes, or 64 hex digits (whitespace
    around them allowed). The message never quotes the file's contents."""
    data = read_input(path, limit=_SMALL)
    if len(data) == 32:
        return data
    text = data.strip()
    if len(text) == 64 and all(c in _HEX for c in text):
        return bytes.fromhex(text.decode())
    raise MalformedInput(
        f"{what} file must hold 32 raw bytes or 64 hex digits (found {len(data)} bytes)",
        source=path,
        field=what,
    )


def register(main: click.Group) -> None:
    main.add_command(pcl_group)


@click.group("pcl")
def pcl_group() -> None:
    """Protected code: encrypt an enclave's code, wrap its key for an owner's launch enclave.

    The author encrypts the code region (`pcl encrypt`), signs the encrypted image, and wraps
    the code key for the owner's launch enclave after verifying its quote (`pcl wrap`). The
    owner installs the wrapped key (`platform add-code-key`); the launch enclave releases it
    at launch only under both the author's constraint and the owner's policy. See docs/pcl.md.
    """


@pcl_group.command("encrypt")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--code-key-file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The code key K: 32 raw bytes or 64 hex digits (e.g. head -c 32 /dev/urandom > K).",
)
@output_option("The encrypted SGXS image to write.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@json_option
@handle_errors
def pcl_encrypt(image: str, code_key_file: str, output: str, force: bool, as_json: bool) -> None:
    """Encrypt IMAGE's code region with AES-256-GCM per page and add the measured decryptor.

    The code region is the run of executable pages; each page is encrypted under K (nonce
    from a fresh salt and the page index, tag per page, AAD = salt ‖ page offset) and made
    RWX for decryption in place. The decryptor, the tags and a header (region, salt, key id)
    are added at the top of ELRANGE. Prints the new MRENCLAVE (it measures the ciphertext):
    sign the output, not the input.

    \b
    Example:
      sgxlaunch pcl encrypt enclave.sgxs --code-key-file code.key -o enclave.enc.sgxs
      sgxlaunch sign --key author.pem enclave.enc.sgxs -o enclave.enc.sig
    """
    from sgxlaunch._api import read_image
    from sgxlaunch.formats.sgxs import measure_bytes, write_sgxs
    from sgxlaunch.pcl.format import encrypt_image

    code_key = _read_32(code_key_file, "code key")
    parsed = read_image(image)
    with about(image):
        encrypted, header = encrypt_image(parsed, code_key, random=os.urandom)
    data = write_sgxs(encrypted)
    mrenclave = measure_bytes(data)
    write_output(output, data, force=force)
    result = {
        "output": output,
        "mrenclave": mrenclave.hex(),
        "size": encrypted.size,
        "key_id": header.key_id.hex(),
        "region_offset": header.region_offset,
        "page_count": header.page_count,
        "entry_offset": header.entry_offset,
    }
    if as_json:
        echo_json(result)
        return
    info(
        f"wrote {output}: {header.page_count} code pages encrypted at "
        f"0x{header.region_offset:x}, key id {header.key_id.hex()}",
    )
    click.echo(mrenclave.hex())


@pcl_group.command("wrap")
@click.option(
    "--code-key-file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The code key K (32 raw bytes or 64 hex digits).",
)
@click.option(
    "--le-quote",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The owner's launch-enclave quote (`sgxlaunch platform le-key-quote`).",
)
@click.option(
    "--le-public-key",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The launch enclave's X25519 public key (32 raw bytes or 64 hex digits).",
)
@click.option(
    "--collateral",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Collateral JSON for the quote (`sgxlaunch platform collateral`).",
)
@click.option(
    "--root",
    type=click.Path(exists=True, dir_okay=False),
    help="Trust this root certificate (DER or PEM) instead of Intel's SGX Root CA.",
)
@click.option(
    "--owner-root",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The platform owner's root (root.json): names the launch enclave image.",
)
@click.option(
    "--release",
    required=True,
    help="Who may receive the key: mrenclave=<hex> or mrsigner=<hex>,isvprodid=<n>.",
)
@click.option(
    "--min-isvsvn",
    type=click.IntRange(0, 0xFFFF),
    default=0,
    show_default=True,
    help="Lowest ISVSVN that may receive the key.",
)
@click.option(
    "--le-mrsigner",
    type=HexBytesParam(32),
    help="Also require the launch enclave's MRSIGNER (the owner's launch-enclave key).",
)
@click.option(
    "--at", "at", type=TimeParam(), help="Check the collateral at this UTC time (default: now)."
)
@output_option("The wrapped key file to write.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@json_option
@handle_errors
def pcl_wrap(
    code_key_file: str,
    le_quote: str,
    le_public_key: str,
    collateral: str,
    root: str | None,
    owner_root: str,
    release: str,
    min_isvsvn: int,
    le_mrsigner: bytes | None,
    at: datetime | None,
    output: str,
    force: bool,
    as_json: bool,
) -> None:
    """Wrap the code key for the owner's launch enclave, after verifying its quote.

    Checks, in order: the quote verifies against the collateral under the pinned root (as
    `quote verify`); the quoted enclave is sgxlaunch's launch enclave for --owner-root
    (MRENCLAVE), signed by --le-mrsigner when given, non-debug, running as the launch
    enclave; its REPORTDATA binds --le-public-key. Then K is encrypted to that key (X25519 +
    HKDF-SHA256 + AES-256-GCM) with the release constraint as associated data.

    \b
    Example:
      sgxlaunch pcl wrap --code-key-file code.key --le-quote le.quote \\
          --le-public-key le.pub --collateral collateral.json --root root.der \\
          --owner-root root.json --release mrsigner=<hex>,isvprodid=1 --min-isvsvn 2 \\
          -o wrapped.bin
    """
    from sgxlaunch.attest import Collateral, TrustAnchor, verify_quote
    from sgxlaunch.attest.roots import MAX_ROOT_SIZE
    from sgxlaunch.attest.verify import MAX_COLLATERAL_SIZE
    from sgxlaunch.formats.quote import MAX_QUOTE_SIZE
    from sgxlaunch.pcl.crypto import ReleaseConstraint
    from sgxlaunch.pcl.wrap import wrap_code_key

    constraint = ReleaseConstraint.parse(release, min_isvsvn)
    code_key = _read_32(code_key_file, "code key")
    public = _read_32(le_public_key, "launch-enclave public key")
    quote = read_input(le_quote, limit=MAX_QUOTE_SIZE)
    collateral_data = read_input(collateral, limit=MAX_COLLATERAL_SIZE)
    with about(collateral):
        parsed_collateral = Collateral.from_bytes(collateral_data)
    if root is None:
        anchor = TrustAnchor.intel()
    else:
        root_data = read_input(root, limit=MAX_ROOT_SIZE)
        with about(root):
            anchor = TrustAnchor.from_certificate(root_data)
    owner = read_input(owner_root)
    now = at if at is not None else utc_now()
    with about(le_quote, verification=True):
        verified = verify_quote(quote, parsed_collateral, now, anchor=anchor)
    with about(owner_root):
        from sgxlaunch.pcl.wrap import expected_le_mrenclave

        expected_le_mrenclave(owner)  # the owner root parses (named on failure)
    with about(le_quote, verification=True):
        wrapped = wrap_code_key(
            code_key,
            verified,
            public,
            owner,
            constraint,
            random=os.urandom,
            le_mrsigner=le_mrsigner,
        )
    write_output(output, wrapped.to_bytes(), force=force)
    body = verified.quote.body
    result: dict[str, Any] = {
        "output": output,
        "key_id": wrapped.key_id.hex(),
        "release": constraint.describe(),
        "launch_enclave": {
            "mrenclave": body.mrenclave.hex(),  # type: ignore[union-attr]
            "mrsigner": body.mrsigner.hex(),  # type: ignore[union-attr]
            "public_key": public.hex(),
            "tcb_status": verified.tcb_status,
        },
    }
    if as_json:
        echo_json(result)
        return
    info(f"wrote {output}: key {wrapped.key_id.hex()} wrapped")
    click.echo(f"launch enclave: {result['launch_enclave']['mrenclave']}")
    click.echo(f"tcb status:     {verified.tcb_status}")
    click.echo(f"release:        {constraint.text()} min_isvsvn={min_isvsvn} (never DEBUG)")
