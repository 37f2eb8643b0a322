"""IA32_FEATURE_CONTROL / IA32_SGXLEPUBKEYHASH rules, physical memory, configuration, seeds."""

from __future__ import annotations

import pytest

from sgxlaunch.arch.constants import (
    FEATURE_CONTROL_LOCK,
    FEATURE_CONTROL_SGX_ENABLED,
    FEATURE_CONTROL_SGX_LC_ENABLED,
    INTEL_LE_MRSIGNER,
    MSR_IA32_FEATURE_CONTROL,
    MSR_IA32_SGXLEPUBKEYHASH0,
    MSR_IA32_SGXLEPUBKEYHASH1,
    MSR_IA32_SGXLEPUBKEYHASH3,
)
from sgxlaunch.cpu import CpuConfig, GeneralProtection, PageFault, Processor
from sgxlaunch.errors import UsageError
from tests.support.cpu import MIB, cpu
from tests.support.keys import mrsigner

LOCKED_LC = FEATURE_CONTROL_LOCK | FEATURE_CONTROL_SGX_ENABLED | FEATURE_CONTROL_SGX_LC_ENABLED


def test_default_firmware_locks_with_lc_enabled_and_intel_hash() -> None:
    proc = cpu()
    assert proc.rdmsr(MSR_IA32_FEATURE_CONTROL) == LOCKED_LC
    assert proc.lepubkeyhash == INTEL_LE_MRSIGNER
    assert proc.rdmsr(MSR_IA32_SGXLEPUBKEYHASH0) == 0xA6053E051270B7AC
    assert proc.rdmsr(MSR_IA32_SGXLEPUBKEYHASH3) == 0xD4F8C05909F9BB3B


def test_hash_msrs_writable_when_locked_with_lc() -> None:
    proc = cpu()
    for i in range(4):
        proc.wrmsr(MSR_IA32_SGXLEPUBKEYHASH0 + i, 0x1111 * (i + 1))
    assert [proc.rdmsr(MSR_IA32_SGXLEPUBKEYHASH0 + i) for i in range(4)] == [
        0x1111,
        0x2222,
        0x3333,
        0x4444,
    ]
    proc.set_lepubkeyhash(mrsigner("le"))
    assert proc.lepubkeyhash == mrsigner("le")


def test_feature_control_locked_rejects_writes() -> None:
    proc = cpu()
    with pytest.raises(GeneralProtection):
        proc.wrmsr(MSR_IA32_FEATURE_CONTROL, 0)


def test_unlocked_feature_control_makes_hash_msrs_fault() -> None:
    proc = cpu(firmware="unlocked")
    assert proc.rdmsr(MSR_IA32_FEATURE_CONTROL) == 0
    with pytest.raises(GeneralProtection):
        proc.wrmsr(MSR_IA32_SGXLEPUBKEYHASH0, 1)
    # Setting LC_ENABLED without LOCK is not enough either.
    proc.wrmsr(MSR_IA32_FEATURE_CONTROL, FEATURE_CONTROL_SGX_LC_ENABLED)
    with pytest.raises(GeneralProtection):
        proc.wrmsr(MSR_IA32_SGXLEPUBKEYHASH1, 1)
    proc.wrmsr(MSR_IA32_FEATURE_CONTROL, LOCKED_LC)
    proc.wrmsr(MSR_IA32_SGXLEPUBKEYHASH1, 1)
    assert proc.rdmsr(MSR_IA32_SGXLEPUBKEYHASH1) == 1
    with pytest.raises(GeneralProtection):
        proc.wrmsr(MSR_IA32_FEATURE_CONTROL, 0)


def test_locked_without_lc_keeps_the_firmware_hash() -> None:
    chosen = bytes(range(32))
    proc = cpu(firmware="locked-hash", firmware_lepubkeyhash=chosen)
    assert proc.rdmsr(MSR_IA32_FEATURE_CONTROL) & FEATURE_CONTROL_LOCK
    assert not proc.rdmsr(MSR_IA32_FEATURE_CONTROL) & FEATURE_CONTROL_SGX_LC_ENABLED
    assert proc.lepubkeyhash == chosen
    for msr in range(MSR_IA32_SGXLEPUBKEYHASH0, MSR_IA32_SGXLEPUBKEYHASH3 + 1):
        with pytest.raises(GeneralProtection):
            proc.wrmsr(msr, 0)
    with pytest.raises(GeneralProtection):
        proc.set_lepubkeyhash(mrsigner("le"))
    assert proc.lepubkeyhash == chosen


