"""Enclave memory as a process touches it (mainline ``encl.c``'s ``vm_operations_struct``).

The page-fault handler (``sgx_vma_fault``: reload an evicted page), the entry path (the TCS
made resident and pinned for the ECALL), and ptrace access (``sgx_vma_access``: EDBGRD /
EDBGWR on a debug enclave).
"""

from __future__ import annotations

import errno

from sgxlaunch.arch.constants import PAGE_SIZE, SgxStatus
from sgxlaunch.cpu import CpuFault, Processor
from sgxlaunch.driver.encl import Enclave
from sgxlaunch.driver.epc import EpcPool
from sgxlaunch.driver.uapi import DriverError


class EnclaveVm:
    """The enclaves by SECS page, and the fault, entry and ptrace paths over them.

    Attributes:
        by_secs: every created enclave, keyed by the EPC address of its SECS.
    """

    def __init__(self, cpu: Processor, pool: EpcPool) -> None:
        self.cpu = cpu
        self.pool = pool
        self.by_secs: dict[int, Enclave] = {}

    def page_fault(self, secs: int, linaddr: int) -> bool:
        """The #PF handler for enclave accesses: reload an evicted page, then retry."""
        enclave = self.by_secs.get(secs)
        if enclave is None:
            return False
        page = enclave.pages.get((linaddr - enclave.base) & ~(PAGE_SIZE - 1))
        if page is None or page.epc is not None:
            return False
        self.pool.reload(enclave, page)
        return True

    def enter(self, enclave: Enclave, tcs_address: int, function: int, data: bytes) -> bytes:
        """EENTER on the TCS at ``tcs_address``, made resident and pinned for the call.

        Raises:
            DriverError: EFAULT when no enclave page is there or the enclave faults.
        """
        page = enclave.pages.get(tcs_address - enclave.base)
        if page is None:
            raise DriverError(errno.EFAULT, f"SIGSEGV: no enclave page at 0x{tcs_address:x}")
        pool = self.pool
        epc = pool.resident(enclave, page)
        pool.pin(enclave, page)
        try:
            return self.cpu.eenter(epc, function, data)
        except CpuFault as exc:
            raise DriverError(errno.EFAULT, f"SIGSEGV in enclave: {exc}") from None
        finally:
            pool.unpin(enclave, page)

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
