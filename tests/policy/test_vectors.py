"""Replay the named regression vectors in ``tests/policy/vectors`` (see make_vectors.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sgxlaunch import errors
from sgxlaunch.policy import MemoryStore, install_policy, install_root, load_state
from sgxlaunch.policy._json import parse_time
from tests.policy.vectors import make_vectors
from tests.support.policy import identity

VECTORS = Path(__file__).resolve().parent / "vectors"
MANIFEST: dict[str, Any] = json.loads((VECTORS / "manifest.json").read_text())
NOW = parse_time(MANIFEST["now"], "now")


def test_vectors_are_reproducible_byte_for_byte() -> None:
    files, _ = make_vectors.build()
    for name, data in files.items():
        assert (VECTORS / name).read_bytes() == data, name


def _trusted_store(with_floor: bool) -> MemoryStore:
    store = MemoryStore()
    install_root(store, (VECTORS / MANIFEST["root"]).read_bytes(), NOW)
    if with_floor:
        install_policy(store, (VECTORS / MANIFEST["floor"]).read_bytes(), NOW)
    return store


def test_the_floor_policy_allows_its_enclave() -> None:
    state = load_state(_trusted_store(True))
    assert state.evaluate(identity(mrsigner=bytes.fromhex(make_vectors.SIGNER)), NOW).allowed


@pytest.mark.parametrize("name", sorted(MANIFEST["cases"]))
def test_regression_vector_refused_and_store_unchanged(name: str) -> None:
    entry = MANIFEST["cases"][name]
    store = _trusted_store(entry["after_floor"])
    before = store.snapshot()
    expected = getattr(errors, entry["error"])
    data = (VECTORS / name).read_bytes()
    install = install_root if "rotation" in name else install_policy
    with pytest.raises(expected):
        install(store, data, NOW)
    assert store.snapshot() == before
    assert name.startswith(f"adv{entry['case']}-")
