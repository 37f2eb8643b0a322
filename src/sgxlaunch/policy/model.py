"""The launch policy document: versioned, expiring ``allow`` and ``deny`` rules.

Payload (``application/vnd.sgxlaunch.launch-policy+json``, carried in a DSSE envelope)::

    {
     "spec_version": "1",
     "version": 7,
     "expires": "2027-01-31T00:00:00Z",
     "allow": [
      {"id": "acme-prod", "mrsigner": "<64 hex>", "isvprodid": 3,
       "isvsvn": {"min": 2, "max": 65535}},
      {"id": "acme-dev", "mrenclave": "<64 hex>", "debug": true}
     ],
     "deny": [
      {"id": "acme-cve-2026-1", "mrsigner": "<64 hex>", "isvprodid": 3,
       "isvsvn": {"min": 0, "max": 4}}
     ]
    }

Rule fields (every field given must match; fields left out do not constrain):

* identity — ``mrsigner``, ``mrenclave`` (32 bytes as hex; at least one of the two is required,
  and all-zero values are refused: nothing is a wildcard), ``isvprodid`` (0…65535),
  ``isvsvn`` (``{"min": a, "max": b}``, inclusive, a ≤ b), ``isvfamilyid``, ``isvextprodid``
  (16 bytes as hex, matched literally — all-zero means "the enclave's field is zero");
* permissions (``allow`` rules only) — ``debug``, ``provisionkey``, ``kss`` (default false:
  an enclave requesting the attribute is refused unless the rule says true), ``xfrm_mask`` and
  ``miscselect_mask`` (integers: the enclave's XFRM / MISCSELECT must have no bit outside the
  mask; left out = not constrained).

Rule ids (1–128 characters of ``A–Z a–z 0–9 . _ : -``) are unique across both lists. Unknown
fields anywhere are refused, so an old verifier never silently ignores a new constraint. Sizes
are capped before parsing: 64 MiB of payload, 1 000 000 rules.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sgxlaunch.errors import MalformedInput, UsageError
from sgxlaunch.policy import _json

POLICY_PAYLOAD_TYPE = "application/vnd.sgxlaunch.launch-policy+json"
SPEC_VERSION = "1"
SPEC_VERSION_ISSUED = "2"
"""spec_version of a policy carrying a signed ``issued`` time (required there)."""
MAX_POLICY_SIZE = 64 << 20
MAX_RULES = 1_000_000
MAX_VERSION = (1 << 63) - 1
U16 = 0xFFFF
U32 = 0xFFFF_FFFF
U64 = 0xFFFF_FFFF_FFFF_FFFF

_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_ZERO32 = bytes(32)

_IDENTITY_FIELDS = ("mrsigner", "mrenclave", "isvprodid", "isvsvn", "isvfamilyid", "isvextprodid")
_PERMISSION_FIELDS = ("debug", "provisionkey", "kss", "xfrm_mask", "miscselect_mask")
ALLOW_FIELDS = ("id", *_IDENTITY_FIELDS, *_PERMISSION_FIELDS)
DENY_FIELDS = ("id", *_IDENTITY_FIELDS)


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``allow`` or ``deny`` rule. ``None`` means "this field is not constrained".

    Attributes:
        id: the rule's id (unique within the policy).
        effect: ``"allow"`` or ``"deny"``.
        position: the rule's index within its list (ties between matching rules go to the
            lowest position).
    """

    id: str
    effect: str
    position: int
    mrsigner: bytes | None = None
    mrenclave: bytes | None = None
    isvprodid: int | None = None
    isvsvn: tuple[int, int] | None = None
    isvfamilyid: bytes | None = None
    isvextprodid: bytes | None = None
    debug: bool = False
    provisionkey: bool = False
    kss: bool = False
    xfrm_mask: int | None = None
    miscselect_mask: int | None = None

    @classmethod
    def from_doc(cls, doc: Any, effect: str, position: int) -> Rule:
        """Parse one rule object (``effect`` is the list it came from).

        Raises:
            MalformedInput: unknown or missing field, wrong type, out-of-range value, no
                MRSIGNER/MRENCLAVE, an all-zero MRSIGNER/MRENCLAVE, a bad id or SVN range.
        """
        name = f"{effect}[{position}]"
        obj = _json.expect_object(doc, name)
        allowed = ALLOW_FIELDS if effect == "allow" else DENY_FIELDS
        for key in obj:
            if key not in allowed:
                raise MalformedInput(f"unknown field {key!r} in {name}", field=f"{name}.{key}")
        if "id" not in obj:
            raise MalformedInput(f"{name} has no id", field=f"{name}.id")
        rule_id = _json.get_str(obj, "id", name)
        if not _ID_RE.fullmatch(rule_id):
            raise MalformedInput(
                f"{name}.id must be 1-128 characters of A-Z a-z 0-9 . _ : -", field=f"{name}.id"
            )
        name = f"{effect}[{position}] ({rule_id})"
        values: dict[str, Any] = {}
        for key in ("mrsigner", "mrenclave"):
            if key in obj:
                value = _json.get_hex(obj, key, name, 32)
                if value == _ZERO32:
                    raise MalformedInput(
                        f"{name}.{key} is all zero: it is not a wildcard and matches nothing",
                        field=f"{name}.{key}",
                    )
                values[key] = value
        if not values:
            raise MalformedInput(
                f"{name} must name an mrsigner or an mrenclave (nothing is a wildcard)",
                field=name,
            )
        if "isvprodid" in obj:
            values["isvprodid"] = _json.get_int(obj, "isvprodid", name, low=0, high=U16)
        if "isvsvn" in obj:
            svn_name = f"{name}.isvsvn"
            svn = _json.expect_object(obj["isvsvn"], svn_name)
            _json.check_keys(svn, required=("min", "max"), field=svn_name)
            low = _json.get_int(svn, "min", svn_name, low=0, high=U16)
            high = _json.get_int(svn, "max", svn_name, low=0, high=U16)
            if low > high:
                raise MalformedInput(f"{svn_name}: min {low} is above max {high}", field=svn_name)
            values["isvsvn"] = (low, high)
        for key in ("isvfamilyid", "isvextprodid"):
            if key in obj:
                values[key] = _json.get_hex(obj, key, name, 16)
        for key in ("debug", "provisionkey", "kss"):
            if key in obj:
                values[key] = _json.get_bool(obj, key, name)
        if "xfrm_mask" in obj:
            values["xfrm_mask"] = _json.get_int(obj, "xfrm_mask", name, low=0, high=U64)
        if "miscselect_mask" in obj:
            values["miscselect_mask"] = _json.get_int(obj, "miscselect_mask", name, low=0, high=U32)
        return cls(rule_id, effect, position, **values)

    def to_doc(self) -> dict[str, Any]:
        """The rule as a JSON object (fields left out when unconstrained or default)."""
        doc: dict[str, Any] = {"id": self.id}
        if self.mrsigner is not None:
            doc["mrsigner"] = self.mrsigner.hex()
        if self.mrenclave is not None:
            doc["mrenclave"] = self.mrenclave.hex()
        if self.isvprodid is not None:
            doc["isvprodid"] = self.isvprodid
        if self.isvsvn is not None:
            doc["isvsvn"] = {"min": self.isvsvn[0], "max": self.isvsvn[1]}
        if self.isvfamilyid is not None:
            doc["isvfamilyid"] = self.isvfamilyid.hex()
        if self.isvextprodid is not None:
            doc["isvextprodid"] = self.isvextprodid.hex()
        for key in ("debug", "provisionkey", "kss"):
            if getattr(self, key):
                doc[key] = True
        if self.xfrm_mask is not None:
            doc["xfrm_mask"] = self.xfrm_mask
        if self.miscselect_mask is not None:
            doc["miscselect_mask"] = self.miscselect_mask
        return doc


