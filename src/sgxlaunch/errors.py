"""One exception hierarchy for the whole project, split by who is at fault.

* :class:`MalformedInput` — bytes or a document we were handed are wrong.
* :class:`UsageError` — the caller did something out of order or contradictory.
* :class:`VerificationFailed` — a signature, measurement, MAC, token, expiry, threshold or
  rollback check failed; subclasses name the cause.
* :class:`PolicyDenied` — a valid request that the owner's policy does not allow.

Every error carries a one-line ``message`` and optional ``detail`` lines (expected vs found); the
CLI prints the first on stderr, then the rest, and maps the class to an exit code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class SgxlaunchError(Exception):
    """Root of every error this project raises on purpose."""

    exit_code = 2

    def __init__(self, message: str, *, detail: tuple[str, ...] | list[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.detail: tuple[str, ...] = tuple(detail)

    def __str__(self) -> str:
        if not self.detail:
            return self.message
        return self.message + "\n" + "\n".join("  " + line for line in self.detail)


class MalformedInput(SgxlaunchError):
    """Bytes or a document are malformed: wrong size, reserved bytes set, bad header, bad JSON.

    Attributes:
        field: the structure field or document key at fault (``None`` if not applicable).
        offset: the byte offset of the fault within the input (``None`` if not applicable).
        source: a name for the input (usually a file name), set by the edge that read it.
    """

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        offset: int | None = None,
        source: str | None = None,
        detail: tuple[str, ...] | list[str] = (),
    ) -> None:
        super().__init__(message, detail=detail)
        self.field = field
        self.offset = offset
        self.source = source

    def __str__(self) -> str:
        prefix = f"{self.source}: " if self.source else ""
        where = []
        if self.field is not None:
            where.append(f"field {self.field}")
        if self.offset is not None:
            where.append(f"offset {self.offset} (0x{self.offset:x})")
        loc = f" [{', '.join(where)}]" if where else ""
        head = f"{prefix}{self.message}{loc}"
        if not self.detail:
            return head
        return head + "\n" + "\n".join("  " + line for line in self.detail)

    def with_source(self, source: str) -> MalformedInput:
        """Return the same error, naming the input it came from."""
        self.source = source
        return self


class StoreDamaged(MalformedInput):
    """The state database (or one value in it) is not what sgxlaunch writes: damaged or
    crafted. The message names the key (or the database operation) and the recovery path."""


class UsageError(SgxlaunchError):
    """The caller did something out of order or contradictory."""

    exit_code = 2


class VerificationFailed(SgxlaunchError):
    """A cryptographic or consistency check failed.

    Attributes:
        check: short machine-readable name of the failed check (e.g. ``"signature"``).
        expected: what the check expected, as text (or ``None``).
        found: what the check found, as text (or ``None``).
    """

    exit_code = 1
    check = "verification"

    def __init__(
        self,
        message: str,
        *,
        expected: str | None = None,
        found: str | None = None,
        detail: tuple[str, ...] | list[str] = (),
    ) -> None:
        lines = list(detail)
        if expected is not None:
            lines.append(f"expected: {expected}")
        if found is not None:
            lines.append(f"found:    {found}")
        super().__init__(message, detail=lines)
        self.expected = expected
        self.found = found


class SignatureInvalid(VerificationFailed):
    """An RSA / Ed25519 / ECDSA signature does not verify."""

    check = "signature"


class QuotientInvalid(VerificationFailed):
    """SIGSTRUCT Q1 or Q2 is inconsistent with SIGNATURE and MODULUS."""

    check = "q1q2"


class MeasurementMismatch(VerificationFailed):
    """A measured MRENCLAVE differs from the expected ENCLAVEHASH."""

    check = "mrenclave"


class SignerMismatch(VerificationFailed):
    """MRSIGNER differs from the expected one."""

    check = "mrsigner"


class MacInvalid(VerificationFailed):
    """A MAC does not verify."""

    check = "mac"


class Expired(VerificationFailed):
    """A signed document has expired."""

    check = "expiry"


class Rollback(VerificationFailed):
    """A document's version is not above the trusted one."""

    check = "rollback"


class ThresholdNotMet(VerificationFailed):
    """Fewer distinct authorized keys signed than the threshold demands."""

    check = "threshold"


class PlatformMismatch(VerificationFailed):
    """A platform-mode document is bound to another platform (its ``platform_id`` differs)."""

    check = "platform_id"


class UntrustedRoot(VerificationFailed):
    """A certificate chain ends in a root other than the pinned one (DCAP collateral, quotes)."""

    check = "root"


class CollateralExpired(Expired):
    """DCAP collateral (TCB info, QE identity, CRLs, certificates) is not valid at that time."""

    check = "collateral-time"


class UnsupportedCollateral(VerificationFailed):
    """Well-formed collateral or quote that the verifier cannot use (e.g. TCB info v2)."""

    check = "collateral-format"


class ReportRefused(VerificationFailed):
    """A quoting enclave's local verification of a REPORT failed: its MAC does not verify
    under the QE's report key (targeted at another enclave, made on another CPU, or altered)."""

    check = "report"


class QuoteRefused(VerificationFailed):
    """The DCAP verification library refused a quote; ``library_message`` keeps its words.

    Attributes:
        library_message: the library's own message, unchanged.
    """

    check = "dcap-qvl"

    def __init__(
        self,
        message: str,
        *,
        library_message: str,
        expected: str | None = None,
        found: str | None = None,
        detail: tuple[str, ...] | list[str] = (),
    ) -> None:
        super().__init__(message, expected=expected, found=found, detail=detail)
        self.library_message = library_message


class PolicyDenied(SgxlaunchError):
    """A valid request that the owner's launch policy does not allow.

    Attributes:
        rule: the rule (id) that denied, or ``None`` when no rule matched.
        reasons: each reason as ``{rule, field, expected, found}`` (``detail`` has them as text).
    """

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        rule: str | None = None,
        detail: tuple[str, ...] | list[str] = (),
        reasons: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        super().__init__(message, detail=detail)
        self.rule = rule
        self.reasons = tuple(reasons)


__all__ = [
    "CollateralExpired",
    "Expired",
    "MacInvalid",
    "MalformedInput",
    "MeasurementMismatch",
    "PlatformMismatch",
    "PolicyDenied",
    "QuoteRefused",
    "QuotientInvalid",
    "ReportRefused",
    "Rollback",
    "SgxlaunchError",
    "SignatureInvalid",
    "SignerMismatch",
    "StoreDamaged",
    "ThresholdNotMet",
    "UnsupportedCollateral",
    "UntrustedRoot",
    "UsageError",
    "VerificationFailed",
]
