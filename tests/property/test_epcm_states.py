"""The SGX2 EPCM state machine (spec §2) against the processor.

A model of the spec's table predicts, for every SGX2 operation on a dynamic page (EAUG,
EMODPR, EMODT, EACCEPT, EACCEPTCOPY, EMODPE, EREMOVE from outside and from inside, ETRACK,
EWB+ELDU, enclave reads and writes), the outcome — the new state, a status, or the fault — and
the Hypothesis state machine checks the processor agrees after every step and that every page
is in one of the table's states (nothing else is reachable). ``test_every_cell_of_the_table``
walks each cell of the spec's transition table once, with the expected outcome written out
literally from the table."""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from sgxlaunch.arch import SgxStatus
from sgxlaunch.arch.constants import PageType
from sgxlaunch.cpu import EnclaveContext, GeneralProtection, PageFault
from tests.support.sgx2 import (
    DATA,
    DYNAMIC,
    MODIFIED,
    PAGE,
    PENDING,
    PR,
    PT_REG,
    PT_TCS,
    PT_TRIM,
    R,
    Sgx2Enclave,
    W,
    X,
    secinfo,
    sgx2_enclave,
)

SLOTS = 3
SOURCE = DATA + PAGE  # a static RW page: EACCEPTCOPY's source
STATUS = {
    SgxStatus.PAGE_NOT_MODIFIABLE: "NM",
    SgxStatus.PAGE_ATTRIBUTES_MISMATCH: "AM",
    SgxStatus.NOT_TRACKED: "NT",
    SgxStatus.ENCLAVE_ACT: "ACT",
}


def tcs_page() -> bytes:
    """A TCS EACCEPT step 10 accepts (what the selftest enclave writes before EMODT)."""
    head = struct.pack("<QQQIIQQ", 0, 0, DATA, 0, 1, 0x1000, 0) + bytes(16)
    return (head + struct.pack("<II", 0xFFFFFFFF, 0xFFFFFFFF)).ljust(PAGE, b"\0")


@dataclass(frozen=True)
class Page:
    """The model of one linear page: its table state and what the table's rules need."""

    state: str = "FREE"  # FREE AUG-PENDING REG REG-PR TCS TCS-MOD TRIM-MOD TRIM-ACC
    rwx: int = 0
    untracked: bool = False  # modified by EMODPR/EMODT, no ETRACK since
    tcs_ok: bool = False  # contents pass EACCEPT's TCS checks


def classify(e: Sgx2Enclave, offset: int) -> tuple[str, int]:
    """The table state of the EPC page at ``offset`` (FREE when none), read from the EPCM.
    Any combination outside the table is reported as UNREACHABLE."""
    linaddr = e.base + offset
    state = e.proc.state
    found = [
        i
        for i in range(e.proc.epc_pages)
        if state.valid[i] and state.linaddr[i] == linaddr and state.owner[i] is not None
    ]
    if not found:
        return "FREE", 0
    assert len(found) == 1, "two EPC pages claim one linear page"
    entry = e.proc.epcm(e.proc.epc_address(found[0]))
    key = (entry.page_type, entry.pending, entry.modified, entry.pr)
    rwx = entry.permissions
    table = {
        (PageType.REG, True, False, False): "AUG-PENDING" if rwx == R | W else "UNREACHABLE",
        (PageType.REG, False, False, False): "REG",
        (PageType.REG, False, False, True): "REG-PR",
        (PageType.TCS, False, False, False): "TCS" if rwx == 0 else "UNREACHABLE",
        (PageType.TCS, False, True, False): "TCS-MOD" if rwx == 0 else "UNREACHABLE",
        (PageType.TRIM, False, True, False): "TRIM-MOD" if rwx == 0 else "UNREACHABLE",
        (PageType.TRIM, False, False, False): "TRIM-ACC" if rwx == 0 else "UNREACHABLE",
    }
    return table.get(key, "UNREACHABLE"), rwx


