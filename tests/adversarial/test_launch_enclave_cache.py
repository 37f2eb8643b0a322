"""Attacks on the launch enclave's cache of verified SIGSTRUCTs (issue 11, class D).

The cache (all 1 808 SIGSTRUCT bytes, matched exactly → the verified fields, and per SECS
attributes the token's MACed bytes) spares MINT the RSA verification of a SIGSTRUCT it has
verified. What it must never do: let a SIGSTRUCT that differs from a cached one by a single bit
skip verification, carry a decision across a policy install, or carry anything across enclave
instances or machines.
"""

from __future__ import annotations

import pytest

from sgxlaunch.arch import Attributes, EinitToken, Sigstruct
from sgxlaunch.driver import LoadFailed
from sgxlaunch.driver.owner import check_token_binding
from sgxlaunch.errors import MalformedInput, PolicyDenied, VerificationFailed
from sgxlaunch.launch import enclave as launch_enclave
from sgxlaunch.sigstruct import verify
from tests.adversarial.test_launch_enclave_trust import owner_platform
from tests.support.cpu import PROD, MemoryProgram
from tests.support.platform import author_enclave


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every SIGSTRUCT the launch enclave runs the RSA verification on (its bytes)."""
    seen: list[bytes] = []

    def counting(sig: Sigstruct) -> None:
        seen.append(sig.to_bytes())
        verify(sig)

    monkeypatch.setattr(launch_enclave, "verify", counting)
    return seen


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_one_bit_flip_after_cached_verification_is_verified_and_refused(
    verifications: list[bytes],
) -> None:
    """The genuine SIGSTRUCT is verified and cached; then one bit flipped anywhere — signed
    fields (ISVPRODID, ISVSVN, ATTRIBUTES, ENCLAVEHASH), MODULUS, SIGNATURE, Q1, Q2, reserved
    bytes — is a cache miss, is verified, and gets no token."""
    _, platform = owner_platform()
    _, genuine = author_enclave(MemoryProgram)
    data = genuine.to_bytes()
    assert platform.mint(data).token is not None
    assert platform.mint(data).token is not None
    assert verifications == [data]  # the repeat was a cache hit
    offsets = {f.name: f.offset for f in Sigstruct.FIELDS}
    bits = [
        8 * offsets["isvprodid"],
        8 * offsets["isvsvn"] + 3,
        8 * offsets["attributes"] + 1,  # DEBUG
        8 * offsets["enclavehash"] + 255,
        8 * offsets["modulus"] + 17,
        8 * offsets["signature"] + 3000,
        8 * offsets["q1"] + 5,
        8 * offsets["q2"] + 3071,
        8 * offsets["reserved1"],
        8 * offsets["date"],
        8 * offsets["vendor"],
    ]
    for bit in bits:
        forged = flip(data, bit)
        before = len(verifications)
        with pytest.raises((VerificationFailed, MalformedInput)) as err:
            platform.mint(forged)
        # Every forgery reached the verifier, or the strict parse before it; never the cache.
        if err.type is MalformedInput:
            assert verifications[before:] == []  # reserved bytes, VENDOR: refused by the parse
        else:
            assert verifications[before:] == [forged]
    # The genuine one still mints, from the cache.
    before = len(verifications)
    assert platform.mint(data).token is not None
    assert len(verifications) == before


def test_cached_token_is_the_token_for_its_attributes(verifications: list[bytes]) -> None:
    """A cache hit with other SECS ATTRIBUTES mints a token carrying those attributes (the
    cached MACed bytes are per attributes), and both tokens launch only with their own."""
    _, platform = owner_platform()
    image, sig = author_enclave(MemoryProgram)
    data = sig.to_bytes()
    plain = Attributes(flags=PROD, xfrm=0x3)
    other = Attributes(flags=PROD, xfrm=0x7)
    first = platform.mint(data, plain).token
    second = platform.mint(data, other).token
    again = platform.mint(data, plain).token
    assert first is not None and second is not None and again is not None
    assert len(verifications) == 1
    tokens = [EinitToken.from_bytes(t) for t in (first, second, again)]
    assert [t.attributes for t in tokens] == [plain, other, plain]
    assert len({t.keyid for t in tokens}) == 3 and len({t.mac for t in tokens}) == 3
    le = platform.le_sigstruct
    assert le is not None
    for token in tokens:  # every field as EINIT reads it (the strict parse checked the rest)
        assert token.valid == 1
        assert (token.mrenclave, token.mrsigner) == (sig.enclavehash, sig.mrsigner)
        assert (token.isvprodidle, token.isvsvnle) == (le.isvprodid, le.isvsvn)
        # MASKEDATTRIBUTESLE: the running launch enclave's ATTRIBUTES (INIT set) but MODE64BIT.
        assert token.maskedattributesle.flags == (launch_enclave.LE_ATTRIBUTES.flags | 1) & ~PROD
        check_token_binding(token.keyid, data, platform.machine.load().counter.policy_digest)
    # The token for xfrm 0x7 does not launch the enclave with xfrm 0x3 (EINIT: MAC/attributes).
    with pytest.raises(LoadFailed):
        platform.run(image, sig, token=second)
    assert platform.run(image, sig, token=again).enclave is not None


def test_policy_install_between_two_mints_of_the_same_sigstruct_revokes(
    verifications: list[bytes],
) -> None:
    owner, platform = owner_platform()
    image, sig = author_enclave(MemoryProgram)
    data = sig.to_bytes()
    token = platform.mint(data).token
    assert token is not None
    assert verifications == [data]
    platform.install_policy(owner.policy(version=2, allow=[{"id": "x", "mrenclave": "ab" * 32}]))
    reply = platform.mint(data)
    assert reply.allowed == 0 and reply.token is None
    assert reply.policy_version == 2
    # The install emptied the cache: the SIGSTRUCT was verified again.
    assert verifications == [data, data]
    with pytest.raises(PolicyDenied):
        platform.run(image, sig)
    with pytest.raises(LoadFailed):
        platform.run(image, sig, token=token)


def test_cache_hit_cannot_cross_enclave_instances_or_machines(
    verifications: list[bytes],
) -> None:
    """Each launch-enclave instance keeps its own cache: a SIGSTRUCT verified by one is
    verified again by another instance on the same machine and by one on another machine,
    and a token from one machine does not launch on the other."""
    owner_a, platform_a = owner_platform(seed=b"platform-seed-for-tests-000A")
    image, sig = author_enclave(MemoryProgram)
    data = sig.to_bytes()
    token_a = platform_a.mint(data).token
    assert token_a is not None and platform_a.mint(data).token is not None
    assert len(verifications) == 1
    # Another instance on the same machine (a new process opening the home).
    assert owner_a.platform().mint(data).token is not None
    assert len(verifications) == 2
    # Another machine.
    _, platform_b = owner_platform(seed=b"platform-seed-for-tests-000B")
    assert platform_b.mint(data).token is not None
    assert len(verifications) == 3
    with pytest.raises(LoadFailed):
        platform_b.run(image, sig, token=token_a)
