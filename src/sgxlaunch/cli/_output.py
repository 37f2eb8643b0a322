"""The one JSON contract of every ``--json`` command (documented in ``docs/json.md``).

Every command given ``--json`` prints exactly one JSON object on stdout, on success and on
failure::

    {"schema": "sgxlaunch/1", "command": "policy explain", "ok": true, "result": {...}}
    {"schema": "sgxlaunch/1", "command": "verify", "ok": false,
     "error": {"kind": "verification_failed", "message": "...", "detail": [...], "exit_code": 1},
     "result": {...}}          # only where a failure still has something to report

``ok`` is true exactly when the exit code is 0. The shapes are checked against
``sgxlaunch/cli/output.schema.json`` (shipped with the package) by the test suite.
Conventions: byte strings are lower-case hex; integers are JSON numbers; every ``attributes``
object ``{flags, xfrm}`` also carries ``flags_hex`` and ``xfrm_hex`` (64-bit values exceed
what some JSON readers hold exactly); every denial reason is ``{rule, field, expected, found}``.
"""

from __future__ import annotations

import json
from typing import Any

import click

SCHEMA = "sgxlaunch/1"
"""The version of the JSON shapes; bumped on any incompatible change."""

SCHEMA_FILE = "output.schema.json"
"""The JSON Schema of the shapes, a package resource of ``sgxlaunch.cli``."""

_RESULT_KEY = "sgxlaunch.failure_result"
_JSON_KEY = "sgxlaunch.json"


def command_name(ctx: click.Context | None = None) -> str:
    """The command as typed after the program name (``"policy explain"``)."""
    ctx = ctx or click.get_current_context(silent=True)
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


def shaped(value: Any) -> Any:
    """``value`` with every ``{flags, xfrm}`` attributes object given its hex spellings."""
    if isinstance(value, dict):
        out = {k: shaped(v) for k, v in value.items()}
        flags, xfrm = out.get("flags"), out.get("xfrm")
        if isinstance(flags, int) and isinstance(xfrm, int) and not isinstance(flags, bool):
            out["flags_hex"] = f"0x{flags:x}"
            out["xfrm_hex"] = f"0x{xfrm:x}"
        return out
    if isinstance(value, list | tuple):
        return [shaped(v) for v in value]
    return value


def _emit(document: dict[str, Any]) -> None:
    click.echo(json.dumps(document, indent=2))


def echo_json(result: dict[str, Any]) -> None:
    """Print the one JSON object of a successful command."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta[_JSON_KEY] = True
    _emit({"schema": SCHEMA, "command": command_name(ctx), "ok": True, "result": shaped(result)})


def set_failure_result(result: dict[str, Any]) -> None:
    """What a failing ``--json`` command still reports beside its error (a decision, a record)."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta[_RESULT_KEY] = result


def error_kind(error: BaseException) -> str:
    """The error's ``kind`` in JSON: who is at fault, as DESIGN.md's hierarchy splits it."""
    from sgxlaunch.errors import MalformedInput, PolicyDenied, VerificationFailed

    remote = getattr(error, "remote_kind", None)  # reported by sgxlaunchd (service.client)
    if isinstance(remote, str):
        return remote
    if isinstance(error, MalformedInput):
        return "malformed_input"
    if isinstance(error, VerificationFailed):
        return "verification_failed"
    if isinstance(error, PolicyDenied):
        return "denied"
    if type(error).__name__ in ("DriverError", "LoadFailed"):
        return "launch_failed"
    return "usage"


def error_message(error: BaseException) -> str:
    """The error's ``message`` in JSON: what the command line prints before the ``detail``
    lines — the whole of it, also where it holds line breaks (a file name, an outside library's
    words), so a reader (or sgxlaunchd's client) has exactly what stderr shows."""
    text = str(error)
    detail = getattr(error, "detail", ())
    if detail:
        suffix = "\n" + "\n".join("  " + line for line in detail)
        text = text.removesuffix(suffix)
    return text


def echo_json_error(
    kind: str,
    message: str,
    exit_code: int,
    *,
    detail: list[str] | tuple[str, ...] = (),
    extra: dict[str, Any] | None = None,
    ctx: click.Context | None = None,
) -> None:
    """Print the one JSON object of a failed command (with its partial result, if any)."""
    ctx = ctx or click.get_current_context(silent=True)
    error: dict[str, Any] = {
        "kind": kind,
        "message": message,
        "detail": list(detail),
        "exit_code": exit_code,
    }
    error.update(extra or {})
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "command": command_name(ctx),
        "ok": False,
        "error": error,
    }
    if ctx is not None and _RESULT_KEY in ctx.meta:
        document["result"] = shaped(ctx.meta[_RESULT_KEY])
    _emit(document)
