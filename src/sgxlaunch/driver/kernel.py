"""The emulated Linux SGX driver: enclaves, the EPC allocator and reclaimer, launch control.

It mirrors mainline ``arch/x86/kernel/cpu/sgx/{ioctl,encl,main,driver}.c`` (spec §5): the same
checks in the same order with the same errnos, reaching the processor only through leaf calls.
Added, at the owner's discretion (spec §6): the ``owner`` launch-control mode, in which the
launch-key MSRs hold the owner's launch-enclave signer, EINITTOKEN_KEY is granted to that signer
only, and every other enclave initializes only through ``SGX_IOC_ENCLAVE_INIT_TOKEN`` with a
valid token. The default mode, ``permissive``, is mainline's behaviour.
"""

from __future__ import annotations

import errno
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from sgxlaunch.arch.constants import (
    ATTRIBUTE_FLAGS_RESERVED_MASK,
    FEATURE_CONTROL_LOCK,
    FEATURE_CONTROL_SGX_ENABLED,
    FEATURE_CONTROL_SGX_LC_ENABLED,
    MSR_IA32_FEATURE_CONTROL,
    PAGE_SIZE,
    SECINFO_FLAGS_RESERVED_MASK,
    SECINFO_PAGE_TYPE_MASK,
    SECINFO_PAGE_TYPE_SHIFT,
    SECINFO_PERMISSION_MASK,
    VENDOR_INTEL,
    VENDOR_NONE,
    AttributeFlag,
    PageType,
    SgxStatus,
)
from sgxlaunch.arch.structs import EinitToken, Secs, Sigstruct
from sgxlaunch.cpu import CpuFault, Processor
from sgxlaunch.driver.uapi import (
    ADD_PAGES_ARG,
    CREATE_ARG,
    ENOIOCTLCMD,
    EXTEND_ARG,
    INIT_ARG,
    INIT_TOKEN_ARG,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    PROVISION_ARG,
    SGX_IOC_ENCLAVE_ADD_PAGES,
    SGX_IOC_ENCLAVE_CREATE,
    SGX_IOC_ENCLAVE_EXTEND,
    SGX_IOC_ENCLAVE_INIT,
    SGX_IOC_ENCLAVE_INIT_TOKEN,
    SGX_IOC_ENCLAVE_PROVISION,
    SGX_PAGE_MEASURE,
    DriverError,
    InitAttempt,
)
from sgxlaunch.errors import UsageError

if TYPE_CHECKING:
    from sgxlaunch.driver.process import Process

Mode = Literal["permissive", "owner"]

# Kernel policy masks (arch/x86/include/asm/sgx.h, spec §1.1).
SGX_ATTR_UNPRIV_MASK = (
    AttributeFlag.DEBUG | AttributeFlag.MODE64BIT | AttributeFlag.KSS | AttributeFlag.AEXNOTIFY
)
SGX_ATTR_PRIV_MASK = AttributeFlag.PROVISIONKEY | AttributeFlag.EINITTOKEN_KEY
SGX_MISC_RESERVED_MASK = ~0x1 & 0xFFFFFFFF  # architecturally defined: EXINFO only here
SGX_VA_SLOT_COUNT = 512
SGX_EINIT_SPIN_COUNT = 20
SGX_EINIT_SLEEP_COUNT = 50
RECLAIM_BATCH = 16
"""Pages written back per reclaim pass (mainline ``SGX_NR_TO_SCAN``)."""

_PAGEINFO = struct.Struct("<4Q")
_U64 = 0xFFFFFFFFFFFFFFFF


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


@dataclass(frozen=True, slots=True)
class DriverStats:
    """Counters for tests and benchmarks."""

    epc_pages: int
    epc_free: int
    evictions: int
    reloads: int


