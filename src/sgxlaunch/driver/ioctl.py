"""The ioctls (mainline ``ioctl.c``): CREATE, ADD_PAGES, INIT, PROVISION, the SGX2 trio
RESTRICT_PERMISSIONS, MODIFY_TYPES and REMOVE_PAGES, and the two sgxlaunch extensions
INIT_TOKEN and EXTEND (``docs/driver.md``).

Same checks in the same order with the same errnos as mainline (spec §5); the calling process
is seen only through :class:`Task` (``copy_from_user`` and friends).
"""

from __future__ import annotations

import contextlib
import errno
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from sgxlaunch.arch.constants import (
    ATTRIBUTE_FLAGS_RESERVED_MASK,
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
from sgxlaunch.cpu import CpuFault, PageFault, Processor
from sgxlaunch.driver import dynamic
from sgxlaunch.driver.encl import (
    MEASURED_ALL,
    SGX_ATTR_PRIV_MASK,
    SGX_ATTR_UNPRIV_MASK,
    SGX_VA_SLOT_COUNT,
    Enclave,
    EnclPage,
)
from sgxlaunch.driver.epc import PAGEINFO, EpcPool
from sgxlaunch.driver.grants import Grants, revoke
from sgxlaunch.driver.initpages import PagesRefused, check_initial_pages
from sgxlaunch.driver.owner import (
    MAINLINE_LIMITS,
    STRICT_LIMITS,
    OwnerLimits,
    check_token_binding,
    keyid_limits,
)
from sgxlaunch.driver.uapi import (
    ADD_PAGES_ARG,
    CREATE_ARG,
    ENOIOCTLCMD,
    EXTEND_ARG,
    GRANT_CHALLENGE_ARG,
    GRANT_EXEC_ARG,
    INIT_ARG,
    INIT_TOKEN_ARG,
    MODIFY_TYPES_ARG,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    PROVISION_ARG,
    REMOVE_PAGES_ARG,
    RESTRICT_PERMISSIONS_ARG,
    SGX_IOC_ENCLAVE_ADD_PAGES,
    SGX_IOC_ENCLAVE_CREATE,
    SGX_IOC_ENCLAVE_EXTEND,
    SGX_IOC_ENCLAVE_GRANT_CHALLENGE,
    SGX_IOC_ENCLAVE_GRANT_EXEC,
    SGX_IOC_ENCLAVE_INIT,
    SGX_IOC_ENCLAVE_INIT_TOKEN,
    SGX_IOC_ENCLAVE_MODIFY_TYPES,
    SGX_IOC_ENCLAVE_PROVISION,
    SGX_IOC_ENCLAVE_REMOVE_PAGES,
    SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS,
    SGX_PAGE_MEASURE,
    SGX_PAGE_TYPE_MASK,
    SGX_PAGE_TYPE_TCS,
    SGX_PAGE_TYPE_TRIM,
    SGX_SECINFO_PERMISSION_MASK,
    SGX_SECINFO_R,
    SGX_SECINFO_W,
    DriverError,
    InitAttempt,
)
from sgxlaunch.driver.vma import EnclaveVm
from sgxlaunch.errors import VerificationFailed

Mode = Literal["permissive", "owner"]

SGX_EINIT_SPIN_COUNT = 20
SGX_EINIT_SLEEP_COUNT = 50
_U64 = 0xFFFFFFFFFFFFFFFF
SGX_MISC_RESERVED_MASK = 0xFFFFFFFE  # arch/x86/include/asm/sgx.h: only EXINFO is defined
_KEYID_OFFSET = 256  # EINITTOKEN.KEYID (SDM Table 38-21)
_CONFIGID_OFFSET = 192  # SECS.CONFIGID (SDM Table 38-2)


class Task(Protocol):
    """The kernel's view of the process making the ioctl."""

    @property
    def pid(self) -> int: ...

    def copy_from_user(self, address: int, length: int) -> bytes: ...

    def copy_to_user(self, address: int, data: bytes) -> None: ...

    def source_range_ok(self, address: int, length: int) -> bool: ...

    def check_source_page(self, address: int) -> None: ...

    def is_provision_fd(self, fd: int) -> bool: ...


@dataclass(slots=True)
class LaunchControl:
    """The launch-control mode and, in ``owner`` mode, the owner's launch-enclave signer."""

    mode: Mode = "permissive"
    le_signer: bytes | None = None
    le_mrenclave: bytes | None = None
    observers: list[Callable[[InitAttempt], None]] = field(default_factory=list)
    gates: list[Callable[[InitAttempt], None]] = field(default_factory=list)
    """Called once per INIT before EINIT (and before any refusal) with the attempt (errno 0,
    no status); a gate that raises :class:`DriverError` refuses the INIT with that errno
    (the owner's extension: a launch whose attempt cannot be logged is not performed)."""


class Ioctls:
    """The enclave ioctls over one processor, EPC pool and enclave registry."""

    def __init__(self, cpu: Processor, pool: EpcPool, vm: EnclaveVm, lc: LaunchControl) -> None:
        self.cpu = cpu
        self.pool = pool
        self.vm = vm
        self.lc = lc
        self.k = pool.scratch
        # sgx_drv_init: the reserved masks come from CPUID.(12H,1) (ATTRIBUTES.FLAGS in EBX:EAX,
        # XFRM in EDX:ECX) and CPUID.(12H,0).EBX (MISCSELECT), or'd with the architectural ones.
        eax, ebx, ecx, edx = cpu.cpuid(0x12, 1)
        self.attributes_reserved_mask = (~(ebx << 32 | eax) | ATTRIBUTE_FLAGS_RESERVED_MASK) & _U64
        self.xfrm_reserved_mask = ~(edx << 32 | ecx) & _U64
        self.misc_reserved_mask = (~cpu.cpuid(0x12, 0)[1] | SGX_MISC_RESERVED_MASK) & 0xFFFFFFFF
        self.sgx2 = bool(cpu.cpuid(0x12, 0)[0] & 0x2)
        self.grants = Grants(cpu, cpu.rng)

    def __call__(self, process: Task, enclave: Enclave, cmd: int, arg: int) -> int:
        """sgx_ioctl: one ioctl at a time per enclave (EBUSY), then the command."""
        handlers: dict[int, Callable[[Task, Enclave, int], int]] = {
            SGX_IOC_ENCLAVE_CREATE: self._ioc_create,
            SGX_IOC_ENCLAVE_ADD_PAGES: self._ioc_add_pages,
            SGX_IOC_ENCLAVE_INIT: self._ioc_init,
            SGX_IOC_ENCLAVE_PROVISION: self._ioc_provision,
            SGX_IOC_ENCLAVE_INIT_TOKEN: self._ioc_init_token,
            SGX_IOC_ENCLAVE_EXTEND: self._ioc_extend,
            SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS: self._ioc_restrict_permissions,
            SGX_IOC_ENCLAVE_MODIFY_TYPES: self._ioc_modify_types,
            SGX_IOC_ENCLAVE_REMOVE_PAGES: self._ioc_remove_pages,
            SGX_IOC_ENCLAVE_GRANT_CHALLENGE: self._ioc_grant_challenge,
            SGX_IOC_ENCLAVE_GRANT_EXEC: self._ioc_grant_exec,
        }
        # sgx_ioctl: the SGX_ENCL_IOCTL exclusion first, then the command (unknown: ENOIOCTLCMD).
        if enclave.busy:
            raise DriverError(errno.EBUSY, "another ioctl is in progress on this enclave")
        handler = handlers.get(cmd)
        if handler is None:
            raise DriverError(ENOIOCTLCMD, f"unknown ioctl 0x{cmd:08x}")
        enclave.busy = True
        try:
            return handler(process, enclave, arg)
        finally:
            enclave.busy = False

    # -- SGX2: RESTRICT_PERMISSIONS, MODIFY_TYPES, REMOVE_PAGES (spec §4.1-4.4) ---------------

    def _sgx2_ready(self, enclave: Enclave) -> None:
        """sgx_ioc_sgx2_ready: a part without SGX2 (CPUID.(12H,0):EAX[1]) → ENODEV, checked
        first (the PSW and Gramine probe EDMM support with a zeroed struct and expect ENODEV or
        EINVAL, never ENOTTY); an enclave not initialized → EINVAL."""
        if not self.sgx2:
            raise DriverError(errno.ENODEV, "SGX2 ioctls need a part with SGX2")
        if not enclave.initialized:
            raise DriverError(errno.EINVAL, "SGX2 ioctls need an initialized enclave")

    def _load_page(self, enclave: Enclave, offset: int) -> EnclPage:
        """sgx_encl_load_page as the SGX2 ioctls map its errors: no page there → EFAULT; an
        evicted page is reloaded first (a refused backing → EFAULT). (-EBUSY, a page the
        reclaimer holds, → EAGAIN cannot happen here: the reclaimer runs synchronously.)"""
        page = enclave.pages.get(offset)
        if page is None:
            raise DriverError(errno.EFAULT, f"no enclave page at offset 0x{offset:x}")
        try:
            self.pool.resident(enclave, page)
        except DriverError as exc:
            raise DriverError(errno.EFAULT, exc.message) from None
        return page

    def _etrack(self, enclave: Enclave) -> None:
        """sgx_enclave_etrack: ETRACK; a failure is retried once after the IPI that kicks the
        enclave's threads out (here every thread outside the enclave is already out: a
        suspended vDSO call left with an AEX), a second failure → EFAULT."""
        cpu = self.cpu
        try:
            if (
                cpu.etrack(enclave.secs_epc) != SgxStatus.SUCCESS
                and cpu.etrack(enclave.secs_epc) != SgxStatus.SUCCESS
            ):
                raise DriverError(errno.EFAULT, "ETRACK failed twice")
        except CpuFault as exc:
            raise DriverError(errno.EFAULT, f"ETRACK faulted: {exc}") from None

    def _ioc_restrict_permissions(self, process: Task, enclave: Enclave, arg: int) -> int:
        """SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS (sgx_ioc_enclave_restrict_permissions).

        Before the loop (nothing copied back): sgx2_ready (ENODEV / EINVAL), the argument (EFAULT),
        offset/length (EINVAL), permissions beyond R|W|X (EINVAL), W without R (EINVAL), non-zero
        ``result`` or ``count`` (EINVAL); then the owner's ``dynamic_memory none`` (EPERM,
        :func:`~sgxlaunch.driver.dynamic.check_sgx2_ioctl`). Per page: load (EFAULT), not a REG page
        → EINVAL, EMODPR with SECINFO = permissions: a fault → EFAULT, an SGX code → ``result`` and
        EFAULT; ETRACK (EFAULT). ``count`` = bytes done, copied back with ``result`` whenever the
        loop ran. Neither ``vm_max_prot_bits`` nor any PTE changes: the enclave EACCEPTs
        (REG|PR|perms).
        """
        self._sgx2_ready(enclave)
        offset, length, permissions, result, count = RESTRICT_PERMISSIONS_ARG.unpack(
            process.copy_from_user(arg, RESTRICT_PERMISSIONS_ARG.size)
        )
        self._validate_offset_length(enclave, offset, length)
        if permissions & ~SGX_SECINFO_PERMISSION_MASK:
            raise DriverError(errno.EINVAL, f"permissions 0x{permissions:x} beyond R|W|X")
        if permissions & SGX_SECINFO_W and not permissions & SGX_SECINFO_R:
            raise DriverError(errno.EINVAL, "permissions with W but not R")
        if result or count:
            raise DriverError(errno.EINVAL, "result and count must be zero on input")
        dynamic.check_sgx2_ioctl(enclave, "RESTRICT_PERMISSIONS", offset, length, process.pid)
        cpu = self.cpu
        secinfo = permissions & SGX_SECINFO_PERMISSION_MASK
        cpu.write(self.k.secinfo, secinfo.to_bytes(64, "little"))
        done = 0
        error: DriverError | None = None
        try:
            while done < length:
                page = self._load_page(enclave, offset + done)
                if page.page_type != PageType.REG:
                    raise DriverError(
                        errno.EINVAL, f"page 0x{offset + done:x} is not a regular page"
                    )
                assert page.epc is not None
                try:
                    status = cpu.emodpr(self.k.secinfo, page.epc)
                except CpuFault as exc:
                    raise DriverError(errno.EFAULT, f"EMODPR faulted: {exc}") from None
                if status != SgxStatus.SUCCESS:
                    result = int(status)
                    raise DriverError(errno.EFAULT, f"EMODPR returned {status.name}", status=status)
                self._etrack(enclave)
                done += PAGE_SIZE
        except DriverError as exc:
            error = exc
        process.copy_to_user(
            arg, RESTRICT_PERMISSIONS_ARG.pack(offset, length, permissions, result, done)
        )
        if error is not None:
            raise error
        return 0

    def _ioc_modify_types(self, process: Task, enclave: Enclave, arg: int) -> int:
        """SGX_IOC_ENCLAVE_MODIFY_TYPES (sgx_ioc_enclave_modify_types).

        Before the loop: sgx2_ready, the argument, offset/length, ``page_type`` beyond 8 bits,
        non-zero ``result``/``count`` (nothing copied back); then, inside sgx_enclave_modify_types
        (so the struct is copied back, count 0), a type other than TCS or TRIM → EINVAL, then the
        owner's ``dynamic_memory none`` → EPERM. Per page: load (EFAULT); only REG→TCS, REG→TRIM and
        TCS→TRIM (else EINVAL); REG→TCS needs ``vm_max_prot_bits`` ⊇ RW (else EPERM), sets it to RW
        and zaps the page's PTEs; EMODT with SECINFO = type << 8: a fault → EFAULT, an SGX code →
        ``result`` and EFAULT (both restore the old maximum protection); ETRACK (EFAULT); the page's
        type := the new type. The enclave EACCEPTs (TCS|MODIFIED) or (TRIM|MODIFIED).
        """
        self._sgx2_ready(enclave)
        offset, length, page_type, result, count = MODIFY_TYPES_ARG.unpack(
            process.copy_from_user(arg, MODIFY_TYPES_ARG.size)
        )
        self._validate_offset_length(enclave, offset, length)
        if page_type & ~SGX_PAGE_TYPE_MASK:
            raise DriverError(errno.EINVAL, f"page_type 0x{page_type:x} beyond 8 bits")
        if result or count:
            raise DriverError(errno.EINVAL, "result and count must be zero on input")
        cpu = self.cpu
        done = 0
        error: DriverError | None = None
        try:
            if page_type not in (SGX_PAGE_TYPE_TCS, SGX_PAGE_TYPE_TRIM):
                raise DriverError(errno.EINVAL, f"page_type {page_type} is not TCS (1) or TRIM (4)")
            dynamic.check_sgx2_ioctl(enclave, "MODIFY_TYPES", offset, length, process.pid)
            cpu.write(self.k.secinfo, (page_type << 8).to_bytes(64, "little"))
            while done < length:
                page = self._load_page(enclave, offset + done)
                if not (
                    page.page_type == PageType.REG
                    or (page.page_type == PageType.TCS and page_type == SGX_PAGE_TYPE_TRIM)
                ):
                    raise DriverError(
                        errno.EINVAL,
                        f"page 0x{offset + done:x}: type {page.page_type} cannot become "
                        f"{page_type} (REG→TCS, REG→TRIM, TCS→TRIM only)",
                    )
                # A page that stops being a regular page ends any attested-code grant on it.
                revoke(enclave, offset + done, offset + done + PAGE_SIZE)
                max_prot_restore = page.max_prot
                if page.page_type == PageType.REG and page_type == SGX_PAGE_TYPE_TCS:
                    if ~page.max_prot & (PROT_READ | PROT_WRITE):
                        raise DriverError(
                            errno.EPERM,
                            f"page 0x{offset + done:x} was not vetted for RW (TCS pages are RW)",
                        )
                    page.max_prot = PROT_READ | PROT_WRITE
                    linaddr = enclave.base + offset + done
                    enclave.zap(linaddr, linaddr + PAGE_SIZE)
                assert page.epc is not None
                try:
                    status = cpu.emodt(self.k.secinfo, page.epc)
                except CpuFault as exc:
                    page.max_prot = max_prot_restore
                    raise DriverError(errno.EFAULT, f"EMODT faulted: {exc}") from None
                if status != SgxStatus.SUCCESS:
                    page.max_prot = max_prot_restore
                    result = int(status)
                    raise DriverError(errno.EFAULT, f"EMODT returned {status.name}", status=status)
                self._etrack(enclave)
                page.page_type = page_type
                done += PAGE_SIZE
        except DriverError as exc:
            error = exc
        process.copy_to_user(arg, MODIFY_TYPES_ARG.pack(offset, length, page_type, result, done))
        if error is not None:
            raise error
        return 0

    def _ioc_remove_pages(self, process: Task, enclave: Enclave, arg: int) -> int:
        """SGX_IOC_ENCLAVE_REMOVE_PAGES (sgx_ioc_enclave_remove_pages).

        Before the loop: sgx2_ready, the argument, offset/length, non-zero ``count`` (EINVAL), the
        owner's ``dynamic_memory none`` (EPERM). Per page: load (EFAULT); not TRIM → EPERM; the
        EMODPR(RWX) probe must #PF — it does only once the enclave has EACCEPTed the TRIM
        (EPCM.MODIFIED = 0, so the MODIFIED check passes and the PT check faults, SDM EMODPR steps
        6-7); a status (NOT_MODIFIABLE: not yet accepted) or any other fault → EPERM; the page
        leaves the LRU, its PTEs are zapped, EREMOVE frees it (a failing EREMOVE leaks the EPC page,
        as mainline WARNs and moves on); the page leaves the enclave (VA pages stay). ``count``
        copied back once the loop ran. The address is a hole again: a later access EAUGs a fresh
        page there.
        """
        self._sgx2_ready(enclave)
        offset, length, count = REMOVE_PAGES_ARG.unpack(
            process.copy_from_user(arg, REMOVE_PAGES_ARG.size)
        )
        self._validate_offset_length(enclave, offset, length)
        if count:
            raise DriverError(errno.EINVAL, "count must be zero on input")
        dynamic.check_sgx2_ioctl(enclave, "REMOVE_PAGES", offset, length, process.pid)
        cpu = self.cpu
        done = 0
        error: DriverError | None = None
        try:
            while done < length:
                page = self._load_page(enclave, offset + done)
                if page.page_type != PageType.TRIM:
                    raise DriverError(errno.EPERM, f"page 0x{offset + done:x} is not trimmed")
                assert page.epc is not None
                cpu.write(self.k.secinfo, (0x7).to_bytes(64, "little"))
                try:
                    cpu.emodpr(self.k.secinfo, page.epc)
                    accepted = False
                except PageFault:
                    accepted = True
                except CpuFault:
                    accepted = False
                if not accepted:
                    raise DriverError(
                        errno.EPERM, f"page 0x{offset + done:x}: the TRIM is not yet EACCEPTed"
                    )
                self.pool.lru.pop((enclave.eid, page.offset), None)
                revoke(enclave, page.offset, page.offset + PAGE_SIZE)
                linaddr = enclave.base + offset + done
                enclave.zap(linaddr, linaddr + PAGE_SIZE)
                if cpu.eremove(page.epc) == SgxStatus.SUCCESS:
                    self.pool.free(page.epc)
                page.epc = None
                del enclave.pages[page.offset]
                enclave.pages_removed += 1
                done += PAGE_SIZE
        except DriverError as exc:
            error = exc
        process.copy_to_user(arg, REMOVE_PAGES_ARG.pack(offset, length, done))
        if error is not None:
            raise error
        return 0

    # -- attested-code grants (owner extension, issue 17; driver/grants.py) ------------------

    def _ioc_grant_challenge(self, process: Task, enclave: Enclave, arg: int) -> int:
        """SGX_IOC_ENCLAVE_GRANT_CHALLENGE (sgxlaunch extension): owner mode and an
        initialized attested-code KSS enclave (EINVAL / EPERM, :meth:`Grants.check_ready`),
        the argument (EFAULT), offset/length as the SGX2 ioctls (EINVAL); then a fresh
        challenge for the range, copied back."""
        self.grants.check_ready(enclave, self.lc.mode == "owner")
        offset, length, _challenge = GRANT_CHALLENGE_ARG.unpack(
            process.copy_from_user(arg, GRANT_CHALLENGE_ARG.size)
        )
        self._validate_offset_length(enclave, offset, length)
        challenge = self.grants.challenge(enclave, offset, length)
        process.copy_to_user(arg, GRANT_CHALLENGE_ARG.pack(offset, length, challenge))
        return 0

    def _ioc_grant_exec(self, process: Task, enclave: Enclave, arg: int) -> int:
        """SGX_IOC_ENCLAVE_GRANT_EXEC (sgxlaunch extension): the same first checks as
        GRANT_CHALLENGE, then :meth:`Grants.grant` (EINVAL for the challenge or the pages,
        EPERM unless the owner's launch enclave granted exactly this)."""
        self.grants.check_ready(enclave, self.lc.mode == "owner")
        offset, length, challenge, code_hash, report = GRANT_EXEC_ARG.unpack(
            process.copy_from_user(arg, GRANT_EXEC_ARG.size)
        )
        self._validate_offset_length(enclave, offset, length)
        self.grants.grant(process.pid, enclave, offset, length, challenge, code_hash, report)
        return 0

    def _ioc_create(self, process: Task, enclave: Enclave, arg: int) -> int:
        """SGX_IOC_ENCLAVE_CREATE (sgx_ioc_enclave_create / sgx_encl_create)."""
        if enclave.created:
            raise DriverError(errno.EINVAL, "the enclave is already created")
        (src,) = CREATE_ARG.unpack(process.copy_from_user(arg, CREATE_ARG.size))
        secs_bytes = process.copy_from_user(src, PAGE_SIZE)
        secs = Secs.from_bytes_raw(secs_bytes)
        if secs.size == 0 or secs.size & (secs.size - 1):
            raise DriverError(errno.EINVAL, f"SECS.SIZE 0x{secs.size:x} is not a power of two")
        configid = secs.configid
        if self.lc.mode == "owner" and secs.attributes.flags & AttributeFlag.KSS:
            # Owner extension (issue 17): the instance identity. The driver, not the caller,
            # chooses SECS.CONFIGID (fresh, random); EREPORT carries it (REPORT offset 192), so
            # the launch enclave can tell this instance from any other of the same MRENCLAVE.
            configid = bytes(self.cpu.rng(64))
            end = _CONFIGID_OFFSET + 64
            secs_bytes = secs_bytes[:_CONFIGID_OFFSET] + configid + secs_bytes[end:]
        cpu = self.cpu
        epc = self.pool.alloc()
        cpu.write(self.k.secs, secs_bytes)
        cpu.write(self.k.secinfo, bytes(64))
        cpu.write(self.k.pageinfo, PAGEINFO.pack(0, self.k.secs, self.k.secinfo, 0))
        try:
            cpu.ecreate(self.k.pageinfo, epc)
        except CpuFault as exc:
            self.pool.free(epc)
            raise DriverError(errno.EIO, f"ECREATE faulted: {exc}") from None
        enclave.created = True
        enclave.secs_epc = epc
        enclave.base = secs.baseaddr
        enclave.size = secs.size
        enclave.attributes = secs.attributes.flags
        enclave.xfrm = secs.attributes.xfrm
        enclave.attributes_mask = int(SGX_ATTR_UNPRIV_MASK)
        enclave.configid = configid
        self.vm.by_secs[epc] = enclave
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

    def _ioc_add_pages(self, process: Task, enclave: Enclave, arg: int) -> int:
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
        self.cpu.write(self.k.secinfo, secinfo)
        source_ok = process.source_range_ok(src, length)
        done = 0
        error: DriverError | None = None
        try:
            while done < length:
                self._add_page(
                    enclave,
                    src + done,
                    offset + done,
                    prot,
                    page_type,
                    flags,
                    None if source_ok else process,
                )
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
        source_task: Task | None,
    ) -> None:
        """sgx_encl_add_page for one page (the SECINFO is already in kernel memory).

        Order as mainline: the page-array insert (a page already at ``offset`` → EBUSY) comes
        before __sgx_encl_add_page's source checks (``source_task`` given: an unmapped source
        → EFAULT, a noexec one → EACCES). (Mainline allocates the EPC page before the insert;
        here the allocation follows the checks, so nothing is allocated for a refused page.)
        """
        pages = enclave.pages
        if offset in pages:
            raise DriverError(errno.EBUSY, f"a page is already present at offset 0x{offset:x}")
        if source_task is not None:
            source_task.check_source_page(src)
        if len(pages) % SGX_VA_SLOT_COUNT == 0:
            self.pool.grow_for(enclave, len(pages) + 1)
        free = self.pool.free_list
        epc = free.pop() if free else self.pool.alloc()
        cpu = self.cpu
        secs = enclave.secs_epc
        cpu.write(self.k.pageinfo, PAGEINFO.pack(enclave.base + offset, src, self.k.secinfo, secs))
        try:
            cpu.eadd(self.k.pageinfo, epc)
            if flags & SGX_PAGE_MEASURE:
                cpu.eextend_page(secs, epc)
        except CpuFault as exc:
            if cpu.epcm(epc).valid:
                cpu.eremove(epc)
            self.pool.free(epc)
            raise DriverError(errno.EIO, f"EADD/EEXTEND faulted: {exc}") from None
        page = EnclPage(
            offset,
            prot,
            page_type,
            epc,
            secinfo_prot=prot if page_type == PageType.REG else 0,
            measured=MEASURED_ALL if flags & SGX_PAGE_MEASURE else 0,
        )
        pages[offset] = page
        self.pool.lru[(enclave.eid, offset)] = (enclave, page)

    def _ioc_extend(self, process: Task, enclave: Enclave, arg: int) -> int:
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
            epc = self.pool.resident(enclave, page)
            try:
                self.cpu.eextend(enclave.secs_epc, epc + (chunk & (PAGE_SIZE - 1)))
            except CpuFault as exc:
                raise DriverError(errno.EIO, f"EEXTEND faulted: {exc}") from None
            page.measured |= 1 << ((chunk & (PAGE_SIZE - 1)) // 256)
        return 0

    def _ioc_provision(self, process: Task, enclave: Enclave, arg: int) -> int:
        """SGX_IOC_ENCLAVE_PROVISION: a /dev/sgx_provision fd grants PROVISIONKEY."""
        (fd,) = PROVISION_ARG.unpack(process.copy_from_user(arg, PROVISION_ARG.size))
        if not process.is_provision_fd(fd):
            raise DriverError(errno.EINVAL, f"fd {fd} is not an open /dev/sgx_provision")
        enclave.attributes_mask |= int(AttributeFlag.PROVISIONKEY)
        return 0

    def _init_allowed(self, process: Task, enclave: Enclave, name: str) -> None:
        """sgx_ioc_enclave_init's first check, before it copies its argument: a created,
        uninitialized enclave, else EINVAL (so EINVAL wins over an EFAULT argument)."""
        if not enclave.created or enclave.initialized:
            exc = DriverError(errno.EINVAL, "INIT needs a created, uninitialized enclave")
            self._notify(process, enclave, name, None, None, exc.errno, None, exc.message)
            raise exc

    def _ioc_init(self, process: Task, enclave: Enclave, arg: int) -> int:
        """SGX_IOC_ENCLAVE_INIT (mainline): EINIT with a zero token."""
        self._init_allowed(process, enclave, "ENCLAVE_INIT")
        (sig_addr,) = INIT_ARG.unpack(process.copy_from_user(arg, INIT_ARG.size))
        return self._init(process, enclave, sig_addr, None, "ENCLAVE_INIT")

    def _ioc_init_token(self, process: Task, enclave: Enclave, arg: int) -> int:
        """SGX_IOC_ENCLAVE_INIT_TOKEN: EINIT with the caller's token; SGX status → result."""
        self._init_allowed(process, enclave, "ENCLAVE_INIT_TOKEN")
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
        process: Task,
        enclave: Enclave,
        sig_addr: int,
        token_addr: int | None,
        name: str,
        status_box: list[SgxStatus] | None = None,
    ) -> int:
        sig_bytes: bytes | None = None
        token_bytes: bytes | None = None
        status: SgxStatus | None = None
        announced = False
        try:
            if token_addr is not None and self.lc.mode != "owner":
                raise DriverError(errno.EINVAL, "ENCLAVE_INIT_TOKEN needs owner launch control")
            sig_bytes = process.copy_from_user(sig_addr, Sigstruct.SIZE)
            if token_addr is not None:
                token_bytes = process.copy_from_user(token_addr, EinitToken.SIZE)
            announced = True
            self._announce(process, enclave, name, sig_bytes, token_bytes)
            if token_addr is None and self.lc.mode == "owner":
                # Checked after the copy so observers (the launch log) see what was attempted.
                raise DriverError(
                    errno.EPERM,
                    "owner launch control is on: initialize through ENCLAVE_INIT_TOKEN",
                )
            sig = Sigstruct.from_bytes_raw(sig_bytes)
            self._check_sigstruct(enclave, sig)
            limits = MAINLINE_LIMITS
            if self.lc.mode == "owner" and self.lc.le_mrenclave is not None:
                limits = self._check_owner_launch(sig, sig_bytes, token_bytes)
                check_initial_pages(enclave, limits)
            status = self._einit(enclave, sig, sig_bytes, token_bytes)
            if status_box is not None:
                status_box.append(status)
            if status != SgxStatus.SUCCESS:
                raise DriverError(errno.EPERM, f"EINIT returned {status.name}", status=status)
            enclave.initialized = True
            enclave.owner_limits = limits
            enclave.mrenclave = sig.enclavehash
            enclave.mrsigner = sig.mrsigner
            self._notify(process, enclave, name, sig_bytes, token_bytes, 0, status, "")
            return 0
        except DriverError as exc:
            if not announced:
                with contextlib.suppress(DriverError):
                    self._announce(process, enclave, name, sig_bytes, token_bytes)
            self._notify(
                process,
                enclave,
                name,
                sig_bytes,
                token_bytes,
                exc.errno,
                exc.status,
                exc.message,
                exc.pages if isinstance(exc, PagesRefused) else (),
            )
            raise

    def _check_sigstruct(self, enclave: Enclave, sig: Sigstruct) -> None:
        """sgx_encl_init's software checks, in mainline's order (spec §5.3)."""
        if sig.vendor not in (VENDOR_NONE, VENDOR_INTEL):
            raise DriverError(errno.EINVAL, f"SIGSTRUCT.VENDOR 0x{sig.vendor:x} is not 0 or 0x8086")
        mask = enclave.attributes_mask
        if (
            self.lc.mode == "owner"
            and self.lc.le_signer is not None
            and sig.mrsigner == self.lc.le_signer
        ):
            mask |= int(AttributeFlag.EINITTOKEN_KEY)
        denied = enclave.attributes & ~mask & int(SGX_ATTR_PRIV_MASK)
        if denied:
            names = [f.name for f in AttributeFlag if f & denied]
            raise DriverError(
                errno.EACCES,
                f"attribute {', '.join(str(n) for n in names)} is not permitted for this enclave",
            )
        if sig.attributes.flags & sig.attributemask.flags & self.attributes_reserved_mask:
            raise DriverError(errno.EINVAL, "SIGSTRUCT.ATTRIBUTES has reserved bits set")
        if sig.miscselect & sig.miscmask & self.misc_reserved_mask:
            raise DriverError(errno.EINVAL, "SIGSTRUCT.MISCSELECT has reserved bits set")
        if sig.attributes.xfrm & sig.attributemask.xfrm & self.xfrm_reserved_mask:
            raise DriverError(errno.EINVAL, "SIGSTRUCT.ATTRIBUTES.XFRM has reserved bits set")

    def _check_owner_launch(
        self, sig: Sigstruct, sig_bytes: bytes, token: bytes | None
    ) -> OwnerLimits:
        """The owner's launch control (sgxlaunch extension; :mod:`sgxlaunch.driver.owner`):
        the launch-enclave signer launches only the launch enclave (hardware would let any
        enclave of that signer run without a token), and a valid token's KEYID binds this
        SIGSTRUCT and the policy digest of the machine's counter slot.

        Returns the limits the enclave gets: those the token's KEYID carries
        (:func:`~sgxlaunch.driver.owner.keyid_limits`, decoded after the binding check), or
        :data:`~sgxlaunch.driver.owner.STRICT_LIMITS` for a token with VALID = 0 (the launch
        enclave itself: EINIT lets only the EINITTOKEN_KEY holder run without a valid token).

        Raises:
            DriverError: EPERM for either refusal, or a KEYID that carries no limits.
        """
        if hmac.compare_digest(sig.mrsigner, self.lc.le_signer or b"") and not (
            hmac.compare_digest(sig.enclavehash, self.lc.le_mrenclave or b"")
        ):
            raise DriverError(
                errno.EPERM,
                "owner launch control: the launch-enclave key launches only the launch enclave",
            )
        if token is None or not token[0] & 1:  # VALID = 0: EINIT decides (the launch enclave)
            return STRICT_LIMITS
        machine = self.cpu.machine
        policy_digest = bytes(32) if machine is None else machine.load().counter.policy_digest
        keyid = token[_KEYID_OFFSET : _KEYID_OFFSET + 32]
        try:
            check_token_binding(keyid, sig_bytes, policy_digest)
            return keyid_limits(keyid)
        except VerificationFailed as exc:
            raise DriverError(errno.EPERM, f"owner launch control: {exc.message}") from None

    def _einit(
        self, enclave: Enclave, sig: Sigstruct, sig_bytes: bytes, token: bytes | None
    ) -> SgxStatus:
        cpu = self.cpu
        page = bytearray(PAGE_SIZE)
        page[: Sigstruct.SIZE] = sig_bytes
        if token is not None:
            page[2048 : 2048 + EinitToken.SIZE] = token
        cpu.write(self.k.sigpage, bytes(page))
        status = SgxStatus.UNMASKED_EVENT
        for _ in range(SGX_EINIT_SLEEP_COUNT * SGX_EINIT_SPIN_COUNT):
            if self.lc.mode == "permissive":
                cpu.set_lepubkeyhash(sig.mrsigner)  # sgx_update_lepubkeyhash
            try:
                status = cpu.einit(self.k.sigpage, enclave.secs_epc, self.k.sigpage + 2048)
            except CpuFault as exc:
                raise DriverError(errno.EIO, f"EINIT faulted: {exc}") from None
            if status != SgxStatus.UNMASKED_EVENT:
                break
        return status

    def _announce(
        self,
        process: Task,
        enclave: Enclave,
        name: str,
        sig: bytes | None,
        token: bytes | None,
    ) -> None:
        """Tell the gates an INIT is about to be attempted (they may refuse it)."""
        if not self.lc.gates:
            return
        attempt = InitAttempt(
            pid=process.pid,
            ioctl=name,
            mode=self.lc.mode,
            sigstruct=sig,
            attributes=(enclave.attributes, enclave.xfrm),
            token=token,
            errno=0,
            status=None,
            reason="",
        )
        for gate in list(self.lc.gates):
            gate(attempt)

    def _notify(
        self,
        process: Task,
        enclave: Enclave,
        name: str,
        sig: bytes | None,
        token: bytes | None,
        err: int,
        status: SgxStatus | None,
        reason: str,
        pages: tuple[int, ...] = (),
    ) -> None:
        attempt = InitAttempt(
            pid=process.pid,
            ioctl=name,
            mode=self.lc.mode,
            sigstruct=sig,
            attributes=(enclave.attributes, enclave.xfrm),
            token=token,
            errno=err,
            status=status,
            reason=reason,
            refused_pages=pages,
        )
        for observer in list(self.lc.observers):
            observer(attempt)
