"""The owner root: who the platform owner is — k-of-n policy-signing keys, versioned, expiring.

Payload (``application/vnd.sgxlaunch.owner-root+json``, carried in a DSSE envelope)::

    {
     "spec_version": "1",
     "version": 1,
     "expires": "2027-11-26T00:00:00Z",
     "threshold": 2,
     "keys": [
      {"keyid": "<hex sha256 of SPKI DER>", "scheme": "ed25519", "public_key": "<base64 SPKI>"},
      ...
     ]
    }

The same keys and threshold sign launch policies. Rotation (new keys or threshold) is a new root
with a higher version, signed by a threshold of the *old* root's keys and a threshold of the
*new* root's own keys (see :mod:`sgxlaunch.policy.state`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sgxlaunch.errors import MalformedInput, UsageError
from sgxlaunch.policy import _json
from sgxlaunch.policy.keys import MAX_SPKI_SIZE, SCHEMES, PublicKey

ROOT_PAYLOAD_TYPE = "application/vnd.sgxlaunch.owner-root+json"
SPEC_VERSION = "1"
MAX_ROOT_SIZE = 1 << 20
"""Largest owner-root payload accepted (1 MiB)."""
MAX_KEYS = 32
MAX_VERSION = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class OwnerRoot:
    """A parsed owner root document.

    Attributes:
        version: only goes up across rotations (1 … 2**63 − 1).
        expires: when the root stops being acceptable as a *new* document (aware, UTC).
        threshold: how many distinct keys must sign (1 ≤ threshold ≤ number of keys).
        keys: the policy-signing keys by key id, in document order.
    """

    version: int
    expires: datetime
    threshold: int
    keys: Mapping[str, PublicKey]

    @classmethod
    def create(
        cls, *, version: int, expires: datetime, threshold: int, keys: Sequence[PublicKey]
    ) -> OwnerRoot:
        """Build a root from keys, checking the same rules as parsing.

        Raises:
            UsageError: the version, threshold or key list is out of bounds, or a key repeats.
        """
        try:
            return cls.from_payload(
                _json.dumps_canonical(_to_doc(version, expires, threshold, keys))
            )
        except MalformedInput as exc:
            raise UsageError(exc.message) from None

    @classmethod
    def from_payload(cls, payload: bytes) -> OwnerRoot:
        """Parse and check an owner-root payload.

        Checks, in order: size ≤ :data:`MAX_ROOT_SIZE` (before parsing); strict JSON; exactly
        the known fields; ``spec_version`` = "1"; ``version`` an integer 1 … 2**63 − 1;
        ``expires`` an RFC 3339 UTC time; 1 … :data:`MAX_KEYS` keys, each with a known scheme,
        a canonical SPKI of that scheme and a key id equal to its SHA-256; no key twice;
        1 ≤ ``threshold`` ≤ number of keys.

        Raises:
            MalformedInput: any check fails (``field`` names the place).
        """
        if len(payload) > MAX_ROOT_SIZE:
            raise MalformedInput(
                f"owner root is {len(payload)} bytes, more than {MAX_ROOT_SIZE}", field="root"
            )
        doc = _json.expect_object(_json.loads_strict(payload, what="owner root"), "root")
        _json.check_keys(
            doc,
            required=("spec_version", "version", "expires", "threshold", "keys"),
            field="root",
        )
        if _json.get_str(doc, "spec_version", "root") != SPEC_VERSION:
            raise MalformedInput(
                f"root.spec_version must be {SPEC_VERSION!r}", field="root.spec_version"
            )
        version = _json.get_int(doc, "version", "root", low=1, high=MAX_VERSION)
        expires = _json.get_time(doc, "expires", "root")
        entries = _json.expect_list(doc["keys"], "root.keys")
        if not 1 <= len(entries) <= MAX_KEYS:
            raise MalformedInput(f"root.keys must list 1..{MAX_KEYS} keys", field="root.keys")
        keys: dict[str, PublicKey] = {}
        for index, entry in enumerate(entries):
            name = f"root.keys[{index}]"
            item = _json.expect_object(entry, name)
            _json.check_keys(item, required=("keyid", "scheme", "public_key"), field=name)
            scheme = _json.get_str(item, "scheme", name)
            if scheme not in SCHEMES:
                raise MalformedInput(
                    f"{name}.scheme must be one of {', '.join(SCHEMES)}", field=f"{name}.scheme"
                )
            spki = _json.get_b64(item, "public_key", name, max_len=(MAX_SPKI_SIZE * 4) // 3 + 4)
            try:
                key = PublicKey.from_spki(spki, scheme=scheme)
            except MalformedInput as exc:
                raise MalformedInput(
                    exc.message, field=f"{name}.public_key", detail=exc.detail
                ) from None
            keyid = _json.get_str(item, "keyid", name)
            if keyid != key.keyid:
                raise MalformedInput(
                    f"{name}.keyid is not the SHA-256 of the key's SPKI",
                    field=f"{name}.keyid",
                    detail=[f"expected: {key.keyid}", f"found:    {keyid}"],
                )
            if keyid in keys:
                raise MalformedInput(f"{name}: key {keyid} is listed twice", field=name)
            keys[keyid] = key
        threshold = _json.get_int(doc, "threshold", "root", low=1, high=len(keys))
        return cls(version, expires, threshold, keys)

    def to_payload(self) -> bytes:
        """The canonical payload bytes for this root (what gets signed)."""
        return _json.dumps_canonical(
            _to_doc(self.version, self.expires, self.threshold, list(self.keys.values()))
        )

    def is_expired(self, now: datetime) -> bool:
        """``expires <= now``: a root is expired at its exact expiry instant."""
        return self.expires <= now

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (for ``--json`` output)."""
        return {
            "version": self.version,
            "expires": _json.format_time(self.expires),
            "threshold": self.threshold,
            "keys": [{"keyid": k.keyid, "scheme": k.scheme} for k in self.keys.values()],
        }


def _to_doc(
    version: int, expires: datetime, threshold: int, keys: Sequence[PublicKey]
) -> dict[str, Any]:
    return {
        "spec_version": SPEC_VERSION,
        "version": version,
        "expires": _json.format_time(expires),
        "threshold": threshold,
        "keys": [
            {
                "keyid": key.keyid,
                "scheme": key.scheme,
                "public_key": base64.b64encode(key.spki).decode("ascii"),
            }
            for key in keys
        ],
    }