@dataclass(frozen=True, slots=True)
class LaunchPolicy:
    """A parsed launch policy.

    Attributes:
        version: only goes up (1 … 2**63 − 1).
        expires: the instant from which the policy no longer allows anything (aware, UTC).
        allow: allow rules in document order.
        deny: deny rules in document order.
        issued: when the owner signed it (``spec_version`` "2"), or ``None`` (version "1").
            The launch enclave's time floor is the latest ``issued`` it verified.
    """

    version: int
    expires: datetime
    allow: tuple[Rule, ...] = ()
    deny: tuple[Rule, ...] = field(default=())
    issued: datetime | None = None

    @classmethod
    def from_payload(cls, payload: bytes) -> LaunchPolicy:
        """Parse and check a launch-policy payload.

        Checks, in order: size ≤ :data:`MAX_POLICY_SIZE` and at most :data:`MAX_RULES`
        objects (counted over the raw bytes — both before any parsing); strict JSON; exactly
        the known top-level fields; ``spec_version`` = "1", or "2" with an ``issued`` RFC 3339
        UTC time not after ``expires``; ``version`` an integer 1 … 2**63 − 1 (``true`` is not
        an integer); ``expires`` an RFC 3339 UTC time; each rule (see :meth:`Rule.from_doc`);
        rule ids unique.

        Raises:
            MalformedInput: any check fails (``field`` names the place).
        """
        check_policy_size(payload)
        doc = _json.expect_object(_json.loads_strict(payload, what="launch policy"), "policy")
        _json.check_keys(
            doc,
            required=("spec_version", "version", "expires", "allow", "deny"),
            optional=("issued",),
            field="policy",
        )
        _json.check_spec(doc, "policy", SPEC_VERSION, SPEC_VERSION_ISSUED)
        version = _json.get_int(doc, "version", "policy", low=1, high=MAX_VERSION)
        expires = _json.get_time(doc, "expires", "policy")
        issued = _json.get_issued(doc, expires, "policy") if "issued" in doc else None
        allow_docs = _json.expect_list(doc["allow"], "policy.allow")
        deny_docs = _json.expect_list(doc["deny"], "policy.deny")
        if len(allow_docs) + len(deny_docs) > MAX_RULES:
            raise MalformedInput(f"policy has more than {MAX_RULES} rules", field="policy")
        allow = tuple(Rule.from_doc(d, "allow", i) for i, d in enumerate(allow_docs))
        deny = tuple(Rule.from_doc(d, "deny", i) for i, d in enumerate(deny_docs))
        _check_unique_ids(allow, deny)
        return cls(version, expires, allow, deny, issued)

    def to_payload(self) -> bytes:
        """The canonical payload bytes (what gets signed)."""
        doc: dict[str, Any] = {
            "spec_version": SPEC_VERSION,
            "version": self.version,
            "expires": _json.format_time(self.expires),
            "allow": [r.to_doc() for r in self.allow],
            "deny": [r.to_doc() for r in self.deny],
        }
        if self.issued is not None:
            doc["spec_version"] = SPEC_VERSION_ISSUED
            doc["issued"] = _json.format_time(self.issued)
        return _json.dumps_canonical(doc)

    def is_expired(self, now: datetime) -> bool:
        """``expires <= now``: a policy is expired at its exact expiry instant."""
        return self.expires <= now

    def with_rule(self, rule_doc: dict[str, Any], effect: str) -> LaunchPolicy:
        """A copy with one more rule (given as its JSON object) appended to ``effect``'s list.

        Raises:
            UsageError: the rule is invalid or its id is already used.
        """
        rules = self.allow if effect == "allow" else self.deny
        try:
            rule = Rule.from_doc(rule_doc, effect, len(rules))
        except MalformedInput as exc:
            raise UsageError(exc.message, detail=exc.detail) from None
        if any(r.id == rule.id for r in (*self.allow, *self.deny)):
            raise UsageError(f"rule id {rule.id!r} is already used in this policy")
        if effect == "allow":
            return replace(self, allow=(*self.allow, rule))
        return replace(self, deny=(*self.deny, rule))

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view of the whole policy (for ``--json`` output)."""
        return {
            "version": self.version,
            "issued": None if self.issued is None else _json.format_time(self.issued),
            "expires": _json.format_time(self.expires),
            "allow": [r.to_doc() for r in self.allow],
            "deny": [r.to_doc() for r in self.deny],
        }


def check_policy_size(payload: bytes) -> None:
    """Refuse a payload whose size or object count is over the caps, without parsing it.

    Every rule is a JSON object, so ``payload.count(b"{")`` bounds the number of rules from
    above (rule values cannot contain braces legitimately); both checks run at C speed.

    Raises:
        MalformedInput: more than :data:`MAX_POLICY_SIZE` bytes or more than
            :data:`MAX_RULES` (+ the top-level and SVN-range objects) objects.
    """
    if len(payload) > MAX_POLICY_SIZE:
        raise MalformedInput(
            f"launch policy is {len(payload)} bytes, more than the {MAX_POLICY_SIZE}-byte limit",
            field="policy",
        )
    objects = payload.count(b"{")
    if objects > 2 * MAX_RULES + 1:
        raise MalformedInput(
            f"launch policy holds {objects} JSON objects: more than {MAX_RULES} rules",
            field="policy",
        )


def _check_unique_ids(allow: Sequence[Rule], deny: Sequence[Rule]) -> None:
    seen: set[str] = set()
    for rule in (*allow, *deny):
        if rule.id in seen:
            raise MalformedInput(
                f"rule id {rule.id!r} is used twice", field=f"{rule.effect}[{rule.position}].id"
            )
        seen.add(rule.id)
