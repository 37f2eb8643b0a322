"""The enclave author's commands: ``key``, ``measure``, ``sign``, ``gendata``, ``catsig``,
``verify``, ``convert``.

Every command that takes an enclave image takes an SGXS file or an Intel SGX SDK enclave
(``enclave.signed.so``, recognised by its ELF magic; ``docs/sdk.md``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from sgxlaunch._images import is_sdk_file, measure_sdk_file, read_sdk, sdk_plan
from sgxlaunch.arch import AttributeFlag, Attributes, Sigstruct
from sgxlaunch.arch.constants import VENDOR_INTEL, VENDOR_NONE
from sgxlaunch.cli._common import (
    HexBytesParam,
    IntParam,
    about,
    echo_json,
    handle_errors,
    info,
    json_mode,
    json_option,
    output_option,
    parse_int_text,
    read_input,
    read_sigstruct,
    warn_sdk_header,
    write_output,
)
from sgxlaunch.errors import UsageError, VerificationFailed
from sgxlaunch.formats import sdk
from sgxlaunch.sigstruct import (
    DEFAULT_ATTRIBUTEMASK,
    DEFAULT_ATTRIBUTES,
    DEFAULT_MISCMASK,
    DEFAULT_MISCSELECT,
    RsaKeySigner,
    assemble,
    check_mrenclave,
    check_mrsigner,
    generate_key,
    mrsigner_of,
    sign,
    signing_data,
    verify,
)
from sgxlaunch.store.keyfiles import (
    load_enclave_key,
    load_enclave_public_key,
    write_enclave_key,
    write_enclave_public_key,
)

PROGRESS_THRESHOLD = 64 << 20


class AttributesParam(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """``FLAGS/XFRM``, each decimal or 0x hex, 64 bits."""

    name = "FLAGS/XFRM"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Attributes:
        if isinstance(value, Attributes):
            return value
        text = str(value)
        parts = text.split("/")
        if len(parts) != 2:
            self.fail(f"{text!r}: expected FLAGS/XFRM, e.g. 0x4/0x3", param, ctx)
        numbers = [parse_int_text(p) for p in parts]
        if any(n is None or n >= 1 << 64 for n in numbers):
            self.fail(f"{text!r}: FLAGS and XFRM must be 64-bit integers", param, ctx)
        flags, xfrm = numbers
        assert flags is not None and xfrm is not None
        return Attributes(flags=flags, xfrm=xfrm)


class DateParam(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """``YYYYMMDD`` (a real date) or ``00000000``; stored as the u32 0xYYYYMMDD."""

    name = "YYYYMMDD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value)
        if text == "00000000":
            return 0
        if len(text) != 8 or not text.isascii() or not text.isdigit():
            self.fail(f"{text!r}: expected YYYYMMDD or 00000000", param, ctx)
        try:
            dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
        except ValueError:
            self.fail(f"{text!r} is not a calendar date", param, ctx)
        return int(text, 16)


def _today() -> int:
    return int(dt.date.today().strftime("%Y%m%d"), 16)


def _sign_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The SIGSTRUCT field options shared by ``sign`` and ``gendata``."""
    options = [
        click.option(
            "--mrenclave",
            type=HexBytesParam(32),
            help="Sign this MRENCLAVE (64 hex digits) instead of measuring an image.",
        ),
        click.option(
            "--size",
            type=IntParam(64),
            help="Enclave size for an UNSIZED (enhanced) SGXS image.",
        ),
        click.option("--isvprodid", type=IntParam(16), default=0, show_default=True),
        click.option("--isvsvn", type=IntParam(16), default=0, show_default=True),
        click.option(
            "--debug", is_flag=True, help="Set ATTRIBUTES.DEBUG in the default attributes."
        ),
        click.option(
            "--attributes",
            type=AttributesParam(),
            help="ATTRIBUTES as FLAGS/XFRM, written verbatim.  [default: 0x4/0x3]",
        ),
        click.option(
            "--attributes-mask",
            type=AttributesParam(),
            help="ATTRIBUTEMASK as FLAGS/XFRM, the literal SIGSTRUCT value (not inverted).  "
            "[default: 0xfffffffffffffffd/0xfffffffffffffffc]",
        ),
        click.option(
            "--miscselect", type=IntParam(32), default=DEFAULT_MISCSELECT, show_default=True
        ),
        click.option(
            "--misc-mask",
            type=IntParam(32),
            default=DEFAULT_MISCMASK,
            show_default="0xffffffff",
            help="MISCMASK, the literal SIGSTRUCT value (not inverted).",
        ),
        click.option(
            "--date",
            type=DateParam(),
            help="DATE as YYYYMMDD (or 00000000).  [default: today]",
        ),
        click.option(
            "--vendor",
            type=click.Choice(["none", "intel"]),
            default="none",
            show_default=True,
            help="VENDOR: none = 0x0000, intel = 0x8086.",
        ),
        click.option("--swdefined", type=IntParam(32), default=0, show_default=True),
        click.option("--isvfamilyid", type=HexBytesParam(16), help="16 bytes as 32 hex digits."),
        click.option("--isvextprodid", type=HexBytesParam(16), help="16 bytes as 32 hex digits."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _body_from_options(image: str | None, opts: dict[str, Any]) -> Sigstruct:
    """Build the unsigned SIGSTRUCT body from an image (or --mrenclave) and the options."""
    mrenclave: bytes | None = opts["mrenclave"]
    if (image is None) == (mrenclave is None):
        raise UsageError(
            "give either an IMAGE (.sgxs or SDK enclave .so) or --mrenclave HEX (exactly one)"
        )
    if image is not None:
        mrenclave = _measure_with_progress(Path(image), opts.get("size"))
    elif opts.get("size") is not None:
        raise UsageError("--size applies to an image, not to --mrenclave")
    assert mrenclave is not None
    attributes: Attributes | None = opts["attributes"]
    if attributes is None:
        attributes = DEFAULT_ATTRIBUTES
        if image is not None and is_sdk_file(image):
            # sgx_sign writes metadata.attributes.flags = SIGSTRUCT.ATTRIBUTES.flags
            flags = read_sdk(image).select().attributes_flags & ~int(AttributeFlag.DEBUG)
            attributes = Attributes(flags=flags, xfrm=DEFAULT_ATTRIBUTES.xfrm)
        if opts["debug"]:
            attributes = attributes | Attributes(flags=int(AttributeFlag.DEBUG), xfrm=0)
    elif opts["debug"] and not attributes.debug:
        raise UsageError(
            "--debug contradicts --attributes without the DEBUG bit (0x2); explicit attributes "
            "are written verbatim"
        )
    mask: Attributes = opts["attributes_mask"] or DEFAULT_ATTRIBUTEMASK
    date = opts["date"] if opts["date"] is not None else _today()
    return Sigstruct(
        vendor=VENDOR_INTEL if opts["vendor"] == "intel" else VENDOR_NONE,
        date=date,
        swdefined=opts["swdefined"],
        miscselect=opts["miscselect"],
        miscmask=opts["misc_mask"],
        isvfamilyid=opts["isvfamilyid"] or bytes(16),
        attributes=attributes,
        attributemask=mask,
        enclavehash=mrenclave,
        isvextprodid=opts["isvextprodid"] or bytes(16),
        isvprodid=opts["isvprodid"],
        isvsvn=opts["isvsvn"],
    )


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def _measure_with_progress(path: Path, size: int | None) -> bytes:
    """Measure an SGXS file (a progress bar on stderr for large files on a terminal, none
    under --json) or an Intel SDK enclave (re-measured from its pages)."""
    from sgxlaunch._api import measure_image  # the API module pulls in the platform: lazily

    total = path.stat().st_size
    if total < PROGRESS_THRESHOLD or json_mode() or not _stderr_is_terminal():
        return measure_image(path, size=size)
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(f"measuring {path.name}", total=total)
        return measure_image(path, size=size, progress=lambda n: progress.advance(task, n))


@click.group("key")
def key_group() -> None:
    """Create SGX signing keys (RSA-3072, e = 3) and show their MRSIGNER."""


@key_group.command("generate")
@output_option("Where to write the private key (PEM, mode 0600).", dest="out")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@json_option
@handle_errors
def key_generate(out: str, force: bool, as_json: bool) -> None:
    """Generate an SGX signing key (RSA-3072, e = 3) into OUTPUT (PEM, 0600); print its MRSIGNER.

    \b
    Examples:
      sgxlaunch key generate -o author.pem
      sgxlaunch key generate -o le.pem --json
    """
    key = generate_key()
    write_enclave_key(out, key, force=force)
    info(f"wrote {out}")
    mrsigner = mrsigner_of(key.public_key()).hex()
    if as_json:
        echo_json({"output": out, "mrsigner": mrsigner})
    else:
        click.echo(mrsigner)


@key_group.command("public")
@click.argument("key", type=click.Path(exists=True, dir_okay=False))
@output_option("Where to write the public key (PEM).", dest="out")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@json_option
@handle_errors
def key_public(key: str, out: str, force: bool, as_json: bool) -> None:
    """Write the public half of KEY to OUTPUT (PEM) and print its MRSIGNER.

    The public key is what `catsig --key` needs when the private key stays elsewhere.

    \b
    Examples:
      sgxlaunch key public author.pem -o author.pub.pem
      sgxlaunch key public author.pem -o author.pub.pem --json
    """
    public_key = load_enclave_public_key(key)
    write_enclave_public_key(out, public_key, force=force)
    info(f"wrote {out}")
    mrsigner = mrsigner_of(public_key).hex()
    if as_json:
        echo_json({"key": key, "output": out, "mrsigner": mrsigner})
    else:
        click.echo(mrsigner)


@key_group.command("mrsigner")
@click.argument("key", type=click.Path(exists=True, dir_okay=False))
@json_option
@handle_errors
def key_mrsigner(key: str, as_json: bool) -> None:
    """Print MRSIGNER (SHA-256 of the little-endian modulus) of a public or private KEY.

    \b
    Examples:
      sgxlaunch key mrsigner author.pem
      sgxlaunch key mrsigner author.pub.pem --json
    """
    mrsigner = mrsigner_of(load_enclave_public_key(key)).hex()
    if as_json:
        echo_json({"key": key, "mrsigner": mrsigner})
    else:
        click.echo(mrsigner)


@click.command("measure")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--size", type=IntParam(64), help="Enclave size for an UNSIZED SGXS stream.")
@json_option
@handle_errors
def measure(image: str, size: int | None, as_json: bool) -> None:
    """Print the MRENCLAVE of an SGXS IMAGE or SDK enclave (lower-case hex).

    An SGXS file is streamed in constant memory; a non-canonical record is named with its
    index and file offset (exit 2). An Intel SDK enclave (enclave.signed.so) is re-measured
    from its pages as the SDK loader builds it, never read from its SIGSTRUCT.

    \b
    Examples:
      sgxlaunch measure enclave.sgxs
      sgxlaunch measure enclave.signed.so
    """
    mrenclave = _measure_with_progress(Path(image), size)
    if as_json:
        echo_json({"image": image, "mrenclave": mrenclave.hex()})
    else:
        click.echo(mrenclave.hex())


@click.command("sign")
@click.argument("image", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The author's RSA-3072 e=3 private key (PEM).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the 1808-byte SIGSTRUCT (for an SDK enclave: the signed .so).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@_sign_options
@json_option
@handle_errors
def sign_cmd(
    image: str | None, key_path: str, output: str, force: bool, as_json: bool, **opts: Any
) -> None:
    """Sign an enclave: write its SIGSTRUCT to OUTPUT and print MRENCLAVE and MRSIGNER.

    Defaults follow Fortanix sgxs-sign: attributes 0x4/0x3, mask
    0xfffffffffffffffd/0xfffffffffffffffc, miscselect 0, misc mask 0xffffffff, vendor 0,
    swdefined 0, date today. Explicit values are written verbatim.

    An Intel SDK enclave whose metadata is laid out (sgx_sign's "sign" after layout) gets the
    SIGSTRUCT written into every metadata record of its .note.sgxmeta; OUTPUT is then the
    signed .so, identical to IMAGE elsewhere. Its default ATTRIBUTES.FLAGS are the metadata's.

    \b
    Examples:
      sgxlaunch sign --key author.pem enclave.sgxs -o enclave.sig
      sgxlaunch sign --key author.pem enclave.so -o enclave.signed.so
      sgxlaunch sign --key author.pem --mrenclave 043e…0956 --isvprodid 7 -o e.sig
      sgxlaunch sign --key author.pem enclave.sgxs -o enclave.sig --json
    """
    key = load_enclave_key(key_path)
    body = _body_from_options(image, opts)
    signed = sign(body, RsaKeySigner(key))
    into_sdk = image is not None and is_sdk_file(image)
    if image is not None and into_sdk:
        data = sdk.with_sigstruct(read_sdk(image), signed)
    else:
        data = signed.to_bytes()
    write_output(output, data, force=force)
    info(f"wrote {output}")
    _print_signed(output, signed, data, into_sdk, as_json)


def _print_signed(
    output: str, signed: Sigstruct, data: bytes, into_sdk: bool, as_json: bool
) -> None:
    """What `sign` and `catsig` print: MRENCLAVE and MRSIGNER (with --json, also the file
    written, whether it is a SIGSTRUCT or a signed SDK enclave, its SHA-256 and the identity
    fields a launch policy matches on)."""
    if as_json:
        echo_json(
            {
                "output": output,
                "format": "sdk" if into_sdk else "sigstruct",
                "sha256": hashlib.sha256(data).hexdigest(),
                "mrenclave": signed.enclavehash.hex(),
                "mrsigner": signed.mrsigner.hex(),
                "isvprodid": signed.isvprodid,
                "isvsvn": signed.isvsvn,
                "attributes": {"flags": signed.attributes.flags, "xfrm": signed.attributes.xfrm},
            }
        )
        return
    click.echo(f"mrenclave {signed.enclavehash.hex()}")
    click.echo(f"mrsigner  {signed.mrsigner.hex()}")


@click.command("gendata")
@click.argument("image", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the 256 bytes to be signed.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@_sign_options
@json_option
@handle_errors
def gendata(image: str | None, output: str, force: bool, as_json: bool, **opts: Any) -> None:
    """Two-step signing, step 1: write the exact 256 bytes the author must sign.

    Sign them elsewhere (an HSM, another machine) with RSA-3072 e=3, PKCS#1 v1.5,
    SHA-256, then assemble with `sgxlaunch catsig`.

    \b
    Example:
      sgxlaunch gendata enclave.sgxs --isvprodid 7 -o enclave.data
      openssl dgst -sha256 -sign author.pem -out enclave.sig.raw enclave.data
      sgxlaunch catsig enclave.data --key author.pub.pem --signature enclave.sig.raw \\
          -o enclave.sig
    """
    body = _body_from_options(image, opts)
    data = signing_data(body)
    write_output(output, data, force=force)
    info(f"wrote {output}")
    if as_json:
        echo_json(
            {
                "output": output,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "mrenclave": body.enclavehash.hex(),
            }
        )
    else:
        click.echo(f"mrenclave {body.enclavehash.hex()}")


@click.command("catsig")
@click.argument("data", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The signer's public key (PEM; a private key PEM also works).",
)
@click.option(
    "--signature",
    "signature_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The raw 384-byte big-endian RSA signature over DATA.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the SIGSTRUCT (with --enclave: the signed .so).",
)
@click.option(
    "--enclave",
    "enclave_path",
    type=click.Path(exists=True, dir_okay=False),
    help="An SDK enclave (.so) to write the SIGSTRUCT into; it must measure to ENCLAVEHASH.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@json_option
@handle_errors
def catsig(
    data: str,
    key_path: str,
    signature_path: str,
    output: str,
    enclave_path: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Two-step signing, step 2: assemble and verify a SIGSTRUCT from gendata's DATA.

    DATA is used as it is (never rebuilt); nothing is written unless the result verifies.
    With --enclave (an Intel SDK enclave), the SIGSTRUCT goes into its .note.sgxmeta and
    OUTPUT is the signed .so, as sgx_sign catsig writes it.

    \b
    Example:
      sgxlaunch gendata enclave.so -o enclave.data
      sgxlaunch catsig enclave.data --key author.pub.pem --signature enclave.sig.raw \\
          --enclave enclave.so -o enclave.signed.so
    """
    public_key = load_enclave_public_key(key_path)
    with about(data):
        try:
            signed = assemble(read_input(data), public_key, read_input(signature_path))
        except VerificationFailed as exc:  # say which inputs disagree
            exc.message = f"{signature_path} (over {data}, with {key_path}): {exc.message}"
            raise
    if enclave_path is not None:
        if not is_sdk_file(enclave_path):
            raise UsageError(f"{enclave_path}: --enclave takes an Intel SDK enclave (.so)")
        check_mrenclave(signed, measure_sdk_file(enclave_path))
        written = sdk.with_sigstruct(read_sdk(enclave_path), signed)
    else:
        written = signed.to_bytes()
    write_output(output, written, force=force)
    info(f"wrote {output}")
    _print_signed(output, signed, written, enclave_path is not None, as_json)


@click.command("verify")
@click.argument("sig", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--image",
    type=click.Path(exists=True, dir_okay=False),
    help="Also check that this image (SGXS or SDK .so) measures to ENCLAVEHASH.",
)
@click.option("--size", type=IntParam(64), help="Enclave size for an UNSIZED image.")
@click.option(
    "--mrsigner",
    type=HexBytesParam(32),
    help="Also check that the SIGSTRUCT is signed by this MRSIGNER.",
)
@json_option
@handle_errors
def verify_cmd(
    sig: str, image: str | None, size: int | None, mrsigner: bytes | None, as_json: bool
) -> None:
    """Verify a SIGSTRUCT: signature, Q1/Q2, and optionally MRENCLAVE and MRSIGNER.

    Exit 0 only if every requested check holds; 1 naming the failed check (expected vs
    found); 2 if a file is malformed.

    SIG may be an Intel SDK enclave (enclave.signed.so): its SIGSTRUCT is read from the
    note and, unless --image says otherwise, the same file is re-measured against it.

    \b
    Examples:
      sgxlaunch verify enclave.sig --image enclave.sgxs --mrsigner 8381…f3b2
      sgxlaunch verify enclave.signed.so
    """
    if image is None and is_sdk_file(sig):
        image = sig
    parsed = read_sigstruct(sig)
    warn_sdk_header(parsed, sig)
    checks = ["signature", "q1q2"]
    verify(parsed)
    if image is not None:
        check_mrenclave(parsed, _measure_with_progress(Path(image), size))
        checks.append("mrenclave")
    if mrsigner is not None:
        check_mrsigner(parsed, mrsigner)
        checks.append("mrsigner")
    if as_json:
        echo_json(
            {
                "valid": True,
                "checks": checks,
                "mrenclave": parsed.enclavehash.hex(),
                "mrsigner": parsed.mrsigner.hex(),
                "header_type": parsed.header_type,
            }
        )
    else:
        click.echo(f"OK: {', '.join(checks)} verified")
        click.echo(f"mrenclave {parsed.enclavehash.hex()}")
        click.echo(f"mrsigner  {parsed.mrsigner.hex()}")


@click.command("convert")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the SGXS stream.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@json_option
@handle_errors
def convert(image: str, output: str, force: bool, as_json: bool) -> None:
    """Write the SGXS stream equivalent to an Intel SDK enclave IMAGE; print its MRENCLAVE.

    The stream holds exactly the operations the SDK loader performs (ECREATE, then every
    EADD and EEXTEND), so SHA-256 of OUTPUT is the enclave's MRENCLAVE and every SGXS tool
    accepts it (like Fortanix's ftxsgx-elf2sgxs for its own format).

    \b
    Example:
      sgxlaunch convert enclave.signed.so -o enclave.sgxs
    """
    if not is_sdk_file(image):
        raise UsageError(f"{image}: convert takes an Intel SDK enclave (an ELF .so)")
    plan = sdk_plan(image)
    data = plan.to_sgxs()
    write_output(output, data, force=force)
    info(f"wrote {output}")
    if as_json:  # SHA-256 of the stream written is its MRENCLAVE
        echo_json({"output": output, "size": len(data), "mrenclave": plan.mrenclave().hex()})
    else:
        click.echo(plan.mrenclave().hex())


def register(main: click.Group) -> None:
    """Add the author's commands to the ``sgxlaunch`` group."""
    for command in (key_group, measure, sign_cmd, gendata, catsig, verify_cmd, convert):
        main.add_command(command)
