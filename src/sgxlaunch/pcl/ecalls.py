"""The decryptor's ECALL contract: one frozen request and one frozen reply type per call.

The decryptor (:mod:`sgxlaunch.pcl.decryptor`) is the measured program every protected
enclave runs first. The untrusted host calls it with ``ECALL(function, bytes)``:

* REQUEST (function 0): TARGETINFO (512) ‖ challenge (32) → REPORT (432) ‖ ephemeral public
  key (32) ‖ key id (32);
* UNLOCK (function 1): box length u32 ‖ box ‖ function u32 ‖ input length u32 ‖ input →
  output length u32 ‖ output;
* CALL (function 2): function u32 ‖ input length u32 ‖ input → output length u32 ‖ output.

REQUEST: the decryptor makes a fresh X25519 key pair, remembers it with the challenge, and
answers with EREPORT targeted at the TARGETINFO (the launch enclave's), REPORTDATA =
:func:`sgxlaunch.pcl.crypto.release_reportdata` (challenge, ephemeral public key, key id).
UNLOCK: the launch enclave's release box (:func:`sgxlaunch.pcl.crypto.seal_box`, domain
``RELEASE_DOMAIN``, AAD = :func:`sgxlaunch.pcl.crypto.release_aad` (challenge, key id)) is
opened with the ephemeral key (used once, then forgotten), K's id is checked, every page of
the protected region is decrypted in place and its tag checked; only then the protected
program runs ECALL ``function`` with ``input`` and its output is returned. CALL: a later ECALL
of the protected program (refused before a successful UNLOCK).

A reply is one status byte: 0 then the body; or an :class:`sgxlaunch.launch.ecalls.ErrorCode`
then message length u32 ‖ message (UTF-8, at most :data:`MAX_TEXT` bytes). Integers are
little-endian; decoding is strict (exact lengths, limits before reads) and raises only
:class:`~sgxlaunch.errors.MalformedInput` naming the call and field.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from sgxlaunch.errors import MalformedInput, SgxlaunchError
from sgxlaunch.launch.ecalls import error_class, error_code
from sgxlaunch.pcl.crypto import (
    CHALLENGE_SIZE,
    KEY_ID_SIZE,
    MAX_BOX,
    PUBLIC_KEY_SIZE,
)

TARGETINFO_SIZE = 512
REPORT_SIZE = 432
MAX_DATA = 16 << 20
"""The largest ECALL input or output carried through the decryptor."""
MAX_TEXT = 4096

_U32 = struct.Struct("<I")


class Call(enum.IntEnum):
    """The decryptor's ECALLs."""

    REQUEST = 0
    UNLOCK = 1
    CALL = 2


