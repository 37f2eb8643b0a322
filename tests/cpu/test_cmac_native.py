"""The native AES-128-CMAC (``sgxlaunch.cpu._cmac``, AES-NI) against `cryptography`'s.

:func:`sgxlaunch.cpu.keys.cmac128` and every key derivation run natively when the module is
built and passed its import-time check; these tests hold it to RFC 4493 and to
:func:`~sgxlaunch.cpu.keys.cmac128_reference` on every message length a block boundary can
matter for, random keys and lengths, and other bytes-like inputs."""

from __future__ import annotations

import importlib.util
import os
import random
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgxlaunch.cpu import Processor, keys
from sgxlaunch.cpu import enclave as cpu_enclave
from sgxlaunch.cpu.faults import EnclaveLeafFailed, GeneralProtection
from sgxlaunch.cpu.keys import (
    NATIVE_CMAC,
    RFC4493_EXAMPLES,
    FusedSecrets,
    KeyDependencies,
    cmac128,
    cmac128_reference,
    rfc4493_example,
)
from sgxlaunch.cpu.state import SecsState
from sgxlaunch.errors import MalformedInput

if TYPE_CHECKING:
    from typing_extensions import Buffer

native: Callable[[Buffer, Buffer], bytes] | None
try:
    from sgxlaunch.cpu._cmac import cmac128 as native
except ImportError:  # not built here (no compiler, not x86-64) or no AES-NI
    native = None

needs_native = pytest.mark.skipif(native is None, reason="sgxlaunch.cpu._cmac is not in use")

_PROC = Processor(seed=b"cmac-native-einittoken-seed-0123")


def test_the_native_module_is_used_whenever_it_loads() -> None:
    """A built module that loads is in use: a failed import-time check would show here, not as
    a silent fall back to the slower path."""
    built = importlib.util.find_spec("sgxlaunch.cpu._cmac") is not None
    assert NATIVE_CMAC is (native is not None)
    if native is not None:
        assert built and cmac128 is native
    else:
        assert cmac128 is cmac128_reference


@pytest.mark.parametrize(("length", "tag"), RFC4493_EXAMPLES)
def test_rfc4493_examples(length: int, tag: str) -> None:
    key, message = rfc4493_example(length)
    assert cmac128_reference(key, message).hex() == tag
    assert cmac128(key, message).hex() == tag


@needs_native
def test_every_length_up_to_five_blocks_and_random_ones() -> None:
    assert native is not None
    rng = random.Random(4493)
    for length in [*range(81), *(rng.randrange(81, 5000) for _ in range(300))]:
        key, data = rng.randbytes(16), rng.randbytes(length)
        assert native(key, data) == cmac128_reference(key, data), length


@needs_native
@settings(max_examples=300, deadline=None)
@given(key=st.binary(min_size=16, max_size=16), data=st.binary(max_size=1000))
def test_native_matches_cryptography(key: bytes, data: bytes) -> None:
    assert native is not None
    assert native(key, data) == cmac128_reference(key, data)


@needs_native
def test_bytes_like_inputs() -> None:
    assert native is not None
    key, data = os.urandom(16), os.urandom(200)
    want = cmac128_reference(key, data)
    assert native(bytearray(key), memoryview(data)) == want
    assert native(memoryview(key), bytearray(data)) == want
    assert native(key, memoryview(b"xx" + data)[2:]) == want


@pytest.mark.parametrize("length", [0, 15, 17, 32])
def test_a_key_of_another_length_is_refused_by_both(length: int) -> None:
    with pytest.raises(ValueError, match="key size"):
        cmac128_reference(bytes(length), b"data")
    with pytest.raises(ValueError, match="key"):
        cmac128(bytes(length), b"data")


@needs_native
def test_what_is_not_bytes_is_a_type_error() -> None:
    assert native is not None
    with pytest.raises(TypeError):
        native("0123456789abcdef", b"")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        native(bytes(16))  # type: ignore[call-arg]


