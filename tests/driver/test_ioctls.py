"""The driver's ioctls mirror mainline's checks one by one, each asserting the errno."""

from __future__ import annotations

import errno

import pytest

from sgxlaunch.arch import Attributes
from sgxlaunch.arch.constants import PAGE_SIZE, AttributeFlag, SgxStatus
from sgxlaunch.driver import DriverError, uapi
from tests.support.cpu import PROD
from tests.support.driver import (
    REG_R,
    REG_RW,
    TCS,
    Raw,
    expect_errno,
    platform,
    program,
    small_secs,
)


@pytest.fixture
def raw() -> Raw:
    return Raw.open(platform())


def created(raw: Raw) -> Raw:
    assert raw.create(small_secs()) == 0
    return raw


def loaded_and_initialized(raw: Raw) -> tuple[Raw, object]:
    image, sig = program()
    from sgxlaunch.cpu import secs_for

    secs = secs_for(sig, size=image.size, ssaframesize=image.ssaframesize, baseaddr=image.size * 8)
    assert raw.create(secs) == 0
    for page in image.pages:
        raw.process.write(raw.src, page.data)
        assert raw.add(page.offset, flags=page.secinfo_flags) == 0
    assert raw.init(sig) == 0
    return raw, sig


# -- ENCLAVE_CREATE -------------------------------------------------------------------------


def test_create_twice_is_einval(raw: Raw) -> None:
    created(raw)
    with expect_errno(errno.EINVAL):
        raw.create(small_secs())


@pytest.mark.parametrize("size", [0, 0x3000, 0x9000])
def test_create_size_not_power_of_two_is_einval(raw: Raw, size: int) -> None:
    with expect_errno(errno.EINVAL):
        raw.create(small_secs().replace(size=size))


def test_create_invalid_secs_faults_to_eio(raw: Raw) -> None:
    bad = small_secs().replace(reserved4=b"\x01" + bytes(3833))
    with expect_errno(errno.EIO):
        raw.create(bad)


def test_create_unaligned_base_faults_to_eio(raw: Raw) -> None:
    with expect_errno(errno.EIO):
        raw.create(small_secs().replace(baseaddr=0x1000))


def test_create_unmapped_argument_is_efault(raw: Raw) -> None:
    with expect_errno(errno.EFAULT):
        raw.process.ioctl(raw.fd, uapi.SGX_IOC_ENCLAVE_CREATE, 0xDEAD0000)
    raw.process.write(raw.arg, uapi.CREATE_ARG.pack(0xDEAD0000))
    with expect_errno(errno.EFAULT):
        raw.process.ioctl(raw.fd, uapi.SGX_IOC_ENCLAVE_CREATE, raw.arg)


# -- ENCLAVE_ADD_PAGES ----------------------------------------------------------------------


def test_add_pages_before_create_is_einval(raw: Raw) -> None:
    with expect_errno(errno.EINVAL):
        raw.add(0)


def test_add_pages_after_init_is_einval(raw: Raw) -> None:
    raw, _ = loaded_and_initialized(raw)
    with expect_errno(errno.EINVAL):
        raw.add(0x5000)


@pytest.mark.parametrize("offset", [0x10, 0x800, PAGE_SIZE + 8])
def test_add_pages_misaligned_offset_is_einval(raw: Raw, offset: int) -> None:
    with expect_errno(errno.EINVAL):
        created(raw).add(offset)


def test_add_pages_misaligned_source_is_einval(raw: Raw) -> None:
    with expect_errno(errno.EINVAL):
        created(raw).add(0, src=raw.src + 0x100)


@pytest.mark.parametrize("length", [0, 100, PAGE_SIZE + 1])
def test_add_pages_zero_or_unaligned_length_is_einval(raw: Raw, length: int) -> None:
    with expect_errno(errno.EINVAL):
        created(raw).add(0, length=length)


def test_add_pages_past_the_enclave_size_is_einval(raw: Raw) -> None:
    created(raw)
    with expect_errno(errno.EINVAL):
        raw.add(0x8000)
    with expect_errno(errno.EINVAL):
        raw.add(0x7000, length=2 * PAGE_SIZE)


