"""Enclave memory as a process touches it (mainline ``encl.c``'s ``vm_operations_struct``).

The page tables of the calling process as the processor walks them (:meth:`EnclaveVm.walk`),
the page-fault path (:meth:`EnclaveVm.fault`: the generic x86 ``access_error`` checks, then
``sgx_vma_fault``: reload an evicted page, or on an SGX2 part EAUG a page where the enclave has
none), the entry path (the TCS made resident and pinned for the ECALL), and ptrace access
(``sgx_vma_access``: EDBGRD / EDBGWR on a debug enclave).

Page tables are modelled per process as one PTE per enclave page, holding the VMA's
protection when the fault handler installed it (``vmf_insert_pfn`` uses ``vma->vm_page_prot``:
the kernel never narrows a PTE to follow EPCM permissions, spec §6.5); ``mprotect`` changes
them, ``munmap`` and the driver's zaps (eviction, REMOVE_PAGES, MODIFY_TYPES to TCS) remove
them. Which process runs is per thread (:attr:`EnclaveVm.current`).
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from typing import Any, Protocol

from sgxlaunch.arch.constants import PAGE_SIZE, PageType, SgxStatus
from sgxlaunch.cpu import CpuFault, Processor
from sgxlaunch.driver import dynamic
from sgxlaunch.driver.encl import SGX_VA_SLOT_COUNT, Enclave, EnclPage
from sgxlaunch.driver.epc import PAGEINFO, EpcPool
from sgxlaunch.driver.grants import revoke_linear
from sgxlaunch.driver.owner import DynamicMemory
from sgxlaunch.driver.uapi import (
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    X86_PF_INSTR,
    X86_PF_PROT,
    X86_PF_SGX,
    X86_PF_USER,
    X86_PF_WRITE,
    DriverError,
)

ACCESS_READ = 1
ACCESS_WRITE = 2
ACCESS_FETCH = 16
"""What an enclave access asks of the page tables (the processor's ``walk`` argument)."""

_PAGE_MASK = ~(PAGE_SIZE - 1)
_PT_REG = int(PageType.REG)
_LEVEL_NONE = int(DynamicMemory.NONE)
_LEVEL_CODE = int(DynamicMemory.CODE)
_pack_pageinfo = PAGEINFO.pack
_RW = PROT_READ | PROT_WRITE
_RWX = _RW | PROT_EXEC
_NEED = {ACCESS_READ: PROT_READ, ACCESS_WRITE: PROT_WRITE, ACCESS_FETCH: PROT_EXEC}
_CODE = {
    ACCESS_READ: X86_PF_USER,
    ACCESS_WRITE: X86_PF_USER | X86_PF_WRITE,
    ACCESS_FETCH: X86_PF_USER | X86_PF_INSTR,
}


def _access_error(found: tuple[int, Enclave] | None, enclave: Enclave, error_code: int) -> bool:
    """arch/x86/mm/fault.c ``access_error`` for a fault on ``enclave``'s range, given the VMA
    there (``(prot, enclave)`` or ``None``): True sends the fault to user space."""
    if error_code & X86_PF_SGX or found is None or found[1] is not enclave:
        return True
    prot = found[0]
    if error_code & X86_PF_WRITE:
        return not prot & PROT_WRITE
    if error_code & X86_PF_INSTR:
        return not prot & PROT_EXEC
    if error_code & X86_PF_PROT:
        return True
    return not prot & _RWX


class UserMm(Protocol):
    """A process's address space as the fault path sees it: its page tables (``ptes``: page
    address → protection of a present PTE) and its enclave VMAs."""

    ptes: dict[int, int]
    pid: int

    def find_vma(self, address: int) -> tuple[int, Enclave] | None:
        """``(prot, enclave)`` of the enclave VMA covering ``address``, else ``None``."""
        ...


Deliver = Callable[[int, int], bool]
"""``deliver(error_code, address) -> resume``: a fault the kernel does not fix goes to user
space. The vDSO's exception fixup reports it and may come back with ERESUME (True, the access
is retried); without it the thread gets the signal and the ECALL ends (False)."""


class _Current(threading.local):
    mm: UserMm | None = None
    deliver: Deliver | None = None


class EnclaveVm:
    """The enclaves by SECS page, and the paging, fault, entry and ptrace paths over them.

    Attributes:
        by_secs: every created enclave, keyed by the EPC address of its SECS.
        current: per thread, the process running enclave code and its fault delivery.
        sgx2: the part has SGX2 (CPUID.(12H,0):EAX[1]): faults on holes EAUG.
    """

    def __init__(self, cpu: Processor, pool: EpcPool) -> None:
        self.cpu = cpu
        self.pool = pool
        self.by_secs: dict[int, Enclave] = {}
        self.current = _Current()
        self.sgx2 = bool(cpu.cpuid(0x12, 0)[0] & 0x2)
        self._pageinfo = pool.scratch.pageinfo

    # -- the page tables the processor walks --------------------------------------------------

    def walk(self, secs: int, linaddr: int, access: int) -> int:
        """The paging check of an enclave access: 0 when the PTE allows it, else the #PF
        error code (P when a PTE is present, W for a write, I for a fetch; U always).

        Without a process context (a leaf driven directly, no ``enter``) nothing is checked.
        """
        mm = self.current.mm
        if mm is None:
            return 0
        prot = mm.ptes.get(linaddr & _PAGE_MASK)
        if prot is not None and prot & _NEED[access]:
            return 0
        code = _CODE[access]
        return code if prot is None else code | X86_PF_PROT

    def current_ptes(self) -> dict[int, int] | None:
        """The PTEs :meth:`walk` reads for this thread (``None`` without a process context,
        where it passes everything): the processor's inline translation reads them directly
        (:class:`~sgxlaunch.cpu.enclave.PteMmu`); PROT_READ/WRITE/EXEC are R 1, W 2, X 4."""
        mm = self.current.mm
        return None if mm is None else mm.ptes

    # -- the #PF path ------------------------------------------------------------------------

    def fault(self, secs: int, linaddr: int, error_code: int) -> bool:
        """A #PF taken by enclave code (the thread has left the enclave: AEX).

        Order as Linux: ``access_error`` (arch/x86/mm/fault.c) first — an EPCM fault (the SGX
        bit), no enclave VMA there, a write to a VMA without VM_WRITE, a fetch from one without
        VM_EXEC, a protection fault on a read, or a read of an inaccessible VMA go to user space
        (SIGSEGV, or the vDSO's report); then ``sgx_vma_fault`` for a not-present page, whose
        SIGBUS also goes to user space.

        Returns:
            True to retry the access (the page is now mapped, or user space ERESUMEd after
            handling the report); False to end the ECALL with the fault.
        """
        current = self.current
        mm = current.mm
        enclave = self.by_secs.get(secs)
        if mm is None or enclave is None:
            return self._legacy_fault(enclave, linaddr)
        found = None if error_code & X86_PF_SGX else mm.find_vma(linaddr)
        if _access_error(found, enclave, error_code):
            return self._deliver(error_code, linaddr)
        assert found is not None
        prot = found[0]
        offset = (linaddr - enclave.base) & _PAGE_MASK
        added = offset not in enclave.pages
        try:
            if self.sgx2 and added:
                mapped = self.eaug_page(enclave, offset, mm.pid)
            else:
                mapped = self.vma_fault(enclave, linaddr, prot)
        except DriverError:
            if current.deliver is None:
                raise  # the ECALL ends with the reason (an ELDU the processor refused)
            mapped = False
        if not mapped:
            return self._deliver(error_code, linaddr)
        page = linaddr & _PAGE_MASK
        if prot & PROT_EXEC and enclave.pages[offset].dynamic:
            # Door 3 (owner limits): a dynamic page's PTE is executable only if the policy
            # allows it; a fetch it does not allow faults to user space instead of looping.
            prot = dynamic.pte_prot(enclave, offset, prot, added=added, pid=mm.pid)
            if error_code & X86_PF_INSTR and not prot & PROT_EXEC:
                if prot & PROT_WRITE and enclave.exec_grants:
                    revoke_linear(enclave, page, page + PAGE_SIZE)
                mm.ptes[page] = prot
                dynamic.refuse_fetch(enclave, offset, mm.pid)
                return self._deliver(X86_PF_USER | X86_PF_INSTR | X86_PF_PROT, linaddr)
        if prot & PROT_WRITE and enclave.exec_grants:
            revoke_linear(enclave, page, page + PAGE_SIZE)  # a writable PTE ends the grant
        mm.ptes[page] = prot
        return True

    def user_fault(self, mm: UserMm, enclave: Enclave, linaddr: int, write: bool) -> None:
        """A #PF on an enclave mapping from outside the enclave (a user-space touch): the
        same ``access_error`` and ``sgx_vma_fault`` path, so a hole EAUGs on an SGX2 part and
        the page stays PENDING until the enclave EACCEPTs it (outside reads of enclave memory
        see the abort page either way).

        Raises:
            DriverError: EFAULT for the SIGSEGV / SIGBUS the access gets.
        """
        page = linaddr & _PAGE_MASK
        prot = mm.ptes.get(page)
        access = ACCESS_WRITE if write else ACCESS_READ
        if prot is not None and prot & _NEED[access]:
            return
        code = _CODE[access] | (X86_PF_PROT if prot is not None else 0)
        found = mm.find_vma(linaddr)
        if _access_error(found, enclave, code):
            raise DriverError(errno.EFAULT, f"SIGSEGV at 0x{linaddr:x} (error code 0x{code:x})")
        assert found is not None
        prot = found[0]
        offset = page - enclave.base
        added = offset not in enclave.pages
        if not self.vma_fault(enclave, linaddr, prot, mm.pid):
            raise DriverError(errno.EFAULT, f"SIGBUS at 0x{linaddr:x}")
        if prot & PROT_EXEC and enclave.pages[offset].dynamic:
            prot = dynamic.pte_prot(enclave, offset, prot, added=added, pid=mm.pid)
        if prot & PROT_WRITE and enclave.exec_grants:
            revoke_linear(enclave, page, page + PAGE_SIZE)  # a writable PTE ends the grant
        mm.ptes[page] = prot

    def _deliver(self, error_code: int, linaddr: int) -> bool:
        deliver = self.current.deliver
        if deliver is None:
            return False
        return deliver(error_code, linaddr)

    def page_fault(self, secs: int, linaddr: int) -> bool:
        """The processor's not-present hook without a paging model (``page_fault_handler``):
        reload an evicted page, or EAUG a hole on an SGX2 part."""
        return self._legacy_fault(self.by_secs.get(secs), linaddr)

    def _legacy_fault(self, enclave: Enclave | None, linaddr: int) -> bool:
        """A fault with no process context: reload an evicted page (or EAUG a hole)."""
        if enclave is None:
            return False
        return self.vma_fault(enclave, linaddr, PROT_READ | PROT_WRITE)

    def vma_fault(self, enclave: Enclave, linaddr: int, vma_prot: int, pid: int = 0) -> bool:
        """sgx_vma_fault for a not-present page of a VMA with ``vma_prot``.

        * no page there: on an SGX2 part :meth:`eaug_page`; otherwise SIGBUS (False);
        * ``sgx_encl_load_page_in_vma``: the VMA asks for more than the page's
          ``vm_max_prot_bits`` → SIGBUS; an evicted page is reloaded (ELDU; a refused
          backing raises the reload's :class:`DriverError`, SIGBUS). A dynamic page's X bit is
          left to the PTE (:func:`~sgxlaunch.driver.dynamic.pte_prot`) when the owner's limits
          decide it (door 3: a dynamic page in an executable VMA gets a non-executable PTE,
          not a SIGBUS).
        """
        offset = (linaddr - enclave.base) & _PAGE_MASK
        page = enclave.pages.get(offset)
        if page is None:
            if self.sgx2:
                return self.eaug_page(enclave, offset, pid)
            return False
        wanted = vma_prot & _RWX
        if page.dynamic and dynamic.x_bit_from_policy(enclave):
            wanted &= ~PROT_EXEC
        if page.max_prot & wanted != wanted:
            return False
        if page.epc is None:
            self.pool.reload(enclave, page)  # a refused backing: DriverError (SIGBUS)
        else:
            self.pool.touch(enclave, page)
        return True

    def eaug_page(self, enclave: Enclave, offset: int, pid: int = 0) -> bool:
        """sgx_encl_eaug_page: add a page where the enclave has none (spec §5).

        Uninitialized enclave → SIGBUS; the owner's ``dynamic_memory none`` → SIGBUS
        (:func:`~sgxlaunch.driver.dynamic.eaug_allowed`, recorded); the new page's
        ``vm_max_prot_bits`` is RWX ("the enclave decides the permissions by the means of
        EACCEPT, EACCEPTCOPY and EMODPE") — RW under the owner's ``data`` and
        ``attested-code`` (:func:`~sgxlaunch.driver.dynamic.eaug_max_prot`, door 1);
        a VA slot is grown for it as for EADD; EAUG with PAGEINFO {LINADDR, SRCPGE 0, SECINFO 0,
        SECS}; a faulting EAUG → SIGBUS with the EPC page freed. Mainline allocates with
        ``reclaim = false`` and answers VM_FAULT_NOPAGE when the EPC is full, so the access is
        retried after ksgxd has reclaimed; here the reclaim runs before the allocation, which
        ends in the same place.

        Returns:
            True when the page was added (the access is retried), False for SIGBUS.
        """
        if not enclave.initialized:
            return False
        level = enclave.owner_limits.dynamic_memory
        if level == _LEVEL_NONE:
            return dynamic.eaug_allowed(enclave, offset, pid)  # False, recorded
        pool = self.pool
        pages = enclave.pages
        free = pool.free_list
        try:
            if len(pages) % SGX_VA_SLOT_COUNT == 0:
                pool.grow_for(enclave, len(pages) + 1)
            epc = free.pop() if free else pool.alloc()
        except DriverError:
            return False
        cpu = self.cpu
        pageinfo = self._pageinfo
        cpu.write(pageinfo, _pack_pageinfo(enclave.base + offset, 0, 0, enclave.secs_epc))
        try:
            cpu.eaug(pageinfo, epc)
        except CpuFault:
            pool.free(epc)
            return False
        max_prot = _RWX if level == _LEVEL_CODE else _RW  # dynamic.eaug_max_prot
        page = EnclPage(offset, max_prot, _PT_REG, epc, None, 0, True)
        pages[offset] = page
        enclave.pages_added += 1
        pool.lru[(enclave.eid, offset)] = (enclave, page)
        return True

    # -- entry and ptrace ---------------------------------------------------------------------

    def enter(
        self,
        mm: UserMm | None,
        enclave: Enclave,
        tcs_address: int,
        function: int,
        data: bytes,
        deliver: Deliver | None = None,
    ) -> bytes:
        """EENTER on the TCS at ``tcs_address``, made resident and pinned for the call, with
        ``mm`` as the current address space of this thread.

        Raises:
            DriverError: EFAULT when no enclave page is there or the enclave faults.
        """
        page = enclave.pages.get(tcs_address - enclave.base)
        if page is None:
            raise DriverError(errno.EFAULT, f"SIGSEGV: no enclave page at 0x{tcs_address:x}")
        pool = self.pool
        key = (enclave.eid, page.offset)
        epc = pool.pin_resident(enclave, page, key)
        # this thread's _Current, as its dictionary: one thread-local lookup, not six
        current: dict[str, Any] = self.current.__dict__
        saved_mm = current.get("mm")
        saved_deliver = current.get("deliver")
        current["mm"] = mm
        current["deliver"] = deliver
        try:
            return self.cpu.eenter(epc, function, data)
        except CpuFault as exc:
            raise DriverError(errno.EFAULT, f"SIGSEGV in enclave: {exc}") from None
        finally:
            current["mm"] = saved_mm
            current["deliver"] = saved_deliver
            pool.unpin_key(key)

    def access(self, enclave: Enclave, address: int, length: int, data: bytes | None) -> bytes:
        """sgx_vma_access: read (``data`` None) or write ``length`` bytes at ``address``.

        As mainline: a non-debug enclave → EFAULT before any EDBGRD; then per 8-byte word
        (any alignment and length): EDBGRD, and for a write the new bytes merged in and EDBGWR
        (read-modify-write); a non-zero EDBGRD/EDBGWR status → EIO.

        Raises:
            DriverError: EFAULT (not a debug enclave, or no enclave page there), EIO.
        """
        if not enclave.debug:
            raise DriverError(errno.EFAULT, "ptrace access to a non-debug enclave")
        if data is not None and enclave.exec_grants:
            # A debugger's write is a write like any other (owner extension, docs/driver.md
            # "Attested-code grants"): it ends every grant over the bytes it touches before
            # the first EDBGWR, so no granted page ever holds code the launch enclave did not
            # judge.
            revoke_linear(enclave, address, address + length)
        out = bytearray()
        pos = 0
        while pos < length:
            linaddr = address + pos
            word = linaddr & ~7
            offset = linaddr & 7
            count = min(8 - offset, length - pos)
            page = enclave.pages.get((word - enclave.base) & ~(PAGE_SIZE - 1))
            if page is None:
                raise DriverError(errno.EFAULT, f"no enclave page at 0x{linaddr:x}")
            epc = self.pool.resident(enclave, page) + ((word - enclave.base) & (PAGE_SIZE - 1))
            status, current = self.cpu.edbgrd(epc)
            if status == SgxStatus.SUCCESS and data is not None:
                merged = current[:offset] + data[pos : pos + count] + current[offset + count :]
                status = self.cpu.edbgwr(epc, merged)
            if status != SgxStatus.SUCCESS:
                raise DriverError(errno.EIO, f"EDBGRD/EDBGWR returned {status.name}", status=status)
            if data is None:
                out += current[offset : offset + count]
            pos += count
        return bytes(out)
