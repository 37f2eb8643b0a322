"""The owner's ``dynamic_memory`` levels enforced by the driver (issue 17, ``driver/dynamic.py``).

Each level's scenario is the issue's acceptance: a loader allowed by the policy grows its heap,
adds a TCS and runs code it fetched, and the test states each outcome — allowed, refused with
which errno or signal (the vDSO's #PF report: error code and address), recorded in the driver's
event queue. The levels reach the enclave as owner-mode INIT stores them from the token's KEYID
(``Enclave.owner_limits``; set directly here — the end-to-end path is in
``tests/launch/test_dynamic_log.py``).

The mechanisms are ``../shared/reference/sgx2-spec.md`` §6.6's three doors (EAUG
``vm_max_prot_bits`` RW; holes after INIT no X in ``sgx_encl_may_map``; no executable PTE from
the EAUG fault path) and §9's hook points; the #PF error codes are the processor's (§3.8:
U = 4, I = 0x10, P = 1, W = 2, SGX = 0x8000).
"""

from __future__ import annotations

import errno

import pytest

from sgxlaunch.arch.constants import PAGE_SIZE, PageType
from sgxlaunch.driver import SgxDriver, uapi
from sgxlaunch.driver.dynamic import ALLOWED, NO_EXEC, REFUSED, DriverEvents, exec_allowed
from sgxlaunch.driver.owner import MAINLINE_LIMITS, DynamicMemory, ExecGrant, OwnerLimits
from tests.support.dynamic import FETCHED_OUTPUT, Loader, R, W, X
from tests.support.kselftest import CODE as CODE_OFFSET
from tests.support.kselftest import (
    DATA,
    ENCL_OP_GET_FROM_ADDRESS,
    ENCL_OP_PUT_TO_ADDRESS,
    MAGIC,
    SGX_SECINFO_R,
    sgx2_platform,
)

NONE = OwnerLimits(DynamicMemory.NONE, unmeasured_exec=False, rwx_pages=False)
DATA_LIMITS = OwnerLimits(DynamicMemory.DATA, unmeasured_exec=False, rwx_pages=False)
ATTESTED = OwnerLimits(DynamicMemory.ATTESTED_CODE, unmeasured_exec=False, rwx_pages=False)
CODE = OwnerLimits(DynamicMemory.CODE, unmeasured_exec=False, rwx_pages=False)

U, FETCH, P = 0x4, 0x10, 0x1  # #PF error code bits (user, instruction fetch, present)


@pytest.fixture
def driver() -> SgxDriver:
    return sgx2_platform(epc_mib=2)


def put_get(t: Loader, address: int) -> int:
    t.call(ENCL_OP_PUT_TO_ADDRESS, address, MAGIC)
    t.expect_eexit()
    value = t.value(t.call(ENCL_OP_GET_FROM_ADDRESS, address))
    t.expect_eexit()
    return value


# -- none -------------------------------------------------------------------------------------


def test_none_heap_growth_gets_sigbus(driver: SgxDriver) -> None:
    """``none``: the mmap of a hole is allowed (mainline's checks), but the EACCEPT's fault on
    it does not EAUG (sgx_vma_fault → SIGBUS): the vDSO reports the #PF (U, not present:
    0x4) at the address and no page was added; the refusal is recorded."""
    t = Loader(driver, NONE)
    heap = t.hole()
    assert t.mmap(heap, 1, R | W) == 0
    t.grow_heap(heap)
    t.expect_exception(U, heap)
    assert t.offset(heap) not in t.enclave.pages
    assert t.enclave.pages_added == 0
    events = t.events()
    assert [(e.action, e.outcome, e.signal, e.start) for e in events] == [
        ("fault", REFUSED, "SIGBUS", t.offset(heap))
    ]
    assert events[0].level == DynamicMemory.NONE
    assert events[0].mrenclave == t.enclave.mrenclave and events[0].pid == t.process.pid


