"""EPA / EBLOCK / ETRACK / EWB / ELDU / ELDB: ordering, statuses and round trips under pressure."""

from __future__ import annotations

import struct

import pytest

from sgxlaunch.arch import PageType, SgxStatus
from sgxlaunch.cpu import EnclaveContext, EnclaveProgram, GeneralProtection, PageFault, Processor
from tests.support.cpu import Launched, MemoryProgram, Pager, cpu, launch

PAGE = 4096
DATA = 0x3000  # first data page of a program image


def _setup(data_pages: int = 4, **cpu_args: object):  # type: ignore[no-untyped-def]
    proc = cpu(**cpu_args)  # type: ignore[arg-type]
    enc = launch(proc, MemoryProgram, "app", data_pages=data_pages)
    pager = Pager(proc)
    pager.track(enc.enclave)
    return proc, enc, pager


def _key(enc, offset: int) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    return (enc.enclave.secs, enc.enclave.baseaddr + offset)


def test_eblock_statuses() -> None:
    proc, enc, pager = _setup()
    page = pager.resident[_key(enc, DATA)]
    assert proc.eblock(proc.free_epc_pages(1)[0]) == SgxStatus.PG_INVLD
    assert proc.eblock(enc.enclave.secs) == SgxStatus.PG_IS_SECS
    va = pager.add_va_page()
    assert proc.eblock(va) == SgxStatus.NOTBLOCKABLE
    assert proc.eblock(page) == SgxStatus.SUCCESS
    assert proc.epcm(page).blocked
    assert proc.eblock(page) == SgxStatus.BLKSTATE


def test_ewb_needs_eblock_then_etrack() -> None:
    proc, enc, pager = _setup()
    page = pager.resident[_key(enc, DATA)]
    pager.add_va_page()
    contents, pcmd = proc.allocate(PAGE), proc.allocate(128, align=128)
    proc.write(pager.pageinfo, struct.pack("<QQQQ", 0, contents, pcmd, 0))
    slot = pager.slots[0]
    assert proc.ewb(pager.pageinfo, page, slot) == SgxStatus.PAGE_NOT_BLOCKED
    assert proc.etrack(enc.enclave.secs) == SgxStatus.SUCCESS  # an ETRACK *before* EBLOCK
    assert proc.eblock(page) == SgxStatus.SUCCESS
    assert proc.ewb(pager.pageinfo, page, slot) == SgxStatus.NOT_TRACKED
    assert proc.etrack(enc.enclave.secs) == SgxStatus.SUCCESS
    assert proc.ewb(pager.pageinfo, page, slot) == SgxStatus.SUCCESS
    assert not proc.epcm(page).valid


def _evict_by_hand(proc, enc, pager, offset: int, slot: int):  # type: ignore[no-untyped-def]
    """EBLOCK, ETRACK and EWB of the page at ``offset`` into ``slot``: (status, contents, pcmd)."""
    page = pager.resident[_key(enc, offset)]
    contents, pcmd = proc.allocate(PAGE), proc.allocate(128, align=128)
    assert proc.eblock(page) == SgxStatus.SUCCESS
    assert proc.etrack(enc.enclave.secs) == SgxStatus.SUCCESS
    proc.write(pager.pageinfo, struct.pack("<QQQQ", 0, contents, pcmd, 0))
    return proc.ewb(pager.pageinfo, page, slot), contents, pcmd, page


def _eldu_by_hand(
    proc: Processor, enc: Launched, pager: Pager, offset: int, contents: int, pcmd: int, slot: int
) -> SgxStatus:
    linaddr = enc.enclave.baseaddr + offset
    proc.write(pager.pageinfo, struct.pack("<QQQQ", linaddr, contents, pcmd, enc.enclave.secs))
    return proc.eldu(pager.pageinfo, proc.free_epc_pages(1)[0], slot)