def test_derivation_is_cmac_under_the_root_key_on_either_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``derive_key``: AES-128-CMAC(root key, the 644 dependency bytes), native or not."""
    fuses = FusedSecrets.from_seed(b"cmac-native-test-seed-0123456789")
    deps = KeyDependencies(keyname=4, keyid=os.urandom(32), mrsigner=os.urandom(32)).to_bytes()
    want = cmac128_reference(fuses.root_key, deps)
    assert fuses.derive_bytes(deps) == want
    monkeypatch.setattr(keys, "_NATIVE_CMAC", None)  # the prepared-CMAC path
    assert fuses.derive_bytes(deps) == want


# -- EGETKEY's EINITTOKEN_KEY success case (``_cmac.einittoken_key``) ---------------------------

_KEYREQUEST = struct.Struct("<HHH2s16sQQ32sIH434s")
"""KEYREQUEST with its reserved fields as values (SDM 38.7.1), so tests can set them."""


def _leaf(proc: Processor, secs: SecsState, request: bytes) -> bytes | str:
    """The Python leaf's answer (the key, or the name of what it raised), native path off."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cpu_enclave, "NATIVE_EINITTOKEN_KEY", None)
        try:
            return proc._enclu.egetkey(secs, request)
        except (GeneralProtection, EnclaveLeafFailed, MalformedInput) as exc:
            return type(exc).__name__ + str(getattr(exc, "status", ""))


@needs_native
@settings(max_examples=400, deadline=None)
@given(
    name=st.sampled_from([0, 0, 0, 1, 3, 4, 9]),
    policy=st.sampled_from([0, 0, 0x1, 0x4, 0x40, 0x8000]),
    isvsvn=st.integers(0, 6),
    cpusvn_same=st.booleans(),
    mask_flags=st.integers(0, 2**64 - 1),
    mask_xfrm=st.integers(0, 2**64 - 1),
    miscmask=st.integers(0, 2**32 - 1),
    configsvn=st.sampled_from([0, 0, 1]),
    reserved1=st.sampled_from([bytes(2), b"\x00\x01"]),
    reserved2_at=st.sampled_from([None, None, 0, 433]),
    attributes=st.sampled_from([0x25, 0x24, 0x21, 0xA5, 0x27, 0x5]),
    secs_isvsvn=st.integers(0, 6),
    data=st.data(),
)
def test_einittoken_key_is_the_leaf_in_its_success_case_and_none_otherwise(
    name: int,
    policy: int,
    isvsvn: int,
    cpusvn_same: bool,
    mask_flags: int,
    mask_xfrm: int,
    miscmask: int,
    configsvn: int,
    reserved1: bytes,
    reserved2_at: int | None,
    attributes: int,
    secs_isvsvn: int,
    data: st.DataObject,
) -> None:
    """Whatever the request and the SECS, the native answer is the Python leaf's key or None,
    and it is a key whenever the leaf derives an EINITTOKEN_KEY for the CPU's own CPUSVN."""
    assert keys.NATIVE_EINITTOKEN_KEY is not None
    proc = _PROC
    cfg = proc.config
    secs = SecsState()
    secs.attributes = attributes
    secs.xfrm = data.draw(st.integers(0, 2**64 - 1))
    secs.isvprodid = data.draw(st.integers(0, 0xFFFF))
    secs.isvsvn = secs_isvsvn
    secs.mrsigner = data.draw(st.binary(min_size=32, max_size=32))
    secs.miscselect = data.draw(st.integers(0, 2**32 - 1))
    secs.padding = data.draw(st.binary(min_size=352, max_size=352))
    cpusvn = cfg.cpusvn if cpusvn_same else bytes(16)
    reserved2 = bytearray(434)
    if reserved2_at is not None:
        reserved2[reserved2_at] = 1
    keyid = data.draw(st.binary(min_size=32, max_size=32))
    request = _KEYREQUEST.pack(
        name, policy, isvsvn, reserved1, cpusvn, mask_flags, mask_xfrm, keyid, miscmask,
        configsvn, bytes(reserved2),
    )  # fmt: skip
    fuses = proc._enclu._fuses
    native = keys.NATIVE_EINITTOKEN_KEY(
        request, fuses.root_key, fuses.seal_fuses, cfg.owner_epoch, cfg.cpusvn,
        secs.attributes, secs.xfrm, secs.isvprodid, secs.isvsvn, secs.mrsigner,
        secs.miscselect, secs.padding,
    )  # fmt: skip
    leaf = _leaf(proc, secs, request)
    if native is not None:
        assert native == leaf
    plain = (
        name == 0
        and cpusvn_same
        and isinstance(leaf, bytes)
        and policy == 0
        and reserved1 == bytes(2)
        and reserved2_at is None
    )
    if plain:
        assert native == leaf  # the success case is never left to the slow path
    # and the leaf with the native path on answers what it answers with it off
    with_native: bytes | str
    try:
        with_native = proc._enclu.egetkey(secs, request)
    except (GeneralProtection, EnclaveLeafFailed, MalformedInput) as exc:
        with_native = type(exc).__name__ + str(getattr(exc, "status", ""))
    assert with_native == leaf


