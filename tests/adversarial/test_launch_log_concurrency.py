"""Class J: launches missing from the log. Processes sharing one home each read the launch
enclave's committed head when they open the platform; without one lock held from re-reading it
until the counter advanced, two of them chain to the same head (one record lost, the log
unverifiable) or one refuses a legitimate state as a rollback. Each INIT attempt must leave an
*attempt* record before EINIT and one *outcome* after, or "outcome unknown" when its process
died; in owner mode an attempt that cannot be recorded is not performed.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from sgxlaunch.arch import Sigstruct
from sgxlaunch.driver import LoadFailed
from sgxlaunch.errors import MalformedInput
from sgxlaunch.formats import sgxs
from sgxlaunch.launch.log import check_exactly_once
from sgxlaunch.launch.platform import Platform
from sgxlaunch.store import FileMachine, open_store
from tests.support.clock import Clock
from tests.support.home import DiskHome, make_disk_home


def _enclave(home: DiskHome) -> tuple[sgxs.SgxsImage, Sigstruct]:
    return sgxs.parse_sgxs(home.image.read_bytes()), Sigstruct.from_bytes(home.sig.read_bytes())


def _records(home: DiskHome) -> list[dict[str, Any]]:
    platform = home.open()
    count = platform.verify_log()
    records = platform.log_records()
    assert len(records) == count
    check_exactly_once(records)
    return records


def _pairs(records: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(attempt seq, outcome) for every attempt."""
    outcomes = {r["attempt"]: r["outcome"] for r in records if r.get("kind") == "outcome"}
    return [
        (r["seq"], outcomes.get(r["seq"], "missing")) for r in records if r["kind"] == "attempt"
    ]


@pytest.fixture
def disk_home(tmp_path: Path) -> DiskHome:
    return make_disk_home(tmp_path)


def test_two_open_platforms_interleaving_runs_lose_no_record(disk_home: DiskHome) -> None:
    """J. Two processes opened the platform, then launch in turn: each launch is recorded and
    the log verifies (before: both chained to the head read at open; a record lost)."""
    image, sig = _enclave(disk_home)
    first, second = disk_home.open(), disk_home.open()
    for platform in (first, second, first, second):
        assert platform.run(image, sig).enclave is not None
    records = _records(disk_home)
    assert _pairs(records) == [(seq, "initialized") for seq in (0, 2, 4, 6)]


def test_install_policy_racing_an_open_platform_is_not_a_rollback(disk_home: DiskHome) -> None:
    """J. A `run` opened before another process installed a policy launches under the new
    policy, and the platform opens afterwards (before: a rollback refusal / a broken log)."""
    image, sig = _enclave(disk_home)
    runner = disk_home.open()
    disk_home.open().install_policy(disk_home.policy(2))
    result = runner.run(image, sig)
    assert result.decision == "allowed" and result.policy_version == 2
    assert _pairs(_records(disk_home)) == [(0, "initialized")]
    assert disk_home.open().state is not None


def _forked(fn: Any) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            fn()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def test_concurrent_processes_and_install_policy_every_attempt_recorded(
    disk_home: DiskHome,
) -> None:
    """J. Four processes launching at once with a fifth installing a policy, twice: every
    attempt has its attempt and outcome records and the log verifies."""
    image, sig = _enclave(disk_home)
    policy = {version: disk_home.policy(version) for version in (2, 3)}

    def launch() -> None:
        platform = disk_home.open()
        for _ in range(2):
            assert platform.run(image, sig).enclave is not None

    for version in (2, 3):
        pids = []
        for index in range(5):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                code = 1
                try:
                    if index == 4:
                        disk_home.open().install_policy(policy[version])
                    else:
                        launch()
                    code = 0
                finally:
                    os._exit(code)
            pids.append(pid)
        for pid in pids:
            assert os.waitpid(pid, 0)[1] == 0
    pairs = _pairs(_records(disk_home))
    assert len(pairs) == 2 * 4 * 2
    assert {outcome for _, outcome in pairs} == {"initialized"}


def test_process_killed_after_its_attempt_gets_outcome_unknown(disk_home: DiskHome) -> None:
    """J. A process dies between EINIT and its outcome record: the next process to take the
    lock appends "outcome unknown" for that attempt; the log verifies."""
    image, sig = _enclave(disk_home)

    def die_before_outcome() -> None:
        platform = disk_home.open()
        platform.driver.observers.insert(0, lambda attempt: os.kill(os.getpid(), signal.SIGKILL))
        platform.run(image, sig)

    status = _forked(die_before_outcome)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    records = _records(disk_home)
    assert records[0]["kind"] == "attempt"
    assert records[1]["kind"] == "outcome" and records[1]["outcome"] == "unknown"
    assert records[1]["attempt"] == 0


class _FailingLogStore:
    """The home's store, with every launch-log write failing (a full disk, a damaged file)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def get(self, key: str) -> bytes | None:
        return self.inner.get(key)  # type: ignore[no-any-return]

    def keys(self, prefix: str = "") -> list[str]:
        return self.inner.keys(prefix)  # type: ignore[no-any-return]

    def commit(self, changes: Any) -> None:
        if any(key.startswith("log/") for key in changes):
            raise MalformedInput("disk full", source="state.sqlite3")
        self.inner.commit(changes)

    def locked(self) -> Any:
        return self.inner.locked()


def test_attempt_that_cannot_be_recorded_is_not_performed(disk_home: DiskHome) -> None:
    """J. Owner mode: the attempt record cannot be written, so the driver refuses the INIT
    before EINIT (EIO naming the launch log); no enclave starts (before: it started, and
    the log silently missed it)."""
    image, sig = _enclave(disk_home)
    store = _FailingLogStore(open_store(disk_home.home, create=False))
    platform = Platform.open(store, FileMachine(disk_home.machine), clock=Clock())
    einits: list[int] = []
    real_einit = platform.cpu.einit

    def counting_einit(*args: Any) -> Any:
        einits.append(1)
        return real_einit(*args)

    platform.cpu.einit = counting_einit  # type: ignore[assignment]
    with pytest.raises(LoadFailed) as err:
        platform.run(image, sig)
    assert err.value.errno == errno.EIO
    assert "launch log could not record the attempt" in str(err.value)
    assert einits == []
    assert _records(disk_home) == []


def test_process_killed_between_storing_and_advancing_loses_no_record(
    disk_home: DiskHome,
) -> None:
    """J. A process stores its attempt record and the sealed head, and dies before advancing
    the counter; another process that opened earlier (the counter has not moved) installs a
    policy: it takes the stored state up first, so the record stays in the chain (found by
    bench/log_race.py kill9: a stale process chained to the old head and the log ended one
    record past the sealed head)."""
    from sgxlaunch.launch.ecalls import AdvanceRequest

    image, sig = _enclave(disk_home)
    stale = disk_home.open()

    def die_before_advance() -> None:
        platform = disk_home.open()
        real = platform._le_call

        def le_call(request: Any, reply_type: Any) -> Any:
            if isinstance(request, AdvanceRequest):
                os.kill(os.getpid(), signal.SIGKILL)
            return real(request, reply_type)

        platform._le_call = le_call  # type: ignore[method-assign]
        platform.run(image, sig)

    status = _forked(die_before_advance)
    assert os.WIFSIGNALED(status)
    stale.install_policy(disk_home.policy(2))
    records = _records(disk_home)
    assert [r["kind"] for r in records] == ["attempt", "outcome"]
    assert records[1]["outcome"] == "unknown"
