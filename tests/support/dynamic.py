"""A loader enclave for the owner's dynamic-memory limits (issue 17): the kernel selftests'
enclave (:mod:`tests.support.kselftest`) plus two operations a loader needs to run code it
fetched after EINIT — copy a page of bytes to an address, and jump to code at an address
(``ctx.execute``: the fetch goes through the page tables and the EPCM like any other).

:class:`Loader` loads it on an SGX2 driver platform and gives the enclave the owner limits the
test names, as owner-mode INIT stores them from the token's KEYID (``Enclave.owner_limits``).
Its helpers return what the loader sees (errno, EACCEPT status, the vDSO's exception report)
so each test states the outcome it expects.
"""

from __future__ import annotations

import struct

from sgxlaunch.arch.constants import PAGE_SIZE
from sgxlaunch.cpu import EnclaveContext, EnclaveImage, EnclaveProgram
from sgxlaunch.cpu.image import program_code_page
from sgxlaunch.driver import DriverError, Enclave, LoadedEnclave, SgxDriver, uapi
from sgxlaunch.driver.dynamic import DriverEvent
from sgxlaunch.driver.owner import OwnerLimits
from tests.support.kselftest import (
    CODE,
    ENCL_OP_EMODPE,
    ENCL_OP_GET_FROM_ADDRESS,
    ENCL_OP_INIT_TCS_PAGE,
    ENCL_OP_NOP,
    ENCL_OP_PUT_TO_ADDRESS,
    MAGIC,
    SGX_SECINFO_MODIFIED,
    SGX_SECINFO_PENDING,
    SGX_SECINFO_R,
    SGX_SECINFO_REG,
    SGX_SECINFO_TCS,
    SGX_SECINFO_W,
    SGX_SECINFO_X,
    TCS2,
    Selftest,
    SelftestEnclave,
    selftest_image,
)

ENCL_OP_PUT_PAGE = 0x100
ENCL_OP_EXECUTE = 0x101
PENDING_RW = SGX_SECINFO_R | SGX_SECINFO_W | SGX_SECINFO_REG | SGX_SECINFO_PENDING
R, W, X = uapi.PROT_READ, uapi.PROT_WRITE, uapi.PROT_EXEC
FETCHED_OUTPUT = b"fetched code ran"


class FetchedCode(EnclaveProgram):
    """Code the loader fetched at run time: never measured, never in MRENCLAVE."""

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        del ctx, function, data
        return FETCHED_OUTPUT


CODE_PAGE = program_code_page(FetchedCode)
"""The page of bytes the loader fetched (what ``ctx.execute`` runs is what the page holds)."""


class LoaderEnclave(SelftestEnclave):
    """The selftest enclave plus PUT_PAGE (``u64 op, u64 address, bytes``: write the bytes at
    the address) and EXECUTE (``u64 op, u64 address``: run the code there, return its
    output)."""

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        op, address = struct.unpack_from("<QQ", data.ljust(16, b"\0"))
        if op == ENCL_OP_PUT_PAGE:
            ctx.write(address, data[16:])
            return b""
        if op == ENCL_OP_EXECUTE:
            return ctx.execute(address)
        return super().ecall(ctx, function, data)


LOADER_SIZE = 0x20000


def loader_image() -> EnclaveImage:
    """The loader enclave's image (the selftest layout, 128 KiB: room for dynamic pages)."""
    return selftest_image(size=LOADER_SIZE, program=LoaderEnclave)