def test_none_sgx2_ioctls_are_eperm(driver: SgxDriver) -> None:
    """``none``: RESTRICT_PERMISSIONS, MODIFY_TYPES (TCS and TRIM) and REMOVE_PAGES of a
    well-formed request are refused with EPERM before any page is touched (count 0, result 0;
    the EPCM is unchanged: the page is still RW and usable)."""
    t = Loader(driver, NONE)
    data = DATA + PAGE_SIZE
    assert t.restrict_permissions(data, PAGE_SIZE, SGX_SECINFO_R) == (errno.EPERM, 0, 0)
    assert t.modify_types(data, PAGE_SIZE, uapi.SGX_PAGE_TYPE_TCS) == (errno.EPERM, 0, 0)
    assert t.modify_types(data, PAGE_SIZE, uapi.SGX_PAGE_TYPE_TRIM) == (errno.EPERM, 0, 0)
    assert t.remove_pages(data, PAGE_SIZE) == (errno.EPERM, 0)
    epc = t.enclave.pages[data].epc
    assert epc is not None
    epcm = driver.cpu.epcm(epc)
    assert (epcm.page_type, epcm.permissions) == (PageType.REG, R | W)
    assert not (epcm.pending or epcm.modified or epcm.pr)
    assert put_get(t, t.encl_base + data) == MAGIC
    actions = [(e.action, e.outcome, e.errno) for e in t.events()]
    assert actions == [
        ("RESTRICT_PERMISSIONS", REFUSED, errno.EPERM),
        ("MODIFY_TYPES", REFUSED, errno.EPERM),
        ("MODIFY_TYPES", REFUSED, errno.EPERM),
        ("REMOVE_PAGES", REFUSED, errno.EPERM),
    ]


def test_none_adding_a_tcs_is_refused(driver: SgxDriver) -> None:
    """``none``: the loader cannot add a TCS — its first page's EACCEPT gets SIGBUS."""
    t = Loader(driver, NONE)
    stack = t.hole(3)
    assert t.mmap(stack, 3, R | W) == 0
    t.grow_heap(stack)
    t.expect_exception(U, stack)
    assert t.enclave.pages_added == 0


def test_none_probes_answer_as_mainline(driver: SgxDriver) -> None:
    """The EDMM probes runtimes make (a zeroed struct: the PSW's is_driver_support_edmm,
    Gramine's edmm_supported_by_driver, the selftests' first step) get mainline's answers under
    ``none`` too — EINVAL from sgx_ioc_sgx2_ready on an uninitialized enclave, EINVAL from
    sgx_validate_offset_length (length 0) after INIT — never EPERM: the owner check comes
    after mainline's argument checks (as an LSM hook after mprotect's own, spec §6.3)."""
    t = Loader(driver, NONE)
    assert t.restrict_permissions(0, 0, 0)[0] == errno.EINVAL
    assert t.modify_types(0, 0, 0)[0] == errno.EINVAL
    assert t.remove_pages(0, 0)[0] == errno.EINVAL
    # A wrong page type is refused by mainline's own check first (EINVAL), not by the owner's.
    assert t.modify_types(DATA, PAGE_SIZE, 2)[0] == errno.EINVAL
    assert t.events() == []


def test_probes_before_init_are_mainline(driver: SgxDriver) -> None:
    """Before INIT nothing is restricted: a fresh enclave fd answers the zeroed probes with
    EINVAL (not initialized), and a whole-range RWX mapping (Gramine's, before ECREATE) is
    allowed — whatever limits INIT will bring."""
    process = driver.new_process()
    fd = process.open(uapi.DEV_SGX_ENCLAVE)
    arg = process.alloc(PAGE_SIZE)
    for cmd in (
        uapi.SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS,
        uapi.SGX_IOC_ENCLAVE_MODIFY_TYPES,
        uapi.SGX_IOC_ENCLAVE_REMOVE_PAGES,
    ):
        with pytest.raises(uapi.DriverError) as exc:
            process.ioctl(fd, cmd, arg)
        assert exc.value.errno == errno.EINVAL
    base = process.reserve(0x20000)
    assert process.mmap(base, 0x20000, R | W | X, uapi.MAP_SHARED | uapi.MAP_FIXED, fd) == base
    assert driver.events.drain() == ([], 0)