def outcome(action: object) -> str:
    """Run ``action()``: "OK", a status name, "#GP" or "#PF"."""
    try:
        status = action()  # type: ignore[operator]
    except GeneralProtection:
        return "#GP"
    except PageFault:
        return "#PF"
    if not isinstance(status, SgxStatus) or status == SgxStatus.SUCCESS:
        return "OK"  # a leaf without a return code, or data read
    return STATUS[status]


# -- the model: spec §2's table --------------------------------------------------------------


def model_emodpr(p: Page, perms: int) -> tuple[str, Page]:
    if perms & W and not perms & R:
        return "#GP", p
    if p.state in ("AUG-PENDING", "TCS-MOD", "TRIM-MOD"):
        return "NM", p
    if p.state in ("TCS", "TRIM-ACC"):
        return "#PF", p
    return "OK", replace(p, state="REG-PR", rwx=p.rwx & perms, untracked=True)


def model_emodt(p: Page, page_type: int) -> tuple[str, Page]:
    if page_type not in (PT_TCS, PT_TRIM):
        return "#GP", p
    new = "TCS-MOD" if page_type == PT_TCS else "TRIM-MOD"
    if p.state in ("REG", "REG-PR"):
        return "OK", replace(p, state=new, rwx=0, untracked=True)
    if p.state == "AUG-PENDING":
        return "NM", p
    if p.state == "TCS" and page_type == PT_TRIM:
        return "OK", replace(p, state=new, rwx=0, untracked=True)
    if p.state == "TCS-MOD" and page_type == PT_TRIM:
        return "NM", p
    return "#PF", p


def model_eaccept(p: Page, flags: int, page_type: int) -> tuple[str, Page]:
    if p.state == "FREE":
        return "#PF", p
    state_bits = flags & (PENDING | MODIFIED | PR)
    legal = (page_type == PT_REG and state_bits & (PR | PENDING) and not state_bits & MODIFIED) or (
        page_type in (PT_TCS, PT_TRIM) and state_bits == MODIFIED
    )
    if not legal:
        return "#GP", p
    ptype, pending, modified = {
        "AUG-PENDING": (PT_REG, PENDING, 0),
        "REG": (PT_REG, 0, 0),
        "REG-PR": (PT_REG, 0, 0),
        "TCS": (PT_TCS, 0, 0),
        "TCS-MOD": (PT_TCS, 0, MODIFIED),
        "TRIM-MOD": (PT_TRIM, 0, MODIFIED),
        "TRIM-ACC": (PT_TRIM, 0, 0),
    }[p.state]
    if (
        ptype != page_type
        or pending != flags & PENDING
        or modified != flags & MODIFIED
        or p.rwx != flags & 7
    ):
        return "AM", p
    if p.untracked:
        return "NT", p
    if page_type == PT_TCS and not p.tcs_ok:
        return "#GP", p
    after = {"AUG-PENDING": "REG", "REG": "REG", "REG-PR": "REG", "TCS-MOD": "TCS"}
    after |= {"TRIM-MOD": "TRIM-ACC"}
    return "OK", replace(p, state=after[p.state])


def model_eacceptcopy(p: Page, perms: int) -> tuple[str, Page]:
    if p.state == "FREE":
        return "#PF", p
    if perms & W and not perms & R:
        return "#GP", p
    if p.state != "AUG-PENDING":
        return "AM", p
    return "OK", replace(p, state="REG", rwx=perms, tcs_ok=False)


def model_emodpe(p: Page, perms: int) -> tuple[str, Page]:
    if p.state not in ("REG", "REG-PR"):
        return "#PF", p
    if not p.rwx & R and not perms & R and perms & W:
        return "#GP", p
    return "OK", replace(p, rwx=p.rwx | perms)


def model_eremove(p: Page, inside: bool) -> tuple[str, Page]:
    if inside and p.state != "TRIM-ACC":
        return "ACT", p
    return "OK", Page()


def model_access(p: Page, write: bool) -> str:
    need = W if write else R
    return "OK" if p.state in ("REG", "REG-PR") and p.rwx & need else "#PF"


