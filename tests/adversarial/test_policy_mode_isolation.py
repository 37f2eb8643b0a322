"""Checklist case 28 for platform-mode documents: each step forced to fail fails the switch.

Every check of the mode-install pipeline is wrapped so that exactly one call raises while all
others run for real; the install fails every time, the store is unchanged, and without the
forced failure the very same bytes are accepted (so each step was isolated).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sgxlaunch.errors import SgxlaunchError, VerificationFailed
from sgxlaunch.policy import Envelope, ModeDocument
from sgxlaunch.policy import state as state_module
from tests.support.clock import NOW
from tests.support.policy import PLATFORM, Owner, mode_payload

_MODE_STEPS = [
    ("check_now", 1),
    ("check_not_expired", 2),  # root expiry, then the document's
    ("check_envelope", 1),
    ("check_signatures", 1),
    ("check_platform_id", 1),
    ("check_version", 1),
]


def _fail_nth_call(monkeypatch: pytest.MonkeyPatch, name: str, nth: int) -> list[int]:
    real: Callable[..., Any] = getattr(state_module, name)
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == nth:
            raise VerificationFailed(f"forced failure of {name} (call {nth})")
        return real(*args, **kwargs)

    monkeypatch.setattr(state_module, name, wrapper)
    return calls


@pytest.mark.parametrize(
    ("step", "nth"), [(name, n) for name, count in _MODE_STEPS for n in range(1, count + 1)]
)
def test_adv28_each_mode_install_step_forced_to_fail_fails_the_switch(
    monkeypatch: pytest.MonkeyPatch, step: str, nth: int
) -> None:
    owner = Owner()
    owner.install_mode(mode_payload(version=1))
    candidate = owner.sign_mode(
        mode_payload(version=2, mode="permissive", platform_id=PLATFORM.hex())
    )
    state = state_module.load_state(owner.store)
    before = owner.store.snapshot()
    calls = _fail_nth_call(monkeypatch, step, nth)
    with pytest.raises(VerificationFailed, match="forced failure"):
        state_module.install_mode(owner.store, candidate, NOW, platform_id=PLATFORM)
    assert calls[0] >= nth
    assert owner.store.snapshot() == before
    monkeypatch.undo()
    new_state, update = state.install_mode(candidate, NOW, platform_id=PLATFORM)
    assert update.changes and new_state.mode is not None


@pytest.mark.parametrize("parser", [(ModeDocument, "from_payload"), (Envelope, "from_bytes")])
def test_adv28_a_failing_parser_fails_the_switch(
    monkeypatch: pytest.MonkeyPatch, parser: tuple[type, str]
) -> None:
    owner = Owner()
    candidate = owner.sign_mode(mode_payload(mode="permissive"))
    state = state_module.load_state(owner.store)
    before = owner.store.snapshot()
    cls, name = parser

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise VerificationFailed("forced parser failure")

    monkeypatch.setattr(cls, name, classmethod(broken))
    with pytest.raises(SgxlaunchError):
        state.install_mode(candidate, NOW)
    assert owner.store.snapshot() == before
