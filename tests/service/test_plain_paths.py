"""The token mint's direct paths give what the general ones give (issue 21's bench point):
the plain request decoder (:func:`plain_token_request`) against JSON + :func:`parse_token`, and
the directly formatted reply (:func:`mint_document`) against the general document encoder."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import pytest

from sgxlaunch.errors import MalformedInput
from sgxlaunch.service.app import (
    _COMPACT,
    document,
    json_object,
    mint_document,
    parse_token,
    plain_token_request,
)


def general(data: bytes) -> bytes | None:
    """The SIGSTRUCT the general path takes from ``data``, or ``None`` where it refuses it."""
    try:
        sig, attributes = parse_token(json_object(data), [], 1 << 20)
    except MalformedInput:
        return None
    return sig if attributes is None else None


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


SIG = random.Random(21).randbytes(1808)
B64 = base64.b64encode(SIG).decode()
assert "/" in B64 and "+" in B64


@pytest.mark.parametrize(
    "data",
    [
        compact({"sigstruct": B64}),
        json.dumps({"sigstruct": B64}).encode(),  # a space after the colon
    ],
)
def test_plain_bodies_give_the_general_result(data: bytes) -> None:
    assert plain_token_request(data) == general(data) == SIG


@pytest.mark.parametrize(
    "data",
    [
        compact({"sigstruct": B64, "attributes": {"flags": 4, "xfrm": 3}}),
        compact({"attributes": None, "sigstruct": B64}),
        compact({"sigstruct": B64.replace("/", "\\/")}),  # an escape the general path reads
        b'{ "sigstruct":"' + B64.encode() + b'"}',
        b'{"sigstruct":"' + B64.encode() + b'"}\n',
        compact({"sigstruct": B64[:-4]}),  # 1805 bytes: the general path names the length
        compact({"sigstruct": base64.b64encode(SIG + b"\0").decode()}),
        compact({"sigstruct": B64[:-1] + "A"}),  # 1809 bytes' worth, unpadded
        compact({"sigstruct": B64[:-2] + "=="}),
        compact({"sigstruct": "*" + B64[1:]}),
        compact({"sigstruct": B64[:-3] + "==="}),
        compact({"sigstruct_fd": 0}),
        compact({"sigstruct": None}),
        compact([B64]),
    ],
)
def test_other_bodies_go_the_general_way(data: bytes) -> None:
    assert plain_token_request(data) is None


def test_no_body_is_read_differently() -> None:
    """Random damage to a plain body: the direct decoder gives the general path's SIGSTRUCT
    or steps aside (``None``); it never accepts what the general path refuses."""
    rng = random.Random(2021)
    base = bytearray(compact({"sigstruct": B64}))
    alphabet = b'{}":, =/+\\\nAZaz09\xff'
    accepted = 0
    for _ in range(3000):
        data = bytearray(base)
        for _ in range(rng.randrange(1, 3)):
            at = rng.randrange(len(data))
            choice = rng.randrange(3)
            if choice == 0:
                data[at] = rng.choice(alphabet)
            elif choice == 1:
                del data[at]
            else:
                data.insert(at, rng.choice(alphabet))
        fast = plain_token_request(bytes(data))
        if fast is not None:
            accepted += 1
            assert fast == general(bytes(data))
    assert accepted > 0  # some damage leaves a plain body (another SIGSTRUCT's base64)


def allowed(**changes: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "allowed": True,
        "rule": "hello",
        "reasons": [],
        "policy_version": 7,
        "policy_digest": "ab" * 32,
        "token": "01" * 304,
        "token_keyid": "cd" * 32,
    }
    return result | changes


@pytest.mark.parametrize(
    "result",
    [
        allowed(),
        allowed(rule=None, policy_version=None, policy_digest=None),
        allowed(rule='q"uote\\ \u00e9 \u2603 \n'),
        allowed(policy_version=0),
    ],
)
def test_mint_document_is_the_general_encoding(result: dict[str, Any]) -> None:
    assert mint_document(result) == _COMPACT.encode(document("token mint", result)).encode()


@pytest.mark.parametrize(
    "result",
    [
        allowed(allowed=False),
        allowed(reasons=[{"rule": None, "field": "x", "expected": "1", "found": "2"}]),
        allowed(policy_version=True),
        allowed(extra=1),
        allowed(rule=5),
    ],
)
def test_mint_document_leaves_the_rest_to_the_encoder(result: dict[str, Any]) -> None:
    assert mint_document(result) is None
