"""Attacks on evicted EPC pages: replay of an older copy, the wrong VA slot, another enclave or
address, tampered contents or PCMD — ELDU refuses them as the SDM does."""

from __future__ import annotations

import struct

import pytest

from sgxlaunch.arch import SgxStatus
from sgxlaunch.cpu import GeneralProtection, Processor
from tests.support.cpu import Evicted, MemoryProgram, Pager, cpu, launch

PAGE = 4096
DATA = 0x3000


def _evicted(payload: bytes = b"secret" * 100):  # type: ignore[no-untyped-def]
    proc = cpu()
    enc = launch(proc, MemoryProgram, "app", data_pages=3)
    pager = Pager(proc)
    pager.track(enc.enclave)
    enc.call(0, struct.pack("<Q", DATA) + payload)
    key = (enc.enclave.secs, enc.enclave.baseaddr + DATA)
    assert pager.evict(key) == SgxStatus.SUCCESS
    return proc, enc, pager, key


def _eldu(
    proc: Processor, pager: Pager, linaddr: int, record: Evicted, secs: int, slot: int | None = None
) -> SgxStatus:
    proc.write(pager.pageinfo, struct.pack("<QQQQ", linaddr, record.contents, record.pcmd, secs))
    return proc.eldu(
        pager.pageinfo, proc.free_epc_pages(1)[0], record.slot if slot is None else slot
    )


def _copy(proc: Processor, record: Evicted) -> Evicted:
    contents, pcmd = proc.allocate(PAGE), proc.allocate(128, align=128)
    proc.write(contents, proc.read(record.contents, PAGE))
    proc.write(pcmd, proc.read(record.pcmd, 128))
    return Evicted(contents, pcmd, record.slot)


def test_replayed_old_copy_refused() -> None:
    proc, enc, pager, key = _evicted(b"version one" * 10)
    old = _copy(proc, pager.evicted[key])
    assert pager.load(key) == SgxStatus.SUCCESS
    enc.call(0, struct.pack("<Q", DATA) + b"version two" * 10)
    assert pager.evict(key) == SgxStatus.SUCCESS
    new = pager.evicted[key]
    # The old copy against the slot that now holds the new version, and against its own
    # (cleared) slot: both refused.
    assert _eldu(proc, pager, key[1], old, key[0], slot=new.slot) == SgxStatus.MAC_COMPARE_FAIL
    assert pager.load(key) == SgxStatus.SUCCESS
    assert enc.call(1, struct.pack("<QQ", DATA, 11)) == b"version two"


def test_reload_twice_refused() -> None:
    proc, _, pager, key = _evicted()
    record = pager.evicted[key]
    saved = _copy(proc, record)
    assert pager.load(key) == SgxStatus.SUCCESS
    assert _eldu(proc, pager, key[1], saved, key[0]) == SgxStatus.MAC_COMPARE_FAIL


def test_wrong_va_slot_refused() -> None:
    proc, _enc, pager, key = _evicted()
    other_key = (key[0], key[1] + PAGE)
    assert pager.evict(other_key) == SgxStatus.SUCCESS
    record = pager.evicted[key]
    other_slot = pager.evicted[other_key].slot
    assert _eldu(proc, pager, key[1], record, key[0], slot=other_slot) == SgxStatus.MAC_COMPARE_FAIL
    empty_slot = pager.slots[-1]
    assert _eldu(proc, pager, key[1], record, key[0], slot=empty_slot) == SgxStatus.MAC_COMPARE_FAIL
    assert pager.load(key) == SgxStatus.SUCCESS


def test_other_linear_address_refused() -> None:
    proc, _, pager, key = _evicted()
    record = pager.evicted[key]
    assert _eldu(proc, pager, key[1] + PAGE, record, key[0]) == SgxStatus.MAC_COMPARE_FAIL


def test_other_enclave_refused() -> None:
    proc, _enc, pager, key = _evicted()
    other = launch(proc, MemoryProgram, "app", data_pages=3)  # same MRENCLAVE, another instance
    record = pager.evicted[key]
    assert _eldu(proc, pager, key[1], record, other.enclave.secs) == SgxStatus.MAC_COMPARE_FAIL
    assert pager.load(key) == SgxStatus.SUCCESS


@pytest.mark.parametrize("where", ["contents", "mac", "permissions", "page_type", "eid"])
def test_tampered_page_or_pcmd_refused(where: str) -> None:
    proc, _, pager, key = _evicted()
    record = pager.evicted[key]
    offset = {
        "contents": (record.contents, 100),
        "mac": (record.pcmd, 112),
        "permissions": (record.pcmd, 0),  # R|W → R|W|X
        "page_type": (record.pcmd, 1),  # REG → TCS
        "eid": (record.pcmd, 64),
    }[where]
    address, delta = offset
    byte = proc.read(address + delta, 1)[0]
    flip = {"permissions": 0x4, "page_type": 0x3}.get(where, 0x01)
    proc.write(address + delta, bytes([byte ^ flip]))
    assert _eldu(proc, pager, key[1], record, key[0]) == SgxStatus.MAC_COMPARE_FAIL
    proc.write(address + delta, bytes([byte]))
    assert pager.load(key) == SgxStatus.SUCCESS


def test_pcmd_reserved_bytes_fault() -> None:
    proc, _, pager, key = _evicted()
    record = pager.evicted[key]
    proc.write(record.pcmd + 80, b"\x01")
    with pytest.raises(GeneralProtection):
        _eldu(proc, pager, key[1], record, key[0])
