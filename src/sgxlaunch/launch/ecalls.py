"""The launch enclave's ECALL contract: one frozen request and one frozen reply type per call,
a compact binary encoding, and errors by code.

The untrusted host calls the launch enclave with ``ECALL(function, bytes)`` and gets bytes back.
Every request and reply type lists its fields in ``FIELDS`` as ``(name, kind, limit)``; the
encoding is the fields in that order, little-endian, with no tags and no padding:

=========== ================================================================================
kind        encoding
=========== ================================================================================
``u8``      1 byte (booleans are ``u8`` 0 / 1; any other value is refused)
``u64``     8 bytes
``b32``     32 bytes
``bytes``   u32 length ≤ limit, then the bytes
``opt``     u8 0 (absent) or 1 then as ``bytes``
``opt32``   u8 0 or 1 then 32 bytes
``str``     as ``bytes``, UTF-8
``optstr``  as ``opt``, UTF-8
``list``    u32 count ≤ limit, then each item as ``bytes`` (each ≤ :data:`MAX_ITEM`)
``strs``    as ``list``, each item UTF-8
=========== ================================================================================

A reply starts with one status byte: 0, then the reply type's fields; or an
:class:`ErrorCode`, then ``message`` (str), ``detail`` (strs) and ``index`` (u64; 2**64 − 1
when absent, used by :data:`ErrorCode.LOG_TAMPERED`). Decoding is strict: every length is
checked against its limit before anything is read, the input must be consumed exactly, and
every failure is a :class:`~sgxlaunch.errors.MalformedInput` naming the call and the field.
Times travel as whole seconds since the Unix epoch (``u64``).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import FrozenInstanceError, dataclass, fields
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

from sgxlaunch import errors as _errors
from sgxlaunch.errors import MalformedInput, SgxlaunchError

MAX_DOCUMENT = 16 << 20
"""Largest signed document carried by a request (a policy envelope of 10 000 rules is ~2 MiB)."""
MAX_SEALED = 64 << 10
MAX_ITEM = 64 << 10
MAX_RECORDS = 1 << 20
MAX_TEXT = 4096
SIGSTRUCT_SIZE = 1808
TOKEN_SIZE = 304
TARGETINFO_SIZE = 512
REPORT_SIZE = 432
CONFIGID_SIZE = 64
MAX_NONCE = 64
NO_INDEX = 2**64 - 1

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class Call(enum.IntEnum):
    """The launch enclave's ECALLs (see :mod:`sgxlaunch.launch.enclave` for what each does)."""

    LOAD = 0
    INSTALL_POLICY = 1
    MINT = 2
    LOG_APPEND = 3
    LOG_VERIFY = 4
    NOTE_MODE = 5
    ADVANCE = 6
    LOG_ATTEST = 7
    GRANT = 8
    # protected code (issue 20; numbered from 16, apart from the launch-control calls)
    LE_KEY = 16
    ADD_CODE_KEY = 17
    RELEASE_CHALLENGE = 18
    RELEASE = 19
    CLAIM = 20


class ErrorCode(enum.IntEnum):
    """Why a call failed; the host raises the matching :mod:`sgxlaunch.errors` class."""

    MALFORMED = 1
    USAGE = 2
    VERIFICATION = 3
    SIGNATURE = 4
    QUOTIENT = 5
    EXPIRED = 6
    ROLLBACK = 7
    THRESHOLD = 8
    PLATFORM_MISMATCH = 9
    LOG_TAMPERED = 10
    POLICY_DENIED = 11


_ERROR_CLASSES: tuple[tuple[ErrorCode, type[SgxlaunchError]], ...] = (
    # most specific first: the first isinstance match names the code
    (ErrorCode.SIGNATURE, _errors.SignatureInvalid),
    (ErrorCode.QUOTIENT, _errors.QuotientInvalid),
    (ErrorCode.EXPIRED, _errors.Expired),
    (ErrorCode.ROLLBACK, _errors.Rollback),
    (ErrorCode.THRESHOLD, _errors.ThresholdNotMet),
    (ErrorCode.PLATFORM_MISMATCH, _errors.PlatformMismatch),
    (ErrorCode.VERIFICATION, _errors.VerificationFailed),
    (ErrorCode.MALFORMED, _errors.MalformedInput),
    (ErrorCode.USAGE, _errors.UsageError),
    (ErrorCode.POLICY_DENIED, _errors.PolicyDenied),
)


def error_code(exc: SgxlaunchError) -> ErrorCode:
    """The code for ``exc`` (log tampering is told apart by the caller: it carries an index)."""
    for code, cls in _ERROR_CLASSES:
        if isinstance(exc, cls):
            return code
    return ErrorCode.USAGE


def error_class(code: int) -> type[SgxlaunchError]:
    """The exception class for a code (an unknown code is a verification failure)."""
    for known, cls in _ERROR_CLASSES:
        if known == code:
            return cls
    return _errors.VerificationFailed


def to_seconds(when: datetime) -> int:
    if when.tzinfo is not None:
        return int(when.timestamp())  # an aware time's timestamp does not depend on its zone
    return int(when.astimezone(UTC).timestamp())


def from_seconds(seconds: int, name: str = "now") -> datetime:
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise MalformedInput(f"launch-enclave call: {name} is out of range") from None


