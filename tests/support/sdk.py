"""A test-side builder of small Intel SGX SDK enclaves (ELF64 + ``.note.sgxmeta``).

It lays a file out the way ``sgx_sign`` does (``../shared/reference/sdk-metadata-spec.md`` §1,
§2, §4): PT_LOAD segments (the first at file offset 0, so the ELF header is measured), then in
the metadata a layout of heap, one thread template (guard, stack, guard, TCS, SSA, guard, thread
data) repeated by a THREAD_GROUP for further threads, and the patch table (a ``g_global_data``
stand-in and the three zeroed ELF header fields). It writes its own bytes with ``struct`` and
keeps a plain description (:class:`Built`) for the test's independent measurer; it never calls
the reader under test.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from sgxlaunch.arch.structs import Sigstruct

PAGE = 4096
MAGIC = 0x86A80294635D0E4C
PF_X, PF_W, PF_R = 1, 2, 4
EADD, EEXTEND, POST_ADD, POST_REMOVE, GROW_DOWN = 0x01, 0x02, 0x08, 0x10, 0x40
SI_RW, SI_RX, SI_TCS = 0x203, 0x205, 0x100

# (SDK 2.0+ ids, SDK 1.x ids): HEAP(_MIN), TCS, TD, SSA, STACK(_MIN), GUARD, THREAD_GROUP
MODERN = {
    "heap": 1,
    "heap_max": 3,
    "tcs": 4,
    "td": 5,
    "ssa": 6,
    "stack_max": 7,
    "stack": 8,
    "guard": 10,
    "group": 0x1009,
}
LEGACY = {"heap": 1, "tcs": 2, "td": 3, "ssa": 4, "stack": 5, "guard": 7, "group": 0x1006}


def round_page(value: int) -> int:
    return (value + PAGE - 1) // PAGE * PAGE


@dataclass
class Seg:
    """A PT_LOAD: ``data`` is its file content (filesz), ``memsz`` at least that."""

    vaddr: int
    data: bytes
    memsz: int
    flags: int = PF_R | PF_W


@dataclass
class Spec:
    """What to build. The first segment is placed at vaddr 0 / file offset 0 (ELF header)."""

    version: tuple[int, int] = (1, 5)
    compat: tuple[tuple[int, int], ...] = ()
    code: bytes = b"\x90" * 300
    data_segments: list[Seg] = field(default_factory=list)
    tcs_num: int = 1
    stack_pages: int = 2
    stack_max_pages: int = 1
    heap_pages: int = 3
    dynamic_heap_pages: int = 0
    ssa_frame_size: int = 1
    note_align: int = 4


@dataclass
class Built:
    """The file and a plain description of it for an independent measurer.

    ``layouts[k]`` is the layout of metadata copy k as dicts with keys id, attributes,
    page_count, rva, content_size, content (bytes or None), si_flags; or, for a group, id,
    entry_count, load_times, load_step. ``patches`` are (file offset, bytes).
    """

    data: bytes
    segments: list[tuple[int, int, int, int, int]]  # (file offset, vaddr, filesz, memsz, flags)
    versions: list[tuple[int, int]]
    layouts: list[list[dict[str, object]]]
    patches: list[tuple[int, bytes]]
    enclave_size: int
    ssa_frame_size: int
    css_offsets: list[int]
    metadata_offsets: list[int]
    note_offset: int
    layout_offsets: list[int]  # file offset of each copy's layout table

    def signed(self, sigstruct: Sigstruct) -> bytes:
        out = bytearray(self.data)
        for at in self.css_offsets:
            out[at : at + Sigstruct.SIZE] = sigstruct.to_bytes()
        return bytes(out)


def _dir_num(version: tuple[int, int]) -> int:
    major, minor = version[0] % 10, version[1]
    return 4 if (major == 1 and minor >= 5) or (major == 3 and minor >= 2) else 2


def _layout(
    spec: Spec, start: int, ids: dict[str, int], version: tuple[int, int]
) -> tuple[list[dict[str, object]], int, int, int]:
    """Layout records from ``start``; returns (records, end, tcs rva, td rva) of thread 0."""
    legacy = ids is LEGACY
    guard = 1 if legacy else 16
    records: list[dict[str, object]] = []
    rva = start

    def entry(name: str, pages: int, attributes: int, si: int, fill: int = 0) -> int:
        nonlocal rva
        at = rva
        records.append(
            {
                "id": ids[name],
                "attributes": attributes,
                "page_count": pages,
                "rva": at,
                "content_size": fill,
                "content": None,
                "si_flags": si,
            }
        )
        rva += pages * PAGE
        return at

    entry("heap", spec.heap_pages, EADD, SI_RW)
    if spec.dynamic_heap_pages and not legacy:
        sgx2 = version[0] % 10 == 3
        entry(
            "heap_max",
            spec.dynamic_heap_pages,
            POST_ADD if sgx2 else 0,
            SI_RW if sgx2 else 0,
        )
    rva = round_page(rva)
    thread_start = rva
    first = len(records)
    entry("guard", guard, 0, 0)
    if not legacy and spec.stack_max_pages:
        entry("stack_max", spec.stack_max_pages, EADD | EEXTEND | GROW_DOWN, SI_RW, 0xCCCCCCCC)
    entry("stack", spec.stack_pages, EADD | EEXTEND, SI_RW, 0xCCCCCCCC)
    entry("guard", guard, 0, 0)
    tcs = entry("tcs", 1, EADD | EEXTEND, SI_TCS)
    ssa = entry("ssa", spec.ssa_frame_size * 2, EADD | EEXTEND, SI_RW)
    entry("guard", guard, 0, 0)
    td = entry("td", 1, EADD | EEXTEND, SI_RW)
    per_thread = rva - thread_start
    tcs_record = records[first + (4 if not legacy and spec.stack_max_pages else 3)]
    tcs_record["content"] = struct.pack(
        "<QQQIIQQQQII", 0, 0, ssa - tcs, 0, 2, 0x10, 0, td - tcs, td - tcs, 0xFFFFFFFF, 0xFFFFFFFF
    )
    tcs_record["content_size"] = 72
    count = len(records) - first
    if spec.tcs_num > 1:
        records.append(
            {
                "id": ids["group"],
                "entry_count": count,
                "load_times": spec.tcs_num - 1,
                "load_step": per_thread,
            }
        )
        rva += per_thread * (spec.tcs_num - 1)
    return records, rva, tcs, td


def _metadata(
    version: tuple[int, int],
    records: list[dict[str, object]],
    patches: list[tuple[int, bytes]],
    spec: Spec,
    enclave_size: int,
) -> tuple[bytes, int]:
    """One metadata_t; returns (bytes, offset of its layout table)."""
    ndirs = _dir_num(version)
    header = 1872 + 8 * ndirs
    layout_at = header
    patch_at = layout_at + 32 * len(records)
    data_at = patch_at + 32 * len(patches)
    data = bytearray()
    layout = bytearray()
    for r in records:
        if "entry_count" in r:
            layout += struct.pack(
                "<HHIQ16x", r["id"], r["entry_count"], r["load_times"], r["load_step"]
            )
            continue
        content = r["content"]
        offset = 0
        if isinstance(content, bytes):
            offset = data_at + len(data)
            data += content
        layout += struct.pack(
            "<HHIQIIQ",
            r["id"],
            r["attributes"],
            r["page_count"],
            r["rva"],
            r["content_size"],
            offset,
            r["si_flags"],
        )
    table = bytearray()
    for dst, content in patches:
        table += struct.pack("<QII16x", dst, data_at + len(data), len(content))
        data += content
    size = data_at + len(data)
    dirs = struct.pack("<II", patch_at, len(table)) + struct.pack("<II", layout_at, len(layout))
    dirs += bytes(8 * (ndirs - 2))
    head = struct.pack(
        "<QQIIIIIIQQQ",
        MAGIC,
        (version[0] << 32) | version[1],
        size,
        1,
        spec.ssa_frame_size,
        2632,
        0,
        1,
        enclave_size,
        0x4,
        0x3,
    )
    out = head + bytes(1808) + dirs + layout + table + data
    assert len(out) == size
    return bytes(out), layout_at


def build(spec: Spec) -> Built:
    """Lay out and write the enclave described by ``spec`` (unsigned: enclave_css zero)."""
    nphdr = 1 + len(spec.data_segments)
    header = 64 + 56 * nphdr
    seg0 = Seg(0, bytes(header) + spec.code, header + len(spec.code), PF_R | PF_X)
    segs = [seg0, *spec.data_segments]
    # File offsets: congruent to vaddr modulo the page, after the previous segment's bytes.
    placed: list[tuple[int, Seg]] = [(0, seg0)]
    cursor = len(seg0.data)
    for s in spec.data_segments:
        at = round_page(cursor) + s.vaddr % PAGE
        placed.append((at, s))
        cursor = at + len(s.data)
    legacy_version = spec.version[0] % 10 == 1 and spec.version[1] <= 4
    ids = LEGACY if legacy_version and not spec.compat else MODERN
    quirk = spec.version == (1, 3)
    start = max(
        round_page(round_page(s.memsz) + s.vaddr) if quirk else round_page(s.vaddr + s.memsz)
        for s in segs
    )
    versions = [spec.version, *spec.compat]
    layouts = [_layout(spec, start, ids, v) for v in versions]
    end = layouts[0][1]
    enclave_size = 8192
    while enclave_size < end:
        enclave_size *= 2
    # Patches: a g_global_data stand-in inside the last segment's file bytes, then the ELF
    # header's e_shnum, e_shoff, e_shstrndx zeroed (sgx_sign's build_patch_table()).
    last_at, last = placed[-1]
    global_data = bytes(range(40, 40 + 48))
    patches = [(last_at + min(16, max(0, len(last.data) - 48)), global_data)]
    patches += [(0x3C, bytes(2)), (0x28, bytes(8)), (0x3E, bytes(2))]
    metas = [
        _metadata(v, lay[0], patches, spec, enclave_size)
        for v, lay in zip(versions, layouts, strict=True)
    ]
    area = b"".join(m for m, _ in metas)
    desc_size = max(len(area), 0x6000 if _dir_num(spec.version) == 4 else 0x1000)
    if len(area) > 0x1000 and desc_size < 0x5000:
        desc_size = 0x5000
    note_at = (cursor + 3) // 4 * 4
    used = 25 + desc_size
    align = spec.note_align
    note_size = used if align <= 1 else (used + align - 1) // align * align
    note = struct.pack("<III", 13, desc_size, 1) + b"sgx_metadata\x00" + area
    note += bytes(note_size - len(note))
    shstr = b"\x00.note.sgxmeta\x00.shstrtab\x00"
    shstr_at = note_at + note_size
    shoff = (shstr_at + len(shstr) + 7) // 8 * 8
    out = bytearray(shoff + 3 * 64)
    for at, s in placed:
        out[at : at + len(s.data)] = s.data
    out[note_at : note_at + note_size] = note
    out[shstr_at : shstr_at + len(shstr)] = shstr
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    out[0:64] = struct.pack(
        "<16sHHIQQQIHHHHHH", ident, 3, 62, 1, 0x10, 64, shoff, 0, 64, 56, nphdr, 64, 3, 2
    )
    for i, (at, s) in enumerate(placed):
        out[64 + 56 * i : 64 + 56 * (i + 1)] = struct.pack(
            "<IIQQQQQQ", 1, s.flags, at, s.vaddr, s.vaddr, len(s.data), s.memsz, PAGE
        )
    out[shoff + 64 : shoff + 128] = struct.pack(
        "<IIQQQQIIQQ", 1, 7, 0, 0, note_at, note_size, 0, 0, align, 0
    )
    out[shoff + 128 : shoff + 192] = struct.pack(
        "<IIQQQQIIQQ", 15, 3, 0, 0, shstr_at, len(shstr), 0, 0, 1, 0
    )
    meta_offsets = []
    pos = note_at + 25
    for m, _ in metas:
        meta_offsets.append(pos)
        pos += len(m)
    return Built(
        data=bytes(out),
        segments=[(at, s.vaddr, len(s.data), s.memsz, s.flags) for at, s in placed],
        versions=versions,
        layouts=[lay[0] for lay in layouts],
        patches=patches,
        enclave_size=enclave_size,
        ssa_frame_size=spec.ssa_frame_size,
        css_offsets=[at + 64 for at in meta_offsets],
        metadata_offsets=meta_offsets,
        note_offset=note_at,
        layout_offsets=[at + lay for at, (_, lay) in zip(meta_offsets, metas, strict=True)],
    )
