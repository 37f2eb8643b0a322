"""The owner's EINIT-time page checks (issue 17; ``driver/initpages.py``).

ADD_PAGES records per page whether it was measured in full and its SECINFO R/W/X. Owner-mode
INIT refuses with EPERM, before EINIT runs, an executable page that was not measured in full
unless the allowing rule says ``unmeasured_exec: allow``, and a measured RWX page unless it
says ``rwx_pages: allow``; the refusal reaches the launch log with the page count and offsets.
Spec "1"/"2" policies (code/allow/allow) and permissive mode behave as mainline.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest

from sgxlaunch.arch.constants import PAGE_SIZE, PageType, secinfo_flags
from sgxlaunch.arch.structs import Sigstruct
from sgxlaunch.driver import uapi
from sgxlaunch.driver.initpages import describe_offsets
from sgxlaunch.driver.loader import LoadFailed
from sgxlaunch.formats.sgxs import SgxsImage
from sgxlaunch.launch.log import OUTCOME
from sgxlaunch.launch.platform import Platform
from tests.support.driver import Raw, small_secs
from tests.support.driver import platform as raw_platform
from tests.support.pages import (
    FIRST_EXTRA,
    MEASURED_RWX,
    PARTLY_MEASURED_RX,
    UNMEASURED_RW,
    UNMEASURED_RWX,
    UNMEASURED_RX,
    R,
    W,
    X,
    image_with_pages,
)
from tests.support.platform import Owner, allow_rule


def _platform(spec_version: str = "3", **rule: Any) -> Platform:
    """Owner mode under a policy of ``spec_version`` allowing the "app" signer with
    ``rule``'s fields."""
    owner = Owner()
    owner.set_up_launch_enclave()
    platform = owner.platform()
    _, sig = image_with_pages([])
    policy = owner.policy(
        version=1,
        allow=[allow_rule(sig, **rule)],
        issued=spec_version != "1",
        spec_version=spec_version,
    )
    platform.install_policy(policy)
    platform.set_mode(owner.mode("owner", version=1))
    return owner.platform()


def _refused(platform: Platform, image: SgxsImage, sig: Sigstruct) -> LoadFailed:
    before = platform.status()["log_records"]
    with pytest.raises(LoadFailed) as info:
        platform.run(image, sig)
    # Owner-mode INIT refused it (kernel: the extension's check in sgx_ioc_enclave_init,
    # before sgx_encl_init calls EINIT), so no SGX status: EINIT never ran.
    assert info.value.step == "ENCLAVE_INIT_TOKEN"
    assert info.value.errno == errno.EPERM and info.value.status is None
    records = platform.log_records()
    assert len(records) == before + 2  # the attempt and its outcome
    return info.value


def _outcome(platform: Platform) -> dict[str, Any]:
    last = platform.log_records()[-1]
    assert last["kind"] == OUTCOME and last["outcome"] == "refused" and last["errno"] == "EPERM"
    assert last["sgx_status"] is None
    return last


def test_unmeasured_executable_page_refused_at_einit_under_deny() -> None:
    platform = _platform()
    image, sig = image_with_pages([UNMEASURED_RX])
    error = _refused(platform, image, sig)
    assert "1 page is executable but not measured" in error.message
    assert f"offsets 0x{FIRST_EXTRA:x}" in error.message
    assert "unmeasured_exec: deny" in error.message
    outcome = _outcome(platform)
    assert outcome["refused_pages"] == {"count": 1, "offsets": [f"0x{FIRST_EXTRA:x}"]}
    assert "unmeasured_exec: deny" in outcome["reason"]
    assert platform.verify_log() == len(platform.log_records())


def test_unmeasured_executable_page_runs_under_unmeasured_exec_allow() -> None:
    platform = _platform(unmeasured_exec="allow")
    image, sig = image_with_pages([UNMEASURED_RX])
    result = platform.run(image, sig)
    assert result.enclave is not None and result.enclave.mrenclave == sig.enclavehash


def test_partly_measured_executable_page_counts_as_unmeasured() -> None:
    """ENCLAVE_EXTEND over half the page: the other half's code is in no measurement."""
    platform = _platform()
    image, sig = image_with_pages([PARTLY_MEASURED_RX])
    assert "executable but not measured" in _refused(platform, image, sig).message


def test_measured_rwx_page_refused_at_einit_under_deny() -> None:
    platform = _platform()
    image, sig = image_with_pages([MEASURED_RWX], count=2)
    error = _refused(platform, image, sig)
    end = FIRST_EXTRA + 2 * PAGE_SIZE - 1
    assert f"2 pages are writable and executable (RWX) at offsets 0x{FIRST_EXTRA:x}-0x{end:x}" in (
        error.message
    )
    assert _outcome(platform)["refused_pages"]["count"] == 2


def test_measured_rwx_page_runs_under_rwx_pages_allow() -> None:
    platform = _platform(rwx_pages="allow")
    image, sig = image_with_pages([MEASURED_RWX])
    assert platform.run(image, sig).enclave is not None


def test_unmeasured_data_pages_need_no_allow() -> None:
    """An SDK heap (EADD without EEXTEND, RW-): not executable, nothing to refuse."""
    platform = _platform()
    image, sig = image_with_pages([UNMEASURED_RW], count=4)
    assert platform.run(image, sig).enclave is not None