class _Reader:
    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def fail(self, name: str, why: str) -> MalformedInput:
        return MalformedInput(f"{self.what}: {name}: {why}", field=name, offset=self.pos)

    def take(self, n: int, name: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise self.fail(name, f"truncated (needs {n} bytes)")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def u8(self, name: str) -> int:
        return self.take(1, name)[0]

    def u32(self, name: str) -> int:
        return int(_U32.unpack(self.take(4, name))[0])

    def u64(self, name: str) -> int:
        return int(_U64.unpack(self.take(8, name))[0])

    def flag(self, name: str) -> bool:
        value = self.u8(name)
        if value > 1:
            raise self.fail(name, f"presence byte must be 0 or 1, found {value}")
        return value == 1

    def blob(self, name: str, limit: int) -> bytes:
        n = self.u32(name)
        if n > limit:
            raise self.fail(name, f"{n} bytes, more than the {limit}-byte limit")
        return self.take(n, name)

    def text(self, name: str, limit: int) -> str:
        raw = self.blob(name, limit)
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise self.fail(name, "not UTF-8") from None


def _read(r: _Reader, name: str, kind: str, limit: int) -> Any:
    if kind == "u8":
        value = r.u8(name)
        if limit and value > limit:
            raise r.fail(name, f"must be at most {limit}, found {value}")
        return value
    if kind == "u64":
        return r.u64(name)
    if kind == "b32":
        return r.take(32, name)
    if kind == "bytes":
        return r.blob(name, limit)
    if kind == "fixed":
        n = r.u32(name)
        if n != limit:
            raise r.fail(name, f"must be {limit} bytes, found {n}")
        return r.take(n, name)
    if kind == "opt":
        return r.blob(name, limit) if r.flag(name) else None
    if kind == "opt32":
        return r.take(32, name) if r.flag(name) else None
    if kind == "str":
        return r.text(name, limit)
    if kind == "optstr":
        return r.text(name, limit) if r.flag(name) else None
    if kind in ("list", "strs"):
        count = r.u32(name)
        if count > limit:
            raise r.fail(name, f"{count} items, more than {limit}")
        if kind == "list":
            return tuple(r.blob(f"{name}[{i}]", MAX_ITEM) for i in range(count))
        return tuple(r.text(f"{name}[{i}]", MAX_TEXT) for i in range(count))
    raise AssertionError(kind)  # pragma: no cover - the FIELDS tables are fixed


def _blob(out: list[bytes], data: bytes) -> None:
    out.append(_U32.pack(len(data)))
    out.append(data)


def _write(out: list[bytes], kind: str, value: Any) -> None:
    if kind == "u8":
        out.append(bytes((int(value),)))
    elif kind == "u64":
        out.append(_U64.pack(value))
    elif kind == "b32":
        if len(value) != 32:
            raise MalformedInput("a 32-byte field has another length")
        out.append(bytes(value))
    elif kind in ("bytes", "fixed"):
        _blob(out, bytes(value))
    elif kind in ("opt", "opt32", "optstr"):
        if value is None:
            out.append(b"\x00")
        else:
            out.append(b"\x01")
            if kind == "opt32":
                out.append(bytes(value))
            else:
                _blob(out, value.encode() if kind == "optstr" else bytes(value))
    elif kind == "str":
        _blob(out, value.encode())
    elif kind in ("list", "strs"):
        out.append(_U32.pack(len(value)))
        for item in value:
            _blob(out, item.encode() if kind == "strs" else bytes(item))
    else:  # pragma: no cover - the FIELDS tables are fixed
        raise AssertionError(kind)


class _Refused(Exception):
    """Internal to the compiled codec: the fast path met a value it does not take; the
    reference codec (which names the field, or encodes the odd value as it always did) runs."""


_FIXED_KINDS = ("u8", "u64", "b32", "fixed")
_FIXED_FORMATS = {"u8": "B", "u64": "Q", "b32": "32s"}


def _take_blob(data: bytes, at: int, limit: int) -> tuple[bytes, int]:
    start = at + 4
    if start > len(data):
        raise _Refused
    (n,) = _U32.unpack_from(data, at)
    end = start + n
    if n > limit or end > len(data):
        raise _Refused
    return data[start:end], end


def _take_text(data: bytes, at: int, limit: int) -> tuple[str, int]:
    raw, end = _take_blob(data, at, limit)
    try:
        return raw.decode(), end
    except UnicodeDecodeError:
        raise _Refused from None


def _blob_lines(out: list[str], var: str, limit: int, text: bool, pad: str) -> None:
    """Decoder source: a u32 length (at most ``limit``) and that many bytes into ``var``."""
    out += [
        f"{pad}start = at + 4",
        f"{pad}if start > size: raise _Refused",
        f"{pad}(n,) = _u32(data, at)",
        f"{pad}if n > {limit}: raise _Refused",
        f"{pad}at = start + n",
        f"{pad}if at > size: raise _Refused",
        f"{pad}{var} = data[start:at]" + (".decode()" if text else ""),
    ]


def _generate(
    cls: type[Message],
) -> tuple[Callable[[bytes, int], Any], Callable[[Any, bytes], bytes]]:
    """The compiled codec of one message type: ``decode(data, at)`` (the message encoded in
    ``data[at:]``, nothing after it) and ``encode(message, head)`` (``head`` then the
    encoding), generated as straight-line Python from the FIELDS table, with the same checks
    as :func:`_read`, in the same order (limits before reads, exact length). Consecutive
    fixed-width fields are one ``struct.Struct``. Both raise :class:`_Refused` where the
    reference codec must run (it names the field, or encodes the odd value as it always
    did)."""
    namespace: dict[str, Any] = {
        "_Refused": _Refused,
        "_cls": cls,
        "_u32": _U32.unpack_from,
        "_pack32": _U32.pack,
        "_take_blob": _take_blob,
        "_take_text": _take_text,
        "_struct_error": struct.error,
    }
    dec = ["def decode(data, at):", " try:", "  size = len(data)"]
    enc = ["def encode(m, head):", " out = [head]", " try:", "  pass"]
    values: list[str] = []
    fields = cls.FIELDS
    i = 0
    while i < len(fields):
        if fields[i][1] in _FIXED_KINDS:
            run: list[tuple[int, str, str, int]] = []
            while i < len(fields) and fields[i][1] in _FIXED_KINDS:
                name, kind, limit = fields[i]
                run.append((i, name, kind, limit))
                i += 1
            fmt = "<" + "".join(
                f"I{limit}s" if kind == "fixed" else _FIXED_FORMATS[kind]
                for _i, _n, kind, limit in run
            )
            packer = struct.Struct(fmt)
            struct_name = f"_s{len(namespace)}"
            namespace[struct_name] = packer
            targets: list[str] = []
            checks: list[str] = []
            pack_args: list[str] = []
            for index, name, kind, limit in run:
                var = f"v{index}"
                values.append(var)
                enc.append(f"  {var} = m.{name}")
                if kind == "fixed":
                    targets += [f"n{index}", var]
                    checks.append(f"  if n{index} != {limit}: raise _Refused")
                    enc.append(f"  if len({var}) != {limit}: raise _Refused")
                    pack_args += [str(limit), var]
                    continue
                targets.append(var)
                pack_args.append(var)
                if kind == "u8" and limit:
                    checks.append(f"  if {var} > {limit}: raise _Refused")
                elif kind == "b32":
                    enc.append(f"  if len({var}) != 32: raise _Refused")
            dec += [
                f"  end = at + {packer.size}",
                "  if end > size: raise _Refused",
                f"  ({', '.join(targets)},) = {struct_name}.unpack_from(data, at)",
                *checks,
                "  at = end",
            ]
            enc.append(f"  out.append({struct_name}.pack({', '.join(pack_args)}))")
            continue
        name, kind, limit = fields[i]
        var = f"v{i}"
        values.append(var)
        i += 1
        text = kind in ("str", "optstr", "strs")
        enc.append(f"  {var} = m.{name}")
        if kind in ("opt", "opt32", "optstr"):
            dec += [
                "  if at >= size: raise _Refused",
                "  present = data[at]",
                "  if present > 1: raise _Refused",
                "  at += 1",
                "  if not present:",
                f"   {var} = None",
                "  else:",
            ]
            if kind == "opt32":
                dec += ["   end = at + 32", "   if end > size: raise _Refused"]
                dec += [f"   {var} = data[at:end]", "   at = end"]
            else:
                _blob_lines(dec, var, limit, text, "   ")
            enc += [f"  if {var} is None:", "   out.append(b'\\x00')", "  else:"]
            if kind == "opt32":
                enc += [
                    f"   if {var}.__class__ is not bytes or len({var}) != 32: raise _Refused",
                    f"   out += (b'\\x01', {var})",
                ]
            else:
                typ = "str" if text else "bytes"
                enc.append(f"   if {var}.__class__ is not {typ}: raise _Refused")
                if text:
                    enc.append(f"   {var} = {var}.encode()")
                enc.append(f"   out += (b'\\x01', _pack32(len({var})), {var})")
        elif kind in ("bytes", "str"):
            _blob_lines(dec, var, limit, text, "  ")
            typ = "str" if text else "bytes"
            enc.append(f"  if {var}.__class__ is not {typ}: raise _Refused")
            if text:
                enc.append(f"  {var} = {var}.encode()")
            enc.append(f"  out += (_pack32(len({var})), {var})")
        elif kind in ("list", "strs"):
            take = "_take_text" if text else "_take_blob"
            item_limit = MAX_TEXT if text else MAX_ITEM
            dec += [
                "  start = at + 4",
                "  if start > size: raise _Refused",
                "  (n,) = _u32(data, at)",
                f"  if n > {limit}: raise _Refused",
                "  items = []",
                "  for _ in range(n):",
                f"   item, start = {take}(data, start, {item_limit})",
                "   items.append(item)",
                f"  {var} = tuple(items)",
                "  at = start",
            ]
            typ = "str" if text else "bytes"
            enc += [
                f"  out.append(_pack32(len({var})))",
                f"  for item in {var}:",
                f"   if item.__class__ is not {typ}: raise _Refused",
            ]
            if text:
                enc.append("   item = item.encode()")
            enc.append("   out += (_pack32(len(item)), item)")
        else:  # pragma: no cover - the FIELDS tables are fixed
            raise AssertionError(kind)
    dec += [
        "  if at != size: raise _Refused",
        " except UnicodeDecodeError:",
        "  raise _Refused from None",
        f" return _cls({', '.join(values)})",
    ]
    enc += [
        " except _struct_error:",
        "  raise _Refused from None",
        " return b''.join(out)",
    ]
    exec("\n".join(dec), namespace)  # noqa: S102 - source generated above from FIELDS only
    exec("\n".join(enc), namespace)  # noqa: S102
    return namespace["decode"], namespace["encode"]


class Message:
    """Base of every request and reply: ``FIELDS`` drives the codec.

    Each message type's codec is compiled once from its table (:func:`_generate`): the
    encoder and decoder are straight-line code without per-field dispatch on the kind.
    Whenever the compiled decoder refuses its input, the reference decoder (:func:`_read` per
    field, which names the field and why) parses it again and raises; whenever the compiled
    encoder meets a value it does not take, the reference encoder (:func:`_write` per field)
    encodes it. The two are kept equal by a differential test (``tests/launch/test_ecalls.py``).
    """

    __slots__ = ()

    FIELDS: ClassVar[tuple[tuple[str, str, int], ...]] = ()
    CALL: ClassVar[Call]
    _DECODE: ClassVar[Callable[[bytes, int], Any]]
    _ENCODE: ClassVar[Callable[[Any, bytes], bytes]]

    def encode(self, head: bytes = b"") -> bytes:
        """The encoding, after ``head`` (a reply's status byte)."""
        try:
            return self.__class__._ENCODE(self, head)
        except _Refused:
            return head + self.encode_reference()

    def encode_reference(self) -> bytes:
        """The encoding, field by field (:func:`_write`)."""
        out: list[bytes] = []
        for name, kind, _limit in self.FIELDS:
            _write(out, kind, getattr(self, name))
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes, at: int = 0) -> Self:
        """Parse ``data[at:]`` strictly (limits before reads, exact length).

        Raises:
            MalformedInput: naming the call and the field.
        """
        if data.__class__ is not bytes:
            data = bytes(data)
        try:
            message: Self = cls._DECODE(data, at)
        except _Refused:
            cls.decode_reference(data[at:])  # raises, naming the field
            raise MalformedInput(  # pragma: no cover - the two decoders agree (tested)
                f"launch-enclave {cls.__name__}: refused"
            ) from None
        return message

    @classmethod
    def decode_reference(cls, data: bytes) -> Self:
        """Parse field by field (:func:`_read`), naming the field at fault.

        Raises:
            MalformedInput: naming the call and the field.
        """
        r = _Reader(bytes(data), f"launch-enclave {cls.__name__}")
        values = {name: _read(r, name, kind, limit) for name, kind, limit in cls.FIELDS}
        if r.pos != len(r.data):
            raise r.fail("(end)", f"{len(r.data) - r.pos} trailing bytes")
        return cls(**values)


