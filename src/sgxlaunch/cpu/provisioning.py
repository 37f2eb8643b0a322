"""The machine's provisioning secrets: what the emulated PCS keeps, as bytes.

Intel's Provisioning Certification Service holds the issuer keys of the DCAP PKI (the SGX Root
CA, the PCK Processor CA, the TCB Signing key) and knows every platform it certified (PPID,
FMSPC, PCE-ID, the PCK certificates per TCB). The emulated platform keeps an emulated PCS of its
own *in the machine* — outside the attacker's reach, as Intel's HSMs are — together with the
key that signs the PCE and QE images (whoever holds it could sign a look-alike PCE and forge
quotes, so it never leaves the machine either).

This module is the storage form only: immutable records of bytes and integers, and their
strict JSON form inside the machine file. What the keys and certificates *mean* (X.509, the
SGX extension, the signed TCB info and QE identity) is :mod:`sgxlaunch.attest.pcs`'s business.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sgxlaunch.errors import MalformedInput

TCB_LEVEL_STATUSES = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)
"""The ``tcbStatus`` strings of TCB info and QE identity levels (spec §3.3; QVL
``Json/TcbLevel.cpp``)."""

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_ADVISORY_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
MAX_ISSUED_PCKS = 32
"""PCK certificates the machine keeps (the newest; one per TCB the platform was certified at)."""
MAX_LEVELS = 64
MAX_REVOKED = 256


def _bad(field: str, expected: str, source: str) -> MalformedInput:
    return MalformedInput(f"{field}: expected {expected}", source=source, field=field)


@dataclass(frozen=True, slots=True)
class TcbLevel:
    """One platform TCB level of the TCB info (v3 ``tcbLevels`` entry, SGX).

    Attributes:
        components: the 16 SGX TCB component SVNs (``sgxtcbcomponents``), 0..255 each.
        pcesvn: the PCE SVN of the level.
        status: one of :data:`TCB_LEVEL_STATUSES`.
        date: ``tcbDate`` (``YYYY-MM-DDTHH:MM:SSZ``).
        advisories: ``advisoryIDs`` (left out of the JSON when empty).
    """

    components: tuple[int, ...]
    pcesvn: int
    status: str
    date: str
    advisories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_level(self.status, self.date, self.advisories, "tcb level")
        if len(self.components) != 16 or any(
            type(c) is not int or not 0 <= c <= 255 for c in self.components
        ):
            raise MalformedInput(
                "tcb level: expected 16 component SVNs, each 0..255", field="components"
            )
        if type(self.pcesvn) is not int or not 0 <= self.pcesvn <= 0xFFFF:
            raise MalformedInput("tcb level: pcesvn must be 0..65535", field="pcesvn")

    @classmethod
    def of_cpusvn(
        cls, cpusvn: bytes, pcesvn: int, status: str, date: str, advisories: tuple[str, ...] = ()
    ) -> TcbLevel:
        """The level whose components are the bytes of ``cpusvn`` (as Intel's PCK
        certificates carry them: component *i* = CPUSVN byte *i*)."""
        return cls(tuple(cpusvn), pcesvn, status, date, advisories)

    def to_dict(self) -> dict[str, Any]:
        return {
            "components": list(self.components),
            "pcesvn": self.pcesvn,
            "status": self.status,
            "date": self.date,
            "advisories": list(self.advisories),
        }


@dataclass(frozen=True, slots=True)
class QeTcbLevel:
    """One TCB level of the QE identity (``tcbLevels`` entry: ``tcb.isvsvn``)."""

    isvsvn: int
    status: str
    date: str
    advisories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_level(self.status, self.date, self.advisories, "QE tcb level")
        if type(self.isvsvn) is not int or not 0 <= self.isvsvn <= 0xFFFF:
            raise MalformedInput("QE tcb level: isvsvn must be 0..65535", field="isvsvn")

    def to_dict(self) -> dict[str, Any]:
        return {
            "isvsvn": self.isvsvn,
            "status": self.status,
            "date": self.date,
            "advisories": list(self.advisories),
        }


def check_level(status: str, date: str, advisories: tuple[str, ...], what: str) -> None:
    if status not in TCB_LEVEL_STATUSES:
        raise MalformedInput(
            f"{what}: status {status!r} is not one of {', '.join(TCB_LEVEL_STATUSES)}",
            field="status",
        )
    if not isinstance(date, str) or not _DATE_RE.match(date):
        raise MalformedInput(f"{what}: date must be YYYY-MM-DDTHH:MM:SSZ", field="date")
    if not isinstance(advisories, tuple) or any(
        not isinstance(a, str) or not _ADVISORY_RE.match(a) for a in advisories
    ):
        raise MalformedInput(f"{what}: advisories must be IDs such as INTEL-SA-00615")


@dataclass(frozen=True, slots=True)
class IssuedPck:
    """A PCK certificate the PCS issued for this platform at one TCB (``cpusvn``, ``pcesvn``)."""

    cpusvn: bytes
    pcesvn: int
    der: bytes


@dataclass(frozen=True, slots=True)
class ProvisioningState:
    """The emulated PCS's secrets and published state (see the module docstring).

    Attributes:
        root_key / pck_ca_key / tcb_signing_key: P-256 private scalars (32 bytes, big-endian)
            of the root CA, the PCK Processor CA and the TCB signing key.
        root_cert / pck_ca_cert / tcb_signing_cert: their certificates (DER).
        enclave_signing_key: the PCE/QE signing key, RSA-3072 e = 3, PKCS#8 DER (``None``
            until first used: making an RSA-3072 key takes about a second).
        ppid: the platform's PPID (16 bytes) as its PCK certificates carry it.
        fmspc: the FMSPC (6 bytes); pceid: the PCE-ID (2 bytes).
        pck_certificates: the PCK certificates issued (newest last).
        revoked: serial numbers in the PCK CRL.
        pck_crl_number: the PCK CRL's CRL Number (raised at each revocation).
        tcb_evaluation_data_number: raised at each TCB recovery (new TCB levels published).
        tcb_levels: the platform TCB levels the TCB info publishes.
        qe_tcb_levels: the QE identity's TCB levels.
    """

    root_key: bytes
    root_cert: bytes
    pck_ca_key: bytes
    pck_ca_cert: bytes
    tcb_signing_key: bytes
    tcb_signing_cert: bytes
    enclave_signing_key: bytes | None
    ppid: bytes
    fmspc: bytes
    pceid: bytes
    tcb_levels: tuple[TcbLevel, ...]
    qe_tcb_levels: tuple[QeTcbLevel, ...]
    pck_certificates: tuple[IssuedPck, ...] = ()
    revoked: tuple[int, ...] = ()
    pck_crl_number: int = 1
    tcb_evaluation_data_number: int = 1

    def __post_init__(self) -> None:
        for name in ("root_key", "pck_ca_key", "tcb_signing_key"):
            if len(getattr(self, name)) != 32:
                raise MalformedInput(f"{name}: expected a 32-byte P-256 scalar", field=name)
        for name, size in (("ppid", 16), ("fmspc", 6), ("pceid", 2)):
            if len(getattr(self, name)) != size:
                raise MalformedInput(f"{name}: expected {size} bytes", field=name)
        if not self.tcb_levels or len(self.tcb_levels) > MAX_LEVELS:
            raise MalformedInput(f"tcb_levels: expected 1..{MAX_LEVELS} levels")
        if not self.qe_tcb_levels or len(self.qe_tcb_levels) > MAX_LEVELS:
            raise MalformedInput(f"qe_tcb_levels: expected 1..{MAX_LEVELS} levels")
        if len({(lv.components, lv.pcesvn) for lv in self.tcb_levels}) != len(self.tcb_levels):
            raise MalformedInput("tcb_levels: two levels with the same TCB", field="tcb_levels")
        if len({lv.isvsvn for lv in self.qe_tcb_levels}) != len(self.qe_tcb_levels):
            raise MalformedInput("qe_tcb_levels: two levels with the same isvsvn")
        if len(self.pck_certificates) > MAX_ISSUED_PCKS or len(self.revoked) > MAX_REVOKED:
            raise MalformedInput("too many issued PCK certificates or revoked serials")

    def pck_for(self, cpusvn: bytes, pcesvn: int) -> IssuedPck | None:
        """The newest PCK certificate issued for exactly this TCB."""
        for issued in reversed(self.pck_certificates):
            if issued.cpusvn == cpusvn and issued.pcesvn == pcesvn:
                return issued
        return None

    # -- the machine file's form ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "root_key": self.root_key.hex(),
            "root_cert": self.root_cert.hex(),
            "pck_ca_key": self.pck_ca_key.hex(),
            "pck_ca_cert": self.pck_ca_cert.hex(),
            "tcb_signing_key": self.tcb_signing_key.hex(),
            "tcb_signing_cert": self.tcb_signing_cert.hex(),
            "enclave_signing_key": None
            if self.enclave_signing_key is None
            else self.enclave_signing_key.hex(),
            "ppid": self.ppid.hex(),
            "fmspc": self.fmspc.hex(),
            "pceid": self.pceid.hex(),
            "pck_certificates": [
                {"cpusvn": p.cpusvn.hex(), "pcesvn": p.pcesvn, "der": p.der.hex()}
                for p in self.pck_certificates
            ],
            "revoked": [f"{serial:x}" for serial in self.revoked],
            "pck_crl_number": self.pck_crl_number,
            "tcb_evaluation_data_number": self.tcb_evaluation_data_number,
            "tcb_levels": [level.to_dict() for level in self.tcb_levels],
            "qe_tcb_levels": [level.to_dict() for level in self.qe_tcb_levels],
        }

    @classmethod
    def from_dict(cls, value: Any, *, source: str = "machine") -> ProvisioningState:
        """Read the machine file's ``provisioning`` object strictly.

        Raises:
            MalformedInput: a field is missing, unknown, or not of its form (named).
        """
        reader = _Reader(source)
        obj = reader.get_obj(value, "provisioning", _FIELDS)
        try:
            return cls(
                root_key=reader.get_hex(obj, "root_key", 32),
                root_cert=reader.get_hex(obj, "root_cert", None),
                pck_ca_key=reader.get_hex(obj, "pck_ca_key", 32),
                pck_ca_cert=reader.get_hex(obj, "pck_ca_cert", None),
                tcb_signing_key=reader.get_hex(obj, "tcb_signing_key", 32),
                tcb_signing_cert=reader.get_hex(obj, "tcb_signing_cert", None),
                enclave_signing_key=None
                if obj["enclave_signing_key"] is None
                else reader.get_hex(obj, "enclave_signing_key", None),
                ppid=reader.get_hex(obj, "ppid", 16),
                fmspc=reader.get_hex(obj, "fmspc", 6),
                pceid=reader.get_hex(obj, "pceid", 2),
                pck_certificates=tuple(
                    IssuedPck(
                        reader.get_hex(p, "cpusvn", 16),
                        reader.get_int(p, "pcesvn", 0xFFFF),
                        reader.get_hex(p, "der", None),
                    )
                    for p in (
                        reader.get_obj(item, "pck_certificates[]", ("cpusvn", "pcesvn", "der"))
                        for item in reader.get_list(obj, "pck_certificates")
                    )
                ),
                revoked=tuple(reader.get_serial(item) for item in reader.get_list(obj, "revoked")),
                pck_crl_number=reader.get_int(obj, "pck_crl_number", 2**32),
                tcb_evaluation_data_number=reader.get_int(obj, "tcb_evaluation_data_number", 2**32),
                tcb_levels=tuple(
                    TcbLevel(
                        tuple(reader.get_ints(lv, "components")),
                        reader.get_int(lv, "pcesvn", 0xFFFF),
                        reader.get_str(lv, "status"),
                        reader.get_str(lv, "date"),
                        tuple(reader.get_strs(lv, "advisories")),
                    )
                    for lv in (
                        reader.get_obj(item, "tcb_levels[]", _LEVEL_FIELDS)
                        for item in reader.get_list(obj, "tcb_levels")
                    )
                ),
                qe_tcb_levels=tuple(
                    QeTcbLevel(
                        reader.get_int(lv, "isvsvn", 0xFFFF),
                        reader.get_str(lv, "status"),
                        reader.get_str(lv, "date"),
                        tuple(reader.get_strs(lv, "advisories")),
                    )
                    for lv in (
                        reader.get_obj(item, "qe_tcb_levels[]", _QE_LEVEL_FIELDS)
                        for item in reader.get_list(obj, "qe_tcb_levels")
                    )
                ),
            )
        except MalformedInput as exc:
            if exc.source is not None:
                raise
            raise MalformedInput(
                f"provisioning: {exc.message}", source=source, field="provisioning"
            ) from None


_FIELDS = (
    "root_key",
    "root_cert",
    "pck_ca_key",
    "pck_ca_cert",
    "tcb_signing_key",
    "tcb_signing_cert",
    "enclave_signing_key",
    "ppid",
    "fmspc",
    "pceid",
    "pck_certificates",
    "revoked",
    "pck_crl_number",
    "tcb_evaluation_data_number",
    "tcb_levels",
    "qe_tcb_levels",
)
_LEVEL_FIELDS = ("components", "pcesvn", "status", "date", "advisories")
_QE_LEVEL_FIELDS = ("isvsvn", "status", "date", "advisories")


@dataclass(frozen=True, slots=True)
class _Reader:
    source: str

    def get_obj(self, value: Any, field: str, keys: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict) or set(value) != set(keys):
            raise _bad(field, "an object with " + ", ".join(keys), self.source)
        return value

    def get_list(self, obj: dict[str, Any], key: str) -> list[Any]:
        value = obj[key]
        if not isinstance(value, list):
            raise _bad(key, "a list", self.source)
        return value

    def get_hex(self, obj: dict[str, Any], key: str, size: int | None) -> bytes:
        raw = obj[key]
        try:
            out = bytes.fromhex(raw) if isinstance(raw, str) and len(raw) % 2 == 0 else None
        except ValueError:
            out = None
        if out is None or (size is not None and len(out) != size) or not out:
            raise _bad(key, f"{size or 'non-empty'}-byte hex", self.source)
        return out

    def get_int(self, obj: dict[str, Any], key: str, high: int) -> int:
        raw = obj[key]
        if type(raw) is not int or not 0 <= raw <= high:
            raise _bad(key, f"an integer 0..{high}", self.source)
        return raw

    def get_ints(self, obj: dict[str, Any], key: str) -> list[int]:
        raw = self.get_list(obj, key)
        if any(type(x) is not int for x in raw):
            raise _bad(key, "a list of integers", self.source)
        return raw

    def get_str(self, obj: dict[str, Any], key: str) -> str:
        raw = obj[key]
        if not isinstance(raw, str):
            raise _bad(key, "a string", self.source)
        return raw

    def get_strs(self, obj: dict[str, Any], key: str) -> list[str]:
        raw = self.get_list(obj, key)
        if any(not isinstance(x, str) for x in raw):
            raise _bad(key, "a list of strings", self.source)
        return raw

    def get_serial(self, raw: Any) -> int:
        if not isinstance(raw, str) or not re.fullmatch(r"[0-9a-f]{1,40}", raw):
            raise _bad("revoked[]", "a certificate serial number in lower-case hex", self.source)
        return int(raw, 16)


__all__ = [
    "MAX_ISSUED_PCKS",
    "TCB_LEVEL_STATUSES",
    "IssuedPck",
    "ProvisioningState",
    "QeTcbLevel",
    "TcbLevel",
]
