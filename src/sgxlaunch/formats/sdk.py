"""Intel SGX SDK enclaves: ``enclave.signed.so`` (``../shared/reference/sdk-metadata-spec.md``).

An SDK enclave is an ELF64 shared object whose ``.note.sgxmeta`` section holds one or more
``metadata_t`` records: the SIGSTRUCT, the ECREATE values and a layout table saying which pages
the loader adds beyond the PT_LOAD segments (heap, per-thread stack, TCS, SSA, thread data,
guard pages) and a patch table the loader applies to its private copy of the file first.

This module reads such a file strictly and turns it into the measured operations the SDK's
loader performs (spec §5), as :class:`PageRun` runs of pages: the same operations an SGXS
stream records. Measurement, conversion to SGXS and loading into the emulated platform all
start from those runs:

* :meth:`LoadPlan.mrenclave` hashes the SGXS stream of the runs, built in batches of pages with
  vectorised copies (DESIGN.md "Hot paths");
* :meth:`LoadPlan.to_sgxs` writes that same stream as a canonical SGXS file;
* :meth:`LoadPlan.to_image` gives the :class:`~sgxlaunch.formats.sgxs.SgxsImage` the emulated
  loaders take.

Every malformed input raises :class:`~sgxlaunch.errors.MalformedInput` naming the ELF structure
or the metadata entry and the file offset. Nothing here opens files: the input is bytes (or any
buffer, such as an ``mmap``).

Decisions where the SDK leaves room, each documented in ``docs/sdk.md``:

* pages must come out in strictly increasing enclave offsets (every layout ``sgx_sign`` writes
  does), so that the operations form a canonical SGXS stream;
* text relocations (``DT_TEXTREL``) are refused (``sgx_sign`` refuses them too unless told
  ``-ignore-rel-error``);
* the metadata measured is the one an EDMM-capable loader (urts 3.3) selects; :func:`select`
  also gives a non-EDMM loader's choice (urts 1.5), which the emulated SGX1 platform uses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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
from sgxlaunch.arch.structs import Sigstruct
from sgxlaunch.errors import MalformedInput, UsageError
from sgxlaunch.formats.sgxs import SgxsImage, SgxsPage
from sgxlaunch.measure import TAG_EADD, TAG_EEXTEND, ecreate_block

# -- ELF (System V gABI, x86-64 psABI) -------------------------------------------------------

ELF_MAGIC = b"\x7fELF"
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_DYN = struct.Struct("<qQ")
ET_DYN = 3
EM_X86_64 = 62
PT_LOAD = 1
PT_DYNAMIC = 2
PT_TLS = 7
PF_X, PF_W, PF_R = 1, 2, 4
DT_NULL = 0
DT_TEXTREL = 22
DT_FLAGS = 30
DF_TEXTREL = 0x4
SHT_NOTE = 7

NOTE_SECTION = ".note.sgxmeta"
NOTE_NAME = b"sgx_metadata\x00"
NOTE_TYPE = 1
NOTE_DESC_OFFSET = 12 + len(NOTE_NAME)
"""25: the desc follows the *unpadded* 13-byte name (spec §1), not the ELF-standard 28."""

# -- metadata_t (spec §2) -------------------------------------------------------------------

METADATA_MAGIC = 0x86A80294635D0E4C
_META_HEADER = struct.Struct("<QQIIIIIIQQQ")
CSS_OFFSET = 64
DIRS_OFFSET = CSS_OFFSET + Sigstruct.SIZE  # 1872
_DIR = struct.Struct("<II")
_LAYOUT_ENTRY = struct.Struct("<HHIQIIQ")
_LAYOUT_GROUP = struct.Struct("<HHIQ16s")
_PATCH = struct.Struct("<QII16s")
_ELRANGE = struct.Struct("<QQQ")
_EXTEND = struct.Struct("<IIII")
ENTRY_SIZE = 32
DIR_PATCH, DIR_LAYOUT, DIR_ELRANGE, DIR_EXTEND = 0, 1, 2, 3
GROUP_FLAG = 0x1000
MAJOR_VERSION_GAP = 10
"""Majors 11/12/13 are 1/2/3 with an ELRANGE configuration (``SGX_MAJOR_VERSION_GAP``)."""

PAGE_ATTR_EADD = 0x01
PAGE_ATTR_EEXTEND = 0x02
PAGE_ATTR_EREMOVE = 0x04
PAGE_ATTR_POST_ADD = 0x08
PAGE_ATTR_POST_REMOVE = 0x10
PAGE_ATTR_DYN_THREAD = 0x20
PAGE_ATTR_GROW_DOWN = 0x40
SI_FLAGS_TCS = 0x100

URTS_SGX1 = (1, 5)
"""The version a urts reports without EDMM (and in simulation): loads 1.x metadata only."""
URTS_EDMM = (3, 3)
"""The version an EDMM-capable urts (SDK 2.26) reports."""

_MAX_EXPANDED = 1 << 20
"""Layout records a table may expand to (groups repeated); a bound against crafted tables."""
_MIN_ENCLAVE_SIZE = 8192
MAX_ENCLAVE_SIZE = 1 << 36
"""The largest SECS.SIZE accepted: 2^MaxEnclaveSize_64 with the value 36 that current parts
report in CPUID.(EAX=12H,ECX=0):EDX[15:8]; the urts checks ``enclave_size`` against it."""

# Layout ids (spec §2.2): SDK 2.0 on, and the SDK 1.x numbering of the 1.3/1.4 era.
LAYOUT_IDS = {
    1: "HEAP_MIN",
    2: "HEAP_INIT",
    3: "HEAP_MAX",
    4: "TCS",
    5: "TD",
    6: "SSA",
    7: "STACK_MAX",
    8: "STACK_MIN",
    0x1009: "THREAD_GROUP",
    10: "GUARD",
    11: "HEAP_DYN_MIN",
    12: "HEAP_DYN_INIT",
    13: "HEAP_DYN_MAX",
    14: "TCS_DYN",
    15: "TD_DYN",
    16: "SSA_DYN",
    17: "STACK_DYN_MAX",
    18: "STACK_DYN_MIN",
    0x1013: "THREAD_GROUP_DYN",
    20: "RSRV_MIN",
    21: "RSRV_INIT",
    22: "RSRV_MAX",
    23: "USER_REGION",
}
LEGACY_LAYOUT_IDS = {
    1: "HEAP",
    2: "TCS",
    3: "TD",
    4: "SSA",
    5: "STACK",
    7: "GUARD",
    0x1006: "THREAD_GROUP",
}


def _round(value: int) -> int:
    return (value + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)


def _trim(value: int) -> int:
    return value & ~(PAGE_SIZE - 1)


def _bad(message: str, *, field: str, offset: int | None, detail: list[str] | None = None) -> None:
    raise MalformedInput(message, field=field, offset=offset, detail=detail or [])


# -- parsed structures ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """A program header the loader uses (PT_LOAD, or the PT_TLS that sizes thread data)."""

    index: int
    type: int
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int
    align: int
    header_offset: int = 0
    """File offset of its program header (named in errors)."""

    @property
    def secinfo_flags(self) -> int:
        """SECINFO.FLAGS of its pages: REG with R/W/X from PF_R/PF_W/PF_X (spec §5 step 5)."""
        perms = (
            (1 if self.flags & PF_R else 0)
            | (2 if self.flags & PF_W else 0)
            | (4 if self.flags & PF_X else 0)
        )
        return (int(PageType.REG) << SECINFO_PAGE_TYPE_SHIFT) | perms

    @property
    def permissions(self) -> str:
        return (
            ("r" if self.flags & PF_R else "-")
            + ("w" if self.flags & PF_W else "-")
            + ("x" if self.flags & PF_X else "-")
        )


@dataclass(frozen=True, slots=True)
class LayoutEntry:
    """A ``layout_entry_t``: ``page_count`` pages at ``rva`` (spec §2.2)."""

    index: int
    id: int
    name: str
    attributes: int
    page_count: int
    rva: int
    content_size: int
    content_offset: int
    si_flags: int


@dataclass(frozen=True, slots=True)
class LayoutGroup:
    """A ``layout_group_t``: repeat the ``entry_count`` preceding records ``load_times`` times."""

    index: int
    id: int
    name: str
    entry_count: int
    load_times: int
    load_step: int


@dataclass(frozen=True, slots=True)
class PatchEntry:
    """A ``patch_entry_t``: copy ``size`` bytes from metadata offset ``src`` to file ``dst``."""

    index: int
    dst: int
    src: int
    size: int


@dataclass(frozen=True, slots=True)
class Elrange:
    """An ``elrange_config_entry_t`` (major > 10)."""

    enclave_image_address: int
    elrange_start_address: int
    elrange_size: int


@dataclass(frozen=True, slots=True)
class ExtendEntry:
    """An ``extend_entry_t`` (SDK 2.24+; parsed and shown, it does not change MRENCLAVE)."""

    index: int
    entry_id: int
    size: int
    offset: int


@dataclass(frozen=True, slots=True)
class Metadata:
    """One ``metadata_t`` of the note (spec §2).

    Attributes:
        position: its offset in the metadata area (the note's desc).
        file_offset: its offset in the file (``None`` for a bare metadata area).
        raw: its ``size`` bytes.
    """

    position: int
    file_offset: int | None
    major: int
    minor: int
    size: int
    tcs_policy: int
    ssa_frame_size: int
    max_save_buffer_size: int
    desired_misc_select: int
    tcs_min_pool: int
    enclave_size: int
    attributes_flags: int
    attributes_xfrm: int
    enclave_css: bytes
    dirs: tuple[tuple[int, int], ...]
    layout: tuple[LayoutEntry | LayoutGroup, ...]
    patches: tuple[PatchEntry, ...]
    elrange: Elrange | None
    extends: tuple[ExtendEntry, ...]
    raw: bytes

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def version_number(self) -> int:
        return (self.major << 32) | self.minor

    @property
    def sigstruct(self) -> Sigstruct:
        """The SIGSTRUCT (``enclave_css``), parsed strictly.

        Raises:
            MalformedInput: it is not a valid SIGSTRUCT (an enclave not yet signed holds zeros).
        """
        try:
            return Sigstruct.from_bytes(self.enclave_css)
        except MalformedInput as exc:
            raise MalformedInput(
                f"metadata {self.version} at 0x{self._where:x}: enclave_css is not a valid "
                f"SIGSTRUCT ({exc.args[0]})",
                field=f"metadata[{self.version}].enclave_css"
                + (f".{exc.field}" if exc.field else ""),
                offset=self._where + CSS_OFFSET + (exc.offset or 0),
            ) from None

    @property
    def _where(self) -> int:
        return self.position if self.file_offset is None else self.file_offset

    @property
    def secs_size(self) -> int:
        """SECS.SIZE ECREATE receives: ``enclave_size``, or the ELRANGE size (major > 10)."""
        return self.elrange.elrange_size if self.elrange is not None else self.enclave_size

    def expanded(self) -> list[tuple[LayoutEntry, int]]:
        """Layout entries in loader order with groups repeated: ``(entry, delta)`` pairs.

        This is ``build_contexts()`` (spec §2.2, §5 step 6): a group record loads the
        ``entry_count`` records before it again at ``delta = j * load_step``, j = 1..load_times.
        """
        out: list[tuple[LayoutEntry, int]] = []
        for pos, record in enumerate(self.layout):
            if isinstance(record, LayoutEntry):
                out.append((record, 0))
                continue
            first = pos - record.entry_count
            for j in range(1, record.load_times + 1):
                delta = j * record.load_step
                for item in self.layout[first:pos]:
                    assert isinstance(item, LayoutEntry)
                    out.append((item, delta))
        return out


@dataclass(frozen=True, slots=True)
class LayoutSummary:
    """What ``sgx_sign dump`` users look for, derived from a metadata's layout table."""

    tcs_count: int
    stack_bytes: int
    heap_bytes: int
    eadd_pages: int
    measured_pages: int
    dynamic_pages: int


def summarize(metadata: Metadata) -> LayoutSummary:
    """Thread, stack and heap sizes and page counts of a metadata's layout (groups expanded).

    ``eadd_pages``/``measured_pages`` count layout pages only (segments are not in the
    metadata); ``dynamic_pages`` are POST_ADD pages added at run time (SGX2), never measured.
    Stack is per static thread (STACK pages EADDed ÷ TCS count).
    """
    tcs = stack = heap = eadd = measured = dynamic = 0
    for entry, _ in metadata.expanded():
        name = entry.name
        if entry.attributes & PAGE_ATTR_EADD:
            if entry.content_offset or entry.si_flags:
                eadd += entry.page_count
                if entry.attributes & PAGE_ATTR_EEXTEND or (
                    entry.content_offset and entry.si_flags != SI_FLAGS_TCS
                ):
                    measured += entry.page_count
            if name.startswith("TCS") and "DYN" not in name:
                tcs += entry.page_count
            if name.startswith("STACK") and "DYN" not in name:
                stack += entry.page_count * PAGE_SIZE
        elif entry.attributes & PAGE_ATTR_POST_ADD:
            dynamic += entry.page_count
        if name.startswith("HEAP") and "DYN" not in name:
            heap += entry.page_count * PAGE_SIZE
    return LayoutSummary(
        tcs_count=tcs,
        stack_bytes=stack // tcs if tcs else stack,
        heap_bytes=heap,
        eadd_pages=eadd,
        measured_pages=measured,
        dynamic_pages=dynamic,
    )


# -- the metadata area -------------------------------------------------------------------------


def _dir_count(major: int, minor: int) -> int:
    """DIR_NUM of the SDK that wrote this version: 4 from SDK 2.24 (1.5, 3.2, 3.3), else 2."""
    base = major % MAJOR_VERSION_GAP
    return 4 if (base == 1 and minor >= 5) or (base == 3 and minor >= 2) else 2


def parse_metadata_area(
    area: bytes | bytearray | memoryview, *, file_offset: int | None = None
) -> tuple[Metadata, ...]:
    """Every ``metadata_t`` of a note's desc, back to back (spec §1, §3).

    The walk stops at the first record whose magic is not METADATA_MAGIC (``get_metadata()``);
    a record is checked as the urts's ``validate_metadata()`` checks it, plus strict bounds on
    every table (each named with its offset).

    Args:
        area: the note's desc (``.note.sgxmeta`` from offset 25).
        file_offset: where ``area`` starts in the file (offsets in errors are then file offsets).

    Raises:
        MalformedInput: no metadata, or a malformed record.
    """
    area = bytes(area)
    base = 0 if file_offset is None else file_offset
    copies: list[Metadata] = []
    pos = 0
    while pos + 8 <= len(area) and int.from_bytes(area[pos : pos + 8], "little") == METADATA_MAGIC:
        meta = _parse_metadata(area, pos, file_offset)
        copies.append(meta)
        pos += meta.size
    if not copies:
        _bad(
            "the .note.sgxmeta desc holds no metadata (magic 0x86a80294635d0e4c missing: the "
            "enclave has not been laid out and signed by sgx_sign)",
            field="metadata.magic_num",
            offset=base,
        )
    return tuple(_name_layout(m) for m in copies)


def _uses_legacy_ids(meta: Metadata) -> bool:
    """Whether the layout uses SDK 1.x ids: 1.3 always; 1.4 only when written by SDK 1.9.

    SDK 2.0+ also writes 1.4 records (Intel's PCE/QE/TDQE carry them) with the new ids; every
    such layout has a GUARD (10), which SDK 1.x numbered 7. Ids only name entries: they never
    change what is loaded or measured.
    """
    if meta.major % MAJOR_VERSION_GAP != 1 or meta.minor > 4:
        return False
    return meta.minor <= 3 or not any(r.id in (8, 10, 0x1009) for r in meta.layout)


def _name_layout(meta: Metadata) -> Metadata:
    names = LEGACY_LAYOUT_IDS if _uses_legacy_ids(meta) else LAYOUT_IDS
    layout = tuple(_renamed(r, names.get(r.id, f"0x{r.id:x}")) for r in meta.layout)
    return dataclasses.replace(meta, layout=layout)


def _renamed(record: LayoutEntry | LayoutGroup, name: str) -> LayoutEntry | LayoutGroup:
    if isinstance(record, LayoutEntry):
        return LayoutEntry(
            record.index,
            record.id,
            name,
            record.attributes,
            record.page_count,
            record.rva,
            record.content_size,
            record.content_offset,
            record.si_flags,
        )
    return LayoutGroup(
        record.index, record.id, name, record.entry_count, record.load_times, record.load_step
    )


def _parse_metadata(area: bytes, pos: int, file_offset: int | None) -> Metadata:
    at = pos if file_offset is None else file_offset + pos
    head_end = pos + _META_HEADER.size
    if head_end > len(area):
        _bad(
            f"metadata at 0x{at:x}: the area ends inside its header",
            field="metadata.header",
            offset=at,
        )
    (
        _magic,
        version,
        size,
        tcs_policy,
        ssa_frame_size,
        max_save,
        misc_select,
        tcs_min_pool,
        enclave_size,
        attr_flags,
        attr_xfrm,
    ) = _META_HEADER.unpack_from(area, pos)
    major, minor = version >> 32, version & 0xFFFFFFFF
    label = f"metadata {major}.{minor} at 0x{at:x}"
    fld = f"metadata[{major}.{minor}]"
    ndirs = _dir_count(major, minor)
    header_size = DIRS_OFFSET + _DIR.size * ndirs
    if major % MAJOR_VERSION_GAP not in (1, 2, 3) or major > 13:
        _bad(
            f"{label}: unsupported metadata version (supported: 1.x, 2.x, 3.x, and 11.x-13.x "
            "with ELRANGE)",
            field=f"{fld}.version",
            offset=at + 8,
        )
    if size == 0:
        _bad(f"{label}: size is 0", field=f"{fld}.size", offset=at + 16)
    if size < header_size or pos + size > len(area):
        _bad(
            f"{label}: size 0x{size:x} must cover the {header_size}-byte header and stay inside "
            f"the note's desc ({len(area) - pos} bytes left)",
            field=f"{fld}.size",
            offset=at + 16,
        )
    raw = area[pos : pos + size]
    if tcs_policy > 1:
        _bad(
            f"{label}: tcs_policy {tcs_policy} is neither 0 (bind) nor 1 (unbind)",
            field=f"{fld}.tcs_policy",
            offset=at + 20,
        )
    if not 1 <= ssa_frame_size <= 4:
        _bad(
            f"{label}: ssa_frame_size {ssa_frame_size} is outside 1..4 pages",
            field=f"{fld}.ssa_frame_size",
            offset=at + 24,
        )
    if (
        enclave_size < _MIN_ENCLAVE_SIZE
        or enclave_size > MAX_ENCLAVE_SIZE
        or enclave_size & (enclave_size - 1)
    ):
        _bad(
            f"{label}: enclave_size 0x{enclave_size:x} is not a power of two in "
            f"[0x2000, 0x{MAX_ENCLAVE_SIZE:x}]",
            field=f"{fld}.enclave_size",
            offset=at + 40,
        )
    dirs = tuple(_DIR.unpack_from(raw, DIRS_OFFSET + i * _DIR.size) for i in range(ndirs))
    for i, (offset, length) in enumerate(dirs):
        if length and (offset < header_size or offset + length > size):
            _bad(
                f"{label}: dirs[{i}] [0x{offset:x}, +0x{length:x}) is outside the data area "
                f"[0x{header_size:x}, 0x{size:x})",
                field=f"{fld}.dirs[{i}]",
                offset=at + DIRS_OFFSET + i * _DIR.size,
            )

    def table(index: int, entry_size: int, name: str) -> tuple[int, int]:
        offset, length = dirs[index] if index < ndirs else (0, 0)
        if length % entry_size:
            _bad(
                f"{label}: the {name} table's size 0x{length:x} is not a multiple of {entry_size}",
                field=f"{fld}.dirs[{index}].size",
                offset=at + DIRS_OFFSET + index * _DIR.size + 4,
            )
        return offset, length // entry_size

    layout = _parse_layout(raw, *table(DIR_LAYOUT, ENTRY_SIZE, "layout"), at, label, fld)
    patches = _parse_patches(raw, *table(DIR_PATCH, ENTRY_SIZE, "patch"), at, label, fld)
    elrange: Elrange | None = None
    if major > MAJOR_VERSION_GAP:
        offset, count = table(DIR_ELRANGE, _ELRANGE.size, "ELRANGE")
        if count != 1:
            _bad(
                f"{label}: an ELRANGE metadata (major > 10) needs exactly one ELRANGE entry "
                f"(found {count})",
                field=f"{fld}.dirs[{DIR_ELRANGE}]",
                offset=at + DIRS_OFFSET,
            )
        elrange = Elrange(*_ELRANGE.unpack_from(raw, offset))
        _check_elrange(elrange, enclave_size, at + offset, label, fld)
    ext_offset, ext_count = table(DIR_EXTEND, _EXTEND.size, "extend")
    extends = []
    for i in range(ext_count):
        entry_id, length, offset, _reserved = _EXTEND.unpack_from(raw, ext_offset + 16 * i)
        if offset + length > size:
            _bad(
                f"{label}: extend entry {i} [0x{offset:x}, +0x{length:x}) is outside the metadata",
                field=f"{fld}.extend[{i}]",
                offset=at + ext_offset + 16 * i,
            )
        extends.append(ExtendEntry(i, entry_id, length, offset))
    meta = Metadata(
        position=pos,
        file_offset=None if file_offset is None else at,
        major=major,
        minor=minor,
        size=size,
        tcs_policy=tcs_policy,
        ssa_frame_size=ssa_frame_size,
        max_save_buffer_size=max_save,
        desired_misc_select=misc_select,
        tcs_min_pool=tcs_min_pool,
        enclave_size=enclave_size,
        attributes_flags=attr_flags,
        attributes_xfrm=attr_xfrm,
        enclave_css=raw[CSS_OFFSET:DIRS_OFFSET],
        dirs=dirs,
        layout=layout,
        patches=patches,
        elrange=elrange,
        extends=tuple(extends),
        raw=raw,
    )
    _check_layout_ranges(meta, at, label, fld, dirs[DIR_LAYOUT][0])
    return meta


def _check_elrange(e: Elrange, enclave_size: int, at: int, label: str, fld: str) -> None:
    size = e.elrange_size
    if size < _MIN_ENCLAVE_SIZE or size > MAX_ENCLAVE_SIZE or size & (size - 1):
        _bad(
            f"{label}: elrange_size 0x{size:x} is not a power of two in "
            f"[0x2000, 0x{MAX_ENCLAVE_SIZE:x}]",
            field=f"{fld}.elrange.elrange_size",
            offset=at + 16,
        )
    start, image = e.elrange_start_address, e.enclave_image_address
    if (
        start % PAGE_SIZE
        or image % PAGE_SIZE
        or not start <= image <= image + enclave_size <= (start + size)
    ):
        _bad(
            f"{label}: the image [0x{image:x}, +0x{enclave_size:x}) is not page-aligned inside "
            f"the ELRANGE [0x{start:x}, +0x{size:x})",
            field=f"{fld}.elrange",
            offset=at,
        )


def _parse_layout(
    raw: bytes, offset: int, count: int, at: int, label: str, fld: str
) -> tuple[LayoutEntry | LayoutGroup, ...]:
    records: list[LayoutEntry | LayoutGroup] = []
    for i in range(count):
        pos = offset + ENTRY_SIZE * i
        ident = int.from_bytes(raw[pos : pos + 2], "little")
        where = at + pos
        if ident & GROUP_FLAG:
            _, entry_count, load_times, load_step, reserved = _LAYOUT_GROUP.unpack_from(raw, pos)
            if any(reserved):
                _bad(
                    f"{label}: layout[{i}] (group 0x{ident:x}) reserved bytes are not zero",
                    field=f"{fld}.layout[{i}].reserved",
                    offset=where + 16,
                )
            if not 1 <= entry_count <= i or any(
                isinstance(r, LayoutGroup) for r in records[i - entry_count :]
            ):
                _bad(
                    f"{label}: layout[{i}] (group 0x{ident:x}) repeats {entry_count} records but "
                    f"only {i} precede it, or a group is among them (groups do not nest)",
                    field=f"{fld}.layout[{i}].entry_count",
                    offset=where + 2,
                )
            if load_step % PAGE_SIZE:
                _bad(
                    f"{label}: layout[{i}] (group 0x{ident:x}) load_step 0x{load_step:x} is not "
                    "page-aligned",
                    field=f"{fld}.layout[{i}].load_step",
                    offset=where + 8,
                )
            records.append(LayoutGroup(i, ident, "", entry_count, load_times, load_step))
            continue
        _, attributes, page_count, rva, content_size, content_offset, si_flags = (
            _LAYOUT_ENTRY.unpack_from(raw, pos)
        )
        entry = LayoutEntry(
            i, ident, "", attributes, page_count, rva, content_size, content_offset, si_flags
        )
        _check_entry(entry, len(raw), where, label, fld)
        records.append(entry)
    return tuple(records)


def _check_entry(entry: LayoutEntry, size: int, where: int, label: str, fld: str) -> None:
    name = f"{label}: layout[{entry.index}] (id 0x{entry.id:x})"
    efld = f"{fld}.layout[{entry.index}]"
    if entry.rva % PAGE_SIZE:
        _bad(
            f"{name} rva 0x{entry.rva:x} is not page-aligned", field=f"{efld}.rva", offset=where + 8
        )
    if entry.content_offset and (
        entry.content_offset + entry.content_size > size
        or entry.content_size > entry.page_count * PAGE_SIZE
    ):
        _bad(
            f"{name} content [0x{entry.content_offset:x}, +0x{entry.content_size:x}) is outside "
            f"the metadata (size 0x{size:x}) or larger than its {entry.page_count} page(s)",
            field=f"{efld}.content_offset",
            offset=where + 20,
        )
    if entry.attributes & PAGE_ATTR_EADD and (entry.content_offset or entry.si_flags):
        problem = _secinfo_problem(entry.si_flags)
        if problem:
            _bad(
                f"{name} si_flags 0x{entry.si_flags:x}: {problem}",
                field=f"{efld}.si_flags",
                offset=where + 24,
            )


def _secinfo_problem(flags: int) -> str | None:
    """Why EADD would refuse SECINFO.FLAGS (page type REG or TCS, no reserved bits), or None."""
    if flags & SECINFO_FLAGS_RESERVED_MASK:
        return "reserved SECINFO bits are set"
    page_type = (flags & SECINFO_PAGE_TYPE_MASK) >> SECINFO_PAGE_TYPE_SHIFT
    if page_type not in (int(PageType.REG), int(PageType.TCS)):
        return f"page type {page_type} is neither REG (2) nor TCS (1)"
    if page_type == PageType.TCS and flags & SECINFO_PERMISSION_MASK:
        return "a TCS page has no permission bits"
    return None


def _parse_patches(
    raw: bytes, offset: int, count: int, at: int, label: str, fld: str
) -> tuple[PatchEntry, ...]:
    patches = []
    for i in range(count):
        pos = offset + ENTRY_SIZE * i
        dst, src, size, reserved = _PATCH.unpack_from(raw, pos)
        if any(reserved):
            _bad(
                f"{label}: patch[{i}] reserved bytes are not zero",
                field=f"{fld}.patch[{i}].reserved",
                offset=at + pos + 16,
            )
        if src + size > len(raw):
            _bad(
                f"{label}: patch[{i}] source [0x{src:x}, +0x{size:x}) is outside the metadata "
                f"(size 0x{len(raw):x})",
                field=f"{fld}.patch[{i}].src",
                offset=at + pos + 8,
            )
        patches.append(PatchEntry(i, dst, src, size))
    return tuple(patches)


def _check_layout_ranges(meta: Metadata, at: int, label: str, fld: str, table: int) -> None:
    """Every layout range (groups expanded) inside enclave_size and non-overlapping (urts)."""
    total = 0
    for pos, record in enumerate(meta.layout):
        total += 1 if isinstance(record, LayoutEntry) else record.entry_count * record.load_times
        if total > _MAX_EXPANDED:
            _bad(
                f"{label}: the layout table expands to more than {_MAX_EXPANDED} entries",
                field=f"{fld}.layout[{pos}].load_times",
                offset=at + table + ENTRY_SIZE * pos + 4,
            )
    ranges = []
    for entry, delta in meta.expanded():
        start = entry.rva + delta
        end = start + entry.page_count * PAGE_SIZE
        if end > meta.enclave_size:
            _bad(
                f"{label}: layout[{entry.index}] ({entry.name or hex(entry.id)}) at rva "
                f"0x{start:x} with {entry.page_count} page(s) ends beyond enclave_size "
                f"0x{meta.enclave_size:x}",
                field=f"{fld}.layout[{entry.index}]",
                offset=at + table + ENTRY_SIZE * entry.index,
            )
        if entry.page_count:
            ranges.append((start, end, entry.index))
    ranges.sort()
    for (s0, e0, i0), (s1, _e1, i1) in itertools.pairwise(ranges):
        if s1 < e0:
            _bad(
                f"{label}: layout[{i1}] at rva 0x{s1:x} overlaps layout[{i0}] [0x{s0:x}, 0x{e0:x})",
                field=f"{fld}.layout[{i1}]",
                offset=at + table + ENTRY_SIZE * i1,
            )


def select(
    copies: tuple[Metadata, ...] | list[Metadata], urts: tuple[int, int] = URTS_EDMM
) -> Metadata:
    """The metadata a urts of version ``urts`` loads (spec §3, ``get_metadata()``).

    Every 2.x record is skipped (SDK 2.18+ urts), records whose major (mod 10) exceeds the urts's
    are skipped, and the highest version among the rest wins.

    Raises:
        UsageError: no record is loadable by that urts (e.g. 3.x only on a non-EDMM loader).
    """
    want = urts[0] % MAJOR_VERSION_GAP
    usable = [
        m
        for m in copies
        if m.major % MAJOR_VERSION_GAP != 2 and m.major % MAJOR_VERSION_GAP <= want
    ]
    if not usable:
        found = ", ".join(m.version for m in copies)
        raise UsageError(
            f"no metadata a urts {urts[0]}.{urts[1]} loads (found {found}): 3.x metadata needs "
            "an EDMM-capable (SGX2) platform, and 2.x is ignored by SDK 2.18+ loaders"
        )
    return max(usable, key=lambda m: m.version_number)


# -- the ELF file ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SdkEnclave:
    """A parsed SDK enclave file.

    Attributes:
        data: the file's bytes (as given; never modified).
        segments: the PT_LOAD program headers, in program-header order.
        tls: the PT_TLS program header, if any.
        note_offset: file offset of the ``.note.sgxmeta`` section.
        metadata_offset: file offset of the first ``metadata_t`` (``note_offset + 25``).
        metadata_area_size: the note's descsz (METADATA_SIZE of the building SDK).
        copies: every ``metadata_t`` of the note, in file order.
    """

    data: Any
    segments: tuple[Segment, ...]
    tls: Segment | None
    note_offset: int
    metadata_offset: int
    metadata_area_size: int
    copies: tuple[Metadata, ...]

    @property
    def primary(self) -> Metadata:
        """The first record: the newest format, the one ``sgx_sign`` measured from."""
        return self.copies[0]

    def select(self, urts: tuple[int, int] = URTS_EDMM) -> Metadata:
        """The record a urts of that version loads (see :func:`select`)."""
        return select(self.copies, urts)

    def plan(self, metadata: Metadata | None = None) -> LoadPlan:
        """The loader's operations for ``metadata`` (default: the EDMM urts's choice)."""
        return plan(self, self.select() if metadata is None else metadata)


def looks_like_elf(head: bytes) -> bool:
    """True if ``head`` starts with the ELF magic."""
    return head[:4] == ELF_MAGIC


def parse_sdk(data: Any) -> SdkEnclave:
    """Parse an SDK enclave ELF strictly (spec §1, §5 step 1).

    Checks, in order: the ELF header (ELF64, little-endian, version 1, ET_DYN, EM_X86_64, header
    and entry sizes); the program headers inside the file; every PT_LOAD inside the file,
    ``p_filesz <= p_memsz``, ``p_align`` a multiple of the page size, no two PT_LOAD sharing a
    page; no text relocations; the section headers and their string table inside the file;
    exactly one section named ``.note.sgxmeta``, with namesz 13, name ``sgx_metadata``, type 1,
    its desc inside the section and ``sh_size == ROUND_TO(25 + descsz, sh_addralign)``; then
    every ``metadata_t`` (:func:`parse_metadata_area`).

    Args:
        data: the file's bytes, or any buffer over them (``mmap``).

    Raises:
        MalformedInput: naming the ELF structure or metadata entry and the file offset.
    """
    view = memoryview(data).cast("B")
    size = len(view)
    if size < _EHDR.size or bytes(view[:4]) != ELF_MAGIC:
        _bad(
            "not an ELF file (an Intel SDK enclave is an ELF64 shared object)",
            field="e_ident",
            offset=0,
        )
    (
        ident,
        e_type,
        e_machine,
        e_version,
        _entry,
        e_phoff,
        e_shoff,
        _flags,
        e_ehsize,
        e_phentsize,
        e_phnum,
        e_shentsize,
        e_shnum,
        e_shstrndx,
    ) = _EHDR.unpack_from(view, 0)
    if ident[4] != 2:
        _bad(f"ELF class {ident[4]} is not ELFCLASS64 (2)", field="e_ident[EI_CLASS]", offset=4)
    if ident[5] != 1:
        _bad(f"ELF data {ident[5]} is not little-endian (1)", field="e_ident[EI_DATA]", offset=5)
    if ident[6] != 1 or e_version != 1:
        _bad("ELF version is not 1", field="e_version", offset=6 if ident[6] != 1 else 20)
    if e_type != ET_DYN:
        _bad(
            f"e_type {e_type} is not ET_DYN (3): an enclave is a shared object",
            field="e_type",
            offset=16,
        )
    if e_machine != EM_X86_64:
        _bad(f"e_machine {e_machine} is not EM_X86_64 (62)", field="e_machine", offset=18)
    if e_ehsize != _EHDR.size:
        _bad(f"e_ehsize {e_ehsize} is not 64", field="e_ehsize", offset=52)
    if e_phentsize != _PHDR.size:
        _bad(f"e_phentsize {e_phentsize} is not 56", field="e_phentsize", offset=54)
    if e_phnum == 0:
        _bad(
            "the ELF has no program headers (an enclave has PT_LOAD segments)",
            field="e_phnum",
            offset=56,
        )
    if e_phoff + e_phnum * _PHDR.size > size:
        _bad(
            f"the {e_phnum} program headers at 0x{e_phoff:x} are not inside the file "
            f"({size} bytes)",
            field="e_phoff",
            offset=32,
        )
    segments: list[Segment] = []
    tls: Segment | None = None
    dynamic: Segment | None = None
    for i in range(e_phnum):
        at = e_phoff + i * _PHDR.size
        p_type, p_flags, p_offset, p_vaddr, _paddr, p_filesz, p_memsz, p_align = _PHDR.unpack_from(
            view, at
        )
        seg = Segment(i, p_type, p_flags, p_offset, p_vaddr, p_filesz, p_memsz, p_align, at)
        if p_type == PT_LOAD:
            _check_segment(seg, size, at)
            segments.append(seg)
        elif p_type == PT_TLS:
            tls = seg
        elif p_type == PT_DYNAMIC:
            dynamic = seg
    if not segments:
        _bad("the ELF has no PT_LOAD segment", field="program headers", offset=e_phoff)
    ordered = sorted(segments, key=lambda s: s.vaddr)
    for a, b in itertools.pairwise(ordered):
        if _trim(b.vaddr) < _round(a.vaddr + a.memsz):
            _bad(
                f"PT_LOAD segment {b.index} at 0x{b.vaddr:x} shares pages with segment "
                f"{a.index} [0x{a.vaddr:x}, +0x{a.memsz:x})",
                field=f"phdr[{b.index}].p_vaddr",
                offset=e_phoff + b.index * _PHDR.size + 16,
            )
    if dynamic is not None:
        _check_no_textrel(view, dynamic, e_phoff)
    note_offset, note_size, note_align, note_index = _find_note(
        view, e_shoff, e_shnum, e_shentsize, e_shstrndx
    )
    desc_size = _check_note(view, note_offset, note_size, note_align, note_index)
    metadata_offset = note_offset + NOTE_DESC_OFFSET
    copies = parse_metadata_area(
        view[metadata_offset : metadata_offset + desc_size], file_offset=metadata_offset
    )
    return SdkEnclave(
        data=data,
        segments=tuple(segments),
        tls=tls,
        note_offset=note_offset,
        metadata_offset=metadata_offset,
        metadata_area_size=desc_size,
        copies=copies,
    )


def _check_segment(seg: Segment, size: int, at: int) -> None:
    fld = f"phdr[{seg.index}]"
    if seg.offset + seg.filesz > size:
        _bad(
            f"PT_LOAD segment {seg.index}: [0x{seg.offset:x}, +0x{seg.filesz:x}) is beyond the "
            f"end of the file ({size} bytes)",
            field=f"{fld}.p_filesz",
            offset=at + 32,
        )
    if seg.filesz > seg.memsz:
        _bad(
            f"PT_LOAD segment {seg.index}: p_filesz 0x{seg.filesz:x} exceeds p_memsz "
            f"0x{seg.memsz:x}",
            field=f"{fld}.p_memsz",
            offset=at + 40,
        )
    if seg.align % PAGE_SIZE or seg.align == 0:
        _bad(
            f"PT_LOAD segment {seg.index}: p_align 0x{seg.align:x} is not a multiple of the page "
            "size",
            field=f"{fld}.p_align",
            offset=at + 48,
        )
    if seg.vaddr + seg.memsz >= 1 << 63:
        _bad(
            f"PT_LOAD segment {seg.index}: [0x{seg.vaddr:x}, +0x{seg.memsz:x}) is out of range",
            field=f"{fld}.p_vaddr",
            offset=at + 16,
        )


def _check_no_textrel(view: memoryview, dynamic: Segment, e_phoff: int) -> None:
    at = e_phoff + dynamic.index * _PHDR.size
    if dynamic.offset + dynamic.filesz > len(view):
        _bad(
            "PT_DYNAMIC is beyond the end of the file",
            field=f"phdr[{dynamic.index}].p_filesz",
            offset=at + 32,
        )
    for pos in range(dynamic.offset, dynamic.offset + dynamic.filesz - 15, _DYN.size):
        tag, value = _DYN.unpack_from(view, pos)
        if tag == DT_NULL:
            break
        if tag == DT_TEXTREL or (tag == DT_FLAGS and value & DF_TEXTREL):
            _bad(
                "the enclave has text relocations (DT_TEXTREL): not supported (sgx_sign refuses "
                "them too unless told -ignore-rel-error)",
                field="DT_TEXTREL",
                offset=pos,
            )


def _find_note(
    view: memoryview, e_shoff: int, e_shnum: int, e_shentsize: int, e_shstrndx: int
) -> tuple[int, int, int, int]:
    size = len(view)
    if e_shnum == 0:
        _bad(
            "the ELF has no section headers (the .note.sgxmeta section is found through them)",
            field="e_shnum",
            offset=60,
        )
    if e_shentsize != _SHDR.size:
        _bad(f"e_shentsize {e_shentsize} is not 64", field="e_shentsize", offset=58)
    if e_shoff + e_shnum * _SHDR.size > size:
        _bad(
            f"the {e_shnum} section headers at 0x{e_shoff:x} are not inside the file "
            f"({size} bytes)",
            field="e_shoff",
            offset=40,
        )
    if e_shstrndx >= e_shnum:
        _bad(
            f"e_shstrndx {e_shstrndx} is not a section index (e_shnum {e_shnum})",
            field="e_shstrndx",
            offset=62,
        )
    headers = [_SHDR.unpack_from(view, e_shoff + i * _SHDR.size) for i in range(e_shnum)]
    strtab = headers[e_shstrndx]
    str_offset, str_size = strtab[4], strtab[5]
    if str_offset + str_size > size:
        _bad(
            "the section-name string table is beyond the end of the file",
            field=f"shdr[{e_shstrndx}].sh_size",
            offset=e_shoff + e_shstrndx * _SHDR.size + 32,
        )
    names = bytes(view[str_offset : str_offset + str_size])
    wanted = NOTE_SECTION.encode() + b"\x00"
    found: list[int] = []
    for i, h in enumerate(headers):
        name_at = h[0]
        if name_at < len(names) and names[name_at : name_at + len(wanted)] == wanted:
            found.append(i)
    if len(found) != 1:
        _bad(
            f"the ELF has {len(found)} sections named {NOTE_SECTION} (expected exactly one; "
            "without it this is not an SGX SDK enclave)",
            field=NOTE_SECTION,
            offset=e_shoff,
        )
    index = found[0]
    h = headers[index]
    if h[4] + h[5] > size:
        _bad(
            f"the {NOTE_SECTION} section [0x{h[4]:x}, +0x{h[5]:x}) is beyond the end of the file",
            field=f"{NOTE_SECTION}.sh_size",
            offset=e_shoff + index * _SHDR.size + 32,
        )
    return h[4], h[5], h[8], index


def _check_note(view: memoryview, offset: int, size: int, align: int, index: int) -> int:
    if size < NOTE_DESC_OFFSET:
        _bad(
            f"the {NOTE_SECTION} section ({size} bytes) is too small for the note header",
            field=f"{NOTE_SECTION}.sh_size",
            offset=offset,
        )
    namesz, descsz, note_type = struct.unpack_from("<III", view, offset)
    name = bytes(view[offset + 12 : offset + 12 + len(NOTE_NAME)])
    if namesz != len(NOTE_NAME) or name != NOTE_NAME:
        _bad(
            f"the {NOTE_SECTION} note's name is not 'sgx_metadata' with namesz 13",
            field=f"{NOTE_SECTION}.namesz",
            offset=offset,
        )
    if note_type != NOTE_TYPE:
        _bad(
            f"the {NOTE_SECTION} note's type {note_type} is not 1",
            field=f"{NOTE_SECTION}.type",
            offset=offset + 8,
        )
    used = NOTE_DESC_OFFSET + descsz
    rounded = used if align <= 1 else -(-used // align) * align
    if size != rounded:
        _bad(
            f"the {NOTE_SECTION} section size {size} is not 25 + descsz ({descsz}) rounded to "
            f"sh_addralign {align} ({rounded})",
            field=f"{NOTE_SECTION}.descsz",
            offset=offset + 4,
        )
    return int(descsz)


# -- the loader's operations ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PageRun:
    """``count`` consecutive pages EADDed with one SECINFO, all measured or none.

    Attributes:
        offset: enclave offset of the first page (page-aligned).
        count: pages.
        secinfo_flags: SECINFO.FLAGS given to EADD.
        measured: whether every page is EEXTENDed in full (16 chunks).
        source: an ``int``: the file offset of ``count`` contiguous pages of the file (the
            loader's copy, patched); ``bytes``: one page whose content every page of the run
            has.
        origin: what the pages come from (``"segment 1"``, ``"layout[4] TCS"``...).
    """

    offset: int
    count: int
    secinfo_flags: int
    measured: bool
    source: int | bytes
    origin: str

    @property
    def end(self) -> int:
        return self.offset + self.count * PAGE_SIZE


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """What the SDK loader does with an enclave: ECREATE values and the EADD/EEXTEND runs.

    Attributes:
        enclave: the parsed file.
        metadata: the record the plan follows.
        ssaframesize: SECS.SSAFRAMESIZE.
        size: SECS.SIZE.
        runs: the pages in load order (offsets strictly increasing).
        post_add: ``(offset, page count)`` of each POST_ADD layout entry (groups repeated):
            the pages an EDMM runtime adds after EINIT (EAUG, SGX2); never EADDed, never
            measured.
    """

    enclave: SdkEnclave
    metadata: Metadata
    ssaframesize: int
    size: int
    runs: tuple[PageRun, ...]
    post_add: tuple[tuple[int, int], ...] = ()

    @property
    def page_count(self) -> int:
        return sum(r.count for r in self.runs)

    @property
    def measured_page_count(self) -> int:
        return sum(r.count for r in self.runs if r.measured)

    def iter_stream(self, batch: int = 64, buffers: int = 1) -> Iterator[memoryview]:
        """The canonical SGXS stream of the plan in pieces.

        This *is* the SHA-256 input of MRENCLAVE: the ECREATE block, then per page the EADD
        block and, for a measured page, 16 EEXTEND headers each followed by its 256 bytes.
        Pieces are formatted ``batch`` pages at a time into ``buffers`` rotating buffers; a
        piece stays valid until ``buffers`` more pieces have been taken.
        """
        yield memoryview(ecreate_block(self.ssaframesize, self.size))
        writers = [_StreamWriter(batch) for _ in range(buffers)]
        file = np.frombuffer(self.enclave.data, dtype=np.uint8)
        k = 0
        for run in self.runs:
            for start in range(0, run.count, batch):
                yield writers[k % buffers].piece(run, start, file)
                k += 1

    def mrenclave(self) -> bytes:
        """MRENCLAVE: SHA-256 of :meth:`iter_stream`, one ``update`` per batch of pages."""
        h = hashlib.sha256()
        for piece in self.iter_stream():
            h.update(piece)
        return h.digest()

    def to_sgxs(self) -> bytes:
        """The equivalent canonical SGXS file (``sgxlaunch convert``)."""
        return b"".join(bytes(p) for p in self.iter_stream())

    def to_image(self) -> SgxsImage:
        """The pages as an :class:`SgxsImage` (what the emulated loaders take)."""
        pages: list[SgxsPage] = []
        data = self.enclave.data
        for run in self.runs:
            mask = 0xFFFF if run.measured else 0
            for k in range(run.count):
                if isinstance(run.source, bytes):
                    content = run.source
                else:
                    start = run.source + k * PAGE_SIZE
                    content = bytes(data[start : start + PAGE_SIZE])
                pages.append(SgxsPage(run.offset + k * PAGE_SIZE, run.secinfo_flags, content, mask))
        return SgxsImage(self.ssaframesize, self.size, tuple(pages))


_U64_EADD = int.from_bytes(TAG_EADD, "little")
_U64_EEXTEND = int.from_bytes(TAG_EEXTEND, "little")
_FULL = 64 + 16 * (64 + EEXTEND_CHUNK)  # EADD block + 16 EEXTENDs: 5184 bytes
_CHUNK_OFFSETS = np.arange(16, dtype=np.uint64) * np.uint64(EEXTEND_CHUNK)


class _StreamWriter:
    """Formats runs of pages as stream bytes, a batch of pages per numpy copy."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.full = np.zeros((batch, _FULL), dtype=np.uint8)
        words = self.full.view("<u8")
        words[:, 0] = _U64_EADD
        chunk_words = words[:, 8:].reshape(batch, 16, (64 + EEXTEND_CHUNK) // 8)
        chunk_words[:, :, 0] = _U64_EEXTEND
        self.eadd_offsets = words[:, 1]
        self.eadd_flags = words[:, 2]
        self.chunk_offsets = chunk_words[:, :, 1]
        self.data = self.full[:, 64:].reshape(batch, 16, 64 + EEXTEND_CHUNK)[:, :, 64:]
        self.bare = np.zeros((batch, 8), dtype="<u8")
        self.bare[:, 0] = _U64_EADD
        self.filled_with: bytes | None = None
        self.filled_rows = 0
        self.steps = np.arange(batch, dtype=np.uint64) * np.uint64(PAGE_SIZE)
        self.chunk_pattern = self.steps[:, None] + _CHUNK_OFFSETS
        self.flags_value = -1
        self.flags_rows = 0

    def piece(self, run: PageRun, start: int, file: np.ndarray) -> memoryview:
        """Stream bytes of up to ``batch`` pages of ``run`` from page ``start``.

        A handful of numpy calls per batch, none per page: the headers' constant words are
        written once, offsets are a precomputed pattern plus the batch's base, and SECINFO
        flags and a repeated page's content are rewritten only when they change.
        """
        n = min(self.batch, run.count - start)
        base = np.uint64(run.offset + start * PAGE_SIZE)
        if not run.measured:
            np.add(self.steps[:n], base, out=self.bare[:n, 1])
            self.bare[:n, 2] = run.secinfo_flags
            return self.bare[:n].data.cast("B")
        np.add(self.steps[:n], base, out=self.eadd_offsets[:n])
        np.add(self.chunk_pattern[:n], base, out=self.chunk_offsets[:n])
        if self.flags_value != run.secinfo_flags or self.flags_rows < n:
            self.eadd_flags[:n] = run.secinfo_flags
            self.flags_value, self.flags_rows = run.secinfo_flags, n
        if isinstance(run.source, bytes):
            if self.filled_with is not run.source or self.filled_rows < n:
                page = np.frombuffer(run.source, dtype=np.uint8).reshape(16, EEXTEND_CHUNK)
                self.data[:n] = page
                self.filled_with, self.filled_rows = run.source, n
        else:
            at = run.source + start * PAGE_SIZE
            self.data[:n] = file[at : at + n * PAGE_SIZE].reshape(n, 16, EEXTEND_CHUNK)
            self.filled_with = None
        return self.full[:n].data.cast("B")


def plan(enclave: SdkEnclave, metadata: Metadata) -> LoadPlan:
    """The loader's operations for ``metadata`` (spec §5 steps 3-6).

    Segments in program-header order (with the 1.3 extra-page quirk), then the layout in table
    order with groups repeated; the patches applied to the loader's copy of the file.

    Raises:
        MalformedInput: a patch outside the file, a segment or layout page outside SECS.SIZE,
            or pages that overlap (or come out of increasing order), naming both sources.
    """
    data = enclave.data
    file_size = len(memoryview(data).cast("B"))
    meta = metadata
    where = meta.file_offset if meta.file_offset is not None else meta.position
    fld = f"metadata[{meta.version}]"
    patches = []
    for p in meta.patches:
        if p.dst + p.size > file_size:
            _bad(
                f"metadata {meta.version}: patch[{p.index}] target [0x{p.dst:x}, +0x{p.size:x}) "
                f"is outside the file ({file_size} bytes)",
                field=f"{fld}.patch[{p.index}].dst",
                offset=where + meta.dirs[DIR_PATCH][0] + ENTRY_SIZE * p.index,
            )
        if p.size:
            patches.append((p.dst, p.dst + p.size, meta.raw[p.src : p.src + p.size]))
    delta = 0
    if meta.elrange is not None:
        delta = meta.elrange.enclave_image_address - meta.elrange.elrange_start_address
    builder = _PlanBuilder(data, patches, meta.secs_size, delta, meta.version)
    quirk = meta.major % MAJOR_VERSION_GAP == 1 and meta.minor == 3
    last: Segment | None = None
    highest = 0
    for seg in enclave.segments:
        if quirk and last is not None:
            end = _round(last.vaddr + last.memsz)
            if end < _round(_round(last.memsz) + last.vaddr) and end < _trim(seg.vaddr):
                builder.page(end, last.secinfo_flags, bytes(PAGE_SIZE), True, "1.3 extra page")
        builder.at = seg.header_offset
        builder.segment(seg)
        if seg.vaddr > highest:
            highest, last = seg.vaddr, seg
    if quirk and last is not None:
        end = _round(last.vaddr + last.memsz)
        if end < _round(_round(last.memsz) + last.vaddr):
            builder.page(end, last.secinfo_flags, bytes(PAGE_SIZE), True, "1.3 extra page")
    table = where + meta.dirs[DIR_LAYOUT][0]
    post_add: list[tuple[int, int]] = []
    for entry, step in meta.expanded():
        builder.at = table + ENTRY_SIZE * entry.index
        builder.layout(meta, entry, step)
        if entry.attributes & PAGE_ATTR_POST_ADD and entry.page_count:
            post_add.append((entry.rva + step + delta, entry.page_count))
    return LoadPlan(
        enclave,
        meta,
        meta.ssa_frame_size,
        meta.secs_size,
        tuple(builder.runs),
        tuple(post_add),
    )


class _PlanBuilder:
    def __init__(
        self,
        data: Any,
        patches: list[tuple[int, int, bytes]],
        size: int,
        delta: int,
        version: str,
    ) -> None:
        self.data = data
        self.patches = patches
        self.size = size
        self.delta = delta
        self.version = version
        self.runs: list[PageRun] = []
        self.end = 0  # enclave offset after the last page added
        self.at = 0  # file offset of the record (program header, layout entry) being loaded

    def read(self, start: int, end: int) -> bytes:
        """File bytes [start, end) of the loader's copy (patches applied)."""
        out = bytearray(self.data[start:end])
        for dst, dst_end, content in self.patches:
            lo, hi = max(dst, start), min(dst_end, end)
            if lo < hi:
                out[lo - start : hi - start] = content[lo - dst : hi - dst]
        return bytes(out)

    def _add(self, run: PageRun) -> None:
        offset = run.offset
        if offset < self.end:
            prev = self.runs[-1]
            _bad(
                f"metadata {self.version}: {run.origin} adds the page at 0x{offset:x}, which "
                f"overlaps or precedes the pages of {prev.origin} (up to 0x{self.end:x}); the "
                "loader's pages must not overlap and, for SGXS, must increase",
                field=run.origin,
                offset=self.at,
            )
        if run.end > self.size:
            _bad(
                f"metadata {self.version}: {run.origin} adds pages up to 0x{run.end:x}, beyond "
                f"SECS.SIZE 0x{self.size:x}",
                field=run.origin,
                offset=self.at,
            )
        self.runs.append(run)
        self.end = run.end

    def page(self, rva: int, flags: int, content: bytes, measured: bool, origin: str) -> None:
        self._add(PageRun(rva + self.delta, 1, flags, measured, content, origin))

    def segment(self, seg: Segment) -> None:
        """``build_mem_region()`` of a PT_LOAD (spec §5 step 5)."""
        origin = f"segment {seg.index}"
        flags = seg.secinfo_flags
        rva, filesz = seg.vaddr, seg.filesz
        off = 0
        while off < filesz:
            r = rva + off
            head = r % PAGE_SIZE
            n = min(PAGE_SIZE - head, filesz - off)
            if n < PAGE_SIZE:
                page = bytearray(PAGE_SIZE)
                page[head : head + n] = self.read(seg.offset + off, seg.offset + off + n)
                self.page(r - head, flags, bytes(page), True, origin)
                off += PAGE_SIZE - head
                continue
            count = (filesz - off) // PAGE_SIZE
            self._file_pages(r, seg.offset + off, count, flags, origin)
            off += count * PAGE_SIZE
        if seg.memsz > off:
            start = _trim(rva + off)
            count = _round(seg.memsz - off + (rva + off) % PAGE_SIZE) // PAGE_SIZE
            if count:
                self._add(PageRun(start + self.delta, count, flags, True, _ZERO, origin))

    def _file_pages(self, rva: int, file_at: int, count: int, flags: int, origin: str) -> None:
        """Whole file pages; a page a patch touches gets its own (patched) content."""
        lo, hi = file_at, file_at + count * PAGE_SIZE
        touched: set[int] = set()
        for dst, dst_end, _ in self.patches:
            if dst < hi and lo < dst_end:
                first = (max(dst, lo) - file_at) // PAGE_SIZE
                last = (min(dst_end, hi) - 1 - file_at) // PAGE_SIZE
                touched.update(range(first, last + 1))
        k = 0
        for t in [*sorted(touched), count]:
            if t > k:
                self._add(
                    PageRun(
                        rva + k * PAGE_SIZE + self.delta,
                        t - k,
                        flags,
                        True,
                        file_at + k * PAGE_SIZE,
                        origin,
                    )
                )
            if t < count:
                at = file_at + t * PAGE_SIZE
                self.page(rva + t * PAGE_SIZE, flags, self.read(at, at + PAGE_SIZE), True, origin)
            k = t + 1

    def layout(self, meta: Metadata, entry: LayoutEntry, step: int) -> None:
        """``build_context()`` of one layout entry (spec §5 step 6, §4.1)."""
        if not entry.attributes & PAGE_ATTR_EADD or entry.page_count == 0:
            return
        rva = entry.rva + step
        origin = f"layout[{entry.index}] {entry.name}" + (f" +0x{step:x}" if step else "")
        measured = entry.attributes & PAGE_ATTR_EEXTEND != 0
        if entry.content_offset:
            content = meta.raw[entry.content_offset : entry.content_offset + entry.content_size]
            if entry.si_flags == SI_FLAGS_TCS:
                page = bytearray(PAGE_SIZE)
                page[: len(content)] = content
                for field_at in (16, 48, 56):  # OSSA, OFSBASE, OGSBASE become absolute RVAs
                    value = int.from_bytes(page[field_at : field_at + 8], "little")
                    page[field_at : field_at + 8] = ((value + rva) % (1 << 64)).to_bytes(
                        8, "little"
                    )
                self._add(
                    PageRun(
                        rva + self.delta,
                        entry.page_count,
                        entry.si_flags,
                        measured,
                        bytes(page),
                        origin,
                    )
                )
                return
            # build_mem_region of the content: always EADD + EEXTEND.
            for k in range(entry.page_count):
                chunk = content[k * PAGE_SIZE : (k + 1) * PAGE_SIZE]
                self.page(
                    rva + k * PAGE_SIZE,
                    entry.si_flags,
                    chunk + bytes(PAGE_SIZE - len(chunk)),
                    True,
                    origin,
                )
            return
        if entry.si_flags == 0:
            return
        fill = entry.content_size.to_bytes(4, "little") * (PAGE_SIZE // 4)
        self._add(
            PageRun(
                rva + self.delta,
                entry.page_count,
                entry.si_flags,
                measured,
                fill if entry.content_size else _ZERO,
                origin,
            )
        )


_ZERO = bytes(PAGE_SIZE)


# -- convenience -------------------------------------------------------------------------------


def measure_sdk(data: Any, urts: tuple[int, int] = URTS_EDMM) -> bytes:
    """MRENCLAVE of an SDK enclave file, re-measured from its pages (never the stored hash).

    Raises:
        MalformedInput: as :func:`parse_sdk` and :func:`plan`.
        UsageError: no metadata the urts ``urts`` loads.
    """
    enclave = parse_sdk(data)
    return plan(enclave, enclave.select(urts)).mrenclave()


def with_sigstruct(enclave: SdkEnclave, sigstruct: Sigstruct) -> bytes:
    """The file with ``sigstruct`` written into the ``enclave_css`` of every metadata record.

    Every record carries the same SIGSTRUCT (``sgx_sign`` writes one and derives the others
    from it); the rest of the file is unchanged, byte for byte.
    """
    out = bytearray(memoryview(enclave.data).cast("B"))
    css = sigstruct.to_bytes()
    for meta in enclave.copies:
        assert meta.file_offset is not None
        at = meta.file_offset + CSS_OFFSET
        out[at : at + len(css)] = css
    return bytes(out)


__all__ = [
    "LAYOUT_IDS",
    "LEGACY_LAYOUT_IDS",
    "METADATA_MAGIC",
    "URTS_EDMM",
    "URTS_SGX1",
    "Elrange",
    "ExtendEntry",
    "LayoutEntry",
    "LayoutGroup",
    "LayoutSummary",
    "LoadPlan",
    "Metadata",
    "PageRun",
    "PatchEntry",
    "SdkEnclave",
    "Segment",
    "looks_like_elf",
    "measure_sdk",
    "parse_metadata_area",
    "parse_sdk",
    "plan",
    "select",
    "summarize",
    "with_sigstruct",
]
