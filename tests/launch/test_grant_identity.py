"""The pieces of attested-code grants that do not depend on a spec "3" policy: the instance
identity the driver writes at ECREATE, the grant ioctls' first checks, and the processor's
owner-verdict mailbox (only the counter's owner enclave posts)."""

from __future__ import annotations

import errno

from sgxlaunch.arch import Report
from sgxlaunch.driver.owner import DynamicMemory
from sgxlaunch.launch.platform import Platform
from sgxlaunch.policy import MemoryStore
from tests.support.clock import Clock
from tests.support.driver import expect_errno
from tests.support.grants import VerdictForger, loader_sigstruct, start_loader
from tests.support.platform import Owner, author_enclave


def _owner_platform(*allow: dict[str, object]) -> Platform:
    """Owner mode with a spec "2" policy (dynamic code unrestricted: limits ``code``)."""
    owner = Owner()
    owner.set_up_launch_enclave()
    platform = owner.platform()
    platform.install_policy(owner.policy(version=1, allow=list(allow)))
    platform.set_mode(owner.mode("owner", version=1))
    return owner.platform()


def test_driver_writes_a_fresh_configid_per_instance_and_the_report_carries_it() -> None:
    """Owner mode, SECS.ATTRIBUTES.KSS: the driver writes a random SECS.CONFIGID at ECREATE
    (the instance identity); two instances of one MRENCLAVE get different ones, and EREPORT
    carries it at REPORT offset 192."""
    sig = loader_sigstruct()
    platform = _owner_platform({"id": "loader", "mrenclave": sig.enclavehash.hex(), "kss": True})
    a, b = start_loader(platform, sig), start_loader(platform, sig)
    assert a.enclave.mrenclave == b.enclave.mrenclave
    assert any(a.enclave.configid) and any(b.enclave.configid)
    assert a.enclave.configid != b.enclave.configid
    a.place()
    report, _hash = a.report(bytes(32))
    assert report[192:256] == a.enclave.configid
    assert Report.from_bytes(report).configid == a.enclave.configid


def test_permissive_mode_leaves_configid_to_the_caller() -> None:
    """Permissive mode is mainline: SECS.CONFIGID is what the loader passed (zero here), and
    the grant ioctls answer EINVAL (no owner launch control)."""
    platform = Platform.create(
        MemoryStore(), seed=b"permissive-seed-0000000000000000", clock=Clock()
    )
    loader = start_loader(platform, loader_sigstruct())
    assert loader.enclave.configid == bytes(64)
    with expect_errno(errno.EINVAL):
        loader.challenge()


def test_grant_ioctls_refused_unless_the_limits_say_attested_code() -> None:
    """Under a policy of spec_version "2" the enclave's limits are mainline's (``code``): the
    challenge ioctl answers EPERM and names the level."""
    sig = loader_sigstruct()
    platform = _owner_platform({"id": "loader", "mrenclave": sig.enclavehash.hex(), "kss": True})
    loader = start_loader(platform, sig)
    assert loader.enclave.owner_limits.dynamic_memory == DynamicMemory.CODE
    with expect_errno(errno.EPERM):
        loader.challenge()


def test_only_the_counter_owner_posts_owner_verdicts() -> None:
    """An enclave that does not own the machine's counter cannot post a verdict (the
    processor refuses: CounterAccessDenied), so the kernel side finds nothing to take."""
    image, sig = author_enclave(VerdictForger)
    platform = _owner_platform({"id": "forger", "mrenclave": sig.enclavehash.hex()})
    platform.cpu.register_program(sig.enclavehash, VerdictForger)
    forger = platform.run(image, sig).enclave
    assert forger is not None
    verdict = b"\x5a" * 32
    assert forger.ecall(0, verdict) == b"denied"
    assert platform.cpu.owner_verdict_take(verdict) is False
