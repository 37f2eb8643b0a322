"""Every SIGSTRUCT in ../shared/vectors against the facts recorded in INDEX.json / manifest.json.

The recorded facts were computed by independent tools (PROVENANCE.md "How facts were computed");
here they are parsed from their hex strings and compared with what sgxlaunch reads and computes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from sgxlaunch import sigstruct
from sgxlaunch.arch import Attributes, Sigstruct
from sgxlaunch.errors import MalformedInput, SignatureInvalid
from tests.conftest import shared_vectors, sigstruct_vectors, vector_index
from tests.support.keys import rsa_key, vector_rsa_key

VECTORS = sigstruct_vectors()
VECTOR_IDS = [path for path, _ in VECTORS]
LE_SDK = "intel_ae_extracted/ratel-psw@184dc82b_libsgx_le.sigstruct.bin"
KSELFTEST = "kselftest/ksft_test_encl.sigstruct.bin"
SIG1 = "fortanix/sgxs-tools__tests__data__sig1.sigstruct.bin"


def _hex_int(text: str) -> int:
    assert text.startswith("0x"), text
    return int(text, 16)


def _load(path: str) -> bytes:
    return (shared_vectors() / path).read_bytes()


def _manifest() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (shared_vectors() / "generated" / "manifest.json").read_text()
    )
    return data


def test_vectors_are_all_found() -> None:
    assert len(VECTORS) >= 30
    assert LE_SDK in VECTOR_IDS
    assert KSELFTEST in VECTOR_IDS


@pytest.mark.parametrize(("path", "facts"), VECTORS, ids=VECTOR_IDS)
def test_vector_parses_strictly_and_round_trips(path: str, facts: dict[str, Any]) -> None:
    data = _load(path)
    assert len(data) == Sigstruct.SIZE
    sig = Sigstruct.from_bytes(data)
    assert sig.to_bytes() == data
    assert Sigstruct.from_bytes_raw(data) == sig
    assert sig.nonzero_reserved() is None


@pytest.mark.parametrize(("path", "facts"), VECTORS, ids=VECTOR_IDS)
def test_vector_verifies(path: str, facts: dict[str, Any]) -> None:
    assert facts["signature_valid"] is True
    assert facts["q1_ok"] is True
    assert facts["q2_ok"] is True
    sigstruct.verify(Sigstruct.from_bytes(_load(path)))


@pytest.mark.parametrize(("path", "facts"), VECTORS, ids=VECTOR_IDS)
def test_vector_yields_recorded_facts(path: str, facts: dict[str, Any]) -> None:
    sig = Sigstruct.from_bytes(_load(path))
    assert sig.mrsigner == bytes.fromhex(facts["mrsigner"])
    assert sig.enclavehash == bytes.fromhex(facts["mrenclave"])
    assert sig.isvprodid == facts["isvprodid"]
    assert sig.isvsvn == facts["isvsvn"]
    assert sig.attributes == Attributes(
        flags=_hex_int(facts["attributes.flags"]), xfrm=_hex_int(facts["attributes.xfrm"])
    )
    assert sig.attributemask == Attributes(
        flags=_hex_int(facts["attributemask.flags"]),
        xfrm=_hex_int(facts["attributemask.xfrm"]),
    )
    assert sig.miscselect == _hex_int(facts["miscselect"])
    assert sig.miscmask == _hex_int(facts["miscmask"])
    assert sig.cet_attributes == _hex_int(facts["cet_attributes"])
    assert sig.cet_attributes_mask == _hex_int(facts["cet_attributes_mask"])
    # DATE is recorded as the YYYYMMDD text of the u32 0xYYYYMMDD.
    assert sig.date == int(facts["date"], 16)
    assert sig.date_text() == facts["date"]
    assert sig.vendor == _hex_int(facts["vendor"])
    assert sig.swdefined == _hex_int(facts["swdefined"])
    assert sig.isvfamilyid == bytes.fromhex(facts["isvfamilyid"])
    assert sig.isvextprodid == bytes.fromhex(facts["isvextprodid"])
    assert sig.exponent == facts["exponent"]
    assert sig.modulus_int.bit_length() == facts["modulus_bits"]
    assert sig.header == bytes.fromhex(facts["header_hex"])
    assert sig.header_type == ("standard" if facts["header_ok"] else "sdk-debug")
    assert hashlib.sha256(sig.signed_bytes()).hexdigest() == facts["signed_data_sha256"]


@pytest.mark.parametrize(("path", "facts"), VECTORS, ids=VECTOR_IDS)
def test_vector_file_hash_matches_index(path: str, facts: dict[str, Any]) -> None:
    assert hashlib.sha256(_load(path)).hexdigest() == vector_index()[path]["sha256"]


def test_sdk_typed_header_le_is_accepted_as_sdk_debug_and_verifies() -> None:
    facts = dict(VECTORS)[LE_SDK]
    data = _load(LE_SDK)
    # The SDK writes its "type" u32 = 0x80000000 into HEADER bytes 12..15.
    assert facts["header_ok"] is False
    assert int.from_bytes(data[12:16], "little") == 0x80000000
    sig = Sigstruct.from_bytes(data)
    assert sig.header_type == "sdk-debug"
    sigstruct.verify(sig)
    assert sig.to_bytes() == data


@pytest.mark.parametrize("header_type", [0x00000001, 0x40000000, 0x80000001, 0xFFFFFFFF])
def test_sdk_le_with_other_header_type_refused(header_type: int) -> None:
    data = bytearray(_load(LE_SDK))
    data[12:16] = header_type.to_bytes(4, "little")
    with pytest.raises(MalformedInput) as info:
        Sigstruct.from_bytes(bytes(data))
    assert info.value.field == "sigstruct.header"
    assert info.value.offset == 0


def test_sdk_le_header_type_zeroed_is_standard_but_breaks_signature() -> None:
    data = bytearray(_load(LE_SDK))
    data[12:16] = bytes(4)
    sig = Sigstruct.from_bytes(bytes(data))
    assert sig.header_type == "standard"
    with pytest.raises(SignatureInvalid):
        sigstruct.verify(sig)


def test_kselftest_sigstruct_zero_date_and_masks() -> None:
    facts = dict(VECTORS)[KSELFTEST]
    sig = Sigstruct.from_bytes(_load(KSELFTEST))
    assert facts["date"] == "00000000"
    assert sig.date == 0
    assert sig.date_text() == "00000000"
    assert sig.miscmask == 0
    assert sig.attributemask == Attributes(flags=0, xfrm=0)
    assert sig.vendor == 0
    sigstruct.verify(sig)
    key = rsa_key("owner-le")  # kselftest/sign_key.pem
    assert sigstruct.mrsigner_of(key.public_key()) == sig.mrsigner
    assert sig.mrsigner == bytes.fromhex(facts["mrsigner"])


def test_kselftest_sigstruct_resigned_with_selftest_key_is_identical() -> None:
    data = _load(KSELFTEST)
    key = rsa_key("owner-le")  # kselftest/sign_key.pem
    body = Sigstruct.from_bytes(data).replace(
        modulus=bytes(384), signature=bytes(384), q1=bytes(384), q2=bytes(384)
    )
    assert sigstruct.sign(body, sigstruct.RsaKeySigner(key)).to_bytes() == data


# -- generated/: re-sign from the recorded fields ---------------------------------------------

CASES = _manifest()["cases"]


def _body_from_fields(fields: dict[str, Any]) -> Sigstruct:
    assert fields["header_ok"] is True
    assert fields["header2_ok"] is True
    assert fields["exponent"] == 3
    return Sigstruct(
        vendor=_hex_int(fields["vendor"]),
        date=int(fields["date"], 16),
        swdefined=_hex_int(fields["swdefined"]),
        miscselect=_hex_int(fields["miscselect"]),
        miscmask=_hex_int(fields["miscmask"]),
        cet_attributes=_hex_int(fields["cet_attributes"]),
        cet_attributes_mask=_hex_int(fields["cet_attributes_mask"]),
        isvfamilyid=bytes.fromhex(fields["isvfamilyid"]),
        attributes=Attributes(
            flags=_hex_int(fields["attributes.flags"]), xfrm=_hex_int(fields["attributes.xfrm"])
        ),
        attributemask=Attributes(
            flags=_hex_int(fields["attributemask.flags"]),
            xfrm=_hex_int(fields["attributemask.xfrm"]),
        ),
        enclavehash=bytes.fromhex(fields["mrenclave"]),
        isvextprodid=bytes.fromhex(fields["isvextprodid"]),
        isvprodid=fields["isvprodid"],
        isvsvn=fields["isvsvn"],
    )


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_generated_case_resigned_is_byte_identical(case: dict[str, Any]) -> None:
    base = shared_vectors() / "generated"
    expected = (base / case["sig"]).read_bytes()
    fields = case["sigstruct_fields"]
    body = _body_from_fields(fields)
    key = vector_rsa_key("generated/" + case["key"])
    assert sigstruct.mrsigner_of(key.public_key()) == bytes.fromhex(case["expected_mrsigner"])
    signed = sigstruct.sign(body, sigstruct.RsaKeySigner(key))
    assert signed.to_bytes() == expected
    assert signed.mrsigner == bytes.fromhex(case["expected_mrsigner"])
    assert signed.enclavehash == bytes.fromhex(case["expected_mrenclave"])


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_generated_case_two_step_signing_is_byte_identical(case: dict[str, Any]) -> None:
    base = shared_vectors() / "generated"
    expected = (base / case["sig"]).read_bytes()
    body = _body_from_fields(case["sigstruct_fields"])
    key = vector_rsa_key("generated/" + case["key"])
    data = sigstruct.signing_data(body)
    assert len(data) == 256
    assert data == expected[0:128] + expected[900:1028]
    signature_be = sigstruct.RsaKeySigner(key).sign_pkcs1v15_sha256(data)
    assembled = sigstruct.assemble(data, key.public_key(), signature_be)
    assert assembled.to_bytes() == expected


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_generated_case_manifest_agrees_with_index(case: dict[str, Any]) -> None:
    facts = dict(VECTORS)["generated/" + case["sig"]]
    fields = case["sigstruct_fields"]
    for name in ("mrenclave", "mrsigner", "isvprodid", "isvsvn", "date", "attributes.flags"):
        assert facts[name] == fields[name]


# -- Fortanix sig1 raw pieces -----------------------------------------------------------------


def _sig1_piece(name: str) -> bytes:
    return (shared_vectors() / "fortanix" / f"sgxs__tests__data__sig1.{name}.bin").read_bytes()


def test_fortanix_sig1_modulus_is_stored_little_endian() -> None:
    sig = Sigstruct.from_bytes(_load(SIG1))
    key_n = _sig1_piece("key_n")
    assert key_n == sig.modulus
    assert key_n != sig.modulus[::-1]
    key = rsa_key("fortanix")
    n = key.public_key().public_numbers().n
    assert int.from_bytes(key_n, "little") == n
    assert sigstruct.mrsigner_of(key.public_key()) == sig.mrsigner


def test_fortanix_sig1_raw_signature_is_little_endian_over_data_digest() -> None:
    """sig/q1/q2.bin are a second signature with the same key, over the digest in data.bin.

    They are not the SIGSTRUCT's SIGNATURE/Q1/Q2 (different message); read little-endian they
    form a valid e=3 PKCS#1 v1.5 SHA-256 signature of the 32-byte digest data.bin with
    consistent quotients; read big-endian they do not.
    """
    sig = Sigstruct.from_bytes(_load(SIG1))
    n = int.from_bytes(_sig1_piece("key_n"), "little")
    raw_sig, q1, q2 = _sig1_piece("sig"), _sig1_piece("q1"), _sig1_piece("q2")
    digest = _sig1_piece("data")
    assert len(digest) == 32
    assert raw_sig != sig.signature
    assert raw_sig[::-1] != sig.signature

    s = int.from_bytes(raw_sig, "little")
    assert s < n
    em = pow(s, 3, n).to_bytes(384, "big")
    padding_prefix = sigstruct.expected_em(b"")[:352]
    assert em == padding_prefix + digest
    assert (int.from_bytes(q1, "little"), int.from_bytes(q2, "little")) == sigstruct.quotients(s, n)

    s_be = int.from_bytes(raw_sig, "big")
    assert pow(s_be, 3, n).to_bytes(384, "big")[:352] != padding_prefix
    assert int.from_bytes(q1, "big") != sigstruct.quotients(s, n)[0]
