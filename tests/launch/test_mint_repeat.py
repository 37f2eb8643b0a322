"""MINT of a request whose bytes before NOW repeat the last one's: the launch enclave reuses that
request's parsed fields (one comparison in place) and reads only NOW. Every token must still be
bound to *its own* request: interleaved SIGSTRUCTs, attributes, a denied one and malformed
requests never get a token for another request's fields."""

from __future__ import annotations

import pytest

from sgxlaunch.arch.structs import Attributes, EinitToken, Sigstruct
from sgxlaunch.driver.owner import check_token_binding
from sgxlaunch.errors import MalformedInput, VerificationFailed
from sgxlaunch.launch.ecalls import (
    Call,
    CallError,
    MintReply,
    decode_mint_reply,
    encode_mint_request,
)
from sgxlaunch.launch.platform import Platform
from tests.support.cpu import PROD, MemoryProgram
from tests.support.platform import Owner, allow_rule, author_enclave


def _owner_mode() -> tuple[Platform, Sigstruct, Sigstruct, Sigstruct]:
    owner = Owner()
    owner.set_up_launch_enclave()
    platform = owner.platform()
    _, first = author_enclave(MemoryProgram, isvsvn=1)
    _, second = author_enclave(MemoryProgram, isvsvn=2)  # same rule, another SIGSTRUCT
    _, denied = author_enclave(MemoryProgram, key="other")
    platform.install_policy(owner.policy(version=1, allow=[allow_rule(first)]))
    platform.set_mode(owner.mode("owner", version=1))
    return owner.platform(), first, second, denied


def test_interleaved_repeats_each_get_a_token_for_their_own_request() -> None:
    platform, first, second, denied = _owner_mode()
    plain = Attributes(flags=PROD, xfrm=0x3)
    wider = Attributes(flags=PROD, xfrm=0x7)
    digest = None
    sequence = [
        (first, plain), (first, plain), (second, plain), (first, plain), (first, wider),
        (first, wider), (first, plain), (denied, plain), (first, plain), (second, plain),
        (second, plain), (second, wider),
    ]  # fmt: skip
    for step, (sig, attributes) in enumerate(sequence):
        reply = platform.mint(sig.to_bytes(), attributes)
        if sig is denied:
            assert not reply.allowed and reply.token is None, step
            continue
        assert reply.allowed and reply.token is not None, step
        assert reply.policy_digest is not None
        digest = digest or reply.policy_digest
        assert reply.policy_digest == digest
        token = EinitToken.from_bytes_raw(reply.token)
        assert token.mrenclave == sig.enclavehash and token.mrsigner == sig.mrsigner, step
        assert token.attributes == attributes, step
        check_token_binding(token.keyid, sig.to_bytes(), reply.policy_digest)
        other = second if sig is first else first
        with pytest.raises(VerificationFailed):
            check_token_binding(token.keyid, other.to_bytes(), reply.policy_digest)


def test_a_repeat_with_another_length_or_a_damaged_prefix_is_parsed_in_full() -> None:
    """After a good request: the same bytes plus one, minus one, or with the length prefix
    changed are refused (MALFORMED) as the general parser refuses them; the good one still
    mints after each."""
    platform, first, _second, _denied = _owner_mode()
    le = platform.le
    assert le is not None
    good = encode_mint_request(first.to_bytes(), PROD, 0x3, 1_800_000_000)

    def call(data: bytes) -> MintReply | CallError:
        return decode_mint_reply(le.process.ecall(le.tcs[0], int(Call.MINT), data))

    def allowed() -> bool:
        reply = call(good)
        return isinstance(reply, MintReply) and reply.allowed == 1

    assert allowed()
    for bad in (good + b"\0", good[:-1], b"\x00" + good[1:]):
        refused = call(bad)
        assert isinstance(refused, CallError), bad[:8]
        with pytest.raises(MalformedInput):
            Platform._le_reply(refused, MintReply)  # the code names MalformedInput
        assert allowed()