class SgxDriver:
    """The driver: owns the EPC allocator, the reclaimer and the launch-control mode.

    Args:
        cpu: the processor it drives (only through leaf calls, MSRs and memory).
        mode: initial launch-control mode (``permissive`` is mainline).
        le_signer: for ``owner`` mode, the owner's launch-enclave MRSIGNER.

    Launch control, set only through :meth:`configure_launch_control` (a privileged call, not
    reachable from a :class:`~sgxlaunch.driver.process.Process`):

    * ``permissive``: before each EINIT the MSRs get SHA-256 of the enclave's modulus and a zero
      token is passed; EINITTOKEN_KEY is never granted (EACCES); ENCLAVE_INIT_TOKEN → EINVAL.
    * ``owner``: the MSRs are written once with the owner's launch-enclave signer and never
      rewritten; EINITTOKEN_KEY is granted to that signer only; mainline ENCLAVE_INIT → EPERM;
      ENCLAVE_INIT_TOKEN passes the caller's token to EINIT.
    * On a part whose launch-key MSRs are locked (FLC absent or locked off by firmware),
      mainline refuses to load enclaves (the devices do not exist); ``owner`` mode works when
      the owner's signer is the firmware's hash.
    """

    def __init__(
        self, cpu: Processor, *, mode: Mode = "permissive", le_signer: bytes | None = None
    ):
        self.cpu = cpu
        self.lc_writable = self._feature_init()
        self.mode: Mode = "permissive"
        self.le_signer: bytes | None = None
        self._free_epc: list[int] = [cpu.epc_address(i) for i in range(cpu.epc_pages - 1, -1, -1)]
        self._lru: OrderedDict[tuple[int, int], tuple[Enclave, EnclPage]] = OrderedDict()
        self._by_secs: dict[int, Enclave] = {}
        self._next_eid = 1
        self._next_pid = 100
        self._pinned: set[tuple[int, int]] = set()
        self.observers: list[Callable[[InitAttempt], None]] = []
        self.evictions = 0
        self.reloads = 0
        # Kernel scratch memory: one page each for PAGEINFO, SECINFO, PCMD, contents,
        # the SIGSTRUCT (token at +2048, as mainline puts it at PAGE_SIZE / 2) and the SECS.
        self._k_pageinfo = cpu.allocate(64)
        self._k_secinfo = cpu.allocate(64)
        self._k_pcmd = cpu.allocate(128)
        self._k_contents = cpu.allocate(PAGE_SIZE)
        self._k_sigpage = cpu.allocate(PAGE_SIZE)
        self._k_secs = cpu.allocate(PAGE_SIZE)
        cpu.page_fault_handler = self._page_fault
        self.configure_launch_control(mode, le_signer)

    # -- platform bring-up and launch control -----------------------------------------------

    def _feature_init(self) -> bool:
        """feat_ctl.c: lock FEATURE_CONTROL if firmware left it open; is the hash writable?"""
        cpu = self.cpu
        fc = cpu.rdmsr(MSR_IA32_FEATURE_CONTROL)
        if not fc & FEATURE_CONTROL_LOCK:
            value = FEATURE_CONTROL_LOCK | FEATURE_CONTROL_SGX_ENABLED
            if cpu.config.flc:
                value |= FEATURE_CONTROL_SGX_LC_ENABLED
            cpu.wrmsr(MSR_IA32_FEATURE_CONTROL, value)
            fc = value
        return bool(cpu.config.flc and fc & FEATURE_CONTROL_SGX_LC_ENABLED)

    def configure_launch_control(self, mode: Mode, le_signer: bytes | None = None) -> None:
        """Set the launch-control mode (privileged: the platform owner's configuration call).

        Raises:
            UsageError: an unknown mode, ``owner`` without a 32-byte signer, or ``owner`` with a
                signer other than the firmware's hash on a part whose MSRs are locked.
        """
        if mode == "permissive":
            self.mode = "permissive"
            self.le_signer = None
            return
        if mode != "owner":
            raise UsageError(f"unknown launch-control mode {mode!r}")
        if le_signer is None or len(le_signer) != 32:
            raise UsageError("owner mode needs the launch enclave's 32-byte MRSIGNER")
        if self.lc_writable:
            self.cpu.set_lepubkeyhash(le_signer)
        elif self.cpu.lepubkeyhash != le_signer:
            raise UsageError(
                "the launch-key MSRs are locked by firmware to another signer",
                detail=[
                    f"firmware hash: {self.cpu.lepubkeyhash.hex()}",
                    f"requested:     {le_signer.hex()}",
                ],
            )
        self.mode = "owner"
        self.le_signer = bytes(le_signer)

    @property
    def devices_present(self) -> bool:
        """Whether ``/dev/sgx_enclave`` exists (mainline: FLC with writable MSRs)."""
        return self.lc_writable or self.mode == "owner"

    def new_process(self) -> Process:
        """A fresh user process on this platform."""
        from sgxlaunch.driver.process import Process

        pid = self._next_pid
        self._next_pid += 1
        return Process(self, pid)

    def new_enclave(self) -> Enclave:
        enclave = Enclave(eid=self._next_eid)
        self._next_eid += 1
        return enclave

    def stats(self) -> DriverStats:
        return DriverStats(self.cpu.epc_pages, len(self._free_epc), self.evictions, self.reloads)

    # -- EPC allocation and reclaim --------------------------------------------------------

    def _alloc_epc(self, *, reclaim: bool = True) -> int:
        if not self._free_epc and reclaim:
            self._reclaim(RECLAIM_BATCH)
        if not self._free_epc:
            raise DriverError(errno.ENOMEM, "no free EPC page and nothing left to reclaim")
        return self._free_epc.pop()

    def _free(self, epc: int) -> None:
        self._free_epc.append(epc)

    def _touch(self, enclave: Enclave, page: EnclPage) -> None:
        key = (enclave.eid, page.offset)
        lru = self._lru
        if key in lru:
            lru.move_to_end(key)
        else:
            lru[key] = (enclave, page)

    def _va_slot(self, enclave: Enclave) -> int:
        for va in enclave.va_pages:
            slot = va.used.find(0)
            if slot >= 0:
                va.used[slot] = 1
                return va.epc + 8 * slot
        raise DriverError(errno.ENOMEM, "no free VA slot")  # pragma: no cover - grown on add

    def _release_va_slot(self, enclave: Enclave, address: int) -> None:
        for va in enclave.va_pages:
            if va.epc <= address < va.epc + PAGE_SIZE:
                va.used[(address - va.epc) // 8] = 0
                return

    def _grow_for(self, enclave: Enclave, pages: int) -> None:
        """sgx_encl_grow: one VA page per 512 enclave pages, allocated before they are needed."""
        needed = (pages + SGX_VA_SLOT_COUNT - 1) // SGX_VA_SLOT_COUNT
        while len(enclave.va_pages) < needed:
            epc = self._alloc_epc()
            self._leaf(self.cpu.epa, epc)
            enclave.va_pages.append(VaPage(epc))

    def _reclaim(self, count: int) -> None:
        """Write back up to ``count`` least-recently-used pages: EBLOCK, ETRACK, EWB."""
        victims: list[tuple[Enclave, EnclPage]] = []
        skipped = []
        while self._lru and len(victims) < count:
            key, entry = self._lru.popitem(last=False)
            if key in self._pinned:
                skipped.append((key, entry))
                continue
            victims.append(entry)
        for key, entry in reversed(skipped):  # pinned pages stay, as most recently used
            self._lru[key] = entry
        if not victims:
            return
        cpu = self.cpu
        enclaves: dict[int, Enclave] = {}
        for enclave, page in victims:
            assert page.epc is not None
            self._leaf(cpu.eblock, page.epc)
            enclaves[enclave.eid] = enclave
        for enclave in enclaves.values():
            self._leaf(cpu.etrack, enclave.secs_epc)
        for enclave, page in victims:
            self._writeback(enclave, page)

    def _writeback(self, enclave: Enclave, page: EnclPage) -> None:
        cpu = self.cpu
        assert page.epc is not None
        slot = self._va_slot(enclave)
        cpu.write(self._k_pageinfo, _PAGEINFO.pack(0, self._k_contents, self._k_pcmd, 0))
        status = self._leaf(cpu.ewb, self._k_pageinfo, page.epc, slot)
        if status == SgxStatus.NOT_TRACKED:
            # Threads of the old epoch are gone once they exit; track again and retry.
            self._leaf(cpu.etrack, enclave.secs_epc)
            status = self._leaf(cpu.ewb, self._k_pageinfo, page.epc, slot)
        if status != SgxStatus.SUCCESS:
            self._release_va_slot(enclave, slot)
            raise DriverError(errno.EIO, f"EWB failed with {status.name}", status=status)
        page.backing = (cpu.read(self._k_contents, PAGE_SIZE), cpu.read(self._k_pcmd, 128))
        page.va_slot = slot
        self._free(page.epc)
        page.epc = None
        self.evictions += 1

    def _reload(self, enclave: Enclave, page: EnclPage) -> None:
        """ELDU a written-back page (sgx_encl_load_page)."""
        cpu = self.cpu
        assert page.backing is not None
        key = (enclave.eid, page.offset)
        self._pinned.add(key)
        try:
            epc = self._alloc_epc()
        finally:
            self._pinned.discard(key)
        contents, pcmd = page.backing
        cpu.write(self._k_contents, contents)
        cpu.write(self._k_pcmd, pcmd)
        linaddr = enclave.base + page.offset
        cpu.write(
            self._k_pageinfo,
            _PAGEINFO.pack(linaddr, self._k_contents, self._k_pcmd, enclave.secs_epc),
        )
        status = self._leaf(cpu.eldu, self._k_pageinfo, epc, page.va_slot)
        if status != SgxStatus.SUCCESS:
            self._free(epc)
            raise DriverError(
                errno.EFAULT,
                f"ELDU of page 0x{page.offset:x} failed with {status.name}",
                status=status,
            )
        self._release_va_slot(enclave, page.va_slot)
        page.epc = epc
        page.backing = None
        page.va_slot = 0
        self._touch(enclave, page)
        self.reloads += 1

    def resident(self, enclave: Enclave, page: EnclPage) -> int:
        """The EPC address of ``page``, reloading it if it was written back."""
        if page.epc is None:
            self._reload(enclave, page)
        else:
            self._touch(enclave, page)
        assert page.epc is not None
        return page.epc

    def pin(self, enclave: Enclave, page: EnclPage) -> None:
        """Keep a resident page from being reclaimed (the TCS of a running ECALL)."""
        self._pinned.add((enclave.eid, page.offset))

    def unpin(self, enclave: Enclave, page: EnclPage) -> None:
        self._pinned.discard((enclave.eid, page.offset))

    def _page_fault(self, secs: int, linaddr: int) -> bool:
        """The #PF handler for enclave accesses: reload an evicted page, then retry."""
        enclave = self._by_secs.get(secs)
        if enclave is None:
            return False
        page = enclave.pages.get((linaddr - enclave.base) & ~(PAGE_SIZE - 1))
        if page is None or page.epc is not None:
            return False
        self._reload(enclave, page)
        return True

    def _leaf(self, leaf: Callable[..., SgxStatus], *args: int) -> SgxStatus:
        """Run an ENCLS leaf; a modelled fault becomes EIO (the kernel's ENCLS_FAULT path)."""
        try:
            return leaf(*args)
        except CpuFault as exc:
            raise DriverError(errno.EIO, f"{leaf.__name__.upper()} faulted: {exc}") from None

    # -- enclave lifetime --------------------------------------------------------------------

    def release(self, enclave: Enclave) -> None:
        """sgx_encl_release: EREMOVE every page, then the VA pages and the SECS."""
        cpu = self.cpu
        for page in enclave.pages.values():
            self._lru.pop((enclave.eid, page.offset), None)
            if page.epc is not None:
                cpu.eremove(page.epc)
                self._free(page.epc)
                page.epc = None
        for va in enclave.va_pages:
            cpu.eremove(va.epc)
            self._free(va.epc)
        enclave.va_pages.clear()
        if enclave.created:
            cpu.eremove(enclave.secs_epc)
            self._free(enclave.secs_epc)
            self._by_secs.pop(enclave.secs_epc, None)
        enclave.pages.clear()
        enclave.dead = True

    # -- ioctls --------------------------------------------------------------------------------

    def ioctl(self, process: Process, enclave: Enclave, cmd: int, arg: int) -> int:
        """sgx_ioctl: one ioctl at a time per enclave (EBUSY), then the command."""
        handlers: dict[int, Callable[[Process, Enclave, int], int]] = {
            SGX_IOC_ENCLAVE_CREATE: self._ioc_create,
            SGX_IOC_ENCLAVE_ADD_PAGES: self._ioc_add_pages,
            SGX_IOC_ENCLAVE_INIT: self._ioc_init,
            SGX_IOC_ENCLAVE_PROVISION: self._ioc_provision,
            SGX_IOC_ENCLAVE_INIT_TOKEN: self._ioc_init_token,
            SGX_IOC_ENCLAVE_EXTEND: self._ioc_extend,
        }
        handler = handlers.get(cmd)
        if handler is None:
            raise DriverError(ENOIOCTLCMD, f"unknown ioctl 0x{cmd:08x}")
        if enclave.busy:
            raise DriverError(errno.EBUSY, "another ioctl is in progress on this enclave")
        enclave.busy = True
        try:
            return handler(process, enclave, arg)
        finally:
            enclave.busy = False

    def _ioc_create(self, process: Process, enclave: Enclave, arg: int) -> int:
        """SGX_IOC_ENCLAVE_CREATE (sgx_ioc_enclave_create / sgx_encl_create)."""
        if enclave.created:
            raise DriverError(errno.EINVAL, "the enclave is already created")
        (src,) = CREATE_ARG.unpack(process.copy_from_user(arg, CREATE_ARG.size))
        secs_bytes = process.copy_from_user(src, PAGE_SIZE)
        secs = Secs.from_bytes_raw(secs_bytes)
        if secs.size == 0 or secs.size & (secs.size - 1):
            raise DriverError(errno.EINVAL, f"SECS.SIZE 0x{secs.size:x} is not a power of two")
        cpu = self.cpu
        epc = self._alloc_epc()
        cpu.write(self._k_secs, secs_bytes)
        cpu.write(self._k_secinfo, bytes(64))
        cpu.write(self._k_pageinfo, _PAGEINFO.pack(0, self._k_secs, self._k_secinfo, 0))
        try:
            cpu.ecreate(self._k_pageinfo, epc)
        except CpuFault as exc:
            self._free(epc)
            raise DriverError(errno.EIO, f"ECREATE faulted: {exc}") from None
        enclave.created = True
        enclave.secs_epc = epc
        enclave.base = secs.baseaddr
        enclave.size = secs.size
        enclave.attributes = secs.attributes.flags
        enclave.xfrm = secs.attributes.xfrm
        enclave.attributes_mask = int(SGX_ATTR_UNPRIV_MASK)
        self._by_secs[epc] = enclave
        return 0

    @staticmethod
    def _validate_offset_length(enclave: Enclave, offset: int, length: int) -> None:
        if offset & (PAGE_SIZE - 1):
            raise DriverError(errno.EINVAL, f"offset 0x{offset:x} is not page-aligned")
        if not length or length & (PAGE_SIZE - 1):
            raise DriverError(errno.EINVAL, f"length 0x{length:x} is zero or not page-aligned")
        if offset + length < offset or offset + length > _U64:
            raise DriverError(errno.EINVAL, "offset + length overflows")
        if offset + length - PAGE_SIZE >= enclave.size:
            raise DriverError(errno.EINVAL, "the range runs past the enclave size")

    @staticmethod
    def _validate_secinfo(data: bytes) -> int:
        """sgx_validate_secinfo: REG or TCS, W needs R, TCS has no R/W/X, reserved all zero."""
        flags = int.from_bytes(data[:8], "little")
        perm = flags & SECINFO_PERMISSION_MASK
        page_type = (flags & SECINFO_PAGE_TYPE_MASK) >> SECINFO_PAGE_TYPE_SHIFT
        if page_type not in (PageType.REG, PageType.TCS):
            raise DriverError(errno.EINVAL, f"SECINFO page type {page_type} is not REG or TCS")
        if perm & PROT_WRITE and not perm & PROT_READ:
            raise DriverError(errno.EINVAL, "SECINFO has W without R")
        if page_type == PageType.TCS and perm:
            raise DriverError(errno.EINVAL, "a TCS SECINFO must have no R/W/X bits")
        if flags & (SECINFO_FLAGS_RESERVED_MASK | 0x38):
            raise DriverError(errno.EINVAL, f"SECINFO.FLAGS reserved bits set (0x{flags:x})")
        if any(data[8:64]):
            raise DriverError(errno.EINVAL, "SECINFO reserved bytes are not zero")
        return flags

    def _ioc_add_pages(self, process: Process, enclave: Enclave, arg: int) -> int:
        """SGX_IOC_ENCLAVE_ADD_PAGES: EADD (and with SGX_PAGE_MEASURE, EEXTEND) each page."""
        if not enclave.created or enclave.initialized:
            raise DriverError(errno.EINVAL, "ADD_PAGES needs a created, uninitialized enclave")
        src, offset, length, secinfo_addr, flags, _count = ADD_PAGES_ARG.unpack(
            process.copy_from_user(arg, ADD_PAGES_ARG.size)
        )
        if src & (PAGE_SIZE - 1):
            raise DriverError(errno.EINVAL, f"src 0x{src:x} is not page-aligned")
        self._validate_offset_length(enclave, offset, length)
        secinfo = process.copy_from_user(secinfo_addr, 64)
        secinfo_flags = self._validate_secinfo(secinfo)
        # Per-ioctl setup (what mainline recomputes per page is invariant across the run):
        # the SECINFO copy in kernel memory, the page's max protection, the source mapping.
        page_type = (secinfo_flags & SECINFO_PAGE_TYPE_MASK) >> SECINFO_PAGE_TYPE_SHIFT
        prot = (
            PROT_READ | PROT_WRITE
            if page_type == PageType.TCS
            else secinfo_flags & (PROT_READ | PROT_WRITE | PROT_EXEC)
        )
        self.cpu.write(self._k_secinfo, secinfo)
        source_ok = process.source_range_ok(src, length)
        done = 0
        error: DriverError | None = None
        try:
            while done < length:
                if not source_ok:
                    process.check_source_page(src + done)
                self._add_page(enclave, src + done, offset + done, prot, page_type, flags)
                done += PAGE_SIZE
        except DriverError as exc:
            error = exc
        process.copy_to_user(
            arg, ADD_PAGES_ARG.pack(src, offset, length, secinfo_addr, flags, done)
        )
        if error is not None:
            raise error
        return 0

    def _add_page(
        self,
        enclave: Enclave,
        src: int,
        offset: int,
        prot: int,
        page_type: int,
        flags: int,
    ) -> None:
        """sgx_encl_add_page for one page (the SECINFO is already in kernel memory)."""
        pages = enclave.pages
        if offset in pages:
            raise DriverError(errno.EBUSY, f"a page is already present at offset 0x{offset:x}")
        if len(pages) % SGX_VA_SLOT_COUNT == 0:
            self._grow_for(enclave, len(pages) + 1)
        free = self._free_epc
        epc = free.pop() if free else self._alloc_epc()
        cpu = self.cpu
        secs = enclave.secs_epc
        cpu.write(
            self._k_pageinfo, _PAGEINFO.pack(enclave.base + offset, src, self._k_secinfo, secs)
        )
        try:
            cpu.eadd(self._k_pageinfo, epc)
            if flags & SGX_PAGE_MEASURE:
                cpu.eextend_page(secs, epc)
        except CpuFault as exc:
            if cpu.epcm(epc).valid:
                cpu.eremove(epc)
            self._free(epc)
            raise DriverError(errno.EIO, f"EADD/EEXTEND faulted: {exc}") from None
        page = EnclPage(offset, prot, page_type, epc)
        pages[offset] = page
        self._lru[(enclave.eid, offset)] = (enclave, page)

    def _ioc_extend(self, process: Process, enclave: Enclave, arg: int) -> int:
        """SGX_IOC_ENCLAVE_EXTEND (sgxlaunch extension): EEXTEND chunks of added pages."""
        if not enclave.created or enclave.initialized:
            raise DriverError(errno.EINVAL, "EXTEND needs a created, uninitialized enclave")
        offset, length = EXTEND_ARG.unpack(process.copy_from_user(arg, EXTEND_ARG.size))
        if offset % 256 or not length or length % 256 or offset + length > enclave.size:
            raise DriverError(errno.EINVAL, "EXTEND needs a 256-byte aligned range in the enclave")
        for chunk in range(offset, offset + length, 256):
            page = enclave.pages.get(chunk & ~(PAGE_SIZE - 1))
            if page is None:
                raise DriverError(errno.EINVAL, f"no page added at offset 0x{chunk:x}")
            epc = self.resident(enclave, page)
            try:
                self.cpu.eextend(enclave.secs_epc, epc + (chunk & (PAGE_SIZE - 1)))
            except CpuFault as exc:
                raise DriverError(errno.EIO, f"EEXTEND faulted: {exc}") from None
        return 0

    def _ioc_provision(self, process: Process, enclave: Enclave, arg: int) -> int:
        """SGX_IOC_ENCLAVE_PROVISION: a /dev/sgx_provision fd grants PROVISIONKEY."""
        (fd,) = PROVISION_ARG.unpack(process.copy_from_user(arg, PROVISION_ARG.size))
        if not process.is_provision_fd(fd):
            raise DriverError(errno.EINVAL, f"fd {fd} is not an open /dev/sgx_provision")
        enclave.attributes_mask |= int(AttributeFlag.PROVISIONKEY)
        return 0

    def _ioc_init(self, process: Process, enclave: Enclave, arg: int) -> int:
        """SGX_IOC_ENCLAVE_INIT (mainline): EINIT with a zero token."""
        (sig_addr,) = INIT_ARG.unpack(process.copy_from_user(arg, INIT_ARG.size))
        return self._init(process, enclave, sig_addr, None, "ENCLAVE_INIT")

    def _ioc_init_token(self, process: Process, enclave: Enclave, arg: int) -> int:
        """SGX_IOC_ENCLAVE_INIT_TOKEN: EINIT with the caller's token; SGX status → result."""
        sig_addr, token_addr, _result = INIT_TOKEN_ARG.unpack(
            process.copy_from_user(arg, INIT_TOKEN_ARG.size)
        )
        status_box: list[SgxStatus] = []
        try:
            return self._init(
                process, enclave, sig_addr, token_addr, "ENCLAVE_INIT_TOKEN", status_box
            )
        finally:
            if status_box:
                process.copy_to_user(
                    arg, INIT_TOKEN_ARG.pack(sig_addr, token_addr, int(status_box[0]))
                )

    def _init(
        self,
        process: Process,
        enclave: Enclave,
        sig_addr: int,
        token_addr: int | None,
        name: str,
        status_box: list[SgxStatus] | None = None,
    ) -> int:
        sig_bytes: bytes | None = None
        token_bytes: bytes | None = None
        status: SgxStatus | None = None
        try:
            if not enclave.created or enclave.initialized:
                raise DriverError(errno.EINVAL, "INIT needs a created, uninitialized enclave")
            if token_addr is not None and self.mode != "owner":
                raise DriverError(errno.EINVAL, "ENCLAVE_INIT_TOKEN needs owner launch control")
            sig_bytes = process.copy_from_user(sig_addr, Sigstruct.SIZE)
            if token_addr is not None:
                token_bytes = process.copy_from_user(token_addr, EinitToken.SIZE)
            if token_addr is None and self.mode == "owner":
                # Checked after the copy so observers (the launch log) see what was attempted.
                raise DriverError(
                    errno.EPERM,
                    "owner launch control is on: initialize through ENCLAVE_INIT_TOKEN",
                )
            sig = Sigstruct.from_bytes_raw(sig_bytes)
            self._check_sigstruct(enclave, sig)
            status = self._einit(enclave, sig, sig_bytes, token_bytes)
            if status_box is not None:
                status_box.append(status)
            if status != SgxStatus.SUCCESS:
                raise DriverError(errno.EPERM, f"EINIT returned {status.name}", status=status)
            enclave.initialized = True
            enclave.mrenclave = sig.enclavehash
            enclave.mrsigner = sig.mrsigner
            self._notify(process, enclave, name, sig_bytes, token_bytes, 0, status, "")
            return 0
        except DriverError as exc:
            self._notify(
                process,
                enclave,
                name,
                sig_bytes,
                token_bytes,
                exc.errno,
                exc.status,
                exc.message,
            )
            raise

    def _check_sigstruct(self, enclave: Enclave, sig: Sigstruct) -> None:
        """sgx_encl_init's software checks, in mainline's order (spec §5.3)."""
        if sig.vendor not in (VENDOR_NONE, VENDOR_INTEL):
            raise DriverError(errno.EINVAL, f"SIGSTRUCT.VENDOR 0x{sig.vendor:x} is not 0 or 0x8086")
        mask = enclave.attributes_mask
        if self.mode == "owner" and self.le_signer is not None and sig.mrsigner == self.le_signer:
            mask |= int(AttributeFlag.EINITTOKEN_KEY)
        denied = enclave.attributes & ~mask & int(SGX_ATTR_PRIV_MASK)
        if denied:
            names = [f.name for f in AttributeFlag if f & denied]
            raise DriverError(
                errno.EACCES,
                f"attribute {', '.join(str(n) for n in names)} is not permitted for this enclave",
            )
        cfg = self.cpu.config
        flags_reserved = ATTRIBUTE_FLAGS_RESERVED_MASK | (0 if cfg.kss else int(AttributeFlag.KSS))
        if sig.attributes.flags & sig.attributemask.flags & flags_reserved:
            raise DriverError(errno.EINVAL, "SIGSTRUCT.ATTRIBUTES has reserved bits set")
        if sig.miscselect & sig.miscmask & ~cfg.miscselect_allowed & 0xFFFFFFFF:
            raise DriverError(errno.EINVAL, "SIGSTRUCT.MISCSELECT has reserved bits set")
        if sig.attributes.xfrm & sig.attributemask.xfrm & ~cfg.xfrm_allowed & _U64:
            raise DriverError(errno.EINVAL, "SIGSTRUCT.ATTRIBUTES.XFRM has reserved bits set")

    def _einit(
        self, enclave: Enclave, sig: Sigstruct, sig_bytes: bytes, token: bytes | None
    ) -> SgxStatus:
        cpu = self.cpu
        page = bytearray(PAGE_SIZE)
        page[: Sigstruct.SIZE] = sig_bytes
        if token is not None:
            page[2048 : 2048 + EinitToken.SIZE] = token
        cpu.write(self._k_sigpage, bytes(page))
        status = SgxStatus.UNMASKED_EVENT
        for _ in range(SGX_EINIT_SLEEP_COUNT * SGX_EINIT_SPIN_COUNT):
            if self.mode == "permissive":
                cpu.set_lepubkeyhash(sig.mrsigner)  # sgx_update_lepubkeyhash
            try:
                status = cpu.einit(self._k_sigpage, enclave.secs_epc, self._k_sigpage + 2048)
            except CpuFault as exc:
                raise DriverError(errno.EIO, f"EINIT faulted: {exc}") from None
            if status != SgxStatus.UNMASKED_EVENT:
                break
        return status

    def _notify(
        self,
        process: Process,
        enclave: Enclave,
        name: str,
        sig: bytes | None,
        token: bytes | None,
        err: int,
        status: SgxStatus | None,
        reason: str,
    ) -> None:
        attempt = InitAttempt(
            pid=process.pid,
            ioctl=name,
            mode=self.mode,
            sigstruct=sig,
            attributes=(enclave.attributes, enclave.xfrm),
            token=token,
            errno=err,
            status=status,
            reason=reason,
        )
        for observer in list(self.observers):
            observer(attempt)
