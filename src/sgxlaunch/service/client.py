"""A small client of sgxlaunchd's API (standard library only: the command line imports it).

:class:`DaemonClient` speaks HTTP/1.1 over the Unix socket; it can pass open files to the
daemon as descriptors (``SCM_RIGHTS``, one NUL byte before the request), so the daemon reads what
the caller could open and never a path. A failure comes back as :class:`RemoteError`, which
carries the daemon's error object (kind, message, detail, exit code, fields) and failure result,
so the command line prints exactly what it prints for the same error in-process.
"""

from __future__ import annotations

import array
import base64
import contextlib
import http.client
import json
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sgxlaunch.errors import SgxlaunchError, UsageError
from sgxlaunch.service.results import WARNING_HEADER

SOCKET_ENV = "SGXLAUNCH_SOCKET"
SOCKET_NAME = "sgxlaunchd.sock"
HOME_HEADER = "Sgxlaunch-Home"
MACHINE_HEADER = "Sgxlaunch-Machine"


def default_socket(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_RUNTIME_DIR/sgxlaunch/sgxlaunchd.sock``, or ``/run/sgxlaunch/sgxlaunchd.sock``
    where ``XDG_RUNTIME_DIR`` is unset (the system daemon's socket of contrib/systemd)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_RUNTIME_DIR") or "/run"
    return Path(base) / "sgxlaunch" / SOCKET_NAME


class RemoteError(SgxlaunchError):
    """An error the daemon reported, in its JSON error object (``docs/json.md``).

    Attributes:
        remote_kind: the error's ``kind``. remote_fields: its machine-readable fields.
        remote_result: the failure ``result`` beside it, if any. status: the HTTP status.
        warnings: what the command line prints as warnings for the operation (in order).
    """

    def __init__(self, document: dict[str, Any], status: int, warnings: Sequence[str] = ()) -> None:
        error = document.get("error") or {}
        detail = error.get("detail") or []
        super().__init__(str(error.get("message", "sgxlaunchd failed")), detail=list(detail))
        code = error.get("exit_code")
        self.exit_code = code if code in (1, 2) else 2
        self.remote_kind = str(error.get("kind", "usage"))
        base = {"kind", "message", "detail", "exit_code"}
        self.remote_fields = {k: v for k, v in error.items() if k not in base}
        result = document.get("result")
        self.remote_result = result if isinstance(result, dict) else None
        self.status = status
        self.warnings = list(warnings)


def _connect(path: str, fds: Sequence[int], timeout: float | None) -> socket.socket:
    """A connection to the daemon; ``fds`` passed first (one NUL byte carries them)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        if fds:
            sock.sendmsg(
                [b"\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", list(fds)))]
            )
    except BaseException:
        sock.close()
        raise
    return sock


class DaemonClient:
    """Requests to the daemon at ``path`` (a new connection for each, or one kept open with
    ``keep_alive``).

    ``home`` / ``machine``: the paths the caller named explicitly; the daemon refuses a request
    naming another platform than the one it serves.
    """

    def __init__(
        self,
        path: str,
        *,
        home: str | None = None,
        machine: str | None = None,
        timeout: float | None = 300.0,
        keep_alive: bool = False,
    ) -> None:
        self.path = path
        self.timeout = timeout
        self.keep_alive = keep_alive
        self.headers: dict[str, str] = {}
        if home is not None:
            self.headers[HOME_HEADER] = quote(home)
        if machine is not None:
            self.headers[MACHINE_HEADER] = quote(machine)
        self._sock: socket.socket | None = None

    def raw(
        self,
        method: str,
        target: str,
        body: dict[str, Any] | None = None,
        *,
        fds: Sequence[int] = (),
    ) -> tuple[int, bytes]:
        """One request; the status and the raw response body.

        Raises:
            UsageError: the daemon cannot be reached.
        """
        status, data, _warnings = self._exchange(method, target, body, fds=fds)
        return status, data

    def _exchange(
        self,
        method: str,
        target: str,
        body: dict[str, Any] | None = None,
        *,
        fds: Sequence[int] = (),
    ) -> tuple[int, bytes, list[str]]:
        """One request; the status, the raw body and the warnings (:data:`WARNING_HEADER`)."""
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        reuse = self.keep_alive and not fds
        head = [f"{method} {target} HTTP/1.1", "Host: sgxlaunchd"]
        head += [f"{name}: {value}" for name, value in self.headers.items()]
        if body is not None:
            head.append("Content-Type: application/json")
        head.append(f"Content-Length: {len(payload)}")
        if not reuse:
            head.append("Connection: close")
        request = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
        sock = self._sock if reuse else None
        try:
            if sock is None:
                sock = _connect(self.path, fds, self.timeout)
            # A daemon may answer before reading everything (a refusal): read its answer.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(request)
            response = http.client.HTTPResponse(sock, method=method)
            response.begin()
            data = response.read()
            status = response.status
            warnings = [_warning(v) for v in response.headers.get_all(WARNING_HEADER) or ()]
        except (http.client.HTTPException, OSError) as exc:
            if sock is not None:
                sock.close()
            self._sock = None
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise UsageError(f"{self.path}: cannot reach sgxlaunchd ({reason})") from None
        if reuse and not response.will_close:
            self._sock = sock
        else:
            sock.close()
            self._sock = None
        return status, data, warnings

    def call(
        self,
        method: str,
        target: str,
        body: dict[str, Any] | None = None,
        *,
        fds: Sequence[int] = (),
    ) -> dict[str, Any]:
        """One request; the ``result`` of a successful response.

        Raises:
            RemoteError: the daemon reported an error (its document).
            UsageError: the daemon cannot be reached or did not answer with a document.
        """
        return self.call_warned(method, target, body, fds=fds)[0]

    def call_warned(
        self,
        method: str,
        target: str,
        body: dict[str, Any] | None = None,
        *,
        fds: Sequence[int] = (),
    ) -> tuple[dict[str, Any], list[str]]:
        """As :meth:`call`, with the warnings the daemon sent beside the result (a
        :class:`RemoteError` carries its own in ``warnings``)."""
        status, data, warnings = self._exchange(method, target, body, fds=fds)
        try:
            document = json.loads(data)
        except ValueError:
            raise UsageError(
                f"{self.path}: sgxlaunchd answered HTTP {status} without a JSON document"
            ) from None
        if not isinstance(document, dict) or "ok" not in document:
            raise UsageError(f"{self.path}: sgxlaunchd answered HTTP {status} without a document")
        if not document["ok"]:
            raise RemoteError(document, status, warnings)
        result = document.get("result")
        return (result if isinstance(result, dict) else {}), warnings

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _warning(value: str) -> str:
    """A :data:`WARNING_HEADER` value (a JSON string) as text; a value that is not one, as is."""
    try:
        text = json.loads(value)
    except ValueError:
        return value
    return text if isinstance(text, str) else value


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


__all__ = ["DaemonClient", "RemoteError", "b64"]
