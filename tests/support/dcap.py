"""DCAP vectors for the quote and attestation tests: where they are and what they should give.

Expected values come from ``../shared/vectors/PROVENANCE.md`` (statuses, advisories, validity
windows) and ``../shared/reference/dcap-quote-spec.md`` §4.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "vectors"
LOCAL = REPO / "tests" / "vectors" / "dcap"

QUOTES = (
    "dcap/phala/sgx_quote",
    "dcap/phala/tdx_quote",
    "dcap/phala/tdx_quote_outdated",
    "dcap/qvl_sampleData/quote.dat",
    "dcap/qvl_sampleData/tdx/quote.dat",
    "fortanix/dcap-ql_tests/quote_pck_cert_chain.bin",
    "fortanix/dcap-ql_tests/quote_pck_cert_chain_corrupted.bin",
    "fortanix/dcap-ql_tests/quote_raw_tcb.bin",
    "fortanix/pcs_tests_data/quote.bin",
    "openenclave/intel_qve_thread_test__data__sgx_quote",
    "openenclave/host_verify__data__sgx_report_bad.bin",
)
"""Every DCAP quote in the shared vectors."""

OE_HEADER = 16
"""``host_verify__data__sgx_report_bad.bin`` starts with Open Enclave's 16-byte
``oe_report_header_t`` (version 1, type 2, size); the quote follows (PROVENANCE.md §5)."""


def t(text: str) -> datetime:
    """An RFC 3339 ``...Z`` time."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass(frozen=True)
class Case:
    """A real quote with collateral, and what PROVENANCE.md says it gives."""

    quote: str
    collateral: str
    start: datetime
    end: datetime
    status: str | None
    advisories: tuple[str, ...]
    refusal: str | None = None

    @property
    def inside(self) -> datetime:
        return self.start + (self.end - self.start) / 2


SGX = Case(
    "dcap/phala/sgx_quote",
    "dcap/phala/sgx_quote_collateral.json",
    t("2025-06-19T10:56:11Z"),
    t("2025-07-19T10:01:18Z"),
    "ConfigurationAndSWHardeningNeeded",
    ("INTEL-SA-00289", "INTEL-SA-00615"),
)
TDX = Case(
    "dcap/phala/tdx_quote",
    "dcap/phala/tdx_quote_collateral.json",
    t("2025-06-19T10:32:27Z"),
    t("2025-07-19T10:00:35Z"),
    "UpToDate",
    (),
)
TDX_OUTDATED = Case(
    "dcap/phala/tdx_quote_outdated",
    "dcap/phala/tdx_quote_outdated_collateral.json",
    t("2026-02-18T10:58:51Z"),
    t("2026-03-20T10:42:15Z"),
    None,
    (),
    "No matching TCB level found",
)
QVL_SAMPLE_TIME = t("2025-01-01T00:00:00Z")
"""Inside the QVL sample set's window (spec §4.1: tests must pin t)."""


def shared(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.fail(f"shared vector missing: expected {path}")
    return path


def quote_bytes(name: str) -> bytes:
    """The quote of vector ``name`` (the Open Enclave header removed where there is one)."""
    data = shared(name).read_bytes()
    return data[OE_HEADER:] if name.startswith("openenclave/host_verify") else data


def qvl_sample_collateral() -> Path:
    """Intel QVL's sample collateral in dcap-qvl's form (made by make_qvl_sample_collateral.py)."""
    return LOCAL / "qvl_sample_collateral.json"


def qvl_sample_root() -> Path:
    return shared("dcap/qvl_sampleData/trustedRootCaCert.pem")
