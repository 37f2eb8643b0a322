"""The SDK enclave reader (``sgxlaunch.formats.sdk``) against an independent measurer.

Enclaves come from the test-side builder (``tests/support/sdk.py``). ``simple_mrenclave`` below
re-implements the spec's §5 procedure deliberately plainly (a page list, then one SHA-256 over
the blocks) from the builder's own description, never from the reader's output.
"""

from __future__ import annotations

import hashlib
import struct

import pytest

from sgxlaunch.arch.constants import SgxStatus
from sgxlaunch.arch.structs import Attributes, Sigstruct
from sgxlaunch.cpu.loader import image_from_sgxs, load_enclave
from sgxlaunch.errors import MalformedInput, UsageError
from sgxlaunch.formats import sdk, sgxs
from sgxlaunch.sigstruct import sign, verify
from tests.support.cpu import cpu
from tests.support.keys import mrsigner, signer
from tests.support.sdk import PF_R, PF_W, PF_X, Built, Seg, Spec, build, round_page

# -- the independent measurer (spec §5, step by step) ----------------------------------------


def simple_pages(built: Built, copy: int = 0) -> list[tuple[int, int, bytes, bool]]:
    image = bytearray(built.data)
    for dst, content in built.patches:  # step 3: the loader's copy, patched
        image[dst : dst + len(content)] = content
    pages: list[tuple[int, int, bytes, bool]] = []

    def region(raw: bytes, rva: int, vsize: int, flags: int) -> None:  # build_mem_region
        off = 0
        while off < len(raw):
            r = rva + off
            n = min(4096 - r % 4096, len(raw) - off)
            page = bytearray(4096)
            page[r % 4096 : r % 4096 + n] = raw[off : off + n]
            pages.append((r - r % 4096, flags, bytes(page), True))
            off += 4096 - r % 4096
        if vsize > off:
            start = (rva + off) // 4096 * 4096
            for p in range(start, start + round_page(vsize - off + (rva + off) % 4096), 4096):
                pages.append((p, flags, bytes(4096), True))

    def perms(pflags: int) -> int:
        return 0x200 | (pflags & PF_R and 1) | (pflags & PF_W and 2) | (pflags & PF_X and 4)

    quirk = built.versions[copy] == (1, 3)
    last: tuple[int, int, int] | None = None  # (vaddr, memsz, flags)
    highest = 0

    def extra(before: int | None) -> None:
        assert last is not None
        end = round_page(last[0] + last[1])
        if end < round_page(round_page(last[1]) + last[0]) and (
            before is None or end < before // 4096 * 4096
        ):
            pages.append((end, last[2], bytes(4096), True))

    for at, vaddr, filesz, memsz, pflags in built.segments:  # step 5
        if quirk and last is not None:
            extra(vaddr)
        region(bytes(image[at : at + filesz]), vaddr, memsz, perms(pflags))
        if vaddr > highest:
            highest, last = vaddr, (vaddr, memsz, perms(pflags))
    if quirk and last is not None:
        extra(None)

    def context(rec: dict[str, object], delta: int) -> None:  # step 6
        attributes, si = int(rec["attributes"]), int(rec["si_flags"])  # type: ignore[call-overload]
        count, rva = int(rec["page_count"]), int(rec["rva"]) + delta  # type: ignore[call-overload]
        content = rec["content"]
        if not attributes & 1:
            return
        if isinstance(content, bytes) and si == 0x100:
            page = bytearray(4096)
            page[: len(content)] = content
            for f in (16, 48, 56):
                (v,) = struct.unpack_from("<Q", page, f)
                struct.pack_into("<Q", page, f, v + rva)
            for k in range(count):
                pages.append((rva + 4096 * k, si, bytes(page), attributes & 3 == 3))
        elif isinstance(content, bytes):
            region(content, rva, count * 4096, si)
        elif si:
            fill = struct.pack("<I", int(rec["content_size"])) * 1024  # type: ignore[call-overload]
            for k in range(count):
                pages.append((rva + 4096 * k, si, fill, attributes & 3 == 3))

    records = built.layouts[copy]
    for i, rec in enumerate(records):
        if "entry_count" in rec:
            ec, times, step = (int(rec[k]) for k in ("entry_count", "load_times", "load_step"))  # type: ignore[call-overload]
            for j in range(1, times + 1):
                for prev in records[i - ec : i]:
                    context(prev, j * step)
        else:
            context(rec, 0)
    return pages


def simple_mrenclave(built: Built, copy: int = 0) -> bytes:
    stream = bytearray(
        struct.pack("<8sIQ44x", b"ECREATE\0", built.ssa_frame_size, built.enclave_size)
    )
    for offset, flags, data, measured in simple_pages(built, copy):
        stream += struct.pack("<8sQQ40x", b"EADD\0\0\0\0", offset, flags)
        if measured:
            for c in range(16):
                stream += struct.pack("<8sQ48x", b"EEXTEND\0", offset + 256 * c)
                stream += data[256 * c : 256 * (c + 1)]
    return hashlib.sha256(bytes(stream)).digest()


# -- the enclaves ----------------------------------------------------------------------------

