"""Arbitrary operand bytes reach only the SDM's outcomes: a status code or a modelled fault,
never another exception, and never SUCCESS for garbage."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgxlaunch.arch import EinitToken, KeyRequest, SgxStatus, Sigstruct
from sgxlaunch.cpu import CpuFault, EnclaveContext, EnclaveProgram
from tests.support.cpu import Pager, cpu, launch, pending
from tests.support.keys import mrsigner

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_PROC = cpu()
_PROC.set_lepubkeyhash(mrsigner("app"))
_APP = pending(_PROC)
_REGION = _PROC.allocate(3 * 4096)


@FAST
@given(
    sig=st.binary(min_size=Sigstruct.SIZE, max_size=Sigstruct.SIZE),
    token=st.binary(min_size=EinitToken.SIZE, max_size=EinitToken.SIZE),
)
def test_einit_on_random_bytes(sig: bytes, token: bytes) -> None:
    _PROC.write(_REGION, sig)
    _PROC.write(_REGION + 4096, token)
    status = _PROC.einit(_REGION, _APP.enclave.secs, _REGION + 4096)
    assert isinstance(status, SgxStatus) and status != SgxStatus.SUCCESS


@FAST
@given(
    header=st.sampled_from(["keep", "random"]),
    tail=st.binary(min_size=1808 - 1040, max_size=1808 - 1040),
)
def test_einit_with_random_quotients(header: str, tail: bytes) -> None:
    good = bytearray(_APP.sigstruct.to_bytes())
    good[1040:] = tail
    if header == "random":
        good[0] ^= 0x40
    _PROC.write(_REGION, bytes(good))
    _PROC.write(_REGION + 4096, bytes(EinitToken.SIZE))
    status = _PROC.einit(_REGION, _APP.enclave.secs, _REGION + 4096)
    assert status in (SgxStatus.INVALID_SIG_STRUCT, SgxStatus.INVALID_SIGNATURE)


@FAST
@given(
    pageinfo=st.binary(min_size=32, max_size=32),
    secinfo=st.binary(min_size=64, max_size=64),
    structured=st.booleans(),
    page=st.integers(0, 3),
)
def test_eadd_and_ecreate_on_random_operands(
    pageinfo: bytes, secinfo: bytes, structured: bool, page: int
) -> None:
    proc = _PROC
    scratch = _REGION + 2 * 4096
    if structured:  # well-formed pointers, random SECINFO
        linaddr = _APP.enclave.baseaddr + page * 4096
        pageinfo = struct.pack("<QQQQ", linaddr, _REGION, scratch + 64, _APP.enclave.secs)
    proc.write(scratch, pageinfo)
    proc.write(scratch + 64, secinfo)
    target = proc.free_epc_pages(1)[0]
    for leaf in (proc.eadd, proc.ecreate):
        try:
            status = leaf(scratch, target)
        except CpuFault:
            continue
        assert status == SgxStatus.SUCCESS  # these leaves report problems only by faulting
        assert proc.eremove(target) == SgxStatus.SUCCESS


class RawKeys(EnclaveProgram):
    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        from sgxlaunch.cpu import EnclaveLeafFailed

        try:
            return ctx.egetkey(data)
        except EnclaveLeafFailed as failed:
            return struct.pack("<H", failed.status)


_KEYS = launch(cpu(b"fuzz-keys-seed-012345"), RawKeys, "app")


@FAST
@given(request=st.binary(min_size=KeyRequest.SIZE, max_size=KeyRequest.SIZE))
def test_egetkey_on_random_requests(request: bytes) -> None:
    try:
        out = _KEYS.call(0, request)
    except CpuFault:
        return
    assert len(out) in (2, 16)
    if len(out) == 2:
        assert SgxStatus(struct.unpack("<H", out)[0]) != SgxStatus.SUCCESS


@FAST
@given(pcmd=st.binary(min_size=128, max_size=128), flip=st.integers(0, 4095))
def test_eldu_on_random_pcmd_and_contents(pcmd: bytes, flip: int) -> None:
    proc = cpu(b"fuzz-eldu-seed-012345")
    from tests.support.cpu import MemoryProgram

    enc = launch(proc, MemoryProgram, "app")
    pager = Pager(proc)
    pager.track(enc.enclave)
    key = (enc.enclave.secs, enc.enclave.baseaddr + 0x3000)
    assert pager.evict(key) == SgxStatus.SUCCESS
    record = pager.evicted[key]
    proc.write(record.pcmd, pcmd)
    byte = proc.read(record.contents + flip, 1)[0]
    proc.write(record.contents + flip, bytes([byte ^ 1]))
    try:
        status = pager.load(key)
    except CpuFault:
        return
    assert status == SgxStatus.MAC_COMPARE_FAIL
