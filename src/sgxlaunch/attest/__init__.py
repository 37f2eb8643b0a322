"""Layer 7, beside :mod:`sgxlaunch.launch`: DCAP quotes verified and appraised for the owner.

* :mod:`~sgxlaunch.attest.roots` — the pinned root (Intel's SGX Root CA, both encodings of its
  one key, or a root the caller names) and the check that a chain ends in it.
* :mod:`~sgxlaunch.attest.verify` — collateral, and verification: our strict parse
  (:mod:`sgxlaunch.formats.quote`), our root check, then the ``dcap-qvl`` library, whose
  refusals become the project's errors with its words kept.
* :mod:`~sgxlaunch.attest.appraisal` — the owner's appraisal document (owner-signed through
  :mod:`sgxlaunch.policy`'s envelope and root, or unsigned for ad-hoc checks) and its verdict
  with expected-vs-found findings.

Bytes and ``now`` in; no files, clock or environment (``docs/attest.md``).
"""

from sgxlaunch.attest.appraisal import (
    APPRAISAL_KEY,
    APPRAISAL_PAYLOAD_TYPE,
    Finding,
    IdentityRule,
    QuoteAppraisal,
    Verdict,
    appraise,
    install_appraisal,
    load_appraisal,
    verify_signed_appraisal,
)
from sgxlaunch.attest.roots import (
    INTEL_SGX_ROOT_CA_2033,
    INTEL_SGX_ROOT_CA_2049,
    INTEL_SGX_ROOT_SPKI_SHA256,
    TrustAnchor,
)
from sgxlaunch.attest.verify import (
    TCB_STATUSES,
    Collateral,
    VerifiedQuote,
    verify_quote,
)

__all__ = [
    "APPRAISAL_KEY",
    "APPRAISAL_PAYLOAD_TYPE",
    "INTEL_SGX_ROOT_CA_2033",
    "INTEL_SGX_ROOT_CA_2049",
    "INTEL_SGX_ROOT_SPKI_SHA256",
    "TCB_STATUSES",
    "Collateral",
    "Finding",
    "IdentityRule",
    "QuoteAppraisal",
    "TrustAnchor",
    "Verdict",
    "VerifiedQuote",
    "appraise",
    "install_appraisal",
    "load_appraisal",
    "verify_quote",
    "verify_signed_appraisal",
]
