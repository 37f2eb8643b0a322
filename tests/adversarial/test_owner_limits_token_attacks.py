"""Attacks on the owner limits a token carries (issue 17, ``docs/policy.md`` "Dynamic
memory"): the limits travel in KEYID, whose second half binds the SIGSTRUCT and the policy
digest. That binding is a plain hash of things user space can read (the SIGSTRUCT and the
policy's payload are in the home), so it is not what stops a forger: EINIT is. KEYID is an
input of the launch key the token's MAC is checked under (``../shared/reference/
sgx-launch-spec.md`` §4.3; SDM EINIT: the MAC over the token's first 192 bytes is compared
under the key derived with the token's KEYID → SGX_INVALID_EINITTOKEN).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json

import pytest

from sgxlaunch.arch import SgxStatus
from sgxlaunch.arch.structs import Attributes, EinitToken, Sigstruct
from sgxlaunch.cpu import secs_for
from sgxlaunch.driver.loader import LoadFailed
from sgxlaunch.driver.owner import (
    MAINLINE_LIMITS,
    DynamicMemory,
    OwnerLimits,
    limits_nonce,
    token_keyid,
)
from sgxlaunch.formats.sgxs import SgxsImage
from sgxlaunch.launch.platform import Platform
from sgxlaunch.policy import POLICY_KEY
from tests.support.cpu import MemoryProgram
from tests.support.platform import Owner, allow_rule, author_enclave

_KEYID = next(f.offset for f in EinitToken.FIELDS if f.name == "keyid")
DATA = OwnerLimits(DynamicMemory.DATA, unmeasured_exec=False, rwx_pages=False)


def _platform(**rule: str) -> tuple[Owner, Platform, SgxsImage, Sigstruct]:
    owner = Owner()
    owner.set_up_launch_enclave()
    platform = owner.platform()
    image, sig = author_enclave(MemoryProgram)
    platform.install_policy(
        owner.policy(version=1, allow=[allow_rule(sig, **rule)], spec_version="3")
    )
    platform.set_mode(owner.mode("owner", version=1))
    return owner, owner.platform(), image, sig


def _attributes(platform: Platform, image: SgxsImage, sig: Sigstruct) -> Attributes:
    return secs_for(
        sig,
        size=image.size,
        ssaframesize=image.ssaframesize,
        xfrm_allowed=platform.cpu.config.xfrm_allowed,
    ).attributes


def _initialized(platform: Platform, sig: Sigstruct) -> list[OwnerLimits]:
    """The limits of every initialized enclave of ``sig``'s MRENCLAVE."""
    return [
        e.owner_limits
        for e in platform.driver.enclaves.values()
        if e.initialized and e.mrenclave == sig.enclavehash
    ]


def _policy_digest_from_the_home(platform: Platform) -> bytes:
    """What user space can compute: SHA-256 of the installed policy's payload."""
    envelope = platform.store.get(POLICY_KEY)
    assert envelope is not None
    return hashlib.sha256(base64.b64decode(json.loads(envelope)["payload"])).digest()


def test_limits_loosened_with_a_recomputed_keyid_binding_refused_by_einit() -> None:
    """User space takes a token minted under a ``none`` rule, writes ``code`` and both flags
    into the KEYID nonce and recomputes the binding from the SIGSTRUCT and the policy payload
    in the home — the driver's binding check passes (the control: the refusal is EINIT's
    status, not the binding's message). EINIT derives the launch key with the forged KEYID and
    the MAC does not verify: SGX_INVALID_EINITTOKEN, EPERM (``sgx_encl_init``: a non-zero
    EINIT status is EPERM), the enclave is not initialized and gets no limits."""
    _owner, platform, image, sig = _platform(dynamic_memory="none")
    token = platform.mint(sig.to_bytes(), _attributes(platform, image, sig)).token
    assert token is not None
    keyid = token[_KEYID : _KEYID + 32]
    digest = _policy_digest_from_the_home(platform)
    assert token_keyid(keyid[:16], sig.to_bytes(), digest) == keyid  # what the attacker knows
    loose = OwnerLimits(DynamicMemory.CODE, unmeasured_exec=True, rwx_pages=True)
    forged_keyid = token_keyid(limits_nonce(loose, keyid[3:16]), sig.to_bytes(), digest)
    forged = token[:_KEYID] + forged_keyid + token[_KEYID + 32 :]
    with pytest.raises(LoadFailed) as info:
        platform.run(image, sig, token=forged)
    assert info.value.errno == errno.EPERM
    assert info.value.status == SgxStatus.INVALID_EINITTOKEN
    assert "another SIGSTRUCT or under another launch policy" not in info.value.message
    assert _initialized(platform, sig) == []
    outcome = platform.log_records()[-1]
    assert outcome["kind"] == "outcome" and outcome["outcome"] == "refused"
    # Control: the untouched token initializes the enclave with the rule's limits.
    platform.run(image, sig, token=token)
    assert _initialized(platform, sig) == [
        OwnerLimits(DynamicMemory.NONE, unmeasured_exec=False, rwx_pages=False)
    ]


def test_token_minted_under_a_code_rule_refused_after_the_policy_tightened_it() -> None:
    """The owner's policy version 1 gives the enclave ``code``; user space mints a token and
    keeps it. Version 2 gives the same enclave ``data``. The kept token (MAC still valid) is
    refused by the driver's binding check against the counter slot's policy digest (EPERM
    before EINIT), the enclave is not initialized; a fresh run gets ``data``."""
    owner, platform, image, sig = _platform(dynamic_memory="code")
    kept = platform.mint(sig.to_bytes(), _attributes(platform, image, sig)).token
    assert kept is not None
    platform.run(image, sig, token=kept)  # control: good under version 1
    assert _initialized(platform, sig) == [
        OwnerLimits(DynamicMemory.CODE, unmeasured_exec=False, rwx_pages=False)
    ]
    platform.install_policy(
        owner.policy(version=2, allow=[allow_rule(sig, dynamic_memory="data")], spec_version="3")
    )
    platform = owner.platform()
    with pytest.raises(LoadFailed) as info:
        platform.run(image, sig, token=kept)
    assert info.value.errno == errno.EPERM
    assert "another SIGSTRUCT or under another launch policy" in info.value.message
    assert _initialized(platform, sig) == []
    platform.run(image, sig)
    assert _initialized(platform, sig) == [DATA]
    assert DATA != MAINLINE_LIMITS
