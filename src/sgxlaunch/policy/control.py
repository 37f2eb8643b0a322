"""Platform-control documents: the owner-signed switch of the platform's launch-control mode.

Switching the emulated platform to ``owner`` launch control, back to ``permissive`` (mainline
Linux behaviour), or to a new launch-enclave signer takes a document signed by a threshold of
the owner root's keys — the same keys and threshold that sign launch policies — so no unsigned
call can drop the owner's second factor.

Payload (``application/vnd.sgxlaunch.platform-mode+json``, carried in a DSSE envelope)::

    {
     "spec_version": "1",
     "type": "platform-mode",
     "version": 3,
     "expires": "2026-12-03T00:00:00Z",
     "mode": "owner",
     "le_mrsigner": "<64 lower-case hex: MRSIGNER of the owner's launch enclave>",
     "platform_id": "<64 lower-case hex>"
    }

* ``mode`` is ``"owner"`` or ``"permissive"``; ``le_mrsigner`` is required with ``owner`` and
  refused with ``permissive``; all-zero is refused (an MRSIGNER of zero is nobody's).
* ``platform_id`` is optional; when present the document applies to that one platform only
  (the verifier passes its platform's id; see :meth:`TrustedState.verify_mode
  <sgxlaunch.policy.state.TrustedState.verify_mode>`).
* ``version`` (1 … 2**63 − 1) only goes up; ``expires`` bounds how long a signed document can
  be *installed* — an installed mode stays in force after its document expires (a platform must
  not silently fall back to ``permissive``).
* ``spec_version`` is the string ``"1"``, as in the owner root and the launch policy.

Parsing is the strict reading of :mod:`sgxlaunch.policy._json` (duplicate keys, ``NaN``,
``true`` as an integer, unknown fields… all refused as :class:`~sgxlaunch.errors.MalformedInput`
naming the field); the trust rules live in :mod:`sgxlaunch.policy.state`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sgxlaunch.errors import MalformedInput, PlatformMismatch, UsageError
from sgxlaunch.policy import _json

MODE_PAYLOAD_TYPE = "application/vnd.sgxlaunch.platform-mode+json"
"""DSSE payload type of a platform-mode document."""
MODE_DOCUMENT_TYPE = "platform-mode"
"""The value of the document's ``type`` field."""
SPEC_VERSION = "1"
SPEC_VERSION_ISSUED = "2"
"""spec_version of a document carrying a signed ``issued`` time (required there)."""
MAX_MODE_SIZE = 16 << 10
"""Largest platform-mode payload accepted (16 KiB; a real one is about 300 bytes)."""
MAX_MODE_ENVELOPE_SIZE = (MAX_MODE_SIZE * 4) // 3 + (128 << 10)
"""Largest platform-mode envelope: the base64 of the largest payload plus 64 large signatures."""
MAX_VERSION = (1 << 63) - 1
MODES = ("permissive", "owner")
"""The launch-control modes a document can select."""

Mode = Literal["permissive", "owner"]

_FIELDS_REQUIRED = ("spec_version", "type", "version", "expires", "mode")
_FIELDS_OPTIONAL = ("le_mrsigner", "platform_id")
_HEX_LOWER = frozenset("0123456789abcdef")
_ZERO32 = bytes(32)


