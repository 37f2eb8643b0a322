"""Intel SDK enclaves with 3.x (EDMM) metadata: the POST_ADD pages are added after EINIT."""

from __future__ import annotations

import pytest

from sgxlaunch.arch import Attributes, Sigstruct
from sgxlaunch.arch.constants import PAGE_SIZE, PageType
from sgxlaunch.driver import load_sdk
from sgxlaunch.errors import UsageError
from sgxlaunch.formats import sdk
from sgxlaunch.sigstruct import sign
from tests.support.driver import platform
from tests.support.keys import signer
from tests.support.kselftest import sgx2_platform
from tests.support.sdk import Seg, Spec, build

RW = 4 | 2


def signed_sdk(spec: Spec, urts: tuple[int, int]) -> bytes:
    """The built file signed for the record ``urts`` loads (one SIGSTRUCT in every copy)."""
    built = build(spec)
    enclave = sdk.parse_sdk(built.data)
    mrenclave = enclave.plan(enclave.select(urts)).mrenclave()
    body = Sigstruct(
        attributes=Attributes(flags=0x4, xfrm=0x3),
        attributemask=Attributes(flags=(2**64 - 1) & ~0x2, xfrm=2**64 - 1),
        miscselect=1,
        miscmask=2**32 - 1,
        enclavehash=mrenclave,
    )
    return built.signed(sign(body, signer("app")))


DYNAMIC = Spec(
    version=(3, 0),
    compat=((1, 4),),
    data_segments=[Seg(0x3000, b"\x11" * 300, 0x300, RW)],
    dynamic_heap_pages=5,
    tcs_num=2,
)


def test_edmm_metadata_post_add_pages_are_eauged_after_einit() -> None:
    """On an SGX2 part the uRTS loads the 3.0 record: MRENCLAVE is the EADDed pages' only
    (EINIT accepts the SIGSTRUCT made from the plan without the dynamic heap), then the five
    HEAP_MAX pages are EAUGed: driver pages marked dynamic, counted in ``pages_added``, EPCM
    PENDING, regular, RW (SDM EAUG step 15), at the layout entry's offset."""
    data = signed_sdk(DYNAMIC, sdk.URTS_EDMM)
    enclave = sdk.parse_sdk(data)
    meta = enclave.select(sdk.URTS_EDMM)
    assert meta.version == "3.0"
    plan = enclave.plan(meta)
    ((offset, count),) = plan.post_add
    assert count == 5
    assert offset not in {p.offset for p in plan.to_image().pages}

    driver = sgx2_platform()
    loaded = load_sdk(driver.new_process(), enclave)
    assert loaded.dynamic_pages == 5
    (encl,) = driver.enclaves.values()
    assert encl.pages_added == 5
    for k in range(count):
        page = encl.pages[offset + k * PAGE_SIZE]
        assert page.dynamic and page.epc is not None
        entry = driver.cpu.epcm(page.epc)
        assert entry.valid and entry.pending and not entry.modified
        assert entry.page_type == PageType.REG and entry.permissions == 0b011
        assert entry.linaddr == encl.base + offset + k * PAGE_SIZE
    assert encl.mrenclave == meta.sigstruct.enclavehash == plan.mrenclave()


def test_sgx1_part_loads_the_sgx1_record_and_adds_nothing() -> None:
    """Without SGX2 the uRTS picks the 1.4 record: no POST_ADD, nothing EAUGed."""
    data = signed_sdk(DYNAMIC, sdk.URTS_SGX1)
    driver = platform()
    loaded = load_sdk(driver.new_process(), sdk.parse_sdk(data))
    assert loaded.dynamic_pages == 0
    (encl,) = driver.enclaves.values()
    assert encl.pages_added == 0
    assert not any(p.dynamic for p in encl.pages.values())


def test_edmm_only_enclave_on_an_sgx1_part_is_refused() -> None:
    """A 3.x-only enclave has no record an SGX1 uRTS loads: UsageError naming EDMM, and no
    enclave is created."""
    data = signed_sdk(Spec(version=(3, 3), dynamic_heap_pages=3, note_align=1), sdk.URTS_EDMM)
    driver = platform()
    with pytest.raises(UsageError, match="EDMM"):
        load_sdk(driver.new_process(), sdk.parse_sdk(data))
    assert not driver.enclaves
