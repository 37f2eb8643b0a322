"""Layer 4: the emulated SGX processor (physical memory, EPC/EPCM, MSRs, keys, leaves).

Start with :class:`Processor` (``Processor(CpuConfig(...), seed)``), build enclaves with the
leaves or with :mod:`sgxlaunch.cpu.loader`, run code inside them as
:class:`~sgxlaunch.cpu.enclave.EnclaveProgram` s. See ``docs/cpu.md``.
"""

from sgxlaunch.cpu.config import DEFAULT_EPC_SIZE, EPC_BASE, ORDINARY_BASE, CpuConfig
from sgxlaunch.cpu.edmm import ACCESS_FETCH, ACCESS_READ, ACCESS_WRITE
from sgxlaunch.cpu.enclave import EnclaveContext, EnclaveProgram, Mmu
from sgxlaunch.cpu.faults import (
    CpuFault,
    EnclaveLeafFailed,
    GeneralProtection,
    InvalidOpcode,
    PageFault,
)
from sgxlaunch.cpu.image import EnclaveImage, ImagePage, program_code_page, program_image
from sgxlaunch.cpu.keys import KeyDependencies, derive_key
from sgxlaunch.cpu.loader import (
    ProcessorEnclave,
    build_enclave,
    einit,
    image_from_sgxs,
    load_enclave,
    secs_for,
)
from sgxlaunch.cpu.msr import cpusvn_beyond
from sgxlaunch.cpu.processor import Processor
from sgxlaunch.cpu.state import EpcmEntry

__all__ = [
    "ACCESS_FETCH",
    "ACCESS_READ",
    "ACCESS_WRITE",
    "DEFAULT_EPC_SIZE",
    "EPC_BASE",
    "ORDINARY_BASE",
    "CpuConfig",
    "CpuFault",
    "EnclaveContext",
    "EnclaveImage",
    "EnclaveLeafFailed",
    "EnclaveProgram",
    "EpcmEntry",
    "GeneralProtection",
    "ImagePage",
    "InvalidOpcode",
    "KeyDependencies",
    "Mmu",
    "PageFault",
    "Processor",
    "ProcessorEnclave",
    "build_enclave",
    "cpusvn_beyond",
    "derive_key",
    "einit",
    "image_from_sgxs",
    "load_enclave",
    "program_code_page",
    "program_image",
    "secs_for",
]
