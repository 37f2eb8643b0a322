"""The HTTP API (Starlette): routes, authorization, bounds, the one document shape, the log.

Every response body is the command line's JSON document (``docs/json.md``):
``{"schema": "sgxlaunch/1", "command", "ok", "result" | "error"}``; errors of the service itself
(403, 404, 405, 408, 409, 413, 429, 503) use the same ``error`` object with kind ``refused``,
its ``reason`` (:data:`REFUSAL_REASONS`) and, where waiting helps, ``retry_after``; exit code 2.
The HTTP status says the rest: 200 ok; 400 a bad request (``usage`` / ``malformed_input``); 422
a request refused on its merits (``verification_failed``, ``denied``, ``launch_failed``). Each
request is handled in this order: the caller's role (from the connection's peer credentials),
the owner rate limit, the whole body read within its bounds, the inputs parsed (off the event
loop), and only then the platform thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import os
import stat
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import Any
from urllib.parse import unquote

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from sgxlaunch.cli._common import _error_fields
from sgxlaunch.cli._output import SCHEMA, error_kind, error_message, shaped
from sgxlaunch.errors import MalformedInput, SgxlaunchError, UsageError
from sgxlaunch.service.client import HOME_HEADER, MACHINE_HEADER
from sgxlaunch.service.config import LAUNCH, OWNER, READ, ServiceConfig
from sgxlaunch.service.host import PlatformHost, read_log_page
from sgxlaunch.service.results import WARNING_HEADER, failure_result, warnings_of

MAX_PAGE = 1000
"""Most log records one page returns."""
FOLLOW_KEEPALIVE_S = 15.0
DISCARD_BYTES = 64 << 10
"""Largest unread body dropped before a refusal (a larger one closes the connection)."""
_COMPACT = json.JSONEncoder(separators=(",", ":"))
"""The responses' and the log's JSON (one encoder, made once)."""
_quote = encode_basestring_ascii


@dataclass(frozen=True, slots=True)
class Peer:
    """The calling process, from the connection's SO_PEERCRED (and SO_PEERGROUPS)."""

    pid: int
    uid: int
    gid: int
    groups: frozenset[int] = frozenset()

    @property
    def gids(self) -> frozenset[int]:
        return self.groups | {self.gid}


@dataclass
class Connection:
    """What the listener learnt about a connection before HTTP: who, and the fds it passed."""

    peer: Peer
    fds: list[int] = field(default_factory=list)
    roles: frozenset[str] | None = None
    """The caller's roles, worked out on the connection's first request (the credentials are
    the connection's, fixed at connect, and so is the configuration)."""
    received: Callable[[], bool] | None = None
    """Whether the request in progress has been received whole, body included (set by the
    listener's protocol): then its body is read without waiting, so without a deadline."""


EXTENSION = "sgxlaunch"
"""``scope["extensions"][EXTENSION]`` holds the :class:`Connection`."""


class ServiceRefusal(Exception):
    """A request the service refuses before the platform sees it (HTTP status and words)."""

    def __init__(
        self, status: int, outcome: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True, slots=True)
class Operation:
    """One API operation: its route, who may call it, and the command it mirrors."""

    name: str
    method: str
    path: str
    role: str
    command: str
    summary: str
    body: bool = False


