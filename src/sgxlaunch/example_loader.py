"""An example loader enclave for attested-code grants (issue 17): it fetches code into dynamic
pages, reports it to the owner's launch enclave, and runs it.

:class:`CodeLoader` is an :class:`~sgxlaunch.cpu.EnclaveProgram` whose image
(:func:`loader_image`) leaves the enclave range above :data:`DYNAMIC_OFFSET` unpopulated, for
pages added after EINIT (SGX2 EAUG on a fault, then EACCEPT). Its ECALLs (integers u64
little-endian; offsets are enclave offsets):

* :data:`ECALL_PLACE` — offset ‖ code bytes (whole pages): EACCEPT each page (REG, RW,
  PENDING), write the code, EMODPE +X (the EPCM then allows a fetch; the page tables still
  decide), return SHA-256 of the code bytes.
* :data:`ECALL_REPORT` — TARGETINFO (512) ‖ challenge (32) ‖ offset ‖ length: hash the bytes
  now in that range and EREPORT for the target with REPORTDATA =
  :func:`~sgxlaunch.driver.grants.grant_reportdata`; return REPORT (432) ‖ code hash (32).
* :data:`ECALL_RUN` — offset ‖ function ‖ input: jump to the code at that offset
  (:meth:`~sgxlaunch.cpu.EnclaveContext.execute`) and return its answer.
* :data:`ECALL_WRITE` — offset ‖ bytes: write them (a store into the enclave's own memory).

The loader reports truthfully what its pages hold — that is what the owner trusts when a
policy names its MRENCLAVE with ``dynamic_memory: attested-code`` (``docs/launch.md``).
:class:`FetchedCode` is a program that a loader fetches: its code page
(:func:`~sgxlaunch.cpu.image.program_code_page`) runs where it is placed once the processor
knows it (``Processor.register_code``).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import struct
from typing import TYPE_CHECKING

from sgxlaunch.arch.constants import PAGE_SIZE, PageType, SecinfoFlag, SgxStatus
from sgxlaunch.arch.structs import TargetInfo
from sgxlaunch.cpu.enclave import EnclaveContext, EnclaveProgram
from sgxlaunch.cpu.image import EnclaveImage, program_code_page, program_image
from sgxlaunch.driver import uapi
from sgxlaunch.driver.grants import grant_reportdata
from sgxlaunch.driver.loader import LoadedEnclave
from sgxlaunch.driver.uapi import DriverError
from sgxlaunch.errors import UsageError

if TYPE_CHECKING:
    from sgxlaunch.launch.platform import Platform

ECALL_PLACE = 0
ECALL_REPORT = 1
ECALL_RUN = 2
ECALL_WRITE = 3

SECINFO_OFFSET = 0x3000
"""The loader's static data page: where it builds the SECINFO operands of EACCEPT/EMODPE."""
DYNAMIC_OFFSET = 0x4000
"""First enclave offset left for pages added after EINIT."""
LOADER_SIZE = 0x20000
"""ELRANGE of the loader (128 KiB: 28 pages for fetched code and data)."""

_PENDING_RW = int(SecinfoFlag.R | SecinfoFlag.W | SecinfoFlag.PENDING) | int(PageType.REG) << 8
_ADD_X = int(SecinfoFlag.X)
_U64 = struct.Struct("<Q")
_REPORT_ARGS = struct.Struct("<512s32sQQ")


class CodeLoader(EnclaveProgram):
    """The example loader (see the module docstring for its ECALLs)."""

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        base = ctx.base_address
        if function == ECALL_PLACE:
            (offset,) = _U64.unpack_from(data)
            code = data[8:]
            if not code or len(code) % PAGE_SIZE:
                raise UsageError("PLACE takes whole pages of code")
            secinfo = base + SECINFO_OFFSET
            for k in range(0, len(code), PAGE_SIZE):
                page = base + offset + k
                ctx.write(secinfo, struct.pack("<Q", _PENDING_RW).ljust(64, b"\0"))
                status = ctx.eaccept(secinfo, page)
                if status != SgxStatus.SUCCESS:
                    raise UsageError(f"EACCEPT of 0x{offset + k:x} returned {status.name}")
                ctx.write(page, code[k : k + PAGE_SIZE])
                ctx.write(secinfo, struct.pack("<Q", _ADD_X).ljust(64, b"\0"))
                ctx.emodpe(secinfo, page)
            return hashlib.sha256(code).digest()
        if function == ECALL_REPORT:
            targetinfo, challenge, offset, length = _REPORT_ARGS.unpack(data)
            code_hash = hashlib.sha256(ctx.read(base + offset, length)).digest()
            report = ctx.ereport(
                TargetInfo.from_bytes_raw(targetinfo),
                grant_reportdata(challenge, offset, length, code_hash),
            )
            return report.to_bytes() + code_hash
        if function == ECALL_RUN:
            offset, code_function = struct.unpack_from("<QQ", data)
            return ctx.execute(base + offset, code_function, data[16:])
        if function == ECALL_WRITE:
            (offset,) = _U64.unpack_from(data)
            ctx.write(base + offset, data[8:])
            return b""
        raise UsageError(f"unknown loader ECALL {function}")


