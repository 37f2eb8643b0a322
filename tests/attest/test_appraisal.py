"""The owner's appraisal: one test per rule kind, the document's strict reading, and the
owner-signed form (threshold, expiry, rollback) through the policy machinery."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sgxlaunch.attest import (
    APPRAISAL_KEY,
    APPRAISAL_PAYLOAD_TYPE,
    Collateral,
    QuoteAppraisal,
    VerifiedQuote,
    appraise,
    install_appraisal,
    load_appraisal,
    verify_quote,
    verify_signed_appraisal,
)
from sgxlaunch.errors import (
    Expired,
    MalformedInput,
    PolicyDenied,
    Rollback,
    ThresholdNotMet,
    UsageError,
)
from sgxlaunch.formats.quote import parse_quote
from sgxlaunch.policy import MemoryStore, OwnerRoot, PrivateKeySigner, sign_payload
from sgxlaunch.policy._json import dumps_canonical
from tests.support.dcap import SGX, TDX, quote_bytes, shared
from tests.support.policy import ed25519_signer

MRENCLAVE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
MRSIGNER = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
MRTD = (
    "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407"
    "de03ae6dc5f87f27428b2538873118b7"
)
NOW = datetime(2026, 11, 28, tzinfo=UTC)


def document(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "spec_version": "1",
        "type": "quote-appraisal",
        "version": 1,
        "expires": "2027-06-01T00:00:00Z",
        "identities": [{"id": "phala-sample", "mrsigner": MRSIGNER, "isvprodid": 0}],
        "tcb_statuses": ["UpToDate", "ConfigurationAndSWHardeningNeeded"],
        "denied_advisories": [],
    }
    doc.update(changes)
    return doc


def appraisal(**changes: Any) -> QuoteAppraisal:
    return QuoteAppraisal.from_payload(dumps_canonical(document(**changes)))


def verified(
    name: str = SGX.quote, status: str = SGX.status or "", advisories: tuple[str, ...] = ()
) -> VerifiedQuote:
    """A verified quote as verify_quote returns it (the library's verdict given, for rules)."""
    return VerifiedQuote(parse_quote(quote_bytes(name)), status, advisories, NOW, "test")


def finding(verdict: Any, rule: str) -> Any:
    return next(f for f in verdict.findings if f.field == rule)


# --- one test per rule kind ----------------------------------------------------------------------


def test_rule_identity_mrenclave_mrsigner_isvprodid_and_mrtd() -> None:
    ok = appraise(appraisal(), verified())
    assert ok.acceptable and ok.identity == "phala-sample"
    for entry in (
        {"id": "other-signer", "mrsigner": "ab" * 32},
        {"id": "other-enclave", "mrenclave": "cd" * 32, "mrsigner": MRSIGNER},
        {"id": "other-product", "mrsigner": MRSIGNER, "isvprodid": 7},
        {"id": "a-td", "mrtd": MRTD},
    ):
        verdict = appraise(appraisal(identities=[entry]), verified())
        assert not verdict.acceptable, entry
        identity = finding(verdict, "identity")
        assert not identity.ok and identity.found.startswith(f"mrenclave {MRENCLAVE}")
        assert entry["id"] in identity.expected
        with pytest.raises(PolicyDenied, match=r"^quote not acceptable: identity") as info:
            verdict.check()
        assert info.value.rule == "identity"
    exact = appraise(appraisal(identities=[{"id": "one", "mrenclave": MRENCLAVE}]), verified())
    assert exact.acceptable and exact.identity == "one"
    td = verified(TDX.quote, "UpToDate")
    assert appraise(appraisal(identities=[{"id": "td", "mrtd": MRTD}]), td).acceptable
    assert not appraise(appraisal(), td).acceptable  # an SGX entry never matches a TD


def test_rule_minimum_isvsvn() -> None:
    entry = {"id": "svn", "mrsigner": MRSIGNER, "min_isvsvn": 1}
    verdict = appraise(appraisal(identities=[entry]), verified())  # the quote has ISVSVN 0
    svn = finding(verdict, "min_isvsvn")
    assert not verdict.acceptable and not svn.ok
    assert (svn.expected, svn.found) == ("isvsvn >= 1 (svn)", "isvsvn 0")
    assert [f.field for f in verdict.failures()] == ["min_isvsvn"]
    assert svn.rule == "svn"
    assert verdict.describe()["reasons"] == [
        {"rule": "svn", "field": "min_isvsvn", "expected": "isvsvn >= 1 (svn)", "found": "isvsvn 0"}
    ]
    entry["min_isvsvn"] = 0
    assert appraise(appraisal(identities=[entry]), verified()).acceptable


def test_rule_tcb_status_set() -> None:
    verdict = appraise(appraisal(tcb_statuses=["UpToDate"]), verified())
    status = finding(verdict, "tcb_status")
    assert not verdict.acceptable and not status.ok
    assert (status.expected, status.found) == (
        "one of UpToDate",
        "ConfigurationAndSWHardeningNeeded",
    )
    with pytest.raises(PolicyDenied, match="tcb_status: expected one of UpToDate"):
        verdict.check()


def test_rule_advisory_deny_list() -> None:
    advisories = ("INTEL-SA-00289", "INTEL-SA-00615")
    quote = verified(advisories=advisories)
    assert appraise(appraisal(denied_advisories=["INTEL-SA-00334"]), quote).acceptable
    verdict = appraise(appraisal(denied_advisories=["INTEL-SA-00615"]), quote)
    advisory = finding(verdict, "advisories")
    assert not verdict.acceptable and not advisory.ok
    assert advisory.found == "INTEL-SA-00615"
    assert advisory.expected == "none of INTEL-SA-00615"


def test_every_failed_rule_is_reported_not_only_the_first() -> None:
    verdict = appraise(
        appraisal(
            identities=[{"id": "x", "mrsigner": MRSIGNER, "min_isvsvn": 3}],
            tcb_statuses=["UpToDate"],
            denied_advisories=["INTEL-SA-00289"],
        ),
        verified(advisories=("INTEL-SA-00289",)),
    )
    assert [f.field for f in verdict.failures()] == ["min_isvsvn", "tcb_status", "advisories"]
    with pytest.raises(PolicyDenied) as info:
        verdict.check()
    assert len(info.value.detail) == 3


def test_appraisal_of_a_really_verified_quote() -> None:
    collateral = Collateral.from_bytes(shared(SGX.collateral).read_bytes())
    result = verify_quote(quote_bytes(SGX.quote), collateral, SGX.inside)
    assert appraise(appraisal(), result).acceptable
    denied = appraise(appraisal(denied_advisories=["INTEL-SA-00289"]), result)
    assert denied.failures()[0].field == "advisories"


# --- the document --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"identities": []}, "appraisal.identities"),
        ({"identities": [{"id": "x"}]}, "identities[0] (x)"),
        ({"identities": [{"id": "x", "mrenclave": "00" * 32}]}, "identities[0] (x).mrenclave"),
        ({"identities": [{"id": "x", "mrsigner": MRSIGNER, "debug": True}]}, "identities[0].debug"),
        ({"identities": [{"id": "x", "mrtd": MRTD, "isvprodid": 1}]}, "identities[0] (x)"),
        ({"tcb_statuses": []}, "appraisal.tcb_statuses"),
        ({"tcb_statuses": ["Revoked"]}, "appraisal.tcb_statuses[0]"),
        ({"tcb_statuses": ["UpToDate", "UpToDate"]}, "appraisal.tcb_statuses[1]"),
        ({"denied_advisories": ["SA-1"]}, "appraisal.denied_advisories[0]"),
        ({"type": "launch-policy"}, "appraisal.type"),
        ({"version": True}, "appraisal.version"),
        ({"surprise": 1}, "appraisal.surprise"),
    ],
)
def test_document_read_strictly(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(MalformedInput) as info:
        appraisal(**changes)
    assert info.value.field == field


def test_duplicate_identity_ids_refused_and_round_trip() -> None:
    twice = [{"id": "x", "mrsigner": MRSIGNER}, {"id": "x", "mrenclave": MRENCLAVE}]
    with pytest.raises(MalformedInput, match="used twice"):
        appraisal(identities=twice)
    parsed = appraisal()
    assert QuoteAppraisal.from_payload(parsed.to_payload()) == parsed
    with pytest.raises(UsageError):
        QuoteAppraisal.create(
            version=1,
            expires=NOW,
            identities=[],
            tcb_statuses=["UpToDate"],
            denied_advisories=[],
        )


# --- owner-signed ---------------------------------------------------------------------------------


def owner(threshold: int = 2) -> tuple[OwnerRoot, list[PrivateKeySigner]]:
    signers = [ed25519_signer() for _ in range(3)]
    root = OwnerRoot.create(
        version=1,
        expires=NOW + timedelta(days=365),
        threshold=threshold,
        keys=[s.public_key for s in signers],
    )
    return root, signers


def signed(signers: list[PrivateKeySigner], **changes: Any) -> bytes:
    payload = dumps_canonical(document(**changes))
    return sign_payload(APPRAISAL_PAYLOAD_TYPE, payload, signers).to_bytes()


def test_signed_appraisal_accepted_at_threshold_and_marked_signed() -> None:
    root, signers = owner()
    parsed, was_signed = load_appraisal(signed(signers[:2]), NOW, root=root)
    assert was_signed and parsed == appraisal()
    verdict = appraise(parsed, verified(), signed=was_signed)
    assert verdict.signed and verdict.acceptable and verdict.version == 1
    local, local_signed = load_appraisal(dumps_canonical(document()), NOW, root=None)
    assert not local_signed and local == parsed


def test_signed_appraisal_below_threshold_or_by_strangers_refused() -> None:
    root, signers = owner()
    with pytest.raises(ThresholdNotMet):
        verify_signed_appraisal(signed(signers[:1]), root, NOW)
    strangers = [ed25519_signer(), ed25519_signer()]
    with pytest.raises(ThresholdNotMet):
        verify_signed_appraisal(signed(strangers), root, NOW)


def test_signed_appraisal_expired_refused_and_envelope_needs_a_root() -> None:
    root, signers = owner()
    with pytest.raises(Expired, match="quote appraisal expired"):
        verify_signed_appraisal(signed(signers, expires="2026-11-28T00:00:00Z"), root, NOW)
    with pytest.raises(UsageError, match="no owner root"):
        load_appraisal(signed(signers), NOW, root=None)


def test_signed_appraisal_of_another_type_refused() -> None:
    root, signers = owner()
    payload = dumps_canonical(document())
    other = sign_payload("application/vnd.sgxlaunch.launch-policy+json", payload, signers)
    with pytest.raises(MalformedInput, match=r"expected 'application/vnd.sgxlaunch.quote"):
        verify_signed_appraisal(other.to_bytes(), root, NOW)


def test_installed_appraisal_is_the_rollback_floor() -> None:
    root, signers = owner()
    store = MemoryStore()
    v2 = signed(signers, version=2)
    assert install_appraisal(store, root, v2, NOW) == "quote appraisal version 2 installed"
    assert store.get(APPRAISAL_KEY) == v2
    for version in (1, 2):
        with pytest.raises(Rollback):
            install_appraisal(
                store,
                root,
                signed(signers, version=version, denied_advisories=["INTEL-SA-00001"]),
                NOW,
            )
    assert store.get(APPRAISAL_KEY) == v2  # nothing written by a refused install
    with pytest.raises(Rollback):
        load_appraisal(signed(signers, version=1), NOW, root=root, installed=v2)
    parsed, _ = load_appraisal(v2, NOW, root=root, installed=v2)  # the identical one: fine
    assert parsed.version == 2
    install_appraisal(store, root, signed(signers, version=3), NOW)
    assert json.loads(store.get(APPRAISAL_KEY) or b"{}")["payloadType"] == APPRAISAL_PAYLOAD_TYPE