OPERATIONS = (
    Operation("ping", "GET", "/v1/ping", READ, "ping", "No operation (the cost of a request)."),
    Operation("status", "GET", "/v1/status", READ, "platform status", "The platform's status."),
    Operation(
        "run", "POST", "/v1/run", LAUNCH, "run", "Load and initialize an enclave.", body=True
    ),
    Operation(
        "token",
        "POST",
        "/v1/token",
        LAUNCH,
        "token mint",
        "Mint an EINITTOKEN for a SIGSTRUCT.",
        body=True,
    ),
    Operation(
        "quote_target_info",
        "GET",
        "/v1/quote/target-info",
        LAUNCH,
        "quote target-info",
        "The quoting enclave's TARGETINFO, for an enclave's EREPORT.",
    ),
    Operation(
        "quote",
        "POST",
        "/v1/quote",
        LAUNCH,
        "quote make",
        "A DCAP ECDSA quote v3: of a REPORT, or of the example enclave launched here.",
        body=True,
    ),
    Operation(
        "install_policy",
        "POST",
        "/v1/policy",
        OWNER,
        "platform install-policy",
        "Install an owner-signed launch policy.",
        body=True,
    ),
    Operation(
        "mode",
        "POST",
        "/v1/mode",
        OWNER,
        "platform mode",
        "Switch launch control with an owner-signed mode document.",
        body=True,
    ),
    Operation(
        "launch_enclave",
        "POST",
        "/v1/launch-enclave",
        OWNER,
        "platform le-install",
        "Install the owner's launch-enclave SIGSTRUCT.",
        body=True,
    ),
    Operation(
        "le_key_quote",
        "POST",
        "/v1/launch-enclave/key-quote",
        LAUNCH,
        "platform le-key-quote",
        "A quote of the launch enclave binding its key-agreement public key, and the key.",
    ),
    Operation(
        "add_code_key",
        "POST",
        "/v1/code-keys",
        OWNER,
        "platform add-code-key",
        "Hand a wrapped code key to the launch enclave (kept sealed; logged).",
        body=True,
    ),
    Operation(
        "take_ownership",
        "POST",
        "/v1/ownership",
        OWNER,
        "platform take-ownership",
        "Bind a machine without an owner to an owner root, or restore the home's copy of it.",
        body=True,
    ),
    Operation(
        "recover",
        "POST",
        "/v1/recovery",
        OWNER,
        "recovery apply",
        "Owner recovery from a refused start, with a recovery document.",
        body=True,
    ),
    Operation(
        "owner_root",
        "GET",
        "/v1/owner/root",
        READ,
        "owner root",
        "The owner root envelope in the home (to sign the launch enclave for).",
    ),
    Operation(
        "log_records",
        "GET",
        "/v1/log/records",
        READ,
        "log show",
        "A page of the launch log's records (decoded, not verified).",
    ),
    Operation(
        "log_verify",
        "POST",
        "/v1/log/verify",
        READ,
        "log verify",
        "Verify the launch log inside the launch enclave.",
    ),
    Operation(
        "log_export",
        "GET",
        "/v1/log/export",
        READ,
        "log export",
        "The launch log's records in the export format, for a remote collector.",
    ),
    Operation(
        "log_attest",
        "POST",
        "/v1/log/attest",
        READ,
        "log attest",
        "A quote of the launch log's head for a nonce, and the records it attests.",
        body=True,
    ),
    Operation(
        "log_follow",
        "GET",
        "/v1/log/follow",
        READ,
        "log follow",
        "New launch-log records as server-sent events.",
    ),
    Operation(
        "openapi", "GET", "/v1/openapi.json", READ, "openapi", "This API's OpenAPI 3.1 document."
    ),
)


def document(command: str, result: dict[str, Any]) -> dict[str, Any]:
    return {"schema": SCHEMA, "command": command, "ok": True, "result": shaped(result)}


def error_document(command: str, error: SgxlaunchError) -> dict[str, Any]:
    """The command line's JSON error document for ``error`` (with its failure result)."""
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "command": command,
        "ok": False,
        "error": {
            "kind": error_kind(error),
            "message": error_message(error),
            "detail": list(error.detail),
            "exit_code": error.exit_code,
            **_error_fields(error),
        },
    }
    result = failure_result(error)
    if result is not None:
        doc["result"] = shaped(result)
    return doc


REFUSAL_REASONS = {
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    409: "other_platform",
    413: "too_large",
    429: "rate_limited",
    431: "too_large",
    503: "unavailable",
}
"""The service's own refusals (error kind ``refused``): the HTTP status and its ``reason``."""


def refusal_document(
    command: str, message: str, status: int | None = None, retry_after: int | None = None
) -> dict[str, Any]:
    """The error document of a request the service refuses before the platform sees it:
    kind ``refused`` with its ``reason`` (and ``retry_after``, seconds) for a status of
    :data:`REFUSAL_REASONS`; otherwise (a 400) kind ``usage``. Exit code 2 either way."""
    reason = None if status is None else REFUSAL_REASONS.get(status)
    error: dict[str, Any] = {
        "kind": "usage" if reason is None else "refused",
        "message": message,
        "detail": [],
        "exit_code": 2,
    }
    if reason is not None:
        error["reason"] = reason
        if retry_after is not None:
            error["retry_after"] = retry_after
    return {"schema": SCHEMA, "command": command, "ok": False, "error": error}


