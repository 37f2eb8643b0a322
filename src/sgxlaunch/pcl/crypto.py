"""The protected-code loader's cryptography: one public-key box, the domain tags, the key id
and the author's release constraint.

**The box** (both directions use it: the author wraps the code key to the owner's launch
enclave, the launch enclave releases it to a decryptor's ephemeral key). For a recipient
X25519 public key ``R``, a domain tag ``D`` and associated data ``A``:

1. ``e`` := 32 bytes from the caller's random source (RDRAND inside an enclave, the OS
   outside), an X25519 private key; ``E`` := its public key;
2. ``Z`` := X25519(``e``, ``R``) (RFC 7748); an all-zero ``Z`` (``R`` of small order) is
   refused;
3. ``k`` := HKDF-SHA256(IKM = ``Z``, salt = empty, info = ``BOX_INFO`` ‖ u16 len(``D``) ‖
   ``D`` ‖ ``E`` ‖ ``R``, L = 32) (RFC 5869);
4. ``C`` := AES-256-GCM(``k``, nonce = 12 zero bytes, plaintext, AAD = ``A``) (ciphertext ‖
   16-byte tag);
5. box := ``BOX_MAGIC`` (8) ‖ ``E`` (32) ‖ ``C``.

``k`` is used for one message only (``E`` is fresh per box), so the fixed nonce is never
reused under one key. The domain tag separates the two directions (a box made for one cannot
be opened as the other, even by the same private key), and ``E`` ‖ ``R`` in the HKDF info bind
the key to both public keys. Opening recomputes ``k`` with the recipient's private key and
checks the GCM tag over ``C`` and ``A``; a wrong key, other associated data, another domain or
any changed byte fails that one check (:class:`~sgxlaunch.errors.MacInvalid`, which does not
tell the causes apart).

**Domain tags** (fixed ASCII strings, NUL-terminated, all distinct):

* :data:`LE_KEY_REPORTDATA_DOMAIN` — the launch enclave's key-agreement key in its quote:
  REPORTDATA = SHA-256(domain ‖ public key) ‖ 32 zero bytes (:func:`le_key_reportdata`);
* :data:`RELEASE_REPORTDATA_DOMAIN` — a decryptor's key request: REPORTDATA =
  SHA-256(domain ‖ challenge ‖ ephemeral public key ‖ key id) ‖ 32 zero bytes
  (:func:`release_reportdata`);
* :data:`KEY_ID_DOMAIN` — key id = SHA-256(domain ‖ K) (:func:`key_id`);
* :data:`WRAP_DOMAIN` / :data:`RELEASE_DOMAIN` — the box's two directions.

**The release constraint** (:class:`ReleaseConstraint`, 40 bytes): what the author allows to
receive the key — one MRENCLAVE, or one MRSIGNER with one ISVPRODID — never DEBUG, ISVSVN at
least a minimum. It is the associated data of the author's box and travels in clear in the
wrapped-key file (:class:`WrappedKey`), so the launch enclave reads it from authenticated
bytes only.

Nothing here reads files, the clock or the environment; randomness comes from the caller.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

from sgxlaunch.errors import MacInvalid, MalformedInput, UsageError, VerificationFailed

Random = Callable[[int], bytes]
"""A source of random bytes: ``random(n)`` returns ``n`` bytes."""

KEY_SIZE = 32
"""The code key K: AES-256."""
PUBLIC_KEY_SIZE = 32
"""An X25519 public key (RFC 7748, u-coordinate, little-endian)."""
PRIVATE_KEY_SIZE = 32
CHALLENGE_SIZE = 32
"""A launch enclave's one-time release challenge."""
KEY_ID_SIZE = 32
TAG_SIZE = 16
REPORTDATA_SIZE = 64

