"""Modelled processor faults and leaf failures of the emulated SGX processor.

Hardware reports most ENCLS/ENCLU failures with a status code in RAX; the leaves of
:class:`~sgxlaunch.cpu.Processor` return those codes as :class:`~sgxlaunch.arch.SgxStatus`.
Where the SDM raises an exception instead (``#GP(0)``, ``#PF``), the emulator raises one of the
classes below, at the same point of the leaf's algorithm.
"""

from __future__ import annotations

from sgxlaunch.arch.constants import SgxStatus
from sgxlaunch.errors import SgxlaunchError


class CpuFault(SgxlaunchError):
    """A processor exception raised by a leaf (the SDM's ``#GP`` / ``#PF`` columns)."""

    exit_code = 1
    vector = "fault"


class GeneralProtection(CpuFault):
    """``#GP(0)``: misaligned operand, reserved bits set, wrong state, locked MSR..."""

    vector = "#GP"


class PageFault(CpuFault):
    """``#PF``: a page is not present, not in the EPC, or its EPCM entry does not allow access.

    Attributes:
        address: the faulting address (physical for ENCLS operands, enclave-linear inside an
            enclave).
    """

    vector = "#PF"

    def __init__(self, message: str, *, address: int) -> None:
        super().__init__(f"{message} (address 0x{address:x})")
        self.address = address


class EnclaveLeafFailed(SgxlaunchError):
    """An ENCLU leaf called by a running program (EGETKEY...) returned an error status.

    Attributes:
        status: the :class:`SgxStatus` the leaf put in RAX.
    """

    exit_code = 1

    def __init__(self, status: SgxStatus, message: str = "") -> None:
        super().__init__(f"{status.name}" + (f": {message}" if message else ""))
        self.status = status


__all__ = ["CpuFault", "EnclaveLeafFailed", "GeneralProtection", "PageFault"]