def _check_fields(cls: type[Message]) -> type[Message]:
    """Check that the dataclass's fields are ``FIELDS`` in order, and compile the codec."""
    names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    assert names == tuple(name for name, _k, _l in cls.FIELDS), cls.__name__
    decode, encode = _generate(cls)
    cls._DECODE = staticmethod(decode)
    cls._ENCODE = staticmethod(encode)
    return cls


# -- LOAD ----------------------------------------------------------------------------------------


@_check_fields
@dataclass(frozen=True, slots=True)
class LoadRequest(Message):
    """LOAD: the owner root, the stored documents and sealed state, the host's time.

    The platform id is not an input: the enclave reads it from the machine."""

    CALL = Call.LOAD
    FIELDS = (
        ("root", "bytes", MAX_DOCUMENT),
        ("policy", "opt", MAX_DOCUMENT),
        ("mode", "opt", MAX_DOCUMENT),
        ("sealed", "opt", MAX_SEALED),
        ("handover", "opt", MAX_SEALED),
        ("recovery", "opt", MAX_DOCUMENT),
        ("now", "u64", 0),
    )
    root: bytes
    policy: bytes | None
    mode: bytes | None
    sealed: bytes | None
    handover: bytes | None
    recovery: bytes | None
    now: int


@_check_fields
@dataclass(frozen=True, slots=True)
class LoadReply(Message):
    CALL = Call.LOAD
    FIELDS = (
        ("counter", "u64", 0),
        ("policy_version", "u64", 0),
        ("mode_version", "u64", 0),
        ("log_count", "u64", 0),
        ("log_head", "b32", 0),
        ("handed_over", "opt32", 0),
        ("sealed", "opt", MAX_SEALED),
        ("record", "opt", MAX_ITEM),
    )
    counter: int
    policy_version: int
    mode_version: int
    log_count: int
    log_head: bytes
    handed_over: bytes | None
    sealed: bytes | None
    record: bytes | None = None
    """A new log segment's epoch record (record 0), to store with ``sealed`` before ADVANCE."""


