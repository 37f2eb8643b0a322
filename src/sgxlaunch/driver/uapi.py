"""The driver's user API: ioctl numbers, argument structs, errnos, mmap flags.

Mainline values come from ``arch/x86/include/uapi/asm/sgx.h`` (spec §5.2), computed with the
Linux ``_IOC`` encoding ``dir << 30 | size << 16 | type << 8 | nr``. Two ioctls are sgxlaunch
extensions, numbered after mainline's last one so they can never collide with it:

* ``SGX_IOC_ENCLAVE_INIT_TOKEN`` (0x08): INIT with a caller-supplied EINITTOKEN — the owner
  launch-control mode's second INIT ioctl ("IOCTL_INIT_TYPE_B", spec §6.2).
* ``SGX_IOC_ENCLAVE_EXTEND`` (0x09): EEXTEND selected 256-byte chunks of pages already added
  without ``SGX_PAGE_MEASURE``. Mainline has no partial-page measurement (the old out-of-tree
  driver's ``mrmask``); SGXS images with partially measured pages need it to load.
* ``SGX_IOC_ENCLAVE_GRANT_CHALLENGE`` (0x0A, owner mode, issue 17): ``struct
  sgx_enclave_grant_challenge {__u64 offset; __u64 length; __u8 challenge[32];}`` (48 bytes,
  in/out): the driver draws a one-time 32-byte challenge for the page range ``[offset, offset +
  length)`` of this enclave (it replaces any earlier one for the same range) and copies it
  back.
* ``SGX_IOC_ENCLAVE_GRANT_EXEC`` (0x0B, owner mode, issue 17): ``struct
  sgx_enclave_grant_exec {__u64 offset; __u64 length; __u8 challenge[32]; __u8 code_hash[32];
  __u8 report[432];}`` (512 bytes, in): the enclave's REPORT for the owner's launch enclave
  with REPORTDATA[0:32] = :func:`sgxlaunch.driver.grants.grant_reportdata`. The driver
  consumes the challenge, asks the launch enclave (the owner-service port) and, only on the
  launch enclave's verdict, records an :class:`~sgxlaunch.driver.owner.ExecGrant` for exactly
  those pages (:mod:`sgxlaunch.driver.grants`).
"""

from __future__ import annotations

import errno as _errno
import struct
from dataclasses import dataclass

from sgxlaunch.arch.constants import SgxStatus
from sgxlaunch.errors import SgxlaunchError

SGX_MAGIC = 0xA4
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (SGX_MAGIC << 8) | nr


SGX_IOC_ENCLAVE_CREATE = _ioc(_IOC_WRITE, 0x00, 8)
SGX_IOC_ENCLAVE_ADD_PAGES = _ioc(_IOC_READ | _IOC_WRITE, 0x01, 48)
SGX_IOC_ENCLAVE_INIT = _ioc(_IOC_WRITE, 0x02, 8)
SGX_IOC_ENCLAVE_PROVISION = _ioc(_IOC_WRITE, 0x03, 8)
SGX_IOC_ENCLAVE_INIT_TOKEN = _ioc(_IOC_READ | _IOC_WRITE, 0x08, 24)
SGX_IOC_ENCLAVE_EXTEND = _ioc(_IOC_WRITE, 0x09, 16)
SGX_IOC_ENCLAVE_GRANT_CHALLENGE = _ioc(_IOC_READ | _IOC_WRITE, 0x0A, 48)
SGX_IOC_ENCLAVE_GRANT_EXEC = _ioc(_IOC_WRITE, 0x0B, 512)

assert SGX_IOC_ENCLAVE_CREATE == 0x4008A400
assert SGX_IOC_ENCLAVE_ADD_PAGES == 0xC030A401
assert SGX_IOC_ENCLAVE_INIT == 0x4008A402
assert SGX_IOC_ENCLAVE_PROVISION == 0x4008A403

# The SGX2 (EDMM) ioctls (mainline 6.0): on a part without SGX2 the driver answers them as
# mainline does (sgx_ioc_sgx2_ready: -ENODEV).
SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS = _ioc(_IOC_READ | _IOC_WRITE, 0x05, 40)
SGX_IOC_ENCLAVE_MODIFY_TYPES = _ioc(_IOC_READ | _IOC_WRITE, 0x06, 40)
SGX_IOC_ENCLAVE_REMOVE_PAGES = _ioc(_IOC_READ | _IOC_WRITE, 0x07, 24)
assert SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS == 0xC028A405
assert SGX_IOC_ENCLAVE_MODIFY_TYPES == 0xC028A406
assert SGX_IOC_ENCLAVE_REMOVE_PAGES == 0xC018A407
SGX2_IOCTLS = (
    SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS,
    SGX_IOC_ENCLAVE_MODIFY_TYPES,
    SGX_IOC_ENCLAVE_REMOVE_PAGES,
)

SGX_PAGE_MEASURE = 0x01