# -- the machine ------------------------------------------------------------------------------

PERMS = st.sampled_from([0, R, R | W, R | X, R | W | X, W, X])
REQUESTS = st.sampled_from(
    [
        (R | W | PENDING, PT_REG),
        (R | X | PENDING, PT_REG),
        (R | PR, PT_REG),
        (R | W | PR, PT_REG),
        (PR, PT_REG),
        (R | W | X | PR, PT_REG),
        (MODIFIED, PT_TCS),
        (MODIFIED, PT_TRIM),
        (R | W, PT_REG),  # illegal
        (0, PT_TRIM),  # illegal
    ]
)


class EpcmMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.e = sgx2_enclave()
        self.pages = [Page() for _ in range(SLOTS)]
        self.va = self.e.proc.free_epc_pages(1)[0]
        assert self.e.proc.epa(self.va) == SgxStatus.SUCCESS
        self.swap = self.e.proc.allocate(2 * PAGE)

    def off(self, k: int) -> int:
        return DYNAMIC + k * PAGE

    def epc(self, k: int) -> int:
        return self.e.epc_of(self.off(k))

    def check(self, k: int, got: str, expected: tuple[str, Page]) -> None:
        want, page = expected
        assert got == want, f"slot {k} in {self.pages[k]}: got {got}, the table says {want}"
        self.pages[k] = page

    def enclu(self, action: object) -> str:
        return outcome(lambda: self.e.inside(action))  # type: ignore[arg-type]

    @rule(k=st.integers(0, SLOTS - 1))
    def eaug(self, k: int) -> None:
        if self.pages[k].state != "FREE":
            return  # the OS only EAUGs holes; an occupied EPC page is EAUG step 7's #PF
        free = self.e.proc.free_epc_pages(1)[0]
        got = outcome(lambda: self.e.proc.eaug(self.e.pageinfo(self.e.base + self.off(k)), free))
        self.check(k, got, ("OK", Page("AUG-PENDING", R | W)))

    @rule(k=st.integers(0, SLOTS - 1), perms=PERMS)
    def emodpr(self, k: int, perms: int) -> None:
        if self.pages[k].state == "FREE":
            return
        got = outcome(lambda: self.e.emodpr(self.off(k), perms))
        self.check(k, got, model_emodpr(self.pages[k], perms))

    @rule(k=st.integers(0, SLOTS - 1), page_type=st.sampled_from([PT_TCS, PT_TRIM, PT_REG]))
    def emodt(self, k: int, page_type: int) -> None:
        if self.pages[k].state == "FREE":
            return
        got = outcome(lambda: self.e.emodt(self.off(k), page_type))
        self.check(k, got, model_emodt(self.pages[k], page_type))

    @rule(k=st.integers(0, SLOTS - 1), request=REQUESTS)
    def eaccept(self, k: int, request: tuple[int, int]) -> None:
        flags, page_type = request
        got = outcome(lambda: self.e.accept(self.off(k), flags, page_type))
        self.check(k, got, model_eaccept(self.pages[k], flags, page_type))

    @rule(k=st.integers(0, SLOTS - 1), perms=PERMS)
    def eacceptcopy(self, k: int, perms: int) -> None:
        base, sec = self.e.base, self.e.base + DATA

        def go(ctx: EnclaveContext) -> SgxStatus:
            ctx.write(sec, secinfo(perms))
            return ctx.eacceptcopy(sec, base + self.off(k), base + SOURCE)

        self.check(k, self.enclu(go), model_eacceptcopy(self.pages[k], perms))

    @rule(k=st.integers(0, SLOTS - 1), perms=PERMS)
    def emodpe(self, k: int, perms: int) -> None:
        got = outcome(lambda: self.e.emodpe(self.off(k), perms))
        self.check(k, got, model_emodpe(self.pages[k], perms))

    @rule(k=st.integers(0, SLOTS - 1), inside=st.booleans())
    def eremove(self, k: int, inside: bool) -> None:
        if self.pages[k].state == "FREE":
            return
        epc = self.epc(k)
        if inside:
            got = self.enclu(lambda ctx: self.e.proc.eremove(epc))
        else:
            got = outcome(lambda: self.e.proc.eremove(epc))
        self.check(k, got, model_eremove(self.pages[k], inside))

    @rule()
    def etrack(self) -> None:
        self.e.etrack()
        self.pages = [replace(p, untracked=False) for p in self.pages]

    @rule(k=st.integers(0, SLOTS - 1))
    def swap_out_and_in(self, k: int) -> None:
        """EBLOCK, ETRACK, EWB, ELDU: the page comes back in the same state (spec §1.3)."""
        if self.pages[k].state == "FREE":
            return
        proc, epc = self.e.proc, self.epc(k)
        assert proc.eblock(epc) == SgxStatus.SUCCESS
        self.etrack()
        pi = self.e.scratch + 128
        proc.write(pi, struct.pack("<QQQQ", 0, self.swap, self.swap + PAGE, 0))
        assert proc.ewb(pi, epc, self.va) == SgxStatus.SUCCESS
        proc.write(
            pi,
            struct.pack(
                "<QQQQ", self.e.base + self.off(k), self.swap, self.swap + PAGE, self.e.secs
            ),
        )
        assert proc.eldu(pi, epc, self.va) == SgxStatus.SUCCESS

    @rule(k=st.integers(0, SLOTS - 1), write=st.booleans())
    def access(self, k: int, write: bool) -> None:
        """Spec §3.8: data access only to accepted REG pages the EPCM permits."""
        a = self.e.base + self.off(k)
        if write:
            got = self.enclu(lambda ctx: ctx.write(a, tcs_page()))
        else:
            got = self.enclu(lambda ctx: ctx.read(a, 8))
        assert got == model_access(self.pages[k], write), (self.pages[k], write, got)
        if write and got == "OK":
            self.pages[k] = replace(self.pages[k], tcs_ok=True)

    @invariant()
    def epcm_matches_the_model(self) -> None:
        if not hasattr(self, "e"):
            return
        for k, page in enumerate(self.pages):
            state, rwx = classify(self.e, self.off(k))
            assert state == page.state, f"slot {k}: EPCM says {state}, model {page.state}"
            assert rwx == page.rwx or state == "FREE"


