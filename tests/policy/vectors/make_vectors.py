"""Regenerate the policy regression vectors in this directory (deterministic).

Three Ed25519 owner keys are derived from fixed seeds (Ed25519 signatures are deterministic),
so running this again writes byte-identical files; ``tests/policy/test_vectors.py`` checks
that, then replays every vector against a fresh store. Each attack vector is named after its
adversarial-checklist case.

Usage: ``python tests/policy/vectors/make_vectors.py``
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from sgxlaunch.policy import (
    POLICY_PAYLOAD_TYPE,
    ROOT_PAYLOAD_TYPE,
    Envelope,
    OwnerRoot,
    PrivateKeySigner,
    sign_payload,
)
from sgxlaunch.policy._json import dumps_canonical

HERE = Path(__file__).resolve().parent
NOW = "2026-11-26T12:00:00Z"
FAR = "2036-01-01T00:00:00Z"
SIGNER = "a1" * 32


def keys() -> list[PrivateKeySigner]:
    return [
        PrivateKeySigner(
            ed25519.Ed25519PrivateKey.from_private_bytes(
                hashlib.sha256(f"sgxlaunch policy vector key {i}".encode()).digest()
            )
        )
        for i in range(3)
    ]


def _policy(version: int, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "spec_version": "1",
        "version": version,
        "expires": FAR,
        "allow": [{"id": "acme", "mrsigner": SIGNER, "isvprodid": 1}],
        "deny": [],
    }
    doc.update(changes)
    return doc


def build() -> tuple[dict[str, bytes], dict[str, Any]]:
    """(file name → bytes, manifest)."""
    k = keys()
    two = k[:2]
    root = OwnerRoot.create(
        version=1,
        expires=datetime(2036, 1, 1, tzinfo=UTC),
        threshold=2,
        keys=[s.public_key for s in k],
    )
    files: dict[str, bytes] = {}
    manifest: dict[str, Any] = {
        "now": NOW,
        "root": "root.dsse.json",
        "floor": "policy-v2.dsse.json",
    }
    cases: dict[str, dict[str, Any]] = {}

    def signed(doc_bytes: bytes, signers: list[PrivateKeySigner] = two) -> bytes:
        return sign_payload(POLICY_PAYLOAD_TYPE, doc_bytes, signers).to_bytes()

    def case(name: str, data: bytes, number: int, error: str, floor: bool = True) -> None:
        files[name] = data
        cases[name] = {"case": number, "error": error, "after_floor": floor}

    files["root.dsse.json"] = sign_payload(ROOT_PAYLOAD_TYPE, root.to_payload(), two).to_bytes()
    floor_payload = dumps_canonical(_policy(2))
    files["policy-v2.dsse.json"] = signed(floor_payload)

    case(
        "adv18-rollback-lower-version.dsse.json",
        signed(dumps_canonical(_policy(1))),
        18,
        "Rollback",
    )
    case(
        "adv18-equal-version-different-bytes.dsse.json",
        signed(dumps_canonical(_policy(2, allow=[]))),
        18,
        "Rollback",
    )
    case(
        "adv19-expired.dsse.json",
        signed(dumps_canonical(_policy(3, expires="2026-11-01T00:00:00Z"))),
        19,
        "Expired",
    )
    case(
        "adv19-expires-exactly-now.dsse.json",
        signed(dumps_canonical(_policy(3, expires=NOW))),
        19,
        "Expired",
    )
    case(
        "adv19-offset-timestamp.dsse.json",
        signed(dumps_canonical(_policy(3, expires="2036-01-01T00:00:00+00:00"))),
        19,
        "MalformedInput",
    )
    one = sign_payload(POLICY_PAYLOAD_TYPE, dumps_canonical(_policy(3)), k[:1])
    case(
        "adv21-one-key-signing-twice.dsse.json",
        Envelope(one.payload_type, one.payload, one.signatures * 2).to_bytes(),
        21,
        "ThresholdNotMet",
    )
    good = sign_payload(POLICY_PAYLOAD_TYPE, dumps_canonical(_policy(3)), two)
    reformatted = json.dumps(json.loads(good.payload), separators=(",", ":")).encode()
    case(
        "adv23-reserialized-payload.dsse.json",
        Envelope(good.payload_type, reformatted, good.signatures).to_bytes(),
        23,
        "ThresholdNotMet",
    )
    case(
        "adv23-unknown-field.dsse.json",
        signed(dumps_canonical(_policy(3, comment="ignored?"))),
        23,
        "MalformedInput",
    )
    text = dumps_canonical(_policy(3)).decode()
    case(
        "adv24-duplicate-key.dsse.json",
        signed(text.replace('"version": 3', '"version": 3, "version": 4').encode()),
        24,
        "MalformedInput",
    )
    case(
        "adv24-nan.dsse.json",
        signed(text.replace('"version": 3', '"version": NaN').encode()),
        24,
        "MalformedInput",
    )
    case(
        "adv24-infinity.dsse.json",
        signed(text.replace('"version": 3', '"version": Infinity').encode()),
        24,
        "MalformedInput",
    )
    case(
        "adv24-true-as-version.dsse.json",
        signed(text.replace('"version": 3', '"version": true').encode()),
        24,
        "MalformedInput",
    )
    case(
        "adv24-100000-digit-integer.dsse.json",
        signed(text.replace('"version": 3', '"version": ' + "7" * 100_000).encode()),
        24,
        "MalformedInput",
    )
    case(
        "adv24-10000-deep-nesting.dsse.json",
        signed(text.replace('"deny": []', '"deny": ' + "[" * 10_000 + "]" * 10_000).encode()),
        24,
        "MalformedInput",
    )
    case(
        "adv26-all-zero-mrsigner.dsse.json",
        signed(dumps_canonical(_policy(3, allow=[{"id": "z", "mrsigner": "00" * 32}]))),
        26,
        "MalformedInput",
    )
    case(
        "adv22-rotation-signed-only-by-new-keys.dsse.json",
        _rotation_new_only(),
        22,
        "ThresholdNotMet",
        floor=False,
    )
    manifest["cases"] = cases
    files["manifest.json"] = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    return files, manifest


def _rotation_new_only() -> bytes:
    new = [
        PrivateKeySigner(
            ed25519.Ed25519PrivateKey.from_private_bytes(
                hashlib.sha256(f"sgxlaunch policy vector new key {i}".encode()).digest()
            )
        )
        for i in range(3)
    ]
    root = OwnerRoot.create(
        version=2,
        expires=datetime(2036, 1, 1, tzinfo=UTC),
        threshold=2,
        keys=[s.public_key for s in new],
    )
    return sign_payload(ROOT_PAYLOAD_TYPE, root.to_payload(), new).to_bytes()


def main() -> None:
    files, _ = build()
    for name, data in files.items():
        (HERE / name).write_bytes(data)
    print(f"wrote {len(files)} files to {HERE}")


if __name__ == "__main__":
    main()
