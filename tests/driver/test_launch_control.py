"""Launch-control modes: permissive (mainline), owner (tokens), locked-hash parts; vectors."""

from __future__ import annotations

import errno

import pytest

from sgxlaunch.arch import EinitToken, Sigstruct
from sgxlaunch.arch.constants import SgxStatus
from sgxlaunch.driver import DriverError, InitAttempt, LoadFailed, load
from sgxlaunch.errors import UsageError
from sgxlaunch.formats.sgxs import SgxsImage, parse_sgxs
from tests.conftest import shared_vectors
from tests.support.driver import (
    launch_enclave,
    le_mrsigner,
    mint,
    platform,
    program,
    secs_attributes_of,
)

VECTOR_PAIRS = [
    "generated/case1_defaults",
    "generated/case2_prodid_svn_debug",
    "generated/case3_misc_xfrm_swdef",
    "generated/case4_kss_like_attrs",
    "fortanix/sgxs-tools__src__sgx_detect__tests__test_enclave",
]


def vector(name: str) -> tuple[SgxsImage, Sigstruct]:
    base = shared_vectors() / name
    image = parse_sgxs((base.parent / (base.name + ".sgxs")).read_bytes())
    sig = Sigstruct.from_bytes((base.parent / (base.name + ".sig")).read_bytes())
    return image, sig


def test_every_pair_in_the_vectors_is_covered() -> None:
    found = sorted(
        str(p.relative_to(shared_vectors()))[: -len(".sgxs")]
        for p in shared_vectors().rglob("*.sgxs")
        if p.with_suffix(".sig").exists()
    )
    assert found == sorted(VECTOR_PAIRS)


@pytest.mark.parametrize("name", VECTOR_PAIRS)
def test_vector_initializes_in_permissive_mode(name: str) -> None:
    driver = platform(kss=True)
    image, sig = vector(name)
    enclave = load(driver.new_process(), image, sig)
    assert enclave.mrenclave == sig.enclavehash
    assert driver.cpu.lepubkeyhash == sig.mrsigner  # mainline rewrote the MSRs for it


@pytest.mark.parametrize("name", VECTOR_PAIRS)
def test_vector_in_owner_mode_needs_a_token_and_initializes_with_one(name: str) -> None:
    driver = platform("owner", kss=True)
    le = launch_enclave(driver)
    image, sig = vector(name)
    with pytest.raises(LoadFailed) as plain:
        load(driver.new_process(), image, sig)
    assert plain.value.errno == errno.EPERM
    with pytest.raises(LoadFailed) as zero:
        load(driver.new_process(), image, sig, token=bytes(EinitToken.SIZE))
    assert zero.value.errno == errno.EPERM
    assert zero.value.status == SgxStatus.INVALID_EINITTOKEN
    assert any("not the launch-enclave signer" in line for line in zero.value.detail)
    token = mint(le, sig, secs_attributes_of(driver, image, sig))
    enclave = load(driver.new_process(), image, sig, token=token)
    assert enclave.mrsigner == sig.mrsigner
    assert driver.cpu.lepubkeyhash == le_mrsigner()  # never rewritten in owner mode


def test_owner_mode_grants_einittoken_key_to_the_launch_enclave_only() -> None:
    driver = platform("owner")
    launch_enclave(driver)  # EINITTOKEN_KEY set; loads
    from sgxlaunch.arch.constants import AttributeFlag
    from tests.support.cpu import PROD

    image, sig = program(flags=PROD | int(AttributeFlag.EINITTOKEN_KEY))
    with pytest.raises(LoadFailed) as err:
        load(driver.new_process(), image, sig, token=bytes(304))
    assert err.value.errno == errno.EACCES


def test_token_for_one_enclave_refused_for_another() -> None:
    from sgxlaunch.cpu import program_image
    from sgxlaunch.driver import as_sgxs_image
    from tests.support.cpu import KeyProbe, sign_image

    driver = platform("owner")
    le = launch_enclave(driver)
    image_a, sig_a = program("app")
    token_a = mint(le, sig_a, secs_attributes_of(driver, image_a, sig_a))
    # other code, same signer → MRENCLAVE differs → INVALID_MEASUREMENT (EINIT step 19)
    other = program_image(KeyProbe)
    sig_b = sign_image(other, "app")
    with pytest.raises(LoadFailed) as err:
        load(driver.new_process(), as_sgxs_image(other), sig_b, token=token_a)
    assert err.value.status == SgxStatus.INVALID_MEASUREMENT
    assert any("token MRENCLAVE" in line for line in err.value.detail)
    # same code, other signer → MRSIGNER differs → INVALID_MEASUREMENT (EINIT step 19)
    image_c, sig_c = program("other")
    with pytest.raises(LoadFailed) as err2:
        load(driver.new_process(), image_c, sig_c, token=token_a)
    assert err2.value.status == SgxStatus.INVALID_MEASUREMENT
    assert any("token MRSIGNER" in line for line in err2.value.detail)
    # other attributes (DEBUG) → INVALID_ATTRIBUTE (EINIT step 20)
    from sgxlaunch.arch.constants import AttributeFlag
    from tests.support.cpu import PROD

    image_d, sig_d = program("app", flags=PROD | int(AttributeFlag.DEBUG))
    with pytest.raises(LoadFailed) as err3:
        load(driver.new_process(), image_d, sig_d, token=token_a)
    assert err3.value.status == SgxStatus.INVALID_ATTRIBUTE
    assert any("token ATTRIBUTES" in line for line in err3.value.detail)


