"""The launch enclave's typed ECALL codec (sgxlaunch.launch.ecalls).

Each message type's codec is compiled from its FIELDS table; the field-by-field reference
codec names the field at fault. These tests hold the two equal: every valid encoding decodes
to the same message, every refused input is refused by both with the reference's error, and
every message encodes to the same bytes.
"""

from __future__ import annotations

import dataclasses
import random
import struct
from typing import Any

import pytest

from sgxlaunch.errors import MalformedInput
from sgxlaunch.launch import ecalls
from sgxlaunch.launch.ecalls import (
    MAX_TEXT,
    REPLIES,
    REQUESTS,
    SIGSTRUCT_SIZE,
    AddCodeKeyReply,
    AddCodeKeyRequest,
    AdvanceReply,
    AdvanceRequest,
    Call,
    CallError,
    ClaimReply,
    ClaimRequest,
    GrantReply,
    GrantRequest,
    InstallPolicyReply,
    InstallPolicyRequest,
    LeKeyReply,
    LeKeyRequest,
    LoadReply,
    LoadRequest,
    LogAppendReply,
    LogAppendRequest,
    LogAttestReply,
    LogAttestRequest,
    LogVerifyReply,
    LogVerifyRequest,
    Message,
    MintReply,
    MintRequest,
    NoteModeReply,
    NoteModeRequest,
    ReleaseChallengeReply,
    ReleaseChallengeRequest,
    ReleaseReply,
    ReleaseRequest,
    decode_mint_reply,
    decode_mint_request,
    decode_reply,
    encode_error,
    encode_mint_allowed,
    encode_mint_request,
    encode_ok,
)

MESSAGES: list[Message] = [
    LoadRequest(
        root=b"root", policy=None, mode=b"mode", sealed=b"", handover=None, recovery=None, now=7
    ),
    LoadRequest(
        root=b"", policy=b"p", mode=None, sealed=None, handover=b"h", recovery=b"r", now=2**64 - 1
    ),
    LoadReply(
        counter=3,
        policy_version=2,
        mode_version=1,
        log_count=9,
        log_head=bytes(range(32)),
        handed_over=None,
        sealed=b"s" * 40,
    ),
    LoadReply(
        counter=0,
        policy_version=0,
        mode_version=0,
        log_count=0,
        log_head=bytes(32),
        handed_over=b"\x01" * 32,
        sealed=None,
    ),
    InstallPolicyRequest(policy=b"{}" * 100, now=1),
    InstallPolicyReply(sealed=b"x" * 60, version=4, digest=b"\xaa" * 32),
    MintRequest(sigstruct=bytes(range(256)) * 7 + bytes(16), flags=0x5, xfrm=0x3, now=99),
    MintReply(
        allowed=1,
        rule="author",
        policy_version=3,
        policy_digest=b"\x11" * 32,
        reasons=(),
        token=b"t" * 304,
    ),
    MintReply(
        allowed=0,
        rule=None,
        policy_version=0,
        policy_digest=None,
        reasons=("", "policy", "an installed owner launch policy", "none"),
        token=None,
    ),
    MintReply(
        allowed=0,
        rule="déni",
        policy_version=1,
        policy_digest=b"\x22" * 32,
        reasons=("r1", "isvsvn", "1..4", "9", "r2", "mrsigner", "ab", "cd"),
        token=None,
    ),
    LogAppendRequest(facts=b'{"kind":"attempt"}', now=5),
    LogAppendReply(record=b"record", sealed=b"sealed"),
    LogVerifyRequest(records=()),
    LogVerifyRequest(records=(b"a", b"", b"ccc")),
    LogVerifyReply(count=3),
    NoteModeRequest(mode=b"mode", now=6),
    NoteModeReply(sealed=b"s", handover=None, counter=2),
    NoteModeReply(sealed=b"s", handover=b"h", counter=2),
    AdvanceRequest(),
    AdvanceReply(counter=10),
    LogAttestRequest(nonce=b"n", targetinfo=b"t" * 512),
    LogAttestRequest(nonce=b"n" * 64, targetinfo=bytes(512)),
    LogAttestReply(report=b"r" * 432, count=7, head=b"\x07" * 32),
    LoadReply(
        counter=4,
        policy_version=1,
        mode_version=2,
        log_count=0,
        log_head=bytes(32),
        handed_over=None,
        sealed=b"s" * 40,
        record=b"r" * 80,
    ),
    GrantRequest(
        configid=b"c" * 64,
        mrenclave=b"\x01" * 32,
        offset=0x4000,
        length=0x1000,
        challenge=b"\x02" * 32,
        code_hash=b"\x03" * 32,
        report=b"r" * 432,
        now=7,
    ),
    GrantReply(allowed=1, rule="loader", reasons=(), record=b"rec", sealed=b"s"),
    GrantReply(
        allowed=0, rule=None, reasons=("", "report", "a REPORT", "another"), record=b"", sealed=b""
    ),
    LeKeyRequest(sealed=None, targetinfo=None),
    LeKeyRequest(sealed=b"k" * 90, targetinfo=b"t" * 512),
    LeKeyReply(public_key=b"\x09" * 32, sealed=b"k" * 90, report=None),
    LeKeyReply(public_key=b"\x09" * 32, sealed=None, report=b"r" * 432),
    AddCodeKeyRequest(wrapped=b"w" * 201, le_key=b"k" * 90, now=8),
    AddCodeKeyReply(
        key_id=b"\x01" * 32, constraint=b"c" * 40, code_key=b"s" * 120, record=b"r", sealed=b"x"
    ),
    ReleaseChallengeRequest(),
    ReleaseChallengeReply(challenge=b"\x02" * 32, targetinfo=bytes(512)),
    ReleaseRequest(
        report=b"r" * 432,
        ephemeral_key=b"e" * 32,
        challenge=b"c" * 32,
        key_id=b"i" * 32,
        code_key=None,
        now=3,
    ),
    ReleaseRequest(
        report=bytes(432),
        ephemeral_key=bytes(32),
        challenge=bytes(32),
        key_id=bytes(32),
        code_key=b"s" * 120,
        now=2**64 - 1,
    ),
    ReleaseReply(
        released=1,
        by_policy=0,
        rule="protected",
        policy_version=2,
        reasons=(),
        record=b"r" * 300,
        sealed=b"x" * 200,
    ),
    ReleaseReply(
        released=0,
        by_policy=1,
        rule=None,
        policy_version=0,
        reasons=("", "challenge", "one this launch enclave issued, unused", "unknown"),
        record=b"r",
        sealed=b"x",
    ),
    ClaimRequest(),
    ClaimReply(boxed=b"b" * 88),
]