def _json_response(
    status: int, doc: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    body = _COMPACT.encode(doc).encode()
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _warned(
    response: Response, exc: BaseException | None, warnings: Sequence[str] = ()
) -> Response:
    """``response`` with one :data:`WARNING_HEADER` per warning (``warnings``, or those ``exc``
    carries), each a JSON string: the command line prints them on stderr as it does
    in-process."""
    for warning in [*warnings, *([] if exc is None else warnings_of(exc))]:
        response.headers.append(WARNING_HEADER, json.dumps(warning))
    return response


class RateLimiter:
    """A token bucket per uid: ``burst`` at once, then ``per_minute``."""

    def __init__(self, per_minute: float, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[int, tuple[float, float]] = {}

    def take(self, uid: int, now: float) -> float:
        """Take one token for ``uid``; returns 0, or the seconds to wait for one."""
        tokens, then = self._buckets.get(uid, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens >= 1.0:
            self._buckets[uid] = (tokens - 1.0, now)
            return 0.0
        self._buckets[uid] = (tokens, now)
        return (1.0 - tokens) / self.rate


def log_event(**fields: Any) -> None:
    """One JSON line on stderr (the daemon's structured log)."""
    fields = {"time": datetime.now(UTC).isoformat(timespec="microseconds"), **fields}
    sys.stderr.write(_COMPACT.encode(fields) + "\n")
    sys.stderr.flush()


def _number(value: int | None) -> str:
    return "null" if value is None else str(int(value))


def log_request(
    peer: Peer | None,
    operation: str | None,
    method: str,
    path: str,
    status: int,
    outcome: str,
    us: int,
) -> None:
    """The line :func:`log_event` writes for a request (``event`` ``request``, the caller's
    pid, uid and gid, the operation, method, path, HTTP status, outcome and microseconds),
    formatted directly: it is written once per request, on the event loop."""
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    who = (
        '"pid":null,"uid":null,"gid":null'
        if peer is None
        else f'"pid":{_number(peer.pid)},"uid":{_number(peer.uid)},"gid":{_number(peer.gid)}'
    )
    sys.stderr.write(
        f'{{"time":"{now}","event":"request",{who},'
        f'"operation":{"null" if operation is None else _quote(operation)},'
        f'"method":{_quote(method)},"path":{_quote(path)},"status":{int(status)},'
        f'"outcome":{_quote(outcome)},"us":{int(us)}}}\n'
    )
    sys.stderr.flush()


# -- request bodies --------------------------------------------------------------------------


def _field_bytes(
    body: dict[str, Any], name: str, fds: list[int], limit: int, *, required: bool = True
) -> bytes | None:
    """A binary input: ``name`` (base64) or ``name_fd`` (an index into the passed fds).

    Raises:
        MalformedInput: naming the request field.
    """
    given, fd_index = body.get(name), body.get(name + "_fd")
    if given is not None and fd_index is not None:
        raise MalformedInput(f"give {name} or {name}_fd, not both", source="request", field=name)
    if fd_index is not None:
        if type(fd_index) is not int or not 0 <= fd_index < len(fds):
            raise MalformedInput(
                f"{name}_fd {fd_index!r} is not one of the {len(fds)} descriptors passed on this "
                "connection",
                source="request",
                field=name + "_fd",
            )
        return read_passed_fd(fds[fd_index], limit, name)
    if given is None:
        if required:
            raise MalformedInput(f"{name} is required", source="request", field=name)
        return None
    if not isinstance(given, str):
        raise MalformedInput("expected base64 text", source="request", field=name)
    try:
        return base64.b64decode(given, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedInput("not valid base64", source="request", field=name) from None


def read_passed_fd(fd: int, limit: int, name: str) -> bytes:
    """Read a file the client passed (SCM_RIGHTS): a regular file opened for reading, at most
    ``limit`` bytes, from its start (the daemon never opens a path for a client).

    Raises:
        MalformedInput: naming the field: not a readable regular file, or too large.
    """
    import fcntl

    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise MalformedInput(
            "the passed descriptor is not a regular file", source="request", field=name + "_fd"
        )
    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY:
        raise MalformedInput(
            "the passed descriptor is not open for reading", source="request", field=name + "_fd"
        )
    if info.st_size > limit:
        raise MalformedInput(
            f"the passed file is {info.st_size} bytes, more than the {limit}-byte limit",
            source="request",
            field=name + "_fd",
        )
    chunks, offset = [], 0
    while offset <= limit:
        chunk = os.pread(fd, min(1 << 20, limit + 1 - offset), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    if offset > limit:
        raise MalformedInput(
            f"the passed file grew past the {limit}-byte limit",
            source="request",
            field=name + "_fd",
        )
    return b"".join(chunks)


def json_object(data: bytes) -> dict[str, Any]:
    """A request body as a JSON object (an empty body is ``{}``).

    Raises:
        MalformedInput: not JSON, or not an object.
    """
    try:
        value = json.loads(data) if data else {}
    except (ValueError, RecursionError):
        raise MalformedInput("the request body is not JSON", source="request") from None
    if not isinstance(value, dict):
        raise MalformedInput("the request body is not a JSON object", source="request")
    return value


def _known(body: dict[str, Any], names: set[str]) -> None:
    for key in body:
        if key not in names:
            raise MalformedInput(
                f"unknown field {key!r} (expected {sorted(names)})", source="request", field=key
            )


def parse_run(
    body: dict[str, Any], fds: list[int], limit: int
) -> tuple[Any, Any, bytes | None, bytes]:
    """``POST /v1/run``: the image (SGXS or SDK enclave), its SIGSTRUCT, an optional token,
    ``size`` for an UNSIZED image and ``input`` for ECALL 0; parsed strictly."""
    from sgxlaunch.arch import Sigstruct

    _known(
        body,
        {"image", "image_fd", "sigstruct", "sigstruct_fd", "token", "token_fd", "size", "input"},
    )
    size, ecall_input = body.get("size"), body.get("input", "")
    if size is not None and (type(size) is not int or not 0 <= size < 1 << 64):
        raise MalformedInput("expected a 64-bit size or null", source="request", field="size")
    if not isinstance(ecall_input, str):
        raise MalformedInput("expected text", source="request", field="input")
    image_bytes = _field_bytes(body, "image", fds, limit)
    sig_bytes = _field_bytes(body, "sigstruct", fds, limit)
    token = _field_bytes(body, "token", fds, limit, required=False)
    assert image_bytes is not None and sig_bytes is not None
    image = _parse_image(image_bytes, size)
    try:
        sig = Sigstruct.from_bytes(sig_bytes)
    except MalformedInput as exc:
        raise exc.with_source("request field sigstruct") from None
    return image, sig, token, ecall_input.encode()


def parse_quote_request(
    body: dict[str, Any], fds: list[int], limit: int
) -> tuple[bytes | None, Any, Any, bytes]:
    """``POST /v1/quote``: a ``report`` (432 bytes, targeted at the quoting enclave), or an
    ``image`` and ``sigstruct`` (an enclave whose program ships with sgxlaunch: the example
    enclave, which makes the REPORT) with ``reportdata`` (hex, up to 64 bytes, zero-padded)."""
    from sgxlaunch.arch import Sigstruct

    _known(
        body,
        {"report", "report_fd", "image", "image_fd", "sigstruct", "sigstruct_fd", "reportdata"},
    )
    if "report" in body or "report_fd" in body:
        if {"image", "image_fd", "sigstruct", "sigstruct_fd", "reportdata"} & set(body):
            raise MalformedInput(
                "give a report, or an image and its sigstruct, not both",
                source="request",
                field="report",
            )
        return _field_bytes(body, "report", fds, limit), None, None, b""
    text = body.get("reportdata", "")
    if (
        not isinstance(text, str)
        or len(text) > 128
        or len(text) % 2
        or any(c not in "0123456789abcdefABCDEF" for c in text)
    ):
        raise MalformedInput("expected up to 64 bytes as hex", source="request", field="reportdata")
    image_bytes = _field_bytes(body, "image", fds, limit)
    sig_bytes = _field_bytes(body, "sigstruct", fds, limit)
    assert image_bytes is not None and sig_bytes is not None
    image = _parse_image(image_bytes, None)
    try:
        sig = Sigstruct.from_bytes(sig_bytes)
    except MalformedInput as exc:
        raise exc.with_source("request field sigstruct") from None
    return None, image, sig, bytes.fromhex(text).ljust(64, b"\0")


def _parse_image(data: bytes, size: int | None) -> Any:
    from sgxlaunch._api import read_image

    try:
        return read_image(io.BytesIO(data), size=size)
    except MalformedInput as exc:
        raise (exc if exc.source else exc.with_source("request field image")) from None


def parse_token(body: dict[str, Any], fds: list[int], limit: int) -> tuple[bytes, Any]:
    """``POST /v1/token``: a SIGSTRUCT and optional ``attributes`` ``{flags, xfrm}``."""
    from sgxlaunch.arch import Attributes, Sigstruct

    _known(body, {"sigstruct", "sigstruct_fd", "attributes"})
    sig = _field_bytes(body, "sigstruct", fds, limit)
    assert sig is not None
    if len(sig) != Sigstruct.SIZE:
        raise MalformedInput(
            f"a SIGSTRUCT is {Sigstruct.SIZE} bytes, got {len(sig)}",
            source="request",
            field="sigstruct",
        )
    given = body.get("attributes")
    attributes = None
    if given is not None:
        if (
            not isinstance(given, dict)
            or set(given) != {"flags", "xfrm"}
            or not all(type(v) is int and 0 <= v < 1 << 64 for v in given.values())
        ):
            raise MalformedInput(
                "expected {flags, xfrm} as 64-bit integers", source="request", field="attributes"
            )
        attributes = Attributes(flags=given["flags"], xfrm=given["xfrm"])
    return sig, attributes


_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_SIGSTRUCT_B64 = 4 * ((1808 + 2) // 3)
"""The length of a SIGSTRUCT's (1808 bytes') base64: 2412 characters."""
_PLAIN_TOKEN = (b'{"sigstruct":"', b'{"sigstruct": "')


def plain_token_request(data: bytes) -> bytes | None:
    """The SIGSTRUCT of a token request body that is exactly ``{"sigstruct":"<base64>"}``
    (a space after the colon allowed), taken from the bytes as received: the same bytes
    :func:`json_object` + :func:`parse_token` give for it (the base64 is checked as
    :func:`_field_bytes` checks it: only the alphabet, at most two ``=`` at the end, and padded
    right), without building the JSON object. ``None`` for every other body — another field,
    whitespace, an escape, another length, bad base64 — which the general path parses and, if
    it is wrong, words the error for."""
    if len(data) != len(_PLAIN_TOKEN[0]) + _SIGSTRUCT_B64 + 2 + (data[13:14] == b" "):
        return None
    for prefix in _PLAIN_TOKEN:
        if data.startswith(prefix):
            break
    else:
        return None
    if not data.endswith(b'"}'):
        return None
    encoded = data[len(prefix) : -2]
    digits = encoded.rstrip(b"=")
    if len(encoded) - len(digits) > 2 or digits.translate(None, _B64_ALPHABET):
        return None
    try:
        sig = binascii.a2b_base64(encoded)
    except binascii.Error:
        return None
    return sig if len(sig) == 1808 else None


def _json_string_or_null(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def mint_document(result: dict[str, Any]) -> bytes | None:
    """The response body of an allowed mint without reasons (every mint the policy allows
    outright), formatted directly: the same bytes as the general encoder gives for
    :func:`document` of ``result`` (the command line's document; no value in it is an
    attributes object for :func:`shaped` to spell). ``None`` for any other result."""
    version = result["policy_version"]
    if (
        result["allowed"] is not True
        or result["reasons"]
        or not (version is None or type(version) is int)
        or len(result) != 7
        or not all(
            result[name] is None or type(result[name]) is str
            for name in ("rule", "policy_digest", "token", "token_keyid")
        )
    ):
        return None
    return (
        f'{{"schema":{_quote(SCHEMA)},"command":"token mint","ok":true,"result":'
        f'{{"allowed":true,"rule":{_json_string_or_null(result["rule"])},"reasons":[],'
        f'"policy_version":{"null" if version is None else version},'
        f'"policy_digest":{_json_string_or_null(result["policy_digest"])},'
        f'"token":{_json_string_or_null(result["token"])},'
        f'"token_keyid":{_json_string_or_null(result["token_keyid"])}}}}}'
    ).encode()


def parse_log_attest(body: dict[str, Any]) -> tuple[bytes, int]:
    """``POST /v1/log/attest``: ``nonce`` (hex, at most ``MAX_NONCE`` bytes; the launch enclave
    refuses an empty one) and ``from`` (the first record, default 0)."""
    from sgxlaunch.launch.log import MAX_NONCE

    _known(body, {"nonce", "from"})
    text, first = body.get("nonce"), body.get("from", 0)
    if (
        not isinstance(text, str)
        or len(text) > 2 * MAX_NONCE
        or len(text) % 2
        or any(c not in "0123456789abcdefABCDEF" for c in text)
    ):
        raise MalformedInput(
            f"expected up to {MAX_NONCE} bytes as hex", source="request", field="nonce"
        )
    if type(first) is not int or not 0 <= first < 1 << 63:
        raise MalformedInput("expected a non-negative integer", source="request", field="from")
    return bytes.fromhex(text), first


def _source(body: dict[str, Any]) -> str | None:
    """The caller's name for its input (``source``), for messages."""
    given = body.get("source")
    if given is not None and (not isinstance(given, str) or not 0 < len(given) <= 4096):
        raise MalformedInput(
            "expected a name of 1-4096 characters", source="request", field="source"
        )
    return given


def parse_document(
    body: dict[str, Any], fds: list[int], limit: int, name: str = "document"
) -> tuple[bytes, str]:
    """``POST /v1/policy``, ``/v1/mode``, ``/v1/ownership``, ``/v1/recovery``: a signed
    document (``document``; ``/v1/code-keys``: ``wrapped``) and its name."""
    _known(body, {name, name + "_fd", "source"})
    data = _field_bytes(body, name, fds, limit)
    assert data is not None
    return data, _source(body) or f"request field {name}"


def parse_sigstruct(body: dict[str, Any], fds: list[int], limit: int) -> tuple[Any, str | None]:
    """``POST /v1/launch-enclave``: the launch enclave's SIGSTRUCT (strict) and its name."""
    from sgxlaunch.arch import Sigstruct

    _known(body, {"sigstruct", "sigstruct_fd", "source"})
    data = _field_bytes(body, "sigstruct", fds, limit)
    source = _source(body)
    assert data is not None
    try:
        return Sigstruct.from_bytes(data), source
    except MalformedInput as exc:
        raise exc.with_source(source or "request field sigstruct") from None


# -- the application -------------------------------------------------------------------------


class Service:
    """The API's state: the platform host, the configuration, the limits, the log watchers."""

    def __init__(self, host: PlatformHost, config: ServiceConfig) -> None:
        self.host = host
        self.config = config
        self.limits = config.limits
        self.rate = RateLimiter(config.limits.owner_rate_per_minute, config.limits.owner_burst)
        self.draining = False
        self.stopping = asyncio.Event()
        self._changed = asyncio.Event()
        self.in_flight = 0

    def notify_log(self) -> None:
        """Wake the log followers (after a platform operation)."""
        self._changed.set()
        self._changed = asyncio.Event()

    # -- the pipeline --------------------------------------------------------------------

    def _peer(self, request: Request) -> Connection:
        ext = request.scope.get("extensions") or {}
        conn = ext.get(EXTENSION)
        if not isinstance(conn, Connection):
            raise ServiceRefusal(
                403, "forbidden", "forbidden: no peer credentials on this connection"
            )
        return conn

    def _authorize(self, op: Operation, conn: Connection) -> None:
        peer, roles = conn.peer, conn.roles
        if roles is None:
            roles = conn.roles = self.config.roles(peer.uid, peer.gids)
        if op.role not in roles:
            raise ServiceRefusal(
                403,
                "forbidden",
                f"forbidden: uid {peer.uid} (gid {peer.gid}) may not {op.summary[0].lower()}"
                f"{op.summary[1:].rstrip('.')} ({op.role} operation; allowed: "
                f"{self.config.describe_role(op.role)})",
            )
        if op.role == OWNER:
            wait = self.rate.take(peer.uid, time.monotonic())
            if wait > 0:
                raise ServiceRefusal(
                    429,
                    "rate_limited",
                    f"too many owner operations from uid {peer.uid}; retry in {wait:.1f} s",
                    {"Retry-After": str(max(1, int(wait + 0.999)))},
                )

    def _check_platform(self, request: Request) -> None:
        """A caller that named a home or machine must be talking to the daemon serving it."""
        for header, served in (
            (HOME_HEADER, self.host.home),
            (MACHINE_HEADER, self.host.machine_path),
        ):
            given = request.headers.get(header)
            if given is not None and os.path.realpath(unquote(given)) != os.path.realpath(served):
                raise ServiceRefusal(
                    409,
                    "other_platform",
                    f"this sgxlaunchd serves home {self.host.home} and machine "
                    f"{self.host.machine_path}, not {header.split('-')[1].lower()} "
                    f"{unquote(given)}",
                )

    async def _read(self, request: Request, conn: Connection) -> bytes:
        """The whole body, within its bounds (size, and time unless it is already here)."""
        limit = self.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise ServiceRefusal(400, "malformed", "Content-Length is not a number")
            if int(declared) > limit:
                raise ServiceRefusal(
                    413,
                    "too_large",
                    f"request body of {declared} bytes is over the {limit}-byte limit (not read)",
                    {"Connection": "close"},
                )
        if conn.received is not None and conn.received():
            # The request is in whole (within the head's deadline): nothing to wait for.
            return await self._collect(request.receive, limit)
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                return await self._collect(request.receive, limit)
        except TimeoutError:
            raise ServiceRefusal(
                408,
                "timeout",
                f"request body not received within {self.limits.body_timeout_s} s",
                {"Connection": "close"},
            ) from None

    @staticmethod
    async def _collect(receive: Receive, limit: int) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "http.disconnect":
                raise ClientDisconnect()
            if kind != "http.request":
                continue
            chunk = message.get("body", b"")
            if chunk:
                total += len(chunk)
                if total > limit:
                    raise ServiceRefusal(
                        413,
                        "too_large",
                        f"request body over the {limit}-byte limit",
                        {"Connection": "close"},
                    )
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _discard(self, request: Request) -> bool:
        """Before refusing a request whose body was not read: read and drop a small body (at
        most :data:`DISCARD_BYTES`, within a second), so the client, still sending it, reads
        the refusal rather than a broken pipe. ``False``: not done (the connection closes)."""
        declared = request.headers.get("content-length")
        if declared is None or not declared.isdigit() or int(declared) > DISCARD_BYTES:
            return False
        try:
            async with asyncio.timeout(1.0):
                async for _chunk in request.stream():
                    pass
        except (TimeoutError, ClientDisconnect, RuntimeError):
            return False
        return True

    def endpoint(
        self,
        op: Operation,
        handler: Callable[[Request, Connection, dict[str, Any]], Awaitable[Any]],
    ) -> Callable[[Request], Awaitable[Response]]:
        operation, command = op.name, op.command
        plain: Callable[[Connection, bytes], Awaitable[Response | None]] | None = getattr(
            self, op.name + "_plain", None
        )
        """The operation's handler of its plainest request body, given as received (it answers
        ``None`` to any other body, which then goes the general way: JSON, ``handler``)."""

        async def run(request: Request) -> Response:
            started = time.perf_counter_ns()
            peer: Peer | None = None
            status, outcome = 200, "ok"
            body_read = False
            self.in_flight += 1
            try:
                if self.draining:
                    raise ServiceRefusal(
                        503,
                        "unavailable",
                        "sgxlaunchd is shutting down",
                        {"Retry-After": "1", "Connection": "close"},
                    )
                conn = self._peer(request)
                peer = conn.peer
                self._authorize(op, conn)
                self._check_platform(request)
                body: dict[str, Any] = {}
                if op.body:
                    data = await self._read(request, conn)
                    body_read = True
                    if plain is not None:
                        answer = await plain(conn, data)
                        if answer is not None:
                            return answer
                    body = json_object(data)
                answer = await handler(request, conn, body)
                if isinstance(answer, Response):
                    return answer
                return _json_response(200, document(command, answer))
            except ServiceRefusal as exc:
                status, outcome = exc.status, exc.outcome
                headers = dict(exc.headers)
                if (
                    op.body
                    and "Connection" not in headers
                    and (body_read or not await self._discard(request))
                ):
                    headers["Connection"] = "close"
                retry = exc.headers.get("Retry-After")
                doc = refusal_document(
                    op.command, exc.message, exc.status, None if retry is None else int(retry)
                )
                return _json_response(exc.status, doc, headers)
            except ClientDisconnect:
                status, outcome = 499, "disconnected"
                return Response(status_code=400)
            except SgxlaunchError as exc:
                status, outcome = (400 if exc.exit_code == 2 else 422), error_kind(exc)
                return _warned(_json_response(status, error_document(op.command, exc)), exc)
            except OSError as exc:
                status, outcome = 400, "usage"
                error = UsageError(f"request: {exc.strerror or exc}")
                return _json_response(status, error_document(op.command, error))
            finally:
                self.in_flight -= 1
                log_request(
                    peer,
                    operation,
                    request.scope["method"],
                    request.scope["path"],
                    status,
                    outcome,
                    (time.perf_counter_ns() - started) // 1000,
                )

        return run

    async def on_platform(self, fn: Callable[[], Any], *, short: bool = False) -> Any:
        try:
            return await self.host.call(fn, short=short)
        finally:
            self.notify_log()

    # -- handlers ------------------------------------------------------------------------

    async def ping(self, request: Request, conn: Connection, body: dict[str, Any]) -> Any:
        return {"pong": True}

    async def status(self, request: Request, conn: Connection, body: dict[str, Any]) -> Any:
        return await self.on_platform(self.host.status)

    async def run(self, request: Request, conn: Connection, body: dict[str, Any]) -> Any:
        image, sig, token, ecall_input = await anyio.to_thread.run_sync(
            parse_run, body, conn.fds, self.limits.max_body_bytes
        )
        result, warnings = await self.on_platform(
            lambda: self.host.run(image, sig, token, ecall_input)
        )
        return _warned(_json_response(200, document("run", result)), None, warnings)

    async def token(self, request: Request, conn: Connection, body: dict[str, Any]) -> Any:
        sig, attributes = parse_token(body, conn.fds, self.limits.max_body_bytes)
        return await self._mint(sig, attributes)

    async def token_plain(self, conn: Connection, data: bytes) -> Response | None:
        """``{"sigstruct": "<base64>"}`` and nothing else: the SIGSTRUCT taken from the bytes
        (:func:`plain_token_request`); any other body: ``None``."""
        sig = plain_token_request(data)
        return None if sig is None else await self._mint(sig, None)

    async def _mint(self, sig: bytes, attributes: Any) -> Response:
        # A mint is one ECALL of the running launch enclave, in memory: short (see host.call).
        result = await self.on_platform(lambda: self.host.mint(sig, attributes), short=True)
        body = mint_document(result)
        if body is None:
            return _json_response(200, document("token mint", result))
        return Response(body, status_code=200, media_type="application/json")

    async def quote_target_info(
        self, request: Request, conn: Connection, body: dict[str, Any]
    ) -> Any:
        return await self.on_platform(self.host.quote_target_info)

    async def quote(self, request: Request, conn: Connection, body: dict[str, Any]) -> Any:
        report, image, sig, reportdata = await anyio.to_thread.run_sync(
            parse_quote_request, body, conn.fds, self.limits.max_body_bytes
        )
        return await self.on_platform(lambda: self.host.quote(report, image, sig, reportdata))

    async def install_policy(self, request: Request, conn: Connection, body: dict[str, Any]) -> Any:
        data, source = parse_document(body, conn.fds, self.limits.max_body_bytes)
        return await self.on_platform(lambda: self.host.install_policy(data, source))

    async def mode(self, request: Request, conn: Connection, body: dict[str, Any]) -> Any:
        data, source = parse_document(body, conn.fds, self.limits.max_body_bytes)
        return await self.on_platform(lambda: self.host.set_mode(data, source))

    async def launch_enclave(self, request: Request, conn: Connection, body: dict[str, Any]) -> Any:
        sig, source = parse_sigstruct(body, conn.fds, self.limits.max_body_bytes)
        return await self.on_platform(lambda: self.host.set_launch_enclave(sig, source))

    async def le_key_quote(self, request: Request, conn: Connection, body: dict[str, Any]) -> Any:
        return await self.on_platform(self.host.le_key_quote)

    async def add_code_key(self, request: Request, conn: Connection, body: dict[str, Any]) -> Any:
        data, source = parse_document(body, conn.fds, self.limits.max_body_bytes, "wrapped")
        return await self.on_platform(lambda: self.host.add_code_key(data, source))

    async def take_ownership(self, request: Request, conn: Connection, body: dict[str, Any]) -> Any:
        data, source = parse_document(body, conn.fds, self.limits.max_body_bytes)
        return await self.on_platform(lambda: self.host.take_ownership(data, source))

    async def recover(self, request: Request, conn: Connection, body: dict[str, Any]) -> Any:
        data, source = parse_document(body, conn.fds, self.limits.max_body_bytes)
        return await self.on_platform(lambda: self.host.recover(data, source))

    async def owner_root(self, request: Request, conn: Connection, body: dict[str, Any]) -> Any:
        root = await self.on_platform(self.host.owner_root)
        return {"root": base64.b64encode(root).decode()}

    def _page_args(self, request: Request) -> tuple[int, int]:
        def number(name: str, default: int) -> int:
            text = request.query_params.get(name)
            if text is None:
                return default
            if not text.isdigit() or len(text) > 12:
                raise MalformedInput("expected a non-negative integer", source="query", field=name)
            return int(text)

        return number("start", 0), min(number("limit", MAX_PAGE), MAX_PAGE)

    async def log_records(self, request: Request, conn: Connection, body: dict[str, Any]) -> Any:
        start, limit = self._page_args(request)
        self.host.log_ready()
        count, records = await anyio.to_thread.run_sync(
            read_log_page, self.host.home, self.host.le_signer, start, limit
        )
        end = start + len(records)
        return {
            "count": count,
            "start": start,
            "records": records,
            "next": end if end < count else None,
        }

    async def log_export(self, request: Request, conn: Connection, body: dict[str, Any]) -> Any:
        first = request.query_params.get("from", "0")
        if not first.isdigit() or len(first) > 12:
            raise MalformedInput("expected a non-negative integer", source="query", field="from")
        return await self.on_platform(lambda: self.host.export_log(int(first)))

    async def log_attest(self, request: Request, conn: Connection, body: dict[str, Any]) -> Any:
        nonce, first = parse_log_attest(body)
        return await self.on_platform(lambda: self.host.attest_log(nonce, first))

    async def log_verify(self, request: Request, conn: Connection, body: dict[str, Any]) -> Any:
        return await self.on_platform(self.host.verify_log)

    async def log_follow(self, request: Request, conn: Connection, body: dict[str, Any]) -> Any:
        start_text = request.query_params.get("from")
        if start_text is not None and (not start_text.isdigit() or len(start_text) > 12):
            raise MalformedInput("expected a non-negative integer", source="query", field="from")
        self.host.log_ready()
        home = self.host.home
        if start_text is None:
            count, _ = await anyio.to_thread.run_sync(
                read_log_page, home, self.host.le_signer, 0, 0
            )
            start = count
        else:
            start = int(start_text)

        async def events() -> AsyncIterator[bytes]:
            nonlocal start
            yield b": following the launch log\n\n"
            while not self.stopping.is_set():
                changed = self._changed
                _count, records = await anyio.to_thread.run_sync(
                    read_log_page, home, self.host.le_signer, start, MAX_PAGE
                )
                for record in records:
                    data = json.dumps(record, separators=(",", ":"))
                    seq = record.get("seq", start)
                    yield f"id: {seq}\nevent: record\ndata: {data}\n\n".encode()
                    start += 1
                if records:
                    continue
                stop = asyncio.ensure_future(self.stopping.wait())
                wake = asyncio.ensure_future(changed.wait())
                done, pending = await asyncio.wait(
                    {stop, wake}, timeout=FOLLOW_KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED
                )
                for task in pending:
                    task.cancel()
                if not done:
                    yield b": keepalive\n\n"

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    async def openapi(self, request: Request, conn: Connection, body: dict[str, Any]) -> Any:
        from sgxlaunch.service.openapi import openapi_bytes

        return Response(openapi_bytes(), media_type="application/json")


def build_app(service: Service) -> ASGIApp:
    """The ASGI application of ``service``: each operation's endpoint by path and method (a
    dictionary look-up: the paths are fixed), 404 and 405 in the one document shape. Starlette
    serves the requests and responses; its router and middleware stack are left out, the
    endpoints handle their own errors (one that escapes is a 500 from uvicorn, as the middleware
    would send it)."""
    routes: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {}
    for op in OPERATIONS:
        endpoint = service.endpoint(op, getattr(service, op.name))
        methods = routes.setdefault(op.path, {})
        methods[op.method] = endpoint
        if op.method == "GET":
            methods.setdefault("HEAD", endpoint)

    def refuse(scope: Scope, code: int) -> Response:
        path, method = scope["path"], scope["method"]
        message = (
            f"no such path {path}" if code == 404 else f"method {method} not allowed on {path}"
        )
        conn = (scope.get("extensions") or {}).get(EXTENSION)
        peer = conn.peer if isinstance(conn, Connection) else None
        log_request(peer, None, method, path, code, "not_found", 0)
        return _json_response(code, refusal_document("", message, code))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        methods = routes.get(scope["path"])
        if methods is None:
            response = refuse(scope, 404)
        else:
            endpoint = methods.get(scope["method"])
            if endpoint is None:
                response = refuse(scope, 405)
                response.headers["Allow"] = ", ".join(sorted(methods))
            else:
                response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)

    return app


__all__ = ["OPERATIONS", "Connection", "Operation", "Peer", "Service", "build_app"]