def test_add_page_already_present_is_ebusy_and_count_reports_progress(raw: Raw) -> None:
    created(raw)
    assert raw.add(0x1000) == 0
    assert raw.count() == PAGE_SIZE
    with expect_errno(errno.EBUSY):
        raw.add(0, length=2 * PAGE_SIZE)
    assert raw.count() == PAGE_SIZE  # page 0 was added before page 1 collided


@pytest.mark.parametrize("perm", [0b001, 0b011, 0b100])
def test_add_tcs_with_permissions_is_einval(raw: Raw, perm: int) -> None:
    with expect_errno(errno.EINVAL):
        created(raw).add(0, flags=TCS | perm)


def test_add_write_without_read_is_einval(raw: Raw) -> None:
    with expect_errno(errno.EINVAL):
        created(raw).add(0, flags=(REG_RW & ~1))


@pytest.mark.parametrize("bit", [6, 7, 16, 40, 63])
def test_add_secinfo_reserved_flag_bit_is_einval(raw: Raw, bit: int) -> None:
    with expect_errno(errno.EINVAL):
        created(raw).add(0, flags=REG_R | (1 << bit))


@pytest.mark.parametrize("byte", [8, 30, 63])
def test_add_secinfo_reserved_byte_is_einval(raw: Raw, byte: int) -> None:
    secinfo = bytearray(REG_R.to_bytes(8, "little") + bytes(56))
    secinfo[byte] = 1
    with expect_errno(errno.EINVAL):
        created(raw).add(0, secinfo_bytes=bytes(secinfo))


@pytest.mark.parametrize("page_type", [0, 3, 4, 9])
def test_add_page_type_not_reg_or_tcs_is_einval(raw: Raw, page_type: int) -> None:
    with expect_errno(errno.EINVAL):
        created(raw).add(0, flags=(page_type << 8) | 1)


def test_add_unmapped_source_is_efault(raw: Raw) -> None:
    with expect_errno(errno.EFAULT):
        created(raw).add(0, src=0x5000_0000)


def test_add_unmapped_secinfo_is_efault(raw: Raw) -> None:
    created(raw)
    payload = uapi.ADD_PAGES_ARG.pack(raw.src, 0, PAGE_SIZE, 0x5000_0000, 1, 0)
    with expect_errno(errno.EFAULT):
        raw.ioctl(uapi.SGX_IOC_ENCLAVE_ADD_PAGES, payload)


def test_add_from_noexec_mapping_is_eacces(raw: Raw) -> None:
    created(raw)
    src = raw.process.alloc(PAGE_SIZE, noexec=True)
    with expect_errno(errno.EACCES):
        raw.add(0, src=src)


# -- ENCLAVE_INIT -----------------------------------------------------------------------------


def test_init_before_create_is_einval(raw: Raw) -> None:
    _, sig = program()
    with expect_errno(errno.EINVAL):
        raw.init(sig)


def test_init_twice_is_einval(raw: Raw) -> None:
    raw, sig = loaded_and_initialized(raw)
    with expect_errno(errno.EINVAL):
        raw.init(sig)  # type: ignore[arg-type]


def test_init_bad_vendor_is_einval(raw: Raw) -> None:
    _image, sig = program()
    created(raw)
    with expect_errno(errno.EINVAL):
        raw.init(sig.replace(vendor=0x1234))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("attributes", Attributes(flags=PROD | (1 << 3), xfrm=3)),
        ("attributes", Attributes(flags=PROD | (1 << 40), xfrm=3)),
        ("attributes", Attributes(flags=PROD, xfrm=3 | (1 << 9))),
        ("miscselect", 0x4),
    ],
    ids=["flags-bit3", "flags-bit40", "xfrm-pkru", "misc-bit2"],
)
def test_init_reserved_attribute_misc_xfrm_bits_are_einval(
    raw: Raw, field: str, value: object
) -> None:
    _image, sig = program()
    created(raw)
    with expect_errno(errno.EINVAL):
        raw.init(sig.replace(**{field: value}))


