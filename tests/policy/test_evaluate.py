"""Evaluation: indexes, rule order, reasons, SIGSTRUCT input."""

from __future__ import annotations

import pytest

from sgxlaunch.arch import Sigstruct
from sgxlaunch.errors import PolicyDenied, UsageError
from sgxlaunch.policy import EnclaveIdentity, PolicyIndex, evaluate
from tests.conftest import shared_vectors
from tests.support.clock import NOW
from tests.support.policy import ENCLAVE_X, ENCLAVE_Y, SIGNER_A, SIGNER_B, identity, parse_policy


def test_rule_fields_combine_with_and() -> None:
    policy = parse_policy(
        allow=[
            {
                "id": "r",
                "mrsigner": SIGNER_A.hex(),
                "mrenclave": ENCLAVE_X.hex(),
                "isvprodid": 1,
                "isvsvn": {"min": 3, "max": 7},
                "isvfamilyid": "00" * 16,
                "isvextprodid": "00" * 16,
            }
        ]
    )
    assert evaluate(policy, identity(), NOW).rule == "r"
    decision = evaluate(policy, identity(mrsigner=SIGNER_B, isvprodid=2, isvsvn=9), NOW)
    assert not decision.allowed
    assert {r.field for r in decision.reasons} == {"mrsigner", "isvprodid", "isvsvn"}
    found = {r.field: (r.expected, r.found) for r in decision.reasons}
    assert found["isvsvn"] == ("3..7", "9")
    assert found["mrsigner"] == (SIGNER_A.hex(), SIGNER_B.hex())


def test_every_candidate_rule_reports_its_reasons() -> None:
    policy = parse_policy(
        allow=[
            {
                "id": "old",
                "mrsigner": SIGNER_A.hex(),
                "isvprodid": 1,
                "isvsvn": {"min": 0, "max": 2},
            },
            {
                "id": "new",
                "mrsigner": SIGNER_A.hex(),
                "isvprodid": 1,
                "isvsvn": {"min": 9, "max": 9},
            },
            {"id": "pin", "mrenclave": ENCLAVE_X.hex()},
            {"id": "unrelated", "mrsigner": SIGNER_B.hex()},
        ]
    )
    decision = evaluate(policy, identity(isvsvn=5, flags=0x6), NOW)  # DEBUG set
    assert not decision.allowed
    assert [(r.rule, r.field) for r in decision.reasons] == [
        ("old", "isvsvn"),
        ("new", "isvsvn"),
        ("pin", "attributes.debug"),
    ]
    with pytest.raises(PolicyDenied) as info:
        decision.require()
    assert info.value.rule is None
    assert len(info.value.detail) == 3


def test_first_matching_allow_rule_by_position_wins() -> None:
    policy = parse_policy(
        allow=[
            {"id": "signer", "mrsigner": SIGNER_A.hex()},
            {"id": "enclave", "mrenclave": ENCLAVE_X.hex()},
        ]
    )
    assert evaluate(policy, identity(), NOW).rule == "signer"


def test_no_rule_names_the_enclave() -> None:
    policy = parse_policy(allow=[{"id": "b", "mrsigner": SIGNER_B.hex()}])
    decision = evaluate(policy, identity(mrenclave=ENCLAVE_Y), NOW)
    assert not decision.allowed
    assert decision.reasons[0].rule is None
    assert decision.reasons[0].found == "none"
    assert decision.describe()["allowed"] is False


def test_signer_prodid_index_does_not_confuse_products() -> None:
    policy = parse_policy(allow=[{"id": "p1", "mrsigner": SIGNER_A.hex(), "isvprodid": 1}])
    assert evaluate(policy, identity(isvprodid=1), NOW).allowed
    assert not evaluate(policy, identity(isvprodid=2), NOW).allowed


