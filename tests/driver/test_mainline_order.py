"""Driver behaviour pinned to mainline's functions where the emulator departed from them
(issue 13): the CPUID-derived reserved masks, ptrace access, the SGX2 ioctls, errno order and
the EINIT retry loop. Each test names the kernel function it mirrors."""

from __future__ import annotations

import errno
import struct
from collections.abc import Callable

import pytest

from sgxlaunch.arch import Attributes, Sigstruct
from sgxlaunch.arch.constants import PAGE_SIZE, AttributeFlag, SgxStatus
from sgxlaunch.cpu import secs_for
from sgxlaunch.driver import DriverError, InitAttempt, LoadedEnclave, load, uapi
from tests.support.cpu import DEBUG, PROD, MemoryProgram, sign_image
from tests.support.driver import Raw, expect_errno, platform, program, small_secs


def _built(raw: Raw, sig_flags: int = PROD, **sign: object) -> Sigstruct:
    """CREATE and ADD_PAGES of the memory program through ``raw``; its SIGSTRUCT."""
    from sgxlaunch.cpu import program_image

    image = program_image(MemoryProgram)
    sig = sign_image(image, "app", flags=sig_flags, **sign)  # type: ignore[arg-type]
    secs = secs_for(sig, size=image.size, ssaframesize=image.ssaframesize, baseaddr=image.size)
    assert raw.create(secs) == 0
    for page in image.pages:
        raw.process.write(raw.src, page.data)
        assert raw.add(page.offset, flags=page.secinfo_flags) == 0
    return sig


def _count_calls(obj: object, name: str) -> list[tuple[object, ...]]:
    """Wrap the bound method ``obj.name`` (an instance attribute of the Processor facade) so
    each call's arguments are recorded."""
    calls: list[tuple[object, ...]] = []
    real: Callable[..., object] = getattr(obj, name)

    def wrapper(*args: object) -> object:
        calls.append(args)
        return real(*args)

    setattr(obj, name, wrapper)
    return calls


# -- sgx_encl_init: the reserved masks from CPUID ------------------------------------------------


def test_init_bit_under_the_mask_is_einval_before_einit() -> None:
    """sgx_encl_init: SIGSTRUCT.ATTRIBUTES & ATTRIBUTEMASK & sgx_attributes_reserved_mask →
    -EINVAL, the mask being ~CPUID.(12H,1):EBX:EAX | SGX_ATTR_RESERVED_MASK (sgx_drv_init).
    CPUID does not report INIT, so INIT under the mask is refused before any EINIT."""
    driver = platform()
    eax, ebx, _, _ = driver.cpu.cpuid(0x12, 1)
    assert not (ebx << 32 | eax) & AttributeFlag.INIT
    raw = Raw.open(driver)
    sig = _built(raw, sig_flags=PROD | int(AttributeFlag.INIT))
    einits = _count_calls(driver.cpu, "einit")
    with expect_errno(errno.EINVAL):
        raw.init(sig)
    assert einits == []


def test_kss_under_the_mask_follows_cpuid() -> None:
    """sgx_encl_init with the CPUID-derived mask: KSS is reserved on a part whose CPUID lacks
    it (-EINVAL before EINIT) and passes the driver on a KSS part."""
    for kss, expected in ((False, errno.EINVAL), (True, 0)):
        driver = platform(kss=kss)
        raw = Raw.open(driver)
        image_flags = PROD | int(AttributeFlag.KSS)
        einits = _count_calls(driver.cpu, "einit")
        if kss:
            sig = _built(raw, sig_flags=image_flags)
            assert raw.init(sig) == expected
            assert len(einits) == 1
        else:
            sig = _built(raw)  # the SECS cannot carry KSS here: only the SIGSTRUCT asks
            with expect_errno(expected):
                raw.init(sign_image_like(sig, image_flags))
            assert einits == []


def sign_image_like(sig: Sigstruct, flags: int) -> Sigstruct:
    """The same enclave's SIGSTRUCT re-signed with other ATTRIBUTES.FLAGS (mask all ones)."""
    from sgxlaunch.sigstruct import sign
    from tests.support.keys import signer

    body = sig.replace(attributes=Attributes(flags=flags, xfrm=sig.attributes.xfrm))
    return sign(body, signer("app"))


