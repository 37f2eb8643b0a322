"""SGX architectural constants and enums, as the Intel SDM defines them.

Sources are cited per group; ``../shared/reference/sgx-launch-spec.md`` §0, §1 and §4.1
collect them.
"""

from __future__ import annotations

import enum

PAGE_SIZE = 4096
"""Size of an EPC page (SDM; kernel ``PAGE_SIZE``)."""

EEXTEND_CHUNK = 256
"""Bytes measured by one EEXTEND (SDM EEXTEND; kernel ``SGX_EEXTEND_BLOCK_SIZE``)."""

MODULUS_SIZE = 384
"""RSA-3072 modulus size in bytes (kernel ``SGX_MODULUS_SIZE``)."""

SIGSTRUCT_HEADER = bytes.fromhex("06000000e10000000000010000000000")
"""SIGSTRUCT.HEADER (SDM SIGSTRUCT table)."""

SIGSTRUCT_HEADER_SDK_DEBUG = bytes.fromhex("06000000e10000000000010000000080")
"""HEADER as Intel's SDK writes it with its "type" u32 (bytes 12..15) = 0x80000000."""

SIGSTRUCT_HEADER2 = bytes.fromhex("01010000600000006000000001000000")
"""SIGSTRUCT.HEADER2 (SDM SIGSTRUCT table)."""

VENDOR_INTEL = 0x8086
VENDOR_NONE = 0x0000
SIGSTRUCT_EXPONENT = 3

HARDCODED_PKCS1_5_PADDING = (
    b"\x00\x01" + b"\xff" * 330 + b"\x00" + bytes.fromhex("3031300d060960864801650304020105000420")
)
"""The 352-byte prefix of every valid SIGSTRUCT EM (SDM EINIT ``HARDCODED_PKCS1_5_PADDING``)."""
assert len(HARDCODED_PKCS1_5_PADDING) == 352

SHA256_DIGESTINFO_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")
"""DER DigestInfo prefix for SHA-256 (RFC 8017 §9.2 note 1)."""

# Model-specific registers (kernel arch/x86/include/asm/msr-index.h).
MSR_IA32_FEATURE_CONTROL = 0x3A
MSR_IA32_SGXLEPUBKEYHASH0 = 0x8C
MSR_IA32_SGXLEPUBKEYHASH1 = 0x8D
MSR_IA32_SGXLEPUBKEYHASH2 = 0x8E
MSR_IA32_SGXLEPUBKEYHASH3 = 0x8F
FEATURE_CONTROL_LOCK = 1 << 0
FEATURE_CONTROL_SGX_LC_ENABLED = 1 << 17
FEATURE_CONTROL_SGX_ENABLED = 1 << 18

INTEL_LE_MRSIGNER = bytes.fromhex(
    "acb77012053e05a63d413b8bbae8fb6c5d73b3f2996d91c43bbbf90959c0f8d4"
)
"""Intel's launch-enclave signer: the reset value of IA32_SGXLEPUBKEYHASH0..3 (spec §4.6)."""


class SgxStatus(enum.IntEnum):
    """Status codes returned in RAX by ENCLS/ENCLU leaves (spec §4.1)."""

    SUCCESS = 0
    INVALID_SIG_STRUCT = 1
    INVALID_ATTRIBUTE = 2
    BLKSTATE = 3
    INVALID_MEASUREMENT = 4
    NOTBLOCKABLE = 5
    PG_INVLD = 6
    EPC_PAGE_CONFLICT = 7
    INVALID_SIGNATURE = 8
    MAC_COMPARE_FAIL = 9
    PAGE_NOT_BLOCKED = 10
    NOT_TRACKED = 11
    VA_SLOT_OCCUPIED = 12
    CHILD_PRESENT = 13
    ENCLAVE_ACT = 14
    ENTRYEPOCH_LOCKED = 15
    INVALID_EINITTOKEN = 16
    PREV_TRK_INCMPL = 17
    PG_IS_SECS = 18
    PAGE_ATTRIBUTES_MISMATCH = 19
    PAGE_NOT_MODIFIABLE = 20
    PAGE_NOT_DEBUGGABLE = 21
    INVALID_COUNTER = 25
    PG_NONEPC = 26
    TRACK_NOT_REQUIRED = 27
    INVALID_CPUSVN = 32
    INVALID_ISVSVN = 64
    UNMASKED_EVENT = 128
    INVALID_KEYNAME = 256


