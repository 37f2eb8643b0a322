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
        error_code: the x86 #PF error code of an enclave-mode fault — P (1, the page was
            present), W (2, a write), U (4, user mode: always set in enclave mode), I (0x10, an
            instruction fetch) and SGX (0x8000, the EPCM refused an access the page tables
            allowed; spec §3.8, kernel ``X86_PF_SGX``); 0 for ENCLS operand faults.
        delivered: True when the fault already went to the OS, which did not resolve it
            (an ENCLU leaf that delivers its translation faults itself,
            :meth:`sgxlaunch.cpu.edmm.EdmmEnclu.eaccept_step`): nobody delivers it again.
    """

    vector = "#PF"
    delivered = False

    def __init__(self, message: str, *, address: int, error_code: int = 0) -> None:
        # A #PF is the emulator's control flow (a fault the OS resolves, then the leaf runs
        # again), raised once per page added on a fault: the text is formatted when read.
        # (``args`` holds the reason, as BaseException.__new__ stored it.)
        self._what = message
        self._message: str | None = None
        self.detail = ()
        self.address = address
        self.error_code = error_code

    @property
    def message(self) -> str:
        """The reason, with the address and (for an enclave-mode fault) the error code."""
        if self._message is None:
            code = f", error code 0x{self.error_code:x}" if self.error_code else ""
            self._message = f"{self._what} (address 0x{self.address:x}{code})"
        return self._message

    @message.setter
    def message(self, value: str) -> None:
        self._message = value


class InvalidOpcode(CpuFault):
    """``#UD``: the bytes fetched by :meth:`EnclaveContext.execute` are not code the emulator
    can run (no program page magic)."""

    vector = "#UD"


class EnclaveLeafFailed(SgxlaunchError):
    """An ENCLU leaf called by a running program (EGETKEY...) returned an error status.

    Attributes:
        status: the :class:`SgxStatus` the leaf put in RAX.
    """

    exit_code = 1

    def __init__(self, status: SgxStatus, message: str = "") -> None:
        super().__init__(f"{status.name}" + (f": {message}" if message else ""))
        self.status = status


__all__ = ["CpuFault", "EnclaveLeafFailed", "GeneralProtection", "InvalidOpcode", "PageFault"]