# -- INSTALL_POLICY ------------------------------------------------------------------------------


@_check_fields
@dataclass(frozen=True, slots=True)
class InstallPolicyRequest(Message):
    CALL = Call.INSTALL_POLICY
    FIELDS = (("policy", "bytes", MAX_DOCUMENT), ("now", "u64", 0))
    policy: bytes
    now: int


@_check_fields
@dataclass(frozen=True, slots=True)
class InstallPolicyReply(Message):
    CALL = Call.INSTALL_POLICY
    FIELDS = (("sealed", "bytes", MAX_SEALED), ("version", "u64", 0), ("digest", "b32", 0))
    sealed: bytes
    version: int
    digest: bytes


# -- MINT ----------------------------------------------------------------------------------------


@_check_fields
@dataclass(frozen=True, slots=True)
class MintRequest(Message):
    """MINT: a SIGSTRUCT (all 1 808 bytes) and the SECS attributes the enclave will run with."""

    CALL = Call.MINT
    FIELDS = (
        ("sigstruct", "fixed", SIGSTRUCT_SIZE),
        ("flags", "u64", 0),
        ("xfrm", "u64", 0),
        ("now", "u64", 0),
    )
    sigstruct: bytes
    flags: int
    xfrm: int
    now: int


@_check_fields
@dataclass(frozen=True, slots=True)
class MintReply(Message):
    """The decision; ``reasons`` as (rule, field, expected, found) quadruples flattened, with
    "" for an absent rule; ``token`` only when allowed."""

    CALL = Call.MINT
    FIELDS = (
        ("allowed", "u8", 1),
        ("rule", "optstr", MAX_TEXT),
        ("policy_version", "u64", 0),
        ("policy_digest", "opt32", 0),
        ("reasons", "strs", 4 * 1024),
        ("token", "opt", TOKEN_SIZE),
    )
    allowed: int
    rule: str | None
    policy_version: int
    policy_digest: bytes | None
    reasons: tuple[str, ...]
    token: bytes | None

    def reason_dicts(self) -> list[dict[str, Any]]:
        """The reasons as dicts (rule, field, expected, found)."""
        return _quadruples(self.reasons, "MintReply")


# MINT is the hot call (one per launch, tens of thousands a second from the daemon): its request
# and its allowed reply have one fixed layout each, packed and unpacked here in one struct call
# without building the message objects. Each function gives exactly the bytes (or fields) of the
# general codec and hands anything else to it (tests/launch/test_ecalls.py compares them).
_MINT_REQUEST = struct.Struct(f"<I{SIGSTRUCT_SIZE}sQQQ")
MINT_REQUEST_SIZE = _MINT_REQUEST.size
"""An encoded MINT request: length prefix, SIGSTRUCT, FLAGS, XFRM, NOW (u64 each)."""
_MINT_HEAD = _U32.pack(SIGSTRUCT_SIZE)
_MINT_REQUEST_FIELDS = struct.Struct(f"<4x{SIGSTRUCT_SIZE}sQQQ")
"""The request after its length prefix (:data:`_MINT_HEAD`, compared in place)."""
_MINT_ALLOWED_TAIL = struct.Struct("<QB32sIBI")
"""After the rule: policy_version, policy_digest present (1) and its 32 bytes, no reasons (0),
token present (1) and its length."""