# -- data -------------------------------------------------------------------------------------


def test_data_heap_and_tcs_grow_fetched_code_refused(driver: SgxDriver) -> None:
    """``data``: the heap grows (EAUG on the EACCEPT's fault, the page then takes a write), a
    TCS is added (MODIFY_TYPES → 0) and an ECALL runs through it; the fetched code's page is
    EMODPEd to RWX by the enclave, but mprotect(R-X) and mmap(R-X) of it are refused (EACCES,
    door 2) and its fetch faults on the PTE (U|I|P = 0x15): nothing ran."""
    t = Loader(driver, DATA_LIMITS)
    heap = t.grow_and_add_tcs()
    assert t.enclave.pages[t.offset(heap)].max_prot == R | W  # door 1
    code = t.add_pages()
    t.fetch_code(code)
    epc = t.enclave.pages[t.offset(code)].epc
    assert epc is not None and driver.cpu.epcm(epc).permissions == R | W | X
    t.events()
    assert t.mprotect(code, 1, R | X) == errno.EACCES
    assert t.mmap(code, 1, R | X) == errno.EACCES
    assert t.mmap(code, 1, R | W | X) == errno.EACCES
    assert t.execute(code) == b""
    t.expect_exception(U | FETCH | P, code)
    events = t.events()
    assert [(e.action, e.outcome, e.errno, e.prot) for e in events] == [
        ("mprotect", REFUSED, errno.EACCES, R | X),
        ("mmap", REFUSED, errno.EACCES, R | X),
        ("mmap", REFUSED, errno.EACCES, R | W | X),
    ]
    assert {(e.start, e.end) for e in events} == {(t.offset(code), t.offset(code) + PAGE_SIZE)}


def test_data_holes_after_init_cannot_be_mapped_executable(driver: SgxDriver) -> None:
    """``data``, door 2: an executable mapping over holes after INIT is EACCES (mainline allows
    any protection there); R-X over the measured code page stays allowed (its SECINFO has X)."""
    t = Loader(driver, DATA_LIMITS)
    hole = t.hole(2)
    assert t.mmap(hole, 2, R | X) == errno.EACCES
    assert t.mmap(hole, 2, R | W) == 0
    assert t.mprotect(hole, 2, R | W | X) == errno.EACCES
    assert t.mprotect(t.encl_base + CODE_OFFSET, 1, R | X) == 0
    assert [e.outcome for e in t.events()] == [REFUSED, REFUSED]


def test_data_eaug_into_executable_vma_gets_nx_pte(driver: SgxDriver) -> None:
    """``data``, door 3: ELRANGE mapped RWX before ECREATE (Gramine) — the heap page EAUGed in
    that VMA gets a PTE without X (recorded ``no-exec``), takes writes, and after the enclave
    EMODPEs it to RWX and writes code, the fetch faults (0x15) instead of running; the refused
    fetch is recorded (SIGSEGV). The enclave can do nothing about its PTE."""
    t = Loader(driver, DATA_LIMITS, premap=R | W | X)
    code = t.add_pages(mapped=True)
    page = code & ~(PAGE_SIZE - 1)
    assert t.process.ptes[page] == R | W
    t.fetch_code(code)
    assert t.execute(code) == b""
    t.expect_exception(U | FETCH | P, code)
    assert t.process.ptes[page] == R | W
    events = t.events()
    assert [(e.action, e.outcome, e.signal) for e in events] == [
        ("fault", NO_EXEC, ""),
        ("fault", REFUSED, "SIGSEGV"),
    ]
    assert events[0].prot == R | W | X and events[1].prot == X