TestEpcmStateMachine = EpcmMachine.TestCase
TestEpcmStateMachine.settings = settings(
    max_examples=60,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- every cell of the table, literally -------------------------------------------------------

# How to reach each row's state on slot 0 (rules of the machine, in order).
RECIPES: dict[str, list[tuple[str, tuple[object, ...]]]] = {
    "AUG-PENDING": [("eaug", (0,))],
    "REG": [("eaug", (0,)), ("eaccept", (0, (R | W | PENDING, PT_REG)))],
    "REG-PR": [
        ("eaug", (0,)),
        ("eaccept", (0, (R | W | PENDING, PT_REG))),
        ("emodpr", (0, R)),
        ("etrack", ()),
    ],
    "TCS-MOD": [
        ("eaug", (0,)),
        ("eaccept", (0, (R | W | PENDING, PT_REG))),
        ("access", (0, True)),
        ("emodt", (0, PT_TCS)),
        ("etrack", ()),
    ],
    "TRIM-MOD": [
        ("eaug", (0,)),
        ("eaccept", (0, (R | W | PENDING, PT_REG))),
        ("emodt", (0, PT_TRIM)),
        ("etrack", ()),
    ],
}
RECIPES["TCS"] = [*RECIPES["TCS-MOD"], ("eaccept", (0, (MODIFIED, PT_TCS)))]
RECIPES["TRIM-ACC"] = [*RECIPES["TRIM-MOD"], ("eaccept", (0, (MODIFIED, PT_TRIM)))]

# (state, operation) → outcome, from spec §2's transition table: a state name is the new
# state after SUCCESS; NM = SGX_PAGE_NOT_MODIFIABLE, AM = SGX_PAGE_ATTRIBUTES_MISMATCH,
# ACT = SGX_ENCLAVE_ACT. EACCEPT uses the request each row's transition names (REG|PR|RWX for
# REG-PR and REG, REG|PENDING|RW, TCS|MODIFIED, TRIM|MODIFIED).
OPS = ["emodpr", "emodt-tcs", "emodt-trim", "eaccept", "eacceptcopy", "emodpe", "eremove",
       "eremove-inside"]  # fmt: skip
TABLE = {
    "REG": ["REG-PR", "TCS-MOD", "TRIM-MOD", "REG", "AM", "REG", "FREE", "ACT"],
    "REG-PR": ["REG-PR", "TCS-MOD", "TRIM-MOD", "REG", "AM", "REG-PR", "FREE", "ACT"],
    "AUG-PENDING": ["NM", "NM", "NM", "REG", "REG", "#PF", "FREE", "ACT"],
    "TCS": ["#PF", "#PF", "TRIM-MOD", "AM", "AM", "#PF", "FREE", "ACT"],
    "TCS-MOD": ["NM", "#PF", "NM", "TCS", "AM", "#PF", "FREE", "ACT"],
    "TRIM-MOD": ["NM", "#PF", "#PF", "TRIM-ACC", "AM", "#PF", "FREE", "ACT"],
    "TRIM-ACC": ["#PF", "#PF", "#PF", "AM", "AM", "#PF", "FREE", "FREE"],
}
ACCEPT_FOR = {
    "REG": (R | W | PR, PT_REG),
    "REG-PR": (R | PR, PT_REG),
    "AUG-PENDING": (R | W | PENDING, PT_REG),
    "TCS": (MODIFIED, PT_TCS),
    "TCS-MOD": (MODIFIED, PT_TCS),
    "TRIM-MOD": (MODIFIED, PT_TRIM),
    "TRIM-ACC": (MODIFIED, PT_TRIM),
}
CALLS: dict[str, tuple[str, object]] = {
    "emodpr": ("emodpr", R),
    "emodt-tcs": ("emodt", PT_TCS),
    "emodt-trim": ("emodt", PT_TRIM),
    "eacceptcopy": ("eacceptcopy", R | X),
    "emodpe": ("emodpe", X),
    "eremove": ("eremove", False),
    "eremove-inside": ("eremove", True),
}


@pytest.mark.parametrize(("state", "op"), [(s, op) for s in TABLE for op in OPS])
def test_every_cell_of_the_table(state: str, op: str) -> None:
    """Spec §2: each (state, operation) cell gives the table's outcome — on the processor and
    in the model the state machine uses."""
    m = EpcmMachine()
    m.setup()
    for name, args in RECIPES[state]:
        getattr(m, name)(*args)
    assert classify(m.e, DYNAMIC)[0] == state
    before = m.pages[0]
    cell = TABLE[state][OPS.index(op)]
    if op == "eaccept":
        m.eaccept(0, ACCEPT_FOR[state])
    else:
        name, arg = CALLS[op]
        getattr(m, name)(0, arg)
    after = m.pages[0].state
    if cell in ("NM", "AM", "#PF", "#GP", "ACT", "NT"):
        assert after == before.state  # a refusal changes nothing...
        expected = {
            "emodpr": model_emodpr(before, R),
            "emodt-tcs": model_emodt(before, PT_TCS),
            "emodt-trim": model_emodt(before, PT_TRIM),
            "eaccept": model_eaccept(before, *ACCEPT_FOR[state]),
            "eacceptcopy": model_eacceptcopy(before, R | X),
            "emodpe": model_emodpe(before, X),
            "eremove": model_eremove(before, False),
            "eremove-inside": model_eremove(before, True),
        }[op][0]
        assert expected == cell  # ...and the refusal is the table's
    else:
        assert after == cell
    m.epcm_matches_the_model()
    m.teardown()
