"""An owner-mode INIT cannot go unlogged because the launch enclave does not start.

The attacker holds the home and drives the driver itself. They keep a token minted while the
launch enclave ran (bound to its SIGSTRUCT and the installed policy, so the driver accepts it),
delete the launch enclave's sealed state from the home so that the next open finds no running
launch enclave (the platform opens blocked, in maintenance), and INIT their enclave straight
through the ioctls. With no launch enclave there is nothing to write the attempt record: the
driver's gate must refuse (EIO, before EINIT), not let the INIT through unrecorded.
"""

from __future__ import annotations

import errno

import pytest

from sgxlaunch.driver import LoadFailed, load
from sgxlaunch.launch.platform import le_sealed_key
from tests.support.cpu import MemoryProgram
from tests.support.platform import Owner, allow_rule, author_enclave


def _owner_with_token(*, delete_le_state: bool) -> tuple[Owner, bytes]:
    """An owner-mode platform that launched the allowed enclave once, and the token that
    launch used; with ``delete_le_state`` the launch enclave's sealed state is then removed
    from the home (the attacker's step)."""
    owner = Owner()
    le_sig = owner.set_up_launch_enclave()
    image, sig = author_enclave(MemoryProgram)
    owner.platform().install_policy(owner.policy(version=1, allow=[allow_rule(sig)]))
    owner.platform().set_mode(owner.mode("owner", version=1))
    platform = owner.platform()
    tokens: list[bytes] = []
    platform.driver.observers.append(lambda a: tokens.append(a.token or b""))
    platform.run(image, sig)
    assert tokens and tokens[-1], "the allowed launch went through INIT_TOKEN"
    if delete_le_state:
        owner.store.commit({le_sealed_key(le_sig.mrsigner): None})
    return owner, tokens[-1]


def test_init_with_an_earlier_token_while_no_launch_enclave_runs_is_refused() -> None:
    owner, token = _owner_with_token(delete_le_state=True)
    blocked = owner.platform(maintenance=True)
    assert blocked.le is None and blocked.blocked, "the launch enclave must not start"
    before = owner.store.snapshot()
    seen: list[int] = []
    blocked.driver.observers.append(lambda a: seen.append(a.errno))
    image, sig = author_enclave(MemoryProgram)
    with pytest.raises(LoadFailed) as refused:
        load(blocked.new_process(), image, sig, token=token)
    assert refused.value.errno == errno.EIO
    assert "launch enclave" in refused.value.message
    assert seen == [errno.EIO], "the driver reports the INIT refused before EINIT"
    assert owner.store.snapshot() == before, "nothing was written to the home"


def test_the_same_token_still_launches_once_the_launch_enclave_runs_again() -> None:
    """The control: the refusal comes from the missing launch enclave, not from the token. A
    platform whose launch enclave runs (the same steps without the deletion)
    takes the token and logs the INIT."""
    owner, token = _owner_with_token(delete_le_state=False)
    image, sig = author_enclave(MemoryProgram)
    again = owner.platform()
    before = len(again.log_records())
    loaded = load(again.new_process(), image, sig, token=token)
    assert loaded.mrenclave == sig.enclavehash
    records = again.log_records()
    assert len(records) == before + 2
    assert [r["kind"] for r in records[-2:]] == ["attempt", "outcome"]
    assert records[-1]["outcome"] == "initialized"
