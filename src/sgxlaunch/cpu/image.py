"""Enclave images: the pages a loader adds, and the image built for an :class:`EnclaveProgram`.

:func:`program_image` lays out a TCS, a measured code page holding SHA-256 of the program's
source (so MRENCLAVE binds the code), SSA frames and data pages.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import ClassVar

from sgxlaunch.arch.constants import PageType, SecinfoFlag, secinfo_flags
from sgxlaunch.arch.structs import Tcs
from sgxlaunch.cpu.enclave import PROGRAM_PAGE_MAGIC, EnclaveProgram
from sgxlaunch.errors import UsageError
from sgxlaunch.measure import eadd_block, ecreate_block, eextend_header

PAGE = 4096


@dataclass(frozen=True, slots=True)
class ImagePage:
    """One page of an enclave image.

    Attributes:
        offset: enclave offset (page-aligned).
        secinfo_flags: SECINFO.FLAGS as EADD measures them.
        data: 4096 bytes.
        measured: 16-bit mask of the 256-byte chunks that are EEXTENDed.
    """

    offset: int
    secinfo_flags: int
    data: bytes
    measured: int = 0xFFFF


@dataclass(frozen=True, slots=True)
class EnclaveImage:
    """An enclave image as the loader needs it: ECREATE values and the pages in EADD order."""

    size: int
    ssaframesize: int
    pages: tuple[ImagePage, ...]
    tcs_offsets: tuple[int, ...] = ()

    def mrenclave(self) -> bytes:
        """MRENCLAVE of the image (what the processor measures when it is loaded)."""
        return hashlib.sha256(self.sgxs()).digest()

    def sgxs(self) -> bytes:
        """The image as an SGXS measurement stream (SHA-256 of it = :meth:`mrenclave`)."""
        out = bytearray(ecreate_block(self.ssaframesize, self.size))
        for page in self.pages:
            out += eadd_block(page.offset, page.secinfo_flags)
            for k in range(16):
                if page.measured >> k & 1:
                    out += eextend_header(page.offset + 256 * k)
                    out += page.data[256 * k : 256 * k + 256]
        return bytes(out)


class _ProgramSpec:
    """Layout constants of :func:`program_image`."""

    TCS_OFFSET: ClassVar[int] = 0x0000
    CODE_OFFSET: ClassVar[int] = 0x1000
    SSA_OFFSET: ClassVar[int] = 0x2000


def program_code_page(program: type[EnclaveProgram]) -> bytes:
    """The measured code page: magic (32) ‖ SHA-256(source) (32) ‖ name length (u16) ‖ name."""
    name = f"{program.__module__}.{program.__qualname__}".encode()[:4000]
    page = PROGRAM_PAGE_MAGIC + program.source_hash() + struct.pack("<H", len(name)) + name
    return page.ljust(PAGE, b"\x00")


def program_image(
    program: type[EnclaveProgram],
    *,
    data_pages: int = 1,
    ssaframesize: int = 1,
    nssa: int = 1,
) -> EnclaveImage:
    """Build the image of ``program`` deterministically.

    Layout (offsets in the enclave; every page fully measured):

    * 0x0000 TCS (OSSA = 0x2000, NSSA = ``nssa``, OENTRY = 0x1000);
    * 0x1000 code page, R-X: :func:`program_code_page` (binds SHA-256 of the source);
    * 0x2000 SSA frames, RW-: ``nssa * ssaframesize`` zero pages;
    * then ``data_pages`` zero RW- pages.

    SIZE is the smallest power of two (≥ 8192) covering the pages.
    """
    if data_pages < 0 or ssaframesize < 1 or nssa < 1:
        raise UsageError("program_image needs data_pages ≥ 0, ssaframesize ≥ 1, nssa ≥ 1")
    tcs = Tcs(ossa=_ProgramSpec.SSA_OFFSET, nssa=nssa, oentry=_ProgramSpec.CODE_OFFSET)
    pages = [
        ImagePage(_ProgramSpec.TCS_OFFSET, secinfo_flags(PageType.TCS), tcs.to_bytes()),
        ImagePage(
            _ProgramSpec.CODE_OFFSET,
            secinfo_flags(PageType.REG, SecinfoFlag.R | SecinfoFlag.X),
            program_code_page(program),
        ),
    ]
    offset = _ProgramSpec.SSA_OFFSET
    zero = bytes(PAGE)
    rw = secinfo_flags(PageType.REG, SecinfoFlag.R | SecinfoFlag.W)
    for _ in range(nssa * ssaframesize + data_pages):
        pages.append(ImagePage(offset, rw, zero))
        offset += PAGE
    size = 8192
    while size < offset:
        size *= 2
    return EnclaveImage(
        size=size,
        ssaframesize=ssaframesize,
        pages=tuple(pages),
        tcs_offsets=(_ProgramSpec.TCS_OFFSET,),
    )


__all__ = [
    "PROGRAM_PAGE_MAGIC",
    "EnclaveImage",
    "ImagePage",
    "program_code_page",
    "program_image",
]
