"""The emulated Linux SGX driver (mainline ``driver.c``): the device files and launch control.

:class:`SgxDriver` is the facade over mainline's split: the ioctls (:mod:`.ioctl`,
``ioctl.c``), enclave memory — the structures (:mod:`.encl`) and the fault, entry and ptrace
paths (:mod:`.vma`, ``encl.c``) — and the EPC allocator and reclaimer (:mod:`.epc`,
``main.c``). It mirrors mainline's checks in the same order with the same errnos (spec §5),
reaching the processor only through leaf calls. Added, at the owner's discretion (spec §6):
the ``owner`` launch-control mode, in which the launch-key MSRs hold the owner's
launch-enclave signer, EINITTOKEN_KEY is granted to that signer only, and every other enclave
initializes only through ``SGX_IOC_ENCLAVE_INIT_TOKEN`` with a valid token. The default mode,
``permissive``, is mainline's behaviour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sgxlaunch.arch.constants import (
    FEATURE_CONTROL_LOCK,
    FEATURE_CONTROL_SGX_ENABLED,
    FEATURE_CONTROL_SGX_LC_ENABLED,
    MSR_IA32_FEATURE_CONTROL,
)
from sgxlaunch.cpu import Processor
from sgxlaunch.driver.dynamic import DriverEvents
from sgxlaunch.driver.encl import Enclave
from sgxlaunch.driver.epc import EpcPool, KernelScratch
from sgxlaunch.driver.grants import OwnerService
from sgxlaunch.driver.ioctl import Ioctls, LaunchControl, Mode
from sgxlaunch.driver.process import Process
from sgxlaunch.driver.uapi import InitAttempt
from sgxlaunch.driver.vma import EnclaveVm
from sgxlaunch.errors import UsageError


@dataclass(frozen=True, slots=True)
class DriverStats:
    """Counters for tests and benchmarks."""

    epc_pages: int
    epc_free: int
    evictions: int
    reloads: int


class SgxDriver:
    """The driver: owns the EPC allocator, the reclaimer and the launch-control mode.

    Args:
        cpu: the processor it drives (only through leaf calls, MSRs and memory).
        mode: initial launch-control mode (``permissive`` is mainline).
        le_signer: for ``owner`` mode, the owner's launch-enclave MRSIGNER.

    Launch control, set only through :meth:`configure_launch_control` (a privileged call, not
    reachable from a :class:`~sgxlaunch.driver.process.Process`):

    * ``permissive``: before each EINIT the MSRs get SHA-256 of the enclave's modulus and a zero
      token is passed; EINITTOKEN_KEY is never granted (EACCES); ENCLAVE_INIT_TOKEN → EINVAL.
    * ``owner``: the MSRs are written once with the owner's launch-enclave signer and never
      rewritten; EINITTOKEN_KEY is granted to that signer only; mainline ENCLAVE_INIT → EPERM;
      ENCLAVE_INIT_TOKEN passes the caller's token to EINIT.
    * On a part whose launch-key MSRs are locked (FLC absent or locked off by firmware),
      mainline refuses to load enclaves (the devices do not exist); ``owner`` mode works when
      the owner's signer is the firmware's hash.
    """

    def __init__(
        self, cpu: Processor, *, mode: Mode = "permissive", le_signer: bytes | None = None
    ):
        self._cpu = cpu
        self.lc_writable = self._feature_init()
        self.launch_control = LaunchControl()
        self.epc = EpcPool(cpu, KernelScratch.allocate(cpu))
        self.vm = EnclaveVm(cpu, self.epc)
        self.enter = self.vm.enter
        self.ioctls = Ioctls(cpu, self.epc, self.vm, self.launch_control)
        self.events = DriverEvents()
        """What the driver decided about enclaves' dynamic memory (owner limits, issue 17;
        :mod:`sgxlaunch.driver.dynamic`)."""
        self.releases: list[Callable[[Enclave], None]] = []
        """Called with each initialized enclave as it is torn down (the launch log's
        teardown record)."""
        self._next_eid = 1
        self._next_pid = 100
        cpu.page_fault_handler = self.vm.page_fault
        cpu.mmu = self.vm  # the page tables the processor walks, and the #PF path
        self.configure_launch_control(mode, le_signer)

    @property
    def cpu(self) -> Processor:
        return self._cpu

    @property
    def mode(self) -> Mode:
        return self.launch_control.mode

    @property
    def le_signer(self) -> bytes | None:
        return self.launch_control.le_signer

    @property
    def observers(self) -> list[Callable[[InitAttempt], None]]:
        """Called with an :class:`InitAttempt` for every INIT and INIT_TOKEN ioctl."""
        return self.launch_control.observers

    @property
    def gates(self) -> list[Callable[[InitAttempt], None]]:
        """Called with the :class:`InitAttempt` of every INIT before EINIT; one that raises
        :class:`~sgxlaunch.driver.uapi.DriverError` refuses the INIT."""
        return self.launch_control.gates

    @property
    def owner_service(self) -> OwnerService | None:
        """The owner-service port the attested-code GRANT_EXEC ioctl asks (the Platform
        registers the launch enclave's GRANT; :mod:`sgxlaunch.driver.grants`). Privileged
        (platform bring-up), like launch control. Whatever it returns grants nothing: only the
        launch enclave's verdict in the processor's mailbox does."""
        return self.ioctls.grants.service

    @owner_service.setter
    def owner_service(self, service: OwnerService | None) -> None:
        self.ioctls.grants.service = service

    @property
    def enclaves(self) -> dict[int, Enclave]:
        """Every created enclave, by the EPC address of its SECS (read-only use)."""
        return self.vm.by_secs

    # -- platform bring-up and launch control -----------------------------------------------

    def _feature_init(self) -> bool:
        """feat_ctl.c: lock FEATURE_CONTROL if firmware left it open; is the hash writable?"""
        cpu = self.cpu
        fc = cpu.rdmsr(MSR_IA32_FEATURE_CONTROL)
        if not fc & FEATURE_CONTROL_LOCK:
            value = FEATURE_CONTROL_LOCK | FEATURE_CONTROL_SGX_ENABLED
            if cpu.config.flc:
                value |= FEATURE_CONTROL_SGX_LC_ENABLED
            cpu.wrmsr(MSR_IA32_FEATURE_CONTROL, value)
            fc = value
        return bool(cpu.config.flc and fc & FEATURE_CONTROL_SGX_LC_ENABLED)

    def configure_launch_control(
        self, mode: Mode, le_signer: bytes | None = None, *, le_mrenclave: bytes | None = None
    ) -> None:
        """Set the launch-control mode (privileged: the platform owner's configuration call).

        Args:
            le_mrenclave: in ``owner`` mode, the MRENCLAVE of the owner's launch enclave. With
                it, owner-mode INIT also refuses (EPERM) any other enclave signed by
                ``le_signer`` and any token whose KEYID does not bind the SIGSTRUCT and the
                machine's policy digest (:mod:`sgxlaunch.driver.owner`). Without it (bare
                owner mode, for tests of other launch enclaves) EINIT alone decides.

        Raises:
            UsageError: an unknown mode, ``owner`` without a 32-byte signer, or ``owner`` with a
                signer other than the firmware's hash on a part whose MSRs are locked.
        """
        lc = self.launch_control
        if mode == "permissive":
            lc.mode = "permissive"
            lc.le_signer = None
            lc.le_mrenclave = None
            return
        if le_mrenclave is not None and len(le_mrenclave) != 32:
            raise UsageError("the launch enclave's MRENCLAVE is 32 bytes")
        if mode != "owner":
            raise UsageError(f"unknown launch-control mode {mode!r}")
        if le_signer is None or len(le_signer) != 32:
            raise UsageError("owner mode needs the launch enclave's 32-byte MRSIGNER")
        if self.lc_writable:
            self.cpu.set_lepubkeyhash(le_signer)
        elif self.cpu.lepubkeyhash != le_signer:
            raise UsageError(
                "the launch-key MSRs are locked by firmware to another signer",
                detail=[
                    f"firmware hash: {self.cpu.lepubkeyhash.hex()}",
                    f"requested:     {le_signer.hex()}",
                ],
            )
        lc.mode = "owner"
        lc.le_signer = bytes(le_signer)
        lc.le_mrenclave = None if le_mrenclave is None else bytes(le_mrenclave)

    @property
    def devices_present(self) -> bool:
        """Whether ``/dev/sgx_enclave`` exists (mainline: FLC with writable MSRs)."""
        return self.lc_writable or self.mode == "owner"

    def new_process(self) -> Process:
        """A fresh user process on this platform."""
        pid = self._next_pid
        self._next_pid += 1
        return Process(self, pid)

    def new_enclave(self) -> Enclave:
        enclave = Enclave(eid=self._next_eid, events=self.events)
        self._next_eid += 1
        return enclave

    def stats(self) -> DriverStats:
        epc = self.epc
        return DriverStats(self.cpu.epc_pages, len(epc.free_list), epc.evictions, epc.reloads)

    # -- the file operations a process reaches (process.Kernel) ------------------------------

    def ioctl(self, process: Process, enclave: Enclave, cmd: int, arg: int) -> int:
        """sgx_ioctl on an enclave fd (:class:`sgxlaunch.driver.ioctl.Ioctls`)."""
        return self.ioctls(process, enclave, cmd, arg)

    def release(self, enclave: Enclave) -> None:
        """sgx_release → sgx_encl_release: EREMOVE every page, the VA pages, the SECS.

        The :attr:`releases` callbacks see an initialized enclave first (its page counts
        included: :attr:`Enclave.pages_added` after EINIT)."""
        if enclave.initialized and not enclave.dead:
            for callback in list(self.releases):
                callback(enclave)
        if enclave.created:
            self.vm.by_secs.pop(enclave.secs_epc, None)
        self.ioctls.grants.forget(enclave)
        enclave.exec_grants.clear()
        self.epc.release(enclave)

    enter: Callable[..., bytes]
    """EENTER through the enclave's VMA in ``mm``: :meth:`EnclaveVm.enter` itself (bound in
    ``__init__``; the ECALL path is one call shorter), with the signature of
    :meth:`sgxlaunch.driver.process.Kernel.enter`."""

    def user_fault(self, mm: Process, enclave: Enclave, address: int, write: bool) -> None:
        """A user-space access to an enclave mapping (:meth:`EnclaveVm.user_fault`)."""
        self.vm.user_fault(mm, enclave, address, write)

    def access(self, enclave: Enclave, address: int, length: int, data: bytes | None) -> bytes:
        """ptrace access to enclave memory (:meth:`EnclaveVm.access`)."""
        return self.vm.access(enclave, address, length, data)
