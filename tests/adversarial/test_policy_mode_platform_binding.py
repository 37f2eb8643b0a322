"""A platform-mode document bound to one platform cannot switch another one.

``platform_id`` in the document binds it to that platform: a verifier on another platform
refuses it (``PlatformMismatch``), a verifier that does not say which platform it is refuses
it too (``UsageError``), and the binding cannot be stripped without breaking the signatures
(case 23). Every refused document leaves the store byte-for-byte unchanged.
"""

from __future__ import annotations

import json

import pytest

from sgxlaunch.errors import ThresholdNotMet, UsageError, VerificationFailed
from sgxlaunch.policy import (
    MODE_PAYLOAD_TYPE,
    Envelope,
    PlatformMismatch,
    install_mode,
    load_state,
)
from sgxlaunch.policy._json import dumps_canonical
from tests.support.clock import NOW
from tests.support.policy import OTHER_PLATFORM, PLATFORM, Owner, mode_payload


def _refused(
    owner: Owner, data: bytes, error: type[Exception], platform_id: bytes | None
) -> Exception:
    before = owner.store.snapshot()
    with pytest.raises(error) as info:
        install_mode(owner.store, data, NOW, platform_id=platform_id)
    assert owner.store.snapshot() == before
    return info.value


def test_mode_document_for_another_platform_rejected() -> None:
    owner = Owner()
    data = owner.sign_mode(mode_payload(mode="permissive", platform_id=OTHER_PLATFORM.hex()))
    error = _refused(owner, data, PlatformMismatch, PLATFORM)
    assert isinstance(error, VerificationFailed) and error.exit_code == 1
    assert error.check == "platform_id"
    assert error.expected == f"platform_id {PLATFORM.hex()}"
    assert error.found == f"platform_id {OTHER_PLATFORM.hex()}"


def test_mode_document_differing_in_one_bit_of_platform_id_rejected() -> None:
    owner = Owner()
    near = bytes([PLATFORM[0] ^ 1]) + PLATFORM[1:]
    data = owner.sign_mode(mode_payload(platform_id=near.hex()))
    _refused(owner, data, PlatformMismatch, PLATFORM)


def test_bound_mode_document_with_no_platform_id_given_rejected() -> None:
    owner = Owner()
    data = owner.sign_mode(mode_payload(platform_id=PLATFORM.hex()))
    error = _refused(owner, data, UsageError, None)
    assert PLATFORM.hex() in str(error)


def test_bound_mode_document_on_its_platform_accepted() -> None:
    owner = Owner()
    data = owner.sign_mode(mode_payload(platform_id=PLATFORM.hex()))
    state, _ = install_mode(owner.store, data, NOW, platform_id=PLATFORM)
    assert state.mode is not None and state.mode.platform_id == PLATFORM
    # bytearray is as good as bytes (at run time; the annotation says bytes)
    load_state(owner.store).verify_mode(data, NOW, platform_id=bytearray(PLATFORM))  # type: ignore[arg-type]


def test_unbound_mode_document_applies_to_any_platform() -> None:
    owner = Owner()
    data = owner.sign_mode(mode_payload())
    for platform_id in (PLATFORM, OTHER_PLATFORM, None):
        load_state(owner.store).verify_mode(data, NOW, platform_id=platform_id)


def test_adv23_stripping_or_changing_the_binding_breaks_the_signatures() -> None:
    owner = Owner()
    signed = Envelope.from_bytes(owner.sign_mode(mode_payload(platform_id=OTHER_PLATFORM.hex())))
    doc = json.loads(signed.payload)
    for change in ("strip", "retarget"):
        edited = dict(doc)
        if change == "strip":
            del edited["platform_id"]
        else:
            edited["platform_id"] = PLATFORM.hex()
        forged = Envelope(MODE_PAYLOAD_TYPE, dumps_canonical(edited), signed.signatures)
        _refused(owner, forged.to_bytes(), ThresholdNotMet, PLATFORM)
