"""Checklist case 10: ENCLAVEHASH ≠ measured MRENCLAVE is caught by ``check_mrenclave``.

The enclaves are the shared generated cases: their SGXS files are the measured stream, walked
here block by block (independently of the SGXS module) and replayed through ``Measurement``
one leaf at a time; each tampering changes one measured operation.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

import pytest

from sgxlaunch import sigstruct
from sgxlaunch.arch import Sigstruct
from sgxlaunch.errors import MeasurementMismatch, VerificationFailed
from sgxlaunch.measure import Measurement
from tests.conftest import shared_vectors
from tests.support.keys import rsa_key

Op = tuple[Any, ...]  # ("ecreate", ssa, size) | ("eadd", offset, flags) | ("eextend", offset, data)


def _cases() -> list[dict[str, Any]]:
    manifest = json.loads((shared_vectors() / "generated" / "manifest.json").read_text())
    cases: list[dict[str, Any]] = manifest["cases"]
    return cases


CASES = _cases()
CASE_IDS = [c["name"] for c in CASES]


def operations(stream: bytes) -> list[Op]:
    """The ECREATE/EADD/EEXTEND operations of a measured stream (spec §2.1-§2.3 layouts)."""
    ops: list[Op] = []
    pos = 0
    while pos < len(stream):
        tag = stream[pos : pos + 8]
        if tag == b"ECREATE\x00":
            ssa, size = struct.unpack_from("<IQ", stream, pos + 8)
            ops.append(("ecreate", ssa, size))
            pos += 64
        elif tag == b"EADD\x00\x00\x00\x00":
            offset, flags = struct.unpack_from("<QQ", stream, pos + 8)
            assert stream[pos + 24 : pos + 64] == bytes(40)
            ops.append(("eadd", offset, flags))
            pos += 64
        elif tag == b"EEXTEND\x00":
            (offset,) = struct.unpack_from("<Q", stream, pos + 8)
            ops.append(("eextend", offset, stream[pos + 64 : pos + 320]))
            pos += 320
        else:
            raise AssertionError(f"unknown block at {pos}: {tag!r}")
    assert pos == len(stream)
    return ops


def replay(ops: list[Op]) -> bytes:
    m = Measurement()
    for op in ops:
        if op[0] == "ecreate":
            m.ecreate(op[1], op[2])
        elif op[0] == "eadd":
            m.eadd(op[1], op[2])
        else:
            m.eextend(op[1], op[2])
    return m.mrenclave()


def _load(case: dict[str, Any]) -> tuple[list[Op], Sigstruct]:
    base = shared_vectors() / "generated"
    ops = operations((base / case["sgxs"]).read_bytes())
    sig = Sigstruct.from_bytes((base / case["sig"]).read_bytes())
    sigstruct.verify(sig)
    return ops, sig


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_adv10_untampered_enclave_matches_enclavehash(case: dict[str, Any]) -> None:
    ops, sig = _load(case)
    mrenclave = replay(ops)
    assert mrenclave == bytes.fromhex(case["expected_mrenclave"])
    sigstruct.check_mrenclave(sig, mrenclave)


def _change_chunk(ops: list[Op]) -> list[Op]:
    i = next(i for i, op in enumerate(ops) if op[0] == "eextend")
    data = bytearray(ops[i][2])
    data[17] ^= 0x01
    return [*ops[:i], ("eextend", ops[i][1], bytes(data)), *ops[i + 1 :]]


def _change_last_chunk(ops: list[Op]) -> list[Op]:
    i = max(i for i, op in enumerate(ops) if op[0] == "eextend")
    data = bytearray(ops[i][2])
    data[255] ^= 0x80
    return [*ops[:i], ("eextend", ops[i][1], bytes(data)), *ops[i + 1 :]]


def _add_unmeasured_page(ops: list[Op]) -> list[Op]:
    used = {op[1] for op in ops if op[0] == "eadd"}
    size = ops[0][2]
    # A free page inside ELRANGE if there is one, else the page just past it.
    free = next((off for off in range(0, size, 4096) if off not in used), size)
    return [*ops, ("eadd", free, 0x203)]


def _change_secinfo_flags(ops: list[Op]) -> list[Op]:
    i = next(i for i, op in enumerate(ops) if op[0] == "eadd" and op[2] & 0xFF00 == 0x200)
    return [*ops[:i], ("eadd", ops[i][1], ops[i][2] ^ 0x4), *ops[i + 1 :]]


def _tcs_to_reg(ops: list[Op]) -> list[Op]:
    i = next(i for i, op in enumerate(ops) if op[0] == "eadd")
    return [*ops[:i], ("eadd", ops[i][1], ops[i][2] ^ 0x300), *ops[i + 1 :]]


def _drop_chunk(ops: list[Op]) -> list[Op]:
    i = max(i for i, op in enumerate(ops) if op[0] == "eextend")
    return [*ops[:i], *ops[i + 1 :]]


def _swap_chunks(ops: list[Op]) -> list[Op]:
    idx = [i for i, op in enumerate(ops) if op[0] == "eextend"]
    a = idx[0]
    b = next(i for i in idx[1:] if ops[i][2] != ops[a][2])  # two chunks with different data
    out = list(ops)
    out[a], out[b] = ("eextend", ops[a][1], ops[b][2]), ("eextend", ops[b][1], ops[a][2])
    return out


def _change_ssaframesize(ops: list[Op]) -> list[Op]:
    return [("ecreate", ops[0][1] + 1, ops[0][2]), *ops[1:]]


TAMPERINGS: dict[str, Callable[[list[Op]], list[Op]]] = {
    "eextend-chunk-changed": _change_chunk,
    "last-eextend-chunk-changed": _change_last_chunk,
    "page-added-unmeasured": _add_unmeasured_page,
    "secinfo-flags-changed": _change_secinfo_flags,
    "tcs-page-type-changed": _tcs_to_reg,
    "eextend-dropped": _drop_chunk,
    "eextend-chunks-swapped": _swap_chunks,
    "ecreate-ssaframesize-changed": _change_ssaframesize,
}


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("how", list(TAMPERINGS))
def test_adv10_tampered_enclave_rejected_with_measurement_mismatch(
    case: dict[str, Any], how: str
) -> None:
    ops, sig = _load(case)
    tampered = TAMPERINGS[how](ops)
    assert tampered != ops
    found = replay(tampered)
    with pytest.raises(MeasurementMismatch) as info:
        sigstruct.check_mrenclave(sig, found)
    err = info.value
    assert isinstance(err, VerificationFailed)
    assert err.check == "mrenclave"
    assert err.expected == sig.enclavehash.hex()
    assert err.found == found.hex()


def test_adv10_signed_synthetic_enclave_and_tampered_copy() -> None:
    """Our own signer over our own measurement: accepted untampered, refused tampered."""
    key = rsa_key("le")  # the key of generated/case1_defaults
    pages = [(0x0000, 0x100, bytes(range(256)) * 16), (0x1000, 0x205, b"\x90" * 4096)]
    ops: list[Op] = [("ecreate", 1, 0x4000)]
    for off, flags, data in pages:
        ops.append(("eadd", off, flags))
        ops += [("eextend", off + i, data[i : i + 256]) for i in range(0, 4096, 256)]
    mrenclave = replay(ops)
    signed = sigstruct.sign(Sigstruct(enclavehash=mrenclave), sigstruct.RsaKeySigner(key))
    sigstruct.check_mrenclave(signed, mrenclave)
    for how in ("eextend-chunk-changed", "page-added-unmeasured", "secinfo-flags-changed"):
        with pytest.raises(MeasurementMismatch):
            sigstruct.check_mrenclave(signed, replay(TAMPERINGS[how](ops)))
