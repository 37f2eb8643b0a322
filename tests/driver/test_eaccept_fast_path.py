"""EACCEPT's fast path against its general path, on the driver's platform (issue 16's bench path).

The fast path is ``EnclaveContext.eaccept`` → ``Enclu.eaccept``: the leaf delivers its own
translation #PFs to the OS where they happen (``EdmmEnclu.eaccept_step``) and reads the
driver's page tables directly (``EnclaveVm.current_ptes``). The general path is the one every
other ENCLU leaf takes: ``Enclu.run_leaf`` over the one-attempt leaf, which raises each #PF for
``run_leaf`` to deliver, with an MMU that offers only ``walk`` and ``fault``. The two platforms
are built the same way and given the same operations, valid and odd (misaligned, outside
ELRANGE, unmapped, PROT_NONE, read-only VMAs, holes under RBX, reserved SECINFO bits, illegal
requests, attribute mismatches, untracked EMODPR, an OS that claims to resolve and does not,
and an EPC so small that EAUG on the fault evicts the SECINFO's page); every status, fault (type,
address, error code, text), every fault the OS saw (in order, with its answer), the EPCM, the
driver's pages and the page tables must come out the same.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest

from sgxlaunch.arch.constants import PageType, SecinfoFlag
from sgxlaunch.cpu import CpuFault, EnclaveContext, EnclaveProgram, program_image
from sgxlaunch.cpu.enclave import PteMmu
from sgxlaunch.driver import LoadedEnclave, SgxDriver, load, uapi
from sgxlaunch.driver.vma import EnclaveVm
from tests.support.cpu import DEBUG, sign_image
from tests.support.driver import platform

PAGE = 4096
R, W, X = int(SecinfoFlag.R), int(SecinfoFlag.W), int(SecinfoFlag.X)
PENDING, MODIFIED, PR = int(SecinfoFlag.PENDING), int(SecinfoFlag.MODIFIED), int(SecinfoFlag.PR)
REG, TCS, TRIM = int(PageType.REG) << 8, int(PageType.TCS) << 8, int(PageType.TRIM) << 8
PENDING_RW = REG | R | W | PENDING
DATA = 0x3000
"""The image's first data page (program_image: TCS, code, one SSA page, then data): the
SECINFO slot is its first 64 bytes."""
FAST, GENERAL = 0, 1


class Prober(EnclaveProgram):
    """ECALL: ``u64 mode`` (FAST: ``ctx.eaccept``; GENERAL: ``Enclu.run_leaf`` over the
    one-attempt leaf), then ops of ``u64 flags, extra, rbx, rcx``: each writes the SECINFO
    (FLAGS, and ``extra`` in its reserved bytes 8..15) at the data page and runs EACCEPT(rbx,
    rcx). Returns the outcomes, one line each: the status, or the fault's type, address,
    error code and text."""

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        (mode,) = struct.unpack_from("<Q", data)
        slot = ctx.base_address + 0x3000
        lines = []
        for flags, extra, rbx, rcx in struct.iter_unpack("<QQQQ", data[8:]):
            ctx.write(slot, struct.pack("<QQ", flags, extra).ljust(64, b"\0"))
            try:
                if mode == 0:
                    status = ctx.eaccept(rbx, rcx)
                else:  # the general path, as every other ENCLU leaf runs
                    enclu, enclave = ctx._enclu, ctx._enclave
                    status = enclu.run_leaf(enclave, enclu.edmm.eaccept, enclave, rbx, rcx)
                lines.append(f"status {int(status)}")
            except CpuFault as exc:
                where = f"{getattr(exc, 'address', 0):x} {getattr(exc, 'error_code', 0):x}"
                lines.append(f"{exc.vector} {where} {exc}")
        return "\n".join(lines).encode()


class RecordingMmu:
    """The driver's MMU (walk and fault only: the general path), recording every fault the
    OS sees with its answer; ``liars``: pages whose faults it answers "resolved" without
    doing anything (an OS that would loop a leaf forever)."""

    def __init__(self, vm: EnclaveVm, liars: set[int]) -> None:
        self.vm = vm
        self.liars = liars
        self.log: list[tuple[int, int, bool]] = []

    def walk(self, secs: int, linaddr: int, access: int) -> int:
        return self.vm.walk(secs, linaddr, access)

    def fault(self, secs: int, linaddr: int, error_code: int) -> bool:
        if linaddr & ~(PAGE - 1) in self.liars:
            resolved = True
        else:
            resolved = self.vm.fault(secs, linaddr, error_code)
        self.log.append((linaddr, error_code, resolved))
        return resolved


class RecordingPteMmu(RecordingMmu):
    """The same, with the driver's ``current_ptes`` (the fast path reads the PTEs)."""

    def current_ptes(self) -> dict[int, int] | None:
        return self.vm.current_ptes()


