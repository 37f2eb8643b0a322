"""Builders for driver tests: a platform, a process, raw ioctl calls with arguments in memory."""

from __future__ import annotations

import errno
from dataclasses import dataclass

import pytest

from sgxlaunch.arch import Attributes, Secs, Sigstruct
from sgxlaunch.arch.constants import PAGE_SIZE, PageType, secinfo_flags
from sgxlaunch.cpu import program_image, secs_for
from sgxlaunch.driver import (
    DriverError,
    LoadedEnclave,
    Process,
    SgxDriver,
    as_sgxs_image,
    load,
    uapi,
)
from sgxlaunch.formats.sgxs import SgxsImage
from sgxlaunch.sigstruct import sign
from tests.support.cpu import LE_FLAGS, PROD, MemoryProgram, TokenMinter, cpu, sign_image
from tests.support.keys import mrsigner, signer

REG_RW = secinfo_flags(PageType.REG, 0b011)
REG_R = secinfo_flags(PageType.REG, 0b001)
TCS = secinfo_flags(PageType.TCS, 0)


def le_mrsigner() -> bytes:
    """MRSIGNER of the owner's launch-enclave key in driver tests (``owner-le``)."""
    return mrsigner("owner-le")


def platform(
    mode: str = "permissive",
    *,
    epc_mib: int = 1,
    seed: bytes = b"cpu-A-seed-0123456789",
    **config: object,
) -> SgxDriver:
    processor = cpu(seed, epc_size=epc_mib * 1024 * 1024, **config)  # type: ignore[arg-type]
    driver = SgxDriver(processor)
    if mode == "owner":
        driver.configure_launch_control("owner", le_mrsigner())
    return driver


def expect_errno(code: int) -> pytest.RaisesExc[DriverError]:
    return pytest.raises(DriverError, match=rf"^{errno.errorcode.get(code, 'ENOIOCTLCMD')}")


@dataclass
class Raw:
    """One process with one enclave fd and scratch memory, for calling ioctls by hand."""

    process: Process
    fd: int
    arg: int
    secs: int
    src: int
    secinfo: int
    sig: int
    base: int = 0
    size: int = 0

    @classmethod
    def open(cls, driver: SgxDriver, *, src_pages: int = 4) -> Raw:
        p = driver.new_process()
        fd = p.open(uapi.DEV_SGX_ENCLAVE)
        return cls(
            process=p,
            fd=fd,
            arg=p.alloc(PAGE_SIZE),
            secs=p.alloc(PAGE_SIZE),
            src=p.alloc(src_pages * PAGE_SIZE),
            secinfo=p.alloc(PAGE_SIZE),
            sig=p.alloc(PAGE_SIZE),
        )

    def ioctl(self, cmd: int, payload: bytes) -> int:
        self.process.write(self.arg, payload)
        return int(self.process.ioctl(self.fd, cmd, self.arg))

    def create(self, secs: Secs) -> int:
        self.base, self.size = secs.baseaddr, secs.size
        self.process.write(self.secs, secs.to_bytes())
        return self.ioctl(uapi.SGX_IOC_ENCLAVE_CREATE, uapi.CREATE_ARG.pack(self.secs))

    def add(
        self,
        offset: int,
        *,
        length: int = PAGE_SIZE,
        flags: int = REG_RW,
        measure: bool = True,
        src: int | None = None,
        secinfo_bytes: bytes | None = None,
    ) -> int:
        raw = secinfo_bytes if secinfo_bytes is not None else flags.to_bytes(8, "little")
        self.process.write(self.secinfo, raw.ljust(64, b"\0"))
        return self.ioctl(
            uapi.SGX_IOC_ENCLAVE_ADD_PAGES,
            uapi.ADD_PAGES_ARG.pack(
                self.src if src is None else src,
                offset,
                length,
                self.secinfo,
                uapi.SGX_PAGE_MEASURE if measure else 0,
                0,
            ),
        )

    def count(self) -> int:
        return int(uapi.ADD_PAGES_ARG.unpack(self.process.read(self.arg, 48))[5])

    def init(self, sig: Sigstruct) -> int:
        self.process.write(self.sig, sig.to_bytes())
        return self.ioctl(uapi.SGX_IOC_ENCLAVE_INIT, uapi.INIT_ARG.pack(self.sig))

    def init_token(self, sig: Sigstruct, token: bytes) -> int:
        self.process.write(self.sig, sig.to_bytes())
        self.process.write(self.sig + 2048, token)
        return self.ioctl(
            uapi.SGX_IOC_ENCLAVE_INIT_TOKEN, uapi.INIT_TOKEN_ARG.pack(self.sig, self.sig + 2048, 0)
        )

    def result(self) -> int:
        return int(uapi.INIT_TOKEN_ARG.unpack(self.process.read(self.arg, 24))[2])


def small_secs(size: int = 0x8000, *, flags: int = PROD, xfrm: int = 0x3) -> Secs:
    return Secs(
        size=size, baseaddr=size * 4, ssaframesize=1, attributes=Attributes(flags=flags, xfrm=xfrm)
    )


def program(
    role: str = "app", *, flags: int = PROD, isvprodid: int = 0
) -> tuple[SgxsImage, Sigstruct]:
    """A signed image of a small memory program (TCS + code + SSA + 1 data page)."""
    image = program_image(MemoryProgram)
    sig = sign_image(image, role, flags=flags, isvprodid=isvprodid)
    return as_sgxs_image(image), sig


def le_sigstruct() -> tuple[SgxsImage, Sigstruct]:
    image = program_image(TokenMinter)
    body = Sigstruct(
        attributes=Attributes(flags=LE_FLAGS, xfrm=0x3),
        attributemask=Attributes(flags=2**64 - 1, xfrm=2**64 - 1),
        miscmask=2**32 - 1,
        isvprodid=0x20,
        isvsvn=1,
        enclavehash=image.mrenclave(),
    )
    return as_sgxs_image(image), sign(body, signer("owner-le"))


def launch_enclave(driver: SgxDriver) -> LoadedEnclave:
    """Load the TokenMinter LE (signed by the owner's LE key) with a zero token."""
    image, sig = le_sigstruct()
    driver.cpu.register_program(sig.enclavehash, TokenMinter)
    return load(driver.new_process(), image, sig, token=bytes(304))


def mint(le: LoadedEnclave, sig: Sigstruct, secs_attributes: bytes) -> bytes:
    """Ask the LE for a token for (MRENCLAVE, MRSIGNER, ATTRIBUTES)."""
    return le.ecall(0, sig.enclavehash + sig.mrsigner + secs_attributes)


def secs_attributes_of(driver: SgxDriver, image: SgxsImage, sig: Sigstruct) -> bytes:
    secs = secs_for(
        sig,
        size=image.size,
        ssaframesize=image.ssaframesize,
        xfrm_allowed=driver.cpu.config.xfrm_allowed,
    )
    return secs.attributes.to_bytes()