class FetchedCode(EnclaveProgram):
    """Code a loader fetches and runs: answers with a greeting naming what it was given."""

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        return b"fetched code ran inside the loader: " + data


def loader_image() -> EnclaveImage:
    """The loader's image: :func:`~sgxlaunch.cpu.image.program_image` of :class:`CodeLoader`
    with one data page, ELRANGE widened to :data:`LOADER_SIZE` (the rest unpopulated)."""
    return dataclasses.replace(program_image(CodeLoader, data_pages=1), size=LOADER_SIZE)


def fetch_and_run(platform: Platform, loaded: LoadedEnclave, data: bytes = b"") -> bytes:
    """The loader's host side, as ``sgxlaunch run`` does it for a loader image: map the first
    dynamic page RW, have the loader fetch :class:`FetchedCode` into it, ask for an
    attested-code grant when the driver offers one for this enclave (owner mode, limits
    attested-code, KSS: otherwise GRANT_CHALLENGE answers EINVAL or EPERM and no grant is
    asked for), map the page R-X and run the code with ``data``. Returns its answer.

    Raises:
        DriverError: the driver refused a step — e.g. EACCES for the R-X mapping under
            ``dynamic_memory: data``, EPERM for a grant the owner's launch enclave refused.
    """
    proc, fd = loaded.process, loaded.fd
    page = loaded.baseaddr + DYNAMIC_OFFSET
    rw, rx = uapi.PROT_READ | uapi.PROT_WRITE, uapi.PROT_READ | uapi.PROT_EXEC
    proc.mmap(page, PAGE_SIZE, rw, uapi.MAP_SHARED | uapi.MAP_FIXED, fd)
    platform.cpu.register_code(FetchedCode)
    loaded.ecall(ECALL_PLACE, _U64.pack(DYNAMIC_OFFSET) + program_code_page(FetchedCode))
    arg = proc.alloc(PAGE_SIZE)
    try:
        proc.write(arg, uapi.GRANT_CHALLENGE_ARG.pack(DYNAMIC_OFFSET, PAGE_SIZE, bytes(32)))
        try:
            proc.ioctl(fd, uapi.SGX_IOC_ENCLAVE_GRANT_CHALLENGE, arg)
            granting = True
        except DriverError as exc:
            if exc.errno not in (errno.EINVAL, errno.EPERM):
                raise
            granting = False
        if granting:
            challenge = uapi.GRANT_CHALLENGE_ARG.unpack(
                proc.read(arg, uapi.GRANT_CHALLENGE_ARG.size)
            )[2]
            target = platform.le_target_info().to_bytes()
            out = loaded.ecall(
                ECALL_REPORT, _REPORT_ARGS.pack(target, challenge, DYNAMIC_OFFSET, PAGE_SIZE)
            )
            proc.write(
                arg,
                uapi.GRANT_EXEC_ARG.pack(
                    DYNAMIC_OFFSET, PAGE_SIZE, challenge, out[432:], out[:432]
                ),
            )
            proc.ioctl(fd, uapi.SGX_IOC_ENCLAVE_GRANT_EXEC, arg)
    finally:
        proc.free(arg)
    proc.mprotect(page, PAGE_SIZE, rx)
    return loaded.ecall(ECALL_RUN, struct.pack("<QQ", DYNAMIC_OFFSET, 0) + data)


def loader_sgxs() -> bytes:
    """The loader as an SGXS stream (``sgxlaunch example --loader``)."""
    return loader_image().sgxs()


__all__ = [
    "DYNAMIC_OFFSET",
    "ECALL_PLACE",
    "ECALL_REPORT",
    "ECALL_RUN",
    "ECALL_WRITE",
    "LOADER_SIZE",
    "CodeLoader",
    "FetchedCode",
    "fetch_and_run",
    "loader_image",
    "loader_sgxs",
]