@dataclass
class Setup:
    driver: SgxDriver
    loaded: LoadedEnclave
    mmu: RecordingMmu | None
    handler_log: list[int]

    @property
    def base(self) -> int:
        return self.loaded.baseaddr

    def run(self, mode: int, ops: list[tuple[int, int, int, int]]) -> bytes:
        data = struct.pack("<Q", mode) + b"".join(struct.pack("<QQQQ", *op) for op in ops)
        return self.loaded.ecall(0, data)

    def state(self) -> tuple[object, ...]:
        """The EPCM, the driver's view of the enclave, the PTEs and the faults seen."""
        st = self.driver.cpu.state
        enclave = next(iter(self.driver.enclaves.values()))
        pages = {
            off: (p.epc, p.max_prot, p.page_type, p.dynamic, p.backing is not None)
            for off, p in enclave.pages.items()
        }
        return (
            bytes(st.valid),
            bytes(st.ptype),
            bytes(st.perm),
            bytes(st.blocked),
            tuple(st.linaddr),
            tuple(o is not None for o in st.owner),
            pages,
            dict(self.loaded.process.ptes),
            None if self.mmu is None else list(self.mmu.log),
            list(self.handler_log),
        )


def setup(mode: int, *, mmu: bool = True, epc_mib: int = 2, liars: tuple[int, ...] = ()) -> Setup:
    """An initialized Prober enclave (ELRANGE 2 MiB) on an SGX2 platform. After the image:
    8 RW pages, 2 read-only, 2 PROT_NONE, then 2 unmapped pages, then 400 RW pages; ``liars``
    are page offsets whose faults the OS answers "resolved" without resolving."""
    image = program_image(Prober, data_pages=1)
    image = type(image)(
        size=1 << 21, ssaframesize=1, pages=image.pages, tcs_offsets=image.tcs_offsets
    )
    sig = sign_image(image, "app", flags=DEBUG)
    driver = platform(epc_mib=epc_mib, sgx2=True)
    driver.cpu.register_program(sig.enclavehash, Prober)
    loaded = load(driver.new_process(), image, sig)
    proc, base = loaded.process, loaded.baseaddr
    shared = uapi.MAP_SHARED | uapi.MAP_FIXED
    rw = uapi.PROT_READ | uapi.PROT_WRITE
    proc.mmap(base + 0x4000, 8 * PAGE, rw, shared, loaded.fd)
    proc.mmap(base + 0xC000, 2 * PAGE, uapi.PROT_READ, shared, loaded.fd)
    proc.mmap(base + 0xE000, 2 * PAGE, 0, shared, loaded.fd)
    proc.mmap(base + 0x12000, 400 * PAGE, rw, shared, loaded.fd)
    handler_log: list[int] = []
    recorder: RecordingMmu | None = None
    vm = driver.vm
    if mmu:
        kind = RecordingPteMmu if mode == FAST else RecordingMmu
        recorder = kind(vm, {base + off for off in liars})
        driver.cpu.mmu = recorder
    else:
        driver.cpu.mmu = None

        def handler(secs: int, linaddr: int) -> bool:
            handler_log.append(linaddr)
            return vm.page_fault(secs, linaddr)

        driver.cpu.page_fault_handler = handler
    return Setup(driver, loaded, recorder, handler_log)


