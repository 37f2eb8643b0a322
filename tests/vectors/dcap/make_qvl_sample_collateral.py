"""Build ``qvl_sample_collateral.json`` from Intel QVL's sample data (``../shared/vectors``).

Intel's QVL ships its sample collateral as separate files (PROVENANCE.md §5,
``dcap/qvl_sampleData/``); dcap-qvl reads one JSON document. This script puts the same bytes
into that form: the PCK signing chain, both CRLs as hex DER, the TCB info and QE identity
bodies exactly as signed (the text between ``{"tcbInfo":`` / ``{"enclaveIdentity":`` and
``,"signature"``) with their hex signatures, the TCB signing chain for both, and — because the
sample quote carries certification data type 1, not the chain — ``pck_certificate_chain``
(PCK certificate, then the signing chain).

Run from the repository root: ``python tests/vectors/dcap/make_qvl_sample_collateral.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parents[2].parent / "shared" / "vectors" / "dcap" / "qvl_sampleData"


def signed_body(path: Path, key: str) -> tuple[str, str]:
    text = path.read_text()
    match = re.fullmatch(r'\{"' + key + r'":(\{.*\}),"signature":"([0-9a-fA-F]+)"\}\s*', text, re.S)
    if match is None:
        raise SystemExit(f"{path}: not a signed {key} document")
    return match.group(1), match.group(2)


def main() -> None:
    tcb_info, tcb_sig = signed_body(SAMPLE / "tcbInfo.json", "tcbInfo")
    qe_identity, qe_sig = signed_body(SAMPLE / "qeIdentity.json", "enclaveIdentity")
    signing_chain = (SAMPLE / "tcbSignChain.pem").read_text()
    pck_chain = (SAMPLE / "pckSignChain.pem").read_text()
    collateral = {
        "pck_crl_issuer_chain": pck_chain,
        "root_ca_crl": (SAMPLE / "rootCaCrl.der").read_bytes().hex(),
        "pck_crl": (SAMPLE / "intermediateCaCrl.der").read_bytes().hex(),
        "tcb_info_issuer_chain": signing_chain,
        "tcb_info": tcb_info,
        "tcb_info_signature": tcb_sig,
        "qe_identity_issuer_chain": signing_chain,
        "qe_identity": qe_identity,
        "qe_identity_signature": qe_sig,
        "pck_certificate_chain": (SAMPLE / "pckCert.pem").read_text() + pck_chain,
    }
    out = HERE / "qvl_sample_collateral.json"
    out.write_text(json.dumps(collateral, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
