"""Strict JSON reading for signed owner documents, and typed field access.

Python's :mod:`json` is lenient in ways that matter for signed policy (adversarial checklist
§1 and case 24): it keeps the last of duplicate keys, accepts ``NaN``/``Infinity``, turns huge
digit strings into huge integers (CVE-2020-10735 limits raise a plain ``ValueError``), and
recurses on nesting. This module decodes with hooks that refuse each of those, converts
``RecursionError`` into :class:`~sgxlaunch.errors.MalformedInput`, and offers field readers
that check types exactly (``bool`` is not an ``int``; hex and base64 are decoded strictly).

Everything raised here is :class:`~sgxlaunch.errors.MalformedInput` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, NoReturn

from sgxlaunch.errors import MalformedInput

MAX_INT_DIGITS = 20
"""Longest integer literal accepted (2**64 has 20 digits); longer ones are refused unparsed."""

_HEX_RE = re.compile(r"[0-9a-fA-F]*")
_TIME_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")
_B64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _fail(message: str, field: str | None = None) -> NoReturn:
    raise MalformedInput(message, field=field)


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            _fail(f"duplicate key {key!r} in a JSON object", key)
        result[key] = value
    return result


def _parse_int(text: str) -> int:
    digits = text[1:] if text.startswith("-") else text
    if len(digits) > MAX_INT_DIGITS:
        _fail(f"integer literal of {len(digits)} digits is longer than {MAX_INT_DIGITS}")
    return int(text)


def _parse_float(text: str) -> NoReturn:
    _fail(f"non-integer number {text[:32]!r} is not allowed")


def _parse_constant(text: str) -> NoReturn:
    _fail(f"{text} is not valid JSON")


_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs,
    parse_int=_parse_int,
    parse_float=_parse_float,
    parse_constant=_parse_constant,
    strict=True,
)


def loads_strict(data: bytes, *, what: str) -> Any:
    """Decode one JSON document from UTF-8 ``data`` strictly.

    Checks, in order: UTF-8 (no BOM); JSON syntax with no trailing data; no duplicate object
    keys; no ``NaN``/``Infinity``; no non-integer numbers; integer literals of at most
    :data:`MAX_INT_DIGITS` digits; nesting within the interpreter's recursion limit.

    Raises:
        MalformedInput: any of the above fails (``field`` names the offending key when known).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedInput(f"{what} is not UTF-8", offset=exc.start) from None
    if text.startswith("\ufeff"):
        raise MalformedInput(f"{what} starts with a byte-order mark", offset=0)
    try:
        return _DECODER.decode(text)
    except MalformedInput:
        raise
    except RecursionError:
        raise MalformedInput(f"{what} is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise MalformedInput(f"{what} is not valid JSON: {exc.msg}", offset=exc.pos) from None
    except (ValueError, TypeError, OverflowError) as exc:  # pragma: no cover - defensive
        raise MalformedInput(f"{what} is not valid JSON: {exc}") from None


def dumps_canonical(value: Any) -> bytes:
    """Serialise ``value`` the one way this project writes documents (sorted keys, 1-space indent).

    The signature covers the bytes produced here exactly; verifiers never re-serialise.
    """
    return (json.dumps(value, indent=1, sort_keys=True, ensure_ascii=True) + "\n").encode()


# --- typed field access --------------------------------------------------------------------


def expect_object(value: Any, field: str) -> dict[str, Any]:
    """``value`` as a JSON object, or :class:`MalformedInput` naming ``field``."""
    if type(value) is not dict:
        _fail(f"{field} must be a JSON object", field)
    return value


def expect_list(value: Any, field: str) -> list[Any]:
    """``value`` as a JSON array, or :class:`MalformedInput` naming ``field``."""
    if type(value) is not list:
        _fail(f"{field} must be a JSON array", field)
    return value


def check_keys(
    obj: dict[str, Any], *, required: Iterable[str], optional: Iterable[str] = (), field: str
) -> None:
    """Refuse unknown and missing keys in ``obj`` (an old verifier must not fail open).

    Raises:
        MalformedInput: a key is unknown or a required key is missing.
    """
    required = tuple(required)
    allowed = set(required) | set(optional)
    for key in obj:
        if key not in allowed:
            _fail(f"unknown field {key!r} in {field}", f"{field}.{key}")
    for key in required:
        if key not in obj:
            _fail(f"missing field {key!r} in {field}", f"{field}.{key}")


def get_int(obj: dict[str, Any], key: str, field: str, *, low: int, high: int) -> int:
    """An integer (never a ``bool``) within ``[low, high]``."""
    value = obj[key]
    name = f"{field}.{key}"
    if type(value) is not int:
        _fail(f"{name} must be an integer, found {type(value).__name__}", name)
    if not low <= value <= high:
        _fail(f"{name} must be within {low}..{high}, found {value}", name)
    return value


def get_bool(obj: dict[str, Any], key: str, field: str) -> bool:
    """A JSON ``true``/``false``."""
    value = obj[key]
    name = f"{field}.{key}"
    if type(value) is not bool:
        _fail(f"{name} must be true or false", name)
    return value


def get_str(obj: dict[str, Any], key: str, field: str) -> str:
    """A JSON string."""
    value = obj[key]
    name = f"{field}.{key}"
    if type(value) is not str:
        _fail(f"{name} must be a string", name)
    return value


def parse_hex(text: str, size: int, name: str) -> bytes:
    """Exactly ``size`` bytes from ``2*size`` hex digits (either case, no whitespace, no ``0x``).

    ``bytes.fromhex`` alone would skip whitespace; the digits are checked first.
    """
    if len(text) != 2 * size or not _HEX_RE.fullmatch(text):
        _fail(f"{name} must be {size} bytes as {2 * size} hex digits", name)
    return bytes.fromhex(text)


def get_hex(obj: dict[str, Any], key: str, field: str, size: int) -> bytes:
    """A fixed-size byte string written as hex."""
    return parse_hex(get_str(obj, key, field), size, f"{field}.{key}")


def parse_b64(text: str, name: str, *, max_len: int) -> bytes:
    """Standard base64 (padded), canonical: no whitespace, no other characters, no loose bits.

    ``base64.b64decode`` would drop non-alphabet characters unless ``validate=True``; it is
    called with it, after a length cap, and the result must re-encode to the same text.
    """
    if len(text) > max_len:
        _fail(f"{name} is longer than {max_len} characters", name)
    if len(text) % 4 or not _B64_RE.fullmatch(text):
        _fail(f"{name} is not canonical base64", name)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        _fail(f"{name} is not valid base64", name)
    if base64.b64encode(data).decode("ascii") != text:
        _fail(f"{name} is not canonical base64", name)
    return data


def get_b64(obj: dict[str, Any], key: str, field: str, *, max_len: int) -> bytes:
    """A base64 byte string (see :func:`parse_b64`)."""
    return parse_b64(get_str(obj, key, field), f"{field}.{key}", max_len=max_len)


def parse_time(text: str, name: str) -> datetime:
    """An RFC 3339 UTC timestamp of the one form ``YYYY-MM-DDTHH:MM:SSZ``.

    Offsets other than ``Z``, fractional seconds and naive forms are refused.
    """
    match = _TIME_RE.fullmatch(text)
    if match is None:
        _fail(f"{name} must be an RFC 3339 UTC time like 2027-01-31T00:00:00Z", name)
    year, month, day, hour, minute, second = (int(g) for g in match.groups())
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        _fail(f"{name} is not a real date and time: {text}", name)


def get_time(obj: dict[str, Any], key: str, field: str) -> datetime:
    """A UTC timestamp (see :func:`parse_time`)."""
    return parse_time(get_str(obj, key, field), f"{field}.{key}")


def check_spec(obj: dict[str, Any], field: str, plain: str, with_issued: str) -> None:
    """``spec_version`` is ``plain`` (no ``issued``) or ``with_issued`` (``issued`` required).

    Raises:
        MalformedInput: another version; ``issued`` missing in, or present without, the latter.
    """
    spec = get_str(obj, "spec_version", field)
    if spec not in (plain, with_issued):
        _fail(f"{field}.spec_version must be {plain!r} or {with_issued!r}", f"{field}.spec_version")
    if spec == with_issued and "issued" not in obj:
        _fail(f"missing field 'issued' in {field}", f"{field}.issued")
    if spec == plain and "issued" in obj:
        _fail(f"{field}.issued needs spec_version {with_issued!r}", f"{field}.issued")


def get_issued(obj: dict[str, Any], expires: datetime, field: str) -> datetime:
    """A document's signed ``issued`` time (see :func:`parse_time`), not after ``expires``."""
    issued = get_time(obj, "issued", field)
    if issued > expires:
        _fail(f"{field}.issued is after {field}.expires", f"{field}.issued")
    return issued


def format_time(when: datetime) -> str:
    """Write an aware datetime as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC, whole seconds)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
