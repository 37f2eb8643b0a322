"""Mutated vector quotes: the parser answers only MalformedInput, and whatever it accepts the
verifier answers cleanly — a verified result or one of the project's verification errors.

Corpus per vector quote: every single-bit flip (bit ``offset % 8`` of every byte), every
length field set to 0, to its maximum and to ±1, and every byte set to 0x00 and 0xFF in the
header and length fields. The real quotes with collateral are then verified (a sample of the
accepted mutants: every 5th offset and every length-field mutant) at a time inside their
collateral window.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from sgxlaunch.attest.verify import Collateral, VerifiedQuote, verify_quote
from sgxlaunch.errors import MalformedInput, VerificationFailed
from sgxlaunch.formats.quote import Quote, parse_quote
from tests.support.dcap import QUOTES, SGX, TDX, TDX_OUTDATED, Case, quote_bytes, shared


def _length_fields(quote: Quote) -> list[tuple[int, str]]:
    """(offset, struct format) of every length or type field of a parsed quote."""
    fields = [(quote.signed_size, "<I")]
    if quote.version == 5:
        fields += [(48, "<H"), (50, "<I")]
    cert = quote.signature_data.certification_data
    fields += [(cert.offset - 6, "<H"), (cert.offset - 4, "<I")]
    auth_size_offset = cert.offset - 6 - len(quote.signature_data.qe_auth_data) - 2
    fields.append((auth_size_offset, "<H"))
    if quote.version != 3:
        outer = quote.signed_size + 4 + 128
        fields += [(outer, "<H"), (outer + 2, "<I")]
    return fields


def mutants(data: bytes) -> Iterator[tuple[str, bytes]]:
    quote = parse_quote(data)
    for offset in range(len(data)):
        flipped = bytearray(data)
        flipped[offset] ^= 1 << (offset % 8)
        yield f"flip@{offset}", bytes(flipped)
    for offset, fmt in _length_fields(quote):
        (value,) = struct.unpack_from(fmt, data, offset)
        top = (1 << (8 * struct.calcsize(fmt))) - 1
        for new in {0, top, max(value - 1, 0), min(value + 1, top)}:
            patched = bytearray(data)
            struct.pack_into(fmt, patched, offset, new)
            yield f"len@{offset}={new}", bytes(patched)
    for offset in range(48):
        for byte in (0x00, 0xFF):
            patched = bytearray(data)
            patched[offset] = byte
            yield f"header@{offset}={byte:#x}", bytes(patched)


@pytest.mark.slow
@pytest.mark.parametrize("name", QUOTES)
def test_mutated_quote_is_parsed_or_refused_as_malformed_input_only(name: str) -> None:
    data = quote_bytes(name)
    accepted = refused = 0
    for label, mutant in mutants(data):
        error: MalformedInput | None = None
        try:
            parse_quote(mutant)
        except MalformedInput as exc:
            error = exc
        if error is None:
            accepted += 1
            continue
        assert error.offset is not None, label
        refused += 1
    assert refused > 0 and accepted > 0


@pytest.mark.slow
@pytest.mark.parametrize("case", [SGX, TDX, TDX_OUTDATED], ids=lambda c: c.quote)
def test_mutated_real_quote_verifies_or_fails_cleanly(case: Case) -> None:
    data = quote_bytes(case.quote)
    collateral = Collateral.from_bytes(shared(case.collateral).read_bytes())
    outcomes: dict[str, int] = {}
    for label, mutant in mutants(data):
        if label.startswith("flip@") and int(label[5:]) % 5:
            continue
        try:
            result = verify_quote(mutant, collateral, case.inside)
        except (MalformedInput, VerificationFailed) as exc:
            outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
            continue
        assert isinstance(result, VerifiedQuote), label
        assert result.tcb_status == case.status, label
        outcomes["verified"] = outcomes.get("verified", 0) + 1
    assert outcomes.get("MalformedInput", 0) > 0
    assert outcomes.get("QuoteRefused", 0) > 0
