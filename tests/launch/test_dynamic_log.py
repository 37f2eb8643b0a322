"""The owner's dynamic-memory limits end to end, and the driver's events in the launch log.

A loader enclave is launched through the Platform in owner mode under a spec-"3" policy whose
allow rule names its ``dynamic_memory`` level; the level reaches the driver in the token
(``tests/launch/test_owner_limits_launch.py``), the driver enforces it
(``tests/driver/test_dynamic_memory.py``), and the Platform forwards the driver's events into
the launch log as ``dynamic`` records, chained and MACed like every record.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest

from sgxlaunch.arch.constants import PAGE_SIZE
from sgxlaunch.driver import as_sgxs_image
from sgxlaunch.driver.owner import DynamicMemory
from sgxlaunch.launch.log import DYNAMIC, check_exactly_once
from sgxlaunch.launch.platform import Platform
from tests.support.cpu import sign_image
from tests.support.dynamic import FETCHED_OUTPUT, Loader, LoaderEnclave, R, X, loader_image
from tests.support.platform import Owner, allow_rule


def _launch(level: str, **rule: Any) -> tuple[Platform, Loader]:
    owner = Owner()
    owner.set_up_launch_enclave()
    platform = owner.platform()
    image = loader_image()
    sig = sign_image(image, "app", isvprodid=1)
    policy = owner.policy(
        version=1,
        allow=[allow_rule(sig, dynamic_memory=level, unmeasured_exec="allow", **rule)],
        spec_version="3",
    )
    platform.install_policy(policy)
    platform.set_mode(owner.mode("owner", version=1))
    platform = owner.platform()
    platform.cpu.register_program(sig.enclavehash, LoaderEnclave)
    result = platform.run(as_sgxs_image(image), sig)
    t = Loader(platform.driver, loaded=result.enclave)
    assert t.enclave.owner_limits.dynamic_memory == DynamicMemory.from_label(level)
    return platform, t


def _dynamic(platform: Platform) -> list[dict[str, Any]]:
    return [r for r in platform.log_records() if r.get("kind") == DYNAMIC]


def test_data_refusals_reach_the_launch_log() -> None:
    """Under ``data`` the loader grows its heap and adds a TCS (nothing recorded: no code),
    its fetched code is refused (EACCES) and its fetch faults; the refusal is in the log as a
    ``dynamic`` record (MRENCLAVE, level, action, range, prot, errno), and the log verifies
    (the records are chained and MACed by the launch enclave like every other)."""
    platform, t = _launch("data")
    t.grow_and_add_tcs()
    code = t.add_pages()
    t.fetch_code(code)
    assert t.mprotect(code, 1, R | X) == errno.EACCES
    assert t.execute(code) == b""
    t.expect_exception(0x15, code)
    assert platform.forward_driver_events() == 1
    records = _dynamic(platform)
    assert len(records) == 1
    r = records[0]
    assert r["mrenclave"] == t.enclave.mrenclave.hex()
    assert (r["level"], r["action"], r["prot"], r["outcome"], r["errno"]) == (
        "data",
        "mprotect",
        "r-x",
        "refused",
        "EACCES",
    )
    assert (r["offset"], r["length"]) == (t.offset(code), PAGE_SIZE)
    assert r["pid"] == t.process.pid and r["time"] == platform._now()
    count = platform.verify_log()
    assert count == len(platform.log_records())
    assert platform.forward_driver_events() == 0  # drained: nothing written twice


def test_code_level_records_the_dynamic_executable_mapping() -> None:
    """Under ``code`` the fetched code runs and its R-X mapping is in the log (allowed)."""
    platform, t = _launch("code")
    code = t.add_pages()
    t.fetch_code(code)
    assert t.mprotect(code, 1, R | X) == 0
    assert t.execute(code) == FETCHED_OUTPUT
    records = _dynamic(platform)  # log_records forwards pending events first
    assert [(r["level"], r["action"], r["prot"], r["outcome"]) for r in records] == [
        ("code", "mprotect", "r-x", "allowed")
    ]


def test_events_are_forwarded_before_the_next_attempt_and_at_teardown() -> None:
    """Pending events go into the log before the next INIT attempt (never between an attempt
    and its outcome) and before a teardown record; the attempt/outcome pairing still holds."""
    platform, t = _launch("none")
    heap = t.hole()
    assert t.mmap(heap, 1, 0x3) == 0
    t.grow_heap(heap)
    t.expect_exception(0x4, heap)  # SIGBUS: no EAUG under none
    image = loader_image()
    sig = sign_image(image, "app", isvprodid=1)
    platform.run(as_sgxs_image(image), sig)  # a second instance: attempt + outcome
    kinds = [r.get("kind") for r in platform.log_records()]
    assert kinds[-3:] == [DYNAMIC, "attempt", "outcome"]
    check_exactly_once(platform.log_records())
    assert t.modify_types(t.offset(heap), PAGE_SIZE, 4)[0] == errno.EPERM
    t.close()
    kinds = [r.get("kind") for r in platform.log_records()]
    assert kinds[-2:] == [DYNAMIC, "teardown"]
    ioctl = [r for r in _dynamic(platform) if r["action"] == "MODIFY_TYPES"]
    assert [(r["outcome"], r["errno"], r["level"]) for r in ioctl] == [("refused", "EPERM", "none")]


def test_a_full_queue_is_reported_not_hidden() -> None:
    """Events the driver's queue dropped are counted into a ``dynamic`` record."""
    platform, t = _launch("data")
    platform.driver.events.capacity = 1
    hole = t.hole(3)
    for k in (0, 2):  # not adjacent: two events, one dropped
        assert t.mmap(hole + k * PAGE_SIZE, 1, R | X) == errno.EACCES
    records = _dynamic(platform)
    assert [r["outcome"] for r in records] == ["refused", "dropped"]
    assert records[1]["dropped"] == 1


@pytest.mark.parametrize("level", ["data", "attested-code"])
def test_log_show_lists_dynamic_code_events(level: str) -> None:
    """``sgxlaunch log show``'s line for a dynamic record names the level, the action, the
    protection, the range and the outcome."""
    from sgxlaunch.cli.log import _dynamic_line

    extra = {"code_hashes": "any"} if level == "attested-code" else {}
    platform, t = _launch(level, **extra)
    code = t.add_pages()
    assert t.mprotect(code, 1, R | X) == errno.EACCES
    (r,) = _dynamic(platform)
    line = _dynamic_line(r["seq"], r, r["mrenclave"][:16])
    assert f"{level}" in line and "mprotect r-x" in line
    assert f"0x{t.offset(code):x}+0x1000 refused EACCES" in line
