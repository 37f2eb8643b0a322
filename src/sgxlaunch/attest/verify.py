"""Verification of DCAP quotes: our strict parse, our root check, then ``dcap-qvl``.

The chain, CRL, TCB-level and QE-identity logic is the library's (``dcap-qvl`` ≥ 0.7, < 0.8;
spec §3 gives Intel's procedure, §5.3 where dcap-qvl departs from it). What this module adds:

* the quote is parsed by :func:`sgxlaunch.formats.quote.parse_quote` first, so malformed bytes
  are :class:`~sgxlaunch.errors.MalformedInput` with an offset, never a library message;
* the collateral document is read strictly (known fields only, each of the right kind);
* every certificate chain in the collateral and the quote's own PCK chain must end in the
  pinned root's key (:mod:`sgxlaunch.attest.roots`) — checked *before* the library, which would
  report a wrong root as a CRL signature failure;
* the library's refusals become the project's errors, with its message kept word for word in
  ``detail`` (and in :attr:`~sgxlaunch.errors.QuoteRefused.library_message`): time-window
  failures → :class:`~sgxlaunch.errors.CollateralExpired` (with the collateral's window),
  TCB info version 2 → :class:`~sgxlaunch.errors.UnsupportedCollateral`, the rest →
  :class:`~sgxlaunch.errors.QuoteRefused`.

Known limits of dcap-qvl 0.7 that surface here as refusals (``docs/attest.md``): the QE
authentication data must be exactly 32 bytes; the PCK chain must be in the quote (certification
data type 5) or in the collateral's ``pck_certificate_chain``; quotes of DEBUG enclaves are
always refused; a Revoked TCB is an error, not a status; TCB info v2 is not read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dcap_qvl
from cryptography import x509

from sgxlaunch.attest.roots import X509_ERRORS, TrustAnchor, check_chain_root, pem_certificates
from sgxlaunch.errors import (
    CollateralExpired,
    MalformedInput,
    QuoteRefused,
    UnsupportedCollateral,
    UsageError,
)
from sgxlaunch.formats.quote import CERT_TYPE_PCK_CHAIN, Quote, parse_quote
from sgxlaunch.policy import _json

TCB_STATUSES = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
)
"""The TCB statuses a verified quote can carry (QVL ``Json/TcbLevel.cpp``; a Revoked TCB is
refused by dcap-qvl, never returned)."""

MAX_COLLATERAL_SIZE = 1 << 20
"""Largest collateral document read (1 MiB; PCS collateral is about 15 KB)."""

_CHAIN_FIELDS = ("pck_crl_issuer_chain", "tcb_info_issuer_chain", "qe_identity_issuer_chain")
_HEX_FIELDS = ("root_ca_crl", "pck_crl", "tcb_info_signature", "qe_identity_signature")
_JSON_FIELDS = ("tcb_info", "qe_identity")
_REQUIRED = (
    "pck_crl_issuer_chain",
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "tcb_info",
    "tcb_info_signature",
    "qe_identity_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
)
_OPTIONAL = ("pck_certificate_chain",)
_TIME_WORDS = ("expired", "in the future", "notvalidyet", "not valid yet", "crlexpired")


@dataclass(frozen=True, slots=True)
class Collateral:
    """A DCAP collateral document in dcap-qvl's JSON form (the PCS/PCCS responses, as served).

    Attributes:
        fields: every field as its text (PEM chains, hex CRLs and signatures, the signed TCB
            info and QE identity JSON exactly as served).
        handle: the library's own object for the same document.
    """

    fields: Mapping[str, str]
    handle: Any

    @classmethod
    def from_bytes(cls, data: bytes) -> Collateral:
        """Read a collateral document strictly.

        Checks, in order: size ≤ :data:`MAX_COLLATERAL_SIZE`; strict JSON (no duplicate keys,
        …); an object with exactly the nine fields of ``QuoteCollateralV3`` plus, optionally,
        ``pck_certificate_chain``; every value a string; the CRLs and signatures non-empty
        hex; the chains hold PEM certificates; ``tcb_info`` and ``qe_identity`` are JSON
        objects; then the library's ``QuoteCollateralV3`` is built from the checked values.

        Raises:
            MalformedInput: naming the field at fault.
        """
        if len(data) > MAX_COLLATERAL_SIZE:
            raise MalformedInput(
                f"collateral is {len(data)} bytes, more than {MAX_COLLATERAL_SIZE}",
                field="collateral",
            )
        doc = _json.expect_object(_json.loads_strict(data, what="collateral"), "collateral")
        _json.check_keys(doc, required=_REQUIRED, optional=_OPTIONAL, field="collateral")
        fields = {key: _json.get_str(doc, key, "collateral") for key in doc}
        binary: dict[str, bytes] = {}
        for key in _HEX_FIELDS:
            text = fields[key]
            try:  # fromhex skips whitespace: the length check refuses it
                binary[key] = bytes.fromhex(text)
            except ValueError:
                binary[key] = b""
            if not text or 2 * len(binary[key]) != len(text):
                raise MalformedInput(
                    f"collateral.{key} must be non-empty hex", field=f"collateral.{key}"
                )
        for key in (*_CHAIN_FIELDS, *(k for k in _OPTIONAL if k in fields)):
            if "-----BEGIN CERTIFICATE-----" not in fields[key]:
                raise MalformedInput(
                    f"collateral.{key} holds no PEM certificate", field=f"collateral.{key}"
                )
        for key in _JSON_FIELDS:
            if not fields[key].startswith("{"):
                raise MalformedInput(
                    f"collateral.{key} must be the signed JSON object", field=f"collateral.{key}"
                )
        try:
            if "pck_certificate_chain" in fields:  # the constructor has no place for it
                handle = dcap_qvl.QuoteCollateralV3.from_json(data.decode("utf-8"))
            else:  # the same object without the library parsing the JSON a second time
                handle = dcap_qvl.QuoteCollateralV3(**(fields | binary))
        except (ValueError, TypeError) as exc:
            raise MalformedInput(
                "collateral is not readable by dcap-qvl",
                field="collateral",
                detail=[f"dcap-qvl: {exc}"],
            ) from None
        return cls(fields, handle)


@dataclass(frozen=True, slots=True)
class VerifiedQuote:
    """A quote that dcap-qvl verified against collateral under a pinned root.

    Attributes:
        quote: the parsed quote.
        tcb_status: the platform's TCB status (one of :data:`TCB_STATUSES`).
        advisory_ids: Intel security advisories that apply, as the library lists them.
        at: the time the collateral was checked at.
        root: the name of the trust anchor.
    """

    quote: Quote
    tcb_status: str
    advisory_ids: tuple[str, ...]
    at: datetime
    root: str

    def describe(self) -> dict[str, Any]:
        return {
            "tcb_status": self.tcb_status,
            "advisory_ids": list(self.advisory_ids),
            "at": _json.format_time(self.at),
            "root": self.root,
        }


def check_roots(quote: Quote, collateral: Collateral, anchor: TrustAnchor) -> None:
    """Every chain in the collateral, and the quote's PCK chain, ends in ``anchor``'s key.

    Checks, in order: ``pck_crl_issuer_chain``, ``tcb_info_issuer_chain``,
    ``qe_identity_issuer_chain``, ``pck_certificate_chain`` (if present), the quote's type-5
    certification data (if that is its type).

    Raises:
        UntrustedRoot: a chain ends elsewhere (names the chain, the expected and found key).
        MalformedInput: a chain does not parse.
    """
    for key in (*_CHAIN_FIELDS, *(k for k in _OPTIONAL if k in collateral.fields)):
        check_chain_root(collateral.fields[key].encode("ascii", "replace"), anchor, key)
    chain = quote.signature_data.certification_data.pem_chain()
    if chain is not None:
        check_chain_root(chain, anchor, "quote PCK certificate chain")


def check_pck_source(quote: Quote, collateral: Collateral) -> None:
    """The PCK chain is available to the library: in the quote (type 5) or in the collateral.

    Raises:
        UnsupportedCollateral: neither holds it.
    """
    cert_type = quote.signature_data.certification_data.cert_type
    if cert_type != CERT_TYPE_PCK_CHAIN and "pck_certificate_chain" not in collateral.fields:
        raise UnsupportedCollateral(
            "the PCK certificate chain is neither in the quote nor in the collateral",
            expected="certification data type 5, or collateral.pck_certificate_chain",
            found=f"certification data type {cert_type}, no pck_certificate_chain",
        )


def verify_quote(
    data: bytes,
    collateral: Collateral,
    now: datetime,
    *,
    anchor: TrustAnchor | None = None,
) -> VerifiedQuote:
    """Parse and verify a quote against collateral at ``now``, under a pinned root.

    Checks, in order: ``now`` is timezone-aware; the quote parses strictly
    (:func:`~sgxlaunch.formats.quote.parse_quote`); every chain ends in the anchor's key
    (:func:`check_roots`); the PCK chain is available (:func:`check_pck_source`); dcap-qvl's
    ``verify_with_root_ca`` (PCK chain and CRLs, TCB info and QE identity signatures and
    validity at ``now``, FMSPC/PCE-ID, QE report signature and binding, QE identity, quote
    signature, TCB level — spec §3 for Intel's order).

    Args:
        data: the quote bytes.
        collateral: the collateral (see :meth:`Collateral.from_bytes`).
        now: the time to check validity at (aware).
        anchor: the pinned root; Intel's SGX Root CA by default.

    Returns:
        The verified quote with its TCB status and advisories (not yet appraised).

    Raises:
        UsageError: ``now`` is naive.
        MalformedInput: the quote does not parse.
        UntrustedRoot: a chain ends in another root.
        CollateralExpired: the library refused on time; the collateral's window is given.
        UnsupportedCollateral: TCB info v2, or no PCK chain.
        QuoteRefused: any other refusal by the library (its message kept).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise UsageError("now must be a timezone-aware datetime (UTC)")
    anchor = anchor if anchor is not None else TrustAnchor.intel()
    quote = parse_quote(data)
    check_roots(quote, collateral, anchor)
    check_pck_source(quote, collateral)
    seconds = int(now.timestamp())
    try:
        report = dcap_qvl.verify_with_root_ca(bytes(data), collateral.handle, anchor.der, seconds)
    except ValueError as exc:
        raise library_error(str(exc), collateral, now) from None
    status = str(report.status)
    if status not in TCB_STATUSES:
        raise QuoteRefused(
            f"dcap-qvl returned an unknown TCB status {status!r}",
            library_message=status,
            expected=" | ".join(TCB_STATUSES),
            found=status,
        )
    return VerifiedQuote(
        quote, status, tuple(str(a) for a in report.advisory_ids), now, anchor.name
    )


# --- the library's errors, explained ------------------------------------------------------------


def library_error(
    message: str, collateral: Collateral, now: datetime
) -> CollateralExpired | UnsupportedCollateral | QuoteRefused:
    """The project's error for a dcap-qvl refusal ``message`` (kept whole in ``detail``)."""
    detail = [f"dcap-qvl: {line}" for line in message.splitlines() if line.strip()]
    short = message.removeprefix("Verification failed: ").splitlines()[0].strip()
    if _tcb_info_version(collateral) == 2:
        return UnsupportedCollateral(
            "TCB info v2 not supported: dcap-qvl 0.7 reads TCB info v3 only",
            expected="tcbInfo version 3",
            found="tcbInfo version 2",
            detail=detail,
        )
    lowered = message.lower().replace(" ", "")
    if any(word.replace(" ", "") in lowered for word in _TIME_WORDS):
        start, end = collateral_window(collateral)
        window = f"{_json.format_time(start)} to {_json.format_time(end)}"
        when = _json.format_time(now)
        if now < start:
            text = f"collateral not yet valid at {when} (valid from {window})"
        elif now >= end:  # webpki treats a CRL as expired at its nextUpdate instant
            text = f"collateral expired at {when} (valid from {window})"
        else:
            text = f"collateral not valid at {when}: {short}"
        return CollateralExpired(text, expected=f"a time from {window}", found=when, detail=detail)
    return QuoteRefused(
        f"quote refused by dcap-qvl: {short}", library_message=message, detail=detail
    )


def _tcb_info_version(collateral: Collateral) -> int | None:
    try:
        value = json.loads(collateral.fields["tcb_info"]).get("version")
    except (ValueError, AttributeError):
        return None
    return value if type(value) is int else None


def collateral_window(collateral: Collateral) -> tuple[datetime, datetime]:
    """The span in which every part of the collateral is valid (for explanations only).

    Start: the latest of the TCB info and QE identity ``issueDate``, the CRLs'
    ``thisUpdate`` and the certificates' ``notBefore``; end: the earliest ``nextUpdate`` and
    ``notAfter``. Parts that do not parse are left out (the library has refused them anyway).
    dcap-qvl accepts ``now == nextUpdate`` for the TCB info and QE identity but not for a CRL
    (webpki: expired at ``nextUpdate``), so when a CRL sets the end, the last valid second is
    the one before it.
    """
    starts: list[datetime] = []
    ends: list[datetime] = []
    for key in _JSON_FIELDS:
        try:
            doc = json.loads(collateral.fields[key])
            starts.append(_json.parse_time(doc["issueDate"], key))
            ends.append(_json.parse_time(doc["nextUpdate"], key))
        except (ValueError, KeyError, TypeError, MalformedInput):
            continue
    for key in ("root_ca_crl", "pck_crl"):
        try:
            crl = x509.load_der_x509_crl(bytes.fromhex(collateral.fields[key]))
            this_update, next_update = crl.last_update_utc, crl.next_update_utc
        except X509_ERRORS:
            continue
        starts.append(this_update)
        if next_update is not None:
            ends.append(next_update)
    for key in (*_CHAIN_FIELDS, *(k for k in _OPTIONAL if k in collateral.fields)):
        try:
            ders = pem_certificates(collateral.fields[key].encode("ascii", "replace"), key)
        except MalformedInput:
            continue
        for der in ders:
            try:
                cert = x509.load_der_x509_certificate(der)
                start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
            except X509_ERRORS:
                continue
            starts.append(start)
            ends.append(end)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return (max(starts, default=epoch), min(ends, default=epoch))
