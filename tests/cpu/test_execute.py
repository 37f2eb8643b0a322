"""``EnclaveContext.execute`` (issue 16): code placed in a dynamic page runs only when the page
tables allow the fetch, the EPCM holds an accepted PT_REG page of this enclave with X, and the
page is a program code page whose source hash a registered program has — what runs is what the
page holds. Each check has its own test; the page-table check wins over the EPCM's (spec §3.8:
paging first), and the EPCM's over the contents."""

from __future__ import annotations

import pytest

from sgxlaunch.arch import SgxStatus
from sgxlaunch.cpu import EnclaveContext, EnclaveProgram, InvalidOpcode, PageFault
from sgxlaunch.cpu.image import program_code_page
from sgxlaunch.errors import UsageError
from tests.support.sgx2 import DATA, DYNAMIC, PENDING, R, Sgx2Enclave, W, X, sgx2_enclave

FETCH_SGX = 0x8015  # #PF: SGX | instruction fetch | user | present (the EPCM refuses)
FETCH_PTE = 0x15  # #PF: instruction fetch | user | present (the page tables refuse)


class Fetched(EnclaveProgram):
    """Code an enclave fetched: it answers, and writes into its enclave through the context."""

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        ctx.write(ctx.base_address + DATA + 1024, b"fetched ran")
        return b"fetched:" + bytes([function]) + data


class Other(EnclaveProgram):
    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        return b"other"


class NoFetchMmu:
    """Page tables that map every page R|W but not X (a VMA without PROT_EXEC)."""

    def __init__(self) -> None:
        self.faults: list[int] = []

    def walk(self, secs: int, linaddr: int, access: int) -> int:
        return 0x15 if access == 0x10 else 0

    def fault(self, secs: int, linaddr: int, error_code: int) -> bool:
        self.faults.append(error_code)
        return False


@pytest.fixture
def e() -> Sgx2Enclave:
    return sgx2_enclave()


def code_page(e: Sgx2Enclave, program: type[EnclaveProgram], *, x: bool = True) -> int:
    """An EAUGed, accepted dynamic page holding ``program``'s code page (EMODPE X unless
    told); returns its linear address."""
    e.eaug(DYNAMIC)
    assert e.accept(DYNAMIC, R | W | PENDING) == SgxStatus.SUCCESS
    address = e.base + DYNAMIC
    e.inside(lambda ctx: ctx.write(address, program_code_page(program)))
    if x:
        e.emodpe(DYNAMIC, X)
    return address


def fetch_fault(e: Sgx2Enclave, address: int) -> int:
    with pytest.raises(PageFault) as info:
        e.inside(lambda ctx: ctx.execute(address))
    return info.value.error_code


def test_execute_runs_the_registered_program_the_page_holds(e: Sgx2Enclave) -> None:
    e.proc.register_code(Fetched)
    address = code_page(e, Fetched)
    assert e.inside(lambda ctx: ctx.execute(address, 7, b"in")) == b"fetched:\x07in"
    assert e.inside(lambda ctx: ctx.read(e.base + DATA + 1024, 11)) == b"fetched ran"
    # Rewritten with another program's code page, the page runs that program.
    e.proc.register_code(Other)
    e.inside(lambda ctx: ctx.write(address, program_code_page(Other)))
    assert e.inside(lambda ctx: ctx.execute(address)) == b"other"


def test_execute_without_epcm_x_faults_with_sgx_bit(e: Sgx2Enclave) -> None:
    """An accepted dynamic page is RW- until the enclave EMODPEs X: the fetch faults."""
    e.proc.register_code(Fetched)
    address = code_page(e, Fetched, x=False)
    assert fetch_fault(e, address) == FETCH_SGX
    assert e.inside(lambda ctx: ctx.read(e.base + DATA + 1024, 11)) != b"fetched ran"


def test_execute_of_a_measured_data_page_faults_with_sgx_bit(e: Sgx2Enclave) -> None:
    """A static RW- page (EADDed data) holding a code page: no X in the EPCM, no run."""
    e.proc.register_code(Fetched)
    address = e.base + DATA
    e.inside(lambda ctx: ctx.write(address, program_code_page(Fetched)))
    assert fetch_fault(e, address) == FETCH_SGX


def test_execute_of_a_hole_faults_not_present(e: Sgx2Enclave) -> None:
    assert fetch_fault(e, e.base + DYNAMIC) == 0x14  # instruction fetch | user, not present


def test_execute_through_page_tables_without_x_faults_before_the_epcm(e: Sgx2Enclave) -> None:
    """Spec §3.8: the page-table walk comes first — an EPCM-RWX code page behind a mapping
    without X faults on the PTE (no SGX bit), and the OS's handler sees that code."""
    e.proc.register_code(Fetched)
    address = code_page(e, Fetched)
    mmu = NoFetchMmu()
    e.proc.mmu = mmu
    assert fetch_fault(e, address) == FETCH_PTE
    assert mmu.faults == [FETCH_PTE]
    e.proc.mmu = None
    assert e.inside(lambda ctx: ctx.execute(address)) == b"fetched:\x00"


def test_execute_of_bytes_that_are_no_program_is_invalid_opcode(e: Sgx2Enclave) -> None:
    """An executable page without the program magic: #UD, nothing runs."""
    address = code_page(e, Fetched)
    e.inside(lambda ctx: ctx.write(address, bytes(64)))
    with pytest.raises(InvalidOpcode):
        e.inside(lambda ctx: ctx.execute(address))


def test_execute_of_an_unregistered_program_is_refused(e: Sgx2Enclave) -> None:
    """A code page whose source hash no registered program has: the emulator cannot run code
    it was not given (UsageError naming the hash), and the page's X does not change that."""
    address = code_page(e, Other)
    with pytest.raises(UsageError, match=Other.source_hash().hex()):
        e.inside(lambda ctx: ctx.execute(address))
