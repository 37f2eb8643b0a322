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
import struct
from collections.abc import Callable

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
from sgxlaunch.cpu.faults import EnclaveLeafFailed, GeneralProtection, PageFault
from sgxlaunch.cpu.keys import FusedSecrets, KeyDependencies, cmac128
from sgxlaunch.cpu.machine import (
    CounterSlot,
    Machine,
    counter_compare_and_set,
    counter_read,
)
from sgxlaunch.cpu.msr import cpusvn_beyond
from sgxlaunch.cpu.state import EpcState, SecsState, StateView
from sgxlaunch.errors import UsageError

PAGE = 4096
_U64 = (1 << 64) - 1
_REQUIRED_SEALING_MASK = 0x3
_STATE = struct.Struct("<Q")
_CSSA_NSSA = struct.Struct("<II")
# SECS.ATTRIBUTES bits EGETKEY tests, as plain ints (an IntFlag operation costs a microsecond).
_KSS = int(AttributeFlag.KSS)
_EINITTOKEN_KEY = int(AttributeFlag.EINITTOKEN_KEY)
_PROVISIONKEY = int(AttributeFlag.PROVISIONKEY)

PageFaultHandler = Callable[[int, int], bool]


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
        self._check()
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
        return self._enclu.egetkey(self._check(), keyrequest)


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
        self.page_fault_handler: PageFaultHandler | None = None

    def register_program(self, mrenclave: bytes, program: Callable[[], EnclaveProgram]) -> None:
        """Register the code of enclaves measuring ``mrenclave``.

        ``program`` is a factory (usually the :class:`EnclaveProgram` subclass itself); each
        enclave instance gets its own program object at its first EENTER.
        """
        if len(mrenclave) != 32:
            raise UsageError("an MRENCLAVE is 32 bytes")
        self._programs[bytes(mrenclave)] = program

    # -- memory of the running enclave ------------------------------------------------------

    def _page(self, enclave: SecsState, linaddr: int, write: bool) -> int:
        page = linaddr & ~(PAGE - 1)
        if not 0 <= page - enclave.baseaddr < enclave.size:
            raise PageFault("access outside the enclave's linear range", address=linaddr)
        for _attempt in range(2):
            i = enclave.pages.get(page)
            if i is not None and self._valid[i] and not self._blocked[i]:
                if self._owner[i] is not enclave or self._linaddr[i] != page:
                    raise PageFault("EPCM does not map this address", address=linaddr)
                if self._ptype[i] != PageType.REG:
                    raise PageFault("page is not a regular page", address=linaddr)
                need = SecinfoFlag.W if write else SecinfoFlag.R
                if not self._perm[i] & need:
                    raise PageFault("EPCM permissions forbid the access", address=linaddr)
                return i
            handler = self.page_fault_handler
            if handler is None:
                break
            # The #PF is an asynchronous exit: the thread leaves the enclave (so ETRACK/EWB
            # of this enclave can complete while the OS handles the fault), then ERESUMEs.
            enclave.threads -= 1
            if enclave.tracking_threads:
                enclave.tracking_threads -= 1
            try:
                resolved = handler(self.epc_base + PAGE * enclave.secs_index, linaddr)
            finally:
                enclave.threads += 1
            if not resolved:
                break
        raise PageFault("enclave page not present", address=linaddr)

    def read(self, enclave: SecsState, linaddr: int, length: int) -> bytes:
        """An enclave-mode read of ``enclave``'s memory (``#PF`` if absent or not readable)."""
        out = bytearray()
        epc = self._epc
        while length > 0:
            i = self._page(enclave, linaddr, write=False)
            off = linaddr & (PAGE - 1)
            n = min(length, PAGE - off)
            start = i * PAGE + off
            out += epc[start : start + n]
            linaddr += n
            length -= n
        return bytes(out)

    def write(self, enclave: SecsState, linaddr: int, data: bytes | bytearray | memoryview) -> None:
        """An enclave-mode write (``#PF`` if absent or not writable)."""
        view = memoryview(bytes(data))
        epc = self._epc
        while len(view):
            i = self._page(enclave, linaddr, write=True)
            off = linaddr & (PAGE - 1)
            n = min(len(view), PAGE - off)
            start = i * PAGE + off
            epc[start : start + n] = view[:n]
            linaddr += n
            view = view[n:]

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
        """EGETKEY for the running ``enclave`` (see :meth:`EnclaveContext.egetkey`)."""
        req = (
            keyrequest
            if isinstance(keyrequest, KeyRequest)
            else KeyRequest.from_bytes_raw(keyrequest)
        )
        if req.nonzero_reserved() is not None:
            raise GeneralProtection("KEYREQUEST reserved fields are set")
        if req.keypolicy & KEYPOLICY_RESERVED_MASK:
            raise GeneralProtection("KEYREQUEST.KEYPOLICY reserved bits are set")
        if not enclave.attributes & _KSS and (req.keypolicy & KEYPOLICY_KSS_MASK or req.configsvn):
            raise GeneralProtection("KSS key policies and CONFIGSVN need SECS.ATTRIBUTES.KSS")
        return self._derive(enclave, req)

    def _derive(self, enclave: SecsState, req: KeyRequest) -> bytes:
        name = req.keyname
        cfg = self.config
        if name == KeyName.REPORT:
            return self.report_key(
                mrenclave=enclave.mrenclave,
                attributes=Attributes(flags=enclave.attributes, xfrm=enclave.xfrm),
                miscselect=enclave.miscselect,
                configid=enclave.configid,
                configsvn=enclave.configsvn,
                keyid=req.keyid,
            )
        if name not in (
            KeyName.SEAL,
            KeyName.EINITTOKEN,
            KeyName.PROVISION,
            KeyName.PROVISION_SEAL,
        ):
            raise EnclaveLeafFailed(SgxStatus.INVALID_KEYNAME, f"KEYNAME {name}")
        if name == KeyName.EINITTOKEN and not enclave.attributes & _EINITTOKEN_KEY:
            raise EnclaveLeafFailed(SgxStatus.INVALID_ATTRIBUTE, "EINITTOKEN_KEY attribute not set")
        if name in (KeyName.PROVISION, KeyName.PROVISION_SEAL) and not (
            enclave.attributes & _PROVISIONKEY
        ):
            raise EnclaveLeafFailed(SgxStatus.INVALID_ATTRIBUTE, "PROVISIONKEY attribute not set")
        if cpusvn_beyond(req.cpusvn, cfg.cpusvn):
            raise EnclaveLeafFailed(SgxStatus.INVALID_CPUSVN, "KEYREQUEST.CPUSVN beyond the CPU's")
        if req.isvsvn > enclave.isvsvn:
            raise EnclaveLeafFailed(SgxStatus.INVALID_ISVSVN, "KEYREQUEST.ISVSVN above the SECS's")
        if name == KeyName.SEAL and req.configsvn > enclave.configsvn:
            raise EnclaveLeafFailed(
                SgxStatus.INVALID_ISVSVN, "KEYREQUEST.CONFIGSVN above the SECS's"
            )
        mask = req.attributemask
        attr_flags = (mask.flags | _REQUIRED_SEALING_MASK) & enclave.attributes
        attr_xfrm = mask.xfrm & enclave.xfrm
        miscselect = req.miscmask & enclave.miscselect
        if name == KeyName.EINITTOKEN:
            deps = KeyDependencies(
                keyname=KeyName.EINITTOKEN,
                isvprodid=enclave.isvprodid,
                isvsvn=req.isvsvn,
                sgxownerepoch=cfg.owner_epoch,
                attributes_flags=attr_flags,
                attributes_xfrm=attr_xfrm,
                mrsigner=enclave.mrsigner,
                keyid=req.keyid,
                seal_key_fuses=self._fuses.seal_fuses,
                cpusvn=req.cpusvn,
                miscselect=miscselect,
                padding=enclave.padding,
            )
        elif name == KeyName.SEAL:
            policy = req.keypolicy
            use_config = bool(policy & KeyPolicy.CONFIGID)
            deps = KeyDependencies(
                keyname=KeyName.SEAL,
                isvfamilyid=enclave.isvfamilyid if policy & KeyPolicy.ISVFAMILYID else bytes(16),
                isvextprodid=enclave.isvextprodid if policy & KeyPolicy.ISVEXTPRODID else bytes(16),
                isvprodid=0 if policy & KeyPolicy.NOISVPRODID else enclave.isvprodid,
                isvsvn=req.isvsvn,
                sgxownerepoch=cfg.owner_epoch,
                attributes_flags=attr_flags,
                attributes_xfrm=attr_xfrm,
                attributesmask_flags=mask.flags,
                attributesmask_xfrm=mask.xfrm,
                mrenclave=enclave.mrenclave if policy & KeyPolicy.MRENCLAVE else bytes(32),
                mrsigner=enclave.mrsigner if policy & KeyPolicy.MRSIGNER else bytes(32),
                keyid=req.keyid,
                seal_key_fuses=self._fuses.seal_fuses,
                cpusvn=req.cpusvn,
                miscselect=miscselect,
                miscmask=~req.miscmask & 0xFFFFFFFF,
                padding=enclave.padding,
                keypolicy=policy,
                configid=enclave.configid if use_config else bytes(64),
                configsvn=req.configsvn if use_config else 0,
            )
        elif name == KeyName.PROVISION_SEAL:
            # SDM EGETKEY, PROVISION_SEAL_KEY: owner-independent (no OWNEREPOCH) but bound to
            # this CPU's seal fuses; KEYPOLICY's KSS bits apply as for SEAL_KEY, and KEYPOLICY
            # itself is a dependency. MRENCLAVE and KEYID are not.
            policy = req.keypolicy
            use_config = bool(policy & KeyPolicy.CONFIGID)
            deps = KeyDependencies(
                keyname=KeyName.PROVISION_SEAL,
                isvfamilyid=enclave.isvfamilyid if policy & KeyPolicy.ISVFAMILYID else bytes(16),
                isvextprodid=enclave.isvextprodid if policy & KeyPolicy.ISVEXTPRODID else bytes(16),
                isvprodid=0 if policy & KeyPolicy.NOISVPRODID else enclave.isvprodid,
                isvsvn=req.isvsvn,
                sgxownerepoch=bytes(16),
                attributes_flags=attr_flags,
                attributes_xfrm=attr_xfrm,
                attributesmask_flags=mask.flags,
                attributesmask_xfrm=mask.xfrm,
                mrsigner=enclave.mrsigner,
                seal_key_fuses=self._fuses.seal_fuses,
                cpusvn=req.cpusvn,
                miscselect=miscselect,
                miscmask=~req.miscmask & 0xFFFFFFFF,
                padding=enclave.padding,
                keypolicy=policy,
                configid=enclave.configid if use_config else bytes(64),
                configsvn=req.configsvn if use_config else 0,
            )
        else:
            deps = KeyDependencies(  # PROVISION_KEY: neither the owner epoch nor the fuses
                keyname=KeyName.PROVISION,
                isvprodid=enclave.isvprodid,
                isvsvn=req.isvsvn,
                sgxownerepoch=bytes(16),
                attributes_flags=attr_flags,
                attributes_xfrm=attr_xfrm,
                attributesmask_flags=mask.flags,
                attributesmask_xfrm=mask.xfrm,
                mrsigner=enclave.mrsigner,
                seal_key_fuses=bytes(16),
                cpusvn=req.cpusvn,
                miscselect=miscselect,
                miscmask=~req.miscmask & 0xFFFFFFFF,
                padding=enclave.padding,
            )
        return self._fuses.derive(deps)

    # -- EENTER -----------------------------------------------------------------------------

    def eenter(self, tcs: int, function: int = 0, data: bytes = b"") -> bytes:
        """ENCLU[EENTER] on the TCS at EPC address ``tcs``; runs the registered program.

        Checks (SDM EENTER): ``tcs`` 4 KiB aligned (#GP); in the EPC, a valid, unblocked PT_TCS page
        (#PF — an evicted TCS faults so the OS can reload it); the enclave initialized (#GP); the
        TCS not busy (#GP); CSSA < NSSA (#GP); the current SSA frame (BASEADDR + TCS.OSSA +
        4096·SSAFRAMESIZE·CSSA) page-aligned (#GP — EENTER's check, not EADD's). Then
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
        if not self._valid[i] or self._ptype[i] != PageType.TCS or self._blocked[i]:
            raise PageFault("EENTER TCS is not a valid TCS page", address=tcs)
        enclave = self._owner[i]
        assert enclave is not None
        if not enclave.initialized:
            raise GeneralProtection("EENTER into an uninitialized enclave")
        epc = self._epc
        base = i * PAGE
        (state,) = _STATE.unpack_from(epc, base)
        cssa, nssa = _CSSA_NSSA.unpack_from(epc, base + 24)
        if state:
            raise GeneralProtection("EENTER on a busy TCS")
        if cssa >= nssa:
            raise GeneralProtection("EENTER with CSSA ≥ NSSA")
        (ossa,) = _STATE.unpack_from(epc, base + 16)
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
            result = program.ecall(ctx, function, bytes(data))
        except _EnclaveExit as leave:
            result = leave.data
        finally:
            ctx._leave()
            enclave.threads -= 1
            if enclave.tracking_threads:
                enclave.tracking_threads -= 1
            if self._valid[i] and self._owner[i] is enclave:
                _STATE.pack_into(epc, base, 0)
        return bytes(result)


__all__ = ["EnclaveContext", "EnclaveProgram", "Enclu"]