def test_init_provisionkey_without_provision_fd_is_eacces_and_with_one_succeeds() -> None:
    driver = platform()
    image, sig = program(flags=PROD | int(AttributeFlag.PROVISIONKEY))
    from sgxlaunch.driver import load

    with pytest.raises(DriverError) as err:
        load(driver.new_process(), image, sig)
    assert err.value.errno == errno.EACCES
    enclave = load(driver.new_process(), image, sig, provision=True)
    assert enclave.mrenclave == sig.enclavehash


def test_provision_with_a_non_provision_fd_is_einval(raw: Raw) -> None:
    other = raw.process.open(uapi.DEV_SGX_ENCLAVE)
    with expect_errno(errno.EINVAL):
        raw.ioctl(uapi.SGX_IOC_ENCLAVE_PROVISION, uapi.PROVISION_ARG.pack(other))
    with expect_errno(errno.EINVAL):
        raw.ioctl(uapi.SGX_IOC_ENCLAVE_PROVISION, uapi.PROVISION_ARG.pack(999))


def test_init_einittoken_key_is_eacces_in_permissive_mode() -> None:
    driver = platform()
    image, sig = program(flags=PROD | int(AttributeFlag.EINITTOKEN_KEY))
    from sgxlaunch.driver import load

    with pytest.raises(DriverError) as err:
        load(driver.new_process(), image, sig)
    assert err.value.errno == errno.EACCES


def test_init_bad_signature_is_eperm_with_status() -> None:
    image, sig = program()
    other = Raw.open(platform())
    from sgxlaunch.cpu import secs_for

    secs = secs_for(sig, size=image.size, ssaframesize=image.ssaframesize, baseaddr=image.size)
    other.create(secs)
    for page in image.pages:
        other.process.write(other.src, page.data)
        other.add(page.offset, flags=page.secinfo_flags)
    forged = sig.replace(isvsvn=sig.isvsvn + 1)
    with pytest.raises(DriverError) as err:
        other.init(forged)
    assert err.value.errno == errno.EPERM
    assert err.value.status == SgxStatus.INVALID_SIGNATURE


def test_init_token_in_permissive_mode_is_einval(raw: Raw) -> None:
    _, sig = program()
    created(raw)
    with expect_errno(errno.EINVAL):
        raw.init_token(sig, bytes(304))


def test_mainline_init_in_owner_mode_is_eperm() -> None:
    raw = Raw.open(platform("owner"))
    _, sig = program()
    created(raw)
    with expect_errno(errno.EPERM):
        raw.init(sig)


def test_init_unmapped_sigstruct_is_efault(raw: Raw) -> None:
    created(raw)
    with expect_errno(errno.EFAULT):
        raw.ioctl(uapi.SGX_IOC_ENCLAVE_INIT, uapi.INIT_ARG.pack(0x5000_0000))


# -- dispatch --------------------------------------------------------------------------------


def test_unknown_ioctl_is_enotty(raw: Raw) -> None:
    with expect_errno(errno.ENOTTY):
        raw.process.ioctl(raw.fd, 0xC008A4FF, raw.arg)
    with expect_errno(errno.ENOTTY):
        raw.process.ioctl(raw.fd, uapi.SGX_IOC_ENCLAVE_CREATE ^ 0x00010000, raw.arg)


def test_ioctl_on_provision_device_is_enotty(raw: Raw) -> None:
    pfd = raw.process.open(uapi.DEV_SGX_PROVISION)
    with expect_errno(errno.ENOTTY):
        raw.process.ioctl(pfd, uapi.SGX_IOC_ENCLAVE_CREATE, raw.arg)


def test_bad_fd_is_ebadf(raw: Raw) -> None:
    with expect_errno(errno.EBADF):
        raw.process.ioctl(77, uapi.SGX_IOC_ENCLAVE_CREATE, raw.arg)