def test_ewb_into_an_occupied_va_slot_evicts_and_warns() -> None:
    """SDM EWB: a VA slot that is not zero does not stop the eviction: the page is written back,
    the slot overwritten with the new version, and RAX = SGX_VA_SLOT_OCCUPIED with CF = 1 (a
    warning). The effects: the page leaves the EPC, its backing loads with that slot, and the
    page whose version was overwritten can no longer be loaded (MAC_COMPARE_FAIL)."""
    proc, enc, pager = _setup()
    pager.add_va_page()
    slot = pager.slots[0]
    first = _evict_by_hand(proc, enc, pager, DATA, slot)
    assert first[0] == SgxStatus.SUCCESS
    status, contents, pcmd, page = _evict_by_hand(proc, enc, pager, DATA + PAGE, slot)
    assert status == SgxStatus.VA_SLOT_OCCUPIED
    assert not proc.epcm(page).valid  # evicted all the same
    assert _eldu_by_hand(proc, enc, pager, DATA, first[1], first[2], slot) == (
        SgxStatus.MAC_COMPARE_FAIL
    )
    assert _eldu_by_hand(proc, enc, pager, DATA + PAGE, contents, pcmd, slot) == SgxStatus.SUCCESS


def test_ewb_writes_back_pageinfo_linaddr() -> None:
    """SDM EWB: PAGEINFO.LINADDR := EPCM(page).ENCLAVEADDRESS on the way out (the PAGEINFO went
    in with LINADDR = 0, as EWB requires)."""
    proc, enc, pager = _setup()
    pager.add_va_page()
    status, *_ = _evict_by_hand(proc, enc, pager, DATA + PAGE, pager.slots[0])
    assert status == SgxStatus.SUCCESS
    (linaddr,) = struct.unpack("<Q", proc.read(pager.pageinfo, 8))
    assert linaddr == enc.enclave.baseaddr + DATA + PAGE


def test_ewb_operand_checks() -> None:
    proc, enc, pager = _setup()
    page = pager.resident[_key(enc, DATA)]
    va = pager.add_va_page()
    contents, pcmd = proc.allocate(PAGE), proc.allocate(256, align=128)
    proc.eblock(page)
    proc.etrack(enc.enclave.secs)
    proc.write(pager.pageinfo, struct.pack("<QQQQ", 0, contents, pcmd + 64, 0))
    with pytest.raises(GeneralProtection):  # PCMD not 128-byte aligned
        proc.ewb(pager.pageinfo, page, va)
    proc.write(pager.pageinfo, struct.pack("<QQQQ", 0x1000, contents, pcmd, 0))
    with pytest.raises(GeneralProtection):  # LINADDR must be 0
        proc.ewb(pager.pageinfo, page, va)
    proc.write(pager.pageinfo, struct.pack("<QQQQ", 0, contents, pcmd, 0))
    with pytest.raises(GeneralProtection):  # slot misaligned
        proc.ewb(pager.pageinfo, page, va + 4)
    with pytest.raises(PageFault):  # slot not in a VA page
        proc.ewb(pager.pageinfo, page, enc.enclave.secs)
    with pytest.raises(PageFault):  # page not valid
        proc.ewb(pager.pageinfo, proc.free_epc_pages(1)[0], va)


def test_etrack_prev_tracking_incomplete_and_not_tracked_while_inside() -> None:
    class Tracker(EnclaveProgram):
        def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
            proc, secs, page = STATE
            first = proc.etrack(secs)
            second = proc.etrack(secs)
            proc.eblock(page)
            return struct.pack("<HH", first, second)

    proc = cpu()
    enc = launch(proc, Tracker, "app")
    page = next(
        iter(p for lin, p in enc.enclave.pages.items() if lin >= enc.enclave.baseaddr + DATA)
    )
    STATE[:] = [proc, enc.enclave.secs, page]
    first, second = struct.unpack("<HH", enc.call())
    assert (first, second) == (SgxStatus.SUCCESS, SgxStatus.PREV_TRK_INCMPL)
    # The thread has left; tracking completes with a fresh ETRACK after the EBLOCK.
    pager = Pager(proc)
    pager.track(enc.enclave)
    assert pager.evict((enc.enclave.secs, proc.epcm(page).linaddr)) == SgxStatus.SUCCESS
    STATE.clear()