def test_many_rules_same_answers_as_a_linear_scan() -> None:
    import random

    rng = random.Random(4)
    signers = [bytes([i + 1]) * 32 for i in range(20)]
    allow = []
    for i in range(400):
        rule: dict[str, object] = {"id": f"a{i}", "mrsigner": rng.choice(signers).hex()}
        if rng.random() < 0.7:
            rule["isvprodid"] = rng.randrange(4)
        if rng.random() < 0.5:
            low = rng.randrange(10)
            rule["isvsvn"] = {"min": low, "max": low + rng.randrange(5)}
        if rng.random() < 0.1:
            rule = {"id": f"a{i}", "mrenclave": bytes([rng.randrange(1, 50)] * 32).hex()}
        allow.append(rule)
    deny = [
        {
            "id": f"d{i}",
            "mrsigner": rng.choice(signers).hex(),
            "isvprodid": rng.randrange(4),
            "isvsvn": {"min": 0, "max": rng.randrange(3)},
        }
        for i in range(20)
    ]
    policy = parse_policy(allow=allow, deny=deny)
    index = PolicyIndex(policy)

    def linear(e: EnclaveIdentity) -> str | None:
        from sgxlaunch.policy.evaluate import identity_mismatches, permission_problems

        if any(not identity_mismatches(r, e) for r in policy.deny):
            return None
        for r in policy.allow:
            if not identity_mismatches(r, e) and not permission_problems(r, e):
                return r.id
        return None

    for _ in range(2000):
        e = identity(
            mrsigner=rng.choice(signers),
            mrenclave=bytes([rng.randrange(1, 60)] * 32),
            isvprodid=rng.randrange(5),
            isvsvn=rng.randrange(15),
        )
        decision = index.evaluate(e, NOW)
        assert (decision.rule if decision.allowed else None) == linear(e)


def test_evaluates_a_real_sigstruct() -> None:
    sig = Sigstruct.from_bytes((shared_vectors() / "generated/case1_defaults.sig").read_bytes())
    allowed = parse_policy(
        allow=[{"id": "vec", "mrsigner": sig.mrsigner.hex(), "isvprodid": sig.isvprodid}]
    )
    decision = evaluate(allowed, sig, NOW)
    assert decision.allowed, decision.reasons
    pinned = parse_policy(allow=[{"id": "pin", "mrenclave": sig.enclavehash.hex()}])
    assert evaluate(pinned, sig, NOW).allowed
    other = parse_policy(allow=[{"id": "pin", "mrenclave": ("ff" * 32)}])
    assert not evaluate(other, sig, NOW).allowed


def test_naive_now_and_wrong_input_refused() -> None:
    from datetime import datetime

    policy = parse_policy()
    with pytest.raises(UsageError):
        evaluate(policy, identity(), datetime(2026, 1, 1))
    with pytest.raises(UsageError):
        evaluate(policy, b"not a sigstruct", NOW)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        EnclaveIdentity(mrenclave=b"short", mrsigner=SIGNER_A)


def test_identity_from_sigstruct_is_the_constructed_identity() -> None:
    """``EnclaveIdentity.from_sigstruct`` (slots set directly) equals the identity built through
    the checked constructor from the same fields, for a SIGSTRUCT built and one parsed, and
    hashes alike (the policy indexes and caches key on it)."""
    import random

    from sgxlaunch.arch import Attributes

    rng = random.Random("identity")
    for _ in range(20):
        sig = Sigstruct(
            modulus=rng.randbytes(384),
            miscselect=rng.getrandbits(32),
            isvfamilyid=rng.randbytes(16),
            attributes=Attributes(flags=rng.getrandbits(64), xfrm=rng.getrandbits(64)),
            enclavehash=rng.randbytes(32),
            isvextprodid=rng.randbytes(16),
            isvprodid=rng.getrandbits(16),
            isvsvn=rng.getrandbits(16),
        )
        for source in (sig, Sigstruct.from_bytes(sig.to_bytes())):
            built = EnclaveIdentity.from_sigstruct(source)
            checked = EnclaveIdentity(
                mrenclave=sig.enclavehash,
                mrsigner=sig.mrsigner,
                isvprodid=sig.isvprodid,
                isvsvn=sig.isvsvn,
                isvfamilyid=sig.isvfamilyid,
                isvextprodid=sig.isvextprodid,
                flags=sig.attributes.flags,
                xfrm=sig.attributes.xfrm,
                miscselect=sig.miscselect,
            )
            assert built == checked and hash(built) == hash(checked)
            assert built.describe() == checked.describe()