LE_KEY_REPORTDATA_DOMAIN = b"sgxlaunch pcl le key-agreement key v1\x00"
RELEASE_REPORTDATA_DOMAIN = b"sgxlaunch pcl release request v1\x00"
KEY_ID_DOMAIN = b"sgxlaunch pcl code key id v1\x00"
WRAP_DOMAIN = b"sgxlaunch pcl wrap to launch enclave v1\x00"
RELEASE_DOMAIN = b"sgxlaunch pcl release to decryptor v1\x00"
BOX_INFO = b"sgxlaunch pcl box v1\x00"
"""The fixed prefix of the HKDF info."""
BOX_MAGIC = b"SGXLBOX1"
BOX_OVERHEAD = len(BOX_MAGIC) + PUBLIC_KEY_SIZE + TAG_SIZE
"""A box is this many bytes longer than its plaintext."""
MAX_BOX = 64 << 10
"""The longest box :func:`open_box` parses."""

DOMAINS = (
    LE_KEY_REPORTDATA_DOMAIN,
    RELEASE_REPORTDATA_DOMAIN,
    KEY_ID_DOMAIN,
    WRAP_DOMAIN,
    RELEASE_DOMAIN,
    BOX_INFO,
)
assert len(set(DOMAINS)) == len(DOMAINS)
assert all(d.endswith(b"\x00") and b"\x00" not in d[:-1] for d in DOMAINS)

_U16 = struct.Struct("<H")
_ZERO_NONCE = bytes(12)


def _exact(data: bytes, size: int, what: str) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) != size:
        length = len(data) if isinstance(data, bytes | bytearray | memoryview) else None
        raise MalformedInput(f"{what} must be {size} bytes, found {length}", field=what)
    return bytes(data)


# -- key id and REPORTDATA -------------------------------------------------------------------


def key_id(code_key: bytes) -> bytes:
    """The code key's id: SHA-256(:data:`KEY_ID_DOMAIN` ‖ K) (names K without revealing it).

    Raises:
        MalformedInput: K is not 32 bytes.
    """
    return hashlib.sha256(KEY_ID_DOMAIN + _exact(code_key, KEY_SIZE, "code key")).digest()


def check_key_id(code_key: bytes, expected: bytes) -> None:
    """Check that ``code_key`` has id ``expected`` (constant-time compare).

    Raises:
        VerificationFailed: it has another id (the message names both ids, never the key).
        MalformedInput: a length is wrong.
    """
    found = key_id(code_key)
    expected = _exact(expected, KEY_ID_SIZE, "key id")
    if not hmac.compare_digest(found, expected):
        raise VerificationFailed(
            "key id mismatch: the code key is not the one this image was encrypted with",
            expected=expected.hex(),
            found=found.hex(),
        )


def le_key_reportdata(public_key: bytes) -> bytes:
    """REPORTDATA binding a launch enclave's key-agreement public key:
    SHA-256(:data:`LE_KEY_REPORTDATA_DOMAIN` ‖ public key) ‖ 32 zero bytes."""
    key = _exact(public_key, PUBLIC_KEY_SIZE, "launch-enclave public key")
    return hashlib.sha256(LE_KEY_REPORTDATA_DOMAIN + key).digest() + bytes(32)


def release_reportdata(challenge: bytes, ephemeral_public_key: bytes, code_key_id: bytes) -> bytes:
    """REPORTDATA of a decryptor's key request: SHA-256(:data:`RELEASE_REPORTDATA_DOMAIN` ‖
    challenge (32) ‖ ephemeral public key (32) ‖ key id (32)) ‖ 32 zero bytes."""
    body = (
        RELEASE_REPORTDATA_DOMAIN
        + _exact(challenge, CHALLENGE_SIZE, "challenge")
        + _exact(ephemeral_public_key, PUBLIC_KEY_SIZE, "ephemeral public key")
        + _exact(code_key_id, KEY_ID_SIZE, "key id")
    )
    return hashlib.sha256(body).digest() + bytes(32)


def release_aad(challenge: bytes, code_key_id: bytes) -> bytes:
    """The associated data of the launch enclave's release box: challenge ‖ key id (so a
    release answers exactly one request for exactly one key)."""
    return _exact(challenge, CHALLENGE_SIZE, "challenge") + _exact(
        code_key_id, KEY_ID_SIZE, "key id"
    )