def test_data_evicted_dynamic_page_reloads_in_executable_vma(driver: SgxDriver) -> None:
    """``data``: a dynamic page in an RWX VMA (door 1 made its max protection RW) is evicted
    and faulted back — reloaded with a non-executable PTE, not SIGBUS (sgx_encl_load_page_in_vma
    would refuse RWX over RW; the X bit is the PTE's to withhold)."""
    t = Loader(driver, DATA_LIMITS, premap=R | W | X)
    heap = t.add_pages(mapped=True)
    assert put_get(t, heap) == MAGIC
    page = t.enclave.pages[t.offset(heap)]
    driver.epc.reclaim(len(driver.epc.lru))  # everything written back, PTEs zapped
    assert page.epc is None and heap not in t.process.ptes
    assert t.value(t.call(ENCL_OP_GET_FROM_ADDRESS, heap)) == MAGIC
    t.expect_eexit()
    assert page.epc is not None
    assert t.process.ptes[heap] == R | W


# -- attested-code ----------------------------------------------------------------------------


def grant(t: Loader, address: int, pages: int = 1) -> ExecGrant:
    """An ExecGrant as the GRANT_EXEC ioctl records it on the launch enclave's verdict (that
    path is ``driver/grants.py``'s; here only the mapping rule that reads it is tested)."""
    start = t.offset(address)
    g = ExecGrant(start, start + pages * PAGE_SIZE, b"\x11" * 32, b"\x22" * 32)
    for k in range(pages):
        t.enclave.exec_grants[start + k * PAGE_SIZE] = g
    return g


def test_attested_code_without_grant_is_data(driver: SgxDriver) -> None:
    """``attested-code`` without a grant: as ``data`` — heap and TCS grow, the fetched code is
    refused (EACCES) and its fetch faults (0x15)."""
    t = Loader(driver, ATTESTED)
    heap = t.grow_and_add_tcs()
    assert t.enclave.pages[t.offset(heap)].max_prot == R | W  # door 1
    code = t.add_pages()
    t.fetch_code(code)
    t.events()
    assert t.mprotect(code, 1, R | X) == errno.EACCES
    assert t.execute(code) == b""
    t.expect_exception(U | FETCH | P, code)
    assert [(e.action, e.outcome) for e in t.events()] == [("mprotect", REFUSED)]


def test_attested_code_granted_page_maps_rx_not_rwx(driver: SgxDriver) -> None:
    """``attested-code`` with a grant for the page: mprotect(R-X) is allowed and recorded with
    the grant's code hash, the fetched code runs; R-W-X over it stays refused (no W and X at
    once); a neighbouring page without a grant is still refused."""
    t = Loader(driver, ATTESTED)
    code = t.add_pages(2)
    t.fetch_code(code)
    g = grant(t, code)
    assert exec_allowed(t.enclave, t.offset(code), R | X)
    assert not exec_allowed(t.enclave, t.offset(code), R | W | X)
    assert not exec_allowed(t.enclave, t.offset(code) + PAGE_SIZE, R | X)
    t.events()
    assert t.mprotect(code, 1, R | W | X) == errno.EACCES
    assert t.mprotect(code, 2, R | X) == errno.EACCES
    assert t.mprotect(code, 1, R | X) == 0
    assert t.execute(code) == FETCHED_OUTPUT
    t.expect_eexit()
    events = t.events()
    assert [(e.action, e.outcome, e.prot) for e in events] == [
        ("mprotect", REFUSED, R | W | X),
        ("mprotect", REFUSED, R | X),
        ("mprotect", ALLOWED, R | X),
    ]
    assert events[2].code_hash == g.code_hash
    assert (events[2].start, events[2].end) == (t.offset(code), t.offset(code) + PAGE_SIZE)


def test_attested_code_granted_page_in_writable_vma_gets_nx_pte(driver: SgxDriver) -> None:
    """``attested-code``, door 3 with a grant: in an RWX VMA (mapped before ECREATE) a granted
    page still gets no executable PTE — the mapping is writable — so the fetch faults."""
    t = Loader(driver, ATTESTED, premap=R | W | X)
    code = t.add_pages(mapped=True)
    t.fetch_code(code)
    grant(t, code)
    t.process.zap(code, code + PAGE_SIZE)  # as the grant ioctl zaps the range's PTEs
    assert t.execute(code) == b""
    t.expect_exception(U | FETCH | P, code)


