"""``__vdso_sgx_enter_enclave`` (mainline ``arch/x86/entry/vdso/vsgx.S``) over the emulator.

The vDSO enters an enclave with EENTER or ERESUME and returns to its caller on EEXIT or on an
exception the kernel did not fix, reporting it in ``struct sgx_enclave_run`` (vector, error
code, address) with ``function = ERESUME``: the thread is still in the enclave's AEX state, and a
later ERESUME on the same TCS retries the faulting access. Python cannot pause a frame of an
:class:`~sgxlaunch.cpu.EnclaveProgram` in the middle of an access, so each logical processor
inside an enclave is a Python thread: the program runs on it, and an exception report parks it
at the faulting access until user space ERESUMEs (the access is retried) or gives the thread
up (the access faults and the ECALL ends). Control passes strictly back and forth, so runs are
deterministic. (The vDSO's ``user_handler`` callback is not modelled; the selftests' calls use
none. An EENTER or ERESUME that itself faults — a busy TCS, a TCS with no AEX to resume —
raises :class:`~sgxlaunch.driver.uapi.DriverError` instead of being reported.)
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sgxlaunch.driver.uapi import EEXIT, ERESUME, X86_TRAP_PF


@dataclass(slots=True)
class EnclaveRun:
    """``struct sgx_enclave_run`` (the fields the emulator uses).

    Attributes:
        tcs: linear address of the TCS to enter (in), kept on return.
        function: on return, EEXIT (the ECALL finished) or ERESUME (an exception was
            reported; ERESUME on ``tcs`` continues).
        exception_vector / exception_error_code / exception_addr: the reported exception
            (14 / #PF error code / faulting linear address), zero after EEXIT.
        output: the bytes the enclave returned on EEXIT (the ECALL model's output buffer).
    """

    tcs: int
    function: int = 0
    exception_vector: int = 0
    exception_error_code: int = 0
    exception_addr: int = 0
    output: bytes = b""


class EnclaveThread:
    """One logical processor running enclave code for a vDSO call (a Python thread)."""

    def __init__(self, body: Callable[[Callable[[int, int], bool]], bytes]) -> None:
        self._to_user: queue.Queue[tuple[str, object, int, int]] = queue.Queue()
        self._to_enclave: queue.Queue[bool] = queue.Queue()
        self._body = body
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            out = self._body(self._deliver)
        except BaseException as exc:  # handed to the caller's thread, raised there
            self._to_user.put(("error", exc, 0, 0))
            return
        self._to_user.put(("exit", out, 0, 0))

    def _deliver(self, error_code: int, address: int) -> bool:
        """In the enclave thread: report the exception, park until ERESUME or give-up."""
        self._to_user.put(("aex", None, error_code, address))
        return self._to_enclave.get()

    def start(self, run: EnclaveRun) -> bool:
        """Run until EEXIT (False: the thread is done) or an exception report (True)."""
        self._thread.start()
        return self._wait(run)

    def resume(self, run: EnclaveRun) -> bool:
        """ERESUME: retry the faulting access; as :meth:`start` afterwards."""
        self._to_enclave.put(True)
        return self._wait(run)

    def abandon(self) -> None:
        """Give the parked thread up: its access faults and the ECALL ends."""
        self._to_enclave.put(False)
        while True:
            kind, _, _, _ = self._to_user.get()
            if kind != "aex":
                break
            self._to_enclave.put(False)
        self._thread.join()

    def _wait(self, run: EnclaveRun) -> bool:
        kind, value, error_code, address = self._to_user.get()
        if kind == "error":
            self._thread.join()
            assert isinstance(value, BaseException)
            raise value
        if kind == "exit":
            self._thread.join()
            assert isinstance(value, bytes)
            run.function = EEXIT
            run.exception_vector = run.exception_error_code = run.exception_addr = 0
            run.output = value
            return False
        run.function = ERESUME
        run.exception_vector = X86_TRAP_PF
        run.exception_error_code = error_code
        run.exception_addr = address
        run.output = b""
        return True
