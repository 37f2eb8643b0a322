"""Evaluating a launch policy for one enclave: a verdict with the allowing rule or every reason.

Semantics, in order:

1. An expired policy (``expires <= now``) allows nothing.
2. Candidate rules are found through three indexes — by MRENCLAVE, by (MRSIGNER, ISVPRODID)
   and by MRSIGNER — so the cost does not grow with the number of rules (every rule names an
   MRENCLAVE or an MRSIGNER, so every rule sits in exactly one index).
3. A ``deny`` rule whose identity fields all match wins over any allow rule.
4. The first (lowest position) ``allow`` rule whose identity fields match *and* whose
   permissions cover the enclave's attributes allows the launch.
5. Otherwise the launch is denied, with every reason: for each candidate rule, each field that
   did not match (expected vs found); if no rule names the enclave, that.

Attribute permissions: DEBUG, PROVISIONKEY and KSS need the allow rule's ``debug``,
``provisionkey``, ``kss``; EINITTOKEN_KEY is never granted by policy (only the owner's launch
enclave holds it, and it launches without a token); reserved or unmodelled FLAGS bits (including
INIT and CET) are refused; XFRM and MISCSELECT must lie within the rule's masks, when given.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sgxlaunch.arch.constants import AttributeFlag
from sgxlaunch.arch.structs import Sigstruct
from sgxlaunch.driver.owner import DynamicMemory, OwnerLimits
from sgxlaunch.errors import PolicyDenied, UsageError
from sgxlaunch.policy import _json
from sgxlaunch.policy.model import SPEC_VERSION_DYNAMIC, LaunchPolicy, Rule

_DEBUG = int(AttributeFlag.DEBUG)
_PROVISIONKEY = int(AttributeFlag.PROVISIONKEY)
_KSS = int(AttributeFlag.KSS)
_EINITTOKEN_KEY = int(AttributeFlag.EINITTOKEN_KEY)
_FREE_FLAGS = int(AttributeFlag.MODE64BIT | AttributeFlag.AEXNOTIFY)
_KNOWN_FLAGS = _FREE_FLAGS | _DEBUG | _PROVISIONKEY | _KSS | _EINITTOKEN_KEY


@dataclass(frozen=True, slots=True)
class EnclaveIdentity:
    """The fields a launch policy looks at (from a SIGSTRUCT, or the enclave's actual SECS).

    Attributes:
        mrenclave: 32 bytes.
        mrsigner: 32 bytes.
        isvprodid, isvsvn: 16-bit integers.
        isvfamilyid, isvextprodid: 16 bytes each.
        flags, xfrm: ATTRIBUTES.FLAGS and ATTRIBUTES.XFRM.
        miscselect: MISCSELECT.
    """

    mrenclave: bytes
    mrsigner: bytes
    isvprodid: int = 0
    isvsvn: int = 0
    isvfamilyid: bytes = bytes(16)
    isvextprodid: bytes = bytes(16)
    flags: int = 0
    xfrm: int = 0
    miscselect: int = 0

    def __post_init__(self) -> None:
        if len(self.mrenclave) != 32 or len(self.mrsigner) != 32:
            raise UsageError("MRENCLAVE and MRSIGNER must be 32 bytes each")
        if len(self.isvfamilyid) != 16 or len(self.isvextprodid) != 16:
            raise UsageError("ISVFAMILYID and ISVEXTPRODID must be 16 bytes each")

    @classmethod
    def from_sigstruct(cls, sig: Sigstruct) -> EnclaveIdentity:
        """The identity a SIGSTRUCT declares (ATTRIBUTES as signed, MRSIGNER from MODULUS).

        Built without ``__post_init__``: a :class:`Sigstruct`'s fields have their exact widths
        (its constructor checks them; its parsers unpack fixed widths) and MRSIGNER is a
        SHA-256, which is all that check asks. The launch enclave builds one for every
        SIGSTRUCT it verifies.
        """
        identity = _new_object(cls)
        attributes = sig.attributes
        _SET_MRENCLAVE(identity, sig.enclavehash)
        _SET_MRSIGNER(identity, sig.mrsigner)
        _SET_ISVPRODID(identity, sig.isvprodid)
        _SET_ISVSVN(identity, sig.isvsvn)
        _SET_ISVFAMILYID(identity, sig.isvfamilyid)
        _SET_ISVEXTPRODID(identity, sig.isvextprodid)
        _SET_FLAGS(identity, attributes.flags)
        _SET_XFRM(identity, attributes.xfrm)
        _SET_MISCSELECT(identity, sig.miscselect)
        return identity

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "mrenclave": self.mrenclave.hex(),
            "mrsigner": self.mrsigner.hex(),
            "isvprodid": self.isvprodid,
            "isvsvn": self.isvsvn,
            "isvfamilyid": self.isvfamilyid.hex(),
            "isvextprodid": self.isvextprodid.hex(),
            "flags": f"0x{self.flags:x}",
            "xfrm": f"0x{self.xfrm:x}",
            "miscselect": f"0x{self.miscselect:x}",
        }


# The slots of EnclaveIdentity, set directly by from_sigstruct (in the dataclass's field order).
assert tuple(f.name for f in dataclasses.fields(EnclaveIdentity)) == (
    "mrenclave",
    "mrsigner",
    "isvprodid",
    "isvsvn",
    "isvfamilyid",
    "isvextprodid",
    "flags",
    "xfrm",
    "miscselect",
)
(
    _SET_MRENCLAVE,
    _SET_MRSIGNER,
    _SET_ISVPRODID,
    _SET_ISVSVN,
    _SET_ISVFAMILYID,
    _SET_ISVEXTPRODID,
    _SET_FLAGS,
    _SET_XFRM,
    _SET_MISCSELECT,
) = (EnclaveIdentity.__dict__[f.name].__set__ for f in dataclasses.fields(EnclaveIdentity))
_new_object = object.__new__


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason a rule did not allow the launch (or a deny rule did match)."""

    rule: str | None
    field: str
    expected: str
    found: str

    def __str__(self) -> str:
        where = f"rule {self.rule}" if self.rule is not None else "policy"
        return f"{where}: {self.field}: expected {self.expected}, found {self.found}"

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "rule": self.rule,
            "field": self.field,
            "expected": self.expected,
            "found": self.found,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict for one enclave.

    Attributes:
        allowed: whether the policy allows the launch.
        rule: the allowing rule's id; for a denial, the deny rule's id if one matched.
        reasons: every reason for a denial (empty when allowed).
        policy_version: the version of the policy that decided.
        matched: the allowing rule itself (``None`` for a denial): its :attr:`limits` go into
            the token's KEYID, its ``code_hashes`` decide attested-code grants.
    """

    allowed: bool
    rule: str | None
    reasons: tuple[Reason, ...]
    policy_version: int
    matched: Rule | None = None

    @property
    def limits(self) -> OwnerLimits:
        """The allowing rule's dynamic-memory limits (what the driver enforces after INIT).

        Raises:
            UsageError: the decision is a denial (no rule's limits apply).
        """
        if not self.allowed or self.matched is None:
            raise UsageError("a denied launch has no owner limits")
        return self.matched.limits

    @property
    def code_hashes(self) -> tuple[bytes, ...] | Literal["any"] | None:
        """The allowing rule's ``code_hashes`` (``None`` unless ``attested-code``)."""
        return None if self.matched is None else self.matched.code_hashes

    def require(self) -> None:
        """Raise unless allowed.

        Raises:
            PolicyDenied: the launch is denied; ``rule`` and ``detail`` carry the reasons.
        """
        if self.allowed:
            return
        head = (
            f"launch denied by rule {self.rule}"
            if self.rule is not None
            else "launch denied: no rule of the owner's policy allows this enclave"
        )
        raise PolicyDenied(
            f"{head} (policy version {self.policy_version})",
            rule=self.rule,
            detail=[str(r) for r in self.reasons],
            reasons=[r.describe() for r in self.reasons],
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view (with the allowing rule's ``limits`` when allowed)."""
        out: dict[str, Any] = {
            "allowed": self.allowed,
            "rule": self.rule,
            "policy_version": self.policy_version,
            "reasons": [r.describe() for r in self.reasons],
        }
        if self.allowed and self.matched is not None:
            out["limits"] = describe_limits(self.matched)
        return out


def describe_limits(rule: Rule) -> dict[str, Any]:
    """An allow rule's dynamic-memory limits and its ``protected_code`` permission, JSON-ready."""
    hashes = rule.code_hashes
    return {
        "dynamic_memory": rule.dynamic_memory.label,
        "code_hashes": hashes
        if hashes is None or isinstance(hashes, str)
        else [h.hex() for h in hashes],
        "unmeasured_exec": "allow" if rule.unmeasured_exec else "deny",
        "rwx_pages": "allow" if rule.rwx_pages else "deny",
        "protected_code": "allow" if rule.protected_code else "deny",
    }


_hex_eq = hmac.compare_digest
"""Byte fields are compared in constant time (``hmac.compare_digest`` itself, no wrapper)."""


def identity_mismatches(rule: Rule, e: EnclaveIdentity) -> list[Reason]:
    """Each identity field of ``rule`` that ``e`` does not match (empty: the identity matches)."""
    out: list[Reason] = []
    if rule.mrenclave is not None and not _hex_eq(rule.mrenclave, e.mrenclave):
        out.append(Reason(rule.id, "mrenclave", rule.mrenclave.hex(), e.mrenclave.hex()))
    if rule.mrsigner is not None and not _hex_eq(rule.mrsigner, e.mrsigner):
        out.append(Reason(rule.id, "mrsigner", rule.mrsigner.hex(), e.mrsigner.hex()))
    if rule.isvprodid is not None and rule.isvprodid != e.isvprodid:
        out.append(Reason(rule.id, "isvprodid", str(rule.isvprodid), str(e.isvprodid)))
    if rule.isvsvn is not None and not rule.isvsvn[0] <= e.isvsvn <= rule.isvsvn[1]:
        low, high = rule.isvsvn
        out.append(Reason(rule.id, "isvsvn", f"{low}..{high}", str(e.isvsvn)))
    if rule.isvfamilyid is not None and not _hex_eq(rule.isvfamilyid, e.isvfamilyid):
        out.append(Reason(rule.id, "isvfamilyid", rule.isvfamilyid.hex(), e.isvfamilyid.hex()))
    if rule.isvextprodid is not None and not _hex_eq(rule.isvextprodid, e.isvextprodid):
        out.append(Reason(rule.id, "isvextprodid", rule.isvextprodid.hex(), e.isvextprodid.hex()))
    return out


def permission_problems(rule: Rule, e: EnclaveIdentity) -> list[Reason]:
    """Each attribute of ``e`` that allow-rule ``rule`` does not permit."""
    out: list[Reason] = []
    flags = e.flags
    if flags & _DEBUG and not rule.debug:
        out.append(Reason(rule.id, "attributes.debug", "DEBUG=0 (rule has no debug)", "DEBUG=1"))
    if flags & _PROVISIONKEY and not rule.provisionkey:
        out.append(
            Reason(
                rule.id,
                "attributes.provisionkey",
                "PROVISIONKEY=0 (rule has no provisionkey)",
                "PROVISIONKEY=1",
            )
        )
    if flags & _KSS and not rule.kss:
        out.append(Reason(rule.id, "attributes.kss", "KSS=0 (rule has no kss)", "KSS=1"))
    if flags & _EINITTOKEN_KEY:
        out.append(
            Reason(
                rule.id,
                "attributes.einittoken_key",
                "EINITTOKEN_KEY=0 (never granted by policy)",
                "EINITTOKEN_KEY=1",
            )
        )
    unknown = flags & ~_KNOWN_FLAGS
    if unknown:
        out.append(
            Reason(rule.id, "attributes.flags", "no reserved or unmodelled bits", f"0x{unknown:x}")
        )
    if rule.xfrm_mask is not None and e.xfrm & ~rule.xfrm_mask:
        out.append(Reason(rule.id, "xfrm", f"within mask 0x{rule.xfrm_mask:x}", f"0x{e.xfrm:x}"))
    if rule.miscselect_mask is not None and e.miscselect & ~rule.miscselect_mask:
        out.append(
            Reason(
                rule.id,
                "miscselect",
                f"within mask 0x{rule.miscselect_mask:x}",
                f"0x{e.miscselect:x}",
            )
        )
    return out


class _Index:
    """All rules, bucketed by MRENCLAVE, (MRSIGNER, ISVPRODID) and MRSIGNER.

    Allow and deny rules share the buckets, so a query costs three dictionary lookups however
    many rules there are; within a bucket, deny rules come first, then allow rules by position.
    """

    __slots__ = ("by_mrenclave", "by_signer", "by_signer_prod")

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.by_mrenclave: dict[bytes, list[Rule]] = {}
        self.by_signer_prod: dict[tuple[bytes, int], list[Rule]] = {}
        self.by_signer: dict[bytes, list[Rule]] = {}
        for rule in rules:
            if rule.mrenclave is not None:
                self.by_mrenclave.setdefault(rule.mrenclave, []).append(rule)
            elif rule.mrsigner is not None and rule.isvprodid is not None:
                key = (rule.mrsigner, rule.isvprodid)
                self.by_signer_prod.setdefault(key, []).append(rule)
            elif rule.mrsigner is not None:
                self.by_signer.setdefault(rule.mrsigner, []).append(rule)
            else:  # pragma: no cover - Rule.from_doc refuses such rules
                raise UsageError(f"rule {rule.id} names neither MRSIGNER nor MRENCLAVE")
        for table in (self.by_mrenclave, self.by_signer_prod, self.by_signer):
            for bucket in table.values():
                if len(bucket) > 1:
                    bucket.sort(key=_order)

    def candidates(self, e: EnclaveIdentity) -> list[Rule]:
        """Every rule that could match ``e``: deny rules first, then allow rules by position."""
        first = self.by_mrenclave.get(e.mrenclave)
        second = self.by_signer_prod.get((e.mrsigner, e.isvprodid))
        third = self.by_signer.get(e.mrsigner)
        # one bucket (the usual case) is already in order
        if second is None and third is None:
            return first or []
        if first is None and third is None:
            return second  # type: ignore[return-value]  # not None (checked above)
        if first is None and second is None:
            return third  # type: ignore[return-value]
        found = [*(first or ()), *(second or ()), *(third or ())]
        found.sort(key=_order)
        return found


def _named_fields(rule: Rule) -> str:
    names = [
        n
        for n in ("mrenclave", "mrsigner", "isvprodid", "isvsvn", "isvfamilyid", "isvextprodid")
        if getattr(rule, n) is not None
    ]
    return ", ".join(names)


def _order(rule: Rule) -> tuple[bool, int]:
    return (rule.effect != "deny", rule.position)


class PolicyIndex:
    """A launch policy prepared for evaluation (build once per installed policy)."""

    __slots__ = ("_allowed", "_index", "policy")

    def __init__(self, policy: LaunchPolicy) -> None:
        self.policy = policy
        self._index = _Index((*policy.deny, *policy.allow))
        self._allowed: dict[int, Decision] = {}
        """Allow rule position → the (immutable) decision "allowed by this rule", made the
        first time the rule allows something: a constant of the policy, not a cached verdict
        (every evaluation still runs every check)."""

    def evaluate(self, enclave: EnclaveIdentity | Sigstruct, now: datetime) -> Decision:
        """The verdict for ``enclave`` at ``now`` (see the module docstring for the order).

        Raises:
            UsageError: ``now`` is not timezone-aware.
        """
        if now.tzinfo is None:
            raise UsageError("now must be a timezone-aware datetime (UTC)")
        e = enclave if isinstance(enclave, EnclaveIdentity) else identity_of(enclave)
        policy = self.policy
        if policy.expires <= now:  # LaunchPolicy.is_expired, in line
            return Decision(
                False,
                None,
                (
                    Reason(
                        None,
                        "expires",
                        f"a policy valid at {_json.format_time(now)}",
                        f"expired at {_json.format_time(policy.expires)}",
                    ),
                ),
                policy.version,
            )
        candidates = self._index.candidates(e)
        # deny rules come first in the candidates, so a list without one at its head has none
        if candidates and candidates[0].effect == "deny":
            deny_hits = [
                r for r in candidates if r.effect == "deny" and not identity_mismatches(r, e)
            ]
            if deny_hits:
                reasons = tuple(
                    Reason(r.id, "deny", "no deny rule matching", "matches " + _named_fields(r))
                    for r in deny_hits
                )
                return Decision(False, deny_hits[0].id, reasons, policy.version)
        reasons_list: list[Reason] = []
        allow_candidates = 0
        for rule in candidates:
            if rule.effect == "deny":
                continue
            allow_candidates += 1
            problems = identity_mismatches(rule, e) or permission_problems(rule, e)
            if not problems:
                allowed = self._allowed.get(rule.position)
                if allowed is None or allowed.matched is not rule:
                    allowed = Decision(True, rule.id, (), policy.version, rule)
                    self._allowed[rule.position] = allowed
                return allowed
            reasons_list.extend(problems)
        if not allow_candidates:
            reasons_list.append(
                Reason(
                    None,
                    "mrenclave/mrsigner",
                    "an allow rule naming this MRENCLAVE, or this MRSIGNER (and ISVPRODID)",
                    "none"
                    if policy.allow
                    else "none: the allow list is empty, so nothing is allowed",
                )
            )
        return Decision(False, None, tuple(reasons_list), policy.version)


def identity_of(enclave: EnclaveIdentity | Sigstruct) -> EnclaveIdentity:
    """Accept either a SIGSTRUCT or an :class:`EnclaveIdentity`.

    Raises:
        UsageError: ``enclave`` is neither.
    """
    if isinstance(enclave, EnclaveIdentity):
        return enclave
    if isinstance(enclave, Sigstruct):
        return EnclaveIdentity.from_sigstruct(enclave)
    raise UsageError(f"cannot evaluate a {type(enclave).__name__}; pass a Sigstruct")


def evaluate(
    policy: LaunchPolicy | PolicyIndex, enclave: EnclaveIdentity | Sigstruct, now: datetime
) -> Decision:
    """One-shot evaluation (builds the index when given a bare policy; keep a
    :class:`PolicyIndex` to evaluate many enclaves).
    """
    index = policy if isinstance(policy, PolicyIndex) else PolicyIndex(policy)
    return index.evaluate(enclave, now)


# -- what a decision means for dynamic memory (``policy explain``, ``platform status``) -----

_LEVEL_MEANING = {
    DynamicMemory.NONE: (
        "no pages may be added after EINIT (a fault in an unpopulated part of the range gets "
        "SIGBUS; RESTRICT_PERMISSIONS, MODIFY_TYPES and REMOVE_PAGES fail with EPERM)"
    ),
    DynamicMemory.DATA: (
        "pages may be added after EINIT (heap, stack, TCS) but a dynamic page or an "
        "unpopulated part of the range is never mapped executable (EACCES)"
    ),
    DynamicMemory.ATTESTED_CODE: (
        "dynamic code runs only on pages the owner's launch enclave granted after the enclave "
        "reported the code's hash in a REPORT (one grant per challenge; each grant is logged)"
    ),
    DynamicMemory.CODE: (
        "mainline: dynamic pages may be mapped writable and executable; each dynamic "
        "executable mapping is recorded"
    ),
}


def legacy_spec_warning(policy: LaunchPolicy) -> str | None:
    """The warning for a policy of ``spec_version`` "1"/"2" (dynamic code unrestricted)."""
    if not policy.dynamic_code_unrestricted:
        return None
    return (
        f"the launch policy (version {policy.version}) is of spec_version "
        f"{policy.spec_version!r}: dynamic code is unrestricted under it (every allow rule "
        "means dynamic_memory code, unmeasured_exec allow, rwx_pages allow); install a "
        f"spec_version {SPEC_VERSION_DYNAMIC!r} policy to restrict it "
        "(sgxlaunch policy new --from ...)"
    )


def kss_allowed(sig: Sigstruct) -> bool:
    """Whether an enclave of ``sig`` can run with ATTRIBUTES.KSS: the SIGSTRUCT sets it, or its
    ATTRIBUTEMASK leaves the bit free (EINIT compares SECS and SIGSTRUCT attributes under the
    mask, SDM EINIT)."""
    return bool(sig.attributes.flags & _KSS) or not sig.attributemask.flags & _KSS


def explain_dynamic_memory(
    policy: LaunchPolicy, decision: Decision, sig: Sigstruct | None = None
) -> dict[str, Any]:
    """What ``decision`` means for the enclave's dynamic memory, JSON-ready.

    Keys: ``spec_version``; ``limits`` (:func:`describe_limits` of the allowing rule, or
    ``None`` when denied); ``meaning`` (sentences: the level, unmeasured_exec, rwx_pages);
    ``warnings`` (an older ``spec_version``; ``attested-code`` for an enclave that cannot run
    with KSS — ``sig``'s ATTRIBUTES/ATTRIBUTEMASK — or under a rule without ``kss: true``:
    without KSS the instance has no CONFIGID, so no grant can name it).
    """
    warnings: list[str] = []
    legacy = legacy_spec_warning(policy)
    if legacy is not None:
        warnings.append(legacy)
    rule = decision.matched if decision.allowed else None
    if rule is None:
        return {
            "spec_version": policy.spec_version,
            "limits": None,
            "meaning": [],
            "warnings": warnings,
        }
    meaning = [f"dynamic_memory {rule.dynamic_memory.label}: {_LEVEL_MEANING[rule.dynamic_memory]}"]
    hashes = rule.code_hashes
    if isinstance(hashes, str):
        meaning.append("code_hashes any: any reported code may be granted (each grant is logged)")
    elif hashes is not None:
        meaning.append(f"code_hashes: only code hashing to one of {len(hashes)} listed SHA-256")
    meaning.append(
        "unmeasured_exec allow: executable pages added without SGX_PAGE_MEASURE are accepted"
        if rule.unmeasured_exec
        else "unmeasured_exec deny: an executable page added without SGX_PAGE_MEASURE makes "
        "INIT fail (EPERM)"
    )
    meaning.append(
        "rwx_pages allow: measured writable and executable pages are accepted"
        if rule.rwx_pages
        else "rwx_pages deny: a measured writable and executable page makes INIT fail (EPERM)"
    )
    if rule.dynamic_memory == DynamicMemory.ATTESTED_CODE:
        if sig is not None and not kss_allowed(sig):
            warnings.append(
                "this enclave's SIGSTRUCT does not allow KSS (ATTRIBUTES.KSS = 0 under its "
                "ATTRIBUTEMASK), so its instances get no CONFIGID and it cannot use "
                "attested-code: no dynamic code will ever be granted to it"
            )
        elif not rule.kss:
            warnings.append(
                f"rule {rule.id} does not say kss: true, so the enclave cannot be launched "
                "with KSS, which attested-code needs (the instance's CONFIGID)"
            )
    return {
        "spec_version": policy.spec_version,
        "limits": describe_limits(rule),
        "meaning": meaning,
        "warnings": warnings,
    }