def _outcome(decode: Any, data: bytes) -> tuple[str, Any]:
    try:
        return "ok", decode(data)
    except MalformedInput as exc:
        return "refused", (exc.message, exc.field, exc.offset)


def _agree(cls: type[Message], data: bytes) -> None:
    """The compiled decoder and the reference decoder give the same outcome for ``data``."""
    fast = _outcome(cls.decode, data)
    reference = _outcome(cls.decode_reference, data)
    assert fast == reference, (cls.__name__, data.hex())


def test_every_call_has_one_request_and_one_reply_type() -> None:
    assert set(REQUESTS) == set(REPLIES) == set(Call)
    covered = {type(m) for m in MESSAGES}
    assert covered == set(REQUESTS.values()) | set(REPLIES.values())


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip_and_reference_encoding(message: Message) -> None:
    data = message.encode()
    assert data == message.encode_reference()
    assert type(message).decode(data) == message
    assert type(message).decode_reference(data) == message


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_truncation_and_trailing_bytes_refused_naming_the_field(message: Message) -> None:
    cls = type(message)
    data = message.encode()
    for end in range(len(data)):
        with pytest.raises(MalformedInput) as err:
            cls.decode(data[:end])
        assert err.value.field is not None
        assert f"launch-enclave {cls.__name__}" in err.value.message
        _agree(cls, data[:end])
    with pytest.raises(MalformedInput, match="trailing bytes"):
        cls.decode(data + b"\x00")
    _agree(cls, data + b"\x00")


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_mutated_encodings_decode_alike(message: Message) -> None:
    """Differential fuzz: byte flips, insertions and deletions of a valid encoding."""
    cls = type(message)
    data = message.encode()
    rng = random.Random(f"{cls.__name__}:{len(data)}")
    for _ in range(300):
        buf = bytearray(data)
        for _edit in range(rng.randint(1, 3)):
            op = rng.randrange(3)
            pos = rng.randrange(len(buf) + 1)
            if op == 0 and pos < len(buf):
                buf[pos] = rng.choice((0, 1, 2, 0x20, 0x7F, 0x80, 0xFF, rng.randrange(256)))
            elif op == 1:
                buf[pos:pos] = bytes([rng.randrange(256)])
            elif pos < len(buf):
                del buf[pos]
        _agree(cls, bytes(buf))


def test_mint_request_refuses_a_sigstruct_of_another_length_before_reading_it() -> None:
    odd = MintRequest(sigstruct=b"x" * 100, flags=1, xfrm=3, now=0)
    data = odd.encode()  # the host may send anything; the enclave refuses it
    assert data == odd.encode_reference()
    assert data[:4] == struct.pack("<I", 100)
    with pytest.raises(MalformedInput, match=f"sigstruct: must be {SIGSTRUCT_SIZE} bytes"):
        MintRequest.decode(data)
    _agree(MintRequest, data)