class AttributeFlag(enum.IntFlag):
    """ATTRIBUTES.FLAGS bits (spec §1.1; kernel ``SGX_ATTR_*``)."""

    INIT = 1 << 0
    DEBUG = 1 << 1
    MODE64BIT = 1 << 2
    PROVISIONKEY = 1 << 4
    EINITTOKEN_KEY = 1 << 5
    CET = 1 << 6
    KSS = 1 << 7
    AEXNOTIFY = 1 << 10


ATTRIBUTE_FLAGS_RESERVED_MASK = (
    (1 << 3) | (1 << 6) | (1 << 8) | (1 << 9) | (~((1 << 11) - 1) & (2**64 - 1))
)
"""Reserved FLAGS bits per the kernel's ``SGX_ATTR_RESERVED_MASK`` (CET, bit 6, is treated as
reserved because CET is not modelled)."""

XFRM_LEGACY = 0x3
"""XFRM bits x87 and SSE, which must always be set (SDM 41.7.2.1)."""

CONTROLLED_ATTRIBUTES = int(AttributeFlag.EINITTOKEN_KEY)
"""Attribute bits EINIT grants only to the launch-enclave signer (SDM EINIT)."""


class MiscSelect(enum.IntFlag):
    """MISCSELECT bits (spec §1.1)."""

    EXINFO = 1 << 0
    CPINFO = 1 << 1


class PageType(enum.IntEnum):
    """EPCM / SECINFO page types (spec §1.5)."""

    SECS = 0
    TCS = 1
    REG = 2
    VA = 3
    TRIM = 4


class SecinfoFlag(enum.IntFlag):
    """SECINFO.FLAGS permission and state bits (spec §1.5); page type is bits 15:8."""

    R = 1 << 0
    W = 1 << 1
    X = 1 << 2
    PENDING = 1 << 3
    MODIFIED = 1 << 4
    PR = 1 << 5


SECINFO_PERMISSION_MASK = 0x7
SECINFO_PAGE_TYPE_SHIFT = 8
SECINFO_PAGE_TYPE_MASK = 0xFF << SECINFO_PAGE_TYPE_SHIFT
SECINFO_FLAGS_RESERVED_MASK = (2**64 - 1) & ~(0x3F | SECINFO_PAGE_TYPE_MASK)


def secinfo_flags(page_type: PageType, permissions: int = 0) -> int:
    """Compose SECINFO.FLAGS from a page type and R/W/X bits."""
    return (int(page_type) << SECINFO_PAGE_TYPE_SHIFT) | (
        int(permissions) & SECINFO_PERMISSION_MASK
    )


class TcsFlag(enum.IntFlag):
    """TCS.FLAGS bits (spec §1.7)."""

    DBGOPTIN = 1 << 0
    AEXNOTIFY = 1 << 1


TCS_FLAGS_RESERVED_MASK = (2**64 - 1) & ~0x3


class KeyName(enum.IntEnum):
    """KEYREQUEST.KEYNAME (spec §1.9)."""

    EINITTOKEN = 0
    PROVISION = 1
    PROVISION_SEAL = 2
    REPORT = 3
    SEAL = 4


class KeyPolicy(enum.IntFlag):
    """KEYREQUEST.KEYPOLICY bits (spec §1.9)."""

    MRENCLAVE = 1 << 0
    MRSIGNER = 1 << 1
    NOISVPRODID = 1 << 2
    CONFIGID = 1 << 3
    ISVFAMILYID = 1 << 4
    ISVEXTPRODID = 1 << 5


KEYPOLICY_KSS_MASK = 0x003C
KEYPOLICY_RESERVED_MASK = 0xFFFF & ~0x003F


class Encls(enum.IntEnum):
    """ENCLS leaf numbers (kernel ``enum sgx_encls_function``; SDM for ELDB)."""

    ECREATE = 0x00
    EADD = 0x01
    EINIT = 0x02
    EREMOVE = 0x03
    EDBGRD = 0x04
    EDBGWR = 0x05
    EEXTEND = 0x06
    ELDB = 0x07
    ELDU = 0x08
    EBLOCK = 0x09
    EPA = 0x0A
    EWB = 0x0B
    ETRACK = 0x0C
    EAUG = 0x0D
    EMODPR = 0x0E
    EMODT = 0x0F


class Enclu(enum.IntEnum):
    """ENCLU leaf numbers (spec §0)."""

    EREPORT = 0
    EGETKEY = 1
    EENTER = 2
    ERESUME = 3
    EEXIT = 4
    EACCEPT = 5
    EMODPE = 6
    EACCEPTCOPY = 7
    EDECCSSA = 9