def test_part_without_flc() -> None:
    proc = cpu(flc=False, firmware="unlocked")
    with pytest.raises(GeneralProtection):
        proc.wrmsr(MSR_IA32_FEATURE_CONTROL, LOCKED_LC)
    with pytest.raises(GeneralProtection):
        proc.rdmsr(MSR_IA32_SGXLEPUBKEYHASH0)
    with pytest.raises(UsageError):
        CpuConfig(flc=False)  # firmware cannot enable LC on such a part


def test_unmodelled_msrs_and_wide_values_fault() -> None:
    proc = cpu()
    with pytest.raises(GeneralProtection):
        proc.rdmsr(0x10)
    with pytest.raises(GeneralProtection):
        proc.wrmsr(0x10, 0)
    with pytest.raises(GeneralProtection):
        proc.wrmsr(MSR_IA32_SGXLEPUBKEYHASH0, 1 << 64)


def test_ordinary_memory_and_abort_page() -> None:
    proc = cpu()
    a = proc.allocate(100, align=64)
    b = proc.allocate(4096)
    assert a % 64 == 0 and b % 4096 == 0 and b > a
    proc.write(a, b"hello")
    assert proc.read(a, 5) == b"hello"
    assert proc.read(b, 4) == bytes(4)
    # Non-enclave access to the EPC: reads see 0xFF, writes are dropped.
    epc = proc.epc_address(3)
    proc.write(epc, b"\x00" * 8)
    assert proc.read(epc, 8) == b"\xff" * 8
    # Unmapped memory (the guard page after a region) faults.
    with pytest.raises(PageFault):
        proc.read(a + 4096, 1)
    proc.release(a)
    with pytest.raises(PageFault):
        proc.read(a, 1)
    with pytest.raises(UsageError):
        proc.release(a)


def test_epc_layout() -> None:
    proc = cpu(epc_size=2 * MIB)
    assert proc.epc_pages == 512
    assert proc.epc_address(0) == proc.epc_base
    assert proc.epc_address(7) == proc.epc_base + 7 * 4096
    assert len(proc.free_epc_pages(512)) == 512
    with pytest.raises(UsageError):
        proc.free_epc_pages(513)
    assert not proc.epcm(proc.epc_address(5)).valid


def test_seed_is_required_and_determines_the_cpu() -> None:
    with pytest.raises(UsageError):
        Processor(CpuConfig(epc_size=MIB), b"short")
    one, same, other = (
        Processor(CpuConfig(epc_size=MIB), s) for s in (b"a" * 16, b"a" * 16, b"b" * 16)
    )
    assert one._fuses.root_key == same._fuses.root_key != other._fuses.root_key
    assert one._fuses.seal_fuses == same._fuses.seal_fuses != other._fuses.seal_fuses


@pytest.mark.parametrize(
    "bad",
    [
        {"epc_size": 1000},
        {"cpusvn": bytes(15)},
        {"xfrm_allowed": 0x1},
        {"firmware": "bogus"},
        {"firmware_lepubkeyhash": bytes(31)},
    ],
)
def test_config_validation(bad: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        CpuConfig(**bad)  # type: ignore[arg-type]


def test_cpuid_reports_the_configured_capabilities() -> None:
    from sgxlaunch.arch.constants import AttributeFlag

    proc = cpu(kss=True, xfrm_allowed=0x7, miscselect_allowed=1, epc_size=2 * MIB)
    assert proc.cpuid(7)[1] & (1 << 2) and proc.cpuid(7)[2] & (1 << 30)
    eax, ebx, _, _ = proc.cpuid(0x12, 0)
    assert eax & 1 and ebx == 1
    eax, ebx, ecx, edx = proc.cpuid(0x12, 1)
    flags = eax | ebx << 32
    assert flags & AttributeFlag.KSS and not flags & AttributeFlag.INIT
    assert ecx | edx << 32 == 0x7
    eax, ebx, ecx, edx = proc.cpuid(0x12, 2)
    assert (eax & ~0xFFF) | ebx << 32 == proc.epc_base
    assert (ecx & ~0xFFF) | edx << 32 == 2 * MIB
    assert not cpu(flc=False, firmware="unlocked").cpuid(7)[2] & (1 << 30)
    assert not cpu().cpuid(0x12, 1)[0] & AttributeFlag.KSS
    assert proc.cpuid(0x99) == (0, 0, 0, 0)
