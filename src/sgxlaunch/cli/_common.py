"""What every CLI command shares: error mapping, file I/O at the edge, JSON and integer options.

Exit codes (DESIGN.md "Errors"): 0 success, 1 verification failure or denial, 2 usage or
malformed input. Messages go to stderr, one line first, detail after; stdout carries only the
result.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import click

from sgxlaunch.cli._output import echo_json as echo_json
from sgxlaunch.cli._output import echo_json_error, error_kind, error_message, set_failure_result

if TYPE_CHECKING:
    from sgxlaunch.arch import Sigstruct
from sgxlaunch.errors import (
    MalformedInput,
    PolicyDenied,
    SgxlaunchError,
    UsageError,
    VerificationFailed,
)

P = ParamSpec("P")
R = TypeVar("R")

MAX_INPUT_BYTES = 64 << 20
"""Largest non-image file a command reads whole (SGXS images are streamed, with no limit);
``$SGXLAUNCH_MAX_INPUT_BYTES`` overrides it. Signed documents and key files have their own,
smaller caps, set by their formats."""

MAX_INPUT_ENV = "SGXLAUNCH_MAX_INPUT_BYTES"


def _error_fields(error: SgxlaunchError) -> dict[str, Any]:
    """The machine-readable facts an error carries, for the JSON ``error`` object."""
    remote = getattr(error, "remote_fields", None)  # reported by sgxlaunchd (service.client)
    if isinstance(remote, dict):
        return dict(remote)
    extra: dict[str, Any] = {}
    if isinstance(error, MalformedInput):
        extra = {"source": error.source, "field": error.field, "offset": error.offset}
    elif isinstance(error, VerificationFailed):
        extra = {"check": error.check, "expected": error.expected, "found": error.found}
    elif isinstance(error, PolicyDenied):
        extra = {"rule": error.rule}
    for name in ("step", "errno_name", "status"):
        value = getattr(error, name, None)
        if value is not None:
            extra["errno" if name == "errno_name" else name] = getattr(value, "name", value)
    return {k: v for k, v in extra.items() if v is not None}


def fail(error: SgxlaunchError, *, as_json: bool = False) -> NoReturn:
    """Print an error on stderr in the project's format (and, for --json, the one JSON
    object on stdout) and exit with its code."""
    kind = error_kind(error)
    words = {
        "verification_failed": "verification failed",
        "denied": "denied",
        "launch_failed": "launch failed",
    }.get(kind, "error")
    remote_result = getattr(error, "remote_result", None)
    if isinstance(remote_result, dict):
        set_failure_result(remote_result)
    if as_json:
        echo_json_error(
            kind,
            error_message(error),
            error.exit_code,
            detail=list(error.detail),
            extra=_error_fields(error),
        )
    click.echo(f"sgxlaunch: {words}: {error}", err=True)
    sys.exit(error.exit_code)


def json_mode() -> bool:
    """Whether the running command was given ``--json``."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.params.get("as_json"))


def info(message: str) -> None:
    """A status line for the person at the terminal (``wrote FILE``, a note, a next step), on
    stderr — and not at all under ``--json``, where stdout's one object says it and stderr stays
    empty on success (docs/json.md). Warnings (``sgxlaunch: warning: …``) and errors are not
    status lines: they go to stderr in every mode."""
    if not json_mode():
        click.echo(message, err=True)


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Map the project's exceptions (and OS errors on files) to messages and exit codes."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        as_json = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except SgxlaunchError as exc:
            fail(exc, as_json=as_json)
        except BrokenPipeError:
            raise  # the reader of stdout went away: quiet, at the top level
        except OSError as exc:
            name = exc.filename if exc.filename is not None else "?"
            fail(UsageError(f"{name}: {exc.strerror or exc}"), as_json=as_json)

    return wrapper


def max_input_bytes() -> int:
    """The non-image input limit: ``$SGXLAUNCH_MAX_INPUT_BYTES`` or :data:`MAX_INPUT_BYTES`.

    Raises:
        UsageError: the variable is set but not a positive decimal integer.
    """
    text = os.environ.get(MAX_INPUT_ENV)
    if text is None or text == "":
        return MAX_INPUT_BYTES
    value = parse_int_text(text)
    if value is None or value <= 0:
        raise UsageError(f"${MAX_INPUT_ENV}={text}: expected a positive number of bytes")
    return value


