"""The launch policy document: versioned, expiring ``allow`` and ``deny`` rules.

Payload (``application/vnd.sgxlaunch.launch-policy+json``, carried in a DSSE envelope)::

    {
     "spec_version": "3",
     "version": 7,
     "issued": "2026-11-01T00:00:00Z",
     "expires": "2027-01-31T00:00:00Z",
     "allow": [
      {"id": "acme-prod", "mrsigner": "<64 hex>", "isvprodid": 3,
       "isvsvn": {"min": 2, "max": 65535}},
      {"id": "acme-dev", "mrenclave": "<64 hex>", "debug": true,
       "dynamic_memory": "attested-code", "code_hashes": ["<64 hex>"]}
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

* dynamic memory (``allow`` rules only, ``spec_version`` "3"; issue 17) — ``dynamic_memory``:
  ``"none"`` | ``"data"`` | ``"attested-code"`` | ``"code"`` (default ``"data"``: pages may be
  added after EINIT but never run as code); ``code_hashes``: a list of SHA-256 code hashes (64
  hex) or ``"any"`` — only with, and required by, ``attested-code``; ``unmeasured_exec``:
  ``"deny"`` | ``"allow"`` (default deny: an executable page EADDed without SGX_PAGE_MEASURE
  makes owner-mode INIT fail); ``rwx_pages``: ``"deny"`` | ``"allow"`` (default deny: a
  measured page that is writable and executable makes owner-mode INIT fail). Policies of
  ``spec_version`` "1" and "2" cannot carry these fields and keep meaning what they meant when
  signed: ``code`` + ``allow`` + ``allow`` (mainline: dynamic code unrestricted).
* protected code (``allow`` rules only, ``spec_version`` "3"; issue 20) — ``protected_code``:
  ``"deny"`` | ``"allow"``: whether the owner's launch enclave may release an author's code key
  to an enclave this rule is the first allow rule to match (deny rules still win). Default
  deny in **every** ``spec_version``: policies of "1" and "2" cannot carry it, so under them
  no code key is ever released.

Rule ids (1–128 characters of ``A–Z a–z 0–9 . _ : -``) are unique across both lists. Unknown
fields anywhere are refused, so an old verifier never silently ignores a new constraint. Sizes
are capped before parsing: 64 MiB of payload, 1 000 000 rules.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from sgxlaunch.driver.owner import DynamicMemory, OwnerLimits
from sgxlaunch.errors import MalformedInput, UsageError
from sgxlaunch.policy import _json

POLICY_PAYLOAD_TYPE = "application/vnd.sgxlaunch.launch-policy+json"
SPEC_VERSION = "1"
SPEC_VERSION_ISSUED = "2"
"""spec_version of a policy carrying a signed ``issued`` time (required there)."""
SPEC_VERSION_DYNAMIC = "3"
"""spec_version whose allow rules carry the dynamic-memory fields (and ``issued``, required)."""
SPEC_VERSIONS = (SPEC_VERSION, SPEC_VERSION_ISSUED, SPEC_VERSION_DYNAMIC)
LEGACY_SPEC_VERSIONS = (SPEC_VERSION, SPEC_VERSION_ISSUED)
"""Versions under which dynamic code is unrestricted (``code`` + ``allow`` + ``allow``)."""
ANY_CODE = "any"
"""``code_hashes`` value that allows any reported code (each grant is still recorded)."""
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
_DYNAMIC_FIELDS = ("dynamic_memory", "code_hashes", "unmeasured_exec", "rwx_pages")
ALLOW_FIELDS = ("id", *_IDENTITY_FIELDS, *_PERMISSION_FIELDS)
"""Allow-rule fields of ``spec_version`` "1" and "2"."""
ALLOW_FIELDS_DYNAMIC = (*ALLOW_FIELDS, *_DYNAMIC_FIELDS, "protected_code")
"""Allow-rule fields of ``spec_version`` "3"."""
DENY_FIELDS = ("id", *_IDENTITY_FIELDS)
_DENY_ALLOW = ("deny", "allow")


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``allow`` or ``deny`` rule. ``None`` means "this field is not constrained".

    Attributes:
        id: the rule's id (unique within the policy).
        effect: ``"allow"`` or ``"deny"``.
        position: the rule's index within its list (ties between matching rules go to the
            lowest position).
        dynamic_memory, unmeasured_exec, rwx_pages: the allow rule's dynamic-memory limits
            (the dataclass defaults are mainline's — what a rule of ``spec_version`` "1"/"2"
            means; :meth:`from_doc` applies spec "3"'s defaults, data/deny/deny).
        code_hashes: for ``attested-code``, the allowed SHA-256 code hashes or
            :data:`ANY_CODE`; ``None`` for every other level.
        protected_code: whether a protected-code key may be released to an enclave this
            allow rule matches first (default ``False`` — deny — in every spec_version).
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
    dynamic_memory: DynamicMemory = DynamicMemory.CODE
    code_hashes: tuple[bytes, ...] | Literal["any"] | None = None
    unmeasured_exec: bool = True
    rwx_pages: bool = True
    protected_code: bool = False

    @property
    def limits(self) -> OwnerLimits:
        """What the driver enforces for an enclave this allow rule launched."""
        return OwnerLimits(self.dynamic_memory, self.unmeasured_exec, self.rwx_pages)

    def allows_code(self, code_hash: bytes) -> bool:
        """Whether an ``attested-code`` grant for code hashing to ``code_hash`` is allowed
        (``code_hashes`` lists it, or is ``"any"``); ``False`` at every other level."""
        if self.dynamic_memory != DynamicMemory.ATTESTED_CODE or self.code_hashes is None:
            return False
        return self.code_hashes == ANY_CODE or bytes(code_hash) in self.code_hashes

    @classmethod
    def from_doc(
        cls, doc: Any, effect: str, position: int, spec_version: str = SPEC_VERSION_DYNAMIC
    ) -> Rule:
        """Parse one rule object (``effect`` is the list it came from, ``spec_version`` the
        policy's: it decides which fields exist and the dynamic-memory defaults).

        Raises:
            MalformedInput: unknown or missing field, wrong type, out-of-range value, no
                MRSIGNER/MRENCLAVE, an all-zero MRSIGNER/MRENCLAVE, a bad id or SVN range, a
                dynamic-memory field under an older ``spec_version``, a bad level, a
                ``code_hashes`` without ``attested-code`` (or missing with it).
        """
        name = f"{effect}[{position}]"
        obj = _json.expect_object(doc, name)
        dynamic = spec_version not in LEGACY_SPEC_VERSIONS
        allowed: tuple[str, ...]
        if effect != "allow":
            allowed = DENY_FIELDS
        else:
            allowed = ALLOW_FIELDS_DYNAMIC if dynamic else ALLOW_FIELDS
        for key in obj:
            if key not in allowed:
                why = ""
                if effect == "allow" and key in ALLOW_FIELDS_DYNAMIC:
                    why = (
                        f" of spec_version {spec_version!r}: it needs spec_version "
                        f"{SPEC_VERSION_DYNAMIC!r}"
                    )
                elif key in ALLOW_FIELDS_DYNAMIC:
                    why = ": only allow rules carry it"
                raise MalformedInput(f"unknown field {key!r} in {name}{why}", field=f"{name}.{key}")
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
        if effect == "allow" and dynamic:
            values.update(_dynamic_fields(obj, name))
        return cls(rule_id, effect, position, **values)

    def to_doc(self, spec_version: str = SPEC_VERSION_DYNAMIC) -> dict[str, Any]:
        """The rule as a JSON object under ``spec_version`` (fields left out when
        unconstrained or default; under "3" the dynamic-memory fields that differ from
        data/deny/deny are written, so a rule carried over from an older policy keeps its
        mainline meaning until the owner tightens it).

        Raises:
            UsageError: the rule has limits that ``spec_version`` "1"/"2" cannot express.
        """
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
        if self.effect != "allow":
            return doc
        if spec_version in LEGACY_SPEC_VERSIONS:
            if self.limits != OwnerLimits() or self.code_hashes is not None:
                raise UsageError(
                    f"rule {self.id}: dynamic-memory limits need spec_version "
                    f"{SPEC_VERSION_DYNAMIC!r}"
                )
            if self.protected_code:
                raise UsageError(
                    f"rule {self.id}: protected_code needs spec_version {SPEC_VERSION_DYNAMIC!r}"
                )
            return doc
        if self.dynamic_memory != DynamicMemory.DATA:
            doc["dynamic_memory"] = self.dynamic_memory.label
        hashes = self.code_hashes
        if isinstance(hashes, str):
            doc["code_hashes"] = hashes
        elif hashes is not None:
            doc["code_hashes"] = [h.hex() for h in hashes]
        if self.unmeasured_exec:
            doc["unmeasured_exec"] = "allow"
        if self.rwx_pages:
            doc["rwx_pages"] = "allow"
        if self.protected_code:
            doc["protected_code"] = "allow"
        return doc


def _dynamic_fields(obj: dict[str, Any], name: str) -> dict[str, Any]:
    """The dynamic-memory fields of a spec "3" allow rule, with its defaults (data/deny/deny).

    Raises:
        MalformedInput: a bad level or deny/allow value; ``code_hashes`` without
            ``attested-code``, missing with it, empty, repeated or not 64 hex.
    """
    values: dict[str, Any] = {}
    level = DynamicMemory.DATA
    if "dynamic_memory" in obj:
        label = _json.get_str(obj, "dynamic_memory", name)
        try:
            level = DynamicMemory.from_label(label)
        except UsageError:
            raise MalformedInput(
                f"{name}.dynamic_memory must be one of none, data, attested-code, code "
                f"(found {label!r})",
                field=f"{name}.dynamic_memory",
            ) from None
    values["dynamic_memory"] = level
    for key in ("unmeasured_exec", "rwx_pages", "protected_code"):
        value = _json.get_str(obj, key, name) if key in obj else "deny"
        if value not in _DENY_ALLOW:
            raise MalformedInput(
                f"{name}.{key} must be 'deny' or 'allow' (found {value!r})", field=f"{name}.{key}"
            )
        values[key] = value == "allow"
    where = f"{name}.code_hashes"
    if level != DynamicMemory.ATTESTED_CODE:
        if "code_hashes" in obj:
            raise MalformedInput(
                f"{where} needs dynamic_memory 'attested-code' (this rule has {level.label!r})",
                field=where,
            )
        return values
    if "code_hashes" not in obj:
        raise MalformedInput(
            f"{name} has dynamic_memory 'attested-code' but no code_hashes "
            f"(a list of SHA-256 hashes, or {ANY_CODE!r})",
            field=where,
        )
    raw = obj["code_hashes"]
    if raw == ANY_CODE:
        values["code_hashes"] = ANY_CODE
        return values
    if not isinstance(raw, list):
        raise MalformedInput(
            f"{where} must be a list of SHA-256 hashes (64 hex) or {ANY_CODE!r}", field=where
        )
    if not raw:
        raise MalformedInput(
            f"{where} is empty: no code could ever run; use dynamic_memory 'data' instead",
            field=where,
        )
    hashes: list[bytes] = []
    for i, item in enumerate(raw):
        if not isinstance(item, str):
            raise MalformedInput(f"{where}[{i}] must be 64 hex characters", field=f"{where}[{i}]")
        digest = _json.parse_hex(item, 32, f"{where}[{i}]")
        if digest in hashes:
            raise MalformedInput(f"{where}[{i}] repeats {item}", field=f"{where}[{i}]")
        hashes.append(digest)
    values["code_hashes"] = tuple(hashes)
    return values


@dataclass(frozen=True, slots=True)
class LaunchPolicy:
    """A parsed launch policy.

    Attributes:
        version: only goes up (1 … 2**63 − 1).
        expires: the instant from which the policy no longer allows anything (aware, UTC).
        allow: allow rules in document order.
        deny: deny rules in document order.
        issued: when the owner signed it (``spec_version`` "2" and "3"), or ``None`` ("1").
            The launch enclave's time floor is the latest ``issued`` it verified.
        spec_version: "1", "2" or "3"; left empty, "3" when ``issued`` is given, else "1".
            Under "1" and "2" dynamic code is unrestricted (:attr:`dynamic_code_unrestricted`).
    """

    version: int
    expires: datetime
    allow: tuple[Rule, ...] = ()
    deny: tuple[Rule, ...] = field(default=())
    issued: datetime | None = None
    spec_version: str = ""

    def __post_init__(self) -> None:
        spec = self.spec_version or (SPEC_VERSION if self.issued is None else SPEC_VERSION_DYNAMIC)
        if spec not in SPEC_VERSIONS:
            raise UsageError(f"spec_version {spec!r} is not one of {', '.join(SPEC_VERSIONS)}")
        if (spec == SPEC_VERSION) != (self.issued is None):
            raise UsageError(
                f"a policy of spec_version {spec!r} "
                + ("has no issued time" if spec == SPEC_VERSION else "needs an issued time")
            )
        object.__setattr__(self, "spec_version", spec)

    @property
    def dynamic_code_unrestricted(self) -> bool:
        """An older ``spec_version`` ("1"/"2"): every allow rule means ``code`` + ``allow`` +
        ``allow`` (mainline) — ``platform status`` and ``policy explain`` warn about it."""
        return self.spec_version in LEGACY_SPEC_VERSIONS

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
        spec = _json.get_str(doc, "spec_version", "policy")
        if spec not in SPEC_VERSIONS:
            raise MalformedInput(
                f"policy.spec_version must be one of {', '.join(map(repr, SPEC_VERSIONS))} "
                f"(found {spec!r})",
                field="policy.spec_version",
            )
        if spec != SPEC_VERSION and "issued" not in doc:
            raise MalformedInput("missing field 'issued' in policy", field="policy.issued")
        if spec == SPEC_VERSION and "issued" in doc:
            raise MalformedInput(
                f"policy.issued needs spec_version {SPEC_VERSION_ISSUED!r} or "
                f"{SPEC_VERSION_DYNAMIC!r}",
                field="policy.issued",
            )
        version = _json.get_int(doc, "version", "policy", low=1, high=MAX_VERSION)
        expires = _json.get_time(doc, "expires", "policy")
        issued = _json.get_issued(doc, expires, "policy") if "issued" in doc else None
        allow_docs = _json.expect_list(doc["allow"], "policy.allow")
        deny_docs = _json.expect_list(doc["deny"], "policy.deny")
        if len(allow_docs) + len(deny_docs) > MAX_RULES:
            raise MalformedInput(f"policy has more than {MAX_RULES} rules", field="policy")
        allow = tuple(Rule.from_doc(d, "allow", i, spec) for i, d in enumerate(allow_docs))
        deny = tuple(Rule.from_doc(d, "deny", i, spec) for i, d in enumerate(deny_docs))
        _check_unique_ids(allow, deny)
        return cls(version, expires, allow, deny, issued, spec)

    def to_payload(self) -> bytes:
        """The canonical payload bytes (what gets signed).

        Raises:
            UsageError: a rule carries limits its ``spec_version`` cannot express.
        """
        spec = self.spec_version
        doc: dict[str, Any] = {
            "spec_version": spec,
            "version": self.version,
            "expires": _json.format_time(self.expires),
            "allow": [r.to_doc(spec) for r in self.allow],
            "deny": [r.to_doc(spec) for r in self.deny],
        }
        if self.issued is not None:
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
            rule = Rule.from_doc(rule_doc, effect, len(rules), self.spec_version)
        except MalformedInput as exc:
            raise UsageError(exc.message, detail=exc.detail) from None
        if any(r.id == rule.id for r in (*self.allow, *self.deny)):
            raise UsageError(f"rule id {rule.id!r} is already used in this policy")
        if effect == "allow":
            return replace(self, allow=(*self.allow, rule))
        return replace(self, deny=(*self.deny, rule))

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view of the whole policy (for ``--json`` output)."""
        spec = self.spec_version
        return {
            "spec_version": spec,
            "version": self.version,
            "issued": None if self.issued is None else _json.format_time(self.issued),
            "expires": _json.format_time(self.expires),
            "allow": [r.to_doc(spec) for r in self.allow],
            "deny": [r.to_doc(spec) for r in self.deny],
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
