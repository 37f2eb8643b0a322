"""The listener: a Unix socket, our own accept loop, uvicorn's HTTP/1.1 protocol per connection.

Why an accept loop of our own in front of uvicorn's ``H11Protocol`` (rather than
``uvicorn --uds``): three things must happen before HTTP is parsed, on the raw socket —

* the caller's credentials (``SO_PEERCRED``, ``SO_PEERGROUPS``) are read once, at accept;
* file descriptors passed with ``SCM_RIGHTS`` must be received with ``recvmsg`` before any
  plain ``recv`` (which would discard them): a client that passes descriptors sends one NUL
  byte carrying them before its request (a request never starts with NUL); the listener peeks
  at the first byte and takes the descriptors;
* past ``max_connections`` a new connection gets a complete ``503`` with ``Retry-After`` at once
  and is closed after the client has read it (no protocol object, no task).

Then the accepted socket is handed to asyncio (``connect_accepted_socket``) with a
``H11Protocol`` whose application sees the credentials and descriptors in
``scope["extensions"]["sgxlaunch"]``. A per-connection deadline bounds the time from connect
(or from the previous response) to a complete request head, so a slow client holds one
connection slot for at most ``header_timeout_s`` and never a worker or the platform; bodies are
bounded in the application (size and time). h11 bounds the head's size.

Startup: the machine's and home's holds (:mod:`sgxlaunch.service.lock`), the machine's session
lock, the platform opened, the socket (inherited from systemd: ``LISTEN_PID``/``LISTEN_FDS``, or
bound here with mode 0660), then one readiness line on stdout (and ``READY=1`` to
``$NOTIFY_SOCKET``). SIGTERM (or SIGINT): stop accepting, refuse new requests (503), let the
requests in flight finish (the platform operation in flight always finishes), close, exit 0.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from sgxlaunch.errors import UsageError
from sgxlaunch.service.app import EXTENSION, Connection, Peer, Service, build_app, log_event
from sgxlaunch.service.client import SOCKET_ENV, default_socket
from sgxlaunch.service.config import Limits, ServiceConfig, default_config_path, load_config
from sgxlaunch.service.host import PlatformHost
from sgxlaunch.service.lock import Hold

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
"""Linux ≥ 4.13 (include/uapi/asm-generic/socket.h)."""
SD_LISTEN_FDS_START = 3
SHUTDOWN_GRACE_S = 60.0


def peer_of(sock: socket.socket) -> Peer:
    """The connected process's pid, uid, gid and supplementary groups (from the kernel)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    groups: frozenset[int] = frozenset()
    size = 64
    while size <= 1 << 16:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * size)
        except OSError as exc:
            if exc.errno == 34:  # ERANGE: more groups than the buffer holds
                size *= 4
                continue
            break
        groups = frozenset(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
        break
    return Peer(pid=pid, uid=uid, gid=gid, groups=groups)


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def receive_fds(sock: socket.socket, max_fds: int) -> list[int]:
    """Take the NUL byte that carries passed descriptors (SCM_RIGHTS), and the descriptors.

    Raises:
        UsageError: more than ``max_fds`` descriptors (all of them are closed).
    """
    int_size = array.array("i").itemsize
    _data, ancillary, flags, _addr = sock.recvmsg(1, socket.CMSG_SPACE((max_fds + 1) * int_size))
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            got = array.array("i")
            got.frombytes(payload[: len(payload) - len(payload) % int_size])
            fds.extend(got)
    if len(fds) > max_fds or flags & socket.MSG_CTRUNC:
        _close_fds(fds)
        raise UsageError(f"more than {max_fds} file descriptors passed")
    return fds


def _refusal(status: int, reason: str, message: str, retry_after: int | None) -> bytes:
    from sgxlaunch.service.app import refusal_document

    document = refusal_document("", message, status, retry_after)
    body = json.dumps(document, separators=(",", ":")).encode()
    head = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class _OneWrite(asyncio.Transport):
    """A connection's transport whose writes between :meth:`hold` and :meth:`flush` go out
    as one: a response's head and its first body chunk (uvicorn writes them separately),
    so the client gets one segment and wakes once, and the daemon makes one ``send``."""

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self._transport = transport
        self._held: list[bytes] | None = None

    def hold(self) -> None:
        if self._held is None:
            self._held = []

    def flush(self) -> None:
        held, self._held = self._held, None
        if held:
            data = b"".join(held)
            if data:
                self._transport.write(data)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held is not None:
            self._held.append(bytes(data))
        else:
            self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()


class _Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol for one accepted connection, with its credentials and
    passed descriptors, a deadline for each request head, and each response's head written
    with its first body chunk (:class:`_OneWrite`)."""

    def __init__(self, listener: Listener, connection: Connection) -> None:
        super().__init__(listener.config, listener.server_state, {}, _loop=listener.loop)
        self._listener = listener
        self._connection = connection
        self._deadline: asyncio.TimerHandle | None = None
        connection.received = self._received
        inner = self.app

        head_limit = listener.limits.max_header_bytes

        async def app(scope: Any, receive: Any, send: Any) -> None:
            self._disarm()
            # h11 measures a head only while it is incomplete: a whole head read at once is
            # measured here (at least its request line's and header lines' bytes).
            head = 14 + len(scope["method"]) + len(scope["raw_path"]) + len(scope["query_string"])
            for name, value in scope["headers"]:
                head += len(name) + len(value) + 4
            if head > head_limit:
                await self._head_too_large(head, head_limit, send)
                return
            scope["extensions"] = {EXTENSION: connection}
            transport = self.transport
            if not isinstance(transport, _OneWrite):
                await inner(scope, receive, send)
                return

            async def send_joined(message: Any) -> None:
                kind = message["type"]
                if kind == "http.response.start":
                    transport.hold()
                try:
                    await send(message)
                finally:
                    if kind != "http.response.start":
                        transport.flush()

            try:
                await inner(scope, receive, send_joined)
            finally:
                transport.flush()

        self.app = app

    def send_400_response(self, msg: str) -> None:
        """h11 refused the request head: the one error document (docs/json.md), not uvicorn's
        plain-text 400. An incomplete head already past ``max_header_bytes`` (h11's limit on
        an incomplete head) is 431, refused ``too_large``, as a whole one is
        (:meth:`_head_too_large`); anything else h11 cannot parse is 400, a usage error."""
        pending = len(self.conn.trailing_data[0])
        limit = self._listener.limits.max_header_bytes
        if pending > limit:
            message = self._log_head_too_large(pending, limit)
            reply = _refusal(431, "Request Header Fields Too Large", message, None)
        else:
            peer = self._connection.peer
            log_event(
                event="bad_request", pid=peer.pid, uid=peer.uid, status=400, outcome="refused"
            )
            message = "malformed request head: not an HTTP/1.1 request line and header lines"
            reply = _refusal(400, "Bad Request", message, None)
        self.transport.write(reply)
        self.transport.close()

    def _log_head_too_large(self, size: int, limit: int) -> str:
        """Log a head over ``max_header_bytes`` (at least ``size`` bytes); the refusal's text."""
        peer = self._connection.peer
        log_event(
            event="header_too_large",
            pid=peer.pid,
            uid=peer.uid,
            status=431,
            outcome="too_large",
            bytes=size,
        )
        return f"request head of at least {size} bytes is over the {limit}-byte limit"

    async def _head_too_large(self, size: int, limit: int, send: Any) -> None:
        """431 (refused, ``too_large``) and close: the head is over ``max_header_bytes``."""
        from sgxlaunch.service.app import refusal_document

        message = self._log_head_too_large(size, limit)
        body = json.dumps(refusal_document("", message, 431), separators=(",", ":")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 431,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _received(self) -> bool:
        """The request in progress has been received whole (h11: the client's side of the
        cycle is DONE once its end of message has been parsed)."""
        return self.conn.their_state is h11.DONE

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_OneWrite(transport))
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.cycle is not None:
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._disarm()
        fds, self._connection.fds = self._connection.fds, []
        _close_fds(fds)
        self._listener.released()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(
            self._listener.limits.header_timeout_s, self._head_timeout
        )

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_timeout(self) -> None:
        self._deadline = None
        if self.cycle is None or self.cycle.response_complete:
            peer = self._connection.peer
            log_event(
                event="header_timeout",
                pid=peer.pid,
                uid=peer.uid,
                outcome="closed",
                after_s=self._listener.limits.header_timeout_s,
            )
            if not self.transport.is_closing():
                self.transport.write(
                    _refusal(408, "Request Timeout", "request head not received in time", None)
                )
                self.transport.close()


class Listener:
    """The accept loop (see the module docstring)."""

    def __init__(self, sock: socket.socket, service: Service, loop: asyncio.AbstractEventLoop):
        self.sock = sock
        self.service = service
        self.loop = loop
        self.limits: Limits = service.limits
        self.config = Config(
            build_app(service),
            lifespan="off",
            proxy_headers=False,
            log_config=None,
            access_log=False,
            http="h11",
            server_header=False,
            date_header=False,
            timeout_keep_alive=max(1, int(self.limits.header_timeout_s)),
            h11_max_incomplete_event_size=self.limits.max_header_bytes,
        )
        self.config.load()
        self.server_state = ServerState()
        self.open = 0
        self.refusing = 0
        self.closing = False
        self._handshakes: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self.sock.setblocking(False)
        self.loop.add_reader(self.sock.fileno(), self._accept)

    def stop_accepting(self) -> None:
        """No new connections: a client connecting now is refused by the kernel."""
        self.closing = True
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.sock.fileno())
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()

    def released(self) -> None:
        self.open -= 1

    def _accept(self) -> None:
        for _ in range(128):
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: pause accepting for a moment
                log_event(event="accept_failed", error=exc.strerror or str(exc))
                self.loop.remove_reader(self.sock.fileno())
                self.loop.call_later(0.1, self._resume)
                return
            conn.setblocking(False)
            if self.closing or self.open >= self.limits.max_connections:
                self._refuse(conn)
                continue
            self.open += 1
            task = self.loop.create_task(self._handshake(conn))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    def _resume(self) -> None:
        if not self.closing:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def _refuse(self, conn: socket.socket) -> None:
        """503 + Retry-After, then close once the client has read it (or after a second)."""
        message = (
            "sgxlaunchd is shutting down"
            if self.closing
            else f"too many connections (limit {self.limits.max_connections}); retry shortly"
        )
        log_event(event="connection_refused", outcome="unavailable", open=self.open)
        with contextlib.suppress(OSError):
            conn.send(_refusal(503, "Service Unavailable", message, 1))
        if self.refusing >= 4 * self.limits.max_connections:
            conn.close()
            return
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)
        self.refusing += 1
        fd = conn.fileno()

        def finish() -> None:
            if conn.fileno() == -1:
                return
            with contextlib.suppress(Exception):
                self.loop.remove_reader(fd)
            conn.close()
            timer.cancel()
            self.refusing -= 1

        def drain() -> None:
            try:
                if conn.recv(65536):
                    return
            except BlockingIOError:
                return
            except OSError:
                pass
            finish()

        timer = self.loop.call_later(1.0, finish)
        self.loop.add_reader(fd, drain)

    async def _handshake(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            peer = peer_of(conn)
            ready = self.loop.create_future()
            fd = conn.fileno()

            def readable() -> None:
                if not ready.done():
                    ready.set_result(None)

            self.loop.add_reader(fd, readable)
            try:
                await asyncio.wait_for(ready, self.limits.header_timeout_s)
            finally:
                self.loop.remove_reader(fd)
            first = conn.recv(1, socket.MSG_PEEK)
            if not first:
                raise ConnectionError("closed before a request")
            if first == b"\0":
                fds = receive_fds(conn, self.limits.max_fds)
            connection = Connection(peer=peer, fds=fds)
            protocol = _Protocol(self, connection)
            await self.loop.connect_accepted_socket(lambda: protocol, sock=conn)
        except (TimeoutError, OSError, UsageError, asyncio.CancelledError) as exc:
            _close_fds(fds)
            if isinstance(exc, TimeoutError):
                log_event(event="header_timeout", outcome="closed", before="first byte")
            elif isinstance(exc, UsageError):
                with contextlib.suppress(OSError):
                    conn.send(_refusal(400, "Bad Request", exc.message, None))
            conn.close()
            self.open -= 1
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def shutdown(self) -> None:
        """Stop accepting, refuse new requests, let those in flight finish."""
        self.stop_accepting()
        self.service.draining = True
        self.service.stopping.set()
        for task in list(self._handshakes):
            task.cancel()
        for protocol in list(self.server_state.connections):
            protocol.shutdown()
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        while self.server_state.tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for protocol in list(self.server_state.connections):
            with contextlib.suppress(Exception):
                protocol.transport.close()


# -- the socket --------------------------------------------------------------------------


def inherited_socket(environ: dict[str, str] | None = None) -> socket.socket | None:
    """The listening socket systemd passed (``LISTEN_PID`` = us, ``LISTEN_FDS`` ≥ 1), if any.

    Raises:
        UsageError: the passed descriptor is not a listening Unix stream socket.
    """
    env = os.environ if environ is None else environ
    if env.get("LISTEN_PID") != str(os.getpid()) or not env.get("LISTEN_FDS"):
        return None
    try:
        count = int(env["LISTEN_FDS"])
    except ValueError:
        raise UsageError(f"LISTEN_FDS={env['LISTEN_FDS']!r} is not a number") from None
    if count != 1:
        raise UsageError(f"expected one socket from systemd, got LISTEN_FDS={count}")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise UsageError("the socket systemd passed is not a Unix stream socket")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise UsageError("the socket systemd passed is not listening")
    os.set_inheritable(sock.fileno(), False)
    return sock


def bind_socket(path: Path, gid: int | None) -> socket.socket:
    """A listening socket at ``path``, mode 0660 (group ``gid`` if given).

    Raises:
        UsageError: a live daemon already answers there, or the path is not a socket.
    """
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        import stat

        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise UsageError(f"{path}: exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # a stale socket: nobody listens
        else:
            raise UsageError(f"{path}: another sgxlaunchd is listening here")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o660)
    if gid is not None:
        os.chown(path, -1, gid)
    sock.listen(4096)
    return sock


def _notify_ready() -> None:
    """``READY=1`` to systemd's ``$NOTIFY_SOCKET`` (Type=notify), if set."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with (
        contextlib.suppress(OSError),
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
    ):
        sock.connect(address)
        sock.sendall(b"READY=1")


def _remove_stale_machine_writes(machine: Path) -> None:
    """Remove the temporary files of machine writes that died before their rename (a process
    killed inside :meth:`~sgxlaunch.store.machine.FileMachine.swap`): under the machine's write
    lock no write is in progress, so every one left is stale. The machine file itself is whole
    either way (the rename is atomic)."""
    import fcntl

    lock = os.open(machine.with_name(machine.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for stale in machine.parent.glob(f".{machine.name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
                log_event(event="removed_stale_write", path=str(stale))
    finally:
        os.close(lock)


def _raise_fd_limit() -> None:
    """Let the soft descriptor limit reach the hard one (connections are bounded by the
    configuration, not by the default 1024)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def serve(
    home: Path,
    machine: Path,
    *,
    socket_path: Path | None,
    config_path: Path | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the exit code.

    Raises:
        UsageError, MalformedInput: a bad configuration, a platform already held, a socket in
            use, no platform here.
    """
    from sgxlaunch.store import FileMachine

    home, machine = home.absolute(), machine.absolute()
    _raise_fd_limit()
    config = load_config(config_path or default_config_path(machine), home=home)
    inherited = inherited_socket()
    if inherited is not None:
        name = str(inherited.getsockname())
    else:
        target = socket_path or Path(os.environ.get(SOCKET_ENV) or default_socket())
        name = str(target.absolute())
    file_machine = FileMachine(machine)
    hold = Hold(home, machine, name)
    try:
        with file_machine.session(wait=False):
            _remove_stale_machine_writes(machine)
            host = PlatformHost(home, machine)
            host.start()
            sock = inherited or bind_socket(Path(name), config.socket_gid)
            try:
                asyncio.run(_main(sock, host, config, name, on_ready))
            finally:
                sock.close()
                if inherited is None:
                    with contextlib.suppress(OSError):
                        Path(name).unlink()
                host.close()
    finally:
        hold.release()
    log_event(event="stopped", socket=name)
    return 0


async def _main(
    sock: socket.socket,
    host: PlatformHost,
    config: ServiceConfig,
    name: str,
    on_ready: Callable[[str], None] | None,
) -> None:
    loop = asyncio.get_running_loop()
    service = Service(host, config)
    listener = Listener(sock, service, loop)
    listener.start()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log_event(
        event="ready",
        socket=name,
        pid=os.getpid(),
        config=config.source,
        limits={k: getattr(config.limits, k) for k in Limits.__dataclass_fields__},
    )
    line = json.dumps({"ready": True, "socket": name, "pid": os.getpid()})
    if on_ready is not None:
        on_ready(line)
    else:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    _notify_ready()
    await stop.wait()
    log_event(event="stopping", in_flight=len(listener.server_state.tasks))
    await listener.shutdown()


__all__ = ["Listener", "bind_socket", "default_socket", "inherited_socket", "peer_of", "serve"]
