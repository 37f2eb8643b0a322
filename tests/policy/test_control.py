"""Platform-control documents: the ModeDocument reader and the trusted-state transitions."""

from __future__ import annotations

import contextlib
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgxlaunch.errors import Expired, MalformedInput, SgxlaunchError, UsageError
from sgxlaunch.policy import (
    MAX_MODE_SIZE,
    MODE_KEY,
    MODE_PAYLOAD_TYPE,
    POLICY_KEY,
    Envelope,
    MemoryStore,
    ModeDocument,
    TrustedState,
    install_mode,
    install_root,
    load_state,
    sign_payload,
)
from sgxlaunch.policy._json import dumps_canonical
from sgxlaunch.store import open_store
from tests.support.clock import NOW
from tests.support.policy import (
    LE_SIGNER,
    PLATFORM,
    Owner,
    ed25519_signer,
    identity,
    mode_doc,
    mode_payload,
    policy_payload,
)

EXPIRES = datetime(2027, 1, 1, tzinfo=UTC)


# --- the document ------------------------------------------------------------------------------


def test_owner_mode_document_parses_with_every_field() -> None:
    doc = ModeDocument.from_payload(mode_payload(version=7, platform_id=PLATFORM.hex()))
    assert doc == ModeDocument(7, EXPIRES, "owner", LE_SIGNER, PLATFORM)
    assert doc.describe() == {
        "type": "platform-mode",
        "version": 7,
        "issued": None,
        "expires": "2027-01-01T00:00:00Z",
        "mode": "owner",
        "le_mrsigner": LE_SIGNER.hex(),
        "platform_id": PLATFORM.hex(),
    }


def test_signed_issued_time_needs_spec_version_2_and_precedes_expiry() -> None:
    issued = datetime(2026, 11, 1, tzinfo=UTC)
    doc = ModeDocument.create(
        version=1, expires=EXPIRES, mode="permissive", platform_id=PLATFORM, issued=issued
    )
    assert doc.issued == issued
    body = json.loads(doc.to_payload())
    assert body["spec_version"] == "2" and body["issued"] == "2026-11-01T00:00:00Z"
    assert ModeDocument.from_payload(doc.to_payload()) == doc
    for bad in (
        {k: v for k, v in body.items() if k != "issued"},
        body | {"spec_version": "1"},
        body | {"issued": "2027-02-01T00:00:00Z"},
    ):
        with pytest.raises(MalformedInput) as info:
            ModeDocument.from_payload(dumps_canonical(bad))
        assert info.value.field == "mode.issued"


def test_permissive_document_parses_without_optional_fields() -> None:
    doc = ModeDocument.from_payload(mode_payload(mode="permissive"))
    assert doc == ModeDocument(1, EXPIRES, "permissive", None, None)
    assert doc.describe()["le_mrsigner"] is None and doc.describe()["platform_id"] is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"platform_id": PLATFORM.hex()},
        {"mode": "permissive"},
        {"mode": "permissive", "platform_id": PLATFORM.hex(), "version": (1 << 63) - 1},
    ],
)
def test_round_trip_payload_document_payload(kwargs: dict[str, Any]) -> None:
    payload = mode_payload(**kwargs)
    doc = ModeDocument.from_payload(payload)
    assert doc.to_payload() == payload
    assert ModeDocument.from_payload(doc.to_payload()) == doc


