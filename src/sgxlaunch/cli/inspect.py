"""``sgxlaunch inspect``: any SGX structure, SGXS image or SDK enclave, field by field."""

from __future__ import annotations

import os
from typing import Any

import click

from sgxlaunch.arch import EinitToken, KeyRequest, Report, Secs, Sigstruct, TargetInfo
from sgxlaunch.arch._layout import Structure
from sgxlaunch.cli._common import (
    about,
    echo_json,
    handle_errors,
    json_option,
    read_input,
    read_sigstruct,
    warn_sdk_header,
)
from sgxlaunch.errors import MalformedInput, UsageError, VerificationFailed
from sgxlaunch.formats import sniff
from sgxlaunch.sigstruct import verify


def sigstruct_json(
    sig: Sigstruct, signature_valid: bool, error: str | None = None
) -> dict[str, Any]:
    """SIGSTRUCT fields under their SDM names in lower case, plus derived values."""
    out: dict[str, Any] = {
        "type": "sigstruct",
        "header": sig.header.hex(),
        "header_type": sig.header_type,
        "vendor": sig.vendor,
        "date": sig.date_text(),
        "header2": sig.header2.hex(),
        "swdefined": sig.swdefined,
        "modulus": sig.modulus.hex(),
        "exponent": sig.exponent,
        "signature": sig.signature.hex(),
        "miscselect": sig.miscselect,
        "miscmask": sig.miscmask,
        "cet_attributes": sig.cet_attributes,
        "cet_attributes_mask": sig.cet_attributes_mask,
        "isvfamilyid": sig.isvfamilyid.hex(),
        "attributes": {"flags": sig.attributes.flags, "xfrm": sig.attributes.xfrm},
        "attributemask": {"flags": sig.attributemask.flags, "xfrm": sig.attributemask.xfrm},
        "enclavehash": sig.enclavehash.hex(),
        "isvextprodid": sig.isvextprodid.hex(),
        "isvprodid": sig.isvprodid,
        "isvsvn": sig.isvsvn,
        "q1": sig.q1.hex(),
        "q2": sig.q2.hex(),
        "mrenclave": sig.enclavehash.hex(),
        "mrsigner": sig.mrsigner.hex(),
        "debug": sig.debug,
        "signature_valid": signature_valid,
    }
    if error is not None:
        out["signature_error"] = error
    return out


_TYPES: dict[str, type[Structure]] = {
    "sigstruct": Sigstruct,
    "einittoken": EinitToken,
    "report": Report,
    "targetinfo": TargetInfo,
    "keyrequest": KeyRequest,
    "secs": Secs,
}
_BY_SIZE = {Sigstruct.SIZE: "sigstruct", EinitToken.SIZE: "einittoken", Report.SIZE: "report"}


def _detect_type(head: bytes, size: int, given: str | None, path: str) -> str:
    """The file's kind from its first bytes and its size (``--type`` wins)."""
    if given is not None:
        return given
    if sniff.looks_like_sgxs(head):
        return "sgxs"
    if size in _BY_SIZE:
        return _BY_SIZE[size]
    if size == 512:
        raise UsageError(f"{path}: 512 bytes is a TARGETINFO or a KEYREQUEST; say --type")
    if size == 4096:
        raise UsageError(f"{path}: 4096 bytes could be a SECS; say --type secs")
    raise MalformedInput(
        f"unrecognised file of {size} bytes: not an SGXS stream, SIGSTRUCT (1808), "
        f"EINITTOKEN (304) or REPORT (432)",
        source=path,
    )


def _sdk_value(path: str) -> dict[str, Any]:
    """``sgx_sign dump`` and more: the SIGSTRUCT, every metadata record with its layout, and
    the recomputed MRENCLAVE beside the stored ENCLAVEHASH."""
    from sgxlaunch._images import sdk_sigstruct, sdk_summary  # the ELF reader, only for ELF

    value = sdk_summary(path)
    try:
        sig = sdk_sigstruct(path)
    except MalformedInput as exc:  # laid out but not signed yet: the metadata still shows
        value["sigstruct"] = None
        value["sigstruct_error"] = exc.message
        return value
    warn_sdk_header(sig, path)
    try:
        verify(sig)
        value["sigstruct"] = sigstruct_json(sig, True)
    except VerificationFailed as exc:
        value["sigstruct"] = sigstruct_json(sig, False, exc.message)
    return value