# -- code -------------------------------------------------------------------------------------


def test_code_is_mainline_and_recorded(driver: SgxDriver) -> None:
    """``code``: mainline — heap, TCS, and the fetched code mapped R-X (allowed, recorded with
    the range and prot) and run; an RWX mapping of holes after INIT is allowed and recorded."""
    t = Loader(driver, CODE)
    heap = t.grow_and_add_tcs()
    assert t.enclave.pages[t.offset(heap)].max_prot == R | W | X  # mainline since SGX2 v3
    code = t.add_pages()
    t.fetch_code(code)
    t.events()
    assert t.mprotect(code, 1, R | X) == 0
    assert t.execute(code) == FETCHED_OUTPUT
    t.expect_eexit()
    holes = t.hole(4)
    assert t.mmap(holes, 4, R | W | X) == 0
    events = t.events()
    assert [(e.action, e.outcome, e.prot, e.start, e.end) for e in events] == [
        ("mprotect", ALLOWED, R | X, t.offset(code), t.offset(code) + PAGE_SIZE),
        ("mmap", ALLOWED, R | W | X, t.offset(holes), t.offset(holes) + 4 * PAGE_SIZE),
    ]
    assert all(e.level == DynamicMemory.CODE and e.code_hash is None for e in events)


def test_code_eaug_into_executable_vma_is_recorded(driver: SgxDriver) -> None:
    """``code`` with ELRANGE mapped RWX before ECREATE: each page EAUGed there gets an RWX PTE
    (mainline) and is recorded; adjacent pages coalesce into one event."""
    t = Loader(driver, CODE, premap=R | W | X)
    code = t.add_pages(2, mapped=True)
    assert t.process.ptes[code] == R | W | X
    t.fetch_code(code)
    assert t.execute(code) == FETCHED_OUTPUT
    events = t.events()
    assert [(e.action, e.outcome, e.start, e.end) for e in events] == [
        ("fault", ALLOWED, t.offset(code), t.offset(code) + 2 * PAGE_SIZE)
    ]


def test_mainline_limits_record_nothing_before_init_and_permissive(driver: SgxDriver) -> None:
    """Permissive mode (MAINLINE_LIMITS = ``code``) records dynamic executable mappings too —
    the limits are the same object the driver gives every enclave until owner-mode INIT."""
    t = Loader(driver, MAINLINE_LIMITS)
    holes = t.hole()
    assert t.mmap(holes, 1, R | W | X) == 0
    assert [e.outcome for e in t.events()] == [ALLOWED]


# -- the queue --------------------------------------------------------------------------------


def test_event_queue_is_bounded_and_counts_drops(driver: SgxDriver) -> None:
    """A full queue drops new events and says how many; draining empties it."""
    t = Loader(driver, DATA_LIMITS)
    driver.events.capacity = 2
    hole = t.hole(3)
    for k in (0, 2, 0, 2):  # not adjacent: no coalescing
        assert t.mmap(hole + k * PAGE_SIZE, 1, R | X) == errno.EACCES
    events, dropped = driver.events.drain()
    assert (len(events), dropped) == (2, 2)
    assert driver.events.drain() == ([], 0)
    assert not driver.events.pending()


def test_event_queue_clock() -> None:
    """Events carry the driver clock's time."""
    queue = DriverEvents(clock=lambda: 1234.5)
    driver = sgx2_platform()
    driver.events = queue
    t = Loader(driver, DATA_LIMITS)
    t.enclave.events = queue
    assert t.mmap(t.hole(), 1, R | X) == errno.EACCES
    events, _ = queue.drain()
    assert [e.time for e in events] == [1234.5]


def test_heap_growth_is_not_recorded(driver: SgxDriver) -> None:
    """The success path records nothing: a heap page EAUGed into an RW mapping (any level but
    ``none``) is no dynamic-code event."""
    for limits in (DATA_LIMITS, ATTESTED, CODE):
        t = Loader(driver, limits)
        heap = t.add_pages()
        assert t.enclave.pages[t.offset(heap)].dynamic
        assert t.events() == []
        t.close()
