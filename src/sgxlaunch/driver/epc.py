"""The EPC allocator and reclaimer (mainline ``main.c``: ``sgx_alloc_epc_page``, ksgxd).

:class:`EpcPool` owns the free list of EPC pages, the LRU of reclaimable enclave pages, the VA
slots, and the write-back (EBLOCK → ETRACK → EWB) and reload (ELDU) of enclave pages. It
reaches the processor only through leaf calls and physical memory, with the kernel scratch
pages of :class:`KernelScratch`.
"""

from __future__ import annotations

import errno
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sgxlaunch.arch.constants import PAGE_SIZE, SgxStatus
from sgxlaunch.cpu import CpuFault, Processor
from sgxlaunch.driver.encl import SGX_VA_SLOT_COUNT, Enclave, EnclPage, VaPage
from sgxlaunch.driver.uapi import DriverError

RECLAIM_BATCH = 16
"""Pages written back per reclaim pass (mainline ``SGX_NR_TO_SCAN``)."""

PAGEINFO = struct.Struct("<4Q")


@dataclass(frozen=True, slots=True)
class KernelScratch:
    """Kernel memory for leaf operands: one page each for PAGEINFO, SECINFO, PCMD, contents,
    the SIGSTRUCT (token at +2048, as mainline puts it at PAGE_SIZE / 2) and the SECS."""

    pageinfo: int
    secinfo: int
    pcmd: int
    contents: int
    sigpage: int
    secs: int

    @classmethod
    def allocate(cls, cpu: Processor) -> KernelScratch:
        return cls(
            pageinfo=cpu.allocate(64),
            secinfo=cpu.allocate(64),
            pcmd=cpu.allocate(128),
            contents=cpu.allocate(PAGE_SIZE),
            sigpage=cpu.allocate(PAGE_SIZE),
            secs=cpu.allocate(PAGE_SIZE),
        )


def encls(leaf: Callable[..., SgxStatus], *args: int) -> SgxStatus:
    """Run an ENCLS leaf; a modelled fault becomes EIO (the kernel's ENCLS_FAULT path)."""
    try:
        return leaf(*args)
    except CpuFault as exc:
        raise DriverError(errno.EIO, f"{leaf.__name__.upper()} faulted: {exc}") from None


