"""Attacks on enclave isolation in the emulated processor: software outside an enclave cannot
read its pages, reach its ENCLU leaves, debug a production enclave, or run another program."""

from __future__ import annotations

import struct

import pytest

from sgxlaunch.arch import KeyRequest, SgxStatus
from sgxlaunch.arch.constants import KeyName
from sgxlaunch.cpu import EnclaveContext, GeneralProtection
from sgxlaunch.cpu.enclave import EnclaveContext as Ctx
from tests.support.cpu import DEBUG, KeyProbe, MemoryProgram, cpu, launch

PAGE = 4096


def test_epc_reads_from_outside_see_the_abort_page() -> None:
    proc = cpu()
    enc = launch(proc, MemoryProgram, "app")
    enc.call(0, struct.pack("<Q", 0x3000) + b"top secret")
    page = enc.enclave.pages[enc.enclave.baseaddr + 0x3000]
    assert proc.read(page, 10) == b"\xff" * 10
    proc.write(page, b"overwrite!")  # dropped
    assert enc.call(1, struct.pack("<QQ", 0x3000, 10)) == b"top secret"


def test_production_enclave_cannot_be_debugged() -> None:
    proc = cpu()
    enc = launch(proc, MemoryProgram, "app")
    page = enc.enclave.pages[enc.enclave.baseaddr + 0x3000]
    assert proc.edbgrd(page) == (SgxStatus.PAGE_NOT_DEBUGGABLE, bytes(8))
    assert proc.edbgwr(page, b"12345678") == SgxStatus.PAGE_NOT_DEBUGGABLE
    debug = launch(proc, MemoryProgram, "app", flags=DEBUG, flagsmask=2**64 - 1)
    dpage = debug.enclave.pages[debug.enclave.baseaddr + 0x3000]
    assert proc.edbgwr(dpage, b"12345678") == SgxStatus.SUCCESS
    assert debug.call(1, struct.pack("<QQ", 0x3000, 8)) == b"12345678"


def test_context_cannot_be_forged_or_kept() -> None:
    proc = cpu()
    enc = launch(proc, KeyProbe, "app")
    secs_state = proc.state.secs_state[(enc.enclave.secs - proc.epc_base) >> 12]
    # A context built by hand outside EENTER is dead as soon as the "ECALL" it never had ends;
    # the only live ones are those EENTER creates. Show that the processor exposes no leaf.
    assert not hasattr(proc, "egetkey") and not hasattr(proc, "ereport")
    forged = Ctx(proc._enclu, secs_state)
    forged._active = False
    with pytest.raises(GeneralProtection):
        forged.egetkey(KeyRequest(keyname=KeyName.SEAL))
    assert isinstance(forged, EnclaveContext)


def test_registration_binds_code_to_mrenclave() -> None:
    """Registering a different program for an enclave's MRENCLAVE after it has run does not
    swap its code, and a program is only ever given enclaves that measure its image."""
    proc = cpu()
    enc = launch(proc, KeyProbe, "app")
    first = enc.call(0, KeyRequest(keyname=KeyName.REPORT).to_bytes())
    proc.register_program(enc.image.mrenclave(), MemoryProgram)
    assert enc.call(0, KeyRequest(keyname=KeyName.REPORT).to_bytes()) == first
