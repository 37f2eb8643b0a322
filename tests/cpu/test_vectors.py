"""Every shared vector with both ``.sgxs`` and ``.sig``: the processor measures the file's
SHA-256 (= ``sgxlaunch measure``) and EINIT succeeds when the MSRs hold the signer."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sgxlaunch.arch import SgxStatus, Sigstruct
from sgxlaunch.cpu import image_from_sgxs, load_enclave
from sgxlaunch.formats.sgxs import measure_bytes, parse_sgxs
from tests.conftest import sgxs_vectors, shared_vectors
from tests.support.cpu import cpu

PAIRS = [
    path.removesuffix(".sgxs")
    for path, _ in sgxs_vectors()
    if (shared_vectors() / (path.removesuffix(".sgxs") + ".sig")).is_file()
]


def test_the_expected_vectors_are_present() -> None:
    assert len(PAIRS) >= 5
    assert "generated/case3_misc_xfrm_swdef" in PAIRS
    assert "fortanix/sgxs-tools__src__sgx_detect__tests__test_enclave" in PAIRS


def _load(stem: str) -> tuple[bytes, Sigstruct]:
    root: Path = shared_vectors()
    return (root / f"{stem}.sgxs").read_bytes(), Sigstruct.from_bytes(
        (root / f"{stem}.sig").read_bytes()
    )


@pytest.mark.parametrize("stem", PAIRS)
def test_vector_measured_and_initialized(stem: str) -> None:
    data, sig = _load(stem)
    image = image_from_sgxs(parse_sgxs(data))
    # case3 has XFRM 0x7 and MISCSELECT 1, case4 has KSS: the default part allows x87|SSE|AVX|MPX
    # and EXINFO; KSS is switched on.
    proc = cpu(kss=True)
    proc.set_lepubkeyhash(sig.mrsigner)
    loaded = load_enclave(proc, image, sig)
    info = proc.secs_info(loaded.secs)
    assert loaded.status == SgxStatus.SUCCESS
    assert info["mrenclave"] == hashlib.sha256(data).digest() == measure_bytes(data)
    assert info["mrenclave"] == sig.enclavehash
    assert info["mrsigner"] == sig.mrsigner
    assert (info["isvprodid"], info["isvsvn"]) == (sig.isvprodid, sig.isvsvn)


@pytest.mark.parametrize("stem", PAIRS)
def test_vector_refused_without_its_signer_in_the_msrs(stem: str) -> None:
    data, sig = _load(stem)
    proc = cpu(kss=True)  # Intel's hash in the MSRs, zero token
    loaded = load_enclave(proc, image_from_sgxs(parse_sgxs(data)), sig)
    assert loaded.status == SgxStatus.INVALID_EINITTOKEN


def test_vector_needing_kss_is_refused_by_a_part_without_it() -> None:
    from sgxlaunch.cpu import GeneralProtection

    data, sig = _load("generated/case4_kss_like_attrs")
    proc = cpu()
    proc.set_lepubkeyhash(sig.mrsigner)
    with pytest.raises(GeneralProtection):
        load_enclave(proc, image_from_sgxs(parse_sgxs(data)), sig)
