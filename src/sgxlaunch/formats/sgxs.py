"""SGXS: the Fortanix measurement-stream enclave format (``../shared/reference/sgxs-format.md``).

An SGXS file *is* the byte stream that ECREATE/EADD/EEXTEND hash, so SHA-256 of a plain SGXS
file is its MRENCLAVE. Records are a 64-byte header (an 8-byte tag and 56 bytes), EEXTEND and
UNMEASRD followed by 256 data bytes. Enhanced SGXS adds ``UNSIZED`` (an ECREATE whose size is
supplied at load time and also patched, as a u64, at the memory offset the record names) and
``UNMEASRD`` (256 bytes loaded but not measured).

Canonical form, checked here with errors naming the record index and file offset:

1. the first record is ECREATE (or UNSIZED) and no other record is;
2. ECREATE: SIZE a power of two ≥ 8192 (ECREATE's own #GP rule), reserved bytes zero;
3. EADD offsets are 4 KiB aligned, strictly increasing and inside SIZE; SECINFO names a REG or
   TCS page with no reserved flag bits; a TCS page has no permission bits; reserved bytes zero;
4. EEXTEND/UNMEASRD offsets are 256-byte aligned, inside the page of the preceding EADD and
   unique within it; reserved header bytes zero;
5. the file ends on a record boundary.

Measuring streams the file in fixed-size reads, hashes the bytes as they are (skipping UNMEASRD
records) and validates runs of fully measured pages with vectorised checks, so the Python work
per page is a small constant (DESIGN.md "Hot paths").
"""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from sgxlaunch.arch.constants import (
    EEXTEND_CHUNK,
    PAGE_SIZE,
    SECINFO_FLAGS_RESERVED_MASK,
    SECINFO_PAGE_TYPE_MASK,
    SECINFO_PAGE_TYPE_SHIFT,
    SECINFO_PERMISSION_MASK,
    PageType,
)
from sgxlaunch.errors import MalformedInput, UsageError
from sgxlaunch.formats.sniff import ELF_MAGIC as ELF_MAGIC
from sgxlaunch.formats.sniff import ELF_REFUSAL as ELF_REFUSAL
from sgxlaunch.formats.sniff import TAG_UNSIZED as TAG_UNSIZED
from sgxlaunch.formats.sniff import looks_like_elf as looks_like_elf
from sgxlaunch.formats.sniff import looks_like_sgxs as looks_like_sgxs
from sgxlaunch.measure import (
    TAG_EADD,
    TAG_ECREATE,
    TAG_EEXTEND,
    ecreate_block,
    eextend_header,
)

TAG_UNMEASRD = b"UNMEASRD"

HEADER_SIZE = 64
CHUNK_RECORD_SIZE = HEADER_SIZE + EEXTEND_CHUNK
CHUNKS_PER_PAGE = PAGE_SIZE // EEXTEND_CHUNK
FULL_PAGE_RECORD_SIZE = HEADER_SIZE + CHUNKS_PER_PAGE * CHUNK_RECORD_SIZE
"""Bytes of one EADD plus 16 EEXTENDs: a fully measured page (5184)."""

MIN_ENCLAVE_SIZE = 8192
DEFAULT_READ_SIZE = 1 << 20
_BULK_MIN_ROWS = 16
_BULK_MAX_ROWS = 256
"""Pages one vectorised check covers at most (≈1.3 MiB: the temporaries stay cache-sized)."""

_U64_EADD = int.from_bytes(TAG_EADD, "little")
_U64_EEXTEND = int.from_bytes(TAG_EEXTEND, "little")
_WORDS_PER_PAGE = FULL_PAGE_RECORD_SIZE // 8
_WORDS_PER_CHUNK = CHUNK_RECORD_SIZE // 8
_CHUNK_OFFSETS = np.arange(CHUNKS_PER_PAGE, dtype=np.uint64) * np.uint64(EEXTEND_CHUNK)
_VALID_TYPES = (int(PageType.REG), int(PageType.TCS))
_ECREATE = struct.Struct("<8sIQ44s")
_EADD = struct.Struct("<8sQQ40s")
_EEXTEND = struct.Struct("<8sQ48s")