class Loader(Selftest):
    """The loader enclave, loaded (``premap``: ELRANGE mapped with that protection before
    ECREATE, as Gramine does), initialized, with ``limits`` as its owner limits — or, with
    ``loaded``, the :func:`loader_image` enclave some launcher (a Platform) loaded, with the
    limits its INIT gave it."""

    def __init__(
        self,
        driver: SgxDriver,
        limits: OwnerLimits | None = None,
        *,
        premap: int | None = None,
        loaded: LoadedEnclave | None = None,
    ) -> None:
        super().__init__(
            driver, size=LOADER_SIZE, program=LoaderEnclave, premap=premap, loaded=loaded
        )
        driver.cpu.register_code(FetchedCode)
        self.enclave: Enclave = next(
            e
            for e in driver.enclaves.values()
            if e.base == self.encl_base and self.process in e.mm_list
        )
        assert self.enclave.initialized
        if limits is not None:
            self.enclave.owner_limits = limits  # as owner-mode INIT stores them (token KEYID)
        self._next_hole = self.encl_base + self.total_size()
        driver.events.drain()  # start each scenario with an empty queue

    def hole(self, pages: int = 1) -> int:
        """The address of ``pages`` unused pages of ELRANGE (no enclave page there yet)."""
        address = self._next_hole
        self._next_hole += pages * PAGE_SIZE
        assert self._next_hole <= self.encl_base + self.encl_size
        assert all(
            address - self.encl_base + k * PAGE_SIZE not in self.enclave.pages for k in range(pages)
        )
        return address

    def offset(self, address: int) -> int:
        return address - self.encl_base

    def mmap(self, address: int, pages: int, prot: int) -> int:
        """mmap(MAP_SHARED|MAP_FIXED) over ``pages`` at ``address``: 0 or the errno."""
        try:
            self.process.mmap(
                address, pages * PAGE_SIZE, prot, uapi.MAP_SHARED | uapi.MAP_FIXED, self.fd
            )
        except DriverError as exc:
            return exc.errno
        return 0

    def mprotect(self, address: int, pages: int, prot: int) -> int:
        """mprotect: 0 or the errno."""
        try:
            self.process.mprotect(address, pages * PAGE_SIZE, prot)
        except DriverError as exc:
            return exc.errno
        return 0

    def put_page(self, address: int, data: bytes = CODE_PAGE) -> None:
        self.call_bytes(struct.pack("<QQ", ENCL_OP_PUT_PAGE, address) + data)

    def call_bytes(self, data: bytes) -> bytes:
        assert self.process.vdso_sgx_enter_enclave(uapi.EENTER, self.run, data) == 0
        return self.run.output

    def execute(self, address: int) -> bytes:
        """Run the code at ``address`` (EXECUTE); the output, or b"" with an exception."""
        return self.call_bytes(struct.pack("<QQ", ENCL_OP_EXECUTE, address))

    def emodpe(self, address: int, flags: int) -> None:
        self.call(ENCL_OP_EMODPE, address, flags)

    def grow_heap(self, address: int) -> int:
        """EACCEPT(REG|R|W|PENDING) on a hole (EAUG on the fault, then the accept)."""
        return self.eaccept(address, PENDING_RW)

    def add_pages(self, pages: int = 1, *, mapped: bool = False) -> int:
        """``pages`` new heap pages: mmap RW over holes (unless ``mapped``: ELRANGE was
        premapped) and EACCEPT each (EAUGed on the fault). Returns the first address."""
        address = self.hole(pages)
        if not mapped:
            assert self.mmap(address, pages, R | W) == 0
        for k in range(pages):
            assert self.grow_heap(address + k * PAGE_SIZE) == 0
            self.expect_eexit()
        return address

    def fetch_code(self, address: int) -> None:
        """Put the fetched code into the accepted page at ``address`` and EMODPE it to RWX
        (the enclave alone decides its EPCM X bit; the kernel cannot stop EMODPE)."""
        self.put_page(address)
        self.expect_eexit()
        self.emodpe(address, SGX_SECINFO_R | SGX_SECINFO_W | SGX_SECINFO_X)
        self.expect_eexit()

    def add_tcs(self) -> tuple[int, int]:
        """The selftest ``tcs_create`` flow: three pages (stack, TCS, SSA) EAUGed by EACCEPT,
        the TCS page filled from inside, MODIFY_TYPES → TCS, EACCEPT(TCS|MODIFIED).

        Returns:
            (MODIFY_TYPES errno, the TCS address).
        """
        stack = self.hole(3)
        tcs, ssa = stack + PAGE_SIZE, stack + 2 * PAGE_SIZE
        assert self.mmap(stack, 3, R | W) == 0
        for page in (stack, ssa, tcs):
            assert self.grow_heap(page) == 0
            self.expect_eexit()
        self.call(ENCL_OP_INIT_TCS_PAGE, tcs, self.offset(ssa), CODE)
        self.expect_eexit()
        err, _, _ = self.modify_types(self.offset(tcs), PAGE_SIZE, uapi.SGX_PAGE_TYPE_TCS)
        if err:
            return err, tcs
        assert self.eaccept(tcs, SGX_SECINFO_TCS | SGX_SECINFO_MODIFIED) == 0
        self.expect_eexit()
        return 0, tcs

    def grow_and_add_tcs(self) -> int:
        """The first two steps of every scenario: one heap page (it takes a write and reads
        back) and a TCS an ECALL runs through. Returns the heap page's address."""
        heap = self.add_pages()
        self.call(ENCL_OP_PUT_TO_ADDRESS, heap, MAGIC)
        self.expect_eexit()
        assert self.value(self.call(ENCL_OP_GET_FROM_ADDRESS, heap)) == MAGIC
        self.expect_eexit()
        err, tcs = self.add_tcs()
        assert err == 0
        self.nop_via(tcs)
        return heap

    def nop_via(self, tcs: int) -> None:
        """An ECALL (NOP) through the TCS at ``tcs``; EEXIT expected."""
        saved, self.run.tcs = self.run.tcs, tcs
        try:
            self.call(ENCL_OP_NOP)
            self.expect_eexit()
        finally:
            self.run.tcs = saved

    def use_second_tcs(self) -> None:
        """Further calls enter through TCS2 (the first is parked on a reported exception)."""
        self.run.tcs = self.encl_base + TCS2

    def events(self) -> list[DriverEvent]:
        events, dropped = self.driver.events.drain()
        assert dropped == 0
        return events


__all__ = [
    "CODE_PAGE",
    "ENCL_OP_EXECUTE",
    "ENCL_OP_PUT_PAGE",
    "FETCHED_OUTPUT",
    "LOADER_SIZE",
    "PENDING_RW",
    "FetchedCode",
    "Loader",
    "LoaderEnclave",
    "R",
    "W",
    "X",
    "loader_image",
]