def test_create_builds_the_same_document_as_parsing() -> None:
    doc = ModeDocument.create(
        version=3, expires=EXPIRES, mode="owner", le_mrsigner=LE_SIGNER, platform_id=PLATFORM
    )
    assert doc.to_payload() == mode_payload(version=3, platform_id=PLATFORM.hex())
    assert doc.is_expired(EXPIRES) and not doc.is_expired(EXPIRES - timedelta(seconds=1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "owner"}, "le_mrsigner is required"),
        ({"mode": "permissive", "le_mrsigner": LE_SIGNER}, "not allowed"),
        ({"mode": "enforcing"}, "must be one of"),
        ({"mode": "owner", "le_mrsigner": bytes(32)}, "all zero"),
        ({"mode": "owner", "le_mrsigner": LE_SIGNER, "platform_id": b"\x01" * 31}, "32 bytes"),
        ({"mode": "permissive", "version": 0}, "version"),
    ],
)
def test_create_refuses_what_parsing_refuses_as_usage_errors(
    kwargs: dict[str, Any], match: str
) -> None:
    kwargs.setdefault("version", 1)
    with pytest.raises(UsageError, match=match):
        ModeDocument.create(expires=EXPIRES, **kwargs)


def test_create_refuses_a_naive_expiry() -> None:
    with pytest.raises(UsageError, match="timezone"):
        ModeDocument.create(version=1, expires=datetime(2027, 1, 1), mode="permissive")


def _refused(payload: bytes, field: str | None = None) -> MalformedInput:
    with pytest.raises(MalformedInput) as info:
        ModeDocument.from_payload(payload)
    if field is not None:
        assert info.value.field == field, info.value
    return info.value


def test_owner_mode_without_le_mrsigner_refused() -> None:
    _refused(mode_payload(le_mrsigner=None), "mode.le_mrsigner")


def test_permissive_mode_with_le_mrsigner_refused() -> None:
    _refused(mode_payload(mode="permissive", le_mrsigner=LE_SIGNER.hex()), "mode.le_mrsigner")


def test_unknown_field_refused() -> None:
    error = _refused(mode_payload(comment="hello"), "mode.comment")
    assert "unknown field" in error.message


@pytest.mark.parametrize("missing", ["spec_version", "type", "version", "expires", "mode"])
def test_each_required_field_missing_refused(missing: str) -> None:
    doc = mode_doc()
    del doc[missing]
    _refused(dumps_canonical(doc), f"mode.{missing}")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("spec_version", 1),  # the string "1", as in the root and the policy
        ("spec_version", "3"),
        ("type", "launch-policy"),
        ("type", None),
        ("version", True),
        ("version", 0),
        ("version", -1),
        ("version", 1 << 63),
        ("version", "2"),
        ("expires", "2027-01-01T00:00:00+00:00"),
        ("expires", "2027-01-01T00:00:00.5Z"),
        ("expires", "2027-01-01 00:00:00Z"),
        ("expires", "2027-02-30T00:00:00Z"),
        ("expires", 1798761600),
        ("mode", "Owner"),
        ("mode", "OWNER"),
        ("mode", ""),
        ("mode", True),
        ("mode", ["owner"]),
        ("le_mrsigner", LE_SIGNER.hex().upper()),
        ("le_mrsigner", LE_SIGNER.hex()[:-2]),
        ("le_mrsigner", LE_SIGNER.hex() + "e5"),
        ("le_mrsigner", " " + LE_SIGNER.hex()[1:]),
        ("le_mrsigner", "0x" + LE_SIGNER.hex()[2:]),
        ("le_mrsigner", "00" * 32),
        ("le_mrsigner", None),
        ("platform_id", PLATFORM.hex().upper()),
        ("platform_id", "g" * 64),
        ("platform_id", "00" * 32),
        ("platform_id", 5),
    ],
)
def test_bad_field_values_refused_naming_the_field(field: str, value: Any) -> None:
    doc = mode_doc()
    doc[field] = value
    _refused(json.dumps(doc).encode(), f"mode.{field}")


