"""The owner's EINIT-time page checks (issue 17; an sgxlaunch extension of owner-mode INIT).

ADD_PAGES records, per page, the R/W/X bits of the SECINFO it was EADDed with and which of its
256-byte chunks were EEXTENDed (``EnclPage.secinfo_prot`` / ``measured``). Before EINIT, owner-mode
INIT refuses with EPERM:

* an executable page that is not measured in full (no SGX_PAGE_MEASURE, or ENCLAVE_EXTEND over
  only part of it) unless the allowing rule says ``unmeasured_exec: allow``: such a page's
  contents are not in MRENCLAVE, so the author's signature says nothing about the code it holds
  (the Intel SDK's ``ReservedMemExecutable=1`` region and Gramine's non-EDMM free area are
  such pages: they need ``allow``);
* a measured page that is writable and executable unless the rule says ``rwx_pages: allow``:
  its code is signed, but the enclave can rewrite it at run time.

What the driver knows comes from the ioctls, never from EPC contents; before INIT it behaves as
mainline, so a runtime's probes are unaffected. The refusal names the count and the offsets
(as ranges) and carries the offsets (:class:`PagesRefused`) so the launch log records them.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable

from sgxlaunch.arch.constants import PAGE_SIZE
from sgxlaunch.driver.encl import Enclave, EnclPage
from sgxlaunch.driver.owner import OwnerLimits
from sgxlaunch.driver.uapi import PROT_EXEC, PROT_READ, PROT_WRITE, DriverError

_RWX = PROT_READ | PROT_WRITE | PROT_EXEC
MAX_RANGES_NAMED = 8
"""How many offset ranges a refusal's message names (the rest are counted)."""


class PagesRefused(DriverError):
    """Owner-mode INIT refused pages (EPERM); ``pages`` are their offsets, ascending."""

    def __init__(self, message: str, pages: tuple[int, ...]) -> None:
        super().__init__(errno.EPERM, message)
        self.pages = pages


def unmeasured_executable(pages: Iterable[EnclPage]) -> list[int]:
    """Offsets of the executable pages not measured in full."""
    return sorted(p.offset for p in pages if p.secinfo_prot & PROT_EXEC and not p.fully_measured)


def measured_rwx(pages: Iterable[EnclPage]) -> list[int]:
    """Offsets of the measured pages whose SECINFO is R, W and X."""
    return sorted(p.offset for p in pages if p.secinfo_prot & _RWX == _RWX and p.fully_measured)


def describe_offsets(offsets: list[int]) -> str:
    """``offsets`` (ascending, page aligned) as ranges: ``0x1000-0x3fff, 0x8000``; after
    :data:`MAX_RANGES_NAMED` ranges, how many more."""
    ranges: list[tuple[int, int]] = []
    for offset in offsets:
        if ranges and ranges[-1][1] == offset:
            ranges[-1] = (ranges[-1][0], offset + PAGE_SIZE)
        else:
            ranges.append((offset, offset + PAGE_SIZE))
    named = [
        f"0x{a:x}" if b - a == PAGE_SIZE else f"0x{a:x}-0x{b - 1:x}"
        for a, b in ranges[:MAX_RANGES_NAMED]
    ]
    if len(ranges) > MAX_RANGES_NAMED:
        named.append(f"and {len(ranges) - MAX_RANGES_NAMED} more ranges")
    return ", ".join(named)


def check_initial_pages(enclave: Enclave, limits: OwnerLimits) -> None:
    """Refuse INIT when a page breaks ``limits`` (unmeasured X pages first, then RWX).

    Raises:
        PagesRefused: EPERM, naming the pages' count and offsets and the rule field.
    """
    pages = enclave.pages.values()
    if not limits.unmeasured_exec:
        found = unmeasured_executable(pages)
        if found:
            raise PagesRefused(
                f"owner launch control: {_count(found)} executable but not measured "
                f"(no SGX_PAGE_MEASURE) at offsets {describe_offsets(found)}; the owner's "
                "rule says unmeasured_exec: deny",
                tuple(found),
            )
    if not limits.rwx_pages:
        found = measured_rwx(pages)
        if found:
            raise PagesRefused(
                f"owner launch control: {_count(found)} writable and executable (RWX) at "
                f"offsets {describe_offsets(found)}; the owner's rule says rwx_pages: deny",
                tuple(found),
            )


def _count(offsets: list[int]) -> str:
    return "1 page is" if len(offsets) == 1 else f"{len(offsets)} pages are"


__all__ = [
    "MAX_RANGES_NAMED",
    "PagesRefused",
    "check_initial_pages",
    "describe_offsets",
    "measured_rwx",
    "unmeasured_executable",
]
