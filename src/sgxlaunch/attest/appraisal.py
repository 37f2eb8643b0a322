"""The owner's appraisal of verified quotes: which enclaves, which TCB, which advisories.

Verification (:mod:`sgxlaunch.attest.verify`) says a quote is genuine and what its platform's
TCB status is; the appraisal says whether the owner accepts it. Payload
(``application/vnd.sgxlaunch.quote-appraisal+json``), owner-signed in a DSSE envelope by a
threshold of the owner root's keys — the machinery of :mod:`sgxlaunch.policy` (envelope, root,
threshold, expiry, rollback) — or given unsigned as a local file for ad-hoc checks::

    {
     "spec_version": "1",
     "type": "quote-appraisal",
     "version": 3,
     "expires": "2027-01-31T00:00:00Z",
     "identities": [
      {"id": "acme-prod", "mrsigner": "<64 hex>", "isvprodid": 3, "min_isvsvn": 2},
      {"id": "acme-one", "mrenclave": "<64 hex>"},
      {"id": "acme-td", "mrtd": "<96 hex>"}
     ],
     "tcb_statuses": ["UpToDate", "SWHardeningNeeded"],
     "denied_advisories": ["INTEL-SA-00615"]
    }

Rules, each explained as expected vs found:

* **identity** — the quote's body must match at least one entry of ``identities`` (non-empty):
  every field the entry gives must equal the quote's (``mrenclave``, ``mrsigner``: 32 bytes;
  ``isvprodid``: 0…65535; ``mrtd``: 48 bytes, TDX quotes only); an entry names at least one of
  ``mrenclave``, ``mrsigner``, ``mrtd`` and none is all zero (nothing is a wildcard). An SGX
  entry never matches a TD report and a TD entry never matches an SGX report.
* **minimum ISVSVN** — ``min_isvsvn`` of the matching entry: the quote's ISVSVN must be at
  least that (SGX entries only).
* **TCB status set** — the verified status must be one of ``tcb_statuses`` (non-empty, each
  one of the statuses in :data:`~sgxlaunch.attest.verify.TCB_STATUSES`).
* **advisory deny-list** — no advisory of the verified quote may be in
  ``denied_advisories`` (``INTEL-SA-`` followed by digits).

All four rules are evaluated and all failures reported; the quote is acceptable only if none
failed. Unknown fields are refused (an old verifier must not ignore a new constraint).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sgxlaunch.attest.verify import TCB_STATUSES, VerifiedQuote
from sgxlaunch.errors import MalformedInput, PolicyDenied, UsageError
from sgxlaunch.formats.quote import ReportBody
from sgxlaunch.policy import _json
from sgxlaunch.policy.envelope import MAX_SIGNATURES
from sgxlaunch.policy.root import OwnerRoot
from sgxlaunch.policy.state import (
    check_envelope,
    check_not_expired,
    check_now,
    check_signatures,
    check_version,
)
from sgxlaunch.policy.store import Store

APPRAISAL_PAYLOAD_TYPE = "application/vnd.sgxlaunch.quote-appraisal+json"
"""DSSE payload type of a quote-appraisal document."""
APPRAISAL_DOCUMENT_TYPE = "quote-appraisal"
APPRAISAL_KEY = "owner/quote-appraisal"
"""Store key of the installed (trusted) appraisal envelope: the rollback floor."""
SPEC_VERSION = "1"
MAX_APPRAISAL_SIZE = 1 << 20
"""Largest appraisal payload (1 MiB)."""
MAX_APPRAISAL_ENVELOPE_SIZE = (MAX_APPRAISAL_SIZE * 4) // 3 + MAX_SIGNATURES * 2048
MAX_IDENTITIES = 10_000
MAX_VERSION = (1 << 63) - 1

_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_ADVISORY_RE = re.compile(r"INTEL-SA-[0-9]{1,10}")
_FIELDS = (
    "spec_version",
    "type",
    "version",
    "expires",
    "identities",
    "tcb_statuses",
    "denied_advisories",
)
_IDENTITY_FIELDS = ("id", "mrenclave", "mrsigner", "isvprodid", "min_isvsvn", "mrtd")


@dataclass(frozen=True, slots=True)
class IdentityRule:
    """One acceptable identity. ``None`` means "not constrained" (see the module docstring)."""

    id: str
    mrenclave: bytes | None = None
    mrsigner: bytes | None = None
    isvprodid: int | None = None
    min_isvsvn: int | None = None
    mrtd: bytes | None = None

    @property
    def is_td(self) -> bool:
        return self.mrtd is not None

    @classmethod
    def from_doc(cls, doc: Any, position: int) -> IdentityRule:
        name = f"identities[{position}]"
        obj = _json.expect_object(doc, name)
        _json.check_keys(obj, required=("id",), optional=_IDENTITY_FIELDS[1:], field=name)
        rule_id = _json.get_str(obj, "id", name)
        if not _ID_RE.fullmatch(rule_id):
            raise MalformedInput(
                f"{name}.id must be 1-128 characters of A-Z a-z 0-9 . _ : -", field=f"{name}.id"
            )
        name = f"identities[{position}] ({rule_id})"
        values: dict[str, Any] = {}
        for key, size in (("mrenclave", 32), ("mrsigner", 32), ("mrtd", 48)):
            if key in obj:
                value = _json.get_hex(obj, key, name, size)
                if not any(value):
                    raise MalformedInput(
                        f"{name}.{key} is all zero: it is not a wildcard and matches nothing",
                        field=f"{name}.{key}",
                    )
                values[key] = value
        if not values:
            raise MalformedInput(
                f"{name} must name an mrenclave, an mrsigner or an mrtd (nothing is a wildcard)",
                field=name,
            )
        for key in ("isvprodid", "min_isvsvn"):
            if key in obj:
                values[key] = _json.get_int(obj, key, name, low=0, high=0xFFFF)
        if "mrtd" in values and any(k in values for k in ("mrenclave", "mrsigner", "isvprodid")):
            raise MalformedInput(
                f"{name}: mrtd (a TD) cannot be combined with SGX enclave fields", field=name
            )
        if "mrtd" in values and "min_isvsvn" in values:
            raise MalformedInput(f"{name}: a TD has no ISVSVN (min_isvsvn)", field=name)
        return cls(rule_id, **values)

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"id": self.id}
        for key in _IDENTITY_FIELDS[1:]:
            value = getattr(self, key)
            if value is not None:
                doc[key] = value.hex() if isinstance(value, bytes) else value
        return doc


@dataclass(frozen=True, slots=True)
class QuoteAppraisal:
    """A parsed quote-appraisal document."""

    version: int
    expires: datetime
    identities: tuple[IdentityRule, ...]
    tcb_statuses: tuple[str, ...]
    denied_advisories: tuple[str, ...]

    @classmethod
    def from_payload(cls, payload: bytes) -> QuoteAppraisal:
        """Parse and check an appraisal payload.

        Checks, in order: size ≤ :data:`MAX_APPRAISAL_SIZE`; strict JSON; exactly the known
        fields; ``spec_version`` "1"; ``type`` "quote-appraisal"; ``version`` 1 … 2**63 − 1;
        ``expires`` an RFC 3339 UTC time; 1 … :data:`MAX_IDENTITIES` identities (see
        :class:`IdentityRule`), ids unique; ``tcb_statuses`` a non-empty list of known
        statuses without repeats; ``denied_advisories`` a list of ``INTEL-SA-n`` ids without
        repeats.

        Raises:
            MalformedInput: naming the field.
        """
        if len(payload) > MAX_APPRAISAL_SIZE:
            raise MalformedInput(
                f"quote appraisal is {len(payload)} bytes, more than {MAX_APPRAISAL_SIZE}",
                field="appraisal",
            )
        doc = _json.expect_object(_json.loads_strict(payload, what="quote appraisal"), "appraisal")
        _json.check_keys(doc, required=_FIELDS, field="appraisal")
        if _json.get_str(doc, "spec_version", "appraisal") != SPEC_VERSION:
            raise MalformedInput(
                f"appraisal.spec_version must be {SPEC_VERSION!r}", field="appraisal.spec_version"
            )
        if _json.get_str(doc, "type", "appraisal") != APPRAISAL_DOCUMENT_TYPE:
            raise MalformedInput(
                f"appraisal.type must be {APPRAISAL_DOCUMENT_TYPE!r}", field="appraisal.type"
            )
        version = _json.get_int(doc, "version", "appraisal", low=1, high=MAX_VERSION)
        expires = _json.get_time(doc, "expires", "appraisal")
        entries = _json.expect_list(doc["identities"], "appraisal.identities")
        if not 1 <= len(entries) <= MAX_IDENTITIES:
            raise MalformedInput(
                f"appraisal.identities must list 1..{MAX_IDENTITIES} identities "
                "(nothing is a wildcard)",
                field="appraisal.identities",
            )
        identities = tuple(IdentityRule.from_doc(e, i) for i, e in enumerate(entries))
        seen: set[str] = set()
        for index, rule in enumerate(identities):
            if rule.id in seen:
                raise MalformedInput(
                    f"identity id {rule.id!r} is used twice", field=f"identities[{index}].id"
                )
            seen.add(rule.id)
        statuses = _string_list(doc, "tcb_statuses")
        if not statuses:
            raise MalformedInput(
                "appraisal.tcb_statuses must list at least one status",
                field="appraisal.tcb_statuses",
            )
        for index, status in enumerate(statuses):
            if status not in TCB_STATUSES:
                raise MalformedInput(
                    f"appraisal.tcb_statuses[{index}] {status!r} is not one of "
                    f"{', '.join(TCB_STATUSES)}",
                    field=f"appraisal.tcb_statuses[{index}]",
                )
        advisories = _string_list(doc, "denied_advisories")
        for index, advisory in enumerate(advisories):
            if not _ADVISORY_RE.fullmatch(advisory):
                raise MalformedInput(
                    f"appraisal.denied_advisories[{index}] {advisory!r} is not INTEL-SA-<digits>",
                    field=f"appraisal.denied_advisories[{index}]",
                )
        return cls(version, expires, identities, statuses, advisories)

    @classmethod
    def create(
        cls,
        *,
        version: int,
        expires: datetime,
        identities: list[dict[str, Any]],
        tcb_statuses: list[str],
        denied_advisories: list[str],
    ) -> QuoteAppraisal:
        """Build a document from plain values, checking the same rules as parsing.

        Raises:
            UsageError: a value breaks a rule.
        """
        if expires.tzinfo is None or expires.utcoffset() is None:
            raise UsageError("expires must be a timezone-aware datetime (UTC)")
        doc = {
            "spec_version": SPEC_VERSION,
            "type": APPRAISAL_DOCUMENT_TYPE,
            "version": version,
            "expires": _json.format_time(expires),
            "identities": identities,
            "tcb_statuses": tcb_statuses,
            "denied_advisories": denied_advisories,
        }
        try:
            return cls.from_payload(_json.dumps_canonical(doc))
        except MalformedInput as exc:
            raise UsageError(exc.message, detail=exc.detail) from None

    def to_payload(self) -> bytes:
        """The canonical payload bytes (what gets signed)."""
        return _json.dumps_canonical(self.describe())

    def describe(self) -> dict[str, Any]:
        return {
            "spec_version": SPEC_VERSION,
            "type": APPRAISAL_DOCUMENT_TYPE,
            "version": self.version,
            "expires": _json.format_time(self.expires),
            "identities": [rule.to_doc() for rule in self.identities],
            "tcb_statuses": list(self.tcb_statuses),
            "denied_advisories": list(self.denied_advisories),
        }


def _string_list(doc: dict[str, Any], key: str) -> tuple[str, ...]:
    items = _json.expect_list(doc[key], f"appraisal.{key}")
    values = []
    for index, item in enumerate(items):
        if type(item) is not str:
            raise MalformedInput(
                f"appraisal.{key}[{index}] must be a string", field=f"appraisal.{key}[{index}]"
            )
        if item in values:
            raise MalformedInput(
                f"appraisal.{key} lists {item!r} twice", field=f"appraisal.{key}[{index}]"
            )
        values.append(item)
    return tuple(values)


# --- evaluation ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule's outcome: what it expected and what the quote had.

    Attributes:
        field: the rule kind: ``identity``, ``min_isvsvn``, ``tcb_status`` or ``advisories``.
        ok: the rule passed.
        expected: what the appraisal asks for, as text.
        found: what the quote has, as text.
        rule: the id of the identity entry the finding is about (``None`` for the TCB status
            and advisory rules, and for an identity that matched no entry).
    """

    field: str
    ok: bool
    expected: str
    found: str
    rule: str | None = None

    def reason(self) -> dict[str, Any]:
        """The project's one denial-reason shape: ``{rule, field, expected, found}``."""
        return {
            "rule": self.rule,
            "field": self.field,
            "expected": self.expected,
            "found": self.found,
        }

    def describe(self) -> dict[str, Any]:
        return self.reason() | {"ok": self.ok}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The appraisal of one verified quote.

    Attributes:
        acceptable: every rule passed.
        findings: one entry per rule kind (identity, minimum ISVSVN, TCB status, advisories).
        identity: the id of the identity entry that matched, or ``None``.
        signed: the appraisal was an owner-signed document (``False``: an ad-hoc local file).
        version: the appraisal document's version.
    """

    acceptable: bool
    findings: tuple[Finding, ...]
    identity: str | None
    signed: bool
    version: int

    def failures(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if not f.ok)

    def check(self) -> None:
        """Raise unless acceptable.

        Raises:
            PolicyDenied: naming the first failed rule, every failure in ``detail``.
        """
        failed = self.failures()
        if not failed:
            return
        raise PolicyDenied(
            f"quote not acceptable: {failed[0].field}: expected {failed[0].expected}, "
            f"found {failed[0].found}",
            rule=failed[0].field,
            detail=[f"{f.field}: expected {f.expected}; found {f.found}" for f in failed],
        )

    def describe(self) -> dict[str, Any]:
        """JSON-ready: the verdict, every finding, and the failed ones as denial reasons."""
        return {
            "acceptable": self.acceptable,
            "identity": self.identity,
            "signed": self.signed,
            "version": self.version,
            "findings": [f.describe() for f in self.findings],
            "reasons": [f.reason() for f in self.failures()],
        }


def _quote_identity(body: Any) -> str:
    if isinstance(body, ReportBody):
        return (
            f"mrenclave {body.mrenclave.hex()}, mrsigner {body.mrsigner.hex()}, "
            f"isvprodid {body.isvprodid}, isvsvn {body.isvsvn}"
        )
    return f"mrtd {body.mrtd.hex()}"


def _identity_matches(rule: IdentityRule, body: Any) -> bool:
    if isinstance(body, ReportBody):
        if rule.is_td:
            return False
        return (
            (rule.mrenclave is None or rule.mrenclave == body.mrenclave)
            and (rule.mrsigner is None or rule.mrsigner == body.mrsigner)
            and (rule.isvprodid is None or rule.isvprodid == body.isvprodid)
        )
    return rule.is_td and rule.mrtd == body.mrtd


def _rule_text(rule: IdentityRule) -> str:
    parts = [f"{k} {v.hex() if isinstance(v, bytes) else v}" for k, v in rule.to_doc().items()]
    return ", ".join(parts[1:]) + f" ({rule.id})"


def appraise(
    appraisal: QuoteAppraisal, verified: VerifiedQuote, *, signed: bool = False
) -> Verdict:
    """Apply every rule of ``appraisal`` to ``verified`` (see the module docstring).

    The identity entry that counts is the first whose identity fields match; its
    ``min_isvsvn`` is the minimum-ISVSVN rule. All four findings are always returned.
    """
    body = verified.quote.body
    found_identity = _quote_identity(body)
    match = next((r for r in appraisal.identities if _identity_matches(r, body)), None)
    findings = []
    if match is None:
        listed = "; ".join(_rule_text(r) for r in appraisal.identities[:4])
        more = len(appraisal.identities) - 4
        findings.append(
            Finding(
                "identity",
                False,
                f"one of: {listed}" + (f"; and {more} more" if more > 0 else ""),
                found_identity,
            )
        )
        findings.append(Finding("min_isvsvn", False, "an identity to match first", "none"))
    else:
        findings.append(Finding("identity", True, _rule_text(match), found_identity, match.id))
        if match.min_isvsvn is None or not isinstance(body, ReportBody):
            findings.append(
                Finding("min_isvsvn", True, "not constrained", _svn_text(body), match.id)
            )
        else:
            findings.append(
                Finding(
                    "min_isvsvn",
                    body.isvsvn >= match.min_isvsvn,
                    f"isvsvn >= {match.min_isvsvn} ({match.id})",
                    f"isvsvn {body.isvsvn}",
                    match.id,
                )
            )
    findings.append(
        Finding(
            "tcb_status",
            verified.tcb_status in appraisal.tcb_statuses,
            "one of " + ", ".join(appraisal.tcb_statuses),
            verified.tcb_status,
        )
    )
    denied = [a for a in verified.advisory_ids if a in appraisal.denied_advisories]
    findings.append(
        Finding(
            "advisories",
            not denied,
            "none of " + (", ".join(appraisal.denied_advisories) or "(no advisory denied)"),
            ", ".join(denied) if denied else ", ".join(verified.advisory_ids) or "no advisories",
        )
    )
    acceptable = all(f.ok for f in findings)
    return Verdict(
        acceptable, tuple(findings), None if match is None else match.id, signed, appraisal.version
    )


def _svn_text(body: Any) -> str:
    return f"isvsvn {body.isvsvn}" if isinstance(body, ReportBody) else "a TD (no ISVSVN)"


# --- the signed document: the policy machinery, reused ------------------------------------------


def is_envelope(data: bytes) -> bool:
    """Whether ``data`` looks like a DSSE envelope rather than a bare appraisal document."""
    return b'"payloadType"' in data


def verify_signed_appraisal(
    data: bytes, root: OwnerRoot, now: datetime, *, installed: bytes | None = None
) -> QuoteAppraisal:
    """Check an owner-signed appraisal envelope.

    Checks, in order (as :meth:`TrustedState.verify_policy
    <sgxlaunch.policy.state.TrustedState.verify_policy>` does for a launch policy): ``now``
    is aware; the owner root is not expired; envelope (size capped before parsing) with the
    appraisal payload type; a threshold of distinct root keys signed the PAE of the exact
    payload bytes (before it is parsed); the payload parses; not expired; if an appraisal is
    installed, the version is above it (the identical payload is accepted).

    Args:
        data: the envelope bytes.
        root: the trusted owner root.
        now: the current time.
        installed: the installed appraisal envelope (the rollback floor), if any.

    Raises:
        UsageError, Expired, MalformedInput, ThresholdNotMet, Rollback.
    """
    check_now(now)
    check_not_expired(root.expires, now, "owner root (rotate it first)")
    envelope = check_envelope(data, APPRAISAL_PAYLOAD_TYPE, max_size=MAX_APPRAISAL_ENVELOPE_SIZE)
    check_signatures(envelope, root, "quote appraisal")
    appraisal = QuoteAppraisal.from_payload(envelope.payload)
    check_not_expired(appraisal.expires, now, "quote appraisal")
    if installed is not None:
        old = check_envelope(installed, APPRAISAL_PAYLOAD_TYPE, max_size=len(installed) + 1)
        old_appraisal = QuoteAppraisal.from_payload(old.payload)
        check_version(
            appraisal.version,
            hashlib.sha256(envelope.payload).digest(),
            old_appraisal.version,
            hashlib.sha256(old.payload).digest(),
            "quote appraisal",
        )
    return appraisal


def install_appraisal(store: Store, root: OwnerRoot, data: bytes, now: datetime) -> str:
    """Verify a signed appraisal (:func:`verify_signed_appraisal`) and store it as the floor.

    Nothing is written unless every check passes; the write is one commit.

    Returns:
        A one-line summary.
    """
    appraisal = verify_signed_appraisal(data, root, now, installed=store.get(APPRAISAL_KEY))
    store.commit({APPRAISAL_KEY: bytes(data)})
    return f"quote appraisal version {appraisal.version} installed"


def load_appraisal(
    data: bytes, now: datetime, *, root: OwnerRoot | None, installed: bytes | None = None
) -> tuple[QuoteAppraisal, bool]:
    """An appraisal from a file's bytes: a signed envelope (checked) or a bare local document.

    Returns:
        The appraisal and whether it was signed.

    Raises:
        UsageError: an envelope but no owner root to check it against.
        and whatever :func:`verify_signed_appraisal` / :meth:`QuoteAppraisal.from_payload` raise.
    """
    if is_envelope(data):
        if root is None:
            raise UsageError(
                "the appraisal is a signed envelope, but no owner root is installed to check it"
            )
        return verify_signed_appraisal(data, root, now, installed=installed), True
    return QuoteAppraisal.from_payload(data), False
