"""MRENCLAVE: the SHA-256 stream of ECREATE / EADD / EEXTEND blocks (spec §2).

Each leaf appends whole 64-byte blocks to one SHA-256 stream:

* ECREATE: ``"ECREATE\\0" | ssaframesize:u32 | size:u64 | 44 zero bytes``
* EADD:    ``"EADD\\0\\0\\0\\0" | offset:u64 | SECINFO[0:48]`` (= flags:u64 and 40 zero bytes)
* EEXTEND: ``"EEXTEND\\0" | offset:u64 | 48 zero bytes`` then the 256 measured bytes

MRENCLAVE is the plain SHA-256 digest of that stream (SDM EINIT ``SHA256FINAL``).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from sgxlaunch.arch.constants import EEXTEND_CHUNK, PAGE_SIZE
from sgxlaunch.errors import MalformedInput, UsageError

TAG_ECREATE = b"ECREATE\x00"
TAG_EADD = b"EADD\x00\x00\x00\x00"
TAG_EEXTEND = b"EEXTEND\x00"

_ECREATE = struct.Struct("<8sIQ44x")
_EADD = struct.Struct("<8sQQ40x")
_EEXTEND_HEADER = struct.Struct("<8sQ48x")
_BLOCK = 64
_CHUNKS_PER_PAGE = PAGE_SIZE // EEXTEND_CHUNK
# One packer for a whole measured page: 16 × (EEXTEND header ‖ 256 data bytes).
_PAGE = struct.Struct("<" + "8sQ48x256s" * _CHUNKS_PER_PAGE)
PAGE_MEASURED_SIZE = _PAGE.size
"""Bytes a fully measured page adds to the stream after its EADD block (16 × 320 = 5120)."""

assert _ECREATE.size == _EADD.size == _EEXTEND_HEADER.size == _BLOCK
assert PAGE_MEASURED_SIZE == 5120


def ecreate_block(ssaframesize: int, size: int) -> bytes:
    """The 64-byte block ECREATE hashes (spec §2.1)."""
    return _ECREATE.pack(TAG_ECREATE, ssaframesize, size)


def eadd_block(offset: int, secinfo_flags: int) -> bytes:
    """The 64-byte block EADD hashes (spec §2.2)."""
    return _EADD.pack(TAG_EADD, offset, secinfo_flags)


def eextend_header(offset: int) -> bytes:
    """The 64-byte header EEXTEND hashes before its 256 data bytes (spec §2.3)."""
    return _EEXTEND_HEADER.pack(TAG_EEXTEND, offset)


def page_measured_bytes(offset: int, data: bytes | bytearray | memoryview) -> bytes:
    """The stream bytes of 16 EEXTENDs covering the page at ``offset`` (one pack call).

    Raises:
        UsageError: ``data`` is not one page or ``offset`` is not page-aligned.
    """
    if len(data) != PAGE_SIZE or offset % PAGE_SIZE:
        raise UsageError("page_measured_bytes needs a page-aligned offset and 4096 bytes")
    page = bytes(data)
    args: list[Any] = []
    for i in range(_CHUNKS_PER_PAGE):
        start = i * EEXTEND_CHUNK
        args += (TAG_EEXTEND, offset + start, page[start : start + EEXTEND_CHUNK])
    return _PAGE.pack(*args)


def _check_range(name: str, value: int, bits: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise MalformedInput(f"{name} must be an integer in [0, 2**{bits})", field=name)


class Measurement:
    """Builds MRENCLAVE the way ECREATE, EADD and EEXTEND do.

    The builder enforces the one ordering the hardware enforces: ECREATE first and once.
    Canonical-form rules of image formats (offset order etc.) belong to the format readers.
    """

    __slots__ = ("_created", "_hash", "_updates")

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._created = False
        self._updates = 0

    def _need_created(self) -> None:
        if not self._created:
            raise UsageError("ECREATE must come before EADD/EEXTEND in a measurement")

    def ecreate(self, ssaframesize: int, size: int) -> None:
        """Start the measurement with ECREATE's block."""
        _check_range("ssaframesize", ssaframesize, 32)
        _check_range("size", size, 64)
        if self._created:
            raise UsageError("ECREATE may appear only once in a measurement")
        self._hash.update(ecreate_block(ssaframesize, size))
        self._created = True
        self._updates += 1

    def eadd(self, offset: int, secinfo_flags: int) -> None:
        """Add EADD's block for the page at enclave ``offset``."""
        self._need_created()
        _check_range("offset", offset, 64)
        _check_range("secinfo_flags", secinfo_flags, 64)
        if offset % PAGE_SIZE:
            raise MalformedInput(f"EADD offset 0x{offset:x} is not page-aligned", field="offset")
        self._hash.update(eadd_block(offset, secinfo_flags))
        self._updates += 1

    def eextend(self, offset: int, chunk: bytes | bytearray | memoryview) -> None:
        """Add one EEXTEND of 256 bytes at enclave ``offset``."""
        self._need_created()
        _check_range("offset", offset, 64)
        if offset % EEXTEND_CHUNK or len(chunk) != EEXTEND_CHUNK:
            raise MalformedInput(
                f"EEXTEND needs a 256-aligned offset and 256 bytes (offset 0x{offset:x}, "
                f"{len(chunk)} bytes)",
                field="offset",
            )
        self._hash.update(eextend_header(offset) + bytes(chunk))
        self._updates += 5

    def eextend_page(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Equal to 16 EEXTENDs over the page at ``offset``, hashed with one update."""
        self._need_created()
        _check_range("offset", offset, 64)
        if offset % PAGE_SIZE:
            raise MalformedInput(f"page offset 0x{offset:x} is not page-aligned", field="offset")
        self._hash.update(page_measured_bytes(offset, data))
        self._updates += 5 * _CHUNKS_PER_PAGE

    def add_page(
        self, offset: int, secinfo_flags: int, data: bytes | bytearray | memoryview, measure: bool
    ) -> None:
        """EADD the page, then (if ``measure``) EEXTEND all of it."""
        self.eadd(offset, secinfo_flags)
        if measure:
            self.eextend_page(offset, data)

    def update_stream(self, blocks: bytes | bytearray | memoryview) -> None:
        """Append pre-formatted EADD/EEXTEND blocks (e.g. an SGXS file after its ECREATE record).

        ECREATE must have been called first (the builder enforces its one ordering rule).
        """
        self._need_created()
        if len(blocks) % _BLOCK:
            raise MalformedInput("measurement stream length is not a multiple of 64")
        self._hash.update(blocks)
        self._updates += len(blocks) // _BLOCK

    @property
    def update_count(self) -> int:
        """Number of 64-byte blocks hashed so far (SDM's MRENCLAVE update counter)."""
        return self._updates

    def copy(self) -> Measurement:
        other = Measurement.__new__(Measurement)
        other._hash = self._hash.copy()
        other._created = self._created
        other._updates = self._updates
        return other

    def mrenclave(self) -> bytes:
        """The 32-byte MRENCLAVE of everything measured so far (the builder stays usable)."""
        self._need_created()
        return self._hash.copy().digest()


def mrenclave_of_pages(
    size: int,
    ssaframesize: int,
    pages: list[tuple[int, int, bytes, bool]],
) -> bytes:
    """MRENCLAVE of an enclave given as ``(offset, secinfo_flags, data, measure)`` pages."""
    m = Measurement()
    m.ecreate(ssaframesize, size)
    for offset, flags, data, measure in pages:
        m.add_page(offset, flags, data, measure)
    return m.mrenclave()