def _print_sdk(value: dict[str, Any]) -> None:
    head = {k: v for k, v in value.items() if k not in ("metadata", "sigstruct")}
    _print_text(head)
    if value.get("sigstruct") is not None:
        click.echo("sigstruct:")
        _print_text(value["sigstruct"], "  ")
    for record in value["metadata"]:
        click.echo(f"metadata {record['version']}:")
        _print_text({k: v for k, v in record.items() if k != "version"}, "  ")


def _print_text(value: dict[str, Any], indent: str = "") -> None:
    for key, item in value.items():
        if isinstance(item, dict):
            click.echo(f"{indent}{key}:")
            _print_text(item, indent + "  ")
        elif isinstance(item, list):
            click.echo(f"{indent}{key}: {len(item)}")
            for row in item:
                click.echo(f"{indent}  " + "  ".join(f"{k}={v}" for k, v in row.items()))
        else:
            click.echo(f"{indent}{key}: {_text_value(item)}")


def _text_value(item: Any) -> str:
    """Readable text form: long hex shortened (use --json for all bytes), large ints in hex."""
    if isinstance(item, bool):
        return "yes" if item else "no"
    if item is None:
        return "none"
    if not isinstance(item, int | str):
        return str(item)
    if isinstance(item, int):
        return str(item) if item < 256 else f"0x{item:x}"
    if len(item) > 64 and all(c in "0123456789abcdef" for c in item):
        return f"{item[:16]}…{item[-16:]} ({len(item) // 2} bytes)"
    return item


@click.command("inspect")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--type",
    "type_",
    type=click.Choice(sorted(_TYPES)),
    help="The structure type where size alone is ambiguous.",
)
@json_option
@handle_errors
def inspect(file: str, type_: str | None, as_json: bool) -> None:
    """Show an SGX structure or SGXS image field by field.

    SIGSTRUCT (1808 B), EINITTOKEN (304 B) and REPORT (432 B) are recognised by size, SGXS by
    content; TARGETINFO, KEYREQUEST and SECS need --type. JSON keys are the SDM field
    names in lower case; byte strings are hex, integers are numbers.

    An Intel SDK enclave (enclave.signed.so) shows what `sgx_sign dump` shows (the SIGSTRUCT,
    every metadata record: version, TCS policy and count, stack and heap sizes, the layout
    table) plus the MRENCLAVE recomputed from its pages and whether it matches ENCLAVEHASH.

    \b
    Examples:
      sgxlaunch inspect enclave.sig
      sgxlaunch inspect enclave.sgxs --json
      sgxlaunch inspect enclave.signed.so
    """
    with open(file, "rb") as fh:
        head = fh.read(64)
        if type_ is None and sniff.looks_like_elf(head):  # an Intel SDK enclave
            value = _sdk_value(file)
            if as_json:
                echo_json(value)
            else:
                _print_sdk(value)
            return
        size = os.fstat(fh.fileno()).st_size
    kind = _detect_type(head, size, type_, file)
    if kind == "sgxs":
        from sgxlaunch._api import inspect_image  # one streamed pass: pages and MRENCLAVE

        value = inspect_image(file)
    elif kind == "sigstruct":
        sig = read_sigstruct(file)
        warn_sdk_header(sig, file)
        try:
            verify(sig)
            value = sigstruct_json(sig, True)
        except VerificationFailed as exc:
            value = sigstruct_json(sig, False, exc.message)
    else:
        data = read_input(file)
        with about(file):
            parsed = _TYPES[kind].from_bytes(data)
        value = {"type": kind, **parsed.to_dict()}
    if as_json:
        echo_json(value)
    else:
        _print_text(value)


def register(main: click.Group) -> None:
    """Add ``inspect`` to the ``sgxlaunch`` group."""
    main.add_command(inspect)