# struct layouts (all fields __u64)
CREATE_ARG = struct.Struct("<Q")  # {src}
ADD_PAGES_ARG = struct.Struct("<6Q")  # {src, offset, length, secinfo, flags, count}
INIT_ARG = struct.Struct("<Q")  # {sigstruct}
PROVISION_ARG = struct.Struct("<Q")  # {fd}
INIT_TOKEN_ARG = struct.Struct("<3Q")  # {sigstruct, einittoken, result}
EXTEND_ARG = struct.Struct("<2Q")  # {offset, length}: 256-byte aligned, inside added pages
GRANT_CHALLENGE_ARG = struct.Struct("<2Q32s")  # {offset, length, challenge[32]}
GRANT_EXEC_ARG = struct.Struct("<2Q32s32s432s")  # {offset, length, challenge, code_hash, report}
assert GRANT_CHALLENGE_ARG.size == 48 and GRANT_EXEC_ARG.size == 512
assert SGX_IOC_ENCLAVE_GRANT_CHALLENGE == 0xC030A40A
assert SGX_IOC_ENCLAVE_GRANT_EXEC == 0x4200A40B
RESTRICT_PERMISSIONS_ARG = struct.Struct("<5Q")  # {offset, length, permissions, result, count}
MODIFY_TYPES_ARG = struct.Struct("<5Q")  # {offset, length, page_type, result, count}
REMOVE_PAGES_ARG = struct.Struct("<3Q")  # {offset, length, count}
assert RESTRICT_PERMISSIONS_ARG.size == 40 and MODIFY_TYPES_ARG.size == 40
assert REMOVE_PAGES_ARG.size == 24

# uapi/asm/sgx.h: enum sgx_page_type, SGX_SECINFO_* permission bits
SGX_PAGE_TYPE_TCS = 0x01
SGX_PAGE_TYPE_REG = 0x02
SGX_PAGE_TYPE_TRIM = 0x04
SGX_PAGE_TYPE_MASK = 0xFF
SGX_SECINFO_R = 0x01
SGX_SECINFO_W = 0x02
SGX_SECINFO_X = 0x04
SGX_SECINFO_PERMISSION_MASK = 0x07

# The vDSO's enter leaves and exit reason (struct sgx_enclave_run.function).
EENTER = 0x02
ERESUME = 0x03
EEXIT = 0x04

# x86 #PF error code bits (arch/x86/include/asm/trap_pf.h)
X86_PF_PROT = 1 << 0
X86_PF_WRITE = 1 << 1
X86_PF_USER = 1 << 2
X86_PF_INSTR = 1 << 4
X86_PF_SGX = 1 << 15
X86_TRAP_PF = 14

# mmap / mprotect
PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2
PROT_EXEC = 0x4
MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_FIXED = 0x10

DEV_SGX_ENCLAVE = "/dev/sgx_enclave"
DEV_SGX_PROVISION = "/dev/sgx_provision"

ENOIOCTLCMD = 515
"""Kernel-internal "no such ioctl"; the VFS turns it into ENOTTY for user space."""


class DriverError(SgxlaunchError):
    """A system call into the emulated driver failed with ``errno``.

    Attributes:
        errno: the positive errno value (``errno.EINVAL`` …).
        status: for EINIT failures, the SGX status code (``None`` otherwise).
    """

    exit_code = 1

    def __init__(
        self,
        errno: int,
        message: str,
        *,
        status: SgxStatus | None = None,
        detail: tuple[str, ...] | list[str] = (),
    ) -> None:
        name = errno_name(errno)
        super().__init__(f"{name}: {message}", detail=detail)
        self.errno = errno
        self.status = status

    @property
    def errno_name(self) -> str:
        return errno_name(self.errno)


def errno_name(value: int) -> str:
    """``EINVAL`` for 22, ``ENOIOCTLCMD`` for 515."""
    if value == ENOIOCTLCMD:
        return "ENOIOCTLCMD"
    return _errno.errorcode.get(value, f"errno {value}")


@dataclass(frozen=True, slots=True)
class InitAttempt:
    """What the driver saw of one ENCLAVE_INIT / ENCLAVE_INIT_TOKEN call (for observers).

    Attributes:
        pid: the calling process.
        ioctl: ``"ENCLAVE_INIT"`` or ``"ENCLAVE_INIT_TOKEN"``.
        mode: the launch-control mode in force.
        sigstruct: the SIGSTRUCT bytes the caller passed (``None`` if they could not be read).
        attributes: SECS.ATTRIBUTES (flags, xfrm) of the enclave.
        token: the EINITTOKEN bytes passed (``None`` for mainline INIT).
        errno: 0 on success, else the errno returned.
        status: the SGX status EINIT returned (``None`` if EINIT did not run).
        reason: the driver's reason for an errno that did not come from EINIT.
        refused_pages: the page offsets an owner-mode INIT refused (issue 17's EINIT-time
            checks: unmeasured executable or measured RWX pages), else empty.
    """

    pid: int
    ioctl: str
    mode: str
    sigstruct: bytes | None
    attributes: tuple[int, int]
    token: bytes | None
    errno: int
    status: SgxStatus | None
    reason: str
    refused_pages: tuple[int, ...] = ()
