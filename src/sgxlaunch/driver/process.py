"""An emulated user process: its memory, file descriptors, enclave mappings and system calls.

User memory is ordinary physical memory of the emulated machine, identity-mapped (a user
address is the physical address), so ioctl arguments are read the way the kernel reads them:
``copy_from_user`` fails with EFAULT for anything the process has not mapped. Enclave ranges
are mapped with :meth:`Process.mmap` on an enclave fd, as with the real driver.

The process reaches the kernel only through :class:`Kernel` (the file operations of the
driver); the kernel sees the process only as an ioctl ``Task``. Neither module imports the
other's: ``kernel`` builds processes, ``process`` knows the protocol.
"""

from __future__ import annotations

import bisect
import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sgxlaunch.arch.constants import PAGE_SIZE
from sgxlaunch.cpu import Processor
from sgxlaunch.driver import dynamic
from sgxlaunch.driver.encl import Enclave, may_map
from sgxlaunch.driver.grants import revoke_linear
from sgxlaunch.driver.uapi import (
    DEV_SGX_ENCLAVE,
    DEV_SGX_PROVISION,
    EENTER,
    ENOIOCTLCMD,
    ERESUME,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    DriverError,
)
from sgxlaunch.driver.vdso import EnclaveRun, EnclaveThread
from sgxlaunch.errors import UsageError

USER_MMAP_BASE = 0x7F00_0000_0000
"""Where the process's enclave mappings are placed (virtual; never physical memory)."""


class Kernel(Protocol):
    """The driver as a process reaches it: ``open``/``release``/``ioctl`` of the device
    files, and the enclave VMA's fault-in-and-enter and ptrace paths."""

    @property
    def cpu(self) -> Processor: ...

    @property
    def devices_present(self) -> bool: ...

    @property
    def mode(self) -> str: ...

    def new_enclave(self) -> Enclave: ...

    def release(self, enclave: Enclave) -> None: ...

    def ioctl(self, process: Process, enclave: Enclave, cmd: int, arg: int) -> int: ...

    def enter(
        self,
        mm: Process,
        enclave: Enclave,
        tcs_address: int,
        function: int,
        data: bytes,
        deliver: Callable[[int, int], bool] | None = None,
    ) -> bytes: ...

    def access(self, enclave: Enclave, address: int, length: int, data: bytes | None) -> bytes: ...

    def user_fault(self, mm: Process, enclave: Enclave, address: int, write: bool) -> None: ...


@dataclass(slots=True)
class _OpenFile:
    path: str
    enclave: Enclave | None = None
    users: int = 1
    """Descriptor tables holding this open file (:meth:`Process.send_fd` adds one)."""


@dataclass(slots=True)
class Vma:
    """An enclave mapping: ``[start, end)`` with ``prot``, backed by an enclave fd."""

    start: int
    end: int
    prot: int
    enclave: Enclave


