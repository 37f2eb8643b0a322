"""The native AES-128-CMAC (``sgxlaunch.cpu._cmac``, AES-NI) against `cryptography`'s.

:func:`sgxlaunch.cpu.keys.cmac128` and every key derivation run natively when the module is
built and passed its import-time check; these tests hold it to RFC 4493 and to
:func:`~sgxlaunch.cpu.keys.cmac128_reference` on every message length a block boundary can
matter for, random keys and lengths, and other bytes-like inputs."""

from __future__ import annotations

import importlib.util
import os
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgxlaunch.cpu import keys
from sgxlaunch.cpu.keys import (
    NATIVE_CMAC,
    RFC4493_EXAMPLES,
    FusedSecrets,
    KeyDependencies,
    cmac128,
    cmac128_reference,
    rfc4493_example,
)

if TYPE_CHECKING:
    from typing_extensions import Buffer

native: Callable[[Buffer, Buffer], bytes] | None
try:
    from sgxlaunch.cpu._cmac import cmac128 as native
except ImportError:  # not built here (no compiler, not x86-64) or no AES-NI
    native = None

needs_native = pytest.mark.skipif(native is None, reason="sgxlaunch.cpu._cmac is not in use")


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
