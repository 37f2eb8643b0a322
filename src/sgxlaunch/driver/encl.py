"""``struct sgx_encl`` and its pages (mainline ``encl.h``), and the mapping check ``may_map``.

Data only, plus the one check that needs nothing but the data (``sgx_encl_may_map``). The EPC
side of a page's life is :mod:`sgxlaunch.driver.epc`; faults and ptrace access are
:mod:`sgxlaunch.driver.vma`; the ioctls that build an enclave are :mod:`sgxlaunch.driver.ioctl`.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Protocol

from sgxlaunch.arch.constants import PAGE_SIZE, AttributeFlag
from sgxlaunch.driver import dynamic
from sgxlaunch.driver.dynamic import DriverEvents
from sgxlaunch.driver.owner import MAINLINE_LIMITS, ExecGrant, OwnerLimits
from sgxlaunch.driver.uapi import PROT_EXEC, PROT_READ, PROT_WRITE, DriverError

# Kernel policy masks (arch/x86/include/asm/sgx.h, spec §1.1).
SGX_ATTR_UNPRIV_MASK = (
    AttributeFlag.DEBUG | AttributeFlag.MODE64BIT | AttributeFlag.KSS | AttributeFlag.AEXNOTIFY
)
SGX_ATTR_PRIV_MASK = AttributeFlag.PROVISIONKEY | AttributeFlag.EINITTOKEN_KEY
SGX_VA_SLOT_COUNT = 512
MEASURED_ALL = 0xFFFF
"""``EnclPage.measured`` of a page whose 16 chunks of 256 bytes were all EEXTENDed."""


class Mm(Protocol):
    """An address space that maps the enclave (``encl->mm_list``): the driver zaps its PTEs
    for a page it evicts, removes or turns into a TCS (``sgx_zap_enclave_ptes``)."""

    def zap(self, start: int, end: int) -> None: ...


@dataclass(slots=True)
class EnclPage:
    """One enclave page as the driver tracks it (``struct sgx_encl_page``).

    Attributes:
        offset: page offset in the enclave.
        max_prot: ``vm_max_prot_bits``: the PROT_* bits mmap/mprotect may grant (from
            SECINFO; TCS = RW; a page EAUGed on a fault: RWX, as mainline since SGX2 v3).
        page_type: REG, TCS or TRIM (the type the driver last set: ADD_PAGES, EAUG,
            MODIFY_TYPES).
        dynamic: added after EINIT (EAUG on a fault), never measured.
        secinfo_prot: the R/W/X bits of the SECINFO it was EADDed with (TCS and EAUG: 0).
        measured: bit i set when its 256-byte chunk i was EEXTENDed (SGX_PAGE_MEASURE sets
            all 16; ENCLAVE_EXTEND sets some): the owner's EINIT-time checks count a page as
            measured only when all 16 are (:data:`MEASURED_ALL`).
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
    dynamic: bool = False
    secinfo_prot: int = 0
    measured: int = 0

    @property
    def fully_measured(self) -> bool:
        """Every byte of the page went into MRENCLAVE (all 16 chunks EEXTENDed)."""
        return self.measured == MEASURED_ALL


@dataclass(slots=True)
class VaPage:
    """``struct sgx_va_page``: an EPC page of version slots and which slots are taken."""

    epc: int
    used: bytearray = field(default_factory=lambda: bytearray(SGX_VA_SLOT_COUNT))


@dataclass(eq=False, slots=True)
class Enclave:
    """``struct sgx_encl``: one per open ``/dev/sgx_enclave``.

    ``pages_added`` / ``pages_removed`` count the pages EAUGed after EINIT and the pages
    REMOVE_PAGES took out (what the launch log records at teardown); ``mm_list`` holds the
    address spaces that mapped the enclave.

    Owner extension (issue 17): ``owner_limits`` are the limits the owner's policy set at INIT
    (decoded from the token's KEYID; mainline's until then and in permissive mode);
    ``exec_grants`` maps the page offsets of an attested-code grant to it; ``configid`` is the
    instance's SECS.CONFIGID (KSS) as written at ECREATE; ``events`` is the driver's queue of
    dynamic-memory decisions (:mod:`sgxlaunch.driver.dynamic`; ``None``: not recorded).
    """

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
    pages_added: int = 0
    pages_removed: int = 0
    mm_list: list[Mm] = field(default_factory=list)
    owner_limits: OwnerLimits = MAINLINE_LIMITS
    exec_grants: dict[int, ExecGrant] = field(default_factory=dict)
    configid: bytes = bytes(64)
    events: DriverEvents | None = None

    def zap(self, start: int, end: int) -> None:
        """sgx_zap_enclave_ptes over ``[start, end)`` (linear) in every mm mapping the enclave."""
        for mm in self.mm_list:
            mm.zap(start, end)

    @property
    def debug(self) -> bool:
        """SECS.ATTRIBUTES.DEBUG as requested at ECREATE."""
        return bool(self.attributes & AttributeFlag.DEBUG)


def may_map(
    enclave: Enclave,
    start: int,
    end: int,
    prot: int,
    *,
    read_implies_exec: bool,
    syscall: str = "mmap",
    pid: int = 0,
) -> None:
    """sgx_encl_may_map: READ_IMPLIES_EXEC, ELRANGE after INIT, each page's max protection;
    then the owner's dynamic-memory check (:func:`sgxlaunch.driver.dynamic.check_map`).

    Under ``data`` and ``attested-code`` a dynamic page's X bit is the owner check's to decide
    (its ``max_prot`` is RW, door 1), so the per-page check looks at its R and W only.

    Raises:
        DriverError: EACCES for each of the four checks, in that order.
    """
    if read_implies_exec:
        raise DriverError(errno.EACCES, "READ_IMPLIES_EXEC personality")
    if enclave.initialized and (start < enclave.base or end > enclave.base + enclave.size):
        raise DriverError(errno.EACCES, "the mapping leaves the enclave's range")
    want = prot & (PROT_READ | PROT_WRITE | PROT_EXEC)
    pages = enclave.pages
    base = enclave.base
    dynamic_x = PROT_EXEC if dynamic.x_bit_from_policy(enclave) else 0
    for address in range(start, end, PAGE_SIZE):
        page = pages.get(address - base)
        if page is not None and want & ~(page.max_prot | (dynamic_x if page.dynamic else 0)):
            raise DriverError(
                errno.EACCES,
                f"page 0x{address - enclave.base:x} does not allow protection 0x{prot:x}",
            )
    dynamic.check_map(enclave, start, end, prot, syscall=syscall, pid=pid)