DATA = bytes(range(256)) * 20


def _specs() -> dict[str, Spec]:
    rw = PF_R | PF_W
    return {
        "1.3 quirk page": Spec(
            version=(1, 3), data_segments=[Seg(0x3100, DATA[:0x80], 0x100, rw)], tcs_num=2
        ),
        "1.4 two segments": Spec(
            version=(1, 4), data_segments=[Seg(0x4000, DATA[:5000], 0x3000, rw)]
        ),
        "1.5 three segments 4 TCS": Spec(
            version=(1, 5),
            data_segments=[
                Seg(0x2000, DATA[: 4096 * 2], 0x2000, PF_R),
                Seg(0x5230, DATA[:700], 0x2100, rw),
            ],
            tcs_num=4,
            ssa_frame_size=2,
        ),
        "2.1 + 1.4": Spec(
            version=(2, 1), compat=((1, 4),), data_segments=[Seg(0x3000, DATA, 0x5000, rw)]
        ),
        "2.4 + 2.1 + 1.4": Spec(
            version=(2, 4),
            compat=((2, 1), (1, 4)),
            data_segments=[Seg(0x3000, DATA[:100], 0x100, rw)],
            tcs_num=3,
        ),
        "3.0 + 1.4 dynamic heap": Spec(
            version=(3, 0),
            compat=((1, 4),),
            data_segments=[Seg(0x3000, DATA[:300], 0x300, rw)],
            dynamic_heap_pages=5,
            tcs_num=2,
        ),
        "3.3 only": Spec(version=(3, 3), dynamic_heap_pages=3, note_align=1),
    }


SPECS = _specs()


def signed(built: Built, role: str = "app") -> tuple[bytes, Sigstruct]:
    body = Sigstruct(
        attributes=Attributes(flags=0x4, xfrm=0x3),
        attributemask=Attributes(flags=(2**64 - 1) & ~0x2, xfrm=2**64 - 1),
        miscmask=2**32 - 1,
        isvprodid=7,
        isvsvn=3,
        enclavehash=simple_mrenclave(built),
    )
    sig = sign(body, signer(role))
    return built.signed(sig), sig


@pytest.fixture(scope="module")
def built() -> dict[str, Built]:
    return {name: build(spec) for name, spec in SPECS.items()}


@pytest.mark.parametrize("name", list(SPECS))
def test_mrenclave_equals_the_simple_measurer_for_every_copy(
    built: dict[str, Built], name: str
) -> None:
    b = built[name]
    data, sig = signed(b)
    enclave = sdk.parse_sdk(data)
    assert [(m.major, m.minor) for m in enclave.copies] == b.versions
    want = simple_mrenclave(b)
    assert sdk.measure_sdk(data) == want
    for k, meta in enumerate(enclave.copies):
        assert simple_mrenclave(b, k) == want  # the builder's copies agree
        assert enclave.plan(meta).mrenclave() == want
        assert meta.sigstruct == sig
        verify(meta.sigstruct)
    assert enclave.select().sigstruct.enclavehash == want


@pytest.mark.parametrize("name", list(SPECS))
def test_pages_equal_the_simple_page_list(built: dict[str, Built], name: str) -> None:
    b = built[name]
    plan = sdk.parse_sdk(b.data).plan()
    got = [(p.offset, p.secinfo_flags, p.data, p.measured == 0xFFFF) for p in plan.to_image().pages]
    assert got == simple_pages(b)


@pytest.mark.parametrize("name", list(SPECS))
def test_the_emulated_processor_reaches_the_same_mrenclave(
    built: dict[str, Built], name: str
) -> None:
    data, sig = signed(built[name])
    enclave = sdk.parse_sdk(data)
    try:
        meta = enclave.select(sdk.URTS_SGX1)
    except UsageError:
        assert all(m.major == 3 for m in enclave.copies)  # 3.x only: needs EDMM
        meta = enclave.select(sdk.URTS_EDMM)
    image = image_from_sgxs(enclave.plan(meta).to_image())
    proc = cpu(epc_size=4 << 20)
    proc.set_lepubkeyhash(mrsigner("app"))  # launch without a token (SDM EINIT step 9)
    loaded = load_enclave(proc, image, sig)
    # SDM EINIT: SUCCESS only if the MRENCLAVE the leaves built equals SIGSTRUCT.ENCLAVEHASH.
    assert loaded.status == SgxStatus.SUCCESS
    assert proc.secs_info(loaded.secs)["mrenclave"] == simple_mrenclave(built[name])


@pytest.mark.parametrize("name", list(SPECS))
def test_convert_then_measure_equals_measure(built: dict[str, Built], name: str) -> None:
    data, _ = signed(built[name])
    plan = sdk.parse_sdk(data).plan()
    stream = plan.to_sgxs()
    assert sgxs.measure_bytes(stream) == sdk.measure_sdk(data)
    parsed = sgxs.parse_sgxs(stream)
    assert parsed == plan.to_image()