class Process:
    """One user process on an emulated platform (made by :meth:`SgxDriver.new_process`)."""

    def __init__(self, driver: Kernel, pid: int) -> None:
        self.driver = driver
        self.cpu = driver.cpu
        self.pid = pid
        self._bases: list[int] = []
        self._ends: list[int] = []
        self._noexec: set[int] = set()
        self._fds: dict[int, _OpenFile] = {}
        self._next_fd = 3
        self.vmas: list[Vma] = []
        self._next_map = USER_MMAP_BASE
        self.read_implies_exec = False
        self.ptes: dict[int, int] = {}
        """The page tables of enclave mappings: page address → protection of the PTE (only
        pages the fault handler has mapped; see :mod:`sgxlaunch.driver.vma`)."""
        self._suspended: dict[int, tuple[Enclave, EnclaveThread]] = {}
        self._last_vma: Vma | None = None

    # -- memory ----------------------------------------------------------------------------

    def alloc(self, size: int, *, noexec: bool = False) -> int:
        """Map ``size`` bytes of zeroed, page-aligned user memory; returns its address.

        ``noexec`` models memory from a ``noexec`` mount (ADD_PAGES from it fails, EACCES).
        """
        size = (size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        base = self.cpu.allocate(size)
        i = bisect.bisect_left(self._bases, base)
        self._bases.insert(i, base)
        self._ends.insert(i, base + size)
        if noexec:
            self._noexec.add(base)
        return base

    def free(self, address: int) -> None:
        """Unmap user memory made by :meth:`alloc`."""
        i = bisect.bisect_left(self._bases, address)
        if i == len(self._bases) or self._bases[i] != address:
            raise UsageError(f"no user mapping starts at 0x{address:x}")
        del self._bases[i]
        del self._ends[i]
        self._noexec.discard(address)
        self.cpu.release(address)

    def _mapping(self, address: int, length: int) -> int | None:
        i = bisect.bisect_right(self._bases, address) - 1
        if i >= 0 and address + length <= self._ends[i]:
            return self._bases[i]
        return None

    def write(self, address: int, data: bytes | bytearray | memoryview) -> None:
        """Store into the process's own memory (a user-space write)."""
        if self._mapping(address, len(data)) is None:
            raise UsageError(f"SIGSEGV: write to unmapped user address 0x{address:x}")
        self.cpu.write(address, data)

    def read(self, address: int, length: int) -> bytes:
        """Load from the process's own memory (a user-space read)."""
        if self._mapping(address, length) is None:
            raise UsageError(f"SIGSEGV: read from unmapped user address 0x{address:x}")
        return self.cpu.read(address, length)

    def copy_from_user(self, address: int, length: int) -> bytes:
        """The kernel reading an argument; EFAULT if the range is not this process's memory."""
        if self._mapping(address, length) is None:
            raise DriverError(errno.EFAULT, f"bad user address 0x{address:x} (+{length})")
        return self.cpu.read(address, length)

    def copy_to_user(self, address: int, data: bytes) -> None:
        """The kernel writing a result back; EFAULT if not this process's memory."""
        if self._mapping(address, len(data)) is None:
            raise DriverError(errno.EFAULT, f"bad user address 0x{address:x} (+{len(data)})")
        self.cpu.write(address, data)

    def source_range_ok(self, address: int, length: int) -> bool:
        """True when the whole range lies in one mapped, exec-capable region (fast path)."""
        base = self._mapping(address, length)
        return base is not None and base not in self._noexec

    def check_source_page(self, address: int) -> None:
        """ADD_PAGES' source checks: mapped (EFAULT) and not from a noexec mount (EACCES)."""
        base = self._mapping(address, PAGE_SIZE)
        if base is None:
            raise DriverError(errno.EFAULT, f"source page 0x{address:x} is not mapped")
        if base in self._noexec:
            raise DriverError(errno.EACCES, "source page comes from a noexec mapping")

    # -- files -----------------------------------------------------------------------------

    def open(self, path: str) -> int:
        """open(2) of an SGX device.

        Raises:
            DriverError: ENOENT for an unknown path, or when SGX is disabled (mainline does
                not create the devices without writable launch-key MSRs).
        """
        if path not in (DEV_SGX_ENCLAVE, DEV_SGX_PROVISION):
            raise DriverError(errno.ENOENT, f"{path}: no such device")
        if not self.driver.devices_present:
            raise DriverError(
                errno.ENOENT,
                f"{path}: SGX disabled: launch control is locked by firmware and no owner "
                "launch enclave is configured",
            )
        fd = self._next_fd
        self._next_fd += 1
        enclave = self.driver.new_enclave() if path == DEV_SGX_ENCLAVE else None
        self._fds[fd] = _OpenFile(path, enclave)
        return fd

    def close(self, fd: int) -> None:
        """close(2): releasing the enclave EREMOVEs its pages (once no mapping uses it)."""
        entry = self._fds.pop(fd, None)
        if entry is None:
            raise DriverError(errno.EBADF, f"fd {fd} is not open")
        entry.users -= 1
        enclave = entry.enclave
        if (
            enclave is not None
            and not entry.users
            and not any(v.enclave is enclave for v in self.vmas)
        ):
            self._abandon(enclave)
            self.driver.release(enclave)

    def send_fd(self, fd: int, to: Process) -> int:
        """Pass ``fd`` to process ``to`` (SCM_RIGHTS, or the table a child inherits): the same
        open file, so ``to`` may map the same enclave. Returns the descriptor's number there.

        Raises:
            DriverError: EBADF for a bad fd.
        """
        entry = self._fds.get(fd)
        if entry is None:
            raise DriverError(errno.EBADF, f"fd {fd} is not open")
        number = to._next_fd
        to._next_fd += 1
        entry.users += 1
        to._fds[number] = entry
        return number

    def is_provision_fd(self, fd: int) -> bool:
        entry = self._fds.get(fd)
        return entry is not None and entry.path == DEV_SGX_PROVISION

    def _enclave_of(self, fd: int) -> Enclave:
        entry = self._fds.get(fd)
        if entry is None:
            raise DriverError(errno.EBADF, f"fd {fd} is not open")
        if entry.enclave is None:
            raise DriverError(ENOIOCTLCMD, f"{entry.path} has no ioctls")
        return entry.enclave

    def ioctl(self, fd: int, cmd: int, arg: int) -> int:
        """ioctl(2). The VFS turns the driver's ENOIOCTLCMD into ENOTTY."""
        try:
            return self.driver.ioctl(self, self._enclave_of(fd), cmd, arg)
        except DriverError as exc:
            if exc.errno == ENOIOCTLCMD:
                raise DriverError(errno.ENOTTY, exc.message.split(": ", 1)[-1]) from None
            raise

    # -- mappings --------------------------------------------------------------------------

    def _may_map(
        self, enclave: Enclave, start: int, end: int, prot: int, syscall: str = "mmap"
    ) -> None:
        may_map(
            enclave,
            start,
            end,
            prot,
            read_implies_exec=self.read_implies_exec,
            syscall=syscall,
            pid=self.pid,
        )

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int) -> int:
        """mmap(2) of an enclave fd (``addr`` 0 lets the kernel choose).

        With MAP_FIXED the new mapping replaces whatever the range held (its PTEs go).

        Raises:
            DriverError: EINVAL for MAP_PRIVATE, a zero or unaligned length/address; EACCES
                per :meth:`_may_map`; EBADF for a bad fd.
        """
        enclave = self._enclave_of(fd)
        if flags & MAP_PRIVATE or not flags & MAP_SHARED:
            raise DriverError(errno.EINVAL, "enclave mappings must be MAP_SHARED")
        if not length or addr & (PAGE_SIZE - 1):
            raise DriverError(errno.EINVAL, "mmap needs a non-zero length and aligned address")
        length = (length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        if addr == 0:
            addr = self._next_map
            self._next_map += length + PAGE_SIZE
        self._may_map(enclave, addr, addr + length, prot)
        if prot & PROT_WRITE:
            revoke_linear(enclave, addr, addr + length)  # W^X: a writable mapping ends grants
        if prot & PROT_EXEC:  # the owner's record of dynamic executable mappings
            dynamic.note_map(enclave, addr, addr + length, prot, syscall="mmap", pid=self.pid)
        if flags & MAP_FIXED:
            self.munmap(addr, length)
        self.vmas.append(Vma(addr, addr + length, prot, enclave))
        self.vmas.sort(key=lambda v: v.start)
        self._last_vma = None
        if self not in enclave.mm_list:
            enclave.mm_list.append(self)
        return addr

    def reserve(self, size: int) -> int:
        """A free, ``size``-aligned range of virtual addresses for an enclave's ELRANGE."""
        base = (self._next_map + size - 1) & ~(size - 1)
        self._next_map = base + size + PAGE_SIZE
        return base

    def _split(self, addr: int, end: int) -> list[Vma]:
        """Split VMAs at ``addr`` and ``end``; the VMAs now inside ``[addr, end)``."""
        self._last_vma = None
        out: list[Vma] = []
        inside: list[Vma] = []
        for v in self.vmas:
            if v.end <= addr or end <= v.start:
                out.append(v)
                continue
            if v.start < addr:
                out.append(Vma(v.start, addr, v.prot, v.enclave))
            middle = Vma(max(v.start, addr), min(v.end, end), v.prot, v.enclave)
            out.append(middle)
            inside.append(middle)
            if end < v.end:
                out.append(Vma(end, v.end, v.prot, v.enclave))
        self.vmas = out
        return inside

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        """mprotect(2) on enclave mappings: the same checks as mmap (sgx_vma_mprotect), then
        the VMAs in the range (split at its ends) and their present PTEs take ``prot``."""
        end = addr + ((length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))
        touched = [v for v in self.vmas if v.start < end and addr < v.end]
        if not touched:
            raise DriverError(errno.ENOMEM, "mprotect of an unmapped range")
        for vma in touched:
            self._may_map(vma.enclave, max(addr, vma.start), min(end, vma.end), prot, "mprotect")
        if prot & PROT_WRITE:  # W^X in every mm: making a granted page writable ends its grant
            for vma in touched:
                revoke_linear(vma.enclave, max(addr, vma.start), min(end, vma.end))
        if prot & PROT_EXEC:  # every check passed: record dynamic executable mappings
            for vma in touched:
                dynamic.note_map(
                    vma.enclave,
                    max(addr, vma.start),
                    min(end, vma.end),
                    prot,
                    syscall="mprotect",
                    pid=self.pid,
                )
        for vma in self._split(addr, end):
            vma.prot = prot
        for page in self._pte_pages(addr, end):
            if prot & (PROT_READ | PROT_WRITE | PROT_EXEC):
                self.ptes[page] = prot
            else:
                del self.ptes[page]

    def munmap(self, addr: int, length: int) -> None:
        """Remove enclave mappings overlapping the range (and their PTEs)."""
        end = addr + ((length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))
        inside = self._split(addr, end)
        self.vmas = [v for v in self.vmas if not any(v is i for i in inside)]
        self.zap(addr, end)

    # -- page tables (the kernel's side of the mm) -------------------------------------------

    def _pte_pages(self, start: int, end: int) -> list[int]:
        ptes = self.ptes
        if (end - start) // PAGE_SIZE <= len(ptes):
            return [a for a in range(start, end, PAGE_SIZE) if a in ptes]
        return [a for a in ptes if start <= a < end]

    def zap(self, start: int, end: int) -> None:
        """Remove the PTEs of ``[start, end)`` (zap_vma_ptes)."""
        for page in self._pte_pages(start, end):
            del self.ptes[page]

    def find_vma(self, address: int) -> tuple[int, Enclave] | None:
        """``(prot, enclave)`` of the enclave mapping covering ``address``."""
        last = self._last_vma
        if last is not None and last.start <= address < last.end:
            return last.prot, last.enclave
        for v in self.vmas:
            if v.start <= address < v.end:
                self._last_vma = v
                return v.prot, v.enclave
        return None

    # -- running enclave code --------------------------------------------------------------

    def ecall(self, tcs_address: int, function: int = 0, data: bytes = b"") -> bytes:
        """EENTER on the TCS at linear address ``tcs_address`` (which must be mapped).

        The TCS page is made resident first (as the kernel's fault handler would when EENTER
        faults on it) and pinned for the duration of the call.

        Raises:
            DriverError: EFAULT when the address is not mapped to an enclave TCS.
        """
        last = self._last_vma  # find_vma's first step, inlined (repeated ECALLs on one TCS)
        if last is not None and last.start <= tcs_address < last.end:
            return self.driver.enter(self, last.enclave, tcs_address, function, data)
        found = self.find_vma(tcs_address)
        if found is None:
            raise DriverError(errno.EFAULT, f"SIGSEGV: 0x{tcs_address:x} is not mapped")
        return self.driver.enter(self, found[1], tcs_address, function, data)

    def vdso_sgx_enter_enclave(self, leaf: int, run: EnclaveRun, data: bytes = b"") -> int:
        """``__vdso_sgx_enter_enclave`` (:mod:`sgxlaunch.driver.vdso`): EENTER on ``run.tcs``
        with ``data`` as the ECALL's input, or ERESUME of the call an exception report left
        on ``run.tcs``. Returns 0 with ``run`` describing the exit: EEXIT (``run.output``) or
        an exception report (``run.function = ERESUME``, vector 14, error code, address).

        Raises:
            DriverError: EINVAL for a leaf other than EENTER/ERESUME; EFAULT when the TCS is
                not mapped or EENTER itself faults; for ERESUME with no reported exception on
                that TCS, EFAULT (ERESUME #GPs: CSSA is 0).
        """
        tcs = run.tcs
        if leaf == ERESUME:
            parked = self._suspended.pop(tcs, None)
            if parked is None:
                raise DriverError(errno.EFAULT, f"ERESUME on TCS 0x{tcs:x}: no AEX to resume")
            enclave, thread = parked
            if thread.resume(run):
                self._suspended[tcs] = (enclave, thread)
            return 0
        if leaf != EENTER:
            raise DriverError(errno.EINVAL, f"vDSO leaf {leaf} is not EENTER or ERESUME")
        vma = next((v for v in self.vmas if v.start <= tcs < v.end), None)
        if vma is None:
            raise DriverError(errno.EFAULT, f"SIGSEGV: 0x{tcs:x} is not mapped")
        enclave = vma.enclave
        driver = self.driver

        def body(deliver: Callable[[int, int], bool]) -> bytes:
            return driver.enter(self, enclave, tcs, 0, data, deliver)

        thread = EnclaveThread(body)
        if thread.start(run):
            self._suspended[tcs] = (enclave, thread)
        return 0

    def _abandon(self, enclave: Enclave) -> None:
        """End every vDSO call of ``enclave`` left parked on an exception report."""
        for tcs, (owner, thread) in list(self._suspended.items()):
            if owner is enclave:
                del self._suspended[tcs]
                thread.abandon()

    def touch(self, address: int, *, write: bool = False) -> None:
        """A load (or store) by ordinary code at an enclave mapping, for its page-fault side
        effect: the page is faulted in (an evicted page reloaded, a hole EAUGed on an SGX2
        part). The value read is the abort page's and is not returned.

        Raises:
            DriverError: EFAULT for the SIGSEGV (no mapping, protection) or SIGBUS (no page
                and no EAUG, ``vm_max_prot_bits`` exceeded) the access gets.
        """
        vma = next((v for v in self.vmas if v.start <= address < v.end), None)
        if vma is None:
            raise DriverError(errno.EFAULT, f"SIGSEGV: 0x{address:x} is not mapped")
        self.driver.user_fault(self, vma.enclave, address, write)

    def debug_read(self, address: int, length: int) -> bytes:
        """Read a debug enclave's memory through EDBGRD (the ptrace path, sgx_vma_access).

        Any alignment and length; evicted pages are reloaded first. EFAULT for a non-debug
        enclave (before any EDBGRD) or an address outside an enclave mapping.
        """
        return self._debug_access(address, length, None)

    def debug_write(self, address: int, data: bytes) -> None:
        """Write a debug enclave's memory: EDBGRD, merge, EDBGWR per 8-byte word."""
        self._debug_access(address, len(data), bytes(data))

    def _debug_access(self, address: int, length: int, data: bytes | None) -> bytes:
        vma = next((v for v in self.vmas if v.start <= address < v.end), None)
        if vma is None or address + length > vma.end:
            raise DriverError(errno.EFAULT, f"0x{address:x} is not in an enclave mapping")
        return self.driver.access(vma.enclave, address, length, data)