def encode_mint_request(sigstruct: bytes, flags: int, xfrm: int, now: int) -> bytes:
    """``MintRequest(sigstruct=…, flags=…, xfrm=…, now=…).encode()``."""
    if sigstruct.__class__ is bytes and len(sigstruct) == SIGSTRUCT_SIZE:
        try:
            return _MINT_REQUEST.pack(SIGSTRUCT_SIZE, sigstruct, flags, xfrm, now)
        except struct.error:
            pass  # a value out of range: the general encoder says what it says about it
    return MintRequest(sigstruct=sigstruct, flags=flags, xfrm=xfrm, now=now).encode()


def _slot_setter(name: str) -> Callable[[MintReply, Any], None]:
    setter: Callable[[MintReply, Any], None] = getattr(MintReply, name).__set__
    return setter


_SET_MINT_REPLY = tuple(map(_slot_setter, (name for name, _kind, _limit in MintReply.FIELDS)))


def _mint_allowed_reply_by_setters(
    rule: str, version: int, digest: bytes, token: bytes
) -> MintReply:
    """``MintReply(1, rule, version, digest, (), token)``: the same frozen object, its slots
    set directly (the generated ``__init__`` goes through ``object.__setattr__`` per field)."""
    reply: MintReply = object.__new__(MintReply)
    s_allowed, s_rule, s_version, s_digest, s_reasons, s_token = _SET_MINT_REPLY
    s_allowed(reply, 1)
    s_rule(reply, rule)
    s_version(reply, version)
    s_digest(reply, digest)
    s_reasons(reply, ())
    s_token(reply, token)
    return reply


class _MintReplySlots(Message):
    """MintReply's slots in MintReply's layout (same base, same slot names in the same order),
    without its frozen ``__setattr__``: an allowed reply's fields are stored here with plain
    attribute stores and the object then becomes a :class:`MintReply` by ``__class__``
    assignment, which CPython allows only between classes of the same layout (it raises
    ``TypeError`` otherwise; checked at import, see :data:`_mint_allowed_reply`)."""

    __slots__ = MintReply.__slots__


def _mint_allowed_reply_by_layout(
    rule: str, version: int, digest: bytes, token: bytes
) -> MintReply:
    """``MintReply(1, rule, version, digest, (), token)``, built as :class:`_MintReplySlots`."""
    reply: Any = _MintReplySlots()  # object.__init__ only: cheaper than object.__new__(cls)
    reply.allowed = 1
    reply.rule = rule
    reply.policy_version = version
    reply.policy_digest = digest
    reply.reasons = ()
    reply.token = token
    reply.__class__ = MintReply
    built: MintReply = reply
    return built


def _pick_mint_allowed_reply() -> Callable[[str, int, bytes, bytes], MintReply]:
    """The layout builder when it gives exactly what the frozen class's own ``__init__`` gives
    (type, every field, equality, still frozen), the slot setters otherwise."""
    args = ("rule", 2, b"\x22" * 32, b"t" * TOKEN_SIZE)
    expected = MintReply(1, args[0], args[1], args[2], (), args[3])
    try:
        built = _mint_allowed_reply_by_layout(*args)
        same = (
            type(built) is MintReply
            and built == expected
            and all(getattr(built, n) == getattr(expected, n) for n in MintReply.__slots__)
        )
        try:
            built.token = b""  # type: ignore[misc]  # still frozen: this must refuse
        except FrozenInstanceError:
            pass
        else:
            same = False
    except TypeError:  # a layout CPython does not let the object change to
        same = False
    return _mint_allowed_reply_by_layout if same else _mint_allowed_reply_by_setters


_mint_allowed_reply = _pick_mint_allowed_reply()


_last_allowed_head: tuple[bytes, str, int, bytes] = (b"", "", 0, b"")
"""(bytes before the token, rule, policy_version, policy_digest) of the last allowed reply
:func:`decode_mint_reply` parsed in full: a reply that is those exact bytes followed by
:data:`TOKEN_SIZE` bytes parses to the same fields and that token."""


def decode_mint_reply(data: bytes) -> MintReply | CallError:
    """``decode_reply(Call.MINT, data)``, with the allowed reply's layout (status 0, allowed,
    a rule, the policy digest, no reasons, a whole token) parsed in one struct call, or
    recognised by the exact bytes before its token (those of the last one parsed).

    Raises:
        MalformedInput: the reply is not one (names the field).
    """
    global _last_allowed_head
    head, rule, version, digest = _last_allowed_head
    if len(data) == len(head) + TOKEN_SIZE and head and data.startswith(head):
        return _mint_allowed_reply(rule, version, digest, data[len(head) :])
    if data[:3] == b"\x00\x01\x01" and len(data) >= 7:
        (size,) = _U32.unpack_from(data, 3)
        end = 7 + size
        if size <= MAX_TEXT and len(data) == end + _MINT_ALLOWED_TAIL.size + TOKEN_SIZE:
            version, digest_present, digest, reasons, token_present, token_size = (
                _MINT_ALLOWED_TAIL.unpack_from(data, end)
            )
            if (digest_present, reasons, token_present, token_size) == (1, 0, 1, TOKEN_SIZE):
                try:
                    rule = data[7:end].decode()
                except UnicodeDecodeError:
                    pass  # the general decoder names the field
                else:
                    end += _MINT_ALLOWED_TAIL.size
                    _last_allowed_head = (data[:end], rule, version, digest)
                    return _mint_allowed_reply(rule, version, digest, data[end:])
    reply = decode_reply(Call.MINT, data)
    assert isinstance(reply, (MintReply, CallError))
    return reply