@dataclass(frozen=True, slots=True)
class ModeDocument:
    """A parsed platform-mode document.

    Attributes:
        version: only goes up (1 … 2**63 − 1).
        expires: the instant from which the document can no longer be installed (aware, UTC).
        mode: ``"owner"`` (launches need a token from the owner's launch enclave) or
            ``"permissive"`` (mainline behaviour).
        le_mrsigner: MRSIGNER of the launch enclave whose tokens count (``owner`` only).
        platform_id: the one platform the document applies to, or ``None`` (any platform of
            this owner).
    """

    version: int
    expires: datetime
    mode: Mode
    le_mrsigner: bytes | None = None
    platform_id: bytes | None = None
    issued: datetime | None = None

    @classmethod
    def create(
        cls,
        *,
        version: int,
        expires: datetime,
        mode: str,
        le_mrsigner: bytes | None = None,
        platform_id: bytes | None = None,
        issued: datetime | None = None,
    ) -> ModeDocument:
        """Build a document, checking the same rules as parsing.

        Raises:
            UsageError: a value is out of bounds, or ``le_mrsigner`` is missing with ``owner``
                or given with ``permissive``.
        """
        if expires.tzinfo is None or expires.utcoffset() is None:
            raise UsageError("expires must be a timezone-aware datetime (UTC)")
        doc: dict[str, Any] = {
            "spec_version": SPEC_VERSION,
            "type": MODE_DOCUMENT_TYPE,
            "version": version,
            "expires": _json.format_time(expires),
            "mode": mode,
        }
        for key, value in (("le_mrsigner", le_mrsigner), ("platform_id", platform_id)):
            if value is not None:
                doc[key] = bytes(value).hex()
        if issued is not None:
            if issued.tzinfo is None or issued.utcoffset() is None:
                raise UsageError("issued must be a timezone-aware datetime (UTC)")
            doc["spec_version"] = SPEC_VERSION_ISSUED
            doc["issued"] = _json.format_time(issued)
        try:
            return cls.from_payload(_json.dumps_canonical(doc))
        except MalformedInput as exc:
            raise UsageError(exc.message, detail=exc.detail) from None

    @classmethod
    def from_payload(cls, payload: bytes) -> ModeDocument:
        """Parse and check a platform-mode payload.

        Checks, in order: size ≤ :data:`MAX_MODE_SIZE` (before parsing); strict JSON (UTF-8,
        no duplicate keys, no ``NaN``, integers only, no trailing data); a JSON object with
        exactly the known fields (``le_mrsigner`` and ``platform_id`` optional);
        ``spec_version`` = "1"; ``type`` = "platform-mode"; ``version`` an integer
        1 … 2**63 − 1 (``true`` is not an integer); ``expires`` an RFC 3339 UTC time
        (``YYYY-MM-DDTHH:MM:SSZ``); ``mode`` one of :data:`MODES`; ``le_mrsigner`` present
        exactly when ``mode`` is ``owner``; ``le_mrsigner`` and ``platform_id`` 32 bytes as
        64 lower-case hex digits, not all zero.

        Raises:
            MalformedInput: any check fails (``field`` names the place).
        """
        if len(payload) > MAX_MODE_SIZE:
            raise MalformedInput(
                f"platform-mode document is {len(payload)} bytes, more than {MAX_MODE_SIZE}",
                field="mode",
            )
        value = _json.loads_strict(payload, what="platform-mode document")
        doc = _json.expect_object(value, "mode")
        _json.check_keys(
            doc, required=_FIELDS_REQUIRED, optional=(*_FIELDS_OPTIONAL, "issued"), field="mode"
        )
        _json.check_spec(doc, "mode", SPEC_VERSION, SPEC_VERSION_ISSUED)
        if _json.get_str(doc, "type", "mode") != MODE_DOCUMENT_TYPE:
            raise MalformedInput(f"mode.type must be {MODE_DOCUMENT_TYPE!r}", field="mode.type")
        version = _json.get_int(doc, "version", "mode", low=1, high=MAX_VERSION)
        expires = _json.get_time(doc, "expires", "mode")
        issued = _json.get_issued(doc, expires, "mode") if "issued" in doc else None
        mode = _json.get_str(doc, "mode", "mode")
        if mode == "owner":
            if "le_mrsigner" not in doc:
                raise MalformedInput(
                    "mode.le_mrsigner is required when mode is 'owner' (whose launch enclave?)",
                    field="mode.le_mrsigner",
                )
            chosen: Mode = "owner"
        elif mode == "permissive":
            if "le_mrsigner" in doc:
                raise MalformedInput(
                    "mode.le_mrsigner is not allowed when mode is 'permissive'",
                    field="mode.le_mrsigner",
                )
            chosen = "permissive"
        else:
            raise MalformedInput(
                f"mode.mode must be one of {', '.join(MODES)}, found {mode[:32]!r}",
                field="mode.mode",
            )
        le_mrsigner = _hex32(doc, "le_mrsigner") if "le_mrsigner" in doc else None
        platform_id = _hex32(doc, "platform_id") if "platform_id" in doc else None
        return cls(version, expires, chosen, le_mrsigner, platform_id, issued)

    def to_payload(self) -> bytes:
        """The canonical payload bytes (what gets signed)."""
        doc: dict[str, Any] = {
            "spec_version": SPEC_VERSION,
            "type": MODE_DOCUMENT_TYPE,
            "version": self.version,
            "expires": _json.format_time(self.expires),
            "mode": self.mode,
        }
        if self.le_mrsigner is not None:
            doc["le_mrsigner"] = self.le_mrsigner.hex()
        if self.platform_id is not None:
            doc["platform_id"] = self.platform_id.hex()
        if self.issued is not None:
            doc["spec_version"] = SPEC_VERSION_ISSUED
            doc["issued"] = _json.format_time(self.issued)
        return _json.dumps_canonical(doc)

    def is_expired(self, now: datetime) -> bool:
        """``expires <= now``: a document is expired at its exact expiry instant."""
        return self.expires <= now

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view (for ``--json`` output)."""
        return {
            "type": MODE_DOCUMENT_TYPE,
            "version": self.version,
            "issued": None if self.issued is None else _json.format_time(self.issued),
            "expires": _json.format_time(self.expires),
            "mode": self.mode,
            "le_mrsigner": None if self.le_mrsigner is None else self.le_mrsigner.hex(),
            "platform_id": None if self.platform_id is None else self.platform_id.hex(),
        }


def _hex32(doc: dict[str, Any], key: str) -> bytes:
    name = f"mode.{key}"
    text = _json.get_str(doc, key, "mode")
    if len(text) != 64 or not set(text) <= _HEX_LOWER:
        raise MalformedInput(f"{name} must be 32 bytes as 64 lower-case hex digits", field=name)
    value = bytes.fromhex(text)
    if value == _ZERO32:
        raise MalformedInput(f"{name} is all zero", field=name)
    return value


__all__ = [
    "MAX_MODE_ENVELOPE_SIZE",
    "MAX_MODE_SIZE",
    "MODES",
    "MODE_DOCUMENT_TYPE",
    "MODE_PAYLOAD_TYPE",
    "Mode",
    "ModeDocument",
    "PlatformMismatch",
]
