"""The debug leaves: ENCLS[EDBGRD] and [EDBGWR] on a debug enclave's pages."""

from __future__ import annotations

from sgxlaunch.arch.constants import AttributeFlag, PageType, SgxStatus
from sgxlaunch.cpu.faults import GeneralProtection, PageFault
from sgxlaunch.cpu.state import StateView
from sgxlaunch.errors import UsageError


class DebugLeaves(StateView):
    """EDBGRD and EDBGWR over the shared state."""

    def _debug_target(self, address: int) -> tuple[SgxStatus, int]:
        if address & 7:
            raise GeneralProtection("EDBGRD/EDBGWR address is not 8-byte aligned")
        if not self.epc_base <= address < self._epc_end:
            raise PageFault("EDBGRD/EDBGWR address is not in the EPC", address=address)
        i = (address - self.epc_base) >> 12
        if not self._valid[i]:
            raise PageFault("EDBGRD/EDBGWR page is not valid", address=address)
        ptype = self._ptype[i]
        enclave = self._secs_state[i] if ptype == PageType.SECS else self._owner[i]
        if enclave is None or not enclave.attributes & AttributeFlag.DEBUG:
            return SgxStatus.PAGE_NOT_DEBUGGABLE, i
        return SgxStatus.SUCCESS, i

    def edbgrd(self, address: int) -> tuple[SgxStatus, bytes]:
        """ENCLS[EDBGRD]: read 8 bytes of a debug enclave's EPC page.

        Checks: 8-byte alignment (#GP), EPC membership and a valid page (#PF), the owning
        enclave has ATTRIBUTES.DEBUG (else SGX_PAGE_NOT_DEBUGGABLE).

        Returns:
            (status, the 8 bytes or 8 zero bytes on failure).
        """
        status, _ = self._debug_target(address)
        if status:
            return status, bytes(8)
        off = address - self.epc_base
        return SgxStatus.SUCCESS, bytes(self._epc[off : off + 8])

    def edbgwr(self, address: int, data: bytes) -> SgxStatus:
        """ENCLS[EDBGWR]: write 8 bytes into a debug enclave's REG/TCS page.

        Checks as :meth:`edbgrd`; SECS and VA pages cannot be written (#GP).
        """
        if len(data) != 8:
            raise UsageError("EDBGWR writes exactly 8 bytes")
        status, i = self._debug_target(address)
        if status:
            return status
        if self._ptype[i] not in (PageType.REG, PageType.TCS):
            raise GeneralProtection("EDBGWR to a SECS or VA page")
        off = address - self.epc_base
        self._epc[off : off + 8] = data
        return SgxStatus.SUCCESS
