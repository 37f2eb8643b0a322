"""The ENCLU side: how code runs inside an emulated enclave (DESIGN "How enclave code runs").

Enclave code is an :class:`EnclaveProgram` (a Python class); the image built for a program
(:func:`sgxlaunch.cpu.image.program_image`) holds a measured page with SHA-256 of the program's
source, so MRENCLAVE binds the code. :class:`Enclu` keeps the programs by MRENCLAVE and runs
EENTER: on a TCS of an initialized enclave it runs that program's :meth:`EnclaveProgram.ecall`
with an :class:`EnclaveContext`, the only door to EREPORT, EGETKEY, EEXIT and the enclave's
memory. Callers outside pass and receive byte buffers, as an ECALL does.

The context reaches the processor only through :class:`Enclu`'s public methods; the services
an enclave may call are methods of :class:`Enclu` taking the running enclave's
:class:`~sgxlaunch.cpu.state.SecsState`, so adding one (a monotonic counter, say) is one
method there and one on :class:`EnclaveContext`.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import operator
import struct
from collections.abc import Callable
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

from sgxlaunch.arch.constants import (
    HARDCODED_PKCS1_5_PADDING,
    KEYPOLICY_KSS_MASK,
    KEYPOLICY_RESERVED_MASK,
    AttributeFlag,
    KeyName,
    KeyPolicy,
    PageType,
    SecinfoFlag,
    SgxStatus,
)
from sgxlaunch.arch.structs import Attributes, KeyRequest, Report, TargetInfo
from sgxlaunch.cpu.config import CpuConfig
from sgxlaunch.cpu.edmm import (
    ACCESS_FETCH,
    ACCESS_READ,
    ACCESS_WRITE,
    PF_P,
    PF_SGX,
    PF_U,
    EdmmEnclu,
)
from sgxlaunch.cpu.faults import EnclaveLeafFailed, GeneralProtection, InvalidOpcode, PageFault
from sgxlaunch.cpu.keys import (
    EINITTOKEN_DEPENDENCIES,
    NATIVE_EINITTOKEN_KEY,
    FusedSecrets,
    KeyDependencies,
    cmac128,
)
from sgxlaunch.cpu.machine import (
    CounterAccessDenied,
    CounterSlot,
    Machine,
    counter_compare_and_set,
    counter_read,
)
from sgxlaunch.cpu.msr import cpusvn_beyond
from sgxlaunch.cpu.state import EPCM_MODIFIED, EPCM_PENDING, EpcState, SecsState, StateView
from sgxlaunch.errors import UsageError

PAGE = 4096
_U64 = (1 << 64) - 1
_REQUIRED_SEALING_MASK = 0x3
_STATE = struct.Struct("<Q")
_TCS_HEAD = struct.Struct("<Q8xQII")
"""The TCS fields EENTER reads, in one unpack: STATE, (FLAGS skipped), OSSA, CSSA, NSSA."""
# SECS.ATTRIBUTES bits EGETKEY tests, as plain ints (an IntFlag operation costs a microsecond).
_KSS = int(AttributeFlag.KSS)
_EINITTOKEN_KEY = int(AttributeFlag.EINITTOKEN_KEY)
_PROVISIONKEY = int(AttributeFlag.PROVISIONKEY)
_PT_REG = int(PageType.REG)
_PT_TCS = int(PageType.TCS)
_UNACCEPTED = EPCM_PENDING | EPCM_MODIFIED
_KEYREQUEST = struct.Struct("<HHH2x16sQQ32sIH434x")
"""KEYREQUEST flat (spec §1.9): KEYNAME, KEYPOLICY, ISVSVN, (reserved), CPUSVN, ATTRIBUTEMASK
(FLAGS, XFRM), KEYID, MISCMASK, CONFIGSVN, (reserved); the reserved ranges are compared with
zeros in place (:data:`_RESERVED1_AT`, the last 434 bytes)."""
_RESERVED1_AT = 6
assert _KEYREQUEST.size == KeyRequest.SIZE
_ZERO2 = bytes(2)
_ZERO434 = bytes(434)
_DERIVED_KEYNAMES = frozenset((KeyName.SEAL, KeyName.PROVISION, KeyName.PROVISION_SEAL))
"""The other names EGETKEY derives (REPORT_KEY and EINITTOKEN_KEY have their own branches)."""
_PROVISIONING_KEYNAMES = frozenset((KeyName.PROVISION, KeyName.PROVISION_SEAL))
_REPORT_KEY = int(KeyName.REPORT)
_SEAL_KEY = int(KeyName.SEAL)
_EINITTOKEN_KEYNAME = int(KeyName.EINITTOKEN)
_NEED = {ACCESS_READ: int(SecinfoFlag.R), ACCESS_WRITE: int(SecinfoFlag.W), ACCESS_FETCH: 4}
_MAX_DELIVERIES = 8
"""How often one access (or one ENCLU leaf) may fault to the OS and be retried before the
fault ends the ECALL (an OS that answers "resolved" without resolving would loop forever)."""

PROGRAM_PAGE_MAGIC = b"sgxlaunch enclave program v1\x00\x00\x00\x00"
"""First 32 bytes of a program code page (:func:`sgxlaunch.cpu.image.program_code_page`):
magic ‖ SHA-256(source) ‖ name length (u16) ‖ name."""
assert len(PROGRAM_PAGE_MAGIC) == 32

PageFaultHandler = Callable[[int, int], bool]

T = TypeVar("T")


class Mmu(Protocol):
    """The page tables and the OS's #PF handler, as an enclave-mode access meets them.

    Set as ``proc.mmu`` by the driver. The processor calls :meth:`walk` on every enclave-mode
    access to ELRANGE (reads, writes, fetches, and the linear operands of EACCEPT,
    EACCEPTCOPY and EMODPE) before its EPCM checks, and :meth:`fault` for every #PF such an
    access raises (spec §3.8: paging first, then the EPCM).
    """

    def walk(self, secs: int, linaddr: int, access: int) -> int:
        """The page-table walk for ``access`` (``ACCESS_READ`` 1, ``ACCESS_WRITE`` 2,
        ``ACCESS_FETCH`` 0x10) of the page at ``linaddr`` in the enclave whose SECS is at
        ``secs``: 0 when the PTE allows it, else the #PF error code of the paging fault
        (P, W, U, I; no SGX bit)."""
        ...

    def fault(self, secs: int, linaddr: int, error_code: int) -> bool:
        """Deliver a #PF to the OS (an AEX: the thread is outside the enclave meanwhile).
        True: the access is retried (the OS made the page resident, EAUG'd it, or user space
        fixed the cause and resumed); False: the fault ends the ECALL."""
        ...


@runtime_checkable
class PteMmu(Mmu, Protocol):
    """An :class:`Mmu` whose page tables the processor may read directly (the driver's)."""

    def current_ptes(self) -> dict[int, int] | None:
        """The present PTEs of the running thread's address space: page address → PROT bits
        (R 1, W 2, X 4), or ``None`` (no address space: :meth:`walk` decides). A PTE holding
        the bit an access needs (R for a read, W for a write, X for a fetch) is one
        :meth:`walk` passes (answers 0) — the only use the processor makes of it; any other
        case goes to :meth:`walk`."""
        ...


class EnclaveProgram:
    """Code that runs inside an emulated enclave.

    Subclass and implement :meth:`ecall`. The program's identity is :meth:`source` (by default
    the class's Python source as the interpreter loaded it); :func:`program_image` puts its
    SHA-256 in a measured page.
    """

    @classmethod
    def source(cls) -> str:
        """The text whose SHA-256 the image measures.

        The default is the class's source as the interpreter loaded it (``inspect.getsource``,
        which reads it through ``linecache``); a program defined where no source exists (a
        REPL, generated code) overrides this and returns its source text itself.

        Raises:
            UsageError: no source is available for the class.
        """
        try:
            return inspect.getsource(cls)
        except (OSError, TypeError) as exc:
            raise UsageError(
                f"no source for enclave program {cls.__qualname__}; override source()"
            ) from exc

    @classmethod
    def source_hash(cls) -> bytes:
        """SHA-256 of :meth:`source`, UTF-8."""
        return hashlib.sha256(cls.source().encode()).digest()

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        """Handle one ECALL: ``function`` and the input buffer in, the output buffer out.

        Returning is EEXIT with the returned bytes; :meth:`EnclaveContext.eexit` does the same
        from deeper in the call stack.
        """
        raise NotImplementedError


class _EnclaveExit(Exception):
    def __init__(self, data: bytes) -> None:
        super().__init__("EEXIT")
        self.data = data


OWNER_VERDICTS_MAX = 256
"""How many posted, not yet taken owner verdicts the processor keeps (then the oldest go)."""


class EnclaveContext:
    """What a running program sees: its enclave's memory and the ENCLU leaves.

    Valid only while its EENTER runs; afterwards every method raises
    :class:`GeneralProtection` (ENCLU outside enclave mode is ``#UD`` on hardware).
    """

    __slots__ = ("_active", "_enclave", "_enclu")

    def __init__(self, enclu: Enclu, enclave: SecsState) -> None:
        self._enclu = enclu
        self._enclave = enclave
        self._active = True

    def _check(self) -> SecsState:
        if not self._active:
            raise GeneralProtection("ENCLU leaf called outside enclave mode")
        return self._enclave

    def _leave(self) -> None:
        self._active = False

    @property
    def base_address(self) -> int:
        """SECS.BASEADDR: the enclave's first linear address."""
        return self._check().baseaddr

    @property
    def size(self) -> int:
        """SECS.SIZE."""
        return self._check().size

    # -- memory -----------------------------------------------------------------------------

    def read(self, linaddr: int, length: int) -> bytes:
        """Read enclave memory at a linear address (``#PF`` if absent or not readable)."""
        return self._enclu.read(self._check(), linaddr, length)

    def write(self, linaddr: int, data: bytes | bytearray | memoryview) -> None:
        """Write enclave memory at a linear address (``#PF`` if absent or not writable)."""
        self._enclu.write(self._check(), linaddr, data)

    def rdrand(self, length: int) -> bytes:
        """RDRAND: ``length`` random bytes from the processor's injected source."""
        if not self._active:  # _check, inlined on this hot path
            raise GeneralProtection("ENCLU leaf called outside enclave mode")
        return self._enclu.random(length)

    # -- the monotonic counter (emulator extension; see sgxlaunch.cpu.machine) ----------------

    def counter_read(self) -> CounterSlot:
        """Read the machine's monotonic counter (**emulator extension**, like the retired SGX
        platform-services counters or a TPM NV counter under an authorised session).

        The caller is authenticated by the identity the processor recorded at EINIT:
        MRSIGNER and ISVPRODID. An unowned slot (value 0) reads for anyone.

        Raises:
            GeneralProtection: the processor has no counter (outside enclave mode too).
            CounterAccessDenied: another identity owns the counter.
        """
        return self._enclu.counter_read(self._check())

    def counter_compare_and_set(
        self,
        value: int,
        digest: bytes,
        new_digest: bytes,
        *,
        next_owner: tuple[bytes, int] | None = None,
        policy_digest: bytes | None = None,
    ) -> CounterSlot:
        """Advance the counter from ``(value, digest)`` to ``(value + 1, new_digest)``
        (**emulator extension**); ``next_owner`` (MRSIGNER, ISVPRODID) hands the counter to
        another enclave identity with the same step; ``policy_digest`` sets the slot's
        launch-policy digest with the same step (``None``: keep it).

        Raises:
            GeneralProtection: no counter on this processor.
            CounterAccessDenied: the caller does not own the counter.
            MachineConflict: the counter does not hold ``(value, digest)``.
        """
        return self._enclu.counter_compare_and_set(
            self._check(),
            value,
            digest,
            new_digest,
            next_owner=next_owner,
            policy_digest=policy_digest,
        )

    def platform_id(self) -> bytes:
        """The machine's platform id (**emulator extension**: what the machine's firmware
        reports; an enclave needs no host input to learn which platform it runs on).

        Raises:
            GeneralProtection: the processor has no machine.
        """
        return self._enclu.platform_id(self._check())

    def owner_verdict_post(self, digest: bytes) -> None:
        """Post a 32-byte verdict for the kernel (**emulator extension**, in the same class as
        the counter slot's policy digest): the owner's launch enclave tells the driver that it
        granted something (an attested-code grant, :mod:`sgxlaunch.driver.grants`).

        Only the enclave identity that owns the machine's monotonic counter (MRSIGNER and
        ISVPRODID recorded at EINIT; the owner's launch enclave) may post, and only once the
        counter is owned. The driver consumes a verdict with
        :meth:`sgxlaunch.cpu.Processor.owner_verdict_take`, a kernel-side (ENCLS-class) call;
        nothing user space reaches writes into this mailbox. The mailbox keeps the
        :data:`OWNER_VERDICTS_MAX` latest verdicts (volatile: gone at reset, like a register).

        Raises:
            GeneralProtection: the processor has no machine (no counter), or ``digest`` is not
                32 bytes.
            CounterAccessDenied: the caller does not own the counter (or nobody does).
        """
        self._enclu.owner_verdict_post(self._check(), digest)

    # -- ENCLU ------------------------------------------------------------------------------

    def eexit(self, data: bytes = b"") -> None:
        """ENCLU[EEXIT]: leave the enclave now; ``data`` becomes the ECALL's output."""
        self._check()
        raise _EnclaveExit(bytes(data))

    def ereport(self, targetinfo: TargetInfo | bytes, reportdata: bytes = bytes(64)) -> Report:
        """ENCLU[EREPORT]: a REPORT about this enclave, MACed for the target enclave.

        The MAC is AES-128-CMAC over the 384-byte body with the target's report key:
        ``derive_key`` over KEYNAME = REPORT_KEY, the target's MRENCLAVE, ATTRIBUTES,
        MISCSELECT, CONFIGID and CONFIGSVN, CR_SGXOWNEREPOCH, CR_SEAL_FUSES, CR_CPUSVN,
        KEYID = CR_REPORT_KEYID (per boot) and the hard-coded padding (SDM EREPORT).

        Raises:
            GeneralProtection: ``reportdata`` is not 64 bytes, or TARGETINFO's reserved bytes
                are not zero (SDM EREPORT: reserved TARGETINFO fields → #GP).
        """
        return self._enclu.ereport(self._check(), targetinfo, reportdata)

    def verify_report(self, report: Report | bytes) -> bool:
        """Verify a REPORT targeted at this enclave: EGETKEY(REPORT_KEY, report.KEYID), CMAC."""
        rep = report if isinstance(report, Report) else Report.from_bytes_raw(report)
        key = self.egetkey(KeyRequest(keyname=KeyName.REPORT, keyid=rep.keyid))
        return hmac.compare_digest(rep.mac, cmac128(key, rep.body_bytes()))

    def egetkey(self, keyrequest: KeyRequest | bytes) -> bytes:
        """ENCLU[EGETKEY]: derive a 128-bit key for this enclave.

        Checks, in the SDM's order:

        1. KEYREQUEST reserved fields non-zero, KEYPOLICY reserved bits, or — without
           SECS.ATTRIBUTES.KSS — a KSS policy bit (NOISVPRODID, CONFIGID, ISVFAMILYID,
           ISVEXTPRODID) or KEYREQUEST.CONFIGSVN > 0 → ``#GP``.
        2. Per KEYNAME:

           * EINITTOKEN_KEY: SECS.ATTRIBUTES.EINITTOKEN_KEY clear → SGX_INVALID_ATTRIBUTE;
           * PROVISION_KEY / PROVISION_SEAL_KEY: SECS.ATTRIBUTES.PROVISIONKEY clear →
             SGX_INVALID_ATTRIBUTE;
           * SEAL_KEY, the provisioning keys and EINITTOKEN_KEY then: KEYREQUEST.CPUSVN beyond
             CR_CPUSVN → SGX_INVALID_CPUSVN; KEYREQUEST.ISVSVN > SECS.ISVSVN (or, for
             SEAL_KEY, KEYREQUEST.CONFIGSVN > SECS.CONFIGSVN) → SGX_INVALID_ISVSVN;
           * REPORT_KEY: no checks;
           * any other KEYNAME → SGX_INVALID_KEYNAME.

        3. The key dependencies per KEYNAME as in the SDM (see :mod:`sgxlaunch.cpu.keys`):
           attributes are ``(ATTRIBUTEMASK | INIT | DEBUG) & SECS.ATTRIBUTES``; MISCSELECT is
           ``MISCMASK & SECS.MISCSELECT``; PROVISION_KEY uses neither the owner epoch nor the
           seal fuses (it is owner-independent); PROVISION_SEAL_KEY uses the seal fuses but not
           the owner epoch, applies KEYPOLICY's ISVFAMILYID / ISVEXTPRODID / NOISVPRODID /
           CONFIGID (CONFIGID and CONFIGSVN) bits as SEAL_KEY does and puts KEYPOLICY in the
           dependencies (SDM EGETKEY key-derivation table).

        Returns:
            The 16-byte key.

        Raises:
            GeneralProtection: step 1.
            EnclaveLeafFailed: a status from step 2 (``.status``).
        """
        if not self._active:  # _check, inlined on this hot path
            raise GeneralProtection("ENCLU leaf called outside enclave mode")
        return self._enclu.egetkey(self._enclave, keyrequest)

    # -- SGX2 -------------------------------------------------------------------------------

    def eaccept(self, secinfo: int, page: int) -> SgxStatus:
        """ENCLU[EACCEPT] (SGX2): accept a pending change to the page at linear ``page``.

        ``secinfo`` is the linear address of a 64-byte SECINFO in this enclave's memory (write
        it there first). Steps and results: :meth:`sgxlaunch.cpu.edmm.EdmmEnclu.eaccept`.

        Returns:
            SUCCESS, SGX_PAGE_ATTRIBUTES_MISMATCH or SGX_NOT_TRACKED (RAX).

        Raises:
            GeneralProtection: the SDM's #GP cases, and any use on a part without SGX2.
            PageFault: the SDM's #PF cases the OS did not resolve.
        """
        if not self._active:  # _check, inlined on this hot path
            raise GeneralProtection("ENCLU leaf called outside enclave mode")
        return self._enclu.eaccept(self._enclave, secinfo, page)

    def eacceptcopy(self, secinfo: int, dest: int, source: int) -> SgxStatus:
        """ENCLU[EACCEPTCOPY] (SGX2): copy the page at ``source`` into the PENDING page at
        ``dest`` and give it SECINFO's permissions (e.g. R-X) in the same step.

        Returns:
            SUCCESS or SGX_PAGE_ATTRIBUTES_MISMATCH.

        Raises:
            GeneralProtection, PageFault: as :meth:`eaccept`
            (:meth:`sgxlaunch.cpu.edmm.EdmmEnclu.eacceptcopy`).
        """
        enclave = self._check()
        enclu = self._enclu
        return enclu.run_leaf(enclave, enclu.edmm.eacceptcopy, enclave, secinfo, dest, source)

    def emodpe(self, secinfo: int, page: int) -> None:
        """ENCLU[EMODPE] (SGX2): add SECINFO's R/W/X to the accepted page at ``page``
        (:meth:`sgxlaunch.cpu.edmm.EdmmEnclu.emodpe`; no return code).

        Raises:
            GeneralProtection, PageFault: as :meth:`eaccept`.
        """
        enclave = self._check()
        enclu = self._enclu
        enclu.run_leaf(enclave, enclu.edmm.emodpe, enclave, secinfo, page)

    def execute(self, address: int, function: int = 0, data: bytes = b"") -> bytes:
        """Jump to code at linear ``address`` in this enclave and run it (a call, not EEXIT).

        The bytes there are fetched as instructions — the page tables must allow execution
        (``proc.mmu``), and the EPCM must hold a valid, accepted (not PENDING, not MODIFIED)
        PT_REG page of this enclave with X — and must be a program code page
        (:func:`sgxlaunch.cpu.image.program_code_page`: magic ‖ SHA-256(source) ‖ name). The
        program registered with ``proc.register_code`` whose source has that hash runs
        ``ecall(ctx, function, data)`` in this enclave, and its result is returned. This is
        the binding measured programs have, with the page's contents in place of MRENCLAVE:
        what runs is what the page holds, so code placed in a dynamic page runs without
        ``eval``.

        Raises:
            PageFault: a fetch the page tables or the EPCM refuse (error code with I = 0x10).
            InvalidOpcode: the bytes are not a program code page (#UD).
            UsageError: no program is registered for the hash the page holds (the emulator
                cannot run code it was not given).
        """
        enclave = self._check()
        return self._enclu.execute(self, enclave, address, function, data)


class Enclu(StateView):
    """The ENCLU side of one processor: programs by MRENCLAVE, EENTER, and the leaves and
    memory accesses a running enclave makes through its :class:`EnclaveContext`.

    Args:
        state: the processor's state.
        config: the part (CPUSVN, owner epoch).
        fuses: the fused secrets keys derive from.
        random: RDRAND's source.
        report_keyid: CR_REPORT_KEYID (per boot).
        machine: the machine's non-volatile store, for the monotonic counter (``None`` on a
            part without one).
    """

    def __init__(
        self,
        state: EpcState,
        config: CpuConfig,
        fuses: FusedSecrets,
        random: Callable[[int], bytes],
        report_keyid: bytes,
        machine: Machine | None = None,
    ) -> None:
        super().__init__(state)
        self.config = config
        self._fuses = fuses
        self.random = random
        self.report_keyid = report_keyid
        self.machine = machine
        self._programs: dict[bytes, Callable[[], EnclaveProgram]] = {}
        self._code: dict[bytes, Callable[[], EnclaveProgram]] = {}
        self.page_fault_handler: PageFaultHandler | None = None
        self._mmu: Mmu | None = None
        self.edmm = EdmmEnclu(state, config, self.operand)
        self.owner_verdicts: dict[bytes, None] = {}
        """The owner-verdict mailbox (emulator extension; oldest first)."""
        # numpy views of the EPCM arrays and the EPC by page, for multi-page accesses
        self._valid_np = np.frombuffer(state.valid, dtype=np.uint8)
        self._blocked_np = np.frombuffer(state.blocked, dtype=np.uint8)
        self._ptype_np = np.frombuffer(state.ptype, dtype=np.uint8)
        self._perm_np = np.frombuffer(state.perm, dtype=np.uint8)
        self._epc_pages_np = state.epc_np.reshape(-1, PAGE)

    @property
    def mmu(self) -> Mmu | None:
        """The page tables and #PF handler (:class:`Mmu`); ``None``: no paging checks."""
        return self._mmu

    @mmu.setter
    def mmu(self, mmu: Mmu | None) -> None:
        self._mmu = mmu
        if mmu is None:
            self.edmm.attach_mmu(None, None)
        else:
            self.edmm.attach_mmu(mmu.walk, mmu.current_ptes if isinstance(mmu, PteMmu) else None)

    def register_program(self, mrenclave: bytes, program: Callable[[], EnclaveProgram]) -> None:
        """Register the code of enclaves measuring ``mrenclave``.

        ``program`` is a factory (usually the :class:`EnclaveProgram` subclass itself); each
        enclave instance gets its own program object at its first EENTER.
        """
        if len(mrenclave) != 32:
            raise UsageError("an MRENCLAVE is 32 bytes")
        self._programs[bytes(mrenclave)] = program

    def register_code(self, program: type[EnclaveProgram]) -> None:
        """Register ``program`` as code :meth:`EnclaveContext.execute` may run: by the SHA-256
        of its source, the hash its code page holds."""
        self._code[program.source_hash()] = program

    # -- memory of the running enclave ------------------------------------------------------

    def operand(self, enclave: SecsState, linaddr: int, access: int) -> int:
        """Translate an enclave linear address for ``access``: the page-table walk
        (``mmu.walk``, when an MMU is attached), then an EPC page of this enclave resident at
        that page (not evicted, not blocked — the OS unmaps a page it blocks). Returns the EPC
        index; the EPCM checks are the caller's.

        Raises:
            PageFault: the walk's error code, or not present (P = 0: U, W for a write, I for
                a fetch).
        """
        page = linaddr & ~(PAGE - 1)
        mmu = self._mmu
        if mmu is not None:
            code = mmu.walk(self.epc_base + PAGE * enclave.secs_index, page, access)
            if code:
                raise PageFault(
                    "the page tables refuse the access", address=linaddr, error_code=code
                )
        i = enclave.pages.get(page)
        if i is None or not self._valid[i] or self._blocked[i]:
            raise PageFault(
                "enclave page not present", address=linaddr, error_code=PF_U | access & 0x12
            )
        return i

    def translate(self, enclave: SecsState, linaddr: int, access: int) -> int:
        """An enclave-mode data access or fetch (spec §3.8): :meth:`operand`, then the EPCM —
        a valid PT_REG page of this enclave at this address, not PENDING, not MODIFIED, with R
        (read), W (write) or X (fetch) — else #PF with the SGX bit (0x8000 | P | U | W? | I?).
        """
        i = self.operand(enclave, linaddr, access)
        perm = self._perm[i]
        if (
            self._owner[i] is not enclave
            or self._linaddr[i] != linaddr & ~(PAGE - 1)
            or self._ptype[i] != _PT_REG
            or perm & _UNACCEPTED
            or not perm & _NEED[access]
        ):
            raise PageFault(
                "the EPCM refuses the access",
                address=linaddr,
                error_code=PF_SGX | PF_P | PF_U | access & 0x12,
            )
        return i

    def deliver(self, enclave: SecsState, fault: PageFault) -> bool:
        """Hand an enclave-mode #PF to the OS (:meth:`resolve`). True: retry."""
        return self.resolve(enclave, fault.address, fault.error_code)

    def resolve(self, enclave: SecsState, address: int, error_code: int) -> bool:
        """Hand an enclave-mode #PF (``address``, ``error_code``) to the OS: an AEX (the
        thread leaves the enclave, so ETRACK and EWB of this enclave can complete meanwhile),
        the handler, then ERESUME. With an MMU every fault goes to ``mmu.fault``; without one,
        only not-present faults go to ``page_fault_handler`` (the behaviour before the MMU hook
        existed). True: retry."""
        mmu = self._mmu
        handler = self.page_fault_handler
        if mmu is None and (handler is None or error_code & (PF_P | PF_SGX)):
            return False
        secs = self.epc_base + PAGE * enclave.secs_index
        enclave.threads -= 1
        if enclave.tracking_threads:
            enclave.tracking_threads -= 1
        try:
            if mmu is not None:
                return mmu.fault(secs, address, error_code)
            assert handler is not None
            return handler(secs, address)
        finally:
            enclave.threads += 1

    def run_leaf(self, enclave: SecsState, leaf: Callable[..., T], *args: object) -> T:
        """Run an enclave-mode operation, ``leaf(*args)``; a #PF it raises goes to the OS
        (:meth:`deliver`) and the operation runs again from the start when the OS resolved it."""
        for _attempt in range(_MAX_DELIVERIES):
            try:
                return leaf(*args)
            except PageFault as fault:
                if not fault.error_code or not self.deliver(enclave, fault):
                    raise
        return leaf(*args)

    def eaccept(self, enclave: SecsState, rbx: int, rcx: int) -> SgxStatus:
        """ENCLU[EACCEPT] as :meth:`run_leaf` runs it (the leaf again after each fault the OS
        resolved, at most :data:`_MAX_DELIVERIES` deliveries), with the leaf's translation
        faults delivered where they happen (:meth:`EdmmEnclu.eaccept_step`) rather than raised
        and caught here: the same faults reach the OS in the same order, with the same
        outcome."""
        step = self.edmm.eaccept_step
        resolve = self.resolve
        for _attempt in range(_MAX_DELIVERIES):
            try:
                status = step(enclave, rbx, rcx, resolve)
            except PageFault as fault:
                if fault.delivered or not fault.error_code or not self.deliver(enclave, fault):
                    raise
                continue
            if status is not None:
                return status
        return self.edmm.eaccept(enclave, rbx, rcx)

    def _page(self, enclave: SecsState, linaddr: int, access: int) -> int:
        if not 0 <= linaddr - enclave.baseaddr < enclave.size:
            raise PageFault("access outside the enclave's linear range", address=linaddr)
        try:
            return self.translate(enclave, linaddr, access)
        except PageFault as fault:
            if not self.deliver(enclave, fault):
                raise
        return self.run_leaf(enclave, self.translate, enclave, linaddr, access)

    def _whole_pages(self, enclave: SecsState, linaddr: int, length: int, access: int) -> list[int]:
        """The EPC indices of a multi-page, page-aligned access when every page passes the
        checks of :meth:`translate` as they stand (and the page-table walk, with an MMU);
        ``[]`` otherwise — the caller then goes page by page through :meth:`_page`, which
        raises or delivers the fault exactly as for a single access. The checks are the same;
        only the Python work per page is less."""
        if linaddr & (PAGE - 1) or length & (PAGE - 1) or length < 2 * PAGE:
            return []
        count = length >> 12
        pages = range(linaddr, linaddr + length, PAGE)
        found = list(map(enclave.pages.get, pages))  # C-level loops from here on
        if None in found:
            return []
        index: list[int] = found  # type: ignore[assignment]  # no None (checked above)
        mmu = self._mmu
        if mmu is not None:
            secs = self.epc_base + PAGE * enclave.secs_index
            walk = mmu.walk
            if any(walk(secs, page, access) for page in pages):
                return []
        pick = operator.itemgetter(*index)
        if pick(self._owner).count(enclave) != count or pick(self._linaddr) != tuple(pages):
            return []
        at = np.fromiter(index, dtype=np.intp, count=count)
        perm = self._perm_np[at]
        if (
            not self._valid_np[at].all()
            or self._blocked_np[at].any()
            or (self._ptype_np[at] != _PT_REG).any()
            or (perm & _UNACCEPTED).any()
            or not (perm & _NEED[access]).all()
        ):
            return []
        return index

    def read(self, enclave: SecsState, linaddr: int, length: int) -> bytes:
        """An enclave-mode read of ``enclave``'s memory (``#PF`` if absent or not readable)."""
        index = self._whole_pages(enclave, linaddr, length, ACCESS_READ)
        if index:
            first = index[0]
            if index == list(range(first, first + len(index))):
                return bytes(self._epc_view[first * PAGE : (first + len(index)) * PAGE])
            return self._epc_pages_np[np.array(index, dtype=np.intp)].tobytes()
        out = bytearray()
        epc = self._epc
        while length > 0:
            i = self._page(enclave, linaddr, ACCESS_READ)
            off = linaddr & (PAGE - 1)
            n = min(length, PAGE - off)
            start = i * PAGE + off
            out += epc[start : start + n]
            linaddr += n
            length -= n
        return bytes(out)

    def write(self, enclave: SecsState, linaddr: int, data: bytes | bytearray | memoryview) -> None:
        """An enclave-mode write (``#PF`` if absent or not writable)."""
        index = self._whole_pages(enclave, linaddr, len(data), ACCESS_WRITE)
        if index:
            first = index[0]
            if index == list(range(first, first + len(index))):
                self._epc_view[first * PAGE : (first + len(index)) * PAGE] = data
                return
            source = np.frombuffer(data, dtype=np.uint8).reshape(len(index), PAGE)
            self._epc_pages_np[np.array(index, dtype=np.intp)] = source
            return
        view = memoryview(bytes(data))
        epc = self._epc
        while len(view):
            i = self._page(enclave, linaddr, ACCESS_WRITE)
            off = linaddr & (PAGE - 1)
            n = min(len(view), PAGE - off)
            start = i * PAGE + off
            epc[start : start + n] = view[:n]
            linaddr += n
            view = view[n:]

    def fetch(self, enclave: SecsState, linaddr: int, length: int) -> bytes:
        """Instruction fetch of ``length`` bytes (#PF unless the PTE and the EPCM allow it)."""
        out = bytearray()
        epc = self._epc
        while length > 0:
            i = self._page(enclave, linaddr, ACCESS_FETCH)
            off = linaddr & (PAGE - 1)
            n = min(length, PAGE - off)
            out += epc[i * PAGE + off : i * PAGE + off + n]
            linaddr += n
            length -= n
        return bytes(out)

    def execute(
        self, ctx: EnclaveContext, enclave: SecsState, address: int, function: int, data: bytes
    ) -> bytes:
        """Run the code at ``address`` (see :meth:`EnclaveContext.execute`)."""
        head = self.fetch(enclave, address, 64)
        if head[:32] != PROGRAM_PAGE_MAGIC:
            raise InvalidOpcode(f"no program code at 0x{address:x}")
        digest = head[32:64]
        program = enclave.dynamic_programs.get(digest)
        if program is None:
            factory = self._code.get(digest)
            if factory is None:
                raise UsageError(f"no program registered for source hash {digest.hex()}")
            program = enclave.dynamic_programs[digest] = factory()
        return bytes(program.ecall(ctx, function, bytes(data)))

    # -- the monotonic counter ---------------------------------------------------------------

    def _counter_machine(self) -> Machine:
        if self.machine is None:
            raise GeneralProtection("this processor has no monotonic counter")
        return self.machine

    def counter_read(self, enclave: SecsState) -> CounterSlot:
        """The counter as ``enclave`` may read it (see :meth:`EnclaveContext.counter_read`)."""
        return counter_read(self._counter_machine(), enclave.mrsigner, enclave.isvprodid)

    def counter_compare_and_set(
        self,
        enclave: SecsState,
        value: int,
        digest: bytes,
        new_digest: bytes,
        *,
        next_owner: tuple[bytes, int] | None = None,
        policy_digest: bytes | None = None,
    ) -> CounterSlot:
        """Advance the counter for ``enclave`` (see
        :meth:`EnclaveContext.counter_compare_and_set`)."""
        return counter_compare_and_set(
            self._counter_machine(),
            enclave.mrsigner,
            enclave.isvprodid,
            value=value,
            digest=digest,
            new_digest=new_digest,
            next_owner=next_owner,
            policy_digest=policy_digest,
        )

    def owner_verdict_post(self, enclave: SecsState, digest: bytes) -> None:
        """Post a verdict for the kernel (see :meth:`EnclaveContext.owner_verdict_post`)."""
        if len(digest) != 32:
            raise GeneralProtection("an owner verdict is 32 bytes")
        slot = self._counter_machine().load().counter
        if not slot.owned or not slot.owned_by(enclave.mrsigner, enclave.isvprodid):
            raise CounterAccessDenied(
                "only the enclave that owns the monotonic counter posts owner verdicts",
                expected=f"MRSIGNER {slot.owner_mrsigner.hex()}, ISVPRODID {slot.owner_isvprodid}",
                found=f"MRSIGNER {enclave.mrsigner.hex()}, ISVPRODID {enclave.isvprodid}",
            )
        verdicts = self.owner_verdicts
        verdicts.pop(bytes(digest), None)
        verdicts[bytes(digest)] = None
        while len(verdicts) > OWNER_VERDICTS_MAX:
            del verdicts[next(iter(verdicts))]

    def owner_verdict_take(self, digest: bytes) -> bool:
        """Kernel side: consume the verdict ``digest`` if the owner's enclave posted it (a
        verdict is taken at most once)."""
        try:
            del self.owner_verdicts[bytes(digest)]
        except KeyError:
            return False
        return True

    def platform_id(self, enclave: SecsState) -> bytes:
        """The machine's platform id (see :meth:`EnclaveContext.platform_id`)."""
        del enclave  # any enclave may read it
        return self._counter_machine().load().platform_id

    # -- EREPORT / EGETKEY ------------------------------------------------------------------

    def ereport(
        self, enclave: SecsState, targetinfo: TargetInfo | bytes, reportdata: bytes
    ) -> Report:
        """EREPORT for the running ``enclave`` (see :meth:`EnclaveContext.ereport`)."""
        target = (
            targetinfo
            if isinstance(targetinfo, TargetInfo)
            else TargetInfo.from_bytes_raw(targetinfo)
        )
        if len(reportdata) != 64:
            raise GeneralProtection("REPORTDATA is 64 bytes")
        if target.nonzero_reserved() is not None:
            raise GeneralProtection("TARGETINFO reserved bytes are not zero")
        body = Report(
            cpusvn=self.config.cpusvn,
            miscselect=enclave.miscselect,
            isvextprodid=enclave.isvextprodid,
            attributes=Attributes(flags=enclave.attributes, xfrm=enclave.xfrm),
            mrenclave=enclave.mrenclave,
            mrsigner=enclave.mrsigner,
            configid=enclave.configid,
            isvprodid=enclave.isvprodid,
            isvsvn=enclave.isvsvn,
            configsvn=enclave.configsvn,
            isvfamilyid=enclave.isvfamilyid,
            reportdata=bytes(reportdata),
            keyid=self.report_keyid,
        )
        key = self.report_key(
            mrenclave=target.mrenclave,
            attributes=target.attributes,
            miscselect=target.miscselect,
            configid=target.configid,
            configsvn=target.configsvn,
            keyid=self.report_keyid,
        )
        return body.replace(mac=cmac128(key, body.body_bytes()))

    def report_key(
        self,
        *,
        mrenclave: bytes,
        attributes: Attributes,
        miscselect: int,
        configid: bytes,
        configsvn: int,
        keyid: bytes,
    ) -> bytes:
        """The REPORT key of the enclave identified by the arguments (EREPORT and EGETKEY)."""
        return self._fuses.derive(
            KeyDependencies(
                keyname=KeyName.REPORT,
                sgxownerepoch=self.config.owner_epoch,
                attributes_flags=attributes.flags,
                attributes_xfrm=attributes.xfrm,
                mrenclave=mrenclave,
                keyid=keyid,
                seal_key_fuses=self._fuses.seal_fuses,
                cpusvn=self.config.cpusvn,
                miscselect=miscselect,
                padding=HARDCODED_PKCS1_5_PADDING,
                configid=configid,
                configsvn=configsvn,
            )
        )

    def egetkey(self, enclave: SecsState, keyrequest: KeyRequest | bytes) -> bytes:
        """EGETKEY for the running ``enclave`` (see :meth:`EnclaveContext.egetkey`).

        The 512-byte KEYREQUEST is unpacked once, flat (:data:`_KEYREQUEST`, the layout of
        :class:`~sgxlaunch.arch.structs.KeyRequest`), and checked field by field in the SDM's
        order; no structure object is built on the way."""
        native = NATIVE_EINITTOKEN_KEY
        if native is not None and keyrequest.__class__ is bytes and keyrequest.startswith(_ZERO2):
            # KEYNAME EINITTOKEN_KEY (0): the launch enclave's key per token. The native module
            # computes it in the success case (every check below passes) and answers None for
            # anything else, which then takes the steps below from the start.
            cfg = self.config
            fuses = self._fuses
            key = native(
                keyrequest,
                fuses.root_key,
                fuses.seal_fuses,
                cfg.owner_epoch,
                cfg.cpusvn,
                enclave.attributes,
                enclave.xfrm,
                enclave.isvprodid,
                enclave.isvsvn,
                enclave.mrsigner,
                enclave.miscselect,
                enclave.padding,
            )
            if key is not None:
                return key
        data = keyrequest.to_bytes() if isinstance(keyrequest, KeyRequest) else keyrequest
        if len(data) != KeyRequest.SIZE:
            KeyRequest.from_bytes_raw(data)  # raises MalformedInput naming the length
        if data.__class__ is not bytes:
            data = bytes(data)
        (
            name,
            policy,
            isvsvn,
            cpusvn,
            mask_flags,
            mask_xfrm,
            keyid,
            miscmask,
            configsvn,
        ) = _KEYREQUEST.unpack(data)
        if not data.startswith(_ZERO2, _RESERVED1_AT) or not data.endswith(_ZERO434):
            raise GeneralProtection("KEYREQUEST reserved fields are set")
        if policy & KEYPOLICY_RESERVED_MASK:
            raise GeneralProtection("KEYREQUEST.KEYPOLICY reserved bits are set")
        if not enclave.attributes & _KSS and (policy & KEYPOLICY_KSS_MASK or configsvn):
            raise GeneralProtection("KSS key policies and CONFIGSVN need SECS.ATTRIBUTES.KSS")
        if name == _EINITTOKEN_KEYNAME:  # the launch enclave's key per token: its steps in line
            if not enclave.attributes & _EINITTOKEN_KEY:
                raise EnclaveLeafFailed(
                    SgxStatus.INVALID_ATTRIBUTE, "EINITTOKEN_KEY attribute not set"
                )
            cfg = self.config
            if cpusvn != cfg.cpusvn and cpusvn_beyond(cpusvn, cfg.cpusvn):
                raise EnclaveLeafFailed(
                    SgxStatus.INVALID_CPUSVN, "KEYREQUEST.CPUSVN beyond the CPU's"
                )
            if isvsvn > enclave.isvsvn:
                raise EnclaveLeafFailed(
                    SgxStatus.INVALID_ISVSVN, "KEYREQUEST.ISVSVN above the SECS's"
                )
            fuses = self._fuses
            # every byte field has its width: unpacked from the KEYREQUEST, or the SECS's and
            # the CPU's own (einittoken_dependencies with its width checks, in one pack)
            return fuses.derive_bytes(
                EINITTOKEN_DEPENDENCIES.pack(
                    _EINITTOKEN_KEYNAME,
                    enclave.isvprodid,
                    isvsvn,
                    cfg.owner_epoch,
                    (mask_flags | _REQUIRED_SEALING_MASK) & enclave.attributes,
                    mask_xfrm & enclave.xfrm,
                    enclave.mrsigner,
                    keyid,
                    fuses.seal_fuses,
                    cpusvn,
                    miscmask & enclave.miscselect,
                    enclave.padding,
                )
            )
        if name == _REPORT_KEY:
            return self.report_key(
                mrenclave=enclave.mrenclave,
                attributes=Attributes(flags=enclave.attributes, xfrm=enclave.xfrm),
                miscselect=enclave.miscselect,
                configid=enclave.configid,
                configsvn=enclave.configsvn,
                keyid=keyid,
            )
        if name not in _DERIVED_KEYNAMES:
            raise EnclaveLeafFailed(SgxStatus.INVALID_KEYNAME, f"KEYNAME {name}")
        if name in _PROVISIONING_KEYNAMES and not enclave.attributes & _PROVISIONKEY:
            raise EnclaveLeafFailed(SgxStatus.INVALID_ATTRIBUTE, "PROVISIONKEY attribute not set")
        cfg = self.config
        if cpusvn_beyond(cpusvn, cfg.cpusvn):
            raise EnclaveLeafFailed(SgxStatus.INVALID_CPUSVN, "KEYREQUEST.CPUSVN beyond the CPU's")
        if isvsvn > enclave.isvsvn:
            raise EnclaveLeafFailed(SgxStatus.INVALID_ISVSVN, "KEYREQUEST.ISVSVN above the SECS's")
        if name == _SEAL_KEY and configsvn > enclave.configsvn:
            raise EnclaveLeafFailed(
                SgxStatus.INVALID_ISVSVN, "KEYREQUEST.CONFIGSVN above the SECS's"
            )
        attr_flags = (mask_flags | _REQUIRED_SEALING_MASK) & enclave.attributes
        attr_xfrm = mask_xfrm & enclave.xfrm
        miscselect = miscmask & enclave.miscselect
        fuses = self._fuses
        if name == _SEAL_KEY:
            use_config = bool(policy & KeyPolicy.CONFIGID)
            deps = KeyDependencies(
                keyname=KeyName.SEAL,
                isvfamilyid=enclave.isvfamilyid if policy & KeyPolicy.ISVFAMILYID else bytes(16),
                isvextprodid=enclave.isvextprodid if policy & KeyPolicy.ISVEXTPRODID else bytes(16),
                isvprodid=0 if policy & KeyPolicy.NOISVPRODID else enclave.isvprodid,
                isvsvn=isvsvn,
                sgxownerepoch=cfg.owner_epoch,
                attributes_flags=attr_flags,
                attributes_xfrm=attr_xfrm,
                attributesmask_flags=mask_flags,
                attributesmask_xfrm=mask_xfrm,
                mrenclave=enclave.mrenclave if policy & KeyPolicy.MRENCLAVE else bytes(32),
                mrsigner=enclave.mrsigner if policy & KeyPolicy.MRSIGNER else bytes(32),
                keyid=keyid,
                seal_key_fuses=fuses.seal_fuses,
                cpusvn=cpusvn,
                miscselect=miscselect,
                miscmask=~miscmask & 0xFFFFFFFF,
                padding=enclave.padding,
                keypolicy=policy,
                configid=enclave.configid if use_config else bytes(64),
                configsvn=configsvn if use_config else 0,
            )
        elif name == KeyName.PROVISION_SEAL:
            # SDM EGETKEY, PROVISION_SEAL_KEY: owner-independent (no OWNEREPOCH) but bound to
            # this CPU's seal fuses; KEYPOLICY's KSS bits apply as for SEAL_KEY, and KEYPOLICY
            # itself is a dependency. MRENCLAVE and KEYID are not.
            use_config = bool(policy & KeyPolicy.CONFIGID)
            deps = KeyDependencies(
                keyname=KeyName.PROVISION_SEAL,
                isvfamilyid=enclave.isvfamilyid if policy & KeyPolicy.ISVFAMILYID else bytes(16),
                isvextprodid=enclave.isvextprodid if policy & KeyPolicy.ISVEXTPRODID else bytes(16),
                isvprodid=0 if policy & KeyPolicy.NOISVPRODID else enclave.isvprodid,
                isvsvn=isvsvn,
                sgxownerepoch=bytes(16),
                attributes_flags=attr_flags,
                attributes_xfrm=attr_xfrm,
                attributesmask_flags=mask_flags,
                attributesmask_xfrm=mask_xfrm,
                mrsigner=enclave.mrsigner,
                seal_key_fuses=fuses.seal_fuses,
                cpusvn=cpusvn,
                miscselect=miscselect,
                miscmask=~miscmask & 0xFFFFFFFF,
                padding=enclave.padding,
                keypolicy=policy,
                configid=enclave.configid if use_config else bytes(64),
                configsvn=configsvn if use_config else 0,
            )
        else:
            deps = KeyDependencies(  # PROVISION_KEY: neither the owner epoch nor the fuses
                keyname=KeyName.PROVISION,
                isvprodid=enclave.isvprodid,
                isvsvn=isvsvn,
                sgxownerepoch=bytes(16),
                attributes_flags=attr_flags,
                attributes_xfrm=attr_xfrm,
                attributesmask_flags=mask_flags,
                attributesmask_xfrm=mask_xfrm,
                mrsigner=enclave.mrsigner,
                seal_key_fuses=bytes(16),
                cpusvn=cpusvn,
                miscselect=miscselect,
                miscmask=~miscmask & 0xFFFFFFFF,
                padding=enclave.padding,
            )
        return fuses.derive(deps)

    # -- EENTER -----------------------------------------------------------------------------

    def eenter(self, tcs: int, function: int = 0, data: bytes = b"") -> bytes:
        """ENCLU[EENTER] on the TCS at EPC address ``tcs``; runs the registered program.

        Checks (SDM EENTER): ``tcs`` 4 KiB aligned (#GP); in the EPC, a valid, unblocked
        PT_TCS page, not PENDING or MODIFIED (SGX2: a TCS made by EMODT is enterable once
        EACCEPTed) (#PF — an evicted TCS faults so the OS can reload it); the enclave
        initialized (#GP); the TCS not busy (#GP); CSSA < NSSA (#GP); the current SSA frame
        (BASEADDR + TCS.OSSA + 4096·SSAFRAMESIZE·CSSA) page-aligned (#GP — EENTER's check,
        not EADD's). Then
        TCS.STATE := busy, the program for the
        enclave's MRENCLAVE runs ``ecall(ctx, function, data)``, and EEXIT (return or
        :meth:`EnclaveContext.eexit`) hands its bytes back and frees the TCS.

        Raises:
            UsageError: no program is registered for the enclave's MRENCLAVE.
        """
        if tcs & (PAGE - 1):
            raise GeneralProtection("EENTER TCS is not 4 KiB aligned")
        if not self.epc_base <= tcs < self._epc_end:
            raise PageFault("EENTER TCS is not in the EPC", address=tcs)
        i = (tcs - self.epc_base) >> 12
        if (
            not self._valid[i]
            or self._ptype[i] != _PT_TCS
            or self._blocked[i]
            or self._perm[i] & _UNACCEPTED
        ):
            raise PageFault("EENTER TCS is not a valid, accepted TCS page", address=tcs)
        enclave = self._owner[i]
        assert enclave is not None
        if not enclave.initialized:
            raise GeneralProtection("EENTER into an uninitialized enclave")
        epc = self._epc
        base = i * PAGE
        state, ossa, cssa, nssa = _TCS_HEAD.unpack_from(epc, base)
        if state:
            raise GeneralProtection("EENTER on a busy TCS")
        if cssa >= nssa:
            raise GeneralProtection("EENTER with CSSA ≥ NSSA")
        if (ossa + enclave.baseaddr + PAGE * enclave.ssaframesize * cssa) & (PAGE - 1):
            raise GeneralProtection("EENTER: the SSA (TCS.OSSA) is not page-aligned")
        if enclave.program is None:
            factory = self._programs.get(enclave.mrenclave)
            if factory is None:
                raise UsageError(
                    f"no EnclaveProgram registered for MRENCLAVE {enclave.mrenclave.hex()}"
                )
            enclave.program = factory()
        program = enclave.program
        ctx = EnclaveContext(self, enclave)
        _STATE.pack_into(epc, base, 1)
        enclave.threads += 1
        try:
            result = program.ecall(ctx, function, data if data.__class__ is bytes else bytes(data))
        except _EnclaveExit as leave:
            result = leave.data
        finally:
            ctx._active = False  # EEXIT: the context is dead (_leave, inlined)
            enclave.threads -= 1
            if enclave.tracking_threads:
                enclave.tracking_threads -= 1
            if self._valid[i] and self._owner[i] is enclave:
                _STATE.pack_into(epc, base, 0)
        return result if result.__class__ is bytes else bytes(result)


__all__ = ["PROGRAM_PAGE_MAGIC", "EnclaveContext", "EnclaveProgram", "Enclu", "Mmu", "PteMmu"]
