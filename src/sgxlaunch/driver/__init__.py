"""Layer 5: the emulated Linux SGX driver with the owner launch-control extension.

:class:`SgxDriver` is the kernel module, split as mainline splits it: ``ioctl`` (the ioctls),
``encl`` and ``vma`` (enclave structures; faults, entry and ptrace access), ``epc`` (the EPC
allocator and reclaimer), with the device files and launch-control modes in ``kernel``.
:class:`Process` is a user process making system calls into it; :func:`load` is a user-space
loader over the ioctls. See ``docs/driver.md``.
"""

from sgxlaunch.driver.encl import Enclave, EnclPage
from sgxlaunch.driver.ioctl import Mode
from sgxlaunch.driver.kernel import DriverStats, SgxDriver
from sgxlaunch.driver.loader import (
    LoadedEnclave,
    LoadFailed,
    as_sgxs_image,
    explain_init_failure,
    load,
    load_sdk,
)
from sgxlaunch.driver.process import Process, Vma
from sgxlaunch.driver.uapi import DriverError, InitAttempt
from sgxlaunch.driver.vdso import EnclaveRun

__all__ = [
    "DriverError",
    "DriverStats",
    "EnclPage",
    "Enclave",
    "EnclaveRun",
    "InitAttempt",
    "LoadFailed",
    "LoadedEnclave",
    "Mode",
    "Process",
    "SgxDriver",
    "Vma",
    "as_sgxs_image",
    "explain_init_failure",
    "load",
    "load_sdk",
]
