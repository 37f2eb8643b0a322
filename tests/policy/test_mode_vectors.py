"""Replay the platform-mode regression vectors in ``tests/policy/vectors/mode``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sgxlaunch import errors, policy
from sgxlaunch.policy import MemoryStore, install_mode, install_root, load_state
from sgxlaunch.policy._json import parse_time
from tests.policy.vectors.mode import make_mode_vectors

VECTORS = Path(__file__).resolve().parent / "vectors" / "mode"
MANIFEST: dict[str, Any] = json.loads((VECTORS / "manifest.json").read_text())
NOW = parse_time(MANIFEST["now"], "now")
PLATFORM = bytes.fromhex(MANIFEST["platform_id"])


def test_mode_vectors_are_reproducible_byte_for_byte() -> None:
    files, _ = make_mode_vectors.build()
    assert set(files) == {p.name for p in VECTORS.iterdir() if p.name.endswith(".json")}
    for name, data in files.items():
        assert (VECTORS / name).read_bytes() == data, name


def _trusted_store() -> MemoryStore:
    store = MemoryStore()
    install_root(store, (VECTORS / MANIFEST["root"]).read_bytes(), NOW)
    install_mode(store, (VECTORS / MANIFEST["floor"]).read_bytes(), NOW, platform_id=PLATFORM)
    return store


def test_the_floor_mode_document_is_owner_mode() -> None:
    state = load_state(_trusted_store())
    assert state.mode is not None and state.mode.mode == "owner" and state.mode_in_force


@pytest.mark.parametrize("name", sorted(MANIFEST["cases"]))
def test_mode_regression_vector_refused_and_store_unchanged(name: str) -> None:
    entry = MANIFEST["cases"][name]
    store = _trusted_store()
    before = store.snapshot()
    expected = getattr(errors, entry["error"], None) or getattr(policy, entry["error"])
    with pytest.raises(expected):
        install_mode(store, (VECTORS / name).read_bytes(), NOW, platform_id=PLATFORM)
    assert store.snapshot() == before
    if entry["case"] is not None:
        assert name.startswith(f"adv{entry['case']}-")
