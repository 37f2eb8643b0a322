"""Fuzzing the readers: whatever the bytes, only the project's own exceptions come out.

(h11's invariant: a parser fails with its own parse error, never with a stray ``KeyError``,
``TypeError``, ``RecursionError`` or ``UnicodeDecodeError``.)
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgxlaunch.errors import SgxlaunchError
from sgxlaunch.policy import Envelope, LaunchPolicy, MemoryStore, OwnerRoot, install_policy
from tests.support.clock import NOW
from tests.support.policy import Owner, policy_doc, policy_payload

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.text(max_size=70),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = [
    "id",
    "mrsigner",
    "mrenclave",
    "isvprodid",
    "isvsvn",
    "isvfamilyid",
    "isvextprodid",
    "debug",
    "provisionkey",
    "kss",
    "xfrm_mask",
    "miscselect_mask",
    "min",
    "max",
    "x",
]

_OWNER = Owner()


def _only_ours(fn: Any, data: bytes) -> None:
    with contextlib.suppress(SgxlaunchError):
        fn(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_our_errors(data: bytes) -> None:
    _only_ours(LaunchPolicy.from_payload, data)
    _only_ours(OwnerRoot.from_payload, data)
    _only_ours(Envelope.from_bytes, data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FIELDS), JSON_VALUES, st.sampled_from(["allow", "deny"]))
def test_mutated_rules_only_raise_our_errors(field: str, value: Any, effect: str) -> None:
    rule: dict[str, Any] = {"id": "r", "mrsigner": "a1" * 32}
    if field in ("min", "max"):
        rule["isvsvn"] = {"min": 0, "max": 5, field: value}
    else:
        rule[field] = value
    payload = json.dumps(policy_doc(**{effect: [rule]})).encode()  # type: ignore[arg-type]
    _only_ours(LaunchPolicy.from_payload, payload)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_byte_mutations_of_a_signed_policy_fail_cleanly_or_change_nothing(
    data: st.DataObject,
) -> None:
    original = _OWNER.sign_policy(policy_payload(version=2))
    signed = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(signed) - 1))
        signed[position] = data.draw(st.integers(0, 255))
    store = MemoryStore(_OWNER.store.snapshot())
    before = store.snapshot()
    try:
        state, _ = install_policy(store, bytes(signed), NOW)
    except SgxlaunchError:
        assert store.snapshot() == before
        return
    # Accepted only if the signed payload is untouched (e.g. whitespace between fields).
    assert Envelope.from_bytes(bytes(signed)).payload == Envelope.from_bytes(original).payload
    assert state.policy == LaunchPolicy.from_payload(policy_payload(version=2))