def test_token_binds_mrenclave_mrsigner_attributes_but_not_isvprodid() -> None:
    """SDM semantics worth knowing: a token does not cover ISVPRODID/ISVSVN, so it also
    launches a re-signed SIGSTRUCT of the same code and signer with other ISV fields."""
    driver = platform("owner")
    le = launch_enclave(driver)
    image_a, sig_a = program("app")
    token = mint(le, sig_a, secs_attributes_of(driver, image_a, sig_a))
    image_b, sig_b = program("app", isvprodid=9)
    assert load(driver.new_process(), image_b, sig_b, token=token).mrsigner == sig_a.mrsigner


def test_token_from_another_cpu_refused() -> None:
    driver_a = platform("owner", seed=b"cpu-A-seed-0123456789")
    driver_b = platform("owner", seed=b"cpu-B-seed-9876543210")
    le_a = launch_enclave(driver_a)
    image, sig = program()
    token = mint(le_a, sig, secs_attributes_of(driver_a, image, sig))
    with pytest.raises(LoadFailed) as err:
        load(driver_b.new_process(), image, sig, token=token)
    assert err.value.status == SgxStatus.INVALID_EINITTOKEN
    assert any("MAC does not verify" in line for line in err.value.detail)
    load(driver_a.new_process(), image, sig, token=token)


def test_token_after_the_owner_changes_the_launch_enclave_signer_refused() -> None:
    driver = platform("owner")
    le = launch_enclave(driver)
    image, sig = program()
    token = mint(le, sig, secs_attributes_of(driver, image, sig))
    from tests.support.keys import mrsigner

    driver.configure_launch_control("owner", mrsigner("fourth"))
    with pytest.raises(LoadFailed) as err:
        load(driver.new_process(), image, sig, token=token)
    assert err.value.status == SgxStatus.INVALID_EINITTOKEN


def test_token_with_a_field_altered_refused() -> None:
    driver = platform("owner")
    le = launch_enclave(driver)
    image, sig = program()
    token = EinitToken.from_bytes(mint(le, sig, secs_attributes_of(driver, image, sig)))
    altered = token.replace(keyid=bytes(32))
    with pytest.raises(LoadFailed) as err:
        load(driver.new_process(), image, sig, token=altered)
    assert err.value.status == SgxStatus.INVALID_EINITTOKEN


def test_init_token_reports_the_sgx_status_in_result() -> None:
    from tests.support.driver import Raw

    driver = platform("owner")
    raw = Raw.open(driver)
    image, sig = program()
    from sgxlaunch.cpu import secs_for

    raw.create(secs_for(sig, size=image.size, ssaframesize=image.ssaframesize, baseaddr=image.size))
    for page in image.pages:
        raw.process.write(raw.src, page.data)
        raw.add(page.offset, flags=page.secinfo_flags)
    with pytest.raises(DriverError) as err:
        raw.init_token(sig, bytes(304))
    assert err.value.errno == errno.EPERM
    assert raw.result() == SgxStatus.INVALID_EINITTOKEN


def test_locked_hash_part_refuses_permissive_and_works_in_owner_mode_with_firmware_hash() -> None:
    driver = platform(firmware="locked-hash", firmware_lepubkeyhash=le_mrsigner())
    assert not driver.lc_writable
    with pytest.raises(DriverError) as err:
        driver.new_process().open("/dev/sgx_enclave")
    assert err.value.errno == errno.ENOENT
    with pytest.raises(UsageError):
        driver.configure_launch_control("owner", bytes(32))
    driver.configure_launch_control("owner", le_mrsigner())
    le = launch_enclave(driver)
    image, sig = program()
    token = mint(le, sig, secs_attributes_of(driver, image, sig))
    assert load(driver.new_process(), image, sig, token=token).mrenclave == sig.enclavehash


def test_unlocked_firmware_is_locked_by_the_kernel_with_launch_control() -> None:
    driver = platform(firmware="unlocked")
    assert driver.lc_writable
    image, sig = program()
    load(driver.new_process(), image, sig)


def test_observers_see_every_init_attempt() -> None:
    driver = platform("owner")
    seen: list[InitAttempt] = []
    driver.observers.append(seen.append)
    le = launch_enclave(driver)
    image, sig = program()
    with pytest.raises(LoadFailed):
        load(driver.new_process(), image, sig)
    token = mint(le, sig, secs_attributes_of(driver, image, sig))
    load(driver.new_process(), image, sig, token=token)
    assert [(a.ioctl, a.errno) for a in seen] == [
        ("ENCLAVE_INIT_TOKEN", 0),
        ("ENCLAVE_INIT", errno.EPERM),
        ("ENCLAVE_INIT_TOKEN", 0),
    ]
    assert seen[2].token == token
    assert seen[1].status is None
    assert seen[2].status == SgxStatus.SUCCESS