# -- sgx_vma_access ---------------------------------------------------------------------------


def _loaded(flags: int) -> LoadedEnclave:
    driver = platform()
    image, sig = program(flags=flags)
    driver.cpu.register_program(sig.enclavehash, MemoryProgram)
    return load(driver.new_process(), image, sig)


def test_ptrace_on_a_non_debug_enclave_is_efault_before_any_edbgrd() -> None:
    """sgx_vma_access: !SGX_ENCL_DEBUG → -EFAULT, before sgx_encl_debug_read runs."""
    enclave = _loaded(PROD)
    cpu = enclave.process.cpu
    reads = _count_calls(cpu, "edbgrd")
    writes = _count_calls(cpu, "edbgwr")
    with expect_errno(errno.EFAULT):
        enclave.process.debug_read(enclave.baseaddr + 0x3000, 8)
    with expect_errno(errno.EFAULT):
        enclave.process.debug_write(enclave.baseaddr + 0x3000, b"12345678")
    assert reads == [] and writes == []


def test_ptrace_write_is_read_modify_write_at_any_alignment() -> None:
    """sgx_vma_access: per word, sgx_encl_debug_read, the new bytes copied in at their offset,
    sgx_encl_debug_write: a 3-byte write at an odd address changes those 3 bytes only."""
    enclave = _loaded(DEBUG)
    data = enclave.baseaddr + 0x3000
    enclave.ecall(0, struct.pack("<Q", 0x3000) + bytes(range(1, 17)))
    cpu = enclave.process.cpu
    reads = _count_calls(cpu, "edbgrd")
    writes = _count_calls(cpu, "edbgwr")
    enclave.process.debug_write(data + 6, b"\xaa\xbb\xcc")  # spans two words
    assert len(reads) == 2 and len(writes) == 2
    expected = bytes(range(1, 7)) + b"\xaa\xbb\xcc" + bytes(range(10, 17))
    assert enclave.ecall(1, struct.pack("<QQ", 0x3000, 16)) == expected
    assert enclave.process.debug_read(data + 5, 5) == b"\x06\xaa\xbb\xcc\x0a"


# -- sgx_ioctl and the SGX2 ioctls ------------------------------------------------------------


@pytest.mark.parametrize(
    "cmd",
    [
        uapi.SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS,
        uapi.SGX_IOC_ENCLAVE_MODIFY_TYPES,
        uapi.SGX_IOC_ENCLAVE_REMOVE_PAGES,
    ],
)
def test_sgx2_ioctls_on_a_part_without_sgx2_are_enodev(cmd: int) -> None:
    """sgx_ioc_sgx2_ready: CPUID.(12H,0):EAX[1] clear → -ENODEV (not ENOTTY: the commands
    exist in sgx_ioctl), even before the enclave is initialized."""
    driver = platform()
    assert not driver.cpu.cpuid(0x12, 0)[0] & 0x2
    raw = Raw.open(driver)
    with expect_errno(errno.ENODEV):
        raw.ioctl(cmd, bytes(40))


def test_busy_enclave_answers_ebusy_before_an_unknown_command() -> None:
    """sgx_ioctl: test_and_set_bit(SGX_ENCL_IOCTL) → -EBUSY comes before the switch's
    default -ENOIOCTLCMD (ENOTTY to user space)."""
    driver = platform()
    raw = Raw.open(driver)
    sig = _built(raw)
    seen: list[int] = []

    def reenter(_attempt: InitAttempt) -> None:
        for cmd in (0xC008A4FF, uapi.SGX_IOC_ENCLAVE_REMOVE_PAGES):
            try:
                raw.process.ioctl(raw.fd, cmd, raw.arg)
            except DriverError as exc:
                seen.append(exc.errno)

    driver.observers.append(reenter)
    assert raw.init(sig) == 0
    assert seen == [errno.EBUSY, errno.EBUSY]
    with expect_errno(errno.ENOTTY):  # not busy any more: the unknown command itself
        raw.process.ioctl(raw.fd, 0xC008A4FF, raw.arg)


