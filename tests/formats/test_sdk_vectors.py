"""The Intel AE metadata extracts (shared vectors, PROVENANCE.md §3) through the SDK reader.

Each blob is the ``.note.sgxmeta`` desc of an Intel-signed ``.signed.so``. The reader must parse
every ``metadata_t`` in it, its SIGSTRUCT must verify and equal the extracted ``.sigstruct.bin``,
and the page counts and SECS sizes must equal those derived independently by
``tests/vectors/make_sdk_ae_layouts.py`` (committed as ``sdk_ae_layouts.json``). Spec §5.1 gives
the whole-enclave totals for two of them (LE 236 EADD / 204 EEXTEND, TDQE 417 / 381); the
unmeasured pages of a blob's layout (its heap) are exactly the difference.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgxlaunch.arch.structs import Sigstruct
from sgxlaunch.errors import MalformedInput
from sgxlaunch.formats import sdk
from sgxlaunch.sigstruct import verify
from tests.conftest import shared_vectors

EXPECTED = json.loads(
    (Path(__file__).resolve().parent.parent / "vectors" / "sdk_ae_layouts.json").read_text()
)


def _blobs() -> list[str]:
    return sorted(EXPECTED)


def test_every_extract_is_covered() -> None:
    found = sorted(
        p.name.removesuffix(".sgxmeta.bin")
        for p in (shared_vectors() / "intel_ae_extracted").glob("*.sgxmeta.bin")
    )
    assert found == _blobs()


@pytest.mark.parametrize("name", _blobs())
def test_extract_parses_and_matches_the_derived_counts(name: str) -> None:
    folder = shared_vectors() / "intel_ae_extracted"
    copies = sdk.parse_metadata_area((folder / f"{name}.sgxmeta.bin").read_bytes())
    want = EXPECTED[name]
    assert len(copies) == len(want)
    css = Sigstruct.from_bytes((folder / f"{name}.sigstruct.bin").read_bytes())
    for meta, facts in zip(copies, want, strict=True):
        summary = sdk.summarize(meta)
        got = {
            "version": meta.version,
            "size": meta.size,
            "secs_size": meta.secs_size,
            "ssaframesize": meta.ssa_frame_size,
            "tcs_policy": meta.tcs_policy,
            "records": len(meta.layout),
            "eadd_pages": summary.eadd_pages,
            "measured_pages": summary.measured_pages,
            "tcs": summary.tcs_count,
            "mrenclave": meta.sigstruct.enclavehash.hex(),
            "mrsigner": meta.sigstruct.mrsigner.hex(),
        }
        assert got == facts
        assert meta.sigstruct == css
        verify(meta.sigstruct)


@pytest.mark.parametrize(
    ("name", "eadd", "eextend"),
    [("ratel-psw@184dc82b_libsgx_le", 236, 204), ("dcap@6c1a9ab7_libsgx_tdqe", 417, 381)],
)
def test_unmeasured_layout_pages_explain_the_spec_totals(
    name: str, eadd: int, eextend: int
) -> None:
    blob = (shared_vectors() / "intel_ae_extracted" / f"{name}.sgxmeta.bin").read_bytes()
    (meta,) = sdk.parse_metadata_area(blob)
    s = sdk.summarize(meta)
    assert s.eadd_pages - s.measured_pages == eadd - eextend
    assert s.heap_bytes // 4096 == eadd - eextend  # the heap is EADDed, never EEXTENDed


def test_le_uses_the_sdk_1x_layout_ids() -> None:
    blob = shared_vectors() / "intel_ae_extracted" / "ratel-psw@184dc82b_libsgx_le.sgxmeta.bin"
    (meta,) = sdk.parse_metadata_area(blob.read_bytes())
    assert meta.version == "1.3"
    assert [r.name for r in meta.layout] == [
        "HEAP",
        "GUARD",
        "STACK",
        "GUARD",
        "TCS",
        "SSA",
        "GUARD",
        "TD",
        "GUARD",
    ]


def test_every_truncation_of_an_extract_is_refused_or_shorter() -> None:
    """A cut inside the first metadata_t is refused; the walk never reads beyond the bytes."""
    blob = shared_vectors() / "intel_ae_extracted" / "dcap@6c1a9ab7_libsgx_tdqe.sgxmeta.bin"
    data = blob.read_bytes()
    (meta,) = sdk.parse_metadata_area(data)
    for n in range(meta.size):
        with pytest.raises(MalformedInput):
            sdk.parse_metadata_area(data[:n])