ProgressFn = Callable[[int], None]
"""Called with the number of bytes consumed since the previous call."""


@dataclass(frozen=True, slots=True)
class SgxsPage:
    """One EADDed page of an SGXS image.

    Attributes:
        offset: page offset within the enclave (4 KiB aligned).
        secinfo_flags: SECINFO.FLAGS given to EADD.
        data: the page's 4096 bytes (chunks the stream does not carry are zero).
        measured: 16-bit mask of the 256-byte chunks that are EEXTENDed (bit i = chunk i).
        unmeasured: 16-bit mask of the chunks loaded from UNMEASRD records.
    """

    offset: int
    secinfo_flags: int
    data: bytes
    measured: int = 0
    unmeasured: int = 0

    @property
    def page_type(self) -> int:
        return (self.secinfo_flags >> 8) & 0xFF  # SECINFO.FLAGS bits 15:8

    @property
    def fully_measured(self) -> bool:
        return self.measured == 0xFFFF


@dataclass(frozen=True, slots=True)
class SgxsImage:
    """A parsed SGXS image: the ECREATE values and the pages in stream order.

    Attributes:
        ssaframesize: SSA frame size in pages.
        size: enclave size (for an UNSIZED stream, the size it was given).
        pages: the pages, offsets strictly increasing.
        unsized_offset: for an UNSIZED stream, the memory offset where the size is patched.
    """

    ssaframesize: int
    size: int
    pages: tuple[SgxsPage, ...] = field(default=())
    unsized_offset: int | None = None


def _tag_text(tag: bytes) -> str:
    """A record tag for a message: its name when it is printable ASCII, else its hex bytes."""
    name = bytes(tag).rstrip(b"\0")
    if name and all(0x20 < c < 0x7F for c in name):
        return f'"{name.decode("ascii")}"'
    return f"0x{bytes(tag).hex()} (hex)"


def _err(message: str, index: int, offset: int, **kw: object) -> MalformedInput:
    detail = kw.get("detail", ())
    assert isinstance(detail, list | tuple)
    return MalformedInput(
        f"SGXS record {index}: {message}",
        field=f"record[{index}]",
        offset=offset,
        detail=[str(d) for d in detail],
    )