STATE: list = []  # type: ignore[type-arg]


def test_eremove_while_a_thread_is_inside() -> None:
    class Remover(EnclaveProgram):
        def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
            proc, page = STATE
            return struct.pack("<H", proc.eremove(page))

    proc = cpu()
    enc = launch(proc, Remover, "app")
    page = enc.enclave.pages[enc.enclave.baseaddr + DATA]
    STATE[:] = [proc, page]
    assert struct.unpack("<H", enc.call())[0] == SgxStatus.ENCLAVE_ACT
    assert proc.eremove(page) == SgxStatus.SUCCESS
    STATE.clear()


def test_round_trip_restores_bytes_and_epcm() -> None:
    proc, enc, pager = _setup()
    payload = bytes(range(256)) * 16
    enc.call(0, struct.pack("<Q", DATA) + payload)
    key = _key(enc, DATA)
    before = proc.epcm(pager.resident[key])
    assert pager.evict(key) == SgxStatus.SUCCESS
    record = pager.evicted[key]
    assert proc.read(record.contents, PAGE) != payload  # encrypted at rest
    assert proc.read(record.slot, 8) == b"\xff" * 8  # the VA page is EPC: abort page outside
    proc.page_fault_handler = None
    with pytest.raises(PageFault):
        enc.call(1, struct.pack("<QQ", DATA, 16))
    assert pager.load(key) == SgxStatus.SUCCESS
    after = proc.epcm(pager.resident[key])
    assert (after.page_type, after.permissions, after.linaddr, after.enclave_secs) == (
        before.page_type,
        before.permissions,
        before.linaddr,
        before.enclave_secs,
    )
    assert not after.blocked
    assert enc.call(1, struct.pack("<QQ", DATA, PAGE)) == payload


def test_eldb_loads_blocked() -> None:
    proc, enc, pager = _setup()
    key = _key(enc, DATA)
    pager.evict(key)
    assert pager.load(key, blocked=True) == SgxStatus.SUCCESS
    assert proc.epcm(pager.resident[key]).blocked
    proc.page_fault_handler = None
    with pytest.raises(PageFault):  # a blocked page gets no new mappings
        enc.call(1, struct.pack("<QQ", DATA, 8))


def test_tcs_and_secs_eviction() -> None:
    proc, enc, pager = _setup(data_pages=1)
    secs = enc.enclave.secs
    # The SECS cannot go while it has children.
    pager.add_va_page()
    contents, pcmd = proc.allocate(PAGE), proc.allocate(128, align=128)
    proc.write(pager.pageinfo, struct.pack("<QQQQ", 0, contents, pcmd, 0))
    assert proc.ewb(pager.pageinfo, secs, pager.slots[-1]) == SgxStatus.CHILD_PRESENT
    for key in list(pager.resident):
        assert pager.evict(key) == SgxStatus.SUCCESS
    slot = pager.slots.pop()
    proc.write(pager.pageinfo, struct.pack("<QQQQ", 0, contents, pcmd, 0))
    assert proc.ewb(pager.pageinfo, secs, slot) == SgxStatus.SUCCESS
    assert not proc.epcm(secs).valid
    with pytest.raises(PageFault):  # the TCS is gone: EENTER faults so the OS can page it in
        proc.eenter(enc.enclave.tcs[0])
    # Reload the SECS (LINADDR = SECS = 0) at another EPC page, then its children.
    new_secs = proc.free_epc_pages(1)[0]
    proc.write(pager.pageinfo, struct.pack("<QQQQ", 0, contents, pcmd, 0))
    assert proc.eldu(pager.pageinfo, new_secs, slot) == SgxStatus.SUCCESS
    for _, linaddr in list(pager.evicted):
        pager.evicted[(new_secs, linaddr)] = pager.evicted.pop((secs, linaddr))
    for key in list(pager.evicted):
        assert pager.load(key) == SgxStatus.SUCCESS
    tcs = next(epc for (s, lin), epc in pager.resident.items() if lin == enc.enclave.baseaddr)
    enc.enclave.secs = new_secs
    enc.enclave.tcs = [tcs]
    enc.call(0, struct.pack("<Q", DATA) + b"after")
    assert enc.call(1, struct.pack("<QQ", DATA, 5)) == b"after"


