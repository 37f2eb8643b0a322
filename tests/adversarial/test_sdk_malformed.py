"""Malformed SDK enclaves: every truncation, a corpus of broken entries, and fuzzed metadata.

Each case must raise ``MalformedInput`` naming the structure or entry at fault and the offset;
the fuzzer checks no other exception escapes (``UsageError`` is allowed only from metadata
selection, which is a loader's refusal of a valid file).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgxlaunch.errors import MalformedInput, UsageError
from sgxlaunch.formats import sdk
from tests.support.sdk import PF_R, PF_W, Built, Seg, Spec, build

RW = PF_R | PF_W


@pytest.fixture(scope="module")
def small() -> Built:
    return build(Spec(version=(1, 4), data_segments=[Seg(0x3000, b"\x11" * 700, 0x1000, RW)]))


@pytest.fixture(scope="module")
def two_threads() -> Built:
    return build(
        Spec(
            version=(2, 1),
            compat=((1, 4),),
            data_segments=[Seg(0x3000, b"d" * 64, 64, RW)],
            tcs_num=2,
        )
    )


def _measure(data: bytes) -> bytes:
    return sdk.measure_sdk(data)


def test_every_truncation_is_refused(small: Built) -> None:
    data = small.data
    for n in range(len(data)):
        with pytest.raises(MalformedInput):
            _measure(data[:n])


def _edit(data: bytes, at: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


# Each case: (what it breaks, edit, words the message must contain, expected field prefix)
Case = tuple[Callable[[Built], bytes], str, str]


def _layout_field(b: Built, index: int, field_at: int, fmt: str, value: int) -> bytes:
    return _edit(b.data, b.layout_offsets[0] + 32 * index + field_at, fmt, value)


CASES: dict[str, Case] = {
    "bad metadata magic": (
        lambda b: _edit(b.data, b.metadata_offsets[0], "<Q", 0x1234),
        "holds no metadata",
        "metadata.magic_num",
    ),
    "metadata size zero": (
        lambda b: _edit(b.data, b.metadata_offsets[0] + 16, "<I", 0),
        "size is 0",
        "metadata[1.4].size",
    ),
    "metadata size beyond the note": (
        lambda b: _edit(b.data, b.metadata_offsets[0] + 16, "<I", 0x100000),
        "inside the note",
        "metadata[1.4].size",
    ),
    "unknown metadata version": (
        lambda b: _edit(b.data, b.metadata_offsets[0] + 8, "<Q", 4 << 32),
        "unsupported metadata version",
        "metadata[4.0].version",
    ),
    "tcs_policy out of range": (
        lambda b: _edit(b.data, b.metadata_offsets[0] + 20, "<I", 2),
        "tcs_policy",
        "metadata[1.4].tcs_policy",
    ),
    "ssa_frame_size zero": (
        lambda b: _edit(b.data, b.metadata_offsets[0] + 24, "<I", 0),
        "ssa_frame_size",
        "metadata[1.4].ssa_frame_size",
    ),
    "enclave_size not a power of two": (
        lambda b: _edit(b.data, b.metadata_offsets[0] + 40, "<Q", 0x30000),
        "power of two in",
        "metadata[1.4].enclave_size",
    ),
    "layout that does not fit SECS.SIZE": (
        lambda b: _edit(b.data, b.metadata_offsets[0] + 40, "<Q", 0x4000),
        "beyond",
        "metadata[1.4].layout",
    ),
    "overlapping layout": (
        # the stack entry (index 2) moved onto the heap (index 0)
        lambda b: _layout_field(b, 2, 8, "<Q", int(b.layouts[0][0]["rva"])),  # type: ignore[call-overload]
        "overlaps",
        "metadata[1.4].layout[",
    ),
    "layout rva not page-aligned": (
        lambda b: _layout_field(b, 0, 8, "<Q", int(b.layouts[0][0]["rva"]) + 8),  # type: ignore[call-overload]
        "not page-aligned",
        "metadata[1.4].layout[0].rva",
    ),
    "layout content outside the metadata": (
        lambda b: _layout_field(b, 4, 20, "<I", 0xFFFFFF),
        "outside the metadata",
        "metadata[1.4].layout[4].content_offset",
    ),
    "layout si_flags of an unknown page type": (
        lambda b: _layout_field(b, 0, 24, "<Q", 0x503),
        "page type 5",
        "metadata[1.4].layout[0].si_flags",
    ),
    "layout table size not a multiple of 32": (
        lambda b: _edit(b.data, b.metadata_offsets[0] + 1872 + 12, "<I", 33),
        "not a multiple of 32",
        "metadata[1.4].dirs[1].size",
    ),
    "patch outside the image": (
        lambda b: _edit(b.data, b.metadata_offsets[0] + _patch_table(b), "<Q", len(b.data) - 4),
        "outside the file",
        "metadata[1.4].patch[0].dst",
    ),
    "patch source outside the metadata": (
        lambda b: _edit(b.data, b.metadata_offsets[0] + _patch_table(b) + 8, "<I", 0xFFFF00),
        "outside the metadata",
        "metadata[1.4].patch[0].src",
    ),
    "segment beyond the file": (
        lambda b: _edit(b.data, 64 + 56 + 32, "<Q", len(b.data)),
        "beyond the end of the file",
        "phdr[1].p_filesz",
    ),
    "segment filesz above memsz": (
        lambda b: _edit(b.data, 64 + 56 + 40, "<Q", 10),
        "exceeds p_memsz",
        "phdr[1].p_memsz",
    ),
    "segments sharing a page": (
        lambda b: _edit(b.data, 64 + 56 + 16, "<Q", 0x100),
        "shares pages",
        "phdr[1].p_vaddr",
    ),
    "segment beyond SECS.SIZE": (
        lambda b: _edit(b.data, 64 + 56 + 16, "<Q", 0x100000),
        "beyond SECS.SIZE",
        "segment 1",
    ),
    "ELF32 class": (lambda b: _edit(b.data, 4, "<B", 1), "ELFCLASS64", "e_ident[EI_CLASS]"),
    "not a shared object": (lambda b: _edit(b.data, 16, "<H", 2), "ET_DYN", "e_type"),
    "other machine": (lambda b: _edit(b.data, 18, "<H", 3), "EM_X86_64", "e_machine"),
    "program headers beyond the file": (
        lambda b: _edit(b.data, 32, "<Q", len(b.data)),
        "program headers",
        "e_phoff",
    ),
    "section headers beyond the file": (
        lambda b: _edit(b.data, 40, "<Q", len(b.data)),
        "section headers",
        "e_shoff",
    ),
    "note renamed": (
        lambda b: _edit(b.data, b.note_offset + 12, "<B", ord("x")),
        "sgx_metadata",
        ".note.sgxmeta.namesz",
    ),
    "note at the ELF-standard offset 28": (
        lambda b: _edit(b.data, b.note_offset, "<I", 16),
        "sgx_metadata",
        ".note.sgxmeta.namesz",
    ),
    "note descsz disagrees with the section": (
        lambda b: _edit(b.data, b.note_offset + 4, "<I", 0x800),
        "rounded to",
        ".note.sgxmeta.descsz",
    ),
}


def _patch_table(b: Built) -> int:
    return 1872 + 8 * 2 + 32 * len(b.layouts[0])


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_entry_is_refused_naming_the_field(small: Built, name: str) -> None:
    edit, words, field = CASES[name]
    data = edit(small)
    with pytest.raises(MalformedInput) as info:
        _measure(data)
    assert words in str(info.value)
    assert info.value.field is not None and info.value.field.startswith(field), info.value.field
    assert info.value.offset is not None  # every refusal names where in the file


def test_group_repeating_more_records_than_precede_it(two_threads: Built) -> None:
    group = len(two_threads.layouts[0]) - 1
    at = two_threads.layout_offsets[0] + 32 * group + 2
    with pytest.raises(MalformedInput, match="repeats 200 records") as info:
        _measure(_edit(two_threads.data, at, "<H", 200))
    assert info.value.offset == at


def test_group_expanding_beyond_the_bound(two_threads: Built) -> None:
    group = len(two_threads.layouts[0]) - 1
    at = two_threads.layout_offsets[0] + 32 * group + 4
    with pytest.raises(MalformedInput, match="expands to more than"):
        _measure(_edit(two_threads.data, at, "<I", 0xFFFFFFFF))


def test_text_relocations_are_refused(small: Built) -> None:
    """A PT_DYNAMIC with DT_TEXTREL: the measured pages would depend on relocation (§5)."""
    data = bytearray(small.data)
    # Turn the second PT_LOAD into a PT_DYNAMIC over 16 bytes holding (DT_TEXTREL, 0).
    seg_at = struct.unpack_from("<Q", data, 64 + 56 + 8)[0]
    struct.pack_into("<I", data, 64 + 56, 2)
    struct.pack_into("<QQ", data, 64 + 56 + 32, 16, 16)
    struct.pack_into("<qQ", data, seg_at, 22, 0)
    with pytest.raises(MalformedInput, match="DT_TEXTREL"):
        _measure(bytes(data))


def test_two_metadata_notes_are_refused(small: Built) -> None:
    data = bytearray(small.data)
    shoff = struct.unpack_from("<Q", data, 40)[0]
    struct.pack_into("<I", data, shoff + 128, 1)  # .shstrtab renamed .note.sgxmeta
    with pytest.raises(MalformedInput, match="2 sections named"):
        _measure(bytes(data))


_FIELDS = [
    (8, "<Q"),
    (16, "<I"),
    (20, "<I"),
    (24, "<I"),
    (40, "<Q"),
    (1872, "<I"),
    (1876, "<I"),
    (1880, "<I"),
    (1884, "<I"),
]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(
        st.tuples(
            st.one_of(
                st.sampled_from(_FIELDS),
                st.tuples(
                    st.integers(1888, 1888 + 32 * 12), st.sampled_from(["<B", "<H", "<I", "<Q"])
                ),
            ),
            st.integers(0, 2**64 - 1),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_fuzzed_metadata_raises_only_our_errors(
    small: Built, edits: list[tuple[tuple[int, str], int]]
) -> None:
    data = bytearray(small.data)
    for (at, fmt), value in edits:
        size = struct.calcsize(fmt)
        # A valid enclave_size of 2^36 with a huge stack entry is a legitimately huge enclave
        # (minutes to measure), not a malformed one: keep the fuzzed size small.
        bound = 1 << 22 if at == 40 else 1 << (8 * size)
        struct.pack_into(fmt, data, small.metadata_offsets[0] + at, value % bound)
    try:
        enclave = sdk.parse_sdk(bytes(data))
        for meta in enclave.copies:
            plan = enclave.plan(meta)
            assert len(plan.mrenclave()) == 32
    except (MalformedInput, UsageError):
        pass
