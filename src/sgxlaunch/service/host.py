"""The daemon's platform: opened once, held for the daemon's life, driven from one thread.

Every operation that touches the platform (the emulated CPU, the launch enclave, the store's
writes) runs one at a time, holding the platform lock: on one worker thread, which owns the
platform and its SQLite connection, and the queue in front of it is the serialization the issue
asks for. A *short* operation — bounded, in memory only (no store, no file, no waiting): a
token mint, one ECALL of the running launch enclave — runs on the calling thread (the event
loop's) instead when nothing is queued or running, which saves the hand-off to the worker and
back (two thread wake-ups and the contention for the GIL between them cost more than the
mint). Callers hand it parsed, bounded inputs only (requests are read and parsed before they
reach it). Reads that need no CPU (the stored log records) do not go through it:
:func:`read_log_page` opens its own read connection.

The platform is opened as the command line opens it: normally first; if the home does not
verify, the error is kept (operations that the command line runs on a normally opened platform
raise it, as the command would) and the platform is opened in maintenance, which the owner's
repairs (mode, launch enclave) use. After a change that takes effect on reopening (a mode
document, a launch-enclave SIGSTRUCT) the platform is reopened.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sgxlaunch.arch import Attributes, EinitToken, Sigstruct
from sgxlaunch.cli._common import about
from sgxlaunch.driver import LoadFailed
from sgxlaunch.errors import PolicyDenied, SgxlaunchError, UsageError
from sgxlaunch.formats.sgxs import SgxsImage
from sgxlaunch.launch.log import LogTampered, decode_record
from sgxlaunch.launch.platform import Platform, log_prefix
from sgxlaunch.service.results import (
    attach,
    attach_warnings,
    denial_result,
    log_warnings,
    refusal_result,
)
from sgxlaunch.store import STATE_FILE, FileMachine, open_store
from sgxlaunch.store.sqlite import SqliteStore

T = TypeVar("T")
_KEYID = next(slice(f.offset, f.offset + f.size) for f in EinitToken.FIELDS if f.name == "keyid")
"""Where an EINITTOKEN's KEYID is (a mint's reply names it)."""


def utc_now() -> datetime:
    """The wall clock, UTC, to the second (as the command line reads it)."""
    return datetime.now(UTC).replace(microsecond=0)


class PlatformHost:
    """The platform of ``machine`` over ``home``, on its own worker thread."""

    def __init__(self, home: Path, machine: Path) -> None:
        self.home = home
        self.machine_path = machine
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sgxlaunchd-platform")
        self._lock = threading.Lock()
        """Held while an operation runs (on the worker, or inline for a short one)."""
        self._count_lock = threading.Lock()
        self._outstanding = 0
        """Operations handed to the worker and not finished (queued or running)."""
        self._platform: Platform | None = None
        self._open_error: SgxlaunchError | None = None
        self._maintenance_error: SgxlaunchError | None = None
        self._store: SqliteStore | None = None
        self.le_signer: bytes | None = None
        """The running launch enclave's MRSIGNER (whose log segment readers read)."""
        self.busy = False

    # -- lifecycle (on the worker thread) -------------------------------------------------

    def start(self) -> None:
        """Open the platform (blocking; call before serving)."""
        self._executor.submit(self._open).result()

    def _open(self) -> None:
        if not (self.home / STATE_FILE).exists():
            raise UsageError(
                f"{self.home}: no platform here; create one with `sgxlaunch platform init`"
            )
        if self._store is None:
            self._store = open_store(self.home, create=False)
        machine = FileMachine(self.machine_path)
        self._platform = None
        self._open_error = self._maintenance_error = None
        try:
            self._platform = Platform.open(self._store, machine, clock=utc_now)
        except SgxlaunchError as exc:
            self._open_error = exc
            try:
                self._platform = Platform.open(
                    self._store, machine, clock=utc_now, maintenance=True
                )
            except SgxlaunchError as again:
                self._maintenance_error = again
        self.le_signer = None if self._platform is None else self._platform.le_signer

    def close(self) -> None:
        """Finish the operation in flight, then close the store (blocking)."""
        self._executor.submit(self._close).result()
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        self._platform = None
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- dispatch ----------------------------------------------------------------------

    async def call(self, fn: Callable[[], T], *, short: bool = False) -> T:
        """Run ``fn`` on the platform, after the operations queued before it.

        ``fn`` runs on the platform thread; with ``short`` (``fn`` is bounded and in memory
        only: it neither reads nor writes the store or any file and never waits) it runs here,
        on the calling thread, when no operation is queued or running — the order is the same
        (nothing was before it) and so is the serialization (the platform lock is held). A
        short operation that finds the worker busy queues behind it like any other.
        """
        if short and self._outstanding == 0 and self._lock.acquire(blocking=False):
            try:
                return self._run(fn)
            finally:
                self._lock.release()
        with self._count_lock:
            self._outstanding += 1
        future = self._executor.submit(self._locked, fn)
        future.add_done_callback(self._finished)
        return await asyncio.wrap_future(future)

    def _locked(self, fn: Callable[[], T]) -> T:
        with self._lock:
            return self._run(fn)

    def _finished(self, _future: object) -> None:
        """(On the worker once ``fn`` has returned, or where a queued job was cancelled.)"""
        with self._count_lock:
            self._outstanding -= 1

    def _run(self, fn: Callable[[], T]) -> T:
        self.busy = True
        try:
            return fn()
        finally:
            self.busy = False
            self.le_signer = None if self._platform is None else self._platform.le_signer

    def _opened(self, *, maintenance: bool = False) -> Platform:
        """The platform as the command line would open it (normally, or in maintenance).

        Raises:
            SgxlaunchError: the error that opening raised.
        """
        if not maintenance and self._open_error is not None:
            raise self._open_error
        if self._platform is None:
            error = self._maintenance_error or self._open_error
            assert error is not None
            raise error
        return self._platform

    # -- operations (each runs on the platform thread via :meth:`call`) -------------------

    def status(self) -> dict[str, Any]:
        return self._opened().status()

    def run(
        self, image: SgxsImage, sig: Sigstruct, token: bytes | None, ecall_input: bytes
    ) -> tuple[dict[str, Any], list[str]]:
        """The launch's ``describe()`` and its warnings (the command line's ``run`` prints them
        on stderr: records of this launch that could not be written); a failure carries both."""
        from sgxlaunch._api import run

        platform = self._opened()
        seen = len(platform.log_errors)
        try:
            launch = run(platform, image, sig, token=token, ecall_input=ecall_input)
        except PolicyDenied as exc:
            attach(exc, denial_result(exc, platform.mode, sig))
            attach_warnings(exc, log_warnings(platform.log_errors[seen:]))
            raise
        except LoadFailed as exc:
            attach(exc, refusal_result(exc, platform.mode, sig))
            attach_warnings(exc, log_warnings(platform.log_errors[seen:]))
            raise
        except SgxlaunchError as exc:
            attach_warnings(exc, log_warnings(platform.log_errors[seen:]))
            raise
        result: dict[str, Any] = launch.describe()
        return result, log_warnings(platform.log_errors[seen:])

    def mint(self, sigstruct: bytes, attributes: Attributes | None) -> dict[str, Any]:
        """A token for ``sigstruct`` (all 1808 bytes): the launch enclave's decision; a denial
        raises :class:`PolicyDenied` carrying the decision."""
        platform = self._opened()
        if platform.blocked is not None:
            raise UsageError(f"nothing can be launched: {platform.blocked}")
        reply = platform.mint(sigstruct, attributes)
        token = reply.token
        reasons = reply.reason_dicts()
        result: dict[str, Any] = {
            "allowed": bool(reply.allowed),
            "rule": reply.rule,
            "reasons": reasons,
            "policy_version": reply.policy_version or None,
            "policy_digest": None if reply.policy_digest is None else reply.policy_digest.hex(),
            "token": None if token is None else token.hex(),
            "token_keyid": None if token is None else token[_KEYID].hex(),
        }
        if not reply.allowed:
            denied = PolicyDenied(
                "token denied by the owner's policy"
                + (f" (rule {reply.rule})" if reply.rule else ""),
                rule=reply.rule,
                detail=[
                    f"{r.get('field')}: expected {r.get('expected')}, found {r.get('found')}"
                    for r in reasons
                ],
                reasons=reasons,
            )
            attach(denied, result)
            raise denied
        return result

    def quote_target_info(self) -> dict[str, Any]:
        """The quoting enclave's TARGETINFO (the PCE and QE are launched on first use)."""
        return {"target_info": self._opened().qe_target_info().to_bytes().hex()}

    def quote(
        self,
        report: bytes | None,
        image: SgxsImage | None,
        sig: Sigstruct | None,
        reportdata: bytes,
    ) -> dict[str, Any]:
        """A quote of ``report``, or of the shipped-program enclave ``image`` launched here
        (as ``sgxlaunch quote make``), as base64 with its size and SHA-256."""
        import base64
        import hashlib

        from sgxlaunch._api import make_quote

        platform = self._opened()
        if report is not None:
            data = platform.quote(report)
        else:
            assert image is not None and sig is not None
            data = make_quote(platform, image, sig, reportdata=reportdata)
        return {
            "quote": base64.b64encode(data).decode(),
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }

    def install_policy(self, data: bytes, source: str) -> dict[str, Any]:
        platform = self._opened()
        with about(source, verification=True):
            result = platform.install_policy(data)
        return {
            "installed": result["installed"],
            "summary": result["summary"],
            "launch_enclave": True,
            "version": result["version"],
            "digest": result["digest"],
        }

    def set_mode(self, data: bytes, source: str) -> dict[str, Any]:
        platform = self._opened(maintenance=True)
        with about(source, verification=True):
            result = platform.set_mode(data)
        self._open()
        return result

    def owner_root(self) -> bytes:
        """The owner root envelope in the home (public: the launch enclave is built for it)."""
        platform = self._opened(maintenance=True)
        if platform.state is None:
            raise UsageError("install an owner root first (`sgxlaunch owner install`)")
        return bytes(platform.state.root_envelope)

    def set_launch_enclave(self, sig: Sigstruct, source: str | None) -> dict[str, Any]:
        platform = self._opened(maintenance=True)
        if source is None:  # `platform le-sign` names no file
            platform.set_launch_enclave(sig)
        else:
            with about(source, verification=True):
                platform.set_launch_enclave(sig)
        self._open()
        return {"mrsigner": sig.mrsigner.hex()}

    def le_key_quote(self) -> dict[str, Any]:
        """``platform le-key-quote``: the launch enclave's key-agreement public key and a quote
        binding it (base64), as the command line writes them."""
        import base64
        import hashlib

        platform = self._opened()
        quote, public_key = platform.le_key_quote()
        signer = platform.le_signer
        return {
            "quote": base64.b64encode(quote).decode(),
            "public_key": public_key.hex(),
            "quote_sha256": hashlib.sha256(quote).hexdigest(),
            "le_mrsigner": None if signer is None else signer.hex(),
        }

    def add_code_key(self, data: bytes, source: str) -> dict[str, Any]:
        """``platform add-code-key``: the launch enclave unwraps and seals the key (logged)."""
        platform = self._opened()
        with about(source):
            return platform.add_code_key(data)

    def take_ownership(self, data: bytes, source: str) -> dict[str, Any]:
        """``platform take-ownership``: bind the machine to the root (or restore the home's
        copy), then reopen the platform over the new state."""
        from sgxlaunch.launch.enclave import root_digest_of
        from sgxlaunch.launch.platform import take_ownership

        assert self._store is not None
        with about(source):
            take_ownership(self._store, FileMachine(self.machine_path), data, utc_now())
        self._open()
        return {"root_digest": root_digest_of(data).hex()}

    def recover(self, data: bytes, source: str) -> dict[str, Any]:
        """``recovery apply``: the counter's launch enclave commits the home's documents as
        its state (counter + 1); the platform is reopened, normally now."""
        self._open()  # a fresh platform for each attempt, as each command opens one
        try:
            with about(source):
                return self._opened(maintenance=True).recover(data)
        finally:
            self._open()

    def export_log(self, first_seq: int) -> dict[str, Any]:
        """``log export``: the records from ``first_seq`` in the export format (base64)."""
        import base64

        data = self._opened().export_log(first_seq)
        return {"export": base64.b64encode(data).decode(), "first_seq": first_seq}

    def attest_log(self, nonce: bytes, first_seq: int) -> dict[str, Any]:
        """``log attest``: the launch enclave's quote of its log head for ``nonce`` and the
        records it attests (base64), with the facts the command line prints."""
        import base64

        platform = self._opened()
        quote, attestation = platform.attest_log_quote(nonce, first_seq=first_seq)
        signer = platform.le_signer
        return {
            "quote": base64.b64encode(quote).decode(),
            "export": base64.b64encode(attestation.export).decode(),
            "platform_id": platform.platform_id.hex(),
            "le_mrsigner": None if signer is None else signer.hex(),
            "count": attestation.head.count,
            "head": attestation.head.hash.hex(),
            "first_seq": first_seq,
        }

    def verify_log(self) -> dict[str, Any]:
        try:
            count = self._opened().verify_log()
        except LogTampered as exc:
            attach(exc, {"valid": False, "first_bad_record": exc.index})
            raise
        return {"valid": True, "records": count}

    def check_readable(self) -> None:
        """Raise what opening the platform raised (the log is read as `log show` reads it)."""
        self._opened()

    def log_ready(self) -> None:
        """Raise unless the log can be read now (without taking the platform thread)."""
        if self._open_error is not None:
            raise self._open_error
        if self._platform is None and self._maintenance_error is not None:
            raise self._maintenance_error


_READERS = threading.local()


def _reader(home: Path) -> SqliteStore:
    """This thread's read connection to the home's state database."""
    stores: dict[Path, SqliteStore] = getattr(_READERS, "stores", {})
    _READERS.stores = stores
    store = stores.get(home)
    if store is None:
        store = stores[home] = open_store(home, create=False)
    return store


def read_log_page(
    home: Path, signer: bytes | None, start: int, limit: int
) -> tuple[int, list[dict[str, Any]]]:
    """Records ``start`` … ``start + limit - 1`` of ``signer``'s log segment, decoded (not
    verified), and the segment's record count. Runs on any thread (its own connection)."""
    if signer is None:
        return 0, []
    store = _reader(home)
    keys = store.keys(log_prefix(signer))
    out = []
    for index in range(start, min(len(keys), start + limit)):
        blob = store.get(keys[index])
        if blob is not None:
            out.append(decode_record(blob, index))
    return len(keys), out


__all__ = ["PlatformHost", "read_log_page", "utc_now"]