@pytest.mark.parametrize(
    "payload",
    [
        b'{"spec_version": "1", "type": "platform-mode", "version": 1, "version": 2,'
        b' "expires": "2027-01-01T00:00:00Z", "mode": "permissive"}',
        b'{"spec_version": "1", "type": "platform-mode", "version": NaN,'
        b' "expires": "2027-01-01T00:00:00Z", "mode": "permissive"}',
        b'{"spec_version": "1", "type": "platform-mode", "version": 1.0,'
        b' "expires": "2027-01-01T00:00:00Z", "mode": "permissive"}',
        b'{"spec_version": "1", "type": "platform-mode", "version": ' + b"9" * 100_000 + b","
        b' "expires": "2027-01-01T00:00:00Z", "mode": "permissive"}',
        b"\xef\xbb\xbf" + mode_payload(),
        mode_payload() + b"{}",
        mode_payload().replace(b'"owner"', b'"\xff"'),
        b"[" * 10_000 + b"]" * 10_000,
        b"[]",
        b"null",
        b"",
    ],
)
def test_strict_json_traps_refused(payload: bytes) -> None:
    _refused(payload)


def test_oversize_payload_refused_before_parsing() -> None:
    payload = mode_payload()
    padded = payload[:-2] + b" " * (MAX_MODE_SIZE - len(payload) + 1) + payload[-2:]
    assert len(padded) == MAX_MODE_SIZE + 1
    error = _refused(padded, "mode")
    assert "more than" in error.message
    # One byte less is fine (whitespace is JSON).
    ModeDocument.from_payload(padded[:-3] + payload[-2:])


def test_every_truncation_and_trailing_bytes_refused() -> None:
    payload = mode_payload(platform_id=PLATFORM.hex())
    for end in range(len(payload) - 1):  # the last byte is a newline: dropping it is fine
        _refused(payload[:end])
    for tail in (b"x", b"\x00", b"1", b"{}", b"]"):
        _refused(payload + tail)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_our_errors(data: bytes) -> None:
    with contextlib.suppress(MalformedInput):
        ModeDocument.from_payload(data)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.text(max_size=70),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(
        ["spec_version", "type", "version", "expires", "mode", "le_mrsigner", "platform_id", "x"]
    ),
    _JSON,
)
def test_mutated_fields_only_raise_our_errors(field: str, value: Any) -> None:
    doc = mode_doc()
    doc[field] = value
    with contextlib.suppress(MalformedInput):
        ModeDocument.from_payload(json.dumps(doc).encode())


# --- the trusted state ---------------------------------------------------------------------------


def test_install_mode_stores_the_envelope_under_owner_mode() -> None:
    owner = Owner()
    envelope = owner.sign_mode(mode_payload(version=2))
    state = load_state(owner.store)
    assert state.mode is None and not state.mode_in_force
    new_state, update = state.install_mode(envelope, NOW)
    assert dict(update.changes) == {MODE_KEY: envelope}
    assert MODE_KEY == "owner/mode"
    assert "version 2 installed: owner launch control" in update.summary
    assert LE_SIGNER.hex() in update.summary
    assert owner.store.get(MODE_KEY) is None  # the core wrote nothing itself
    assert new_state.mode == ModeDocument.from_payload(mode_payload(version=2))
    assert new_state.mode_in_force
    assert new_state.mode_digest == hashlib.sha256(mode_payload(version=2)).digest()
    update.apply(owner.store)
    reloaded = load_state(owner.store)
    assert reloaded.mode == new_state.mode
    assert reloaded.mode_envelope == envelope
    assert reloaded.mode_in_force and reloaded.mode_digest == new_state.mode_digest


def test_verify_mode_returns_the_document_and_changes_nothing() -> None:
    owner = Owner()
    state = load_state(owner.store)
    before = owner.store.snapshot()
    doc = state.verify_mode(owner.sign_mode(mode_payload(mode="permissive")), NOW)
    assert doc.mode == "permissive"
    assert state.mode is None
    assert owner.store.snapshot() == before


def test_store_level_install_mode_commits_and_identical_resend_is_a_noop() -> None:
    owner = Owner()
    envelope = owner.sign_mode(mode_payload(version=3))
    _, update = install_mode(owner.store, envelope, NOW)
    assert owner.store.get(MODE_KEY) == envelope
    before = owner.store.snapshot()
    # The same payload, signed by another pair of keys: nothing to do.
    again = owner.sign_mode(mode_payload(version=3), owner.keys[1:])
    _, update = install_mode(owner.store, again, NOW)
    assert dict(update.changes) == {}
    assert "already installed" in update.summary
    assert owner.store.snapshot() == before