class EpcPool:
    """The EPC page allocator, the reclaimer and the VA slots.

    Attributes:
        free_list: free EPC page addresses (popped from the end).
        lru: reclaimable resident pages, least recently used first, keyed (eid, offset).
        evictions / reloads: pages written back / loaded back so far.
    """

    def __init__(self, cpu: Processor, scratch: KernelScratch) -> None:
        self.cpu = cpu
        self.scratch = scratch
        self.free_list: list[int] = [cpu.epc_address(i) for i in range(cpu.epc_pages - 1, -1, -1)]
        self.lru: OrderedDict[tuple[int, int], tuple[Enclave, EnclPage]] = OrderedDict()
        self._pinned: set[tuple[int, int]] = set()
        self.evictions = 0
        self.reloads = 0

    # -- allocation ------------------------------------------------------------------------

    def alloc(self, *, reclaim: bool = True) -> int:
        """sgx_alloc_epc_page: a free page, reclaiming a batch first when none is left.

        Raises:
            DriverError: ENOMEM when nothing is free and nothing can be reclaimed.
        """
        if not self.free_list and reclaim:
            self.reclaim(RECLAIM_BATCH)
        if not self.free_list:
            raise DriverError(errno.ENOMEM, "no free EPC page and nothing left to reclaim")
        return self.free_list.pop()

    def free(self, epc: int) -> None:
        self.free_list.append(epc)

    def touch(self, enclave: Enclave, page: EnclPage) -> None:
        """Mark ``page`` most recently used (adding it to the LRU if it was not there)."""
        key = (enclave.eid, page.offset)
        lru = self.lru
        if key in lru:
            lru.move_to_end(key)
        else:
            lru[key] = (enclave, page)

    def pin(self, enclave: Enclave, page: EnclPage) -> None:
        """Keep a resident page from being reclaimed (the TCS of a running ECALL)."""
        self._pinned.add((enclave.eid, page.offset))

    def unpin(self, enclave: Enclave, page: EnclPage) -> None:
        self._pinned.discard((enclave.eid, page.offset))

    def pin_resident(self, enclave: Enclave, page: EnclPage, key: tuple[int, int]) -> int:
        """:meth:`resident` then :meth:`pin` in one step, for the ECALL path; ``key`` is
        ``(enclave.eid, page.offset)``, which :meth:`unpin_key` takes afterwards."""
        epc = page.epc
        if epc is None:
            self.reload(enclave, page)
            epc = page.epc
            assert epc is not None
        else:
            try:
                self.lru.move_to_end(key)
            except KeyError:
                self.lru[key] = (enclave, page)
        self._pinned.add(key)
        return epc

    def unpin_key(self, key: tuple[int, int]) -> None:
        """:meth:`unpin` by the key :meth:`pin_resident` took."""
        self._pinned.discard(key)

    # -- VA slots --------------------------------------------------------------------------

    def va_slot(self, enclave: Enclave) -> int:
        for va in enclave.va_pages:
            slot = va.used.find(0)
            if slot >= 0:
                va.used[slot] = 1
                return va.epc + 8 * slot
        raise DriverError(errno.ENOMEM, "no free VA slot")  # pragma: no cover - grown on add

    def release_va_slot(self, enclave: Enclave, address: int) -> None:
        for va in enclave.va_pages:
            if va.epc <= address < va.epc + PAGE_SIZE:
                va.used[(address - va.epc) // 8] = 0
                return

    def grow_for(self, enclave: Enclave, pages: int) -> None:
        """sgx_encl_grow: one VA page per 512 enclave pages, allocated before they are needed."""
        needed = (pages + SGX_VA_SLOT_COUNT - 1) // SGX_VA_SLOT_COUNT
        while len(enclave.va_pages) < needed:
            epc = self.alloc()
            encls(self.cpu.epa, epc)
            enclave.va_pages.append(VaPage(epc))

    # -- write-back and reload -------------------------------------------------------------

    def reclaim(self, count: int) -> None:
        """Write back up to ``count`` least-recently-used pages: their PTEs zapped, EBLOCK,
        ETRACK, EWB."""
        victims: list[tuple[Enclave, EnclPage]] = []
        skipped = []
        while self.lru and len(victims) < count:
            key, entry = self.lru.popitem(last=False)
            if key in self._pinned:
                skipped.append((key, entry))
                continue
            victims.append(entry)
        for key, entry in reversed(skipped):  # pinned pages stay, as most recently used
            self.lru[key] = entry
        if not victims:
            return
        cpu = self.cpu
        enclaves: dict[int, Enclave] = {}
        for enclave, page in victims:
            assert page.epc is not None
            linaddr = enclave.base + page.offset  # sgx_reclaimer_block: zap, then EBLOCK
            enclave.zap(linaddr, linaddr + PAGE_SIZE)
            encls(cpu.eblock, page.epc)
            enclaves[enclave.eid] = enclave
        for enclave in enclaves.values():
            encls(cpu.etrack, enclave.secs_epc)
        for enclave, page in victims:
            self._writeback(enclave, page)

    def _writeback(self, enclave: Enclave, page: EnclPage) -> None:
        cpu = self.cpu
        k = self.scratch
        assert page.epc is not None
        slot = self.va_slot(enclave)
        cpu.write(k.pageinfo, PAGEINFO.pack(0, k.contents, k.pcmd, 0))
        status = encls(cpu.ewb, k.pageinfo, page.epc, slot)
        if status == SgxStatus.NOT_TRACKED:
            # Threads of the old epoch are gone once they exit; track again and retry.
            encls(cpu.etrack, enclave.secs_epc)
            status = encls(cpu.ewb, k.pageinfo, page.epc, slot)
        if status != SgxStatus.SUCCESS:
            self.release_va_slot(enclave, slot)
            raise DriverError(errno.EIO, f"EWB failed with {status.name}", status=status)
        page.backing = (cpu.read(k.contents, PAGE_SIZE), cpu.read(k.pcmd, 128))
        page.va_slot = slot
        self.free(page.epc)
        page.epc = None
        self.evictions += 1

    def reload(self, enclave: Enclave, page: EnclPage) -> None:
        """ELDU a written-back page (sgx_encl_load_page).

        Raises:
            DriverError: EFAULT when ELDU refuses the backing (a tampered or replayed page).
        """
        cpu = self.cpu
        k = self.scratch
        assert page.backing is not None
        key = (enclave.eid, page.offset)
        self._pinned.add(key)
        try:
            epc = self.alloc()
        finally:
            self._pinned.discard(key)
        contents, pcmd = page.backing
        cpu.write(k.contents, contents)
        cpu.write(k.pcmd, pcmd)
        linaddr = enclave.base + page.offset
        cpu.write(k.pageinfo, PAGEINFO.pack(linaddr, k.contents, k.pcmd, enclave.secs_epc))
        status = encls(cpu.eldu, k.pageinfo, epc, page.va_slot)
        if status != SgxStatus.SUCCESS:
            self.free(epc)
            raise DriverError(
                errno.EFAULT,
                f"ELDU of page 0x{page.offset:x} failed with {status.name}",
                status=status,
            )
        self.release_va_slot(enclave, page.va_slot)
        page.epc = epc
        page.backing = None
        page.va_slot = 0
        self.touch(enclave, page)
        self.reloads += 1

    def resident(self, enclave: Enclave, page: EnclPage) -> int:
        """The EPC address of ``page``, reloading it if it was written back."""
        if page.epc is None:
            self.reload(enclave, page)
        else:
            self.touch(enclave, page)
        assert page.epc is not None
        return page.epc

    # -- enclave lifetime --------------------------------------------------------------------

    def release(self, enclave: Enclave) -> None:
        """sgx_encl_release: EREMOVE every page, then the VA pages and the SECS."""
        cpu = self.cpu
        for page in enclave.pages.values():
            self.lru.pop((enclave.eid, page.offset), None)
            if page.epc is not None:
                cpu.eremove(page.epc)
                self.free(page.epc)
                page.epc = None
        for va in enclave.va_pages:
            cpu.eremove(va.epc)
            self.free(va.epc)
        enclave.va_pages.clear()
        if enclave.created:
            cpu.eremove(enclave.secs_epc)
            self.free(enclave.secs_epc)
        enclave.pages.clear()
        enclave.dead = True
