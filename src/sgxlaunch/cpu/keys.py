"""Key derivation of the emulated processor: one ``derive_key()`` for EINIT, EGETKEY, EREPORT.

The SDM calls ``derivekey(TMP_KEYDEPENDENCIES)`` without defining it or the layout of the
dependency structure. This module is our documented, deterministic construction:

* **Fused secrets.** From the platform seed (at least 16 bytes) the processor derives

  - the *root key* (16 bytes) = ``SHA-256("sgxlaunch.cpu/root-key/v1" ‖ 0x00 ‖ seed)[0:16]``,
  - ``CR_SEAL_FUSES`` (16 bytes) = ``SHA-256("sgxlaunch.cpu/seal-fuses/v1" ‖ 0x00 ‖ seed)[0:16]``,

  so the same seed rebuilds the same CPU and two seeds give two CPUs.
* **Dependencies.** :class:`KeyDependencies` serializes the fields in the order the SDM's
  EINIT/EGETKEY pseudocode assigns them, each at a fixed width, integers little-endian:

  ======================  =====  ==========================
  field                   bytes  notes
  ======================  =====  ==========================
  KEYNAME                 2
  ISVFAMILYID             16
  ISVEXTPRODID            16
  ISVPRODID               2
  ISVSVN                  2
  SGXOWNEREPOCH           16     CR_SGXOWNEREPOCH
  ATTRIBUTES              16     FLAGS u64 ‖ XFRM u64
  ATTRIBUTESMASK          16
  MRENCLAVE               32
  MRSIGNER                32
  KEYID                   32
  SEAL_KEY_FUSES          16
  CPUSVN                  16
  MISCSELECT              4
  MISCMASK                4
  PADDING                 352    HARDCODED_PKCS1_5_PADDING or SECS.PADDING
  KEYPOLICY               2
  CONFIGID                64
  CONFIGSVN               2
  CET_ATTRIBUTES          1
  CET_ATTRIBUTES_MASK     1
  ======================  =====  ==========================

  (644 bytes in all.)
* **Derivation.** ``key = AES-128-CMAC(root key, dependencies)`` — 16 bytes.

AES-128-CMAC (:func:`cmac128`) runs in the optional native module ``sgxlaunch.cpu._cmac``
(AES-NI; NIST SP 800-38B) when it is built and the processor has AES-NI, and through
`cryptography` otherwise. The native one is used only after it gave the RFC 4493 §4 tags and
`cryptography`'s on the same inputs at import (:data:`NATIVE_CMAC` tells which);
tests/cpu/test_cmac_native.py compares the two on random keys and lengths. Without it, a
:class:`FusedSecrets` prepares the CMAC under its root key once (the AES key schedule) and copies
that prepared state for each derivation; the result is the same CMAC.
"""

from __future__ import annotations

import hashlib
import operator
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from sgxlaunch.arch.constants import HARDCODED_PKCS1_5_PADDING, KeyName
from sgxlaunch.errors import UsageError

_DEPS = struct.Struct("<H16s16sHH16sQQQQ32s32s32s16s16sII352sH64sHBB")
KEY_DEPENDENCIES_SIZE = _DEPS.size
assert KEY_DEPENDENCIES_SIZE == 644


def _label(label: str, seed: bytes) -> bytes:
    return hashlib.sha256(label.encode() + b"\x00" + seed).digest()


def root_key_from_seed(seed: bytes) -> bytes:
    """The 16-byte root key every ``derive_key()`` call is keyed with."""
    if len(seed) < 16:
        raise UsageError("the platform seed must be at least 16 bytes")
    return _label("sgxlaunch.cpu/root-key/v1", seed)[:16]


def seal_fuses_from_seed(seed: bytes) -> bytes:
    """``CR_SEAL_FUSES``: 16 bytes, per CPU."""
    if len(seed) < 16:
        raise UsageError("the platform seed must be at least 16 bytes")
    return _label("sgxlaunch.cpu/seal-fuses/v1", seed)[:16]