def decode_mint_request(data: bytes) -> tuple[bytes, int, int, int]:
    """The fields (sigstruct, flags, xfrm, now) of an encoded :class:`MintRequest`, parsed as
    strictly as :meth:`MintRequest.decode` (which parses, and raises for, anything but the one
    valid layout).

    Raises:
        MalformedInput: naming the field.
    """
    if data.__class__ is bytes and len(data) == MINT_REQUEST_SIZE and data.startswith(_MINT_HEAD):
        return _MINT_REQUEST_FIELDS.unpack(data)  # SIGSTRUCT, FLAGS, XFRM, NOW
    request = MintRequest.decode(data)
    return request.sigstruct, request.flags, request.xfrm, request.now


def mint_allowed_head(rule: str | None, policy_version: int, policy_digest: bytes) -> bytes | None:
    """The encoded allowed :class:`MintReply` (status byte first) up to its token, for a token
    of :data:`TOKEN_SIZE` bytes: ``encode_mint_allowed(rule, policy_version, policy_digest,
    token) == head + token``. ``None`` when a value needs the general encoder."""
    if (
        not isinstance(rule, str)
        or policy_digest.__class__ is not bytes
        or len(policy_digest) != 32
    ):
        return None
    name = rule.encode()
    try:
        tail = _MINT_ALLOWED_TAIL.pack(policy_version, 1, policy_digest, 0, 1, TOKEN_SIZE)
    except struct.error:
        return None
    return b"".join((b"\x00\x01\x01", _U32.pack(len(name)), name, tail))


def encode_mint_allowed(
    rule: str | None, policy_version: int, policy_digest: bytes, token: bytes
) -> bytes:
    """``encode_ok(MintReply(allowed=1, rule=rule, policy_version=…, policy_digest=…,
    reasons=(), token=token))``."""
    if token.__class__ is bytes and len(token) == TOKEN_SIZE:
        head = mint_allowed_head(rule, policy_version, policy_digest)
        if head is not None:
            return head + token
    return encode_ok(
        MintReply(
            allowed=1,
            rule=rule,
            policy_version=policy_version,
            policy_digest=policy_digest,
            reasons=(),
            token=token,
        )
    )


# -- LOG_APPEND / LOG_VERIFY ---------------------------------------------------------------------


@_check_fields
@dataclass(frozen=True, slots=True)
class LogAppendRequest(Message):
    """LOG_APPEND: the record's facts as canonical JSON (an object; bounded)."""

    CALL = Call.LOG_APPEND
    FIELDS = (("facts", "bytes", MAX_ITEM), ("now", "u64", 0))
    facts: bytes
    now: int


@_check_fields
@dataclass(frozen=True, slots=True)
class LogAppendReply(Message):
    CALL = Call.LOG_APPEND
    FIELDS = (("record", "bytes", MAX_ITEM), ("sealed", "bytes", MAX_SEALED))
    record: bytes
    sealed: bytes


@_check_fields
@dataclass(frozen=True, slots=True)
class LogVerifyRequest(Message):
    CALL = Call.LOG_VERIFY
    FIELDS = (("records", "list", MAX_RECORDS),)
    records: tuple[bytes, ...]


@_check_fields
@dataclass(frozen=True, slots=True)
class LogVerifyReply(Message):
    CALL = Call.LOG_VERIFY
    FIELDS = (("count", "u64", 0),)
    count: int


@_check_fields
@dataclass(frozen=True, slots=True)
class LogAttestRequest(Message):
    """LOG_ATTEST: the collector's nonce and the TARGETINFO of the enclave the REPORT is for
    (the quoting enclave). The platform id is not an input: the enclave reads it from the
    machine."""

    CALL = Call.LOG_ATTEST
    FIELDS = (("nonce", "bytes", MAX_NONCE), ("targetinfo", "fixed", TARGETINFO_SIZE))
    nonce: bytes
    targetinfo: bytes


@_check_fields
@dataclass(frozen=True, slots=True)
class LogAttestReply(Message):
    """The REPORT (REPORTDATA binds the nonce, the platform id and the committed log head)
    and the head it attests."""

    CALL = Call.LOG_ATTEST
    FIELDS = (("report", "fixed", REPORT_SIZE), ("count", "u64", 0), ("head", "b32", 0))
    report: bytes
    count: int
    head: bytes


# -- NOTE_MODE / ADVANCE -------------------------------------------------------------------------


@_check_fields
@dataclass(frozen=True, slots=True)
class NoteModeRequest(Message):
    """NOTE_MODE: a signed platform-mode document (the platform id comes from the machine)."""

    CALL = Call.NOTE_MODE
    FIELDS = (("mode", "bytes", MAX_DOCUMENT), ("now", "u64", 0))
    mode: bytes
    now: int


@_check_fields
@dataclass(frozen=True, slots=True)
class NoteModeReply(Message):
    CALL = Call.NOTE_MODE
    FIELDS = (
        ("sealed", "bytes", MAX_SEALED),
        ("handover", "opt", MAX_SEALED),
        ("counter", "u64", 0),
    )
    sealed: bytes
    handover: bytes | None
    counter: int


@_check_fields
@dataclass(frozen=True, slots=True)
class AdvanceRequest(Message):
    CALL = Call.ADVANCE
    FIELDS = ()


@_check_fields
@dataclass(frozen=True, slots=True)
class AdvanceReply(Message):
    CALL = Call.ADVANCE
    FIELDS = (("counter", "u64", 0),)
    counter: int


# -- GRANT ---------------------------------------------------------------------------------------


@_check_fields
@dataclass(frozen=True, slots=True)
class GrantRequest(Message):
    """GRANT (attested-code, issue 17): what the driver knows of the instance (CONFIGID it
    wrote at ECREATE, MRENCLAVE), the page range, the one-time challenge it issued, and what
    user space handed it (the code hash and the enclave's REPORT)."""

    CALL = Call.GRANT
    FIELDS = (
        ("configid", "fixed", CONFIGID_SIZE),
        ("mrenclave", "b32", 0),
        ("offset", "u64", 0),
        ("length", "u64", 0),
        ("challenge", "b32", 0),
        ("code_hash", "b32", 0),
        ("report", "fixed", REPORT_SIZE),
        ("now", "u64", 0),
    )
    configid: bytes
    mrenclave: bytes
    offset: int
    length: int
    challenge: bytes
    code_hash: bytes
    report: bytes
    now: int