# -- X25519 keys -----------------------------------------------------------------------------


def private_key(random: Random) -> bytes:
    """A fresh X25519 private key (32 bytes from ``random``; clamping happens at use)."""
    raw = random(PRIVATE_KEY_SIZE)
    if len(raw) != PRIVATE_KEY_SIZE:
        raise UsageError(f"the random source returned {len(raw)} bytes, not {PRIVATE_KEY_SIZE}")
    return bytes(raw)


def public_key(private: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    key = X25519PrivateKey.from_private_bytes(_exact(private, PRIVATE_KEY_SIZE, "private key"))
    return key.public_key().public_bytes_raw()


def _box_key(
    private: bytes, peer: bytes, ephemeral: bytes, recipient: bytes, domain: bytes
) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )
    from cryptography.hazmat.primitives.hashes import SHA256
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    try:
        shared = X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(peer)
        )
    except ValueError:
        # cryptography refuses an all-zero shared secret (a small-order public key)
        raise VerificationFailed(
            "the X25519 public key is of small order (no shared secret)"
        ) from None
    if not any(shared):  # pragma: no cover - cryptography already refuses it
        raise VerificationFailed("the X25519 public key is of small order (no shared secret)")
    info = BOX_INFO + _U16.pack(len(domain)) + domain + ephemeral + recipient
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=info).derive(shared)


def _check_domain(domain: bytes) -> None:
    if domain not in (WRAP_DOMAIN, RELEASE_DOMAIN):
        raise UsageError("a box's domain is WRAP_DOMAIN or RELEASE_DOMAIN")


def seal_box(
    recipient_public_key: bytes,
    plaintext: bytes,
    *,
    domain: bytes,
    aad: bytes,
    random: Random,
) -> bytes:
    """Encrypt ``plaintext`` to ``recipient_public_key`` (the module's construction).

    Args:
        recipient_public_key: 32-byte X25519 public key.
        plaintext: at most ``MAX_BOX - BOX_OVERHEAD`` bytes.
        domain: :data:`WRAP_DOMAIN` or :data:`RELEASE_DOMAIN`.
        aad: associated data, authenticated, not encrypted, not carried in the box.
        random: the source of the ephemeral key.

    Raises:
        MalformedInput: the public key is not 32 bytes.
        VerificationFailed: the public key is of small order.
        UsageError: unknown domain; plaintext too long.
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    _check_domain(domain)
    recipient = _exact(recipient_public_key, PUBLIC_KEY_SIZE, "recipient public key")
    if len(plaintext) > MAX_BOX - BOX_OVERHEAD:
        raise UsageError(f"a box holds at most {MAX_BOX - BOX_OVERHEAD} bytes")
    ephemeral_private = private_key(random)
    ephemeral = public_key(ephemeral_private)
    key = _box_key(ephemeral_private, recipient, ephemeral, recipient, domain)
    sealed = AESGCM(key).encrypt(_ZERO_NONCE, bytes(plaintext), bytes(aad))
    return BOX_MAGIC + ephemeral + sealed


def box_ephemeral_key(box: bytes) -> bytes:
    """The sender's ephemeral public key ``E`` in a box (after the structural checks of
    :func:`open_box`).

    Raises:
        MalformedInput: as :func:`open_box`.
    """
    _parse_box(box)
    return bytes(box[len(BOX_MAGIC) : len(BOX_MAGIC) + PUBLIC_KEY_SIZE])


def _parse_box(box: bytes) -> tuple[bytes, bytes]:
    if not isinstance(box, bytes | bytearray | memoryview):
        raise MalformedInput("a box is bytes", field="box")
    box = bytes(box)
    if len(box) > MAX_BOX:
        raise MalformedInput(
            f"box: {len(box)} bytes, more than the {MAX_BOX}-byte limit", field="box"
        )
    if len(box) < BOX_OVERHEAD:
        raise MalformedInput(
            f"box: truncated ({len(box)} bytes, at least {BOX_OVERHEAD} expected)", field="box"
        )
    if box[: len(BOX_MAGIC)] != BOX_MAGIC:
        raise MalformedInput(f"box: bad magic (expected {BOX_MAGIC!r})", field="magic", offset=0)
    at = len(BOX_MAGIC)
    return box[at : at + PUBLIC_KEY_SIZE], box[at + PUBLIC_KEY_SIZE :]


def open_box(private: bytes, box: bytes, *, domain: bytes, aad: bytes) -> bytes:
    """Open a box made by :func:`seal_box` for the public key of ``private``.

    Checks, in order: the box's length (``BOX_OVERHEAD`` to :data:`MAX_BOX`) and magic
    (:class:`MalformedInput`); the sender's ephemeral key is not of small order; the GCM tag
    under the derived key over the ciphertext and ``aad`` (:class:`MacInvalid`).

    Raises:
        MalformedInput: the box is not one (names the field).
        MacInvalid: wrong private key, other ``aad``, other domain or altered bytes.
        VerificationFailed: the ephemeral key is of small order.
        UsageError: unknown domain.
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    _check_domain(domain)
    ephemeral, sealed = _parse_box(box)
    private = _exact(private, PRIVATE_KEY_SIZE, "private key")
    recipient = public_key(private)
    key = _box_key(private, ephemeral, ephemeral, recipient, domain)
    try:
        return AESGCM(key).decrypt(_ZERO_NONCE, sealed, bytes(aad))
    except InvalidTag:
        raise MacInvalid(
            "the box does not open: made for another key, with other associated data, or altered"
        ) from None