@dataclass(frozen=True, slots=True)
class FusedSecrets:
    """The secrets fused into one CPU: the root key every derivation is keyed with, and
    ``CR_SEAL_FUSES``. Made from the platform seed (:meth:`from_seed`)."""

    root_key: bytes
    seal_fuses: bytes
    _root_mac: CMAC = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_root_mac", CMAC(algorithms.AES(self.root_key)))

    @classmethod
    def from_seed(cls, seed: bytes) -> FusedSecrets:
        """Raises :class:`UsageError` for a seed shorter than 16 bytes."""
        return cls(root_key_from_seed(seed), seal_fuses_from_seed(seed))

    def derive(self, dependencies: KeyDependencies) -> bytes:
        """``derive_key`` under this CPU's root key (from the prepared CMAC state)."""
        return self.derive_bytes(dependencies.to_bytes())

    def derive_bytes(self, dependencies: bytes) -> bytes:
        """``derive_key`` of dependencies already serialized (644 bytes: the output of
        :meth:`KeyDependencies.to_bytes` or :func:`einittoken_dependencies`)."""
        if _NATIVE_CMAC is not None:
            return _NATIVE_CMAC(self.root_key, dependencies)
        mac = self._root_mac.copy()
        mac.update(dependencies)
        return mac.finalize()


@dataclass(slots=True, kw_only=True)
class KeyDependencies:
    """``TMP_KEYDEPENDENCIES``: every input of a derived key (fields in SDM order).

    A temporary, as in the SDM's pseudocode: built for one derivation and then dropped (not
    frozen: a frozen dataclass of 23 fields costs four times as much to build, on every
    EGETKEY, EREPORT and EINIT)."""

    keyname: int
    isvfamilyid: bytes = bytes(16)
    isvextprodid: bytes = bytes(16)
    isvprodid: int = 0
    isvsvn: int = 0
    sgxownerepoch: bytes = bytes(16)
    attributes_flags: int = 0
    attributes_xfrm: int = 0
    attributesmask_flags: int = 0
    attributesmask_xfrm: int = 0
    mrenclave: bytes = bytes(32)
    mrsigner: bytes = bytes(32)
    keyid: bytes = bytes(32)
    seal_key_fuses: bytes = bytes(16)
    cpusvn: bytes = bytes(16)
    miscselect: int = 0
    miscmask: int = 0
    padding: bytes = HARDCODED_PKCS1_5_PADDING
    keypolicy: int = 0
    configid: bytes = bytes(64)
    configsvn: int = 0
    cet_attributes: int = 0
    cet_attributes_mask: int = 0

    def to_bytes(self) -> bytes:
        """The fixed-width little-endian serialization (644 bytes) that is CMACed.

        Raises:
            UsageError: a field does not have its exact width.
        """
        if tuple(map(len, _BYTE_FIELDS(self))) != _BYTE_WIDTHS:
            for name, width in zip(_BYTE_NAMES, _BYTE_WIDTHS, strict=True):
                if len(getattr(self, name)) != width:
                    raise UsageError(f"key dependency {name} must be {width} bytes")
        return _DEPS.pack(
            self.keyname,
            self.isvfamilyid,
            self.isvextprodid,
            self.isvprodid,
            self.isvsvn,
            self.sgxownerepoch,
            self.attributes_flags,
            self.attributes_xfrm,
            self.attributesmask_flags,
            self.attributesmask_xfrm,
            self.mrenclave,
            self.mrsigner,
            self.keyid,
            self.seal_key_fuses,
            self.cpusvn,
            self.miscselect,
            self.miscmask,
            self.padding,
            self.keypolicy,
            self.configid,
            self.configsvn,
            self.cet_attributes,
            self.cet_attributes_mask,
        )


_BYTE_NAMES = (
    "isvfamilyid",
    "isvextprodid",
    "sgxownerepoch",
    "mrenclave",
    "mrsigner",
    "keyid",
    "seal_key_fuses",
    "cpusvn",
    "padding",
    "configid",
)
_BYTE_WIDTHS = (16, 16, 16, 32, 32, 32, 16, 16, 352, 64)
_BYTE_FIELDS = operator.attrgetter(*_BYTE_NAMES)