def test_1_3_quirk_adds_the_extra_page(built: dict[str, Built]) -> None:
    b = built["1.3 quirk page"]
    plan = sdk.parse_sdk(b.data).plan()
    assert [r.offset for r in plan.runs if r.origin == "1.3 extra page"] == [0x4000]
    # Read as 1.4, the same file measures differently: the quirk is part of the hash.
    patched = bytearray(b.data)
    struct.pack_into("<Q", patched, b.metadata_offsets[0] + 8, (1 << 32) | 4)
    assert sdk.measure_sdk(bytes(patched)) != simple_mrenclave(b)


def test_selection_follows_the_urts_rules(built: dict[str, Built]) -> None:
    enclave = sdk.parse_sdk(built["2.4 + 2.1 + 1.4"].data)
    assert enclave.select().version == "1.4"  # 2.x copies are skipped (SDK 2.18+ urts)
    assert enclave.primary.version == "2.4"
    e3 = sdk.parse_sdk(built["3.0 + 1.4 dynamic heap"].data)
    assert e3.select(sdk.URTS_EDMM).version == "3.0"
    assert e3.select(sdk.URTS_SGX1).version == "1.4"
    only3 = sdk.parse_sdk(built["3.3 only"].data)
    with pytest.raises(UsageError, match="EDMM"):
        only3.select(sdk.URTS_SGX1)


def test_dynamic_pages_are_parsed_not_added(built: dict[str, Built]) -> None:
    e3 = sdk.parse_sdk(built["3.0 + 1.4 dynamic heap"].data)
    heap_max = [r for r in e3.primary.layout if r.name == "HEAP_MAX"]
    assert len(heap_max) == 1 and isinstance(heap_max[0], sdk.LayoutEntry)
    assert heap_max[0].attributes == sdk.PAGE_ATTR_POST_ADD
    assert sdk.summarize(e3.primary).dynamic_pages == 5
    offsets = {p.offset for p in e3.plan().to_image().pages}
    assert heap_max[0].rva not in offsets


def test_summary_counts(built: dict[str, Built]) -> None:
    e = sdk.parse_sdk(built["1.5 three segments 4 TCS"].data)
    s = sdk.summarize(e.primary)
    assert s.tcs_count == 4
    assert s.stack_bytes == 3 * 4096  # STACK_MAX 1 + STACK_MIN 2
    assert s.heap_bytes == 3 * 4096
    assert s.eadd_pages == 3 + 4 * (3 + 1 + 4 + 1)  # heap + 4 × (stack, TCS, SSA, TD)
    assert s.measured_pages == 4 * (3 + 1 + 4 + 1)
    legacy = sdk.parse_sdk(built["1.4 two segments"].data).primary
    assert [r.name for r in legacy.layout][:3] == ["HEAP", "GUARD", "STACK"]


def test_with_sigstruct_writes_every_copy_and_nothing_else(built: dict[str, Built]) -> None:
    b = built["2.4 + 2.1 + 1.4"]
    data, sig = signed(b)
    again = sdk.with_sigstruct(sdk.parse_sdk(b.data), sig)
    assert again == data
    diff = [i for i in range(len(data)) if data[i] != b.data[i]]
    assert all(any(at <= i < at + 1808 for at in b.css_offsets) for i in diff)


def test_metadata_starts_at_section_offset_25(built: dict[str, Built]) -> None:
    b = built["1.4 two segments"]
    e = sdk.parse_sdk(b.data)
    assert e.metadata_offset == e.note_offset + 25 == b.metadata_offsets[0]


def test_trailing_bytes_after_the_file_do_not_change_the_measurement(
    built: dict[str, Built],
) -> None:
    b = built["1.4 two segments"]
    assert sdk.measure_sdk(b.data + b"\0" * 100) == simple_mrenclave(b)


def test_elrange_shifts_pages_and_sizes_the_secs(built: dict[str, Built]) -> None:
    """Major 11 = 1 with an ELRANGE (§2.3): SECS.SIZE = elrange_size, pages moved (§5 step 4)."""
    b = built["1.5 three segments 4 TCS"]
    plain = sdk.parse_sdk(b.data).plan()
    data = bytearray(b.data)
    meta = b.metadata_offsets[0]
    (size,) = struct.unpack_from("<I", data, meta + 16)
    struct.pack_into("<Q", data, meta + 8, (11 << 32) | 5)
    struct.pack_into("<I", data, meta + 16, size + 24)
    struct.pack_into("<II", data, meta + 1872 + 16, size, 24)  # dirs[DIR_ELRANGE]
    struct.pack_into("<QQQ", data, meta + size, 0x7000_0000 + 0x40000, 0x7000_0000, 1 << 24)
    shifted = sdk.parse_sdk(bytes(data)).plan()
    assert shifted.size == 1 << 24
    assert [(r.offset - 0x40000, r.count, r.measured) for r in shifted.runs] == [
        (r.offset, r.count, r.measured) for r in plain.runs
    ]
    assert sgxs.measure_bytes(shifted.to_sgxs()) == shifted.mrenclave()
    struct.pack_into("<Q", data, meta + size + 16, 1 << 13)  # the image no longer fits
    with pytest.raises(MalformedInput, match="inside the ELRANGE"):
        sdk.parse_sdk(bytes(data))