def test_limits_checked_before_reading() -> None:
    # A list count above its limit is refused before any item is read.
    data = struct.pack("<I", 2**32 - 1)
    with pytest.raises(MalformedInput, match=r"records: \d+ items, more than"):
        LogVerifyRequest.decode(data)
    # A length above a field's limit is refused before its bytes are read.
    data = struct.pack("<I", 2**32 - 1) + struct.pack("<Q", 0)
    with pytest.raises(MalformedInput, match="more than the"):
        InstallPolicyRequest.decode(data)
    # u8 limits: allowed is 0 or 1; a presence byte is 0 or 1.
    good = MESSAGES[7].encode()
    with pytest.raises(MalformedInput, match="allowed: must be at most 1"):
        MintReply.decode(b"\x02" + good[1:])
    with pytest.raises(MalformedInput, match="rule: presence byte must be 0 or 1"):
        MintReply.decode(good[:1] + b"\x02" + good[2:])
    # Text is UTF-8.
    bad = MintReply(
        allowed=0, rule="ab", policy_version=0, policy_digest=None, reasons=(), token=None
    ).encode()
    bad = bad.replace(b"ab", b"\xff\xfe")
    with pytest.raises(MalformedInput, match="rule: not UTF-8"):
        MintReply.decode(bad)
    _agree(MintReply, bad)


def test_odd_values_encode_as_the_reference_does() -> None:
    """Values the compiled encoder does not take go to the reference encoder."""
    reply = MintReply(
        allowed=True,
        rule=None,
        policy_version=0,
        policy_digest=None,
        reasons=(),
        token=bytearray(b"t" * 304),  # type: ignore[arg-type]
    )
    assert reply.encode() == reply.encode_reference()
    with pytest.raises(MalformedInput, match="32-byte field"):
        InstallPolicyReply(sealed=b"", version=1, digest=b"short").encode()


