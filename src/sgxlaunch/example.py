"""The example enclave shipped with sgxlaunch: a small real SGXS image whose code answers an ECALL.

:class:`HelloEnclave` is an :class:`~sgxlaunch.cpu.EnclaveProgram`; :func:`example_image` is
its image (``program_image``: TCS, the measured code page binding SHA-256 of the program's
source, SSA and one data page), written as SGXS by ``sgxlaunch example -o enclave.sgxs``.

Running an image needs its program registered for its MRENCLAVE. :func:`shipped_program`
finds the program an image was built for among the programs shipped here: it reads the
image's measured code page (magic ‖ SHA-256 of the source ‖ name) and returns the shipped
class of that name only if the hash matches its source, so the code that runs is the code
MRENCLAVE measured.
"""

from __future__ import annotations

import struct

from sgxlaunch.arch.structs import TargetInfo
from sgxlaunch.cpu.enclave import EnclaveContext, EnclaveProgram
from sgxlaunch.cpu.image import PROGRAM_PAGE_MAGIC, program_image
from sgxlaunch.errors import UsageError
from sgxlaunch.formats.sgxs import SgxsImage

ECALL_HELLO = 0
"""The example's first ECALL: input = a name (UTF-8), output = a greeting from inside."""
ECALL_REPORT = 1
"""The example's second ECALL: input = TARGETINFO (512) ‖ REPORTDATA (64), output = the REPORT
(432 bytes) EREPORT makes for that target — what a quoting enclave turns into a quote."""


class HelloEnclave(EnclaveProgram):
    """Answers ECALL 0 with a greeting that names the enclave it runs in, and ECALL 1 with a
    REPORT for a target enclave (TARGETINFO ‖ REPORTDATA in, the 432-byte REPORT out).

    The enclave learns its own MRENCLAVE and ISVSVN the way enclave code does: ENCLU[EREPORT]
    about itself (a REPORT targeted at nobody in particular, whose body carries its identity).
    """

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        if function == ECALL_REPORT:
            if len(data) != 512 + 64:
                return b"ECALL 1 takes TARGETINFO (512 bytes) and REPORTDATA (64 bytes)"
            return ctx.ereport(TargetInfo.from_bytes_raw(data[:512]), data[512:]).to_bytes()
        if function != ECALL_HELLO:
            return f"unknown ECALL {function}; this enclave answers ECALLs 0 and 1".encode()
        report = ctx.ereport(TargetInfo(), bytes(64))
        name = data.decode("utf-8", errors="replace") or "world"
        return (
            f"hello, {name}, from inside enclave {report.mrenclave.hex()[:16]}… "
            f"(isvprodid {report.isvprodid}, isvsvn {report.isvsvn})"
        ).encode()


def _shipped() -> tuple[type[EnclaveProgram], ...]:
    from sgxlaunch.example_loader import CodeLoader

    return (HelloEnclave, CodeLoader)


SHIPPED_PROGRAMS: tuple[type[EnclaveProgram], ...] = _shipped()
"""Programs an image may name and have run: the ones that ship with the package (the example
enclave, and the example loader of attested-code grants, :mod:`sgxlaunch.example_loader`)."""


def example_image() -> bytes:
    """The example enclave as an SGXS stream (deterministic; SHA-256 of it is its MRENCLAVE)."""
    return program_image(HelloEnclave).sgxs()


def _program_name(program: type[EnclaveProgram]) -> str:
    return f"{program.__module__}.{program.__qualname__}"


def shipped_program(image: SgxsImage) -> type[EnclaveProgram] | None:
    """The shipped program ``image`` was built for, or ``None`` if it names none.

    Raises:
        UsageError: the image names a shipped program but measures other source code (an
            image made by another version of sgxlaunch).
    """
    for page in image.pages:
        if page.measured != 0xFFFF or not page.data.startswith(PROGRAM_PAGE_MAGIC):
            continue
        at = len(PROGRAM_PAGE_MAGIC)
        source_hash = page.data[at : at + 32]
        (length,) = struct.unpack_from("<H", page.data, at + 32)
        name = page.data[at + 34 : at + 34 + length].decode("utf-8", errors="replace")
        for program in SHIPPED_PROGRAMS:
            if _program_name(program) != name:
                continue
            if program.source_hash() != source_hash:
                raise UsageError(
                    f"the image runs {name}, but from other source code than this sgxlaunch "
                    "ships (made by another version?); rebuild it with `sgxlaunch example`"
                )
            return program
        return None
    return None


__all__ = [
    "ECALL_HELLO",
    "ECALL_REPORT",
    "SHIPPED_PROGRAMS",
    "HelloEnclave",
    "example_image",
    "shipped_program",
]
