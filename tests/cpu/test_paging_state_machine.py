"""A Hypothesis state machine over the paging leaves: whatever order pages are written, evicted
(EBLOCK/ETRACK/EWB), reloaded (ELDU/ELDB) or demand-faulted in, every read returns the last
write, and every stale copy of a page is refused."""

from __future__ import annotations

import struct

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from sgxlaunch.arch import SgxStatus
from tests.support.cpu import Evicted, MemoryProgram, Pager, cpu, launch

PAGE = 4096
DATA = 0x3000
PAGES = 6


class PagingMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.proc = cpu()
        self.enc = launch(self.proc, MemoryProgram, "app", data_pages=PAGES)
        self.pager = Pager(self.proc)
        self.pager.track(self.enc.enclave)
        self.model = [bytes(PAGE)] * PAGES
        self.stale: list[tuple[tuple[int, int], Evicted, int]] = []
        self.generation: dict[tuple[int, int], int] = {}

    def key(self, k: int) -> tuple[int, int]:
        return (self.enc.enclave.secs, self.enc.enclave.baseaddr + DATA + k * PAGE)

    def ensure_tcs(self) -> None:
        for lin in (0, 0x1000, 0x2000):
            key = (self.enc.enclave.secs, self.enc.enclave.baseaddr + lin)
            if key in self.pager.evicted:
                assert self.pager.load(key) == SgxStatus.SUCCESS
        self.enc.enclave.tcs = [
            self.pager.resident[(self.enc.enclave.secs, self.enc.enclave.baseaddr)]
        ]

    @rule(
        k=st.integers(0, PAGES - 1),
        offset=st.integers(0, PAGE - 16),
        data=st.binary(min_size=1, max_size=16),
    )
    def write(self, k: int, offset: int, data: bytes) -> None:
        self.ensure_tcs()
        self.enc.call(0, struct.pack("<Q", DATA + k * PAGE + offset) + data)
        page = bytearray(self.model[k])
        page[offset : offset + len(data)] = data
        self.model[k] = bytes(page)

    @rule(k=st.integers(0, PAGES - 1))
    def read(self, k: int) -> None:
        self.ensure_tcs()
        assert self.enc.call(1, struct.pack("<QQ", DATA + k * PAGE, PAGE)) == self.model[k]

    @rule(k=st.integers(0, PAGES - 1))
    def evict(self, k: int) -> None:
        key = self.key(k)
        if key in self.pager.resident:
            assert self.pager.evict(key) == SgxStatus.SUCCESS
            record = self.pager.evicted[key]
            copy = Evicted(
                self.proc.allocate(PAGE), self.proc.allocate(128, align=128), record.slot
            )
            self.proc.write(copy.contents, self.proc.read(record.contents, PAGE))
            self.proc.write(copy.pcmd, self.proc.read(record.pcmd, 128))
            self.generation[key] = self.generation.get(key, 0) + 1
            self.stale.append((key, copy, self.generation[key]))

    @rule(k=st.integers(0, PAGES - 1), blocked=st.booleans())
    def load(self, k: int, blocked: bool) -> None:
        key = self.key(k)
        if key in self.pager.evicted:
            assert self.pager.load(key, blocked=blocked) == SgxStatus.SUCCESS
            if blocked:  # a blocked page must be evicted again before it can be used
                assert self.pager.evict(key) == SgxStatus.SUCCESS

    @precondition(lambda self: bool(self.stale))
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        key, copy, generation = data.draw(st.sampled_from(self.stale))
        if key not in self.pager.evicted or generation == self.generation[key]:
            return  # not evicted now, or this copy is the current one
        current = self.pager.evicted[key]
        self.proc.write(
            self.pager.pageinfo, struct.pack("<QQQQ", key[1], copy.contents, copy.pcmd, key[0])
        )
        status = self.proc.eldu(self.pager.pageinfo, self.proc.free_epc_pages(1)[0], current.slot)
        # Even with identical plaintext, an older copy was sealed under another version.
        assert status == SgxStatus.MAC_COMPARE_FAIL

    @invariant()
    def every_page_is_somewhere(self) -> None:
        if not hasattr(self, "pager"):
            return
        for k in range(PAGES):
            key = self.key(k)
            assert (key in self.pager.resident) != (key in self.pager.evicted)


PagingMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestPaging = PagingMachine.TestCase