@_check_fields
@dataclass(frozen=True, slots=True)
class GrantReply(Message):
    """The verdict (``allowed``; the rule and reasons as MINT's), the launch-log record the
    enclave made of it and its sealed next state. A granted verdict reaches the driver only at
    the ADVANCE that commits the record."""

    CALL = Call.GRANT
    FIELDS = (
        ("allowed", "u8", 1),
        ("rule", "optstr", MAX_TEXT),
        ("reasons", "strs", 4 * 1024),
        ("record", "bytes", MAX_ITEM),
        ("sealed", "bytes", MAX_SEALED),
    )
    allowed: int
    rule: str | None
    reasons: tuple[str, ...]
    record: bytes
    sealed: bytes


# -- protected code: LE_KEY / ADD_CODE_KEY / RELEASE_CHALLENGE / RELEASE / CLAIM ----------------

X25519_SIZE = 32
MAX_WRAPPED = 16 << 10
"""Largest wrapped code key (the release constraint and the box) a request carries."""


@_check_fields
@dataclass(frozen=True, slots=True)
class LeKeyRequest(Message):
    """LE_KEY: the key-agreement key's sealed blob from the home (absent: make one), and an
    optional TARGETINFO (the quoting enclave's) for a REPORT binding the public key."""

    CALL = Call.LE_KEY
    FIELDS = (("sealed", "opt", MAX_SEALED), ("targetinfo", "opt", TARGETINFO_SIZE))
    sealed: bytes | None
    targetinfo: bytes | None


@_check_fields
@dataclass(frozen=True, slots=True)
class LeKeyReply(Message):
    """The X25519 public key; ``sealed`` only when the key was made by this call (the host
    stores it); ``report`` only when a TARGETINFO was given."""

    CALL = Call.LE_KEY
    FIELDS = (
        ("public_key", "b32", 0),
        ("sealed", "opt", MAX_SEALED),
        ("report", "opt", REPORT_SIZE),
    )
    public_key: bytes
    sealed: bytes | None
    report: bytes | None


@_check_fields
@dataclass(frozen=True, slots=True)
class AddCodeKeyRequest(Message):
    """ADD_CODE_KEY: a wrapped code key (``pcl wrap``) and the key-agreement key's sealed blob."""

    CALL = Call.ADD_CODE_KEY
    FIELDS = (
        ("wrapped", "bytes", MAX_WRAPPED),
        ("le_key", "bytes", MAX_SEALED),
        ("now", "u64", 0),
    )
    wrapped: bytes
    le_key: bytes
    now: int


@_check_fields
@dataclass(frozen=True, slots=True)
class AddCodeKeyReply(Message):
    """The key id, the release constraint (canonical JSON), the code key sealed with the
    MRENCLAVE policy (the host stores it), and the log record with the sealed state that
    commits it (stored, then ADVANCE)."""

    CALL = Call.ADD_CODE_KEY
    FIELDS = (
        ("key_id", "b32", 0),
        ("constraint", "bytes", MAX_WRAPPED),
        ("code_key", "bytes", MAX_SEALED),
        ("record", "bytes", MAX_ITEM),
        ("sealed", "bytes", MAX_SEALED),
    )
    key_id: bytes
    constraint: bytes
    code_key: bytes
    record: bytes
    sealed: bytes


@_check_fields
@dataclass(frozen=True, slots=True)
class ReleaseChallengeRequest(Message):
    CALL = Call.RELEASE_CHALLENGE
    FIELDS = ()


@_check_fields
@dataclass(frozen=True, slots=True)
class ReleaseChallengeReply(Message):
    """A fresh one-time challenge and the launch enclave's TARGETINFO (for the requester's
    EREPORT)."""

    CALL = Call.RELEASE_CHALLENGE
    FIELDS = (("challenge", "b32", 0), ("targetinfo", "fixed", TARGETINFO_SIZE))
    challenge: bytes
    targetinfo: bytes


@_check_fields
@dataclass(frozen=True, slots=True)
class ReleaseRequest(Message):
    """RELEASE: the requester's REPORT (targeted at the launch enclave), its ephemeral X25519
    public key, the challenge and key id it asks under, and the code key's sealed blob from
    the home (absent when the home has none under that id)."""

    CALL = Call.RELEASE
    FIELDS = (
        ("report", "fixed", REPORT_SIZE),
        ("ephemeral_key", "b32", 0),
        ("challenge", "b32", 0),
        ("key_id", "b32", 0),
        ("code_key", "opt", MAX_SEALED),
        ("now", "u64", 0),
    )
    report: bytes
    ephemeral_key: bytes
    challenge: bytes
    key_id: bytes
    code_key: bytes | None
    now: int


@_check_fields
@dataclass(frozen=True, slots=True)
class ReleaseReply(Message):
    """The decision (``released``; ``by_policy`` 1 when the owner's policy refused), the rule
    that decided, the reasons as (rule, field, expected, found) quadruples flattened, and the
    log record with the sealed state that commits it. The boxed key is not here: CLAIM gives
    it once the record is committed."""

    CALL = Call.RELEASE
    FIELDS = (
        ("released", "u8", 1),
        ("by_policy", "u8", 1),
        ("rule", "optstr", MAX_TEXT),
        ("policy_version", "u64", 0),
        ("reasons", "strs", 4 * 64),
        ("record", "bytes", MAX_ITEM),
        ("sealed", "bytes", MAX_SEALED),
    )
    released: int
    by_policy: int
    rule: str | None
    policy_version: int
    reasons: tuple[str, ...]
    record: bytes
    sealed: bytes

    def reason_dicts(self) -> list[dict[str, Any]]:
        """The reasons as dicts (rule, field, expected, found)."""
        return _quadruples(self.reasons, "ReleaseReply")