def read_input(path: str | Path, *, limit: int | None = None) -> bytes:
    """Read a whole (small) input file, refusing oversize ones before reading them.

    ``limit`` defaults to :func:`max_input_bytes` (a format's own cap is passed explicitly).

    Raises:
        MalformedInput: the file is larger than the limit (naming the file, its size, the
            limit and how to raise it).
        OSError: the file cannot be read (mapped by :func:`handle_errors`).
    """
    path = Path(path)
    overridable = limit is None
    cap = max_input_bytes() if limit is None else limit
    size = path.stat().st_size
    if size > cap:
        how = f" (set ${MAX_INPUT_ENV} to raise it)" if overridable else ""
        raise MalformedInput(
            f"file is {size} bytes, more than the {cap}-byte limit for this input{how}",
            source=str(path),
        )
    return path.read_bytes()


@contextlib.contextmanager
def about(path: str | Path, *, verification: bool = False) -> Iterator[None]:
    """Name ``path`` as the source of a :class:`MalformedInput` raised inside.

    An error that already names its source (an inner file) keeps it. With ``verification``,
    a :class:`VerificationFailed` message is prefixed with ``path`` too.
    """
    try:
        yield
    except MalformedInput as exc:
        raise (exc if exc.source else exc.with_source(str(path))) from None
    except VerificationFailed as exc:
        if verification:
            exc.message = f"{path}: {exc.message}"
        raise


def read_sigstruct(path: str, *, strict: bool = True) -> Sigstruct:
    """Read a SIGSTRUCT file: strict (every constant and reserved byte checked) or raw (length).

    An Intel SDK enclave (``enclave.signed.so``) is accepted too: its SIGSTRUCT is the one in
    the metadata the loader selects.

    Raises:
        MalformedInput: naming the file and the field.
    """
    from sgxlaunch.arch import Sigstruct
    from sgxlaunch.formats.sniff import looks_like_elf

    with open(path, "rb") as fh:
        elf = looks_like_elf(fh.read(4))
    if elf:  # an Intel SDK enclave carries its SIGSTRUCT in .note.sgxmeta
        from sgxlaunch._images import sdk_sigstruct

        return sdk_sigstruct(path, strict=strict)
    data = read_input(path)
    with about(path):
        return Sigstruct.from_bytes(data) if strict else Sigstruct.from_bytes_raw(data)


def warn_sdk_header(sig: Sigstruct, path: str) -> None:
    """Warn on stderr when HEADER carries the Intel SDK's debug type (EINIT refuses it)."""
    if sig.header_type == "sdk-debug":
        click.echo(
            f"sgxlaunch: warning: {path}: HEADER bytes 12..15 hold the Intel SDK's type "
            "0x80000000; the SDM requires the constant header, so EINIT refuses this SIGSTRUCT "
            "(SGX_INVALID_SIG_STRUCT)",
            err=True,
        )


