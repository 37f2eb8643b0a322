"""Load an enclave image into a :class:`Processor` through ECREATE / EADD / EEXTEND / EINIT.

This is what a driver does with an image, written once for tests, tools and benchmarks: the
SECS values follow DESIGN "SECS for an image" (ATTRIBUTES and MISCSELECT from the SIGSTRUCT,
XFRM within what the CPU allows, BASEADDR aligned to SIZE, SSAFRAMESIZE from the image).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from sgxlaunch.arch.constants import AttributeFlag, SgxStatus
from sgxlaunch.arch.structs import Attributes, EinitToken, Secs, Sigstruct
from sgxlaunch.cpu.image import EnclaveImage, ImagePage
from sgxlaunch.cpu.processor import Processor
from sgxlaunch.errors import UsageError

PAGE = 4096
_PAGEINFO = struct.Struct("<QQQQ")
_SECINFO = struct.Struct("<Q56x")


class SgxsPageLike(Protocol):
    """What :func:`image_from_sgxs` needs of a parsed SGXS page (``formats.sgxs.SgxsPage``)."""

    @property
    def offset(self) -> int: ...
    @property
    def secinfo_flags(self) -> int: ...
    @property
    def data(self) -> bytes: ...
    @property
    def measured(self) -> int: ...


class SgxsImageLike(Protocol):
    """What :func:`image_from_sgxs` needs of a parsed SGXS image (``formats.sgxs.SgxsImage``)."""

    @property
    def ssaframesize(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def pages(self) -> tuple[SgxsPageLike, ...]: ...


def image_from_sgxs(image: SgxsImageLike) -> EnclaveImage:
    """An :class:`EnclaveImage` from a parsed SGXS image (pages in file order)."""
    pages = tuple(
        ImagePage(p.offset, p.secinfo_flags, bytes(p.data), p.measured) for p in image.pages
    )
    tcs = tuple(p.offset for p in pages if (p.secinfo_flags >> 8) & 0xFF == 1)
    return EnclaveImage(
        size=image.size, ssaframesize=image.ssaframesize, pages=pages, tcs_offsets=tcs
    )


def secs_for(
    sigstruct: Sigstruct,
    *,
    size: int,
    ssaframesize: int,
    baseaddr: int | None = None,
    xfrm_allowed: int | None = None,
    configid: bytes = bytes(64),
    configsvn: int = 0,
) -> Secs:
    """The SECS a loader passes to ECREATE for an image signed by ``sigstruct``.

    ATTRIBUTES.FLAGS and MISCSELECT are the SIGSTRUCT's (INIT cleared); XFRM is the SIGSTRUCT's
    restricted to ``xfrm_allowed`` (x87|SSE always kept); BASEADDR defaults to SIZE (naturally
    aligned, non-zero).
    """
    xfrm = sigstruct.attributes.xfrm
    if xfrm_allowed is not None:
        xfrm = (xfrm & xfrm_allowed) | 0x3
    return Secs(
        size=size,
        baseaddr=size if baseaddr is None else baseaddr,
        ssaframesize=ssaframesize,
        miscselect=sigstruct.miscselect,
        attributes=Attributes(
            flags=sigstruct.attributes.flags & ~int(AttributeFlag.INIT) & (2**64 - 1), xfrm=xfrm
        ),
        configid=configid,
        configsvn=configsvn,
    )


@dataclass
class ProcessorEnclave:
    """An enclave built in a :class:`Processor`.

    Attributes:
        processor: where it lives.
        secs: EPC address of its SECS.
        baseaddr: SECS.BASEADDR.
        size: SECS.SIZE.
        pages: enclave linear address → EPC address, as loaded.
        tcs: EPC addresses of its TCS pages.
        status: what EINIT returned (``None`` if EINIT was not run).
    """

    processor: Processor
    secs: int
    baseaddr: int
    size: int
    pages: dict[int, int]
    tcs: list[int]
    status: SgxStatus | None = None

    def enter(self, function: int = 0, data: bytes = b"", *, tcs: int = 0) -> bytes:
        """EENTER on the ``tcs``-th TCS."""
        return self.processor.eenter(self.tcs[tcs], function, data)

    def remove(self) -> None:
        """EREMOVE every page, then the SECS."""
        for epc in self.pages.values():
            self.processor.eremove(epc)
        self.processor.eremove(self.secs)


def build_enclave(
    processor: Processor,
    image: EnclaveImage,
    secs: Secs,
) -> ProcessorEnclave:
    """ECREATE, then EADD (and EEXTEND the measured chunks of) every page; no EINIT."""
    pages = image.pages
    epc = processor.free_epc_pages(len(pages) + 1)
    control = processor.allocate(PAGE + 128)
    src = processor.allocate(max(1, len(pages)) * PAGE)
    pageinfo = control + PAGE
    secinfo = control + PAGE + 64
    processor.write(control, secs.to_bytes())
    processor.write(secinfo, bytes(64))
    processor.write(pageinfo, _PAGEINFO.pack(0, control, secinfo, 0))
    secs_addr = epc[0]
    _expect(processor.ecreate(pageinfo, secs_addr), "ECREATE")
    for k, page in enumerate(pages):
        processor.write(src + k * PAGE, page.data)
    loaded = ProcessorEnclave(processor, secs_addr, secs.baseaddr, secs.size, {}, [])
    for k, page in enumerate(pages):
        target = epc[k + 1]
        linaddr = secs.baseaddr + page.offset
        processor.write(secinfo, _SECINFO.pack(page.secinfo_flags))
        processor.write(pageinfo, _PAGEINFO.pack(linaddr, src + k * PAGE, secinfo, secs_addr))
        _expect(processor.eadd(pageinfo, target), "EADD")
        if page.measured == 0xFFFF:
            processor.eextend_page(secs_addr, target)
        else:
            for chunk in range(16):
                if page.measured >> chunk & 1:
                    processor.eextend(secs_addr, target + 256 * chunk)
        loaded.pages[linaddr] = target
        if (page.secinfo_flags >> 8) & 0xFF == 1:
            loaded.tcs.append(target)
    processor.release(src)
    processor.release(control)
    return loaded


def einit(
    processor: Processor, secs: int, sigstruct: Sigstruct | bytes, token: EinitToken | bytes | None
) -> SgxStatus:
    """Place SIGSTRUCT and EINITTOKEN (zero token if ``None``) in memory and run EINIT."""
    region = processor.allocate(2 * PAGE)
    processor.write(region, sigstruct.to_bytes() if isinstance(sigstruct, Sigstruct) else sigstruct)
    tok = bytes(EinitToken.SIZE) if token is None else token
    processor.write(region + PAGE, tok.to_bytes() if isinstance(tok, EinitToken) else tok)
    try:
        return processor.einit(region, secs, region + PAGE)
    finally:
        processor.release(region)


def load_enclave(
    processor: Processor,
    image: EnclaveImage,
    sigstruct: Sigstruct,
    *,
    token: EinitToken | bytes | None = None,
    baseaddr: int | None = None,
    configid: bytes = bytes(64),
    configsvn: int = 0,
) -> ProcessorEnclave:
    """Build ``image`` with SECS values from ``sigstruct`` and run EINIT; ``.status`` tells."""
    secs = secs_for(
        sigstruct,
        size=image.size,
        ssaframesize=image.ssaframesize,
        baseaddr=baseaddr,
        xfrm_allowed=processor.config.xfrm_allowed,
        configid=configid,
        configsvn=configsvn,
    )
    loaded = build_enclave(processor, image, secs)
    loaded.status = einit(processor, loaded.secs, sigstruct, token)
    return loaded


def _expect(status: SgxStatus, leaf: str) -> None:
    if status != SgxStatus.SUCCESS:
        raise UsageError(f"{leaf} returned {status.name}")


def image_pages(pages: Iterable[ImagePage]) -> tuple[ImagePage, ...]:
    """Pages as a tuple (helper for callers building images by hand)."""
    return tuple(pages)


__all__ = [
    "ProcessorEnclave",
    "build_enclave",
    "einit",
    "image_from_sgxs",
    "load_enclave",
    "secs_for",
]