@_check_fields
@dataclass(frozen=True, slots=True)
class ClaimRequest(Message):
    CALL = Call.CLAIM
    FIELDS = ()


@_check_fields
@dataclass(frozen=True, slots=True)
class ClaimReply(Message):
    """The code key boxed to the requester's ephemeral key (given once, after ADVANCE
    committed the release record)."""

    CALL = Call.CLAIM
    FIELDS = (("boxed", "bytes", MAX_ITEM),)
    boxed: bytes


def _quadruples(items: tuple[str, ...], what: str) -> list[dict[str, Any]]:
    if len(items) % 4:
        raise MalformedInput(f"launch-enclave {what}: reasons are not quadruples")
    return [
        {
            "rule": items[i] or None,
            "field": items[i + 1],
            "expected": items[i + 2],
            "found": items[i + 3],
        }
        for i in range(0, len(items), 4)
    ]


REQUESTS: dict[Call, type[Message]] = {
    Call.LOAD: LoadRequest,
    Call.INSTALL_POLICY: InstallPolicyRequest,
    Call.MINT: MintRequest,
    Call.LOG_APPEND: LogAppendRequest,
    Call.LOG_VERIFY: LogVerifyRequest,
    Call.NOTE_MODE: NoteModeRequest,
    Call.ADVANCE: AdvanceRequest,
    Call.LOG_ATTEST: LogAttestRequest,
    Call.GRANT: GrantRequest,
    Call.LE_KEY: LeKeyRequest,
    Call.ADD_CODE_KEY: AddCodeKeyRequest,
    Call.RELEASE_CHALLENGE: ReleaseChallengeRequest,
    Call.RELEASE: ReleaseRequest,
    Call.CLAIM: ClaimRequest,
}
REPLIES: dict[Call, type[Message]] = {
    Call.LOAD: LoadReply,
    Call.INSTALL_POLICY: InstallPolicyReply,
    Call.MINT: MintReply,
    Call.LOG_APPEND: LogAppendReply,
    Call.LOG_VERIFY: LogVerifyReply,
    Call.NOTE_MODE: NoteModeReply,
    Call.ADVANCE: AdvanceReply,
    Call.LOG_ATTEST: LogAttestReply,
    Call.GRANT: GrantReply,
    Call.LE_KEY: LeKeyReply,
    Call.ADD_CODE_KEY: AddCodeKeyReply,
    Call.RELEASE_CHALLENGE: ReleaseChallengeReply,
    Call.RELEASE: ReleaseReply,
    Call.CLAIM: ClaimReply,
}


# -- replies ---------------------------------------------------------------------------------


def encode_ok(reply: Message) -> bytes:
    return reply.encode(b"\x00")


def _clip(text: str) -> str:
    """``text`` cut to at most :data:`MAX_TEXT` UTF-8 bytes (at a character boundary)."""
    raw = text.encode()
    return text if len(raw) <= MAX_TEXT else raw[:MAX_TEXT].decode(errors="ignore")


def encode_error(exc: SgxlaunchError, *, index: int | None = None) -> bytes:
    code = ErrorCode.LOG_TAMPERED if index is not None else error_code(exc)
    out: list[bytes] = [bytes((int(code),))]
    _write(out, "str", _clip(exc.message))
    _write(out, "strs", [_clip(d) for d in exc.detail[:64]])
    _write(out, "u64", NO_INDEX if index is None else index)
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class CallError:
    """A decoded error reply."""

    code: int
    message: str
    detail: tuple[str, ...]
    index: int | None


def decode_reply(call: Call, data: bytes) -> Message | CallError:
    """Parse the enclave's reply to ``call``.

    Raises:
        MalformedInput: the reply is not one (names the field).
    """
    if not data:
        raise MalformedInput(f"launch-enclave reply to {call.name} is empty")
    if data[0] == 0:
        return REPLIES[call].decode(data, 1)
    r = _Reader(bytes(data[1:]), f"launch-enclave error reply to {call.name}")
    message = r.text("message", MAX_TEXT)
    count = r.u32("detail")
    if count > 64:
        raise r.fail("detail", f"{count} lines, more than 64")
    detail = tuple(r.text(f"detail[{i}]", MAX_TEXT) for i in range(count))
    index = r.u64("index")
    if r.pos != len(r.data):
        raise r.fail("(end)", "trailing bytes")
    return CallError(data[0], message, detail, None if index == NO_INDEX else index)


__all__ = [
    "MINT_REQUEST_SIZE",
    "REPLIES",
    "REQUESTS",
    "AddCodeKeyReply",
    "AddCodeKeyRequest",
    "AdvanceReply",
    "AdvanceRequest",
    "Call",
    "CallError",
    "ClaimReply",
    "ClaimRequest",
    "ErrorCode",
    "GrantReply",
    "GrantRequest",
    "InstallPolicyReply",
    "InstallPolicyRequest",
    "LeKeyReply",
    "LeKeyRequest",
    "LoadReply",
    "LoadRequest",
    "LogAppendReply",
    "LogAppendRequest",
    "LogAttestReply",
    "LogAttestRequest",
    "LogVerifyReply",
    "LogVerifyRequest",
    "Message",
    "MintReply",
    "MintRequest",
    "NoteModeReply",
    "NoteModeRequest",
    "ReleaseChallengeReply",
    "ReleaseChallengeRequest",
    "ReleaseReply",
    "ReleaseRequest",
    "decode_mint_reply",
    "decode_mint_request",
    "decode_reply",
    "encode_error",
    "encode_mint_allowed",
    "encode_mint_request",
    "encode_ok",
    "error_class",
    "error_code",
    "from_seconds",
    "mint_allowed_head",
    "to_seconds",
]
