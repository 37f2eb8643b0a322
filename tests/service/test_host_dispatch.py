"""PlatformHost.call: platform operations run one at a time and in order; a short one runs on
the caller's thread only when nothing is queued or running (docs/service.md)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

import pytest

from sgxlaunch.service.host import PlatformHost


class Recorder:
    """Operations that record where, in which order and how many at once they ran."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int]] = []
        self.running = 0
        self.most = 0
        self._guard = threading.Lock()

    def op(self, name: str, hold: threading.Event | None = None) -> str:
        with self._guard:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            if hold is not None:
                assert hold.wait(10), "the held operation was never released"
            self.events.append((name, threading.current_thread().name, self.running))
            return name
        finally:
            with self._guard:
                self.running -= 1


def _host(tmp_path: Path) -> PlatformHost:
    # No platform is opened: call() is exercised with plain functions.
    return PlatformHost(tmp_path / "home", tmp_path / "machine.json")


def test_short_operation_runs_inline_only_when_the_worker_is_idle(tmp_path: Path) -> None:
    host = _host(tmp_path)
    rec = Recorder()
    loop_thread = threading.current_thread().name

    async def scenario() -> None:
        # Idle: a short operation runs here, on the event loop's thread.
        assert await host.call(lambda: rec.op("short-idle"), short=True) == "short-idle"
        # A long operation holds the worker; a short one and a normal one queue behind it.
        hold = threading.Event()
        long = asyncio.ensure_future(host.call(lambda: rec.op("long", hold)))
        await asyncio.sleep(0.05)
        short = asyncio.ensure_future(host.call(lambda: rec.op("short-busy"), short=True))
        normal = asyncio.ensure_future(host.call(lambda: rec.op("normal")))
        await asyncio.sleep(0.05)
        assert not short.done() and not normal.done(), "ran while the worker was busy"
        hold.set()
        assert list(await asyncio.gather(long, short, normal)) == ["long", "short-busy", "normal"]
        # All finished: inline again.
        assert await host.call(lambda: rec.op("short-after"), short=True) == "short-after"

    try:
        asyncio.run(scenario())
    finally:
        host.close()
    names = [name for name, _thread, _n in rec.events]
    assert names == ["short-idle", "long", "short-busy", "normal", "short-after"]
    threads = {name: thread for name, thread, _n in rec.events}
    assert threads["short-idle"] == loop_thread
    assert threads["short-after"] == loop_thread
    for name in ("long", "short-busy", "normal"):
        assert threads[name].startswith("sgxlaunchd-platform"), (name, threads[name])
    assert rec.most == 1, "two platform operations overlapped"


def test_cancelled_queued_operation_does_not_block_the_fast_path(tmp_path: Path) -> None:
    host = _host(tmp_path)
    rec = Recorder()
    loop_thread = threading.current_thread().name

    async def scenario() -> None:
        hold = threading.Event()
        long = asyncio.ensure_future(host.call(lambda: rec.op("long", hold)))
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(host.call(lambda: rec.op("never")))
        await asyncio.sleep(0.05)
        queued.cancel()  # its job has not started: it never runs
        with contextlib.suppress(asyncio.CancelledError):
            await queued  # the cancellation has reached the worker's queue
        hold.set()
        assert await long == "long"
        assert queued.cancelled()
        assert await host.call(lambda: rec.op("short"), short=True) == "short"

    try:
        asyncio.run(scenario())
    finally:
        host.close()
    assert [(name, thread) for name, thread, _n in rec.events][-1] == ("short", loop_thread)
    assert "never" not in [name for name, _t, _n in rec.events]


def test_short_operation_error_releases_the_platform(tmp_path: Path) -> None:
    host = _host(tmp_path)
    rec = Recorder()

    def fails() -> str:
        raise ValueError("refused")

    async def scenario() -> None:
        with pytest.raises(ValueError, match="refused"):
            await host.call(fails, short=True)
        # The platform lock was released: the worker and the fast path both still run.
        assert await host.call(lambda: rec.op("worker")) == "worker"
        assert await host.call(lambda: rec.op("short"), short=True) == "short"

    try:
        asyncio.run(scenario())
    finally:
        host.close()
    assert [name for name, _t, _n in rec.events] == ["worker", "short"]
