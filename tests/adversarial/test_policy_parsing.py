"""Checklist cases 23, 24, 27: re-serialisation, unknown fields, JSON traps, size caps.

Every refusal is :class:`MalformedInput` (or a signature failure for re-serialised payloads),
arrives in bounded time, and leaves the store unchanged.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from sgxlaunch.errors import MalformedInput, SgxlaunchError, ThresholdNotMet
from sgxlaunch.policy import (
    MAX_POLICY_SIZE,
    POLICY_PAYLOAD_TYPE,
    Envelope,
    LaunchPolicy,
    OwnerRoot,
    install_policy,
    load_state,
)
from sgxlaunch.policy import _json as strict_json
from sgxlaunch.policy import model as model_module
from sgxlaunch.policy.envelope import MAX_ENVELOPE_SIZE
from tests.support.clock import NOW
from tests.support.policy import SIGNER_A, Owner, policy_doc, policy_payload


def _refused_by_install(owner: Owner, payload: bytes) -> MalformedInput:
    """Sign ``payload`` properly and check the install is refused as malformed, state intact."""
    before = owner.store.snapshot()
    with pytest.raises(MalformedInput) as info:
        install_policy(owner.store, owner.sign_policy(payload), NOW)
    assert owner.store.snapshot() == before
    return info.value


# --- case 23 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reserialize",
    [
        lambda doc: json.dumps(doc).encode(),  # compact, insertion order
        lambda doc: json.dumps(doc, sort_keys=True, indent=4).encode(),
        lambda doc: json.dumps(dict(reversed(list(doc.items())))).encode(),
        lambda doc: json.dumps(doc, indent=1, sort_keys=True).encode(),  # no trailing newline
    ],
)
def test_adv23_reserialized_payload_fails_signature(reserialize: Any) -> None:
    owner = Owner()
    signed = Envelope.from_bytes(owner.sign_policy(policy_payload()))
    same_meaning = reserialize(json.loads(signed.payload))
    assert same_meaning != signed.payload
    assert LaunchPolicy.from_payload(same_meaning) == LaunchPolicy.from_payload(signed.payload)
    tampered = Envelope(POLICY_PAYLOAD_TYPE, same_meaning, signed.signatures)
    before = owner.store.snapshot()
    with pytest.raises(ThresholdNotMet):
        install_policy(owner.store, tampered.to_bytes(), NOW)
    assert owner.store.snapshot() == before


def test_adv23_payload_type_swapped_fails_signature() -> None:
    owner = Owner()
    signed = Envelope.from_bytes(owner.sign_policy(policy_payload()))
    # The PAE binds the payload type: the same signatures over another type do not verify.
    other = Envelope("application/json", signed.payload, signed.signatures)
    assert other.pae() != signed.pae()
    for entry in signed.signatures:
        key = next(k for k in owner.keys if k.public_key.keyid == entry.keyid)
        with pytest.raises(SgxlaunchError):
            key.public_key.verify(entry.sig, other.pae())


@pytest.mark.parametrize(
    ("where", "mutate"),
    [
        ("policy.comment", lambda d: d.update(comment="x")),
        ("policy.allow_debug", lambda d: d.update(allow_debug=True)),
        ("allow[0].not_before", lambda d: d["allow"][0].update(not_before="2026-01-01T00:00:00Z")),
        ("allow[0].MRSIGNER", lambda d: d["allow"][0].update(MRSIGNER="aa" * 32)),
        (
            "deny[0].debug",
            lambda d: d["deny"].append({"id": "d", "mrsigner": "bb" * 32, "debug": True}),
        ),
        (
            "allow[0].isvsvn.step",
            lambda d: d["allow"][0].update(isvsvn={"min": 0, "max": 9, "step": 2}),
        ),
    ],
)
def test_adv23_signed_policy_with_unknown_field_refused(where: str, mutate: Any) -> None:
    owner = Owner()
    doc = policy_doc()
    mutate(doc)
    error = _refused_by_install(owner, strict_json.dumps_canonical(doc))
    assert error.field is not None
    assert error.field.split(" ")[0].split(".")[0] == where.split(".")[0]
    assert "unknown field" in error.message


def test_adv23_unknown_field_in_envelope_refused() -> None:
    owner = Owner()
    doc = json.loads(owner.sign_policy(policy_payload()))
    doc["critical"] = False
    before = owner.store.snapshot()
    with pytest.raises(MalformedInput) as info:
        install_policy(owner.store, json.dumps(doc).encode(), NOW)
    assert "unknown field" in info.value.message
    assert owner.store.snapshot() == before


def test_adv23_unknown_field_in_root_refused() -> None:
    owner = Owner()
    payload = json.loads(Envelope.from_bytes(owner.root()).payload)
    payload["delegations"] = {}
    with pytest.raises(MalformedInput) as info:
        OwnerRoot.from_payload(json.dumps(payload).encode())
    assert info.value.field == "root.delegations"


# --- case 24 -----------------------------------------------------------------------------------


def test_adv24_duplicate_top_level_key_refused() -> None:
    owner = Owner()
    text = policy_payload(version=2).decode()
    duplicated = text.replace('"version": 2', '"version": 2, "version": 99').encode()
    assert duplicated != text.encode()
    error = _refused_by_install(owner, duplicated)
    assert "duplicate key 'version'" in error.message


def test_adv24_duplicate_key_inside_a_rule_refused() -> None:
    owner = Owner()
    text = policy_payload().decode()
    duplicated = text.replace(
        f'"mrsigner": "{SIGNER_A.hex()}"',
        f'"mrsigner": "{SIGNER_A.hex()}", "mrsigner": "{"e" * 64}"',
    ).encode()
    assert duplicated != text.encode()
    assert "duplicate key 'mrsigner'" in _refused_by_install(owner, duplicated).message


def test_adv24_duplicate_key_in_envelope_refused() -> None:
    owner = Owner()
    text = owner.sign_policy(policy_payload()).decode()
    other = base64.b64encode(policy_payload(version=7)).decode()
    duplicated = text.replace('"payloadType"', f'"payload": "{other}", "payloadType"', 1)
    with pytest.raises(MalformedInput) as info:
        Envelope.from_bytes(duplicated.encode())
    assert "duplicate key 'payload'" in info.value.message


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_adv24_nan_and_infinity_refused(constant: str) -> None:
    owner = Owner()
    text = policy_payload(version=3).decode().replace('"version": 3', f'"version": {constant}')
    assert constant in _refused_by_install(owner, text.encode()).message


@pytest.mark.parametrize(
    ("literal", "needle"),
    [
        ("true", "must be an integer"),
        ("false", "must be an integer"),
        ('"3"', "must be an integer"),
        ("3.0", "non-integer"),
        ("3e0", "non-integer"),
        ("null", "must be an integer"),
        ("-3", "within"),
        ("0", "within"),
        (str(1 << 63), "within"),
    ],
)
def test_adv24_true_and_other_non_integers_as_version_refused(literal: str, needle: str) -> None:
    owner = Owner()
    text = policy_payload(version=3).decode().replace('"version": 3', f'"version": {literal}')
    error = _refused_by_install(owner, text.encode())
    assert needle in error.message


def test_adv24_non_ascii_digits_as_version_refused() -> None:
    owner = Owner()
    text = policy_payload(version=3).decode().replace('"version": 3', '"version": \u0663')
    _refused_by_install(owner, text.encode())


def test_adv24_hundred_thousand_digit_integer_refused_unparsed() -> None:
    owner = Owner()
    text = policy_payload(version=3).decode().replace('"version": 3', '"version": ' + "9" * 100_000)
    error = _refused_by_install(owner, text.encode())
    assert "100000 digits" in error.message


def test_adv24_ten_thousand_deep_nesting_refused() -> None:
    owner = Owner()
    deep = "[" * 10_000 + "]" * 10_000
    text = policy_payload().decode().replace('"deny": []', f'"deny": {deep}')
    error = _refused_by_install(owner, text.encode())
    assert "nested too deeply" in error.message


def test_adv24_deep_object_nesting_in_envelope_refused() -> None:
    deep = '{"a":' * 10_000 + "1" + "}" * 10_000
    with pytest.raises(MalformedInput) as info:
        Envelope.from_bytes(deep.encode())
    assert "nested too deeply" in info.value.message


@pytest.mark.parametrize(
    "value",
    [
        " " + "a1" * 32,  # whitespace bytes.fromhex would skip
        "a1" * 31 + "a 1"[:2],
        "a1" * 31 + "\u0661\u0661",  # non-ASCII
        "0x" + "a1" * 31,
        "a1" * 33,
        "",
        "g1" * 32,
    ],
)
def test_adv24_lenient_hex_refused(value: str) -> None:
    owner = Owner()
    doc = policy_doc(allow=[{"id": "x", "mrsigner": value}])
    error = _refused_by_install(owner, strict_json.dumps_canonical(doc))
    assert error.field is not None and error.field.endswith(".mrsigner")


def test_adv24_upper_case_hex_is_normalised_to_the_same_bytes() -> None:
    upper = LaunchPolicy.from_payload(
        strict_json.dumps_canonical(policy_doc(allow=[{"id": "x", "mrsigner": "A1" * 32}]))
    )
    lower = LaunchPolicy.from_payload(
        strict_json.dumps_canonical(policy_doc(allow=[{"id": "x", "mrsigner": "a1" * 32}]))
    )
    assert upper.allow[0].mrsigner == lower.allow[0].mrsigner == SIGNER_A


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b64: b64[:8] + "\n" + b64[8:],
        lambda b64: b64[:8] + "!" + b64[8:],
        lambda b64: b64 + "=",
        lambda b64: b64[:-1],
        lambda b64: b64 + "====",
        lambda b64: b64.replace("+", "-").replace("/", "_") if ("+" in b64 or "/" in b64) else "*",
    ],
)
def test_adv24_lenient_base64_refused(mangle: Any) -> None:
    owner = Owner()
    doc = json.loads(owner.sign_policy(policy_payload()))
    doc["payload"] = mangle(doc["payload"])
    with pytest.raises(MalformedInput) as info:
        Envelope.from_bytes(json.dumps(doc).encode())
    assert info.value.field == "envelope.payload"


def test_adv24_non_canonical_base64_trailing_bits_refused() -> None:
    with pytest.raises(MalformedInput):
        strict_json.parse_b64("QR==", "x", max_len=16)  # decodes to b"A" like "QQ=="
    assert strict_json.parse_b64("QQ==", "x", max_len=16) == b"A"


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xff\xfe{}", b"\xef\xbb\xbf{}", b"{} {}", b"[]", b'"policy"', b"{,}", b"\x00"],
)
def test_adv24_not_a_json_object_refused(payload: bytes) -> None:
    with pytest.raises(MalformedInput):
        LaunchPolicy.from_payload(payload)


# --- case 27 -----------------------------------------------------------------------------------


def _no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(data: bytes, *, what: str) -> Any:
        raise AssertionError(f"{what} was parsed")

    monkeypatch.setattr(strict_json, "loads_strict", refuse)


def test_adv27_oversized_policy_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_parsing(monkeypatch)
    oversized = b" " * (MAX_POLICY_SIZE + 1)
    with pytest.raises(MalformedInput) as info:
        LaunchPolicy.from_payload(oversized)
    assert "limit" in info.value.message


def test_adv27_oversized_envelope_refused_before_parsing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    owner = Owner()
    before = owner.store.snapshot()
    state = load_state(owner.store)
    _no_parsing(monkeypatch)
    with pytest.raises(MalformedInput) as info:
        state.install_policy(b" " * (MAX_ENVELOPE_SIZE + 1), NOW)
    assert "limit" in info.value.message
    assert owner.store.snapshot() == before


def test_adv27_too_many_objects_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_parsing(monkeypatch)
    with pytest.raises(MalformedInput) as info:
        LaunchPolicy.from_payload(b"{" * (2 * model_module.MAX_RULES + 2))
    assert "more than 1000000 rules" in info.value.message


def test_adv27_rule_count_cap_refused_before_rules_are_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(model_module, "MAX_RULES", 3)
    rules = [{"id": f"r{i}", "mrsigner": f"{i + 1:064x}"} for i in range(4)]
    with pytest.raises(MalformedInput) as info:
        LaunchPolicy.from_payload(strict_json.dumps_canonical(policy_doc(allow=rules)))
    assert "more than 3 rules" in info.value.message
    assert (
        len(
            LaunchPolicy.from_payload(
                strict_json.dumps_canonical(policy_doc(allow=rules[:3]))
            ).allow
        )
        == 3
    )


def test_adv27_too_many_signatures_refused() -> None:
    owner = Owner()
    doc = json.loads(owner.sign_policy(policy_payload()))
    doc["signatures"] = doc["signatures"] * 40
    with pytest.raises(MalformedInput) as info:
        Envelope.from_bytes(json.dumps(doc).encode())
    assert info.value.field == "envelope.signatures"


def test_adv27_store_unchanged_and_state_usable_after_every_refusal() -> None:
    owner = Owner()
    owner.install(policy_payload(version=2))
    before = owner.store.snapshot()
    for junk in (b"", b"{}", b"[" * 5000, b'{"payloadType": 1}', b"\x80" * 10):
        with pytest.raises(MalformedInput):
            install_policy(owner.store, junk, NOW)
    assert owner.store.snapshot() == before
    assert load_state(owner.store).policy.version == 2  # type: ignore[union-attr]
