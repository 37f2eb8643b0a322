"""Shared test fixtures: where the read-only vectors live (``../shared/vectors``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

import sgxlaunch.attest.pcs
import sgxlaunch.cli.author
from sgxlaunch.sigstruct import generate_key

REPO = Path(__file__).resolve().parent.parent
SHARED_VECTORS = REPO.parent / "shared" / "vectors"


def shared_vectors() -> Path:
    if not SHARED_VECTORS.is_dir():
        pytest.fail(f"the shared vectors are missing: expected {SHARED_VECTORS}")
    return SHARED_VECTORS


def vector_index() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((shared_vectors() / "INDEX.json").read_text())
    return data


def sigstruct_vectors() -> list[tuple[str, dict[str, Any]]]:
    """(relative path, recorded facts) of every SIGSTRUCT in the shared vectors."""
    return sorted(
        (path, entry["facts"])
        for path, entry in vector_index().items()
        if entry.get("kind") == "sigstruct"
    )


def sgxs_vectors() -> list[tuple[str, str]]:
    """(relative path, recorded MRENCLAVE = sha256 of the file) of every .sgxs vector."""
    return sorted(
        (path, entry["sha256"]) for path, entry in vector_index().items() if path.endswith(".sgxs")
    )


@pytest.fixture
def vectors() -> Path:
    return shared_vectors()


@pytest.fixture(autouse=True)
def _machine_outside_the_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own machine path outside any home (never the user's default), and no
    daemon socket; tests that make a platform through the CLI may also pass ``--machine``."""
    monkeypatch.setenv("SGXLAUNCH_MACHINE", str(tmp_path / "machine-dir" / "machine.json"))
    # No sgxlaunchd unless a test starts one: the default socket lives under XDG_RUNTIME_DIR.
    monkeypatch.delenv("SGXLAUNCH_SOCKET", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "runtime"))


_SIGNING_KEYS: list[rsa.RSAPrivateKey] = []
"""RSA-3072 (e = 3) keys made once per test session and handed out again in later tests."""


@pytest.fixture(autouse=True)
def _pooled_sgx_signing_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Making an RSA-3072 key takes 0.5-2 s, and every platform made in-process makes one (the
    machine's PCE/QE signing key), as does ``key generate``. Within one test each call still
    gets a key of its own (the n-th call the n-th key of a session-wide pool), so two machines
    or two authors of one test never share a key; tests only reuse keys of earlier tests, whose
    files are gone. Subprocesses make real keys."""
    taken = 0

    def pooled() -> rsa.RSAPrivateKey:
        nonlocal taken
        if taken == len(_SIGNING_KEYS):
            _SIGNING_KEYS.append(generate_key())
        key = _SIGNING_KEYS[taken]
        taken += 1
        return key

    monkeypatch.setattr(sgxlaunch.attest.pcs, "generate_key", pooled)
    monkeypatch.setattr(sgxlaunch.cli.author, "generate_key", pooled)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files with a test marked ``slow`` run first, each file's tests in their own order.
    ``make test`` hands whole files to the pytest-xdist workers in this order
    (``--no-loadscope-reorder``), so the long files start early and the many short ones even
    out the workers' ends, instead of one worker running the last long file alone."""
    slow = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in slow)