class _Scanner:
    """The canonical-form state machine, fed with buffers of the stream in order.

    ``feed`` consumes whole records from a buffer and reports them to the callbacks; it returns
    how many bytes it consumed (a trailing partial record stays for the next buffer).
    """

    def __init__(
        self,
        *,
        size_override: int | None,
        on_create: Callable[[int, int, int | None, int], None],
        on_full_pages: Callable[[memoryview, np.ndarray, np.ndarray], None],
        on_eadd: Callable[[int, int, int], None],
        on_chunk: Callable[[int, memoryview, bool, int], None],
    ) -> None:
        self.size_override = size_override
        self.on_create = on_create
        self.on_full_pages = on_full_pages
        self.on_eadd = on_eadd
        self.on_chunk = on_chunk
        self.index = 0  # record index
        self.file_offset = 0  # file offset of the next record
        self.size = 0
        self.created = False
        self.last_eadd = -1
        self.page_chunks = 0  # bitmask of chunks seen in the current page
        self.patch_page = -1  # page holding the UNSIZED size patch, never bulk-validated
        self.bulk_rows = _BULK_MIN_ROWS  # rows the next vectorised check may cover
        self.bulk_after = 0  # file offset before which the vectorised path is not tried

    # -- the fast path: runs of fully measured pages ----------------------------------------

    def _bulk(self, buf: memoryview, pos: int) -> int:
        """Validate and report a run of fully measured pages at ``pos``; bytes used.

        The work is linear in the bytes consumed, whatever the input: a run is tried only where
        the page's first and last EEXTEND tags are in place, it covers at most ``bulk_rows``
        pages (doubling after a run that passed whole, back to the minimum after one that did
        not), and after a run that stops early the vectorised path is not tried again until
        the per-record path has consumed a page's worth of records. Without these bounds a
        stream of bare EADD records re-scanned the whole remaining buffer at every record.
        """
        if self.file_offset < self.bulk_after:
            return 0
        n = min((len(buf) - pos) // FULL_PAGE_RECORD_SIZE, self.bulk_rows)
        last_tag = pos + FULL_PAGE_RECORD_SIZE - CHUNK_RECORD_SIZE
        if (
            n == 0
            or buf[pos + HEADER_SIZE : pos + HEADER_SIZE + 8] != TAG_EEXTEND
            or buf[last_tag : last_tag + 8] != TAG_EEXTEND
        ):
            return 0
        words = np.frombuffer(buf, dtype="<u8", count=n * _WORDS_PER_PAGE, offset=pos).reshape(
            n, _WORDS_PER_PAGE
        )
        offsets = words[:, 1]
        flags = words[:, 2]
        chunks = words[:, 8:].reshape(n, CHUNKS_PER_PAGE, _WORDS_PER_CHUNK)
        ok = words[:, 0] == _U64_EADD
        ok &= ~words[:, 3:8].any(axis=1)
        ok &= (offsets & np.uint64(PAGE_SIZE - 1)) == 0
        ok &= offsets < np.uint64(self.size)
        ok &= (flags & np.uint64(SECINFO_FLAGS_RESERVED_MASK)) == 0
        page_type = (flags >> np.uint64(SECINFO_PAGE_TYPE_SHIFT)) & np.uint64(0xFF)
        is_tcs = page_type == np.uint64(PageType.TCS)
        ok &= (page_type == np.uint64(PageType.REG)) | is_tcs
        ok &= ~is_tcs | ((flags & np.uint64(SECINFO_PERMISSION_MASK)) == 0)
        ok &= (chunks[:, :, 0] == _U64_EEXTEND).all(axis=1)
        ok &= (chunks[:, :, 1] == offsets[:, None] + _CHUNK_OFFSETS).all(axis=1)
        ok &= ~chunks[:, :, 2:8].any(axis=(1, 2))
        increasing = np.empty(n, dtype=bool)
        increasing[0] = int(offsets[0]) > self.last_eadd
        np.greater(offsets[1:], offsets[:-1], out=increasing[1:])
        ok &= increasing
        if self.patch_page >= 0:
            ok &= offsets != np.uint64(self.patch_page)
        good = n if bool(ok.all()) else int(np.argmin(ok))
        if good == n:
            self.bulk_rows = min(2 * n, _BULK_MAX_ROWS)
        else:
            self.bulk_rows = _BULK_MIN_ROWS
            self.bulk_after = self.file_offset + (good + 1) * FULL_PAGE_RECORD_SIZE
        if good == 0:
            return 0
        used = good * FULL_PAGE_RECORD_SIZE
        self.on_full_pages(buf[pos : pos + used], offsets[:good], flags[:good])
        self.last_eadd = int(offsets[good - 1])
        self.page_chunks = 0xFFFF
        self.index += good * (1 + CHUNKS_PER_PAGE)
        self.file_offset += used
        return used

    # -- the general path: one record ------------------------------------------------------

    def _record(self, buf: memoryview, pos: int) -> int:
        """Validate and report one record at ``pos``; bytes used (0 if it is incomplete)."""
        if len(buf) - pos < HEADER_SIZE:
            return 0
        tag = bytes(buf[pos : pos + 8])
        index, at = self.index, self.file_offset
        if tag in (TAG_EEXTEND, TAG_UNMEASRD):
            if len(buf) - pos < CHUNK_RECORD_SIZE:
                return 0
            _, offset, rsv = _EEXTEND.unpack_from(buf, pos)
            name = "EEXTEND" if tag == TAG_EEXTEND else "UNMEASRD"
            if not self.created:
                raise _err(f"{name} before ECREATE", index, at)
            if self.last_eadd < 0:
                raise _err(f"{name} before any EADD", index, at)
            if offset % EEXTEND_CHUNK:
                raise _err(f"{name} offset 0x{offset:x} is not 256-byte aligned", index, at + 8)
            if not self.last_eadd <= offset < self.last_eadd + PAGE_SIZE:
                raise _err(
                    f"{name} offset 0x{offset:x} is outside the page of the preceding EADD "
                    f"(0x{self.last_eadd:x})",
                    index,
                    at + 8,
                )
            bit = 1 << ((offset - self.last_eadd) // EEXTEND_CHUNK)
            if self.page_chunks & bit:
                raise _err(
                    f"{name} offset 0x{offset:x} repeats a chunk of this page", index, at + 8
                )
            if any(rsv):
                raise _err(f"{name} reserved header bytes 16..63 must be zero", index, at + 16)
            self.page_chunks |= bit
            self.on_chunk(offset, buf[pos : pos + CHUNK_RECORD_SIZE], tag == TAG_EEXTEND, pos)
            used = CHUNK_RECORD_SIZE
        elif tag == TAG_EADD:
            _, offset, flags, rsv = _EADD.unpack_from(buf, pos)
            if not self.created:
                raise _err("EADD before ECREATE", index, at)
            if offset % PAGE_SIZE:
                raise _err(f"EADD offset 0x{offset:x} is not page-aligned", index, at + 8)
            if offset <= self.last_eadd:
                raise _err(
                    f"EADD offset 0x{offset:x} does not increase (previous 0x{self.last_eadd:x})",
                    index,
                    at + 8,
                )
            if offset >= self.size:
                raise _err(
                    f"EADD offset 0x{offset:x} is outside the enclave (SIZE 0x{self.size:x})",
                    index,
                    at + 8,
                )
            _check_secinfo(flags, index, at + 16)
            if any(rsv):
                raise _err("EADD SECINFO reserved bytes 8..47 must be zero", index, at + 24)
            self.last_eadd = offset
            self.page_chunks = 0
            self.on_eadd(offset, flags, pos)
            used = HEADER_SIZE
        elif tag in (TAG_ECREATE, TAG_UNSIZED):
            name = "ECREATE" if tag == TAG_ECREATE else "UNSIZED"
            if self.created:
                raise _err(f"{name} may only be the first record", index, at)
            _, ssaframesize, size_field, rsv = _ECREATE.unpack_from(buf, pos)
            if any(rsv):
                raise _err(f"{name} reserved bytes 20..63 must be zero", index, at + 20)
            patch: int | None = None
            if tag == TAG_UNSIZED:
                if self.size_override is None:
                    raise UsageError(
                        "this SGXS stream is UNSIZED: its MRENCLAVE depends on the enclave "
                        "size; give the size (--size)"
                    )
                patch = size_field
                size = self.size_override
                self.patch_page = patch - patch % PAGE_SIZE
            else:
                size = size_field
                if self.size_override is not None and self.size_override != size:
                    raise UsageError(
                        f"--size 0x{self.size_override:x} given for a sized stream "
                        f"(ECREATE says 0x{size:x})"
                    )
            if size < MIN_ENCLAVE_SIZE or size & (size - 1):
                raise _err(
                    f"enclave SIZE 0x{size:x} is not a power of two of at least 0x2000",
                    index,
                    at + 12,
                )
            if ssaframesize == 0:
                raise _err("SSAFRAMESIZE must be at least 1", index, at + 8)
            self.size = size
            self.created = True
            self.on_create(ssaframesize, size, patch, pos)
            used = HEADER_SIZE
        else:
            if not self.created:
                raise _err(
                    "not an SGXS stream: the first record must be ECREATE",
                    index,
                    at,
                    detail=[f"found tag {_tag_text(tag)}"],
                )
            raise _err(f"unknown record tag {_tag_text(tag)}", index, at)
        if index == 0 and tag not in (TAG_ECREATE, TAG_UNSIZED):
            raise _err("the first record must be ECREATE", index, at)
        self.index += 1
        self.file_offset += used
        return used

    def feed(self, buf: memoryview) -> int:
        pos = 0
        end = len(buf)
        if self.file_offset == 0 and looks_like_elf(bytes(buf[:4])):
            raise MalformedInput(ELF_REFUSAL)
        while pos < end:
            if self.created and bytes(buf[pos : pos + 8]) == TAG_EADD:
                used = self._bulk(buf, pos)
                if used:
                    pos += used
                    continue
            used = self._record(buf, pos)
            if not used:
                break
            pos += used
        return pos

    def finish(self, leftover: int) -> None:
        if leftover:
            raise _err(
                f"the file ends inside a record ({leftover} bytes left over)",
                self.index,
                self.file_offset,
            )
        if not self.created:
            raise MalformedInput("not an SGXS stream: the file is empty", offset=0)


def _check_secinfo(flags: int, index: int, at: int) -> None:
    if flags & SECINFO_FLAGS_RESERVED_MASK:
        raise _err(f"EADD SECINFO.FLAGS has reserved bits set (0x{flags:x})", index, at)
    page_type = (flags & SECINFO_PAGE_TYPE_MASK) >> SECINFO_PAGE_TYPE_SHIFT
    if page_type not in _VALID_TYPES:
        raise _err(f"EADD page type {page_type} is neither REG (2) nor TCS (1)", index, at + 1)
    if page_type == PageType.TCS and flags & SECINFO_PERMISSION_MASK:
        raise _err("a TCS page must have no permission bits", index, at)


class _Hasher:
    """Consumes scanner callbacks and hashes the stream (patched for UNSIZED streams)."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.buf: memoryview = memoryview(b"")
        self.hashed_to = 0  # position in the current buffer up to which bytes are hashed
        self.patch: int | None = None
        self.size = 0

    def start(self, buf: memoryview) -> None:
        self.buf = buf
        self.hashed_to = 0

    def flush(self, upto: int) -> None:
        if upto > self.hashed_to:
            self.hash.update(self.buf[self.hashed_to : upto])
        self.hashed_to = max(self.hashed_to, upto)

    def on_create(self, ssaframesize: int, size: int, patch: int | None, pos: int) -> None:
        self.size = size
        self.patch = patch
        if patch is not None:
            self.flush(pos)
            self.hash.update(ecreate_block(ssaframesize, size))
            self.hashed_to = pos + HEADER_SIZE

    def on_full_pages(self, run: memoryview, offsets: np.ndarray, flags: np.ndarray) -> None:
        """Bytes of a validated run are hashed as they are (lazily, in one update)."""

    def on_eadd(self, offset: int, flags: int, pos: int) -> None:
        """An EADD record is hashed as it is."""

    def on_chunk(self, offset: int, record: memoryview, measured: bool, pos: int) -> None:
        if not measured:
            self.flush(pos)
            self.hashed_to = pos + CHUNK_RECORD_SIZE
            return
        if self.patch is not None and _overlaps_patch(offset, self.patch):
            self.flush(pos)
            data = _patched(offset, bytes(record[HEADER_SIZE:]), self.patch, self.size)
            self.hash.update(eextend_header(offset) + data)
            self.hashed_to = pos + CHUNK_RECORD_SIZE


def _overlaps_patch(chunk_offset: int, patch: int) -> bool:
    return chunk_offset < patch + 8 and patch < chunk_offset + EEXTEND_CHUNK


def _patched(chunk_offset: int, data: bytes, patch: int, size: int) -> bytes:
    """Write the enclave size as u64 LE at enclave offset ``patch`` into a chunk's data."""
    out = bytearray(data)
    value = size.to_bytes(8, "little")
    for i in range(8):
        pos = patch + i - chunk_offset
        if 0 <= pos < EEXTEND_CHUNK:
            out[pos] = value[i]
    return bytes(out)


class _Tee:
    """Hands every scanner callback to a hasher and a page builder (one pass, both results)."""

    def __init__(self, hasher: _Hasher, builder: _PageBuilder) -> None:
        self.hasher = hasher
        self.builder = builder

    def on_create(self, ssaframesize: int, size: int, patch: int | None, pos: int) -> None:
        self.hasher.on_create(ssaframesize, size, patch, pos)
        self.builder.on_create(ssaframesize, size, patch, pos)

    def on_full_pages(self, run: memoryview, offsets: np.ndarray, flags: np.ndarray) -> None:
        self.builder.on_full_pages(run, offsets, flags)

    def on_eadd(self, offset: int, flags: int, pos: int) -> None:
        self.builder.on_eadd(offset, flags, pos)

    def on_chunk(self, offset: int, record: memoryview, measured: bool, pos: int) -> None:
        self.hasher.on_chunk(offset, record, measured, pos)
        self.builder.on_chunk(offset, record, measured, pos)


def _scan(
    stream: BinaryIO,
    sink: _Hasher | _PageBuilder | _Tee,
    *,
    size: int | None,
    read_size: int,
    progress: ProgressFn | None,
) -> None:
    """Feed ``stream`` to the canonical-form scanner in ``read_size`` reads, reporting to ``sink``.

    Memory is one buffer of ``read_size`` plus a page record, whatever the stream's length.
    """
    if read_size % HEADER_SIZE or read_size < FULL_PAGE_RECORD_SIZE:
        raise UsageError("read_size must be a multiple of 64 of at least 5184")
    hasher = sink.hasher if isinstance(sink, _Tee) else sink if isinstance(sink, _Hasher) else None
    scanner = _Scanner(
        size_override=size,
        on_create=sink.on_create,
        on_full_pages=sink.on_full_pages,
        on_eadd=sink.on_eadd,
        on_chunk=sink.on_chunk,
    )
    builder = (
        sink.builder if isinstance(sink, _Tee) else sink if isinstance(sink, _PageBuilder) else None
    )
    if builder is not None:
        builder.locate = lambda: (scanner.index, scanner.file_offset)
    # Double-size buffer: a partial record at the end of one read moves to the front.
    buffer = bytearray(read_size + FULL_PAGE_RECORD_SIZE)
    view = memoryview(buffer)
    carry = 0
    while True:
        got = stream.readinto(view[carry : carry + read_size])  # type: ignore[attr-defined]
        if not got:
            break
        filled = carry + got
        current = view[:filled]
        if hasher is not None:
            hasher.start(current)
        used = scanner.feed(current)
        if hasher is not None:
            hasher.flush(used)
        carry = filled - used
        if carry:
            buffer[:carry] = buffer[used:filled]
        if progress is not None:
            progress(got)
    scanner.finish(carry)


def measure_stream(
    stream: BinaryIO,
    *,
    size: int | None = None,
    read_size: int = DEFAULT_READ_SIZE,
    progress: ProgressFn | None = None,
) -> bytes:
    """MRENCLAVE of an SGXS stream, checking canonical form, in constant memory.

    Args:
        stream: a binary file object positioned at the start of the stream.
        size: the enclave size for an UNSIZED stream (refused for a sized one that disagrees).
        read_size: bytes per read (a multiple of 64).
        progress: called with the bytes consumed after each read.

    Raises:
        MalformedInput: the stream is not canonical SGXS (names the record and file offset).
        UsageError: an UNSIZED stream without ``size``, or a ``size`` that contradicts ECREATE.
    """
    hasher = _Hasher()
    _scan(stream, hasher, size=size, read_size=read_size, progress=progress)
    return hasher.hash.digest()


def measure_bytes(data: bytes | bytearray | memoryview, *, size: int | None = None) -> bytes:
    """MRENCLAVE of an in-memory SGXS stream."""
    return measure_stream(io.BytesIO(data), size=size)


def parse_stream(
    stream: BinaryIO,
    *,
    size: int | None = None,
    read_size: int = DEFAULT_READ_SIZE,
    progress: ProgressFn | None = None,
) -> SgxsImage:
    """Parse an SGXS stream into an :class:`SgxsImage`, checking canonical form.

    Time is linear in the stream's length; memory is the pages the stream carries (a page
    without data shares one zero page) plus one read buffer. Arguments and errors as
    :func:`measure_stream`; for an UNSIZED stream ``size`` is patched into the page data.
    """
    builder = _PageBuilder()
    _scan(stream, builder, size=size, read_size=read_size, progress=progress)
    return builder.finish()


def load_stream(
    stream: BinaryIO,
    *,
    size: int | None = None,
    read_size: int = DEFAULT_READ_SIZE,
    progress: ProgressFn | None = None,
) -> tuple[SgxsImage, bytes]:
    """The parsed image and its MRENCLAVE, in one pass (see :func:`parse_stream`)."""
    hasher = _Hasher()
    builder = _PageBuilder()
    _scan(stream, _Tee(hasher, builder), size=size, read_size=read_size, progress=progress)
    return builder.finish(), hasher.hash.digest()


_ZERO_PAGE = bytes(PAGE_SIZE)


class _PageBuilder:
    """Consumes scanner callbacks and collects pages (for loading an image).

    A page that carries no chunk shares one zero page object, so the memory a parsed image
    takes grows with the bytes of the stream, not with the pages its EADD records name (a
    64-byte bare EADD would otherwise cost 4 KiB).
    """

    def __init__(self) -> None:
        self.pages: list[SgxsPage] = []
        self.ssaframesize = 0
        self.size = 0
        self.patch: int | None = None
        self._offset = -1
        self._flags = 0
        self._data: bytearray | None = None
        self._measured = 0
        self._unmeasured = 0
        self.locate: Callable[[], tuple[int, int]] = lambda: (0, 0)
        """(record index, file offset) of the record being reported; set by the scan."""

    def _close(self) -> None:
        if self._offset >= 0:
            data = _ZERO_PAGE if self._data is None else bytes(self._data)
            self.pages.append(
                SgxsPage(self._offset, self._flags, data, self._measured, self._unmeasured)
            )
            self._offset = -1

    def on_create(self, ssaframesize: int, size: int, patch: int | None, pos: int) -> None:
        self.ssaframesize = ssaframesize
        self.size = size
        self.patch = patch

    def on_full_pages(self, run: memoryview, offsets: np.ndarray, flags: np.ndarray) -> None:
        self._close()
        data = np.frombuffer(run, dtype=np.uint8).reshape(len(offsets), FULL_PAGE_RECORD_SIZE)
        payload = data[:, HEADER_SIZE:].reshape(len(offsets), CHUNKS_PER_PAGE, CHUNK_RECORD_SIZE)
        pages = payload[:, :, HEADER_SIZE:].reshape(len(offsets), PAGE_SIZE)
        for i, (offset, flag) in enumerate(zip(offsets.tolist(), flags.tolist(), strict=True)):
            self.pages.append(SgxsPage(offset, flag, pages[i].tobytes(), 0xFFFF, 0))

    def on_eadd(self, offset: int, flags: int, pos: int) -> None:
        self._close()
        self._offset = offset
        self._flags = flags
        self._data = None
        self._measured = 0
        self._unmeasured = 0

    def on_chunk(self, offset: int, record: memoryview, measured: bool, pos: int) -> None:
        rel = offset - self._offset
        if measured and self._measured >> (rel // EEXTEND_CHUNK):
            # The order of a page's EEXTENDs is part of MRENCLAVE; a page image keeps only
            # which chunks are measured, so it could not reproduce this stream when loaded.
            index, at = self.locate()
            raise _err(
                f"EEXTEND at 0x{offset:x} comes after a higher chunk of its page; "
                "loading supports ascending chunk order only (measuring is unaffected)",
                index,
                at,
            )
        if self._data is None:
            self._data = bytearray(PAGE_SIZE)
        self._data[rel : rel + EEXTEND_CHUNK] = record[HEADER_SIZE:]
        if measured:
            self._measured |= 1 << (rel // EEXTEND_CHUNK)
        else:
            self._unmeasured |= 1 << (rel // EEXTEND_CHUNK)

    def finish(self) -> SgxsImage:
        self._close()
        pages = self.pages
        if self.patch is not None:
            pages = [_patch_page(p, self.patch, self.size) for p in pages]
        return SgxsImage(self.ssaframesize, self.size, tuple(pages), self.patch)


def _patch_page(page: SgxsPage, patch: int, size: int) -> SgxsPage:
    if not page.offset <= patch < page.offset + PAGE_SIZE and not (
        page.offset <= patch + 7 < page.offset + PAGE_SIZE
    ):
        return page
    data = bytearray(page.data)
    value = size.to_bytes(8, "little")
    for i in range(8):
        rel = patch + i - page.offset
        if 0 <= rel < PAGE_SIZE:
            data[rel] = value[i]
    return SgxsPage(page.offset, page.secinfo_flags, bytes(data), page.measured, page.unmeasured)


def iter_records(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(record index, file offset, tag) of each record, without canonical checks (for tools)."""
    pos = 0
    index = 0
    while pos + HEADER_SIZE <= len(data):
        tag = data[pos : pos + 8]
        yield index, pos, tag
        pos += CHUNK_RECORD_SIZE if tag in (TAG_EEXTEND, TAG_UNMEASRD) else HEADER_SIZE
        index += 1


def parse_sgxs(data: bytes | bytearray | memoryview, *, size: int | None = None) -> SgxsImage:
    """Parse an in-memory SGXS stream (see :func:`parse_stream`).

    Raises:
        MalformedInput: the stream is not canonical SGXS (names the record and file offset).
        UsageError: an UNSIZED stream without ``size``.
    """
    return parse_stream(io.BytesIO(data), size=size)


def write_sgxs(image: SgxsImage) -> bytes:
    """Serialize an image as a canonical SGXS stream (ECREATE, then per page EADD and chunks).

    Chunks whose bit is set in ``measured`` become EEXTEND records, those in ``unmeasured``
    UNMEASRD records; an image with ``unsized_offset`` is written as UNSIZED.

    Raises:
        UsageError: a page overlaps measured and unmeasured chunks or data is not one page.
    """
    out = bytearray()
    if image.unsized_offset is not None:
        out += _ECREATE.pack(TAG_UNSIZED, image.ssaframesize, image.unsized_offset, bytes(44))
    else:
        out += ecreate_block(image.ssaframesize, image.size)
    for page in image.pages:
        if len(page.data) != PAGE_SIZE:
            raise UsageError(f"page at 0x{page.offset:x}: data must be {PAGE_SIZE} bytes")
        if page.measured & page.unmeasured:
            raise UsageError(f"page at 0x{page.offset:x}: a chunk is measured and unmeasured")
        out += _EADD.pack(TAG_EADD, page.offset, page.secinfo_flags, bytes(40))
        for i in range(CHUNKS_PER_PAGE):
            bit = 1 << i
            if not (page.measured | page.unmeasured) & bit:
                continue
            tag = TAG_EEXTEND if page.measured & bit else TAG_UNMEASRD
            chunk_offset = page.offset + i * EEXTEND_CHUNK
            out += _EEXTEND.pack(tag, chunk_offset, bytes(48))
            out += page.data[i * EEXTEND_CHUNK : (i + 1) * EEXTEND_CHUNK]
    return bytes(out)
