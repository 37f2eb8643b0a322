"""The emulated SGX processor: one facade over the leaf families.

Operands are addresses, as in registers (DESIGN "Addresses"): the EPC sits at
``config.epc_base + 4096 * i``; ordinary memory regions (where PAGEINFOs, SECINFOs, source pages,
SIGSTRUCTs and tokens live) are handed out by :meth:`Processor.allocate`. A leaf returns the
status code the SDM puts in RAX (:class:`~sgxlaunch.arch.SgxStatus`) or raises the modelled fault
(:class:`~sgxlaunch.cpu.faults.GeneralProtection`, :class:`~sgxlaunch.cpu.faults.PageFault`)
where the SDM faults.

Where each leaf lives (one module per SDM leaf family):

=================  ===============================================================
``state.py``       physical memory, EPC, EPCM, the SECS states (``EpcState``)
``msr.py``         RDMSR/WRMSR, CPUID, CR_CPUSVN (``Msrs``)
``build.py``       ECREATE, EADD, EEXTEND, EREMOVE (``BuildLeaves``)
``einit.py``       EINIT and the launch key (``EinitLeaf``)
``paging.py``      EPA, EBLOCK, ETRACK, EWB, ELDU, ELDB, the native binding
``debug.py``       EDBGRD, EDBGWR (``DebugLeaves``)
``edmm.py``        SGX2: EAUG, EMODPR, EMODT (``EdmmLeaves``); EACCEPT, EACCEPTCOPY,
                   EMODPE (``EdmmEnclu``, reached through ``EnclaveContext``)
``enclave.py``     ENCLU: EENTER and programs, EREPORT, EGETKEY, enclave-mode memory
                   access and the MMU hook (``Enclu``)
=================  ===============================================================
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from sgxlaunch.arch.constants import SgxStatus
from sgxlaunch.cpu.build import BuildLeaves
from sgxlaunch.cpu.config import CpuConfig
from sgxlaunch.cpu.debug import DebugLeaves
from sgxlaunch.cpu.edmm import EdmmLeaves
from sgxlaunch.cpu.einit import EinitLeaf
from sgxlaunch.cpu.enclave import Enclu, Mmu, PageFaultHandler
from sgxlaunch.cpu.keys import FusedSecrets
from sgxlaunch.cpu.machine import Machine
from sgxlaunch.cpu.msr import Msrs
from sgxlaunch.cpu.paging import PagingLeaves
from sgxlaunch.cpu.state import EpcState

if TYPE_CHECKING:
    from sgxlaunch.cpu.enclave import EnclaveProgram


class Processor:
    """One emulated SGX-capable processor (one "boot").

    Args:
        config: what the part is and how firmware left it (:class:`CpuConfig`).
        seed: the platform seed (≥ 16 bytes); fused secrets derive from it, so the same seed
            rebuilds the same CPU.
        random: source of randomness, ``n -> n bytes`` (RDRAND, the per-boot paging key and
            report KEYID). Defaults to :func:`os.urandom`; tests inject a deterministic one.
        native: use the optional native fast path for the success case of EWB and ELDU/ELDB
            (:mod:`sgxlaunch.cpu._paging`, built at install time when a C compiler is present;
            the Python leaves stay the specification and handle every other case). ``None``
            (default): as ``config.native_paging`` says; ``False``: never; ``True``: require
            it (:class:`UsageError` when it is not built). Results are identical either way.
        machine: the machine holding the monotonic counter (:mod:`sgxlaunch.cpu.machine`); the
            seed and OWNEREPOCH are taken from it by whoever builds the processor.

    Public surface (all addresses are physical):

    * memory: :meth:`allocate`, :meth:`release`, :meth:`read`, :meth:`write`, :attr:`epc_base`,
      :attr:`epc_pages`, :meth:`epc_address`, :meth:`epcm`;
    * MSRs and capabilities: :meth:`rdmsr`, :meth:`wrmsr`, :attr:`lepubkeyhash`,
      :meth:`cpuid`, :attr:`cpusvn`;
    * ENCLS: :meth:`ecreate`, :meth:`eadd`, :meth:`eextend`, :meth:`eextend_page`,
      :meth:`einit`, :meth:`eremove`, :meth:`epa`, :meth:`eblock`, :meth:`etrack`, ``ewb``,
      ``eldu``, ``eldb`` (bound at construction to the Python leaves of
      :class:`~sgxlaunch.cpu.paging.PagingLeaves` or to the native fast path in front of
      them), :meth:`edbgrd`, :meth:`edbgwr`; SGX2 (``config.sgx2``): :meth:`eaug`,
      :meth:`emodpr`, :meth:`emodt` (:mod:`sgxlaunch.cpu.edmm`);
    * execution: :meth:`register_program`, :meth:`register_code`, :meth:`eenter` (see
      :mod:`sgxlaunch.cpu.enclave`);
    * hooks: :meth:`pend_interrupt` (EINIT step 4), :attr:`page_fault_handler`, :attr:`mmu`;
    * inspection: :meth:`secs_info`.

    ``Processor`` is the facade: each leaf family lives in its own module and the leaves are
    its bound methods, so a call costs no more than before the split.
    """

    def __init__(
        self,
        config: CpuConfig | None = None,
        seed: bytes = b"",
        *,
        random: Callable[[int], bytes] | None = None,
        native: bool | None = None,
        machine: Machine | None = None,
    ) -> None:
        self.config = cfg = config if config is not None else CpuConfig()
        self.machine = machine
        """The machine's non-volatile store, for the monotonic counter (an emulator extension
        reached from enclaves through :class:`~sgxlaunch.cpu.enclave.EnclaveContext`); ``None``
        on a part without one."""
        rng = random if random is not None else os.urandom
        self.rng = rng
        """The injected randomness source (RDRAND's; the driver's ``get_random_bytes`` too)."""
        self._fuses = FusedSecrets.from_seed(seed)
        boot = rng(32)
        paging_key = hashlib.sha256(b"sgxlaunch.cpu/paging/v1\x00" + boot).digest()[:16]
        report_keyid = hashlib.sha256(b"sgxlaunch.cpu/report-keyid/v1\x00" + boot).digest()
        self.state = state = EpcState(cfg)
        self.epc_base = state.epc_base
        self.epc_pages = state.epc_pages
        msrs = self._msrs = Msrs(cfg)
        build = BuildLeaves(state, cfg)
        einit = self._einit = EinitLeaf(state, cfg, msrs, self._fuses)
        paging = self._paging = PagingLeaves(
            state, paging_key, cfg.native_paging if native is None else native
        )
        debug = DebugLeaves(state)
        edmm = EdmmLeaves(state, cfg)
        enclu = self._enclu = Enclu(state, cfg, self._fuses, rng, report_keyid, machine)
        # Memory.
        self.allocate = state.allocate
        self.release = state.release
        self.read = state.read
        self.write = state.write
        self.in_epc = state.in_epc
        self.epc_address = state.epc_address
        self.free_epc_pages = state.free_epc_pages
        self.epcm = state.epcm
        self.secs_info = state.secs_info
        # MSRs and CPUID.
        self.rdmsr = msrs.rdmsr
        self.wrmsr = msrs.wrmsr
        self.set_lepubkeyhash = msrs.set_lepubkeyhash
        self.cpuid = msrs.cpuid
        # ENCLS.
        self.ecreate = build.ecreate
        self.eadd = build.eadd
        self.eextend = build.eextend
        self.eextend_page = build.eextend_page
        self.eremove = build.eremove
        self.einit = einit.einit
        self.pend_interrupt = einit.pend_interrupt
        self.epa = paging.epa
        self.eblock = paging.eblock
        self.etrack = paging.etrack
        self.ewb: Callable[[int, int, int], SgxStatus] = paging.ewb
        self.eldu: Callable[[int, int, int], SgxStatus] = paging.eldu
        self.eldb: Callable[[int, int, int], SgxStatus] = paging.eldb
        self.edbgrd = debug.edbgrd
        self.edbgwr = debug.edbgwr
        self.eaug = edmm.eaug
        self.emodpr = edmm.emodpr
        self.emodt = edmm.emodt
        # ENCLU.
        self.register_program: Callable[[bytes, Callable[[], EnclaveProgram]], None] = (
            enclu.register_program
        )
        self.register_code = enclu.register_code
        self.eenter = enclu.eenter
        # Emulator extension: the owner-verdict mailbox, kernel side (see
        # EnclaveContext.owner_verdict_post; only the counter's owner enclave posts).
        self.owner_verdict_take = enclu.owner_verdict_take

    @property
    def native_paging(self) -> bool:
        """True when EWB/ELDU/ELDB take the native fast path on their success case."""
        return self._paging.native_paging

    @property
    def sgx2(self) -> bool:
        """True when the part has SGX2 (``config.sgx2``; CPUID.(12H,0):EAX[1])."""
        return self.config.sgx2

    @property
    def mmu(self) -> Mmu | None:
        """The page tables and #PF handler enclave-mode accesses meet
        (:class:`~sgxlaunch.cpu.enclave.Mmu`); ``None``: no page-table checks, and only
        not-present faults reach :attr:`page_fault_handler`."""
        return self._enclu.mmu

    @mmu.setter
    def mmu(self, mmu: Mmu | None) -> None:
        self._enclu.mmu = mmu

    @property
    def lepubkeyhash(self) -> bytes:
        """IA32_SGXLEPUBKEYHASH0..3 as the 32-byte MRSIGNER they hold (HASH0 = bytes 0..7)."""
        return self._msrs.lepubkeyhash

    @property
    def cpusvn(self) -> bytes:
        """CR_CPUSVN."""
        return self._msrs.cpusvn

    @property
    def page_fault_handler(self) -> PageFaultHandler | None:
        """Called as ``handler(secs_address, linaddr)`` when a running program touches a page
        that is not resident; return True after making it resident (e.g. by ELDU) to retry the
        access, False to let the :class:`PageFault` end the ECALL."""
        return self._enclu.page_fault_handler

    @page_fault_handler.setter
    def page_fault_handler(self, handler: PageFaultHandler | None) -> None:
        self._enclu.page_fault_handler = handler
