"""Shared builders for the processor tests: real signing keys, programs, a launch enclave."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from sgxlaunch.arch import Attributes, EinitToken, KeyRequest, SgxStatus, Sigstruct
from sgxlaunch.arch.constants import AttributeFlag, KeyName
from sgxlaunch.cpu import (
    CpuConfig,
    EnclaveContext,
    EnclaveImage,
    EnclaveLeafFailed,
    EnclaveProgram,
    Processor,
    ProcessorEnclave,
    build_enclave,
    einit,
    load_enclave,
    program_image,
    secs_for,
)
from sgxlaunch.cpu.keys import cmac128
from sgxlaunch.sigstruct import sign
from tests.support.keys import mrsigner, signer

MIB = 1024 * 1024
ALL64 = 2**64 - 1
ALL32 = 2**32 - 1
PROD = int(AttributeFlag.MODE64BIT)
DEBUG = int(AttributeFlag.MODE64BIT | AttributeFlag.DEBUG)
LE_FLAGS = int(AttributeFlag.MODE64BIT | AttributeFlag.EINITTOKEN_KEY)


def cpu(
    seed: bytes = b"cpu-A-seed-0123456789", *, native: bool | None = None, **config: object
) -> Processor:
    """A processor with a 1 MiB EPC (unless told otherwise) and a deterministic RNG.

    ``SGXLAUNCH_PURE_PYTHON=1`` in the environment (``make test``'s second run) selects the
    pure-Python paging leaves unless ``native`` says otherwise: the tests are an edge, so they
    read the environment and hand the processor a flag.
    """
    config.setdefault("epc_size", 1 * MIB)
    if native is None and os.environ.get("SGXLAUNCH_PURE_PYTHON", "") == "1":
        native = False
    counter = iter(range(1 << 30))

    def random(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += struct.pack("<Q", next(counter)) + seed[:8].ljust(8, b"\0")
        return out[:n]

    return Processor(CpuConfig(**config), seed, random=random, native=native)  # type: ignore[arg-type]


def sign_image(
    image: EnclaveImage,
    role: str,
    *,
    flags: int = PROD,
    xfrm: int = 0x3,
    flagsmask: int = ALL64 & ~int(AttributeFlag.DEBUG),
    xfrmmask: int = ALL64,
    miscselect: int = 0,
    miscmask: int = ALL32,
    isvprodid: int = 0,
    isvsvn: int = 0,
    enclavehash: bytes | None = None,
    **extra: object,
) -> Sigstruct:
    body = Sigstruct(
        attributes=Attributes(flags=flags, xfrm=xfrm),
        attributemask=Attributes(flags=flagsmask, xfrm=xfrmmask),
        miscselect=miscselect,
        miscmask=miscmask,
        isvprodid=isvprodid,
        isvsvn=isvsvn,
        enclavehash=image.mrenclave() if enclavehash is None else enclavehash,
        **extra,  # type: ignore[arg-type]
    )
    return sign(body, signer(role))


# ----------------------------------------------------------------------------------------------
# Programs
# ----------------------------------------------------------------------------------------------


class TokenMinter(EnclaveProgram):
    """A minimal launch enclave: mints an EINITTOKEN for (MRENCLAVE, MRSIGNER, ATTRIBUTES).

    Input: MRENCLAVE (32) ‖ MRSIGNER (32) ‖ ATTRIBUTES (16). Output: the 304-byte token.
    Follows Intel's LE (spec §4.7): EREPORT on itself, random KEYID, EGETKEY(EINITTOKEN_KEY)
    with ATTRIBUTEMASK = ~MODE64BIT / XFRM 0 and MISCMASK all ones, CMAC over bytes 0..191.
    """

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        me = ctx.ereport(bytes(512))
        keyid = ctx.rdrand(32)
        mask = Attributes(flags=ALL64 & ~int(AttributeFlag.MODE64BIT), xfrm=0)
        token = EinitToken(
            valid=1,
            attributes=Attributes.from_bytes(data[64:80]),
            mrenclave=data[0:32],
            mrsigner=data[32:64],
            cpusvnle=me.cpusvn,
            isvprodidle=me.isvprodid,
            isvsvnle=me.isvsvn,
            maskedmiscselectle=me.miscselect & ALL32,
            maskedattributesle=me.attributes & mask,
            keyid=keyid,
        )
        key = ctx.egetkey(
            KeyRequest(
                keyname=KeyName.EINITTOKEN,
                keyid=keyid,
                cpusvn=me.cpusvn,
                isvsvn=me.isvsvn,
                attributemask=mask,
                miscmask=ALL32,
            )
        )
        return token.replace(mac=cmac128(key, token.maced_bytes())).to_bytes()


class KeyProbe(EnclaveProgram):
    """function 0: EGETKEY(KEYREQUEST bytes) → status (u16) ‖ key; 1: EREPORT(target) bytes;
    2: verify a REPORT targeted at this enclave → b"\\x01" / b"\\x00"."""

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        if function == 0:
            try:
                return b"\x00\x00" + ctx.egetkey(data)
            except EnclaveLeafFailed as failed:
                return struct.pack("<H", failed.status)
        if function == 1:
            return ctx.ereport(data[:512], data[512:576]).to_bytes()
        return b"\x01" if ctx.verify_report(data) else b"\x00"


class KeyProbeTwin(KeyProbe):
    """Same behaviour as KeyProbe, different source → different MRENCLAVE."""

    TWIN = True


class MemoryProgram(EnclaveProgram):
    """function 0: write data at offset (u64 ‖ bytes); 1: read (u64 offset ‖ u64 length);
    2: keep the context for later (to show it dies with the ECALL); 3: EEXIT from deep inside."""

    def __init__(self) -> None:
        self.saved: EnclaveContext | None = None

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        if function == 0:
            (offset,) = struct.unpack_from("<Q", data)
            ctx.write(ctx.base_address + offset, data[8:])
            return b""
        if function == 1:
            offset, length = struct.unpack_from("<QQ", data)
            return ctx.read(ctx.base_address + offset, length)
        if function == 2:
            self.saved = ctx
            return b""
        ctx.eexit(b"left early")
        return b"not reached"


# ----------------------------------------------------------------------------------------------
# Enclaves
# ----------------------------------------------------------------------------------------------


@dataclass
class Launched:
    enclave: ProcessorEnclave
    image: EnclaveImage
    sigstruct: Sigstruct

    def call(self, function: int = 0, data: bytes = b"") -> bytes:
        return self.enclave.enter(function, data)


def launch(
    proc: Processor,
    program: type[EnclaveProgram],
    role: str,
    *,
    token: EinitToken | bytes | None = None,
    set_msr: bool = True,
    data_pages: int = 1,
    **sign_args: object,
) -> Launched:
    """Build, sign, register and EINIT ``program``; MSRs set to its signer unless told not."""
    image = program_image(program, data_pages=data_pages)
    sig = sign_image(image, role, **sign_args)  # type: ignore[arg-type]
    proc.register_program(image.mrenclave(), program)
    if set_msr:
        proc.set_lepubkeyhash(mrsigner(role))
    loaded = load_enclave(proc, image, sig, token=token)
    assert loaded.status == SgxStatus.SUCCESS, loaded.status
    return Launched(loaded, image, sig)


def launch_le(proc: Processor, role: str = "le", **sign_args: object) -> Launched:
    sign_args.setdefault("flags", LE_FLAGS)
    return launch(proc, TokenMinter, role, **sign_args)  # type: ignore[arg-type]


def mint(le: Launched, mrenclave: bytes, mrsigner_: bytes, attributes: Attributes) -> EinitToken:
    return EinitToken.from_bytes(le.call(0, mrenclave + mrsigner_ + attributes.to_bytes()))


@dataclass
class Pending:
    """An enclave built (ECREATE/EADD/EEXTEND) and waiting for EINIT."""

    proc: Processor
    enclave: ProcessorEnclave
    image: EnclaveImage
    sigstruct: Sigstruct

    def einit(self, sigstruct: Sigstruct | bytes | None = None, token: object = None) -> SgxStatus:
        sig = self.sigstruct if sigstruct is None else sigstruct
        return einit(self.proc, self.enclave.secs, sig, token)  # type: ignore[arg-type]

    @property
    def attributes(self) -> Attributes:
        info = self.proc.secs_info(self.enclave.secs)
        return Attributes(flags=info["attributes_flags"], xfrm=info["attributes_xfrm"])


def pending(
    proc: Processor,
    role: str = "app",
    program: type[EnclaveProgram] = KeyProbe,
    *,
    secs_flags: int | None = None,
    secs_xfrm: int | None = None,
    secs_miscselect: int | None = None,
    **sign_args: object,
) -> Pending:
    """A built, unininitialized enclave of ``program`` and its SIGSTRUCT (signed by ``role``).

    The SECS follows the SIGSTRUCT unless ``secs_*`` override a value.
    """
    image = program_image(program)
    sig = sign_image(image, role, **sign_args)  # type: ignore[arg-type]
    secs = secs_for(sig, size=image.size, ssaframesize=image.ssaframesize)
    changes: dict[str, object] = {}
    if secs_flags is not None or secs_xfrm is not None:
        changes["attributes"] = Attributes(
            flags=secs.attributes.flags if secs_flags is None else secs_flags,
            xfrm=secs.attributes.xfrm if secs_xfrm is None else secs_xfrm,
        )
    if secs_miscselect is not None:
        changes["miscselect"] = secs_miscselect
    if changes:
        secs = secs.replace(**changes)
    proc.register_program(image.mrenclave(), program)
    return Pending(proc, build_enclave(proc, image, secs), image, sig)


# ----------------------------------------------------------------------------------------------
# Paging: a small reclaimer, the way the driver's ksgxd uses the leaves
# ----------------------------------------------------------------------------------------------


@dataclass
class Evicted:
    contents: int
    pcmd: int
    slot: int


class Pager:
    """EBLOCK → ETRACK → EWB to ordinary memory; ELDU back, demand-paged through
    :attr:`Processor.page_fault_handler`."""

    def __init__(self, proc: Processor) -> None:
        self.proc = proc
        self.slots: list[int] = []
        self.resident: dict[tuple[int, int], int] = {}  # (secs, linaddr) -> EPC page, FIFO
        self.evicted: dict[tuple[int, int], Evicted] = {}
        self.pageinfo = proc.allocate(64, align=64)
        self.faults = 0
        proc.page_fault_handler = self.on_fault

    def add_va_page(self) -> int:
        page = self.proc.free_epc_pages(1)[0]
        assert self.proc.epa(page) == SgxStatus.SUCCESS
        self.slots += [page + 8 * k for k in range(512)]
        return page

    def track(self, enclave: ProcessorEnclave) -> None:
        for linaddr, epc in enclave.pages.items():
            self.resident[(enclave.secs, linaddr)] = epc

    def evict(self, key: tuple[int, int]) -> SgxStatus:
        proc = self.proc
        epc = self.resident[key]
        assert proc.eblock(epc) in (SgxStatus.SUCCESS, SgxStatus.BLKSTATE)
        status = proc.etrack(key[0])
        assert status in (SgxStatus.SUCCESS, SgxStatus.PREV_TRK_INCMPL)
        if not self.slots:
            self.add_va_page()
        record = Evicted(proc.allocate(4096), proc.allocate(128, align=128), self.slots.pop())
        proc.write(self.pageinfo, struct.pack("<QQQQ", 0, record.contents, record.pcmd, 0))
        status = proc.ewb(self.pageinfo, epc, record.slot)
        if status != SgxStatus.SUCCESS:
            self.slots.append(record.slot)
            return status
        del self.resident[key]
        self.evicted[key] = record
        return status

    def load(self, key: tuple[int, int], *, blocked: bool = False) -> SgxStatus:
        proc = self.proc
        free = proc.state.valid.count(0)
        if free == 0:
            self.make_room(avoid=key[0])
        epc = proc.free_epc_pages(1)[0]
        record = self.evicted[key]
        proc.write(
            self.pageinfo, struct.pack("<QQQQ", key[1], record.contents, record.pcmd, key[0])
        )
        leaf = proc.eldb if blocked else proc.eldu
        status = leaf(self.pageinfo, epc, record.slot)
        if status == SgxStatus.SUCCESS:
            del self.evicted[key]
            self.slots.append(record.slot)
            self.resident[key] = epc
        return status

    def make_room(self, *, avoid: int) -> None:
        """Evict the oldest resident page not of the enclave ``avoid`` (it may be running)."""
        for key in list(self.resident):
            if key[0] != avoid and self.evict(key) == SgxStatus.SUCCESS:
                return
        raise AssertionError("no page could be evicted")

    def on_fault(self, secs: int, linaddr: int) -> bool:
        key = (secs, linaddr & ~0xFFF)
        if key not in self.evicted:
            return False
        self.faults += 1
        return self.load(key) == SgxStatus.SUCCESS
