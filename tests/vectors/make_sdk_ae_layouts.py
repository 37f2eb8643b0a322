"""Derive layout page counts and SECS sizes from the Intel AE metadata extracts.

Run from the repository root:  .venv/bin/python tests/vectors/make_sdk_ae_layouts.py

Reads every ``intel_ae_extracted/*.sgxmeta.bin`` of the shared vectors (the desc of each
Intel-signed ``.signed.so``'s ``.note.sgxmeta``; PROVENANCE.md §3) and writes
``sdk_ae_layouts.json`` beside this script: for each ``metadata_t`` in the blob, its version,
SECS.SIZE (``enclave_size``), SSAFRAMESIZE, TCS policy, the number of layout records, and the
pages the layout EADDs and EEXTENDs (groups expanded), with the MRENCLAVE and MRSIGNER of its
``enclave_css``.

Deliberately independent of ``sgxlaunch``: a plain ``struct`` walk straight from the spec
(``sdk-metadata-spec.md`` §2, §5 step 6), so the test that compares the reader with this file
compares two implementations.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent.parent / "shared" / "vectors" / "intel_ae_extracted"
OUT = HERE / "sdk_ae_layouts.json"
MAGIC = 0x86A80294635D0E4C


def layout_counts(meta: bytes, offset: int, size: int) -> dict[str, int]:
    records = [meta[offset + 32 * i : offset + 32 * (i + 1)] for i in range(size // 32)]
    eadd = extend = tcs = 0

    def one(rec: bytes, times: int) -> None:
        nonlocal eadd, extend, tcs
        _id, attr, pages, _rva, _csize, coff, si = struct.unpack("<HHIQIIQ", rec)
        if not attr & 1 or not (coff or si):
            return
        eadd += pages * times
        if attr & 2 or (coff and si != 0x100):
            extend += pages * times
        if si == 0x100:
            tcs += pages * times

    for i, rec in enumerate(records):
        ident = struct.unpack_from("<H", rec)[0]
        if ident & 0x1000:
            _, count, times, _step = struct.unpack_from("<HHIQ", rec)
            for prev in records[i - count : i]:
                one(prev, times)
        else:
            one(rec, 1)
    return {"records": len(records), "eadd_pages": eadd, "measured_pages": extend, "tcs": tcs}


def derive(blob: bytes) -> list[dict[str, object]]:
    out = []
    pos = 0
    while pos + 8 <= len(blob) and struct.unpack_from("<Q", blob, pos)[0] == MAGIC:
        _, version, size, policy, ssa, _msb, _misc, _pool, enclave_size = struct.unpack_from(
            "<QQIIIIIIQ", blob, pos
        )
        meta = blob[pos : pos + size]
        _patch_off, _patch_size, layout_off, layout_size = struct.unpack_from("<IIII", meta, 1872)
        css = meta[64 : 64 + 1808]
        entry: dict[str, object] = {
            "version": f"{version >> 32}.{version & 0xFFFFFFFF}",
            "size": size,
            "secs_size": enclave_size,
            "ssaframesize": ssa,
            "tcs_policy": policy,
            "mrenclave": css[960:992].hex(),
            "mrsigner": hashlib.sha256(css[128:512]).hexdigest(),
        }
        entry.update(layout_counts(meta, layout_off, layout_size))
        out.append(entry)
        pos += size
    return out


def main() -> None:
    result = {
        path.name.removesuffix(".sgxmeta.bin"): derive(path.read_bytes())
        for path in sorted(SHARED.glob("*.sgxmeta.bin"))
    }
    OUT.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"wrote {OUT.name}: {len(result)} blobs")


if __name__ == "__main__":
    main()
