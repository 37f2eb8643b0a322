"""Class K: one record kills the log. A denial against a policy with many rules for one MRSIGNER
produced a record with every reason, larger than the record cap, and `log verify` failed for
ever. Records are bounded by construction: reasons summarised with counts and the first few
named; no input makes a record the reader refuses.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from sgxlaunch.errors import PolicyDenied
from sgxlaunch.launch.log import (
    EMPTY_HEAD,
    MAX_REASONS_NAMED,
    MAX_RECORD_BYTES,
    LogRecord,
    make_record,
    verify_log,
)
from tests.support.cpu import KeyProbe
from tests.support.platform import Owner, allow_rule, author_enclave


def test_denial_against_many_rules_for_one_mrsigner_keeps_the_log_verifiable() -> None:
    """K. 400 rules for the author's MRSIGNER and ISVPRODID, each wanting a higher ISVSVN: the
    denial's record stays under the cap, names the first reasons and counts them all; the log
    verifies and later launches still append (before: an 81 KB record, `log verify` failed for
    ever)."""
    owner = Owner()
    owner.set_up_launch_enclave()
    image, sig = author_enclave(KeyProbe, isvprodid=7)
    rules = [
        allow_rule(sig, f"rule-{n:03d}-" + "x" * 40, isvsvn={"min": 100 + n, "max": 65535})
        for n in range(400)
    ]
    platform = owner.platform()
    platform.install_policy(owner.policy(version=1, allow=rules))
    platform.set_mode(owner.mode("owner", version=1))
    platform = owner.platform()
    with pytest.raises(PolicyDenied) as err:
        platform.run(image, sig)
    assert len(err.value.detail) >= 400  # the caller still gets every reason
    attempt = platform.log_records()[0]
    assert attempt["reasons_total"] == len(err.value.detail)
    assert len(attempt["reasons"]) == MAX_REASONS_NAMED
    assert sum(attempt["reasons_by_field"].values()) == attempt["reasons_total"]
    blobs = platform.log_blobs()
    assert max(len(b) for b in blobs) <= 32 + MAX_RECORD_BYTES
    assert platform.verify_log() == 2
    with pytest.raises(PolicyDenied):
        platform.run(image, sig)
    assert owner.platform().verify_log() == 4


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "facts",
    [
        {"reasons": [{"field": "f" * 10_000, "expected": "e" * 100_000}] * 5_000},
        {f"key{n}": "v" * 10_000 for n in range(500)},
        {"nested": _nested(2_000)},
        {"number": 2**200, "float": float("nan"), "seq": "forged", "prev": "forged"},
        {"kind": "attempt", "big": ["x" * 60_000, "y" * 60_000]},
    ],
    ids=["huge-reasons", "many-keys", "deep-nesting", "odd-values", "big-list"],
)
def test_no_facts_make_a_record_the_log_refuses(facts: dict[str, object]) -> None:
    """K. Whatever the facts, the record is canonical JSON under the cap and verifies."""
    key = b"k" * 16
    record, head = make_record(key, EMPTY_HEAD, facts)
    assert len(record.body) <= MAX_RECORD_BYTES
    stored = LogRecord.from_bytes(record.to_bytes())
    verify_log(key, [stored], head)
    fields = stored.fields()
    assert fields["seq"] == 0 and fields["prev"] == bytes(32).hex()
    assert hmac.compare_digest(stored.mac, hmac.new(key, stored.body, hashlib.sha256).digest())
