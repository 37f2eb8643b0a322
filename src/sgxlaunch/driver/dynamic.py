"""The owner's limits on dynamic memory, enforced at run time (issue 17; owner extension).

After owner-mode INIT an enclave carries :class:`~sgxlaunch.driver.owner.OwnerLimits` in
``Enclave.owner_limits`` (decoded from its token's KEYID; :data:`~sgxlaunch.driver.owner.
MAINLINE_LIMITS` in permissive mode and until INIT). This module is what the driver's paths
consult about the ``dynamic_memory`` level; it uses only what a kernel really has — the page
tables it installs and the enclave's page list — and never looks into EPC
(``../shared/reference/sgx2-spec.md`` §6.6, §9).

A page is *dynamic* when it was added after EINIT (EAUG on a fault; ``EnclPage.dynamic``); a
*hole* is an enclave offset with no page. Before INIT nothing here applies: the driver behaves
as mainline, so runtimes' capability probes and their whole-range mappings (Gramine maps the
ELRANGE RWX before ECREATE, spec §6.2) are unaffected.

* ``none`` — no EAUG after INIT (a fault on a hole gets SIGBUS, :func:`eaug_allowed`) and the
  three SGX2 ioctls return EPERM (:func:`check_sgx2_ioctl`).
* ``data`` — spec §6.6's three doors: (1) an EAUGed page's ``vm_max_prot_bits`` is RW
  (:func:`eaug_max_prot`); (2) after INIT, mmap/mprotect asking X over a dynamic page or a hole
  is refused with EACCES (:func:`check_map`, from ``sgx_encl_may_map``); (3) the fault path
  never installs an executable PTE for a dynamic page (:func:`pte_prot`): a page EAUGed into an
  executable VMA (one made before INIT) gets a non-executable PTE, and the fetch faults.
* ``attested-code`` — as ``data``, except that a dynamic page may be mapped or faulted
  executable when ``Enclave.exec_grants`` holds a grant for it and the mapping is not writable
  (:func:`exec_allowed`; the grants are :mod:`sgxlaunch.driver.grants`' business).
* ``code`` — mainline (RWX allowed); every dynamic executable mapping is recorded.

The EADDed pages are never governed here: their X bit comes from the measured SECINFO
(``max_prot``) as in mainline, and the EINIT-time checks cover unmeasured or RWX ones.

**Driver events.** What the driver decides about dynamic code goes into a per-driver queue,
:class:`DriverEvents` (``SgxDriver.events``): each dynamic executable mapping allowed (``code``,
``attested-code``), each refusal (EACCES, EPERM, SIGBUS, the SIGSEGV of a fetch the policy
withheld), each page added with its exec bit withheld (``no-exec``). The queue is bounded
(:data:`EVENT_CAPACITY`; overflow is counted, never silent) and coalesces an event that
continues the previous one.

The success paths stay lean (the EAUG fault path is benchmarked): the callers test
``prot & PROT_EXEC`` before calling here, and recording formats no strings.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from sgxlaunch.arch.constants import PAGE_SIZE
from sgxlaunch.driver.owner import DynamicMemory, ExecGrant, OwnerLimits
from sgxlaunch.driver.uapi import PROT_EXEC, PROT_READ, PROT_WRITE, DriverError

_RW = PROT_READ | PROT_WRITE
_RWX = _RW | PROT_EXEC
_CODE = DynamicMemory.CODE
_ATTESTED = DynamicMemory.ATTESTED_CODE
_NONE = DynamicMemory.NONE

EVENT_CAPACITY = 4096
"""Events the driver keeps before it drops (and counts) new ones until the queue is drained."""

ALLOWED = "allowed"
REFUSED = "refused"
NO_EXEC = "no-exec"
"""Outcomes: allowed; refused (errno or signal); a page added with its exec bit withheld."""


class _Page(Protocol):
    @property
    def dynamic(self) -> bool: ...


class Enclave(Protocol):
    """What this module reads of ``struct sgx_encl`` (:class:`sgxlaunch.driver.encl.Enclave`,
    which imports this module, so it is named structurally here)."""

    @property
    def eid(self) -> int: ...
    @property
    def initialized(self) -> bool: ...
    @property
    def base(self) -> int: ...
    @property
    def mrenclave(self) -> bytes: ...
    @property
    def mrsigner(self) -> bytes: ...
    @property
    def configid(self) -> bytes: ...
    @property
    def owner_limits(self) -> OwnerLimits: ...
    @property
    def exec_grants(self) -> Mapping[int, ExecGrant]: ...
    @property
    def pages(self) -> Mapping[int, _Page]: ...
    @property
    def events(self) -> DriverEvents | None: ...


@dataclass(frozen=True, slots=True)
class DriverEvent:
    """One decision of the driver about dynamic memory of one enclave.

    Attributes:
        time: when (seconds since the epoch, the driver's clock).
        pid: the process whose system call or fault it was (0: none known).
        eid: the driver's enclave id (per driver, per boot).
        mrenclave: the enclave's MRENCLAVE (as EINIT accepted it).
        mrsigner: its MRSIGNER.
        action: ``mmap``, ``mprotect``, ``fault``, or the SGX2 ioctl's name
            (``RESTRICT_PERMISSIONS``, ``MODIFY_TYPES``, ``REMOVE_PAGES``).
        start: first enclave offset of the range (page aligned).
        end: end offset (exclusive).
        prot: the PROT_* bits asked for (a fault: the VMA's; a refused fetch: PROT_EXEC).
        level: the enclave's ``dynamic_memory`` level.
        outcome: :data:`ALLOWED`, :data:`REFUSED` or :data:`NO_EXEC`.
        errno: the errno returned (0 for a signal or no error).
        signal: ``SIGBUS`` / ``SIGSEGV`` for a refused fault, else empty.
        code_hash: for an allowed attested-code mapping, the grant's SHA-256 of the code.
        configid: the instance's SECS.CONFIGID (KSS; zero without it).
    """

    time: float
    pid: int
    eid: int
    mrenclave: bytes
    mrsigner: bytes
    action: str
    start: int
    end: int
    prot: int
    level: DynamicMemory
    outcome: str
    errno: int = 0
    signal: str = ""
    code_hash: bytes | None = None
    configid: bytes = bytes(64)

    def continues(self, other: DriverEvent) -> bool:
        """``other`` is the same decision for the range right after this one's."""
        return (
            other.start == self.end
            and other.eid == self.eid
            and other.action == self.action
            and other.outcome == self.outcome
            and other.prot == self.prot
            and other.pid == self.pid
            and other.errno == self.errno
            and other.signal == self.signal
            and other.code_hash == self.code_hash
        )


class DriverEvents:
    """The driver's queue of :class:`DriverEvent` (thread-safe: vDSO calls fault on their own
    threads).

    Args:
        capacity: events kept before new ones are dropped and counted.
        clock: the time source (seconds since the epoch).
    """

    def __init__(
        self, capacity: int = EVENT_CAPACITY, clock: Callable[[], float] = time.time
    ) -> None:
        self.capacity = capacity
        self.clock = clock
        self._events: list[DriverEvent] = []
        self._dropped = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._events)

    def push(self, event: DriverEvent) -> None:
        """Queue ``event`` (or extend the previous one it continues; see :func:`record`)."""
        with self._lock:
            events = self._events
            if events and events[-1].continues(event):
                events[-1] = replace(events[-1], end=event.end)
            elif len(events) < self.capacity:
                events.append(event)
            else:
                self._dropped += 1

    def drain(self) -> tuple[list[DriverEvent], int]:
        """Take every queued event and the count of those dropped since the last drain."""
        with self._lock:
            events, self._events = self._events, []
            dropped, self._dropped = self._dropped, 0
        return events, dropped

    def pending(self) -> bool:
        """Whether a drain would return anything."""
        return bool(self._events) or bool(self._dropped)


def record(
    enclave: Enclave,
    action: str,
    start: int,
    end: int,
    prot: int,
    outcome: str,
    *,
    pid: int = 0,
    err: int = 0,
    signal: str = "",
    code_hash: bytes | None = None,
) -> None:
    """Queue one event for ``enclave`` on its driver's queue (none: not recorded)."""
    events = enclave.events
    if events is None:
        return
    events.push(
        DriverEvent(
            events.clock(),
            pid,
            enclave.eid,
            enclave.mrenclave,
            enclave.mrsigner,
            action,
            start,
            end,
            prot,
            enclave.owner_limits.dynamic_memory,
            outcome,
            err,
            signal,
            code_hash,
            enclave.configid,
        )
    )


# -- the decisions ------------------------------------------------------------------------------


def is_dynamic(enclave: Enclave, offset: int) -> bool:
    """The page at enclave offset ``offset`` is dynamic (EAUGed after INIT) or a hole."""
    page = enclave.pages.get(offset)
    return page is None or page.dynamic


def exec_allowed(enclave: Enclave, offset: int, prot: int) -> bool:
    """May the dynamic page (or hole) at enclave offset ``offset`` be mapped or faulted
    executable in a mapping with protection ``prot``?

    ``code``: yes. ``attested-code``: only when ``enclave.exec_grants`` holds a grant for the
    page and ``prot`` is not writable (a hole never has one). ``data`` and ``none``: never.
    The caller decides whether the page is dynamic and the enclave initialized.
    """
    level = enclave.owner_limits.dynamic_memory
    if level == _CODE:
        return True
    if level == _ATTESTED:
        return not prot & PROT_WRITE and offset in enclave.exec_grants
    return False


def eaug_allowed(enclave: Enclave, offset: int, pid: int = 0) -> bool:
    """``none`` forbids EAUG after INIT: the fault gets SIGBUS (recorded)."""
    if enclave.owner_limits.dynamic_memory != _NONE:
        return True
    record(enclave, "fault", offset, offset + PAGE_SIZE, 0, REFUSED, pid=pid, signal="SIGBUS")
    return False


def eaug_max_prot(enclave: Enclave) -> int:
    """``vm_max_prot_bits`` of a page EAUGed for ``enclave``: RWX under ``code`` (mainline
    since SGX2 v3, spec §6.4), RW otherwise (door 1: a later mprotect(X) stays refused)."""
    return _RWX if enclave.owner_limits.dynamic_memory == _CODE else _RW


def x_bit_from_policy(enclave: Enclave) -> bool:
    """Whether a dynamic page's X bit is decided here rather than by its ``max_prot``."""
    return enclave.owner_limits.dynamic_memory != _CODE


def check_map(
    enclave: Enclave, start: int, end: int, prot: int, *, syscall: str = "mmap", pid: int = 0
) -> None:
    """``sgx_encl_may_map``'s owner check (doors 2 and the grant rule): after INIT, X over a
    dynamic page or a hole of ``[start, end)`` (linear) needs :func:`exec_allowed`.

    Raises:
        DriverError: EACCES (the refusal is recorded).
    """
    if not (prot & PROT_EXEC and enclave.initialized):
        return
    if enclave.owner_limits.dynamic_memory == _CODE:
        return
    base = enclave.base
    for address in range(start, end, PAGE_SIZE):
        offset = address - base
        if is_dynamic(enclave, offset) and not exec_allowed(enclave, offset, prot):
            level = enclave.owner_limits.dynamic_memory
            record(
                enclave,
                syscall,
                start - base,
                end - base,
                prot,
                REFUSED,
                pid=pid,
                err=errno.EACCES,
            )
            what = "a hole" if offset not in enclave.pages else "a page added after EINIT"
            why = (
                "without an attested-code grant, or writable"
                if level == _ATTESTED
                else f"under dynamic_memory {level.label}"
            )
            raise DriverError(
                errno.EACCES,
                f"offset 0x{offset:x} is {what}: it cannot be mapped executable {why}",
            )


def note_map(
    enclave: Enclave, start: int, end: int, prot: int, *, syscall: str = "mmap", pid: int = 0
) -> None:
    """Record an executable mapping of ``[start, end)`` (linear) that passed every check, when
    it covers a dynamic page or a hole (``code`` and ``attested-code``; after INIT)."""
    if not (prot & PROT_EXEC and enclave.initialized):
        return
    if enclave.owner_limits.dynamic_memory in (DynamicMemory.NONE, DynamicMemory.DATA):
        return
    base = enclave.base
    grants = enclave.exec_grants
    for address in range(start, end, PAGE_SIZE):
        offset = address - base
        if is_dynamic(enclave, offset):
            grant = grants.get(offset)
            record(
                enclave,
                syscall,
                start - base,
                end - base,
                prot,
                ALLOWED,
                pid=pid,
                code_hash=None if grant is None else grant.code_hash,
            )
            return


def pte_prot(enclave: Enclave, offset: int, vma_prot: int, *, added: bool, pid: int = 0) -> int:
    """The protection of the PTE the fault path installs for the dynamic page at ``offset`` in
    an executable VMA with ``vma_prot`` (door 3): X only if :func:`exec_allowed`. Recorded: a
    page just EAUGed (``added``) into an executable VMA — allowed (``code``, a granted page) or
    :data:`NO_EXEC` —, and under ``code`` every executable PTE installed for an existing
    dynamic page (one EAUGed through a non-executable mapping, say in another process, then
    faulted in through an executable VMA made before INIT, where no mmap or mprotect was
    recorded). Under ``attested-code`` an executable PTE needs a grant, whose record the launch
    enclave writes itself."""
    allowed = exec_allowed(enclave, offset, vma_prot)
    if added or (allowed and enclave.owner_limits.dynamic_memory == _CODE):
        grant = enclave.exec_grants.get(offset)
        record(
            enclave,
            "fault",
            offset,
            offset + PAGE_SIZE,
            vma_prot,
            ALLOWED if allowed else NO_EXEC,
            pid=pid,
            code_hash=None if grant is None else grant.code_hash,
        )
    return vma_prot if allowed else vma_prot & ~PROT_EXEC


def refuse_fetch(enclave: Enclave, offset: int, pid: int = 0) -> None:
    """Record a fetch from a dynamic page whose PTE the policy kept non-executable (the fault
    goes to user space: SIGSEGV, or the vDSO's exception report)."""
    record(
        enclave, "fault", offset, offset + PAGE_SIZE, PROT_EXEC, REFUSED, pid=pid, signal="SIGSEGV"
    )


def check_sgx2_ioctl(enclave: Enclave, name: str, offset: int, length: int, pid: int = 0) -> None:
    """``none``: RESTRICT_PERMISSIONS, MODIFY_TYPES and REMOVE_PAGES are refused for the
    enclave. Called after mainline's argument checks and before the first page is touched.

    Raises:
        DriverError: EPERM (recorded).
    """
    if enclave.owner_limits.dynamic_memory != _NONE:
        return
    record(enclave, name, offset, offset + length, 0, REFUSED, pid=pid, err=errno.EPERM)
    raise DriverError(
        errno.EPERM,
        f"SGX_IOC_ENCLAVE_{name}: the owner's policy gives this enclave dynamic_memory none",
    )


__all__ = [
    "ALLOWED",
    "EVENT_CAPACITY",
    "NO_EXEC",
    "REFUSED",
    "DriverEvent",
    "DriverEvents",
    "check_map",
    "check_sgx2_ioctl",
    "eaug_allowed",
    "eaug_max_prot",
    "exec_allowed",
    "is_dynamic",
    "note_map",
    "pte_prot",
    "record",
    "refuse_fetch",
    "x_bit_from_policy",
]
