"""Enclave images with extra pages of chosen SECINFO permissions and measurement (for the
owner's EINIT-time page checks, issue 17)."""

from __future__ import annotations

from sgxlaunch.arch.constants import PAGE_SIZE, PageType, SecinfoFlag, secinfo_flags
from sgxlaunch.arch.structs import Attributes, Sigstruct
from sgxlaunch.cpu import program_image
from sgxlaunch.cpu.image import EnclaveImage, ImagePage
from sgxlaunch.driver import as_sgxs_image
from sgxlaunch.formats.sgxs import SgxsImage
from sgxlaunch.sigstruct import sign
from tests.support.cpu import PROD, MemoryProgram
from tests.support.keys import signer

R, W, X = SecinfoFlag.R, SecinfoFlag.W, SecinfoFlag.X
FIRST_EXTRA = 0x4000  # after program_image's TCS, code, SSA and data pages


def image_with_pages(extra: list[tuple[int, int]], count: int = 1) -> tuple[SgxsImage, Sigstruct]:
    """MemoryProgram's image plus ``count`` pages per (SECINFO R/W/X, measured mask) in
    ``extra``, from :data:`FIRST_EXTRA` on."""
    base = program_image(MemoryProgram)
    pages = list(base.pages)
    offset = FIRST_EXTRA
    for perms, measured in extra:
        for _ in range(count):
            flags = secinfo_flags(PageType.REG, perms)
            pages.append(ImagePage(offset, flags, bytes(PAGE_SIZE), measured))
            offset += PAGE_SIZE
    size = base.size
    while size < offset:
        size *= 2
    image = EnclaveImage(size, base.ssaframesize, tuple(pages), base.tcs_offsets)
    body = Sigstruct(
        attributes=Attributes(flags=PROD, xfrm=0x3),
        attributemask=Attributes(flags=2**64 - 1, xfrm=2**64 - 1),
        miscmask=2**32 - 1,
        isvprodid=1,
        isvsvn=1,
        enclavehash=image.mrenclave(),
    )
    return as_sgxs_image(image), sign(body, signer("app"))


UNMEASURED_RX = (R | X, 0)
UNMEASURED_RWX = (R | W | X, 0)
MEASURED_RWX = (R | W | X, 0xFFFF)
PARTLY_MEASURED_RX = (R | X, 0x00FF)
UNMEASURED_RW = (R | W, 0)
