"""Byte-mutation fuzzing of the home's state: stored rows through the readers the platform
applies to them, and the SQLite file through :class:`~sgxlaunch.store.SqliteStore`. The one
invariant: nothing but :class:`~sgxlaunch.errors.SgxlaunchError` escapes. Used by
``tests/adversarial/test_store_fuzz.py`` (≥ 10 000 cases) and ``bench/store_fuzz.py``."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from sgxlaunch.arch import Sigstruct
from sgxlaunch.errors import SgxlaunchError
from sgxlaunch.launch.enclave import LeState
from sgxlaunch.launch.log import LogRecord, decode_record
from sgxlaunch.launch.platform import PlatformConfig, _stored_signer
from sgxlaunch.policy import MemoryStore, TrustedState
from sgxlaunch.store import SqliteStore, open_store
from tests.support.platform import Owner, allow_rule, author_enclave

_SPECIAL = [b"\x00", b"\xff", b"[", b"{", b'"', b"-1", b"1e999", b"\xc3", b"null", b"\x80"]


def sample_rows() -> dict[str, bytes]:
    """The rows of an owner-mode home with a policy, a mode document, a launch enclave, a
    legacy configuration and a few launch-log records."""
    owner = Owner()
    owner.set_up_launch_enclave()
    image, sig = author_enclave()
    platform = owner.platform()
    platform.install_policy(owner.policy(version=1, allow=[allow_rule(sig)]))
    platform.set_mode(owner.mode("owner", version=1))
    platform = owner.platform()
    platform.run(image, sig)
    platform.run(image, sig)
    rows = owner.store.snapshot()
    rows["platform/config"] = PlatformConfig().to_json()
    rows["platform/le-active"] = (platform.le_signer or bytes(32)).hex().encode()
    rows["platform/le-state-plain"] = LeState(counter=3, log_count=2).to_json()
    return rows


def write_database(path: Path, rows: Mapping[str, bytes]) -> bytes:
    """A state database holding ``rows``; returns its bytes."""
    with open_store(path.parent) as store:
        store.commit(dict(rows))
    return path.read_bytes()


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four byte-level edits: flip, set, insert, delete, truncate, splice a token."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        at = rng.randrange(len(out) + 1)
        if op == 0 and out and at < len(out):
            out[at] ^= 1 << rng.randrange(8)
        elif op == 1 and out and at < len(out):
            out[at] = rng.randrange(256)
        elif op == 2:
            out[at:at] = bytes([rng.randrange(256)])
        elif op == 3 and out:
            del out[at : at + rng.randint(1, 16)]
        elif op == 4:
            del out[at:]
        else:
            out[at:at] = rng.choice(_SPECIAL)
    return bytes(out)


def read_row(key: str, value: bytes, rows: Mapping[str, bytes]) -> None:
    """Apply the platform's reader for ``key`` to ``value`` (raises only SgxlaunchError)."""
    if key.startswith("log/"):
        decode_record(value, 0)  # never raises
        LogRecord.from_bytes(value).fields()
    elif key.startswith("owner/"):
        TrustedState.load(MemoryStore({**rows, key: value}))
    elif key.startswith("platform/le-sigstruct/"):
        Sigstruct.from_bytes(value)
    elif key == "platform/config":
        PlatformConfig.from_json(value)
    elif key == "platform/le-active":
        _stored_signer(value)
    elif key == "platform/le-state-plain":
        LeState.from_json(value)


def _classify(counts: Counter[str], key: str, exc: BaseException | None) -> None:
    counts[f"{key.split('/')[0]}:{'ok' if exc is None else type(exc).__name__}"] += 1


def fuzz_rows(rows: Mapping[str, bytes], cases: int, seed: int) -> Counter[str]:
    """Mutate one row per case and read it; returns how the cases ended (by error class).

    Raises:
        AssertionError: anything but SgxlaunchError escaped (names the case).
    """
    rng = random.Random(seed)
    keys = sorted(k for k in rows if not k.startswith("platform/le-sealed/"))
    counts: Counter[str] = Counter()
    for case in range(cases):
        key = keys[case % len(keys)]
        value = mutate(rng, rows[key])
        try:
            read_row(key, value, rows)
        except SgxlaunchError as exc:
            _classify(counts, key, exc)
        except BaseException as exc:
            raise AssertionError(f"case {case} ({key}, seed {seed}): {exc!r}") from exc
        else:
            _classify(counts, key, None)
    return counts


def fuzz_database(
    original: bytes, rows: Mapping[str, bytes], directory: Path, cases: int, seed: int
) -> Counter[str]:
    """Mutate the database file per case; open it, list and read every key, and apply the
    platform's reader to each value.

    Raises:
        AssertionError: anything but SgxlaunchError escaped (names the case).
    """
    rng = random.Random(seed)
    path = directory / "state.sqlite3"
    counts: Counter[str] = Counter()
    for case in range(cases):
        data = mutate(rng, original)
        path.write_bytes(data)
        try:
            with SqliteStore(path) as store:
                listed = store.keys()
                found = {key: store.get(key) for key in listed}
                for key, value in found.items():
                    if value is not None and rows.get(key) != value:
                        read_row(key, value, {k: v for k, v in found.items() if v is not None})
        except SgxlaunchError as exc:
            _classify(counts, "database", exc)
        except BaseException as exc:
            raise AssertionError(f"database case {case} (seed {seed}): {exc!r}") from exc
        else:
            _classify(counts, "database", None)
    return counts


__all__ = ["fuzz_database", "fuzz_rows", "mutate", "read_row", "sample_rows", "write_database"]
