"""The encrypted enclave format: ``sgxlaunch pcl encrypt`` (docs/pcl.md).

An image's *protected region* is its executable code: the run of consecutive, fully measured
PT_REG pages whose SECINFO has X, which must hold a program code page
(:func:`sgxlaunch.cpu.image.program_code_page`, what :meth:`EnclaveContext.execute`
dispatches on). :func:`encrypt_image` replaces each of those pages by its AES-256-GCM
ciphertext and gives it SECINFO R|W|X (the decryptor writes the plaintext in place), and adds
at the top of ELRANGE, all measured:

* the decryptor's code page (R-X; :class:`sgxlaunch.pcl.decryptor.PclDecryptor`, the program
  EENTER reaches for the new MRENCLAVE);
* the tag pages (R--): 16 bytes per protected page, in page order;
* the header page (R--, the last page of ELRANGE): :class:`PclHeader`.

Page ``i`` of the region (at enclave offset ``o = region_offset + 4096·i``) is
AES-256-GCM(K, nonce = N ⊕ (4 zero bytes ‖ u64 i), page, AAD = salt ‖ u64 o) → ciphertext
(4096) and tag (16), where N = SHA-256(:data:`PAGE_NONCE_DOMAIN` ‖ salt)[:12]. The salt is
32 random bytes per encryption: nonces are distinct within an image, and two encryptions
under the same key share a nonce only if their 96-bit bases N fall within the page count of
each other (probability about count · 2⁻⁹⁵ per pair). MRENCLAVE covers the ciphertext, the tags, the
header and the decryptor: the author signs the encrypted image, and the plaintext is never
measured.

SIZE is kept when the pages above the image's last page leave room for the trailer, else
doubled until they do. The TCS is left as the author built it (the emulated EENTER dispatches
on MRENCLAVE, docs/pcl.md).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, replace

import numpy as np

from sgxlaunch.arch.constants import PageType, SecinfoFlag, secinfo_flags
from sgxlaunch.cpu.enclave import PROGRAM_PAGE_MAGIC
from sgxlaunch.cpu.image import program_code_page
from sgxlaunch.errors import MalformedInput, UsageError
from sgxlaunch.formats.sgxs import SgxsImage, SgxsPage
from sgxlaunch.pcl.crypto import KEY_ID_SIZE, KEY_SIZE, TAG_SIZE, Random, key_id

PAGE = 4096
SALT_SIZE = 32
PAGE_NONCE_DOMAIN = b"sgxlaunch pcl page nonce v1\x00"
HEADER_MAGIC = b"sgxlaunch pcl v1\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
assert len(HEADER_MAGIC) == 32
HEADER_VERSION = 1
_HEADER = struct.Struct(f"<32sIIQQQ{SALT_SIZE}s{KEY_ID_SIZE}s")
HEADER_SIZE = _HEADER.size
MAX_PROTECTED_PAGES = 1 << 20
"""At most 4 GiB of protected code (the tag pages stay below 16 MiB)."""
_U64 = struct.Struct("<Q")
_REG = int(PageType.REG)
_X = int(SecinfoFlag.X)
RWX = secinfo_flags(PageType.REG, SecinfoFlag.R | SecinfoFlag.W | SecinfoFlag.X)
_R = secinfo_flags(PageType.REG, SecinfoFlag.R)
_RX = secinfo_flags(PageType.REG, SecinfoFlag.R | SecinfoFlag.X)


@dataclass(frozen=True, slots=True)
class PclHeader:
    """The encrypted image's clear metadata (the last page of ELRANGE; measured).

    Layout (little-endian, then zeros to the page's end): magic (32, :data:`HEADER_MAGIC`) ‖
    version u32 (1) ‖ page count u32 ‖ region offset u64 ‖ entry offset u64 (the protected
    program's code page, an enclave offset inside the region) ‖ tags offset u64 ‖ salt (32)
    ‖ key id (32).
    """

    page_count: int
    region_offset: int
    entry_offset: int
    tags_offset: int
    salt: bytes
    key_id: bytes

    def to_page(self) -> bytes:
        return _HEADER.pack(
            HEADER_MAGIC,
            HEADER_VERSION,
            self.page_count,
            self.region_offset,
            self.entry_offset,
            self.tags_offset,
            self.salt,
            self.key_id,
        ).ljust(PAGE, b"\x00")

    @classmethod
    def from_page(cls, page: bytes, size: int) -> PclHeader:
        """Parse the header page strictly for an enclave of SIZE ``size``.

        Checks: length, magic, version, the zero tail; a page count of 1 to
        :data:`MAX_PROTECTED_PAGES`; the region, the entry and the tag pages page-aligned,
        inside ELRANGE and below the header; the entry inside the region.

        Raises:
            MalformedInput: naming the field.
        """
        if len(page) != PAGE:
            raise MalformedInput(f"pcl header: {len(page)} bytes, expected {PAGE}", field="length")
        magic, version, count, region, entry, tags, salt, kid = _HEADER.unpack_from(page)
        if magic != HEADER_MAGIC:
            raise MalformedInput(
                "pcl header: bad magic (not an encrypted image)", field="magic", offset=0
            )
        if version != HEADER_VERSION:
            raise MalformedInput(
                f"pcl header: version {version}, expected {HEADER_VERSION}",
                field="version",
                offset=32,
            )
        if any(page[HEADER_SIZE:]):
            raise MalformedInput(
                "pcl header: reserved bytes set", field="reserved", offset=HEADER_SIZE
            )
        top = size - PAGE
        tag_pages = -(-count * TAG_SIZE // PAGE)
        checks = (
            ("page_count", 36, 1 <= count <= MAX_PROTECTED_PAGES),
            ("region_offset", 40, region % PAGE == 0 and region + count * PAGE <= top),
            ("entry_offset", 48, entry % PAGE == 0 and region <= entry < region + count * PAGE),
            ("tags_offset", 56, tags % PAGE == 0 and tags + tag_pages * PAGE <= top),
        )
        for name, offset, ok in checks:
            if not ok:
                raise MalformedInput(f"pcl header: {name} out of range", field=name, offset=offset)
        return cls(count, region, entry, tags, salt, kid)


def _nonce_base(salt: bytes) -> tuple[bytes, int]:
    base = hashlib.sha256(PAGE_NONCE_DOMAIN + salt).digest()
    return base[:4], int.from_bytes(base[4:12], "little")


def page_nonce(salt: bytes, index: int) -> bytes:
    """The GCM nonce of protected page ``index``: N ⊕ (4 zero bytes ‖ u64 ``index``), where
    N = SHA-256(:data:`PAGE_NONCE_DOMAIN` ‖ salt)[:12] (per-encryption base, as TLS 1.3
    derives per-record nonces)."""
    head, low = _nonce_base(salt)
    return head + _U64.pack(low ^ index)


def page_nonces(salt: bytes, count: int) -> np.ndarray:
    """:func:`page_nonce` of pages 0 … ``count`` − 1 as rows of a ``(count, 12)`` array."""
    head, low = _nonce_base(salt)
    out = np.empty((count, 12), dtype=np.uint8)
    out[:, :4] = np.frombuffer(head, dtype=np.uint8)
    lows = np.uint64(low) ^ np.arange(count, dtype=np.uint64)
    out[:, 4:] = lows.astype("<u8").view(np.uint8).reshape(count, 8)
    return out


def page_aad(salt: bytes, offset: int) -> bytes:
    """The associated data of the protected page at enclave ``offset``: salt ‖ u64 offset."""
    return salt + _U64.pack(offset)


def page_aads(salt: bytes, offset: int, count: int) -> np.ndarray:
    """:func:`page_aad` of ``count`` pages from enclave ``offset``, rows of a ``(count, 40)``
    array."""
    out = np.empty((count, SALT_SIZE + 8), dtype=np.uint8)
    out[:, :SALT_SIZE] = np.frombuffer(salt, dtype=np.uint8)
    offsets = offset + PAGE * np.arange(count, dtype=np.uint64)
    out[:, SALT_SIZE:] = offsets.astype("<u8").view(np.uint8).reshape(count, 8)
    return out


def _region(image: SgxsImage) -> tuple[int, int]:
    """(index of the first protected page in ``image.pages``, number of protected pages)."""
    executable = [
        i
        for i, page in enumerate(image.pages)
        if page.page_type == _REG and page.secinfo_flags & _X
    ]
    if not executable:
        raise UsageError("the image has no executable (X) page to protect")
    first, last = executable[0], executable[-1]
    for i in range(first, last + 1):
        page = image.pages[i]
        if i not in executable or page.offset != image.pages[first].offset + PAGE * (i - first):
            raise UsageError(
                f"the executable pages are not one run of consecutive pages (page at "
                f"0x{page.offset:x} breaks it); pcl encrypts one code region"
            )
        if not page.fully_measured:
            raise UsageError(
                f"executable page at 0x{page.offset:x} is not fully measured; only measured "
                "code can be protected"
            )
    if last - first + 1 > MAX_PROTECTED_PAGES:
        raise UsageError(f"more than {MAX_PROTECTED_PAGES} executable pages")
    return first, last - first + 1


def encrypt_image(
    image: SgxsImage, code_key: bytes, *, random: Random
) -> tuple[SgxsImage, PclHeader]:
    """Encrypt ``image``'s code region under ``code_key`` (the module's construction).

    Raises:
        UsageError: no executable page, the executable pages are not one run of consecutive,
            fully measured pages, no program code page among them, an UNSIZED image, or an
            image that is already encrypted.
        MalformedInput: the key is not 32 bytes.
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from sgxlaunch.pcl.decryptor import PclDecryptor

    if len(code_key) != KEY_SIZE:
        raise MalformedInput(f"the code key must be {KEY_SIZE} bytes", field="code key")
    if image.unsized_offset is not None:
        raise UsageError("an UNSIZED SGXS image cannot be encrypted; give it a SIZE first")
    if find_header(image) is not None:
        raise UsageError("the image is already encrypted (it has a pcl header)")
    first, count = _region(image)
    protected = image.pages[first : first + count]
    entry = next((p.offset for p in protected if p.data.startswith(PROGRAM_PAGE_MAGIC)), None)
    if entry is None:
        raise UsageError(
            "no program code page in the executable region: nothing the decryptor could run "
            "after decrypting (build the image with sgxlaunch.cpu.image.program_image)"
        )
    salt = random(SALT_SIZE)
    if len(salt) != SALT_SIZE:
        raise UsageError("the random source returned a short salt")
    aead = AESGCM(code_key)
    encrypted: list[SgxsPage] = []
    tags = bytearray()
    for index, page in enumerate(protected):
        sealed = aead.encrypt(page_nonce(salt, index), page.data, page_aad(salt, page.offset))
        encrypted.append(replace(page, secinfo_flags=RWX, data=sealed[:PAGE]))
        tags += sealed[PAGE:]
    tag_pages = -(-len(tags) // PAGE)
    trailer = (1 + tag_pages + 1) * PAGE
    end = max(p.offset for p in image.pages) + PAGE
    size = image.size
    while end + trailer > size:
        size *= 2
    decryptor_offset = size - trailer
    tags_offset = decryptor_offset + PAGE
    header = PclHeader(
        count, protected[0].offset, entry, tags_offset, bytes(salt), key_id(code_key)
    )
    tags += bytes(tag_pages * PAGE - len(tags))
    added = [SgxsPage(decryptor_offset, _RX, program_code_page(PclDecryptor), 0xFFFF)]
    added += [
        SgxsPage(tags_offset + PAGE * i, _R, bytes(tags[PAGE * i : PAGE * (i + 1)]), 0xFFFF)
        for i in range(tag_pages)
    ]
    added.append(SgxsPage(size - PAGE, _R, header.to_page(), 0xFFFF))
    pages = (*image.pages[:first], *encrypted, *image.pages[first + count :], *added)
    return SgxsImage(image.ssaframesize, size, tuple(pages)), header


def find_header(image: SgxsImage) -> PclHeader | None:
    """The pcl header of an encrypted image (its last page of ELRANGE), or ``None``.

    Raises:
        MalformedInput: the last page starts with the magic but is not a valid header.
    """
    last = next((p for p in image.pages if p.offset == image.size - PAGE), None)
    if last is None or not last.data.startswith(HEADER_MAGIC):
        return None
    return PclHeader.from_page(last.data, image.size)


__all__ = [
    "HEADER_MAGIC",
    "PAGE_NONCE_DOMAIN",
    "RWX",
    "SALT_SIZE",
    "PclHeader",
    "encrypt_image",
    "find_header",
    "page_aad",
    "page_aads",
    "page_nonce",
    "page_nonces",
]