@needs_native
def test_einittoken_key_declines_what_is_not_its_shape() -> None:
    """Arguments of another type, length or range: None (the leaf decides), never an error."""
    assert keys.NATIVE_EINITTOKEN_KEY is not None
    cfg, fuses = _PROC.config, _PROC._enclu._fuses
    good = (
        _KEYREQUEST.pack(0, 0, 0, bytes(2), cfg.cpusvn, 0, 0, bytes(32), 0, 0, bytes(434)),
        fuses.root_key, fuses.seal_fuses, cfg.owner_epoch, cfg.cpusvn,
        0x25, 3, 1, 1, bytes(32), 0, bytes(352),
    )  # fmt: skip
    assert isinstance(keys.NATIVE_EINITTOKEN_KEY(*good), bytes)
    bad_values: list[tuple[int, object]] = [
        (0, bytearray(good[0])), (0, good[0][:-1]), (1, bytes(15)), (5, -1), (5, 2**64),
        (7, 0x10000), (8, 1.0), (9, bytes(31)), (10, 2**32), (11, "p" * 352),
    ]  # fmt: skip
    for index, value in bad_values:
        args = list(good)
        args[index] = value
        untyped: Callable[..., object] = keys.NATIVE_EINITTOKEN_KEY
        assert untyped(*args) is None, (index, value)


@needs_native
@settings(max_examples=200, deadline=None)
@given(
    isvsvn=st.integers(0, 0xFFFF),
    mask_flags=st.integers(0, 2**64 - 1),
    mask_xfrm=st.integers(0, 2**64 - 1),
    miscmask=st.integers(0, 2**32 - 1),
    keyid=st.binary(min_size=32, max_size=32),
    attributes=st.integers(0, 2**64 - 1).map(lambda a: a | 0x20),
    xfrm=st.integers(0, 2**64 - 1),
    isvprodid=st.integers(0, 0xFFFF),
    mrsigner=st.binary(min_size=32, max_size=32),
    miscselect=st.integers(0, 2**32 - 1),
)
def test_einittoken_key_equals_the_leaf_on_every_success_case(
    isvsvn: int,
    mask_flags: int,
    mask_xfrm: int,
    miscmask: int,
    keyid: bytes,
    attributes: int,
    xfrm: int,
    isvprodid: int,
    mrsigner: bytes,
    miscselect: int,
) -> None:
    """Requests the leaf grants (KEYNAME 0, the CPU's CPUSVN, ISVSVN within the SECS's, no
    reserved or KSS bits): the native key is the leaf's, field by field of the dependencies."""
    assert keys.NATIVE_EINITTOKEN_KEY is not None
    cfg, fuses = _PROC.config, _PROC._enclu._fuses
    secs = SecsState()
    secs.attributes, secs.xfrm, secs.isvprodid = attributes, xfrm, isvprodid
    secs.isvsvn, secs.mrsigner, secs.miscselect = 0xFFFF, mrsigner, miscselect
    secs.padding = bytes(range(256)) + bytes(96)
    request = _KEYREQUEST.pack(
        0, 0, isvsvn, bytes(2), cfg.cpusvn, mask_flags, mask_xfrm, keyid, miscmask, 0, bytes(434)
    )
    leaf = _leaf(_PROC, secs, request)
    assert isinstance(leaf, bytes)
    native = keys.NATIVE_EINITTOKEN_KEY(
        request, fuses.root_key, fuses.seal_fuses, cfg.owner_epoch, cfg.cpusvn,
        attributes, xfrm, isvprodid, 0xFFFF, mrsigner, miscselect, secs.padding,
    )  # fmt: skip
    assert native == leaf
