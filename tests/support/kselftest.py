"""The kernel SGX selftests' enclave and harness, rebuilt over the emulator.

``tools/testing/selftests/sgx/``: ``test_encl.c`` is a tiny enclave whose ECALL takes an
operation (put/get a value in its buffer or at an address, EACCEPT, EMODPE, fill a TCS page,
nothing); ``main.c`` loads it (two TCS pages at offsets 0 and 0x1000, code, data holding the
buffer, a heap), maps each segment with its protection, and calls it through
``__vdso_sgx_enter_enclave``, checking ``struct sgx_enclave_run`` after each call. Here the
enclave is :class:`SelftestEnclave`, an :class:`~sgxlaunch.cpu.EnclaveProgram` with the same
operations, and :class:`Selftest` is the fixture: the same layout, the same mappings, the
vDSO model of :mod:`sgxlaunch.driver.vdso`, and ioctl calls with their structs in user memory.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sgxlaunch.arch.constants import PAGE_SIZE, PageType, SecinfoFlag, secinfo_flags
from sgxlaunch.arch.structs import Tcs
from sgxlaunch.cpu import EnclaveContext, EnclaveImage, EnclaveProgram, ImagePage
from sgxlaunch.cpu.image import program_code_page
from sgxlaunch.driver import DriverError, LoadedEnclave, SgxDriver, load, uapi
from sgxlaunch.driver.vdso import EnclaveRun
from tests.support.cpu import sign_image
from tests.support.driver import platform


def sgx2_platform(*, epc_mib: int = 1) -> SgxDriver:
    """A driver platform on a part with SGX2 (CPUID.(12H,0):EAX[1])."""
    return platform(epc_mib=epc_mib, sgx2=True)


MAGIC = 0x1122334455667788
MAGIC2 = 0x8877665544332211

# test_encl.c's operations (enum encl_op_type)
ENCL_OP_PUT_TO_BUFFER = 0
ENCL_OP_GET_FROM_BUFFER = 1
ENCL_OP_PUT_TO_ADDRESS = 2
ENCL_OP_GET_FROM_ADDRESS = 3
ENCL_OP_NOP = 4
ENCL_OP_EACCEPT = 5
ENCL_OP_EMODPE = 6
ENCL_OP_INIT_TCS_PAGE = 7

# main.c's SECINFO flags
SGX_SECINFO_R = int(SecinfoFlag.R)
SGX_SECINFO_W = int(SecinfoFlag.W)
SGX_SECINFO_X = int(SecinfoFlag.X)
SGX_SECINFO_PENDING = int(SecinfoFlag.PENDING)
SGX_SECINFO_MODIFIED = int(SecinfoFlag.MODIFIED)
SGX_SECINFO_PR = int(SecinfoFlag.PR)
SGX_SECINFO_TCS = int(PageType.TCS) << 8
SGX_SECINFO_REG = int(PageType.REG) << 8
SGX_SECINFO_TRIM = int(PageType.TRIM) << 8

# The layout (offsets in the enclave), as test_encl.lds orders it.
TCS1 = 0x0000
TCS2 = 0x1000
CODE = 0x2000
DATA = 0x3000  # encl_buffer: two pages, then a scratch page, then the two SSA frames
BUFFER = DATA
SCRATCH = DATA + 2 * PAGE_SIZE
SSA1 = DATA + 3 * PAGE_SIZE
SSA2 = DATA + 4 * PAGE_SIZE
HEAP = DATA + 5 * PAGE_SIZE
ENCL_HEAP_SIZE_DEFAULT = PAGE_SIZE


class SelftestEnclave(EnclaveProgram):
    """test_encl.c: the ECALL's data is ``u64 op`` followed by the op's fields (u64 each);
    the output is the op struct's "out" fields (``value`` for the gets, ``ret`` for EACCEPT).

    SECINFOs for EACCEPT and EMODPE are built in the enclave's scratch page (64-byte
    aligned), as test_encl.c builds them on its stack.
    """

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        del function
        (op,) = struct.unpack_from("<Q", data)
        args = struct.unpack_from(f"<{(len(data) - 8) // 8}Q", data, 8)
        base = ctx.base_address
        if op == ENCL_OP_PUT_TO_BUFFER:
            ctx.write(base + BUFFER, struct.pack("<Q", args[0]))
            return b""
        if op == ENCL_OP_GET_FROM_BUFFER:
            return ctx.read(base + BUFFER, 8)
        if op == ENCL_OP_PUT_TO_ADDRESS:
            ctx.write(args[0], struct.pack("<Q", args[1]))
            return b""
        if op == ENCL_OP_GET_FROM_ADDRESS:
            return ctx.read(args[0], 8)
        if op == ENCL_OP_NOP:
            return b""
        if op in (ENCL_OP_EACCEPT, ENCL_OP_EMODPE):
            epc_addr, flags = args[0], args[1]
            secinfo = base + SCRATCH
            ctx.write(secinfo, struct.pack("<Q", flags).ljust(64, b"\0"))
            if op == ENCL_OP_EMODPE:
                ctx.emodpe(secinfo, epc_addr)
                return b""
            return struct.pack("<Q", int(ctx.eaccept(secinfo, epc_addr)))
        if op == ENCL_OP_INIT_TCS_PAGE:
            tcs_page, ssa, entry = args[0], args[1], args[2]
            tcs = Tcs(ossa=ssa, nssa=1, oentry=entry, fslimit=0xFFFFFFFF, gslimit=0xFFFFFFFF)
            ctx.write(tcs_page, tcs.to_bytes())
            return b""
        raise AssertionError(f"unknown op {op}")


def selftest_image(
    heap_size: int = ENCL_HEAP_SIZE_DEFAULT,
    size: int = 0x10000,
    program: type[EnclaveProgram] | None = None,
) -> EnclaveImage:
    """The test enclave: TCS1, TCS2, code (R-X, binds the program — :class:`SelftestEnclave`
    unless ``program`` is given), data (RW-: buffer, scratch, SSA frames), heap (RW-,
    unmeasured); SIZE the smallest power of two with room after it."""
    rw = secinfo_flags(PageType.REG, SecinfoFlag.R | SecinfoFlag.W)
    pages = [
        ImagePage(
            TCS1, secinfo_flags(PageType.TCS), Tcs(ossa=SSA1, nssa=1, oentry=CODE).to_bytes()
        ),
        ImagePage(
            TCS2, secinfo_flags(PageType.TCS), Tcs(ossa=SSA2, nssa=1, oentry=CODE).to_bytes()
        ),
        ImagePage(
            CODE,
            secinfo_flags(PageType.REG, SecinfoFlag.R | SecinfoFlag.X),
            program_code_page(program or SelftestEnclave),
        ),
    ]
    zero = bytes(PAGE_SIZE)
    pages += [ImagePage(offset, rw, zero) for offset in range(DATA, HEAP, PAGE_SIZE)]
    pages += [ImagePage(HEAP + k, rw, zero, 0) for k in range(0, heap_size, PAGE_SIZE)]
    end = HEAP + heap_size
    while size < end + 4 * PAGE_SIZE:
        size *= 2
    return EnclaveImage(size=size, ssaframesize=1, pages=tuple(pages), tcs_offsets=(TCS1, TCS2))


@dataclass(frozen=True, slots=True)
class Segment:
    offset: int
    size: int
    prot: int


class Selftest:
    """main.c's fixture: the loaded enclave, ``run``, ``ENCL_CALL`` and the ioctls."""

    def __init__(
        self,
        driver: SgxDriver,
        heap_size: int = ENCL_HEAP_SIZE_DEFAULT,
        size: int = 0x10000,
        *,
        program: type[SelftestEnclave] = SelftestEnclave,
        premap: int | None = None,
        loaded: LoadedEnclave | None = None,
    ) -> None:
        """Load the enclave (``loaded``: one already loaded from :func:`selftest_image` with
        the same ``heap_size``, e.g. through a Platform)."""
        self.driver = driver
        if loaded is None:
            image = selftest_image(heap_size, size, program)
            sig = sign_image(image, "app")
            driver.cpu.register_program(sig.enclavehash, program)
            loaded = load(driver.new_process(), image, sig, premap=premap)
        self.encl: LoadedEnclave = loaded
        self.process = self.encl.process
        self.fd = self.encl.fd
        self.encl_base = self.encl.baseaddr
        self.encl_size = self.encl.size
        rw, rx = uapi.PROT_READ | uapi.PROT_WRITE, uapi.PROT_READ | uapi.PROT_EXEC
        self.segments = [
            Segment(TCS1, 2 * PAGE_SIZE, rw),
            Segment(CODE, PAGE_SIZE, rx),
            Segment(DATA, HEAP - DATA, rw),
            Segment(HEAP, heap_size, rw),
        ]
        self.run = EnclaveRun(tcs=self.encl_base)
        self.arg = self.process.alloc(PAGE_SIZE)

    @property
    def heap(self) -> Segment:
        return self.segments[-1]

    def total_size(self) -> int:
        return sum(seg.size for seg in self.segments)

    def data_start(self) -> int:
        """main.c: encl_base + encl_get_data_offset() + PAGE_SIZE."""
        return self.encl_base + DATA + PAGE_SIZE

    # -- ENCL_CALL and ERESUME ---------------------------------------------------------------

    def call(self, op: int, *fields: int) -> bytes:
        """ENCL_CALL(&op, &run, true): EENTER on ``run.tcs``; returns the op's out fields."""
        data = struct.pack(f"<{1 + len(fields)}Q", op, *fields)
        assert self.process.vdso_sgx_enter_enclave(uapi.EENTER, self.run, data) == 0
        return self.run.output

    def eresume(self) -> bytes:
        assert self.process.vdso_sgx_enter_enclave(uapi.ERESUME, self.run) == 0
        return self.run.output

    def value(self, out: bytes) -> int:
        return int(struct.unpack("<Q", out)[0]) if out else 0

    def eaccept(self, addr: int, flags: int) -> int:
        """ENCL_OP_EACCEPT: ``eaccept_op.ret`` (the EACCEPT status)."""
        return self.value(self.call(ENCL_OP_EACCEPT, addr, flags))

    def expect_eexit(self) -> None:
        """EXPECT_EEXIT plus the zeroed exception fields the selftests check after it."""
        run = self.run
        assert run.function == uapi.EEXIT
        assert (run.exception_vector, run.exception_error_code, run.exception_addr) == (0, 0, 0)

    def expect_exception(self, error_code: int, addr: int) -> None:
        run = self.run
        assert run.function == uapi.ERESUME
        assert run.exception_vector == 14
        assert run.exception_error_code == error_code
        assert run.exception_addr == addr

    # -- ioctls, their structs in user memory ---------------------------------------------------

    def ioctl(self, cmd: int, layout: struct.Struct, *fields: int) -> tuple[int, tuple[int, ...]]:
        """ioctl(fd, cmd, &struct): (errno or 0, the struct after the call)."""
        self.process.write(self.arg, layout.pack(*fields))
        try:
            ret = self.process.ioctl(self.fd, cmd, self.arg)
            assert ret == 0
            err = 0
        except DriverError as exc:
            err = exc.errno
        return err, layout.unpack(self.process.read(self.arg, layout.size))

    def restrict_permissions(self, offset: int, length: int, permissions: int) -> tuple[int, ...]:
        """(errno, result, count) of SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS."""
        err, out = self.ioctl(
            uapi.SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS,
            uapi.RESTRICT_PERMISSIONS_ARG,
            offset,
            length,
            permissions,
            0,
            0,
        )
        return err, out[3], out[4]

    def modify_types(self, offset: int, length: int, page_type: int) -> tuple[int, ...]:
        """(errno, result, count) of SGX_IOC_ENCLAVE_MODIFY_TYPES."""
        err, out = self.ioctl(
            uapi.SGX_IOC_ENCLAVE_MODIFY_TYPES,
            uapi.MODIFY_TYPES_ARG,
            offset,
            length,
            page_type,
            0,
            0,
        )
        return err, out[3], out[4]

    def remove_pages(self, offset: int, length: int) -> tuple[int, int]:
        """(errno, count) of SGX_IOC_ENCLAVE_REMOVE_PAGES."""
        err, out = self.ioctl(
            uapi.SGX_IOC_ENCLAVE_REMOVE_PAGES, uapi.REMOVE_PAGES_ARG, offset, length, 0
        )
        return err, out[2]

    def close(self) -> None:
        for seg in self.segments:
            self.process.munmap(self.encl_base + seg.offset, seg.size)
        self.process.munmap(self.encl_base, self.encl_size)
        self.process.close(self.fd)
