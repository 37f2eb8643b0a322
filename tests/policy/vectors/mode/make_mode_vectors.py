"""Regenerate the platform-mode regression vectors in this directory (deterministic).

The owner root and keys are those of ``../make_vectors.py`` (Ed25519 from fixed seeds, so
signatures are deterministic and a re-run writes byte-identical files).
``tests/policy/test_mode_vectors.py`` checks that, then replays every vector against a store
holding the root and the floor mode document (version 2, owner mode). Attack vectors are named
after their adversarial-checklist case where one applies.

Usage: ``python -m tests.policy.vectors.mode.make_mode_vectors`` from the repository root.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sgxlaunch.policy import MODE_PAYLOAD_TYPE, Envelope, PrivateKeySigner, sign_payload
from sgxlaunch.policy._json import dumps_canonical
from tests.policy.vectors import make_vectors

HERE = Path(__file__).resolve().parent
NOW = make_vectors.NOW
FAR = make_vectors.FAR
LE_SIGNER = "e5" * 32
PLATFORM = "f7" * 32
OTHER_PLATFORM = "f8" * 32


def _mode(version: int, mode: str = "owner", **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "spec_version": "1",
        "type": "platform-mode",
        "version": version,
        "expires": FAR,
        "mode": mode,
    }
    if mode == "owner":
        doc["le_mrsigner"] = LE_SIGNER
    doc.update(changes)
    return doc


def build() -> tuple[dict[str, bytes], dict[str, Any]]:
    """(file name → bytes, manifest)."""
    k = make_vectors.keys()
    two = k[:2]
    root_files, _ = make_vectors.build()
    files: dict[str, bytes] = {}
    manifest: dict[str, Any] = {
        "now": NOW,
        "platform_id": PLATFORM,
        "root": "../root.dsse.json",
        "floor": "mode-v2.dsse.json",
    }
    cases: dict[str, dict[str, Any]] = {}

    def signed(doc_bytes: bytes, signers: list[PrivateKeySigner] = two) -> bytes:
        return sign_payload(MODE_PAYLOAD_TYPE, doc_bytes, signers).to_bytes()

    def case(name: str, data: bytes, error: str, number: int | None = None) -> None:
        files[name] = data
        cases[name] = {"case": number, "error": error}

    assert "root.dsse.json" in root_files
    files["mode-v2.dsse.json"] = signed(dumps_canonical(_mode(2)))
    case(
        "adv18-mode-back-to-permissive-lower-version.dsse.json",
        signed(dumps_canonical(_mode(1, "permissive"))),
        "Rollback",
        18,
    )
    case(
        "adv18-mode-equal-version-different-bytes.dsse.json",
        signed(dumps_canonical(_mode(2, "permissive"))),
        "Rollback",
        18,
    )
    case(
        "adv19-mode-expired.dsse.json",
        signed(dumps_canonical(_mode(3, "permissive", expires="2026-11-01T00:00:00Z"))),
        "Expired",
        19,
    )
    case(
        "adv19-mode-expires-exactly-now.dsse.json",
        signed(dumps_canonical(_mode(3, "permissive", expires=NOW))),
        "Expired",
        19,
    )
    case(
        "adv21-mode-signed-by-one-key.dsse.json",
        signed(dumps_canonical(_mode(3, "permissive")), k[:1]),
        "ThresholdNotMet",
        21,
    )
    one = sign_payload(MODE_PAYLOAD_TYPE, dumps_canonical(_mode(3, "permissive")), k[:1])
    case(
        "adv21-mode-one-key-signing-twice.dsse.json",
        Envelope(one.payload_type, one.payload, one.signatures * 2).to_bytes(),
        "ThresholdNotMet",
        21,
    )
    good = sign_payload(MODE_PAYLOAD_TYPE, dumps_canonical(_mode(3, "permissive")), two)
    compact = json.dumps(json.loads(good.payload), separators=(",", ":")).encode()
    case(
        "adv23-mode-reserialized-payload.dsse.json",
        Envelope(good.payload_type, compact, good.signatures).to_bytes(),
        "ThresholdNotMet",
        23,
    )
    case(
        "adv23-mode-unknown-field.dsse.json",
        signed(dumps_canonical(_mode(3, "permissive", reason="maintenance"))),
        "MalformedInput",
        23,
    )
    text = dumps_canonical(_mode(3)).decode()
    case(
        "adv24-mode-true-as-version.dsse.json",
        signed(text.replace('"version": 3', '"version": true').encode()),
        "MalformedInput",
        24,
    )
    case(
        "adv24-mode-duplicate-key.dsse.json",
        signed(text.replace('"mode": "owner"', '"mode": "owner", "mode": "permissive"').encode()),
        "MalformedInput",
        24,
    )
    case(
        "adv26-mode-all-zero-le-mrsigner.dsse.json",
        signed(dumps_canonical(_mode(3, le_mrsigner="00" * 32))),
        "MalformedInput",
        26,
    )
    no_le = _mode(3)
    del no_le["le_mrsigner"]
    case(
        "mode-owner-without-le-mrsigner.dsse.json", signed(dumps_canonical(no_le)), "MalformedInput"
    )
    case(
        "mode-permissive-with-le-mrsigner.dsse.json",
        signed(dumps_canonical(_mode(3, "permissive", le_mrsigner=LE_SIGNER))),
        "MalformedInput",
    )
    case(
        "mode-bound-to-another-platform.dsse.json",
        signed(dumps_canonical(_mode(3, "permissive", platform_id=OTHER_PLATFORM))),
        "PlatformMismatch",
    )
    manifest["cases"] = cases
    files["manifest.json"] = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    return files, manifest


def main() -> None:
    files, _ = build()
    for name, data in files.items():
        (HERE / name).write_bytes(data)
    print(f"wrote {len(files)} files to {HERE}")


if __name__ == "__main__":
    main()