def test_higher_version_replaces_the_mode() -> None:
    owner = Owner()
    owner.install_mode(mode_payload(version=1))
    state = owner.install_mode(mode_payload(version=2, mode="permissive"))
    assert state.mode is not None and state.mode.mode == "permissive"
    assert load_state(owner.store).mode == state.mode


def test_mode_and_policy_do_not_displace_each_other() -> None:
    owner = Owner()
    owner.install_mode(mode_payload(version=1))
    state = owner.install(policy_payload(version=1))
    assert state.mode is not None and state.mode_in_force  # carried by install_policy
    assert state.evaluate(identity(), NOW).allowed
    state = owner.install_mode(mode_payload(version=2, mode="permissive"))
    assert state.policy is not None and state.policy_in_force  # carried by install_mode
    assert state.evaluate(identity(), NOW).allowed
    assert set(owner.store.snapshot()) >= {MODE_KEY, POLICY_KEY}


def test_describe_includes_the_mode() -> None:
    owner = Owner()
    assert load_state(owner.store).describe()["mode"] is None
    state = owner.install_mode(mode_payload(version=4, platform_id=PLATFORM.hex()), NOW, PLATFORM)
    info = state.describe()["mode"]
    assert info["version"] == 4 and info["mode"] == "owner" and info["in_force"] is True
    assert info["platform_id"] == PLATFORM.hex()
    assert (
        info["digest"]
        == hashlib.sha256(mode_payload(version=4, platform_id=PLATFORM.hex())).hexdigest()
    )


def test_installed_mode_stays_in_force_after_its_document_expires() -> None:
    owner = Owner()
    owner.install_mode(mode_payload(version=1, expires="2026-11-27T00:00:00Z"))
    later = datetime(2026, 12, 25, tzinfo=UTC)
    state = load_state(owner.store)  # load does not look at the clock
    assert state.mode is not None and state.mode.is_expired(later)
    assert state.mode_in_force
    # ... and the expired document itself cannot be installed again.
    with pytest.raises(Expired):
        state.verify_mode(owner.store.get(MODE_KEY) or b"", later)


def test_rotation_keeps_the_mode_as_floor_and_resigning_puts_it_back_in_force() -> None:
    owner = Owner()
    payload = mode_payload(version=5)
    owner.install_mode(payload)
    new_keys = [ed25519_signer() for _ in range(3)]
    rotation = owner.root(version=2, keys=new_keys, signers=[*owner.keys[:2], *new_keys[:2]])
    state, update = install_root(owner.store, rotation, NOW)
    assert "platform-mode document is not signed by the new keys" in update.summary
    assert state.mode is not None and not state.mode_in_force
    reloaded = load_state(owner.store)
    assert reloaded.mode == state.mode and not reloaded.mode_in_force
    assert reloaded.describe()["mode"]["in_force"] is False
    # The same payload re-signed by the new keys is accepted and back in force.
    owner.keys = new_keys
    state, update = install_mode(owner.store, owner.sign_mode(payload), NOW)
    assert MODE_KEY in update.changes
    assert state.mode_in_force and load_state(owner.store).mode_in_force


def test_rotation_that_keeps_enough_signing_keys_keeps_the_mode_in_force() -> None:
    owner = Owner()
    owner.install_mode(mode_payload(version=5))  # signed by keys 0 and 1
    new_keys = [*owner.keys[:2], ed25519_signer()]
    rotation = owner.root(version=2, keys=new_keys, signers=new_keys[:2])
    state, update = install_root(owner.store, rotation, NOW)
    assert state.mode_in_force and "platform-mode" not in update.summary
    assert load_state(owner.store).mode_in_force