class _Reader:
    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data = bytes(data)
        self.pos = 0
        self.what = what

    def take(self, n: int, name: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise MalformedInput(
                f"{self.what}: {name}: truncated (needs {n} bytes)", field=name, offset=self.pos
            )
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def u32(self, name: str) -> int:
        return int(_U32.unpack(self.take(4, name))[0])

    def blob(self, name: str, limit: int) -> bytes:
        n = self.u32(name)
        if n > limit:
            raise MalformedInput(
                f"{self.what}: {name}: {n} bytes, more than the {limit}-byte limit",
                field=name,
                offset=self.pos - 4,
            )
        return self.take(n, name)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise MalformedInput(
                f"{self.what}: {len(self.data) - self.pos} trailing bytes",
                field="(end)",
                offset=self.pos,
            )


def _fixed(name: str, value: bytes, size: int) -> bytes:
    if len(value) != size:
        raise MalformedInput(f"decryptor call: {name} must be {size} bytes", field=name)
    return bytes(value)


@dataclass(frozen=True, slots=True)
class RequestIn:
    """REQUEST's input: the launch enclave's TARGETINFO and its one-time challenge."""

    CALL: ClassVar[Call] = Call.REQUEST
    targetinfo: bytes
    challenge: bytes

    def encode(self) -> bytes:
        return _fixed("targetinfo", self.targetinfo, TARGETINFO_SIZE) + _fixed(
            "challenge", self.challenge, CHALLENGE_SIZE
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = _Reader(data, "decryptor REQUEST")
        out = cls(r.take(TARGETINFO_SIZE, "targetinfo"), r.take(CHALLENGE_SIZE, "challenge"))
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class RequestOut:
    """REQUEST's reply: the REPORT for the launch enclave, the ephemeral public key and the
    protected region's key id (both bound in the REPORT's REPORTDATA)."""

    CALL: ClassVar[Call] = Call.REQUEST
    report: bytes
    ephemeral_public_key: bytes
    key_id: bytes

    def encode(self) -> bytes:
        return (
            _fixed("report", self.report, REPORT_SIZE)
            + _fixed("ephemeral_public_key", self.ephemeral_public_key, PUBLIC_KEY_SIZE)
            + _fixed("key_id", self.key_id, KEY_ID_SIZE)
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = _Reader(data, "decryptor REQUEST reply")
        out = cls(
            r.take(REPORT_SIZE, "report"),
            r.take(PUBLIC_KEY_SIZE, "ephemeral_public_key"),
            r.take(KEY_ID_SIZE, "key_id"),
        )
        r.end()
        return out


@dataclass(frozen=True, slots=True)
class UnlockIn:
    """UNLOCK's input: the launch enclave's release box, then the protected program's first
    ECALL (function and input)."""

    CALL: ClassVar[Call] = Call.UNLOCK
    box: bytes
    function: int
    data: bytes

    def encode(self) -> bytes:
        return (
            _U32.pack(len(self.box))
            + bytes(self.box)
            + _U32.pack(self.function)
            + _U32.pack(len(self.data))
            + bytes(self.data)
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = _Reader(data, "decryptor UNLOCK")
        box = r.blob("box", MAX_BOX)
        function = r.u32("function")
        body = r.blob("data", MAX_DATA)
        r.end()
        return cls(box, function, body)


@dataclass(frozen=True, slots=True)
class CallIn:
    """CALL's input: a later ECALL of the protected program."""

    CALL: ClassVar[Call] = Call.CALL
    function: int
    data: bytes

    def encode(self) -> bytes:
        return _U32.pack(self.function) + _U32.pack(len(self.data)) + bytes(self.data)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = _Reader(data, "decryptor CALL")
        function = r.u32("function")
        body = r.blob("data", MAX_DATA)
        r.end()
        return cls(function, body)


@dataclass(frozen=True, slots=True)
class ProgramOut:
    """UNLOCK's and CALL's reply: the protected program's output."""

    output: bytes

    def encode(self) -> bytes:
        return _U32.pack(len(self.output)) + bytes(self.output)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        r = _Reader(data, "decryptor program reply")
        out = cls(r.blob("output", MAX_DATA))
        r.end()
        return out


def encode_ok(body: bytes) -> bytes:
    """A success reply around an encoded reply body."""
    return b"\x00" + body


def encode_error(exc: SgxlaunchError) -> bytes:
    """An error reply: the code of ``exc``'s class, then its message (clipped)."""
    text = exc.message.encode()[:MAX_TEXT]
    return bytes((int(error_code(exc)),)) + _U32.pack(len(text)) + text


def decode_reply(call: Call, data: bytes) -> bytes:
    """The body of a success reply to ``call``; an error reply is raised as the error it
    names (the matching :mod:`sgxlaunch.errors` class, the decryptor's message).

    Raises:
        MalformedInput: the reply is not one.
        SgxlaunchError: the decryptor's error.
    """
    data = bytes(data)
    if not data:
        raise MalformedInput(f"decryptor reply to {call.name} is empty", field="status")
    if data[0] == 0:
        return data[1:]
    r = _Reader(data[1:], f"decryptor error reply to {call.name}")
    raw = r.blob("message", MAX_TEXT)
    r.end()
    message = raw.decode(errors="replace")
    raise error_class(data[0])(f"the decryptor refused {call.name}: {message}")


__all__ = [
    "REPORT_SIZE",
    "TARGETINFO_SIZE",
    "Call",
    "CallIn",
    "ProgramOut",
    "RequestIn",
    "RequestOut",
    "UnlockIn",
    "decode_reply",
    "encode_error",
    "encode_ok",
]