def test_round_trip_under_epc_pressure_keeps_every_byte() -> None:
    """Two enclaves that do not fit in a 1 MiB EPC together; every page of both is written,
    evicted, demand-loaded back through page faults and read back intact."""
    proc = cpu()
    pager = Pager(proc)
    pager.add_va_page()
    first = launch(proc, MemoryProgram, "app", data_pages=150)
    pager.track(first.enclave)
    pattern: dict[str, list[bytes]] = {}
    for name, enc in (("first", first),):
        pattern[name] = [bytes([k % 251, 7]) * 2048 for k in range(150)]
        for k, page in enumerate(pattern[name]):
            enc.call(0, struct.pack("<Q", DATA + k * PAGE) + page)
    # The second enclave needs more EPC than is free: evict the first's pages to make room.
    needed = 150 + 4 + 1
    while proc.state.valid.count(0) < needed:
        pager.make_room(avoid=-1)
    second = launch(proc, MemoryProgram, "app", data_pages=150)
    pager.track(second.enclave)
    pattern["second"] = [bytes([7, k % 253]) * 2048 for k in range(150)]
    for k, page in enumerate(pattern["second"]):
        second.call(0, struct.pack("<Q", DATA + k * PAGE) + page)
    assert pager.evicted  # pressure happened
    for name, enc in (("first", first), ("second", second)):
        for k, page in enumerate(pattern[name]):
            key = _key(enc, DATA + k * PAGE)
            if key not in pager.resident and key not in pager.evicted:
                raise AssertionError("page lost")
            # TCS/SSA/code of the other enclave may be evicted: make them resident to enter.
            for lin in (0, 0x1000, 0x2000):
                other = _key(enc, lin)
                if other in pager.evicted:
                    assert pager.load(other) == SgxStatus.SUCCESS
            enc.enclave.tcs = [pager.resident[_key(enc, 0)]]
            assert enc.call(1, struct.pack("<QQ", DATA + k * PAGE, PAGE)) == page
    assert pager.faults > 100


def test_va_page_can_itself_be_evicted_and_reloaded() -> None:
    """A VA page holding versions is paged out (its version in another VA page) and back; the
    versions it held still admit their pages."""
    proc, enc, pager = _setup()
    key = _key(enc, DATA)
    payload = b"behind two VA levels"
    enc.call(0, struct.pack("<Q", DATA) + payload)
    assert pager.evict(key) == SgxStatus.SUCCESS
    record = pager.evicted[key]
    va_page = record.slot & ~0xFFF
    with pytest.raises(PageFault):
        proc.epa(va_page)  # EPA needs a free page
    assert proc.eblock(va_page) == SgxStatus.NOTBLOCKABLE
    outer = proc.free_epc_pages(1)[0]
    assert proc.epa(outer) == SgxStatus.SUCCESS
    contents, pcmd = proc.allocate(PAGE), proc.allocate(128, align=128)
    proc.write(pager.pageinfo, struct.pack("<QQQQ", 0, contents, pcmd, 0))
    assert proc.ewb(pager.pageinfo, va_page, outer) == SgxStatus.SUCCESS  # no EBLOCK needed
    assert not proc.epcm(va_page).valid
    with pytest.raises(PageFault):  # its slots are gone with it
        pager.load(key)
    new_va = proc.free_epc_pages(1)[0]
    proc.write(pager.pageinfo, struct.pack("<QQQQ", 0, contents, pcmd, 0))
    assert proc.eldu(pager.pageinfo, new_va, outer) == SgxStatus.SUCCESS
    assert proc.epcm(new_va).page_type == PageType.VA
    record.slot = new_va + (record.slot & 0xFFF)
    assert pager.load(key) == SgxStatus.SUCCESS
    assert enc.call(1, struct.pack("<QQ", DATA, len(payload))) == payload
