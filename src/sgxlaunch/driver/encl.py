"""``struct sgx_encl`` and its pages (mainline ``encl.h``), and the mapping check ``may_map``.

Data only, plus the one check that needs nothing but the data (``sgx_encl_may_map``). The EPC
side of a page's life is :mod:`sgxlaunch.driver.epc`; faults and ptrace access are
:mod:`sgxlaunch.driver.vma`; the ioctls that build an enclave are :mod:`sgxlaunch.driver.ioctl`.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from sgxlaunch.arch.constants import PAGE_SIZE, AttributeFlag
from sgxlaunch.driver.uapi import PROT_EXEC, PROT_READ, PROT_WRITE, DriverError

# Kernel policy masks (arch/x86/include/asm/sgx.h, spec §1.1).
SGX_ATTR_UNPRIV_MASK = (
    AttributeFlag.DEBUG | AttributeFlag.MODE64BIT | AttributeFlag.KSS | AttributeFlag.AEXNOTIFY
)
SGX_ATTR_PRIV_MASK = AttributeFlag.PROVISIONKEY | AttributeFlag.EINITTOKEN_KEY
SGX_VA_SLOT_COUNT = 512


@dataclass(slots=True)
class EnclPage:
    """One enclave page as the driver tracks it (``struct sgx_encl_page``).

    Attributes:
        offset: page offset in the enclave.
        max_prot: the PROT_* bits mmap/mprotect may grant (from SECINFO; TCS = RW).
        page_type: REG or TCS.
        epc: EPC address while resident, else ``None``.
        backing: (encrypted contents, PCMD) while evicted.
        va_slot: the VA slot holding the version while evicted.
    """

    offset: int
    max_prot: int
    page_type: int
    epc: int | None = None
    backing: tuple[bytes, bytes] | None = None
    va_slot: int = 0


@dataclass(slots=True)
class VaPage:
    """``struct sgx_va_page``: an EPC page of version slots and which slots are taken."""

    epc: int
    used: bytearray = field(default_factory=lambda: bytearray(SGX_VA_SLOT_COUNT))


@dataclass(eq=False, slots=True)
class Enclave:
    """``struct sgx_encl``: one per open ``/dev/sgx_enclave``."""

    eid: int
    created: bool = False
    initialized: bool = False
    busy: bool = False
    dead: bool = False
    secs_epc: int = 0
    base: int = 0
    size: int = 0
    attributes: int = 0
    xfrm: int = 0
    attributes_mask: int = int(SGX_ATTR_UNPRIV_MASK)
    pages: dict[int, EnclPage] = field(default_factory=dict)
    va_pages: list[VaPage] = field(default_factory=list)
    mrenclave: bytes = b""
    mrsigner: bytes = b""

    @property
    def debug(self) -> bool:
        """SECS.ATTRIBUTES.DEBUG as requested at ECREATE."""
        return bool(self.attributes & AttributeFlag.DEBUG)


def may_map(enclave: Enclave, start: int, end: int, prot: int, *, read_implies_exec: bool) -> None:
    """sgx_encl_may_map: READ_IMPLIES_EXEC, ELRANGE after INIT, each page's max protection.

    Raises:
        DriverError: EACCES for each of the three checks, in that order.
    """
    if read_implies_exec:
        raise DriverError(errno.EACCES, "READ_IMPLIES_EXEC personality")
    if enclave.initialized and (start < enclave.base or end > enclave.base + enclave.size):
        raise DriverError(errno.EACCES, "the mapping leaves the enclave's range")
    want = prot & (PROT_READ | PROT_WRITE | PROT_EXEC)
    pages = enclave.pages
    base = enclave.base
    for address in range(start, end, PAGE_SIZE):
        page = pages.get(address - base)
        if page is not None and want & ~page.max_prot:
            raise DriverError(
                errno.EACCES,
                f"page 0x{address - enclave.base:x} does not allow protection 0x{prot:x}",
            )
