"""The decryptor's ECALL contract: round trips, strict decoding, error replies."""

from __future__ import annotations

import pytest

from sgxlaunch.errors import (
    MacInvalid,
    MalformedInput,
    PolicyDenied,
    SgxlaunchError,
    VerificationFailed,
)
from sgxlaunch.pcl import ecalls
from sgxlaunch.pcl.ecalls import Call, CallIn, ProgramOut, RequestIn, RequestOut, UnlockIn

MESSAGES = [
    RequestIn(b"\x01" * 512, b"\x02" * 32),
    RequestOut(b"\x03" * 432, b"\x04" * 32, b"\x05" * 32),
    UnlockIn(b"\x06" * 88, 3, b"input"),
    CallIn(7, b""),
    ProgramOut(b"hello"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip_truncations_trailing(message: object) -> None:
    cls = type(message)
    raw = message.encode()  # type: ignore[attr-defined]
    assert cls.decode(raw) == message  # type: ignore[attr-defined]
    for n in range(len(raw)):
        with pytest.raises(MalformedInput):
            cls.decode(raw[:n])  # type: ignore[attr-defined]
    with pytest.raises(MalformedInput, match="trailing"):
        cls.decode(raw + b"\x00")  # type: ignore[attr-defined]


def test_limits_checked_before_reading() -> None:
    huge = (1 << 31).to_bytes(4, "little")
    with pytest.raises(MalformedInput, match="limit"):
        UnlockIn.decode(huge)
    with pytest.raises(MalformedInput, match="limit"):
        CallIn.decode(b"\x00" * 4 + huge)


def test_encode_refuses_wrong_widths() -> None:
    with pytest.raises(MalformedInput):
        RequestIn(b"\x01" * 511, b"\x02" * 32).encode()


@pytest.mark.parametrize("exc", [MacInvalid("bad tag"), PolicyDenied("no"), MalformedInput("x")])
def test_error_reply_raises_the_same_class(exc: SgxlaunchError) -> None:
    reply = ecalls.encode_error(exc)
    # the class travels as the launch enclave's error code (a MAC failure is a verification
    # failure on the wire)
    expected = VerificationFailed if isinstance(exc, VerificationFailed) else type(exc)
    with pytest.raises(expected, match=exc.message):
        ecalls.decode_reply(Call.UNLOCK, reply)


def test_ok_reply_and_malformed_replies() -> None:
    assert ecalls.decode_reply(Call.CALL, ecalls.encode_ok(b"body")) == b"body"
    with pytest.raises(MalformedInput, match="empty"):
        ecalls.decode_reply(Call.CALL, b"")
    with pytest.raises(MalformedInput):
        ecalls.decode_reply(Call.CALL, b"\x03\xff")