# -- the author's release constraint -----------------------------------------------------------

CONSTRAINT_VERSION = 1
CONSTRAINT_BY_MRENCLAVE = 1
CONSTRAINT_BY_MRSIGNER = 2
_CONSTRAINT = struct.Struct("<BB32sHHH")
CONSTRAINT_SIZE = _CONSTRAINT.size
assert CONSTRAINT_SIZE == 40
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DEBUG = 0x2  # ATTRIBUTES.FLAGS.DEBUG (SDM "Attributes"; arch.constants.AttributeFlag.DEBUG)


@dataclass(frozen=True, slots=True)
class ReleaseConstraint:
    """Who may receive the code key, as the author says (DEBUG is always refused).

    Exactly one of ``mrenclave`` or (``mrsigner``, ``isvprodid``) is set.

    Encoding (40 bytes, little-endian): version u8 (1) ‖ kind u8 (1 = MRENCLAVE, 2 =
    MRSIGNER + ISVPRODID) ‖ measurement (32) ‖ ISVPRODID u16 (0 for kind 1) ‖ minimum ISVSVN
    u16 ‖ reserved u16 (0).
    """

    mrenclave: bytes | None
    mrsigner: bytes | None
    isvprodid: int | None
    min_isvsvn: int

    def __post_init__(self) -> None:
        by_enclave = self.mrenclave is not None
        if by_enclave == (self.mrsigner is not None):
            raise UsageError("a release constraint names either mrenclave or mrsigner")
        if by_enclave and self.isvprodid is not None:
            raise UsageError("isvprodid goes with mrsigner, not with mrenclave")
        if not by_enclave and self.isvprodid is None:
            raise UsageError("a release constraint by mrsigner needs isvprodid")
        value = self.mrenclave if by_enclave else self.mrsigner
        if not isinstance(value, bytes) or len(value) != 32:
            raise UsageError("mrenclave / mrsigner is 32 bytes")
        for name, number in (("isvprodid", self.isvprodid or 0), ("min_isvsvn", self.min_isvsvn)):
            if not isinstance(number, int) or not 0 <= number <= 0xFFFF:
                raise UsageError(f"{name} is a 16-bit unsigned integer, found {number!r}")

    @classmethod
    def parse(cls, text: str, min_isvsvn: int) -> ReleaseConstraint:
        """Parse the command-line form: ``mrenclave=<64 hex>`` or
        ``mrsigner=<64 hex>,isvprodid=<n>`` (either order).

        Raises:
            MalformedInput: naming the part at fault (field ``release``).
        """
        parts: dict[str, str] = {}
        for item in text.split(","):
            name, eq, value = item.strip().partition("=")
            name = name.strip().lower()
            if not eq or name not in ("mrenclave", "mrsigner", "isvprodid") or name in parts:
                raise MalformedInput(
                    f"release constraint {text!r}: expected mrenclave=<64 hex> or "
                    "mrsigner=<64 hex>,isvprodid=<n>",
                    field="release",
                )
            parts[name] = value.strip().lower()
        measurement: dict[str, bytes] = {}
        for name in ("mrenclave", "mrsigner"):
            if name in parts:
                if not _HEX64.fullmatch(parts[name]):
                    raise MalformedInput(
                        f"release constraint: {name} must be 64 hex digits", field="release"
                    )
                measurement[name] = bytes.fromhex(parts[name])
        isvprodid = None
        if "isvprodid" in parts:
            raw = parts["isvprodid"]
            if not raw.isdigit() or int(raw) > 0xFFFF:
                raise MalformedInput(
                    "release constraint: isvprodid must be an integer 0..65535", field="release"
                )
            isvprodid = int(raw)
        if len(measurement) != 1 or (("mrsigner" in measurement) != (isvprodid is not None)):
            raise MalformedInput(
                f"release constraint {text!r}: give mrenclave=… alone, or mrsigner=… with "
                "isvprodid=…",
                field="release",
            )
        if not 0 <= min_isvsvn <= 0xFFFF:
            raise MalformedInput("minimum ISVSVN must be 0..65535", field="min_isvsvn")
        return cls(measurement.get("mrenclave"), measurement.get("mrsigner"), isvprodid, min_isvsvn)

    def to_bytes(self) -> bytes:
        if self.mrenclave is not None:
            return _CONSTRAINT.pack(
                CONSTRAINT_VERSION, CONSTRAINT_BY_MRENCLAVE, self.mrenclave, 0, self.min_isvsvn, 0
            )
        assert self.mrsigner is not None and self.isvprodid is not None
        return _CONSTRAINT.pack(
            CONSTRAINT_VERSION,
            CONSTRAINT_BY_MRSIGNER,
            self.mrsigner,
            self.isvprodid,
            self.min_isvsvn,
            0,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ReleaseConstraint:
        """Parse strictly (length, version, kind, ISVPRODID 0 for kind 1, reserved 0).

        Raises:
            MalformedInput: naming the field.
        """
        data = _exact(data, CONSTRAINT_SIZE, "release constraint")
        version, kind, value, isvprodid, min_isvsvn, reserved = _CONSTRAINT.unpack(data)
        where = "release constraint"
        if version != CONSTRAINT_VERSION:
            raise MalformedInput(f"{where}: version {version}, expected 1", field="version")
        if reserved:
            raise MalformedInput(f"{where}: reserved bytes set", field="reserved", offset=38)
        if kind == CONSTRAINT_BY_MRENCLAVE:
            if isvprodid:
                raise MalformedInput(
                    f"{where}: isvprodid must be 0 for a constraint by mrenclave",
                    field="isvprodid",
                    offset=34,
                )
            return cls(value, None, None, min_isvsvn)
        if kind == CONSTRAINT_BY_MRSIGNER:
            return cls(None, value, isvprodid, min_isvsvn)
        raise MalformedInput(f"{where}: unknown kind {kind} (1 or 2)", field="kind", offset=1)

    def check(
        self, *, mrenclave: bytes, mrsigner: bytes, isvprodid: int, isvsvn: int, flags: int
    ) -> None:
        """Check an enclave identity (from a verified REPORT) against the constraint.

        Checks, in order: DEBUG clear; MRENCLAVE (kind 1) or MRSIGNER then ISVPRODID (kind 2);
        ISVSVN ≥ the minimum.

        Raises:
            VerificationFailed: the first check that fails, expected vs found.
        """
        if flags & _DEBUG:
            raise VerificationFailed(
                "the author's release constraint refuses a DEBUG enclave",
                expected="DEBUG = 0",
                found="DEBUG = 1",
            )
        if self.mrenclave is not None:
            if not hmac.compare_digest(self.mrenclave, bytes(mrenclave)):
                raise VerificationFailed(
                    "the author's release constraint names another MRENCLAVE",
                    expected=self.mrenclave.hex(),
                    found=bytes(mrenclave).hex(),
                )
        else:
            assert self.mrsigner is not None
            if not hmac.compare_digest(self.mrsigner, bytes(mrsigner)):
                raise VerificationFailed(
                    "the author's release constraint names another MRSIGNER",
                    expected=self.mrsigner.hex(),
                    found=bytes(mrsigner).hex(),
                )
            if isvprodid != self.isvprodid:
                raise VerificationFailed(
                    "the author's release constraint names another ISVPRODID",
                    expected=str(self.isvprodid),
                    found=str(isvprodid),
                )
        if isvsvn < self.min_isvsvn:
            raise VerificationFailed(
                "the enclave's ISVSVN is below the author's minimum",
                expected=f"ISVSVN >= {self.min_isvsvn}",
                found=str(isvsvn),
            )

    def describe(self) -> dict[str, object]:
        """JSON-ready form."""
        out: dict[str, object] = {"debug": False, "min_isvsvn": self.min_isvsvn}
        if self.mrenclave is not None:
            out["mrenclave"] = self.mrenclave.hex()
        else:
            assert self.mrsigner is not None
            out["mrsigner"] = self.mrsigner.hex()
            out["isvprodid"] = self.isvprodid
        return out

    def text(self) -> str:
        """The command-line form (without the minimum ISVSVN)."""
        if self.mrenclave is not None:
            return f"mrenclave={self.mrenclave.hex()}"
        assert self.mrsigner is not None
        return f"mrsigner={self.mrsigner.hex()},isvprodid={self.isvprodid}"


# -- the wrapped-key file ----------------------------------------------------------------------

WRAPPED_MAGIC = b"SGXLPCLW"
WRAPPED_VERSION = 1
_WRAPPED_HEAD = struct.Struct(f"<8sB{CONSTRAINT_SIZE}s32s32sI")
WRAPPED_HEAD_SIZE = _WRAPPED_HEAD.size
WRAPPED_BOX_SIZE = BOX_OVERHEAD + KEY_SIZE
WRAPPED_SIZE = WRAPPED_HEAD_SIZE + WRAPPED_BOX_SIZE


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """``pcl wrap``'s output: a code key boxed to one launch enclave's key-agreement key.

    Layout (little-endian): magic ``SGXLPCLW`` (8) ‖ version u8 (1) ‖ release constraint
    (40, :class:`ReleaseConstraint`) ‖ key id (32) ‖ the launch enclave's public key (32) ‖
    box length u32 (= 88) ‖ box (:func:`seal_box`, domain :data:`WRAP_DOMAIN`, plaintext K,
    AAD = every byte before the box). Total :data:`WRAPPED_SIZE` bytes.

    The clear fields are authenticated by the box's tag; the launch-enclave public key says
    whose key it is for, so a file wrapped for another platform is refused by name before
    any decryption is tried.
    """

    constraint: ReleaseConstraint
    key_id: bytes
    le_public_key: bytes
    box: bytes

    def head(self) -> bytes:
        """Every byte before the box (the box's associated data)."""
        return _WRAPPED_HEAD.pack(
            WRAPPED_MAGIC,
            WRAPPED_VERSION,
            self.constraint.to_bytes(),
            _exact(self.key_id, KEY_ID_SIZE, "key id"),
            _exact(self.le_public_key, PUBLIC_KEY_SIZE, "launch-enclave public key"),
            len(self.box),
        )

    def to_bytes(self) -> bytes:
        return self.head() + self.box

    @classmethod
    def from_bytes(cls, data: bytes) -> WrappedKey:
        """Parse strictly (exact length, magic, version, constraint, box length and magic).

        Raises:
            MalformedInput: naming the field.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MalformedInput("a wrapped key is bytes")
        data = bytes(data)
        if len(data) != WRAPPED_SIZE:
            raise MalformedInput(
                f"wrapped key: {len(data)} bytes, expected {WRAPPED_SIZE}", field="length"
            )
        magic, version, constraint, kid, le_key, box_len = _WRAPPED_HEAD.unpack_from(data)
        if magic != WRAPPED_MAGIC:
            raise MalformedInput(
                f"wrapped key: bad magic (expected {WRAPPED_MAGIC!r}; not a `pcl wrap` file)",
                field="magic",
                offset=0,
            )
        if version != WRAPPED_VERSION:
            raise MalformedInput(
                f"wrapped key: version {version}, expected {WRAPPED_VERSION}",
                field="version",
                offset=8,
            )
        if box_len != WRAPPED_BOX_SIZE:
            raise MalformedInput(
                f"wrapped key: box length {box_len}, expected {WRAPPED_BOX_SIZE}",
                field="box_length",
                offset=WRAPPED_HEAD_SIZE - 4,
            )
        try:
            parsed = ReleaseConstraint.from_bytes(constraint)
        except MalformedInput as exc:
            exc.offset = 9 + (exc.offset or 0)
            raise
        box = data[WRAPPED_HEAD_SIZE:]
        _parse_box(box)
        return cls(parsed, kid, le_key, box)

    @classmethod
    def wrap(
        cls,
        code_key: bytes,
        le_public_key: bytes,
        constraint: ReleaseConstraint,
        *,
        random: Random,
    ) -> WrappedKey:
        """Box ``code_key`` to ``le_public_key`` with the constraint as associated data."""
        kid = key_id(code_key)
        le_key = _exact(le_public_key, PUBLIC_KEY_SIZE, "launch-enclave public key")
        head = cls(constraint, kid, le_key, bytes(WRAPPED_BOX_SIZE)).head()
        box = seal_box(le_key, code_key, domain=WRAP_DOMAIN, aad=head, random=random)
        return cls(constraint, kid, le_key, box)

    def unwrap(self, le_private_key: bytes) -> bytes:
        """The code key, inside the launch enclave.

        Checks, in order: the file is for this key (its public key equals the private key's,
        :class:`VerificationFailed` "wrapped for another launch enclave"); the box opens with
        the head as associated data (:class:`MacInvalid`); the key has the file's key id
        (:class:`VerificationFailed`).
        """
        mine = public_key(le_private_key)
        if not hmac.compare_digest(mine, self.le_public_key):
            raise VerificationFailed(
                "the code key was wrapped for another launch enclave (another platform, or "
                "another key-agreement key)",
                expected=mine.hex(),
                found=self.le_public_key.hex(),
            )
        code_key = open_box(le_private_key, self.box, domain=WRAP_DOMAIN, aad=self.head())
        check_key_id(code_key, self.key_id)
        return code_key


__all__ = [
    "BOX_MAGIC",
    "BOX_OVERHEAD",
    "CHALLENGE_SIZE",
    "CONSTRAINT_SIZE",
    "KEY_ID_DOMAIN",
    "KEY_ID_SIZE",
    "KEY_SIZE",
    "LE_KEY_REPORTDATA_DOMAIN",
    "MAX_BOX",
    "PUBLIC_KEY_SIZE",
    "RELEASE_DOMAIN",
    "RELEASE_REPORTDATA_DOMAIN",
    "WRAPPED_SIZE",
    "WRAP_DOMAIN",
    "Random",
    "ReleaseConstraint",
    "WrappedKey",
    "box_ephemeral_key",
    "check_key_id",
    "key_id",
    "le_key_reportdata",
    "open_box",
    "private_key",
    "public_key",
    "release_aad",
    "release_reportdata",
    "seal_box",
]