def odd_ops(base: int) -> list[tuple[int, int, int, int]]:
    """EACCEPTs valid and odd, in an order where each sees what the earlier ones did."""
    slot = base + DATA
    return [
        (PENDING_RW, 0, slot, base + 0x4000),  # a hole: #PF, EAUG, SUCCESS
        (PENDING_RW, 0, slot, base + 0x4000),  # again: ATTRIBUTES_MISMATCH (accepted)
        (PENDING_RW, 0, slot + 8, base + 0x5000),  # RBX misaligned: #GP
        (PENDING_RW, 0, base - 64, base + 0x5000),  # RBX outside ELRANGE: #GP
        (PENDING_RW, 0, slot, base + 0x5008),  # RCX misaligned: #GP
        (PENDING_RW, 0, slot, base + (1 << 21)),  # RCX outside ELRANGE: #GP
        (PENDING_RW | 0x40, 0, slot, base + 0x5000),  # reserved FLAGS bit: #GP
        (PENDING_RW, 1, slot, base + 0x5000),  # reserved byte: #GP
        (REG | R | W | MODIFIED, 0, slot, base + 0x5000),  # illegal request: #GP
        (REG | R | PENDING, 0, slot, base + 0x5000),  # EAUGed RW, asked R: MISMATCH
        (PENDING_RW, 0, slot, base + 0x5000),  # now PENDING RW: SUCCESS (no fault)
        (TRIM | MODIFIED, 0, slot, base + 0x6000),  # a hole, TRIM asked: EAUG, MISMATCH
        (PENDING_RW, 0, slot, base + 0xC000),  # read-only VMA: EAUG, SUCCESS
        (PENDING_RW, 0, slot, base + 0xE000),  # PROT_NONE VMA: access_error, #PF
        (PENDING_RW, 0, slot, base + 0x10000),  # no VMA: #PF to user space
        (PENDING_RW, 0, base + 0x7000, base + 0x8000),  # RBX a hole: EAUG, then #PF(SGX)
        (PENDING_RW, 0, slot, base + 0x7000),  # that page, accepted: SUCCESS
        (PENDING_RW, 0, base + 0x7000, base + 0x8000),  # its zero SECINFO: illegal, #GP
        (REG | R | X | PENDING, 0, slot, base + 0x9000),  # X asked: MISMATCH
        (PENDING_RW, 0, slot, base + 0x1000),  # the code page: MISMATCH
        (TCS | MODIFIED, 0, slot, base),  # the TCS: MISMATCH
        (PENDING_RW, 0, slot, base + 0x9000),  # SUCCESS
        (REG | R | PR, 0, slot, base + 0x9000),  # PR without EMODPR: MISMATCH
        (PENDING_RW, 0, slot, base + 0xA000),  # a liar's page (when set): 8 deliveries
    ]


def outcomes_and_state(
    mode: int, ops: list[tuple[int, int, int, int]], **kwargs: bool | int | tuple[int, ...]
) -> tuple[bytes, tuple[object, ...]]:
    s = setup(mode, **kwargs)  # type: ignore[arg-type]
    out = s.run(mode, [(f, e, s.base + rbx, s.base + rcx) for f, e, rbx, rcx in ops])
    return out, s.state()


