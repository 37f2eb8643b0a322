"""The allowing rule's limits travel in the token's KEYID to the driver (issue 17).

The launch enclave's MINT writes ``limits_nonce(rule limits, 13 random bytes)`` as the first
16 bytes of KEYID; the driver's owner-mode INIT decodes them after the binding check and keeps
them in ``Enclave.owner_limits``. User space cannot change them: KEYID is covered by the
binding hash and is an input of the launch key (``../shared/reference/sgx-launch-spec.md``
§4.3), so a changed limit byte makes INIT refuse the token.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest

from sgxlaunch.arch.structs import Attributes, EinitToken, Sigstruct
from sgxlaunch.cpu import secs_for
from sgxlaunch.driver.encl import Enclave
from sgxlaunch.driver.loader import LoadFailed
from sgxlaunch.driver.owner import (
    LIMITS_TAG,
    MAINLINE_LIMITS,
    STRICT_LIMITS,
    DynamicMemory,
    OwnerLimits,
)
from sgxlaunch.formats.sgxs import SgxsImage
from sgxlaunch.launch.platform import Platform
from tests.support.cpu import MemoryProgram
from tests.support.platform import Owner, allow_rule, author_enclave

_KEYID = next(f.offset for f in EinitToken.FIELDS if f.name == "keyid")


def _driver_enclave(platform: Platform, mrenclave: bytes) -> Enclave:
    found = [e for e in platform.driver.enclaves.values() if e.mrenclave == mrenclave]
    assert len(found) == 1
    return found[0]


def _owner_mode(spec_version: str | None, **rule: Any) -> tuple[Owner, Platform]:
    owner = Owner()
    owner.set_up_launch_enclave()
    platform = owner.platform()
    _, sig = author_enclave(MemoryProgram)
    policy = owner.policy(version=1, allow=[allow_rule(sig, **rule)], spec_version=spec_version)
    platform.install_policy(policy)
    platform.set_mode(owner.mode("owner", version=1))
    return owner, owner.platform()


@pytest.mark.parametrize(
    ("rule", "limits"),
    [
        ({}, OwnerLimits(DynamicMemory.DATA, unmeasured_exec=False, rwx_pages=False)),
        ({"dynamic_memory": "none"}, STRICT_LIMITS),
        (
            {"dynamic_memory": "code", "unmeasured_exec": "allow"},
            OwnerLimits(DynamicMemory.CODE, unmeasured_exec=True, rwx_pages=False),
        ),
        (
            {"dynamic_memory": "attested-code", "code_hashes": "any", "rwx_pages": "allow"},
            OwnerLimits(DynamicMemory.ATTESTED_CODE, unmeasured_exec=False, rwx_pages=True),
        ),
    ],
)
def test_the_matched_rules_limits_reach_the_driver(
    rule: dict[str, Any], limits: OwnerLimits
) -> None:
    _, platform = _owner_mode("3", **rule)
    image, sig = author_enclave(MemoryProgram)
    result = platform.run(image, sig)
    assert _driver_enclave(platform, sig.enclavehash).owner_limits == limits
    token_keyid = bytes.fromhex(str(result.describe()["token_keyid"]))
    assert token_keyid[0] == LIMITS_TAG and token_keyid[1] == int(limits.dynamic_memory)


def test_the_attempt_record_names_the_limits_the_token_carries() -> None:
    """The launch log's attempt record says which limits the enclave was launched under
    (decoded from the token's KEYID, as the driver decodes them)."""
    _, platform = _owner_mode("3", dynamic_memory="none", rwx_pages="allow")
    image, sig = author_enclave(MemoryProgram)
    platform.run(image, sig)
    attempt = platform.log_records()[-2]
    assert attempt["kind"] == "attempt" and attempt["mrenclave"] == sig.enclavehash.hex()
    assert attempt["token_limits"] == {
        "dynamic_memory": "none",
        "unmeasured_exec": "deny",
        "rwx_pages": "allow",
    }
    assert platform.verify_log() == len(platform.log_records())


def test_an_older_spec_policy_gives_mainline_limits() -> None:
    _, platform = _owner_mode(None)  # spec_version "2" (issued)
    image, sig = author_enclave(MemoryProgram)
    platform.run(image, sig)
    assert _driver_enclave(platform, sig.enclavehash).owner_limits == MAINLINE_LIMITS


def test_the_launch_enclave_gets_the_strictest_limits() -> None:
    """Its token has VALID = 0 (EINIT lets only the EINITTOKEN_KEY holder through so): the
    driver gives it STRICT_LIMITS — nothing dynamic, no unmeasured or RWX executable pages."""
    _, platform = _owner_mode("3")
    platform.status()  # loads the launch enclave
    le = platform.le_sigstruct
    assert le is not None
    assert _driver_enclave(platform, le.enclavehash).owner_limits == STRICT_LIMITS


def test_permissive_mode_gives_mainline_limits() -> None:
    platform = Owner().platform()
    image, sig = author_enclave(MemoryProgram)
    platform.run(image, sig)
    assert _driver_enclave(platform, sig.enclavehash).owner_limits == MAINLINE_LIMITS


@pytest.mark.parametrize(
    ("byte", "value"),
    [(1, int(DynamicMemory.CODE)), (2, 0x03), (0, 0x00)],
    ids=["level raised to code", "unmeasured_exec and rwx_pages flags set", "tag cleared"],
)
def test_user_space_cannot_loosen_the_limits_in_a_minted_token(byte: int, value: int) -> None:
    """Attack: take the token the launch enclave minted under a ``none`` rule, change the
    limits in its KEYID, pass it to ENCLAVE_INIT_TOKEN. The driver's binding check (the nonce
    is hashed with the SIGSTRUCT and policy digest) refuses it with EPERM before EINIT, and
    EINIT would refuse it too (KEYID is an input of the launch key)."""
    _, platform = _owner_mode("3", dynamic_memory="none")
    image, sig = author_enclave(MemoryProgram)
    secs_attributes = _attributes(platform, image, sig)
    token = platform.mint(sig.to_bytes(), secs_attributes).token
    assert token is not None and token[_KEYID] == LIMITS_TAG
    forged = bytearray(token)
    forged[_KEYID + byte] = value
    with pytest.raises(LoadFailed) as info:
        platform.run(image, sig, token=bytes(forged))
    assert info.value.errno == errno.EPERM
    assert "another SIGSTRUCT or under another launch policy" in info.value.message
    # The untouched token still works, and carries the rule's limits.
    platform.run(image, sig, token=token)
    assert _driver_enclave(platform, sig.enclavehash).owner_limits == STRICT_LIMITS


def _attributes(platform: Platform, image: SgxsImage, sig: Sigstruct) -> Attributes:
    return secs_for(
        sig,
        size=image.size,
        ssaframesize=image.ssaframesize,
        xfrm_allowed=platform.cpu.config.xfrm_allowed,
    ).attributes