def test_concurrent_ioctl_on_one_enclave_is_ebusy() -> None:
    driver = platform()
    raw = Raw.open(driver)
    image, sig = program()
    from sgxlaunch.cpu import secs_for

    secs = secs_for(sig, size=image.size, ssaframesize=image.ssaframesize, baseaddr=image.size)
    raw.create(secs)
    for page in image.pages:
        raw.process.write(raw.src, page.data)
        raw.add(page.offset, flags=page.secinfo_flags)
    seen: list[int] = []

    def reenter(_attempt: object) -> None:
        try:
            raw.process.ioctl(raw.fd, uapi.SGX_IOC_ENCLAVE_ADD_PAGES, raw.arg)
        except DriverError as exc:
            seen.append(exc.errno)

    driver.observers.append(reenter)
    assert raw.init(sig) == 0
    assert seen == [errno.EBUSY]


def test_unknown_device_is_enoent() -> None:
    with expect_errno(errno.ENOENT):
        platform().new_process().open("/dev/sgx")


# -- mmap / mprotect --------------------------------------------------------------------------


def test_mmap_private_is_einval(raw: Raw) -> None:
    with expect_errno(errno.EINVAL):
        raw.process.mmap(0, PAGE_SIZE, uapi.PROT_READ, uapi.MAP_PRIVATE, raw.fd)


def test_mmap_beyond_page_permissions_is_eacces(raw: Raw) -> None:
    created(raw)
    assert raw.add(0x1000, flags=REG_R) == 0
    base = raw.base
    shared = uapi.MAP_SHARED | uapi.MAP_FIXED
    raw.process.mmap(base + 0x1000, PAGE_SIZE, uapi.PROT_READ, shared, raw.fd)
    with expect_errno(errno.EACCES):
        raw.process.mmap(base + 0x1000, PAGE_SIZE, uapi.PROT_READ | uapi.PROT_WRITE, shared, raw.fd)
    with expect_errno(errno.EACCES):
        raw.process.mprotect(base + 0x1000, PAGE_SIZE, uapi.PROT_READ | uapi.PROT_EXEC)
    raw.process.mprotect(base + 0x1000, PAGE_SIZE, uapi.PROT_READ)


def test_mmap_tcs_allows_read_write_only(raw: Raw) -> None:
    created(raw)
    assert raw.add(0, flags=TCS) == 0
    shared = uapi.MAP_SHARED | uapi.MAP_FIXED
    raw.process.mmap(raw.base, PAGE_SIZE, uapi.PROT_READ | uapi.PROT_WRITE, shared, raw.fd)
    with expect_errno(errno.EACCES):
        raw.process.mmap(raw.base, PAGE_SIZE, uapi.PROT_EXEC, shared, raw.fd)


def test_mmap_outside_elrange_after_init_is_eacces(raw: Raw) -> None:
    raw, _ = loaded_and_initialized(raw)
    assert raw.base  # the SECS.BASEADDR the enclave was created with
    with expect_errno(errno.EACCES):
        raw.process.mmap(
            raw.base - PAGE_SIZE,
            2 * PAGE_SIZE,
            uapi.PROT_READ,
            uapi.MAP_SHARED | uapi.MAP_FIXED,
            raw.fd,
        )


def test_read_implies_exec_personality_is_eacces(raw: Raw) -> None:
    raw.process.read_implies_exec = True
    with expect_errno(errno.EACCES):
        raw.process.mmap(0, PAGE_SIZE, uapi.PROT_READ, uapi.MAP_SHARED, raw.fd)


def test_close_releases_epc() -> None:
    driver = platform()
    free_before = driver.stats().epc_free
    image, sig = program()
    from sgxlaunch.driver import load

    enclave = load(driver.new_process(), image, sig)
    assert driver.stats().epc_free < free_before
    enclave.close()
    assert driver.stats().epc_free == free_before


def test_signed_image_used_by_helpers_is_valid() -> None:
    import hashlib

    from sgxlaunch.formats.sgxs import write_sgxs

    image, sig = program()
    assert hashlib.sha256(write_sgxs(image)).digest() == sig.enclavehash