def test_install_mode_without_root_is_a_usage_error() -> None:
    store = MemoryStore()
    with pytest.raises(UsageError, match="no owner root"):
        install_mode(store, b"{}", NOW)
    assert store.snapshot() == {}


@pytest.mark.parametrize("platform_id", [b"", b"\x01" * 31, b"\x01" * 33])
def test_platform_id_argument_must_be_32_bytes(platform_id: bytes) -> None:
    owner = Owner()
    with pytest.raises(UsageError, match="32 bytes"):
        load_state(owner.store).verify_mode(
            owner.sign_mode(mode_payload()), NOW, platform_id=platform_id
        )


def test_naive_now_is_a_usage_error() -> None:
    owner = Owner()
    with pytest.raises(UsageError, match="timezone"):
        load_state(owner.store).verify_mode(owner.sign_mode(mode_payload()), datetime(2026, 1, 1))


def test_expired_root_blocks_new_mode_documents() -> None:
    owner = Owner()
    later = datetime(2028, 1, 1, tzinfo=UTC)  # the root expires after a year
    payload = mode_payload(expires="2029-01-01T00:00:00Z")
    with pytest.raises(Expired, match="owner root"):
        load_state(owner.store).verify_mode(owner.sign_mode(payload), later)


@pytest.mark.parametrize(
    "damage",
    [
        lambda env: b"{" + env,
        lambda env: sign_payload(MODE_PAYLOAD_TYPE, b'{"mode": 1}', []).to_bytes(),
        lambda env: Envelope.from_bytes(env).to_bytes().replace(b"platform-mode", b"launch-policy"),
    ],
)
def test_damaged_stored_mode_is_reported_never_trusted(damage: Any) -> None:
    owner = Owner()
    owner.install_mode(mode_payload())
    owner.store.commit({MODE_KEY: damage(owner.store.get(MODE_KEY))})
    with pytest.raises(MalformedInput, match="trusted store is damaged"):
        TrustedState.load(owner.store)


def test_stored_mode_without_valid_signatures_is_not_in_force() -> None:
    # Someone with write access to the store writes a well-formed but unsigned document:
    # it parses, so it is the (harmless) rollback floor, but it selects nothing.
    owner = Owner()
    unsigned = sign_payload(MODE_PAYLOAD_TYPE, mode_payload(mode="permissive"), []).to_bytes()
    owner.store.commit({MODE_KEY: unsigned})
    state = load_state(owner.store)
    assert state.mode is not None and state.mode.mode == "permissive"
    assert not state.mode_in_force


def test_mode_survives_the_sqlite_store(tmp_path: Path) -> None:
    owner = Owner()
    root = owner.store.get("owner/root")
    assert root is not None
    envelope = owner.sign_mode(mode_payload(version=9))
    with open_store(tmp_path / "home") as store:
        install_root(store, root, NOW)
        install_mode(store, envelope, NOW)
    with open_store(tmp_path / "home", create=False) as store:
        state = load_state(store)
        assert store.get(MODE_KEY) == envelope
    assert state.mode is not None and state.mode.version == 9 and state.mode_in_force


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_byte_mutations_of_a_signed_mode_fail_cleanly_or_change_nothing(
    data: st.DataObject,
) -> None:
    original = _FUZZ_OWNER.sign_mode(mode_payload(version=2))
    signed = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(signed) - 1))
        signed[position] = data.draw(st.integers(0, 255))
    store = MemoryStore(_FUZZ_OWNER.store.snapshot())
    before = store.snapshot()
    try:
        state, _ = install_mode(store, bytes(signed), NOW)
    except SgxlaunchError:
        assert store.snapshot() == before
        return
    assert Envelope.from_bytes(bytes(signed)).payload == Envelope.from_bytes(original).payload
    assert state.mode == ModeDocument.from_payload(mode_payload(version=2))


_FUZZ_OWNER = Owner()
