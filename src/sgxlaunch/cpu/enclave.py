"""How code runs inside an emulated enclave (DESIGN "How enclave code runs").

Enclave code is an :class:`EnclaveProgram` (a Python class). The image built for a program by
:func:`program_image` holds a measured page with SHA-256 of the program's source, so MRENCLAVE
binds the code. :meth:`Processor.register_program` maps an MRENCLAVE to its program; EENTER on a
TCS of an initialized enclave runs that program's :meth:`EnclaveProgram.ecall` with an
:class:`EnclaveContext`, the only door to EREPORT, EGETKEY, EEXIT and the enclave's memory.
Callers outside pass and receive byte buffers, as an ECALL does.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

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
    secinfo_flags,
)
from sgxlaunch.arch.structs import Attributes, KeyRequest, Report, TargetInfo, Tcs
from sgxlaunch.cpu.faults import EnclaveLeafFailed, GeneralProtection, PageFault
from sgxlaunch.cpu.keys import KeyDependencies, cmac128, derive_key
from sgxlaunch.cpu.machine import (
    CounterSlot,
    Machine,
    counter_compare_and_set,
    counter_read,
)
from sgxlaunch.errors import UsageError
from sgxlaunch.measure import eadd_block, ecreate_block, eextend_header

if TYPE_CHECKING:
    from sgxlaunch.cpu.processor import Processor, _Enclave

PAGE = 4096
_U64 = (1 << 64) - 1
_REQUIRED_SEALING_MASK = 0x3
_STATE = struct.Struct("<Q")
_CSSA_NSSA = struct.Struct("<II")

PROGRAM_PAGE_MAGIC = b"sgxlaunch enclave program v1\x00\x00\x00\x00"
"""First 32 bytes of the measured code page of a program image."""
assert len(PROGRAM_PAGE_MAGIC) == 32


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

    __slots__ = ("_active", "_enclave", "_processor", "_secs_address")

    def __init__(self, processor: Processor, enclave: _Enclave) -> None:
        self._processor = processor
        self._enclave = enclave
        self._secs_address = processor.epc_base + PAGE * enclave.secs_index
        self._active = True

    def _check(self) -> _Enclave:
        if not self._active:
            raise GeneralProtection("ENCLU leaf called outside enclave mode")
        return self._enclave

    @property
    def base_address(self) -> int:
        """SECS.BASEADDR: the enclave's first linear address."""
        return self._check().baseaddr

    @property
    def size(self) -> int:
        """SECS.SIZE."""
        return self._check().size

    # -- memory -----------------------------------------------------------------------------

    def _page(self, linaddr: int, write: bool) -> int:
        enclave = self._check()
        proc = self._processor
        page = linaddr & ~(PAGE - 1)
        if not 0 <= page - enclave.baseaddr < enclave.size:
            raise PageFault("access outside the enclave's linear range", address=linaddr)
        for _attempt in range(2):
            i = enclave.pages.get(page)
            if i is not None and proc._valid[i] and not proc._blocked[i]:
                if proc._owner[i] is not enclave or proc._linaddr[i] != page:
                    raise PageFault("EPCM does not map this address", address=linaddr)
                if proc._ptype[i] != PageType.REG:
                    raise PageFault("page is not a regular page", address=linaddr)
                need = SecinfoFlag.W if write else SecinfoFlag.R
                if not proc._perm[i] & need:
                    raise PageFault("EPCM permissions forbid the access", address=linaddr)
                return i
            handler = proc.page_fault_handler
            if handler is None:
                break
            # The #PF is an asynchronous exit: the thread leaves the enclave (so ETRACK/EWB
            # of this enclave can complete while the OS handles the fault), then ERESUMEs.
            enclave.threads -= 1
            if enclave.tracking_threads:
                enclave.tracking_threads -= 1
            try:
                resolved = handler(self._secs_address, linaddr)
            finally:
                enclave.threads += 1
            if not resolved:
                break
        raise PageFault("enclave page not present", address=linaddr)

    def read(self, linaddr: int, length: int) -> bytes:
        """Read enclave memory at a linear address (``#PF`` if absent or not readable)."""
        out = bytearray()
        proc = self._processor
        while length > 0:
            i = self._page(linaddr, write=False)
            off = linaddr & (PAGE - 1)
            n = min(length, PAGE - off)
            start = i * PAGE + off
            out += proc._epc[start : start + n]
            linaddr += n
            length -= n
        return bytes(out)

    def write(self, linaddr: int, data: bytes | bytearray | memoryview) -> None:
        """Write enclave memory at a linear address (``#PF`` if absent or not writable)."""
        view = memoryview(bytes(data))
        proc = self._processor
        while len(view):
            i = self._page(linaddr, write=True)
            off = linaddr & (PAGE - 1)
            n = min(len(view), PAGE - off)
            start = i * PAGE + off
            proc._epc[start : start + n] = view[:n]
            linaddr += n
            view = view[n:]

    def rdrand(self, length: int) -> bytes:
        """RDRAND: ``length`` random bytes from the processor's injected source."""
        self._check()
        return self._processor._random(length)

    # -- the monotonic counter (emulator extension; see sgxlaunch.cpu.machine) ----------------

    def _counter_machine(self) -> Machine:
        self._check()
        machine = self._processor.machine
        if machine is None:
            raise GeneralProtection("this processor has no monotonic counter")
        return machine

    def counter_read(self) -> CounterSlot:
        """Read the machine's monotonic counter (**emulator extension**, like the retired SGX
        platform-services counters or a TPM NV counter under an authorised session).

        The caller is authenticated by the identity the processor recorded at EINIT:
        MRSIGNER and ISVPRODID. An unowned slot (value 0) reads for anyone.

        Raises:
            GeneralProtection: the processor has no counter (outside enclave mode too).
            CounterAccessDenied: another identity owns the counter.
        """
        machine = self._counter_machine()
        enclave = self._enclave
        return counter_read(machine, enclave.mrsigner, enclave.isvprodid)

    def counter_compare_and_set(
        self,
        value: int,
        digest: bytes,
        new_digest: bytes,
        *,
        next_owner: tuple[bytes, int] | None = None,
    ) -> CounterSlot:
        """Advance the counter from ``(value, digest)`` to ``(value + 1, new_digest)``
        (**emulator extension**); ``next_owner`` (MRSIGNER, ISVPRODID) hands the counter to
        another enclave identity with the same step.

        Raises:
            GeneralProtection: no counter on this processor.
            CounterAccessDenied: the caller does not own the counter.
            MachineConflict: the counter does not hold ``(value, digest)``.
        """
        machine = self._counter_machine()
        enclave = self._enclave
        return counter_compare_and_set(
            machine,
            enclave.mrsigner,
            enclave.isvprodid,
            value=value,
            digest=digest,
            new_digest=new_digest,
            next_owner=next_owner,
        )

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
            GeneralProtection: ``reportdata`` is not 64 bytes.
        """
        enclave = self._check()
        proc = self._processor
        target = (
            targetinfo
            if isinstance(targetinfo, TargetInfo)
            else TargetInfo.from_bytes_raw(targetinfo)
        )
        if len(reportdata) != 64:
            raise GeneralProtection("REPORTDATA is 64 bytes")
        body = Report(
            cpusvn=proc.config.cpusvn,
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
            keyid=proc._report_keyid,
        )
        key = _report_key(
            proc,
            mrenclave=target.mrenclave,
            attributes=target.attributes,
            miscselect=target.miscselect,
            configid=target.configid,
            configsvn=target.configsvn,
            keyid=proc._report_keyid,
        )
        return body.replace(mac=cmac128(key, body.body_bytes()))

    def verify_report(self, report: Report | bytes) -> bool:
        """Verify a REPORT targeted at this enclave: EGETKEY(REPORT_KEY, report.KEYID), CMAC."""
        rep = report if isinstance(report, Report) else Report.from_bytes_raw(report)
        key = self.egetkey(KeyRequest(keyname=KeyName.REPORT, keyid=rep.keyid))
        return hmac.compare_digest(rep.mac, cmac128(key, rep.body_bytes()))

    def egetkey(self, keyrequest: KeyRequest | bytes) -> bytes:
        """ENCLU[EGETKEY]: derive a 128-bit key for this enclave.

        Checks, in the SDM's order:

        1. KEYREQUEST reserved fields non-zero, KEYPOLICY reserved bits, or KSS policy bits
           (NOISVPRODID, CONFIGID, ISVFAMILYID, ISVEXTPRODID) without SECS.ATTRIBUTES.KSS →
           ``#GP``.
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
           seal fuses (it is owner-independent).

        Returns:
            The 16-byte key.

        Raises:
            GeneralProtection: step 1.
            EnclaveLeafFailed: a status from step 2 (``.status``).
        """
        enclave = self._check()
        proc = self._processor
        req = (
            keyrequest
            if isinstance(keyrequest, KeyRequest)
            else KeyRequest.from_bytes_raw(keyrequest)
        )
        if req.nonzero_reserved() is not None:
            raise GeneralProtection("KEYREQUEST reserved fields are set")
        if req.keypolicy & KEYPOLICY_RESERVED_MASK:
            raise GeneralProtection("KEYREQUEST.KEYPOLICY reserved bits are set")
        if req.keypolicy & KEYPOLICY_KSS_MASK and not enclave.attributes & AttributeFlag.KSS:
            raise GeneralProtection("KSS key policies need SECS.ATTRIBUTES.KSS")
        return _egetkey(proc, enclave, req)


def _cpusvn_beyond(candidate: bytes, platform: bytes) -> bool:
    return any(c > p for c, p in zip(candidate, platform, strict=True))


def _report_key(
    proc: Processor,
    *,
    mrenclave: bytes,
    attributes: Attributes,
    miscselect: int,
    configid: bytes,
    configsvn: int,
    keyid: bytes,
) -> bytes:
    return derive_key(
        proc._root_key,
        KeyDependencies(
            keyname=KeyName.REPORT,
            sgxownerepoch=proc.config.owner_epoch,
            attributes_flags=attributes.flags,
            attributes_xfrm=attributes.xfrm,
            mrenclave=mrenclave,
            keyid=keyid,
            seal_key_fuses=proc._seal_fuses,
            cpusvn=proc.config.cpusvn,
            miscselect=miscselect,
            padding=HARDCODED_PKCS1_5_PADDING,
            configid=configid,
            configsvn=configsvn,
        ),
    )


def _egetkey(proc: Processor, enclave: _Enclave, req: KeyRequest) -> bytes:
    name = req.keyname
    cfg = proc.config
    if name == KeyName.REPORT:
        return _report_key(
            proc,
            mrenclave=enclave.mrenclave,
            attributes=Attributes(flags=enclave.attributes, xfrm=enclave.xfrm),
            miscselect=enclave.miscselect,
            configid=enclave.configid,
            configsvn=enclave.configsvn,
            keyid=req.keyid,
        )
    if name not in (KeyName.SEAL, KeyName.EINITTOKEN, KeyName.PROVISION, KeyName.PROVISION_SEAL):
        raise EnclaveLeafFailed(SgxStatus.INVALID_KEYNAME, f"KEYNAME {name}")
    if name == KeyName.EINITTOKEN and not enclave.attributes & AttributeFlag.EINITTOKEN_KEY:
        raise EnclaveLeafFailed(SgxStatus.INVALID_ATTRIBUTE, "EINITTOKEN_KEY attribute not set")
    if name in (KeyName.PROVISION, KeyName.PROVISION_SEAL) and not (
        enclave.attributes & AttributeFlag.PROVISIONKEY
    ):
        raise EnclaveLeafFailed(SgxStatus.INVALID_ATTRIBUTE, "PROVISIONKEY attribute not set")
    if _cpusvn_beyond(req.cpusvn, cfg.cpusvn):
        raise EnclaveLeafFailed(SgxStatus.INVALID_CPUSVN, "KEYREQUEST.CPUSVN beyond the CPU's")
    if req.isvsvn > enclave.isvsvn:
        raise EnclaveLeafFailed(SgxStatus.INVALID_ISVSVN, "KEYREQUEST.ISVSVN above the SECS's")
    if name == KeyName.SEAL and req.configsvn > enclave.configsvn:
        raise EnclaveLeafFailed(SgxStatus.INVALID_ISVSVN, "KEYREQUEST.CONFIGSVN above the SECS's")
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
            seal_key_fuses=proc._seal_fuses,
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
            seal_key_fuses=proc._seal_fuses,
            cpusvn=req.cpusvn,
            miscselect=miscselect,
            miscmask=~req.miscmask & 0xFFFFFFFF,
            padding=enclave.padding,
            keypolicy=policy,
            configid=enclave.configid if use_config else bytes(64),
            configsvn=req.configsvn if use_config else 0,
        )
    else:
        provision = name == KeyName.PROVISION
        deps = KeyDependencies(
            keyname=name,
            isvprodid=enclave.isvprodid,
            isvsvn=req.isvsvn,
            sgxownerepoch=bytes(16) if provision else cfg.owner_epoch,
            attributes_flags=attr_flags,
            attributes_xfrm=attr_xfrm,
            attributesmask_flags=mask.flags,
            attributesmask_xfrm=mask.xfrm,
            mrsigner=enclave.mrsigner,
            seal_key_fuses=bytes(16) if provision else proc._seal_fuses,
            cpusvn=req.cpusvn,
            miscselect=miscselect,
            miscmask=~req.miscmask & 0xFFFFFFFF,
            padding=enclave.padding,
        )
    return derive_key(proc._root_key, deps)


def eenter(proc: Processor, tcs: int, function: int, data: bytes) -> bytes:
    """ENCLU[EENTER] on the TCS at EPC address ``tcs``; runs the registered program.

    Checks (SDM EENTER): ``tcs`` 4 KiB aligned (#GP); in the EPC, a valid, unblocked PT_TCS page
    (#PF — an evicted TCS faults so the OS can reload it); the enclave initialized (#GP); the
    TCS not busy (#GP); CSSA < NSSA (#GP). Then TCS.STATE := busy, the program for the
    enclave's MRENCLAVE runs ``ecall(ctx, function, data)``, and EEXIT (return or
    :meth:`EnclaveContext.eexit`) hands its bytes back and frees the TCS.

    Raises:
        UsageError: no program is registered for the enclave's MRENCLAVE.
    """
    if tcs & (PAGE - 1):
        raise GeneralProtection("EENTER TCS is not 4 KiB aligned")
    if not proc.in_epc(tcs):
        raise PageFault("EENTER TCS is not in the EPC", address=tcs)
    i = (tcs - proc.epc_base) >> 12
    if not proc._valid[i] or proc._ptype[i] != PageType.TCS or proc._blocked[i]:
        raise PageFault("EENTER TCS is not a valid TCS page", address=tcs)
    enclave = proc._owner[i]
    assert enclave is not None
    if not enclave.initialized:
        raise GeneralProtection("EENTER into an uninitialized enclave")
    base = i * PAGE
    (state,) = _STATE.unpack_from(proc._epc, base)
    cssa, nssa = _CSSA_NSSA.unpack_from(proc._epc, base + 24)
    if state:
        raise GeneralProtection("EENTER on a busy TCS")
    if cssa >= nssa:
        raise GeneralProtection("EENTER with CSSA ≥ NSSA")
    if enclave.program is None:
        factory = proc._programs.get(enclave.mrenclave)
        if factory is None:
            raise UsageError(
                f"no EnclaveProgram registered for MRENCLAVE {enclave.mrenclave.hex()}"
            )
        enclave.program = factory()
    program = enclave.program
    ctx = EnclaveContext(proc, enclave)
    _STATE.pack_into(proc._epc, base, 1)
    enclave.threads += 1
    try:
        result = program.ecall(ctx, function, bytes(data))
    except _EnclaveExit as leave:
        result = leave.data
    finally:
        ctx._active = False
        enclave.threads -= 1
        if enclave.tracking_threads:
            enclave.tracking_threads -= 1
        if proc._valid[i] and proc._owner[i] is enclave:
            _STATE.pack_into(proc._epc, base, 0)
    return bytes(result)


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImagePage:
    """One page of an enclave image.

    Attributes:
        offset: enclave offset (page-aligned).
        secinfo_flags: SECINFO.FLAGS as EADD measures them.
        data: 4096 bytes.
        measured: 16-bit mask of the 256-byte chunks that are EEXTENDed.
    """

    offset: int
    secinfo_flags: int
    data: bytes
    measured: int = 0xFFFF


@dataclass(frozen=True, slots=True)
class EnclaveImage:
    """An enclave image as the loader needs it: ECREATE values and the pages in EADD order."""

    size: int
    ssaframesize: int
    pages: tuple[ImagePage, ...]
    tcs_offsets: tuple[int, ...] = ()

    def mrenclave(self) -> bytes:
        """MRENCLAVE of the image (what the processor measures when it is loaded)."""
        return hashlib.sha256(self.sgxs()).digest()

    def sgxs(self) -> bytes:
        """The image as an SGXS measurement stream (SHA-256 of it = :meth:`mrenclave`)."""
        out = bytearray(ecreate_block(self.ssaframesize, self.size))
        for page in self.pages:
            out += eadd_block(page.offset, page.secinfo_flags)
            for k in range(16):
                if page.measured >> k & 1:
                    out += eextend_header(page.offset + 256 * k)
                    out += page.data[256 * k : 256 * k + 256]
        return bytes(out)


class _ProgramSpec:
    """Layout constants of :func:`program_image`."""

    TCS_OFFSET: ClassVar[int] = 0x0000
    CODE_OFFSET: ClassVar[int] = 0x1000
    SSA_OFFSET: ClassVar[int] = 0x2000


def program_code_page(program: type[EnclaveProgram]) -> bytes:
    """The measured code page: magic (32) ‖ SHA-256(source) (32) ‖ name length (u16) ‖ name."""
    name = f"{program.__module__}.{program.__qualname__}".encode()[:4000]
    page = PROGRAM_PAGE_MAGIC + program.source_hash() + struct.pack("<H", len(name)) + name
    return page.ljust(PAGE, b"\x00")


def program_image(
    program: type[EnclaveProgram],
    *,
    data_pages: int = 1,
    ssaframesize: int = 1,
    nssa: int = 1,
) -> EnclaveImage:
    """Build the image of ``program`` deterministically.

    Layout (offsets in the enclave; every page fully measured):

    * 0x0000 TCS (OSSA = 0x2000, NSSA = ``nssa``, OENTRY = 0x1000);
    * 0x1000 code page, R-X: :func:`program_code_page` (binds SHA-256 of the source);
    * 0x2000 SSA frames, RW-: ``nssa * ssaframesize`` zero pages;
    * then ``data_pages`` zero RW- pages.

    SIZE is the smallest power of two (≥ 8192) covering the pages.
    """
    if data_pages < 0 or ssaframesize < 1 or nssa < 1:
        raise UsageError("program_image needs data_pages ≥ 0, ssaframesize ≥ 1, nssa ≥ 1")
    tcs = Tcs(ossa=_ProgramSpec.SSA_OFFSET, nssa=nssa, oentry=_ProgramSpec.CODE_OFFSET)
    pages = [
        ImagePage(_ProgramSpec.TCS_OFFSET, secinfo_flags(PageType.TCS), tcs.to_bytes()),
        ImagePage(
            _ProgramSpec.CODE_OFFSET,
            secinfo_flags(PageType.REG, SecinfoFlag.R | SecinfoFlag.X),
            program_code_page(program),
        ),
    ]
    offset = _ProgramSpec.SSA_OFFSET
    zero = bytes(PAGE)
    rw = secinfo_flags(PageType.REG, SecinfoFlag.R | SecinfoFlag.W)
    for _ in range(nssa * ssaframesize + data_pages):
        pages.append(ImagePage(offset, rw, zero))
        offset += PAGE
    size = 8192
    while size < offset:
        size *= 2
    return EnclaveImage(
        size=size,
        ssaframesize=ssaframesize,
        pages=tuple(pages),
        tcs_offsets=(_ProgramSpec.TCS_OFFSET,),
    )


__all__ = [
    "PROGRAM_PAGE_MAGIC",
    "EnclaveContext",
    "EnclaveImage",
    "EnclaveProgram",
    "ImagePage",
    "eenter",
    "program_code_page",
    "program_image",
]