_EINITTOKEN_KEYNAME = int(KeyName.EINITTOKEN)
EINITTOKEN_DEPENDENCIES = struct.Struct("<H32xHH16sQQ16x32x32s32s16s16sI4x352s2x64x2x2x")
"""The dependencies of an EINITTOKEN_KEY packed in one step: the 644-byte layout with the fields
such a key leaves at zero as pad bytes (``x`` packs zeros: ISVFAMILYID, ISVEXTPRODID,
ATTRIBUTESMASK, MRENCLAVE, MISCMASK, KEYPOLICY, CONFIGID, CONFIGSVN, CET_ATTRIBUTES(_MASK)).
Its values: KEYNAME, ISVPRODID, ISVSVN, SGXOWNEREPOCH, ATTRIBUTES (FLAGS, XFRM), MRSIGNER, KEYID,
SEAL_KEY_FUSES, CPUSVN, MISCSELECT, PADDING. ``struct`` pads or truncates a byte field of another
width silently: callers pass fields that have their widths by construction, or use
:func:`einittoken_dependencies`, which checks them."""
assert EINITTOKEN_DEPENDENCIES.size == KEY_DEPENDENCIES_SIZE


def einittoken_dependencies(
    *,
    isvprodid: int,
    isvsvn: int,
    sgxownerepoch: bytes,
    attributes_flags: int,
    attributes_xfrm: int,
    mrsigner: bytes,
    keyid: bytes,
    seal_key_fuses: bytes,
    cpusvn: bytes,
    miscselect: int,
    padding: bytes,
) -> bytes:
    """The serialized dependencies of an EINITTOKEN_KEY (EGETKEY and EINIT): exactly
    ``KeyDependencies(keyname=EINITTOKEN, <these fields>).to_bytes()``, packed in one step
    (every other field at its zero default), for the launch enclave's per-token derivation.

    Raises:
        UsageError: a byte field does not have its exact width.
    """
    if (
        len(sgxownerepoch) != 16
        or len(mrsigner) != 32
        or len(keyid) != 32
        or len(seal_key_fuses) != 16
        or len(cpusvn) != 16
        or len(padding) != 352
    ):
        return KeyDependencies(  # names the field at fault
            keyname=_EINITTOKEN_KEYNAME,
            isvprodid=isvprodid,
            isvsvn=isvsvn,
            sgxownerepoch=sgxownerepoch,
            attributes_flags=attributes_flags,
            attributes_xfrm=attributes_xfrm,
            mrsigner=mrsigner,
            keyid=keyid,
            seal_key_fuses=seal_key_fuses,
            cpusvn=cpusvn,
            miscselect=miscselect,
            padding=padding,
        ).to_bytes()
    return EINITTOKEN_DEPENDENCIES.pack(
        _EINITTOKEN_KEYNAME,
        isvprodid,
        isvsvn,
        sgxownerepoch,
        attributes_flags,
        attributes_xfrm,
        mrsigner,
        keyid,
        seal_key_fuses,
        cpusvn,
        miscselect,
        padding,
    )


def cmac128_reference(key: bytes, data: bytes) -> bytes:
    """AES-128-CMAC of ``data`` (16 bytes) through `cryptography`: :func:`cmac128` when the
    native module is not in use, and what the native one is checked against.

    Raises:
        ValueError: ``key`` is not 16 bytes (``algorithms.AES128``, which takes only those:
            the same cipher as ``algorithms.AES`` with a 128-bit key).
    """
    mac = CMAC(algorithms.AES128(key))
    mac.update(data)
    return mac.finalize()


_RFC4493_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
_RFC4493_MESSAGE = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
)
RFC4493_EXAMPLES = (
    (0, "bb1d6929e95937287fa37d129b756746"),
    (16, "070a16b46b4d4144f79bdd9dd04a287c"),
    (40, "dfa66747de9ae63030ca32611497c827"),
    (64, "51f0bebf7e3b9d92fc49741779363cfe"),
)
"""RFC 4493 §4, Examples 1-4: (message length, tag) under :data:`_RFC4493_KEY` for the first
bytes of :data:`_RFC4493_MESSAGE`."""


def rfc4493_example(length: int) -> tuple[bytes, bytes]:
    """The key and message of the RFC 4493 §4 example whose message is ``length`` bytes."""
    return _RFC4493_KEY, _RFC4493_MESSAGE[:length]


def _native_cmac() -> Callable[[bytes, bytes], bytes] | None:
    """The native AES-NI CMAC, if it is built, loads on this processor and gives the RFC 4493
    tags and `cryptography`'s on the same inputs."""
    try:
        from sgxlaunch.cpu._cmac import cmac128 as native
    except ImportError:
        return None
    checked: Callable[[bytes, bytes], bytes] = native
    for length, tag in RFC4493_EXAMPLES:
        key, message = rfc4493_example(length)
        want = bytes.fromhex(tag)
        if checked(key, message) != want or cmac128_reference(key, message) != want:
            return None
    return checked