def relative(base: int, ops: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    return [(f, e, rbx - base, rcx - base) for f, e, rbx, rcx in ops]


@pytest.mark.parametrize("mmu", [True, False], ids=["mmu", "no-mmu"])
def test_odd_inputs_same_statuses_faults_and_state(mmu: bool) -> None:
    ops = relative(0, odd_ops(0))
    fast = outcomes_and_state(FAST, ops, mmu=mmu, liars=(0xA000,))
    general = outcomes_and_state(GENERAL, ops, mmu=mmu, liars=(0xA000,))
    assert fast[0] == general[0]
    assert fast[1] == general[1]
    lines = fast[0].decode().splitlines()
    assert len(lines) == len(ops)
    if mmu:  # the scenario is what the comments say (SDM EACCEPT steps; kernel fault paths)
        assert lines[0] == "status 0" and lines[1] == "status 19"  # SUCCESS, MISMATCH
        assert all(line.startswith("#GP") for line in lines[2:9])
        assert lines[9] == "status 19" and lines[10] == "status 0"
        assert lines[13].startswith("#PF") and lines[14].startswith("#PF")
        assert lines[15].split()[2] == "8005"  # the SECINFO's page is PENDING: SGX bit
        assert lines[23].startswith("#PF")
        log = fast[1][8]
        assert isinstance(log, list)
        liar = [entry for entry in log if entry[0] & ~0xFFF == log[-1][0] & ~0xFFF]
        assert len(liar) == 8 and all(resolved for _, _, resolved in liar)


def test_untracked_emodpr_same_on_both_paths() -> None:
    """EMODPR (kernel side, no ETRACK since) → EACCEPT(PR) answers SGX_NOT_TRACKED on both
    paths (SDM EACCEPT step 9)."""
    results = []
    for mode in (FAST, GENERAL):
        s = setup(mode)
        first = s.run(mode, [(PENDING_RW, 0, s.base + DATA, s.base + 0x4000)])
        enclave = next(iter(s.driver.enclaves.values()))
        secinfo = s.loaded.process.alloc(PAGE)
        s.loaded.process.write(secinfo, struct.pack("<Q", REG | R).ljust(64, b"\0"))
        epc = enclave.pages[0x4000].epc
        assert epc is not None
        assert s.driver.cpu.emodpr(secinfo, epc) == 0
        untracked = s.run(mode, [(REG | R | PR, 0, s.base + DATA, s.base + 0x4000)])
        results.append((first, untracked, s.state()))
    assert results[0] == results[1]
    assert results[0][1] == b"status 11"  # SGX_NOT_TRACKED


@pytest.mark.parametrize("mmu", [True, False], ids=["mmu", "no-mmu"])
def test_eaug_on_the_fault_under_epc_pressure_evicts_and_reloads_the_secinfo(mmu: bool) -> None:
    """An EPC of 256 pages and 300 holes accepted in one ECALL: EAUG's allocation reclaims,
    the SECINFO's page is written back among others, EACCEPT's RBX then faults (not present:
    the PTE is gone, or without paging no EPC page is there), the driver reloads it (ELDU) and
    the leaf runs again — the same on both paths."""
    ops = [(PENDING_RW, 0, DATA, 0x12000 + k * PAGE) for k in range(300)]
    fast = outcomes_and_state(FAST, ops, epc_mib=1, mmu=mmu)
    general = outcomes_and_state(GENERAL, ops, epc_mib=1, mmu=mmu)
    assert fast == general
    assert fast[0].decode().splitlines() == ["status 0"] * 300
    if mmu:
        log = fast[1][8]
        assert isinstance(log, list)
        faults = [addr for addr, _, resolved in log if resolved]
        assert len(faults) == len(log)
    else:
        handled = fast[1][9]
        assert isinstance(handled, list)
        faults = handled
    base = max(faults) & ~((1 << 21) - 1)
    assert base + DATA in faults  # the SECINFO's page came back on a fault


def test_the_driver_mmu_offers_the_pte_fast_path() -> None:
    """The fast path is taken on the driver's platform: its MMU is a PteMmu, and the PTEs it
    hands out are the ones walk reads."""
    s = setup(FAST)
    vm = s.driver.vm
    assert isinstance(vm, PteMmu) and isinstance(s.mmu, PteMmu)
    assert not isinstance(setup(GENERAL).mmu, PteMmu)  # the general path's MMU
    assert vm.current_ptes() is None  # no process context outside an ECALL
    seen: list[dict[int, int] | None] = []
    walk = vm.walk

    def spy(secs: int, linaddr: int, access: int) -> int:
        seen.append(vm.current_ptes())
        return walk(secs, linaddr, access)

    vm.walk = spy
    s.driver.cpu.mmu = vm
    s.run(FAST, [(PENDING_RW, 0, s.base + DATA, s.base + 0x4000)])
    assert seen and all(ptes is s.loaded.process.ptes for ptes in seen)
