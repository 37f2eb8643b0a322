"""The CPUSVN a launch-enclave sealed blob records is the attacker's to rewrite (the blob is in
the home): a rewritten CPUSVN never unseals, whether lower (another key) or beyond the CPU's
(EGETKEY refuses it, SDM EGETKEY: KEYREQUEST.CPUSVN beyond CR_CPUSVN → SGX_INVALID_CPUSVN)."""

from __future__ import annotations

import pytest

from sgxlaunch.errors import VerificationFailed
from sgxlaunch.launch.platform import le_sealed_key
from tests.support.platform import Owner

MAGIC = len(b"sgxlaunch-sealed/v2\x00")


@pytest.mark.parametrize("delta", [-1, +1], ids=["lower", "beyond-the-cpu"])
def test_sealed_state_relabelled_with_another_cpusvn_refused(delta: int) -> None:
    owner = Owner()
    sig = owner.set_up_launch_enclave()
    owner.platform().install_policy(
        owner.policy(version=1, allow=[{"id": "someone", "mrsigner": "11" * 32}])
    )  # the launch enclave commits (seals) its state
    owner.platform()  # and starts from it
    key = le_sealed_key(sig.mrsigner)
    sealed = bytearray(owner.store.get(key) or b"")
    cpusvn = owner.platform().cpu.config.cpusvn
    assert sealed[MAGIC : MAGIC + 16] == cpusvn
    sealed[MAGIC] = cpusvn[0] + delta
    owner.store.commit({key: bytes(sealed)})
    with pytest.raises(VerificationFailed, match="sealed state does not unseal"):
        owner.platform()