@pytest.mark.parametrize(
    "count", [3, 40], ids=["sdk-reserved-mem-executable", "gramine-non-edmm-free-area"]
)
def test_unmeasured_rwx_free_area_needs_unmeasured_exec_allow(count: int) -> None:
    """The Intel SDK's ``ReservedMemExecutable=1`` region and Gramine's free area on a
    non-EDMM loader: pages EADDed RWX without SGX_PAGE_MEASURE. Refused under the spec "3"
    defaults (the log keeps the count and the first offsets); launched once the rule says
    ``unmeasured_exec: allow`` — ``rwx_pages`` is about measured pages and may stay deny."""
    platform = _platform()
    image, sig = image_with_pages([UNMEASURED_RWX], count=count)
    error = _refused(platform, image, sig)
    end = FIRST_EXTRA + count * PAGE_SIZE - 1
    assert f"{count} pages are executable but not measured" in error.message
    assert f"0x{FIRST_EXTRA:x}-0x{end:x}" in error.message
    refused = _outcome(platform)["refused_pages"]
    assert refused["count"] == count
    want = [f"0x{FIRST_EXTRA + k * PAGE_SIZE:x}" for k in range(min(count, 8))]
    assert refused["offsets"] == want

    allowed = _platform(unmeasured_exec="allow")
    assert allowed.run(image, sig).enclave is not None


def test_unmeasured_executable_pages_are_refused_before_rwx_ones() -> None:
    platform = _platform()
    image, sig = image_with_pages([MEASURED_RWX, UNMEASURED_RX])
    error = _refused(platform, image, sig)
    assert "executable but not measured" in error.message
    assert f"0x{FIRST_EXTRA + PAGE_SIZE:x}" in error.message
    allowed = _platform(unmeasured_exec="allow")
    assert "RWX" in _refused(allowed, image, sig).message


@pytest.mark.parametrize("spec_version", ["1", "2"])
def test_an_older_spec_policy_launches_unmeasured_and_rwx_pages(spec_version: str) -> None:
    """Policies signed before spec "3" keep their meaning: code/allow/allow."""
    platform = _platform(spec_version)
    image, sig = image_with_pages([UNMEASURED_RWX, MEASURED_RWX, UNMEASURED_RX])
    assert platform.run(image, sig).enclave is not None


def test_permissive_mode_launches_unmeasured_and_rwx_pages() -> None:
    """Mainline's behaviour: no owner, no EINIT-time page checks."""
    platform = Owner().platform()
    image, sig = image_with_pages([UNMEASURED_RWX, MEASURED_RWX, UNMEASURED_RX])
    assert platform.run(image, sig).enclave is not None


def test_offsets_are_named_as_ranges_with_a_bound() -> None:
    offsets = [0x1000, 0x2000, 0x3000, 0x5000] + [0x10000 + 0x2000 * k for k in range(10)]
    text = describe_offsets(offsets)
    assert text.startswith("0x1000-0x3fff, 0x5000, 0x10000, 0x12000")
    assert text.endswith("and 4 more ranges")


def test_add_pages_records_each_pages_secinfo_permissions_and_measurement() -> None:
    """What the EINIT-time checks read comes from the ioctls: SECINFO R/W/X as given to
    ADD_PAGES (a TCS has none), and SGX_PAGE_MEASURE (all 16 chunks) or not."""
    driver = raw_platform()
    raw = Raw.open(driver)
    assert raw.create(small_secs()) == 0
    rx = secinfo_flags(PageType.REG, R | X)
    rwx = secinfo_flags(PageType.REG, R | W | X)
    assert raw.add(0x0000, flags=secinfo_flags(PageType.TCS, 0)) == 0
    assert raw.add(0x1000, flags=rx) == 0
    assert raw.add(0x2000, flags=rwx, measure=False) == 0
    (enclave,) = driver.enclaves.values()
    pages = enclave.pages
    assert (pages[0x0000].secinfo_prot, pages[0x0000].fully_measured) == (0, True)
    assert (pages[0x1000].secinfo_prot, pages[0x1000].fully_measured) == (int(R | X), True)
    assert (pages[0x2000].secinfo_prot, pages[0x2000].measured) == (int(R | W | X), 0)


@pytest.mark.parametrize(("chunks", "measured"), [(15, False), (16, True)])
def test_extend_over_every_chunk_makes_a_page_measured(chunks: int, measured: bool) -> None:
    """ENCLAVE_EXTEND (sgxlaunch's partial-page measurement) sets a chunk bit per 256 bytes
    EEXTENDed; only all sixteen make the page count as measured."""
    driver = raw_platform()
    raw = Raw.open(driver)
    assert raw.create(small_secs()) == 0
    assert raw.add(0x1000, flags=secinfo_flags(PageType.REG, R | X), measure=False) == 0
    assert raw.ioctl(uapi.SGX_IOC_ENCLAVE_EXTEND, uapi.EXTEND_ARG.pack(0x1000, 256 * chunks)) == 0
    (enclave,) = driver.enclaves.values()
    assert enclave.pages[0x1000].fully_measured is measured
