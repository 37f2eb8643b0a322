"""Type stub for the optional native fast path of EWB and ELDU/ELDB (see _paging.c)."""

from collections.abc import Callable
from typing import Any

from sgxlaunch.arch import SgxStatus

class PagingAccelerator:
    def __init__(
        self,
        *,
        epc: bytearray,
        epc_base: int,
        valid: bytearray,
        ptype: bytearray,
        perm: bytearray,
        blocked: bytearray,
        blocked_epoch: list[int],
        linaddr: list[int],
        owner: list[Any],
        page_views: list[memoryview],
        page_region: dict[int, Any],
        secs_state: dict[int, Any],
        shared: bytearray,
        sealed: bytearray,
        encrypt_into: Callable[..., object],
        decrypt_into: Callable[..., object],
        invalid_tag: type[BaseException],
        success: SgxStatus,
        enclave_type: type,
        region_type: type,
        python_ewb: Callable[[int, int, int], SgxStatus],
        python_eldu: Callable[[int, int, int], SgxStatus],
        python_eldb: Callable[[int, int, int], SgxStatus],
    ) -> None: ...
    def ewb(self, pageinfo: int, epc_page: int, va_slot: int) -> SgxStatus: ...
    def eldu(self, pageinfo: int, epc_page: int, va_slot: int) -> SgxStatus: ...
    def eldb(self, pageinfo: int, epc_page: int, va_slot: int) -> SgxStatus: ...
