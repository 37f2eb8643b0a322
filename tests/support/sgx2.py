"""Builders for the SGX2 processor tests: an initialized enclave with room for dynamic pages,
code run inside it on demand, and the ENCLS operands (PAGEINFO, SECINFO) in ordinary memory."""

from __future__ import annotations

import dataclasses
import functools
import struct
from collections.abc import Callable
from typing import Any

from sgxlaunch.arch import SgxStatus, Sigstruct
from sgxlaunch.arch.constants import PageType, secinfo_flags
from sgxlaunch.cpu import (
    EnclaveContext,
    EnclaveImage,
    EnclaveProgram,
    Processor,
    ProcessorEnclave,
    load_enclave,
    program_image,
)
from tests.support.cpu import cpu, sign_image
from tests.support.keys import mrsigner

PAGE = 4096
R, W, X = 0x1, 0x2, 0x4
PENDING, MODIFIED, PR = 0x08, 0x10, 0x20
PT_REG, PT_TCS, PT_TRIM = int(PageType.REG), int(PageType.TCS), int(PageType.TRIM)

# Layout of the enclave :func:`sgx2_enclave` builds (offsets from BASEADDR): TCS, code, SSA,
# then static RW data pages; everything from DYNAMIC up to SIZE is a hole for EAUG.
CODE = 0x1000
DATA = 0x3000
"""First static RW page: tests keep SECINFOs here (64-byte slots)."""
DATA_PAGES = 4
DYNAMIC = DATA + DATA_PAGES * PAGE
SIZE = 0x20000


def secinfo(flags: int = 0, *, page_type: int = PT_REG, rest: bytes = bytes(56)) -> bytes:
    """A 64-byte SECINFO: FLAGS = ``page_type << 8 | flags`` then ``rest``."""
    return struct.pack("<Q", page_type << 8 | flags) + rest


class Runner(EnclaveProgram):
    """Runs the callable the test put in :attr:`Sgx2Enclave.inside` with the context."""

    action: Callable[[EnclaveContext], Any] | None = None
    result: Any = None

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        action = Runner.action
        assert action is not None
        Runner.result = action(ctx)
        return b""


@dataclasses.dataclass
class Sgx2Enclave:
    proc: Processor
    enclave: ProcessorEnclave
    scratch: int  # ordinary memory: PAGEINFO at +0, SECINFO at +64

    @property
    def base(self) -> int:
        return self.enclave.baseaddr

    @property
    def secs(self) -> int:
        return self.enclave.secs

    def inside(self, action: Callable[[EnclaveContext], Any]) -> Any:
        """EENTER and run ``action(ctx)``; returns what it returned (exceptions propagate)."""
        Runner.action = action
        Runner.result = None
        try:
            self.enclave.enter()
        finally:
            Runner.action = None
        return Runner.result

    def epc_of(self, offset: int) -> int:
        """EPC address of the page at ``offset`` (from the processor's EPCM)."""
        linaddr = self.base + offset
        for i in range(self.proc.epc_pages):
            address = self.proc.epc_address(i)
            entry = self.proc.epcm(address)
            if entry.valid and entry.enclave_secs == self.secs and entry.linaddr == linaddr:
                return address
        raise LookupError(f"no EPC page at offset 0x{offset:x}")

    def pageinfo(self, linaddr: int, srcpge: int = 0, sec: int = 0, secs: int | None = None) -> int:
        self.proc.write(
            self.scratch,
            struct.pack("<QQQQ", linaddr, srcpge, sec, self.secs if secs is None else secs),
        )
        return self.scratch

    def secinfo_op(self, data: bytes) -> int:
        """Put a SECINFO in ordinary memory for EMODPR/EMODT; returns its address."""
        self.proc.write(self.scratch + 64, data)
        return self.scratch + 64

    def eaug(self, offset: int) -> int:
        """EAUG a fresh page at ``offset``; returns its EPC address."""
        epc = self.proc.free_epc_pages(1)[0]
        assert self.proc.eaug(self.pageinfo(self.base + offset), epc) == SgxStatus.SUCCESS
        return epc

    def emodpr(self, offset: int, perms: int) -> SgxStatus:
        return self.proc.emodpr(self.secinfo_op(secinfo(perms)), self.epc_of(offset))

    def emodt(self, offset: int, page_type: int) -> SgxStatus:
        return self.proc.emodt(self.secinfo_op(secinfo(page_type=page_type)), self.epc_of(offset))

    def accept(self, offset: int, flags: int, page_type: int = PT_REG, slot: int = 0) -> Any:
        """EACCEPT from inside with a SECINFO in static data slot ``slot``."""
        sec = self.base + DATA + 64 * slot

        def go(ctx: EnclaveContext) -> SgxStatus:
            ctx.write(sec, secinfo(flags, page_type=page_type))
            return ctx.eaccept(sec, self.base + offset)

        return self.inside(go)

    def emodpe(self, offset: int, perms: int) -> None:
        sec = self.base + DATA

        def go(ctx: EnclaveContext) -> None:
            ctx.write(sec, secinfo(perms))
            ctx.emodpe(sec, self.base + offset)

        self.inside(go)

    def etrack(self) -> None:
        assert self.proc.etrack(self.secs) == SgxStatus.SUCCESS


@functools.cache
def _signed_image() -> tuple[EnclaveImage, Sigstruct]:
    image = dataclasses.replace(program_image(Runner, data_pages=DATA_PAGES), size=SIZE)
    return image, sign_image(image, "app")


def sgx2_enclave(*, sgx2: bool = True, **config: object) -> Sgx2Enclave:
    """An initialized enclave running :class:`Runner` with SIZE 128 KiB (holes from DYNAMIC)."""
    proc = cpu(sgx2=sgx2, **config)  # type: ignore[arg-type]
    image, sig = _signed_image()
    proc.register_program(image.mrenclave(), Runner)
    proc.set_lepubkeyhash(mrsigner("app"))
    loaded = load_enclave(proc, image, sig)
    assert loaded.status == SgxStatus.SUCCESS, loaded.status
    return Sgx2Enclave(proc, loaded, proc.allocate(PAGE))


__all__ = [
    "CODE",
    "DATA",
    "DYNAMIC",
    "MODIFIED",
    "PAGE",
    "PENDING",
    "PR",
    "PT_REG",
    "PT_TCS",
    "PT_TRIM",
    "SIZE",
    "R",
    "Runner",
    "Sgx2Enclave",
    "W",
    "X",
    "secinfo",
    "secinfo_flags",
    "sgx2_enclave",
]