_NATIVE_CMAC = _native_cmac()
NATIVE_CMAC: bool = _NATIVE_CMAC is not None
"""True when :func:`cmac128` (and every key derivation) runs in the native module."""

cmac128: Callable[[bytes, bytes], bytes] = _NATIVE_CMAC or cmac128_reference
"""AES-128-CMAC of ``data`` (16 bytes): ``cmac128(key, data)``, ``key`` 16 bytes (``ValueError``
otherwise), ``data`` any bytes-like object. Native when :data:`NATIVE_CMAC`, otherwise
:func:`cmac128_reference`."""


NativeEinittokenKey = Callable[
    [bytes, bytes, bytes, bytes, bytes, int, int, int, int, bytes, int, bytes], "bytes | None"
]


def _native_einittoken_key() -> NativeEinittokenKey | None:
    """The native EGETKEY success case for EINITTOKEN_KEY (``_cmac.einittoken_key``), if the
    native CMAC is in use and it derives what :data:`EINITTOKEN_DEPENDENCIES` and
    :func:`cmac128_reference` derive for a sample request."""
    if _NATIVE_CMAC is None:
        return None
    try:
        from sgxlaunch.cpu._cmac import einittoken_key
    except ImportError:  # a module built from an older _cmac.c
        return None

    root, fuses, epoch, cpusvn = (bytes([b]) * 16 for b in (1, 2, 3, 4))
    keyid, mrsigner, padding = bytes(range(32)), bytes([5]) * 32, bytes([6]) * 352
    request = struct.pack("<HHH2x16sQQ32sIH434x", 0, 0, 1, cpusvn, 0xFF, 0x7, keyid, 0xFF, 0)
    # the SECS: ATTRIBUTES 0x25 (EINITTOKEN_KEY, INIT, PROVISIONKEY), XFRM 3, ISVPRODID 9,
    # ISVSVN 2, MISCSELECT 1; the request: ATTRIBUTEMASK 0xFF/7, ISVSVN 1, MISCMASK 0xFF
    flags, xfrm = (0xFF | 0x3) & 0x25, 0x7 & 0x3
    deps = EINITTOKEN_DEPENDENCIES.pack(
        0, 9, 1, epoch, flags, xfrm, mrsigner, keyid, fuses, cpusvn, 0xFF & 1, padding
    )
    want = cmac128_reference(root, deps)
    got = einittoken_key(request, root, fuses, epoch, cpusvn, 0x25, 3, 9, 2, mrsigner, 1, padding)
    return einittoken_key if got == want else None


NATIVE_EINITTOKEN_KEY: NativeEinittokenKey | None = _native_einittoken_key()
"""``einittoken_key(keyrequest, root_key, seal_fuses, owner_epoch, cpu_cpusvn, attributes,
xfrm, isvprodid, isvsvn, mrsigner, miscselect, padding)``: EGETKEY's key for KEYNAME =
EINITTOKEN_KEY in its plain success case, or ``None`` for anything else (the Python leaf then
runs from the start); ``None`` itself when the native module is not in use. Used by
:meth:`sgxlaunch.cpu.enclave.Enclu.egetkey`; tests/cpu/test_cmac_native.py compares the two."""


def derive_key(root_key: bytes, dependencies: KeyDependencies) -> bytes:
    """The SDM's ``derivekey()``: AES-128-CMAC(root key, serialized dependencies).

    Args:
        root_key: the CPU's 16-byte root key (:func:`root_key_from_seed`).
        dependencies: the key-dependency fields EINIT / EGETKEY / EREPORT assembled.

    Returns:
        The 16-byte derived key.
    """
    return cmac128(root_key, dependencies.to_bytes())


__all__ = [
    "EINITTOKEN_DEPENDENCIES",
    "KEY_DEPENDENCIES_SIZE",
    "NATIVE_CMAC",
    "NATIVE_EINITTOKEN_KEY",
    "KeyDependencies",
    "cmac128",
    "cmac128_reference",
    "derive_key",
    "einittoken_dependencies",
    "root_key_from_seed",
    "seal_fuses_from_seed",
]