def test_error_replies() -> None:
    # Messages are cut to MAX_TEXT UTF-8 bytes (not characters), at a character boundary, so
    # that the host can read them (a 2-byte character per position used to overflow the limit).
    reply = decode_reply(
        Call.MINT, encode_error(MalformedInput("é" * (MAX_TEXT + 5), detail=["ü" * MAX_TEXT]))
    )
    assert isinstance(reply, CallError)
    assert reply.message == "é" * (MAX_TEXT // 2)
    assert reply.detail == ("ü" * (MAX_TEXT // 2),)
    assert reply.index is None
    ok = decode_reply(Call.ADVANCE, encode_ok(AdvanceReply(counter=1)))
    assert ok == AdvanceReply(counter=1)
    with pytest.raises(MalformedInput, match="empty"):
        decode_reply(Call.MINT, b"")


@pytest.mark.parametrize(
    "message",
    [m for m in MESSAGES if type(m) in REPLIES.values()],
    ids=lambda m: type(m).__name__,
)
def test_ok_reply_decodes_after_its_status_byte(message: Message) -> None:
    """``encode_ok`` puts the status byte before the encoding; ``decode_reply`` reads the
    reply from offset 1 of the same buffer, with the same checks (a trailing byte refused)."""
    data = encode_ok(message)
    assert data == b"\x00" + message.encode_reference()
    assert decode_reply(message.CALL, data) == message
    with pytest.raises(MalformedInput, match="trailing bytes"):
        decode_reply(message.CALL, data + b"\x00")
    if len(data) > 1:
        with pytest.raises(MalformedInput):
            decode_reply(message.CALL, data[:-1])


# -- MINT's fixed-layout codecs (the hot call) against the general codec ---------------------------


def _mutations(data: bytes, seed: str) -> list[bytes]:
    """Every truncation, a trailing byte, and 300 random flips, insertions and deletions."""
    out = [data[:end] for end in range(len(data))] + [data + b"\x00"]
    rng = random.Random(seed)
    for _ in range(300):
        buf = bytearray(data)
        for _edit in range(rng.randint(1, 3)):
            op = rng.randrange(3)
            pos = rng.randrange(len(buf) + 1)
            if op == 0 and pos < len(buf):
                buf[pos] = rng.choice((0, 1, 2, 0x20, 0x7F, 0x80, 0xFF, rng.randrange(256)))
            elif op == 1:
                buf[pos:pos] = bytes([rng.randrange(256)])
            elif pos < len(buf):
                del buf[pos]
        out.append(bytes(buf))
    return out


def _mint_request_fields(data: bytes) -> tuple[bytes, int, int, int]:
    request = MintRequest.decode(data)
    return request.sigstruct, request.flags, request.xfrm, request.now


@pytest.mark.parametrize(
    ("sigstruct", "flags", "xfrm", "now"),
    [
        (bytes(range(256)) * 7 + bytes(16), 0x5, 0x3, 99),
        (b"\xff" * SIGSTRUCT_SIZE, 2**64 - 1, 0, 2**64 - 1),
        (b"x" * 100, 1, 3, 0),  # another length: the general encoder's bytes (refused inside)
        (bytearray(SIGSTRUCT_SIZE), 1, 3, 0),  # not bytes
    ],
)
def test_mint_request_fast_codec_equals_the_general_one(
    sigstruct: bytes, flags: int, xfrm: int, now: int
) -> None:
    data = encode_mint_request(sigstruct, flags, xfrm, now)
    assert data == MintRequest(sigstruct=sigstruct, flags=flags, xfrm=xfrm, now=now).encode()
    for mutated in [data, *_mutations(data, f"request:{len(sigstruct)}")]:
        assert _outcome(decode_mint_request, mutated) == _outcome(_mint_request_fields, mutated)


def test_mint_request_fast_encoder_refuses_what_the_general_one_refuses() -> None:
    with pytest.raises(struct.error):
        MintRequest(sigstruct=bytes(SIGSTRUCT_SIZE), flags=-1, xfrm=0, now=0).encode()
    with pytest.raises(struct.error):
        encode_mint_request(bytes(SIGSTRUCT_SIZE), -1, 0, 0)


@pytest.mark.parametrize(
    ("rule", "version", "digest", "token"),
    [
        ("author", 3, b"\x11" * 32, b"t" * 304),
        ("", 2**64 - 1, bytes(32), bytes(304)),
        ("règle-é", 0, b"\xee" * 32, b"k" * 304),
        ("r" * MAX_TEXT, 1, b"\x01" * 32, b"t" * 304),
        ("short-token", 1, b"\x01" * 32, b"t" * 10),  # the general decoder takes any <= 304
        (None, 1, b"\x01" * 32, b"t" * 304),  # no rule: the general codec
    ],
)
def test_mint_allowed_reply_fast_codec_equals_the_general_one(
    rule: str | None, version: int, digest: bytes, token: bytes
) -> None:
    reply = MintReply(
        allowed=1,
        rule=rule,
        policy_version=version,
        policy_digest=digest,
        reasons=(),
        token=token,
    )
    data = encode_mint_allowed(rule, version, digest, token)
    assert data == encode_ok(reply)
    assert decode_mint_reply(data) == reply
    for mutated in _mutations(data, f"reply:{rule}:{len(token)}"):

        def general(buf: bytes) -> MintReply | CallError:
            decoded = decode_reply(Call.MINT, buf)
            assert isinstance(decoded, MintReply | CallError)
            return decoded

        assert _outcome(decode_mint_reply, mutated) == _outcome(general, mutated)


@pytest.mark.parametrize("message", [m for m in MESSAGES if isinstance(m, MintReply)])
def test_mint_reply_fast_decoder_takes_every_reply(message: MintReply) -> None:
    """Denials and error replies go through the general decoder, with its outcome."""
    data = encode_ok(message)
    assert decode_mint_reply(data) == message
    error = encode_error(MalformedInput("bad sigstruct", detail=["d"]))
    assert decode_mint_reply(error) == decode_reply(Call.MINT, error)


@pytest.mark.parametrize(
    "builder",
    [ecalls._mint_allowed_reply_by_layout, ecalls._mint_allowed_reply_by_setters],
)
def test_mint_allowed_reply_builders_make_the_frozen_class_s_object(builder: Any) -> None:
    """Both ways of building the allowed reply give what ``MintReply(...)`` gives: the class
    itself, every field, equality and hash, and an object that stays frozen."""
    args = ("author", 7, b"\x33" * 32, b"k" * 304)
    expected = MintReply(1, args[0], args[1], args[2], (), args[3])
    built = builder(*args)
    assert type(built) is MintReply
    assert built == expected and hash(built) == hash(expected)
    assert [getattr(built, n) for n in MintReply.__slots__] == [
        getattr(expected, n) for n in MintReply.__slots__
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.token = b""  # type: ignore[misc]
    assert ecalls._mint_allowed_reply is ecalls._mint_allowed_reply_by_layout  # CPython takes it


def test_mint_allowed_reply_falls_back_when_the_layout_builder_differs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refused(*_args: Any) -> MintReply:
        raise TypeError("__class__ assignment: layouts differ")

    def wrong(rule: str, version: int, digest: bytes, token: bytes) -> MintReply:
        return MintReply(1, rule, version + 1, digest, (), token)

    for broken in (refused, wrong):
        monkeypatch.setattr(ecalls, "_mint_allowed_reply_by_layout", broken)
        assert ecalls._pick_mint_allowed_reply() is ecalls._mint_allowed_reply_by_setters