def write_output(path: str | Path, data: bytes, *, mode: int = 0o644, force: bool = False) -> None:
    """Write ``data`` atomically: a temporary file in the same directory, then rename.

    Nothing is left behind on failure. Without ``force`` an existing file is refused.

    Raises:
        UsageError: the file exists and ``force`` is false.
    """
    path = Path(path)
    if path.exists() and not force:
        raise UsageError(f"{path}: exists; use --force to overwrite it")
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if not force and path.exists():
            raise UsageError(f"{path}: exists; use --force to overwrite it")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 record``, ``2 records`` (``plural_form`` when adding an ``s`` is wrong)."""
    return f"{count} {singular if count == 1 else plural_form or singular + 's'}"


def utc_now() -> datetime:
    """The wall clock, UTC, to the second (the CLI's only clock)."""
    return datetime.now(UTC).replace(microsecond=0)


GLOBAL_OPTIONS: dict[str, tuple[click.Path, str]] = {
    "home": (
        click.Path(file_okay=False),
        "State directory (default $SGXLAUNCH_HOME or ~/.local/share/sgxlaunch).",
    ),
    "machine": (
        click.Path(dir_okay=False),
        "Machine file (default $SGXLAUNCH_MACHINE or ~/.local/state/sgxlaunch/machine.json).",
    ),
    "socket": (
        click.Path(dir_okay=False),
        "sgxlaunchd's socket (default $SGXLAUNCH_SOCKET, or the default socket if it exists: "
        "$XDG_RUNTIME_DIR/sgxlaunch/sgxlaunchd.sock); platform commands then go to the daemon.",
    ),
}
"""Options accepted before or after the subcommand (``sgxlaunch --home H log show`` or
``sgxlaunch log show --home H``); the one after the subcommand wins, the environment variable
(read where the path is resolved) comes after both. Adding one is one entry here plus
``global_option(name)`` on the commands that use it."""

_GLOBAL_META = "sgxlaunch.global."


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Callback of a top-level global option: keep its value for the subcommand."""
    if value is not None and param.name is not None:
        ctx.meta[_GLOBAL_META + param.name] = value
    return value


def _inherit(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Callback of a subcommand's global option: fall back to the top-level value."""
    if value is None and param.name is not None:
        return ctx.meta.get(_GLOBAL_META + param.name)
    return value


def _global_settings(name: str, top_level: bool) -> dict[str, Any]:
    type_, help_text = GLOBAL_OPTIONS[name]
    return {
        "type": type_,
        "help": help_text,
        "callback": _remember if top_level else _inherit,
        "expose_value": not top_level,
        "is_eager": top_level,
    }


def global_option(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--NAME`` from :data:`GLOBAL_OPTIONS` on a subcommand (inheriting the top-level one)."""
    return click.option(f"--{name}", name, **_global_settings(name, top_level=False))


def top_level_option(name: str) -> click.Option:
    """``--NAME`` from :data:`GLOBAL_OPTIONS` for the top-level group."""
    return click.Option([f"--{name}", name], **_global_settings(name, top_level=True))


home_option = global_option("home")
"""``--home``: the state directory (also accepted before the subcommand)."""

socket_option = global_option("socket")
"""``--socket``: send the platform commands to sgxlaunchd on this socket (docs/service.md)."""

machine_option = global_option("machine")
"""``--machine``: the machine file, the emulated silicon kept outside the home (also accepted
before the subcommand)."""


def signing_keys_option(
    *, required: bool = True, help: str = "Private key (PEM); repeatable."
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--key`` (repeatable) into the parameter ``keys``: the owner keys that sign a document."""
    return click.option(
        "--key",
        "keys",
        required=required,
        multiple=True,
        type=click.Path(exists=True, dir_okay=False),
        help=help,
    )


def output_option(
    help: str, *, required: bool = True, dest: str = "output"
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``-o/--output``: the one spelling of every file a command writes."""
    return click.option(
        "-o", "--output", dest, required=required, type=click.Path(dir_okay=False), help=help
    )


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--json``: print one JSON object."""
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(fn)


class IntParam(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """An integer given in decimal or ``0x`` hex, within ``[0, 2**bits)``.

    Python's ``int()`` would also accept whitespace, ``_`` and non-ASCII digits; this does not.
    """

    name = "integer"

    def __init__(self, bits: int) -> None:
        self.bits = bits

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            text = str(value)
            number_or_none = parse_int_text(text)
            if number_or_none is None:
                self.fail(f"{text!r} is not a decimal or 0x-hex integer", param, ctx)
            number = number_or_none
        if not 0 <= number < (1 << self.bits):
            self.fail(f"{value} does not fit in {self.bits} bits", param, ctx)
        return number


def parse_int_text(text: str) -> int | None:
    """Parse ``123`` or ``0x7b`` (ASCII only); ``None`` if it is neither."""
    if text.lower().startswith("0x"):
        digits = text[2:]
        if digits and all(c in "0123456789abcdefABCDEF" for c in digits) and len(digits) <= 64:
            return int(digits, 16)
        return None
    if text and text.isascii() and text.isdigit() and len(text) <= 40:
        return int(text)
    return None


class HexBytesParam(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """A byte string given as exactly ``size`` bytes of hex (no whitespace, either case), or
    up to ``size`` bytes (an even number of digits) with ``allow_shorter``."""

    name = "hex"

    def __init__(self, size: int, *, allow_shorter: bool = False) -> None:
        self.size = size
        self.allow_shorter = allow_shorter

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> bytes:
        if isinstance(value, bytes):
            return value
        text = str(value)
        if text.lower().startswith("0x"):
            text = text[2:]
        if not all(c in "0123456789abcdefABCDEF" for c in text):
            self.fail(f"expected hex digits, found {value!r}", param, ctx)
        if self.allow_shorter:
            if len(text) % 2 or len(text) > 2 * self.size:
                self.fail(
                    f"expected at most {self.size} bytes as an even number of hex digits "
                    f"(at most {2 * self.size})",
                    param,
                    ctx,
                )
        elif len(text) != 2 * self.size:
            self.fail(f"expected {self.size} bytes as {2 * self.size} hex digits", param, ctx)
        return bytes.fromhex(text)