# -- errno order --------------------------------------------------------------------------------


def test_init_state_is_checked_before_the_argument_is_copied() -> None:
    """sgx_ioc_enclave_init: !SGX_ENCL_CREATED || SGX_ENCL_INITIALIZED → -EINVAL, before
    copy_from_user(&init_arg) → -EFAULT. INIT_TOKEN (the extension) follows the same order."""
    driver = platform("owner")
    raw = Raw.open(driver)
    unmapped = 0x5000_0000
    with expect_errno(errno.EINVAL):
        raw.process.ioctl(raw.fd, uapi.SGX_IOC_ENCLAVE_INIT, unmapped)
    with expect_errno(errno.EINVAL):
        raw.process.ioctl(raw.fd, uapi.SGX_IOC_ENCLAVE_INIT_TOKEN, unmapped)
    assert raw.create(small_secs()) == 0
    with expect_errno(errno.EFAULT):  # created now: the copy is what fails
        raw.process.ioctl(raw.fd, uapi.SGX_IOC_ENCLAVE_INIT, unmapped)


def test_add_pages_duplicate_offset_wins_over_the_source_checks() -> None:
    """sgx_encl_add_page: xa_insert of an offset already present → -EBUSY comes before
    __sgx_encl_add_page's find_vma (-EFAULT) and VM_MAYEXEC (-EACCES) source checks."""
    raw = Raw.open(platform())
    assert raw.create(small_secs()) == 0
    assert raw.add(0) == 0
    noexec = raw.process.alloc(PAGE_SIZE, noexec=True)
    with expect_errno(errno.EBUSY):
        raw.add(0, src=noexec)
    with expect_errno(errno.EACCES):  # a new offset: the source check itself
        raw.add(PAGE_SIZE, src=noexec)
    unmapped = 0x5000_0000
    with expect_errno(errno.EBUSY):
        raw.add(0, src=unmapped)


# -- sgx_encl_init's retry loop -----------------------------------------------------------------


def _interrupted_einit(driver_cpu: object, interrupts: int) -> list[bytes]:
    """Make the next ``interrupts`` EINITs meet a pending interrupt; record the launch-key MSRs
    each attempt saw, and scramble them after each so only a rewrite makes the next one right."""
    cpu = driver_cpu
    real = cpu.einit  # type: ignore[attr-defined]
    seen: list[bytes] = []

    def einit(*args: int) -> SgxStatus:
        seen.append(cpu.lepubkeyhash)  # type: ignore[attr-defined]
        if len(seen) <= interrupts:
            cpu.pend_interrupt()  # type: ignore[attr-defined]
        status: SgxStatus = real(*args)
        cpu.set_lepubkeyhash(bytes(32))  # type: ignore[attr-defined]
        return status

    cpu.einit = einit  # type: ignore[attr-defined]
    return seen


def test_einit_retried_on_unmasked_event_then_eperm_never_eagain() -> None:
    """sgx_encl_init: SGX_EINIT_SLEEP_COUNT (50) × SGX_EINIT_SPIN_COUNT (20) attempts while
    EINIT answers SGX_UNMASKED_EVENT, sgx_update_lepubkeyhash before every one; still
    interrupted after 1000 → -EPERM with the status (never -EAGAIN)."""
    driver = platform()
    raw = Raw.open(driver)
    sig = _built(raw)
    seen = _interrupted_einit(driver.cpu, interrupts=10_000)
    with pytest.raises(DriverError) as err:
        raw.init(sig)
    assert err.value.errno == errno.EPERM and err.value.status == SgxStatus.UNMASKED_EVENT
    assert len(seen) == 50 * 20
    assert set(seen) == {sig.mrsigner}  # the MSRs were rewritten before each attempt


def test_einit_retry_succeeds_on_the_last_attempt() -> None:
    """sgx_encl_init: an EINIT that succeeds on attempt 1000 initializes the enclave."""
    driver = platform()
    raw = Raw.open(driver)
    sig = _built(raw)
    seen = _interrupted_einit(driver.cpu, interrupts=50 * 20 - 1)
    assert raw.init(sig) == 0
    assert len(seen) == 1000 and set(seen) == {sig.mrsigner}
