"""EINIT, one test per step of spec §4.2 (SDM December 2023 order), each asserting the exact
status (or the modelled fault) and, where two checks could both fire, which one wins."""

from __future__ import annotations

import hashlib

import pytest

from sgxlaunch.arch import Attributes, EinitToken, SgxStatus
from sgxlaunch.arch.constants import (
    HARDCODED_PKCS1_5_PADDING,
    SIGSTRUCT_HEADER_SDK_DEBUG,
    AttributeFlag,
)
from sgxlaunch.cpu import GeneralProtection, PageFault
from sgxlaunch.sigstruct import quotients
from tests.support.cpu import ALL64, DEBUG, PROD, KeyProbe, cpu, launch_le, mint, pending
from tests.support.keys import mrsigner


def _with_msr_signer(role: str = "app"):  # type: ignore[no-untyped-def]
    proc = cpu()
    proc.set_lepubkeyhash(mrsigner(role))
    return proc


def _token_setup(**pending_args: object):  # type: ignore[no-untyped-def]
    """A CPU whose MSRs hold the LE's signer, the LE running, and an app enclave pending."""
    proc = cpu()
    le = launch_le(proc)
    app = pending(proc, "app", **pending_args)  # type: ignore[arg-type]
    return proc, le, app


def _mint_for(le, app, **changes: object) -> EinitToken:  # type: ignore[no-untyped-def]
    token = mint(le, app.image.mrenclave(), app.sigstruct.mrsigner, app.attributes)
    return token.replace(**changes) if changes else token


# -- step 1 -----------------------------------------------------------------------------------


def test_einit_step01_misaligned_operands_fault() -> None:
    proc = _with_msr_signer()
    app = pending(proc)
    region = proc.allocate(3 * 4096)
    proc.write(region, app.sigstruct.to_bytes())
    with pytest.raises(GeneralProtection):
        proc.einit(region + 64, app.enclave.secs, region + 4096)
    with pytest.raises(GeneralProtection):
        proc.einit(region, app.enclave.secs, region + 4096 + 256)
    with pytest.raises(GeneralProtection):
        proc.einit(region, app.enclave.secs + 8, region + 4096)
    with pytest.raises(PageFault) as fault:
        proc.einit(region, region + 2 * 4096, region + 4096)
    assert fault.value.address == region + 2 * 4096


# -- step 3 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"header": bytes(16)},
        {"vendor": 0x1234},
        {"header2": bytes(16)},
        {"exponent": 65537},
        {"reserved1": b"\x01" + bytes(83)},
        {"reserved2": b"\x00\x01"},
        {"reserved3": b"\x01" + bytes(15)},
        {"reserved4": bytes(11) + b"\x01"},
        {"cet_attributes": 1},
    ],
    ids=lambda c: next(iter(c)),
)
def test_einit_step03_invalid_sig_struct(change: dict[str, object]) -> None:
    proc = _with_msr_signer()
    app = pending(proc)
    assert app.einit(app.sigstruct.replace(**change)) == SgxStatus.INVALID_SIG_STRUCT
    # Nothing was committed: the correct SIGSTRUCT still initializes the enclave.
    assert app.einit() == SgxStatus.SUCCESS


def test_einit_step03_sdk_typed_header_is_invalid_sig_struct() -> None:
    """Pinned: the SDK's HEADER with type 0x80000000 in bytes 12..15 fails the constant check,
    even when the signature covers it."""
    proc = _with_msr_signer()
    app = pending(proc, header=SIGSTRUCT_HEADER_SDK_DEBUG)
    assert app.sigstruct.header_type == "sdk-debug"
    assert app.einit() == SgxStatus.INVALID_SIG_STRUCT


def test_einit_step03_precedes_the_secs_page_check() -> None:
    """Step 3 runs before step 5: a bad header wins over an operand that is not a SECS."""
    proc = _with_msr_signer()
    app = pending(proc)
    tcs_page = app.enclave.tcs[0]
    region = proc.allocate(2 * 4096)
    proc.write(region, app.sigstruct.replace(vendor=7).to_bytes())
    assert proc.einit(region, tcs_page, region + 4096) == SgxStatus.INVALID_SIG_STRUCT


# -- step 4 -----------------------------------------------------------------------------------


def test_einit_step04_unmasked_event() -> None:
    proc = _with_msr_signer()
    app = pending(proc)
    proc.pend_interrupt()
    assert app.einit() == SgxStatus.UNMASKED_EVENT
    # The interrupt was delivered; a retry succeeds (the kernel's retry loop).
    assert app.einit() == SgxStatus.SUCCESS


def test_einit_step04_event_window_follows_step03() -> None:
    proc = _with_msr_signer()
    app = pending(proc)
    proc.pend_interrupt()
    assert app.einit(app.sigstruct.replace(exponent=5)) == SgxStatus.INVALID_SIG_STRUCT
    assert app.einit() == SgxStatus.UNMASKED_EVENT


def test_einit_step04_invalid_signature() -> None:
    proc = _with_msr_signer()
    app = pending(proc)
    # A signed field changed after signing (ISVSVN), quotients left as they were.
    assert app.einit(app.sigstruct.replace(isvsvn=9)) == SgxStatus.INVALID_SIGNATURE


def test_einit_step04_inconsistent_q1_q2_is_invalid_signature() -> None:
    proc = _with_msr_signer()
    app = pending(proc)
    q1 = int.from_bytes(app.sigstruct.q1, "little") + 1
    bad_q1 = app.sigstruct.replace(q1=q1.to_bytes(384, "little"))
    q2 = int.from_bytes(app.sigstruct.q2, "little") ^ 1
    bad_q2 = app.sigstruct.replace(q2=q2.to_bytes(384, "little"))
    assert app.einit(bad_q1) == SgxStatus.INVALID_SIGNATURE
    assert app.einit(bad_q2) == SgxStatus.INVALID_SIGNATURE


def test_einit_step04_signature_with_recomputed_quotients_still_checked() -> None:
    """Correct Q1/Q2 for a signature value that does not encode the message."""
    proc = _with_msr_signer()
    app = pending(proc)
    sig = app.sigstruct
    s = sig.signature_int ^ (1 << 100)
    q1, q2 = quotients(s, sig.modulus_int)
    forged = sig.replace(
        signature=s.to_bytes(384, "little"),
        q1=q1.to_bytes(384, "little"),
        q2=q2.to_bytes(384, "little"),
    )
    assert app.einit(forged) == SgxStatus.INVALID_SIGNATURE


# -- step 5 -----------------------------------------------------------------------------------


def test_einit_step05_operand_not_a_secs_page_faults() -> None:
    proc = _with_msr_signer()
    app = pending(proc)
    region = proc.allocate(2 * 4096)
    proc.write(region, app.sigstruct.to_bytes())
    tcs_page = app.enclave.tcs[0]
    with pytest.raises(PageFault) as fault:
        proc.einit(region, tcs_page, region + 4096)
    assert fault.value.address == tcs_page
    free_page = proc.free_epc_pages(1)[0]
    with pytest.raises(PageFault):
        proc.einit(region, free_page, region + 4096)


# -- step 6 -----------------------------------------------------------------------------------


def test_einit_step06_isvfamilyid_without_kss() -> None:
    proc = _with_msr_signer()
    app = pending(proc, isvfamilyid=b"\x01" * 16)
    assert app.einit() == SgxStatus.INVALID_SIG_STRUCT


def test_einit_step06_isvfamilyid_with_kss_is_committed() -> None:
    proc = cpu(kss=True)
    proc.set_lepubkeyhash(mrsigner("app"))
    flags = PROD | int(AttributeFlag.KSS)
    app = pending(proc, flags=flags, isvfamilyid=b"\x05" * 16, isvextprodid=b"\x06" * 16)
    assert app.einit() == SgxStatus.SUCCESS


# -- step 7 -----------------------------------------------------------------------------------


def test_einit_step07_already_initialized_faults() -> None:
    proc = _with_msr_signer()
    app = pending(proc)
    assert app.einit() == SgxStatus.SUCCESS
    with pytest.raises(GeneralProtection):
        app.einit()


# -- step 8 -----------------------------------------------------------------------------------


def test_einit_step08_enclavehash_mismatch() -> None:
    proc = _with_msr_signer()
    app = pending(proc, enclavehash=hashlib.sha256(b"another enclave").digest())
    assert app.einit() == SgxStatus.INVALID_MEASUREMENT


def test_einit_step08_one_changed_eextend_is_caught() -> None:
    """The SIGSTRUCT is for the image; the built enclave measured one chunk less."""
    from sgxlaunch.cpu import build_enclave, einit, program_image, secs_for
    from tests.support.cpu import sign_image

    proc = _with_msr_signer()
    image = program_image(KeyProbe)
    sig = sign_image(image, "app")
    last = image.pages[-1]
    partial = type(image)(
        size=image.size,
        ssaframesize=image.ssaframesize,
        pages=(*image.pages[:-1], type(last)(last.offset, last.secinfo_flags, last.data, 0x7FFF)),
    )
    built = build_enclave(proc, partial, secs_for(sig, size=image.size, ssaframesize=1))
    assert einit(proc, built.secs, sig, None) == SgxStatus.INVALID_MEASUREMENT


# -- step 9 -----------------------------------------------------------------------------------


def test_einit_step09_mrsigner_is_sha256_of_modulus() -> None:
    proc = _with_msr_signer()
    app = pending(proc)
    assert app.einit() == SgxStatus.SUCCESS
    info = proc.secs_info(app.enclave.secs)
    assert info["mrsigner"] == hashlib.sha256(app.sigstruct.modulus).digest() == mrsigner("app")


# -- step 10 ----------------------------------------------------------------------------------


def test_einit_step10_einittoken_key_needs_the_msr_signer() -> None:
    proc = cpu()  # MSRs hold Intel's hash
    app = pending(proc, flags=PROD | int(AttributeFlag.EINITTOKEN_KEY))
    assert app.einit() == SgxStatus.INVALID_ATTRIBUTE
    proc.set_lepubkeyhash(mrsigner("app"))
    assert app.einit() == SgxStatus.SUCCESS


def test_einit_step10_precedes_the_token_check() -> None:
    """A non-LE signer asking for EINITTOKEN_KEY fails at step 10 even with a zero token."""
    proc = _with_msr_signer("other")
    app = pending(proc, flags=PROD | int(AttributeFlag.EINITTOKEN_KEY))
    assert app.einit() == SgxStatus.INVALID_ATTRIBUTE


def test_einit_step10_provisionkey_is_not_controlled() -> None:
    proc = _with_msr_signer()
    app = pending(proc, flags=PROD | int(AttributeFlag.PROVISIONKEY))
    assert app.einit() == SgxStatus.SUCCESS


# -- step 11 ----------------------------------------------------------------------------------


def test_einit_step11_attributes_under_mask_differ() -> None:
    proc = _with_msr_signer()
    # SIGSTRUCT says production; the SECS asks for DEBUG, and the mask covers DEBUG.
    app = pending(proc, flagsmask=ALL64, secs_flags=DEBUG)
    assert app.einit() == SgxStatus.INVALID_ATTRIBUTE


def test_einit_step11_xfrm_under_mask_differs() -> None:
    proc = _with_msr_signer()
    app = pending(proc, xfrm=0x3, xfrmmask=ALL64, secs_xfrm=0x7)
    assert app.einit() == SgxStatus.INVALID_ATTRIBUTE


def test_einit_step11_unmasked_difference_is_allowed() -> None:
    proc = _with_msr_signer()
    app = pending(proc, xfrm=0x3, xfrmmask=0x3, secs_xfrm=0x7)
    assert app.einit() == SgxStatus.SUCCESS


def test_einit_step11_zero_masks_accepted() -> None:
    """Pinned: the 2018-only rule "reserved ATTRIBUTEMASK bits must be set" is not enforced."""
    proc = _with_msr_signer()
    app = pending(proc, flagsmask=0, xfrmmask=0, miscmask=0)
    assert app.einit() == SgxStatus.SUCCESS


# -- step 12 ----------------------------------------------------------------------------------


def test_einit_step12_miscselect_under_mask_differs() -> None:
    proc = _with_msr_signer()
    app = pending(proc, miscselect=0, secs_miscselect=1)
    assert app.einit() == SgxStatus.INVALID_ATTRIBUTE
    unmasked = pending(proc, miscselect=0, miscmask=0, secs_miscselect=1)
    assert unmasked.einit() == SgxStatus.SUCCESS


# -- step 13 ----------------------------------------------------------------------------------


def test_einit_step13_cet_fields_are_reserved_on_a_part_without_cet() -> None:
    """The part has no CET (CPUID.(12H,1):EAX[6] = 0): step 13 is skipped, and a SIGSTRUCT
    carrying CET attributes or a CET mask is refused as reserved-not-zero (step 3)."""
    proc = _with_msr_signer()
    app = pending(proc, cet_attributes_mask=0xFF)
    assert app.einit() == SgxStatus.INVALID_SIG_STRUCT
    plain = pending(proc)
    assert plain.einit() == SgxStatus.SUCCESS


# -- step 14 ----------------------------------------------------------------------------------


def test_einit_step14_zero_token_needs_the_msr_signer() -> None:
    proc = cpu()  # Intel's hash in the MSRs
    app = pending(proc)
    assert app.einit() == SgxStatus.INVALID_EINITTOKEN
    proc.set_lepubkeyhash(mrsigner("app"))
    assert app.einit() == SgxStatus.SUCCESS


def test_einit_step14_invalid_token_fields_are_not_examined() -> None:
    proc = _with_msr_signer()
    app = pending(proc)
    junk = EinitToken(valid=0, mrenclave=b"\x11" * 32, cpusvnle=b"\xff" * 16, mac=b"\x22" * 16)
    assert app.einit(token=junk) == SgxStatus.SUCCESS


def test_einit_step14_valid_bit_zero_with_reserved_bits_is_invalid_path() -> None:
    """VALID = 2 (bit 0 clear): the token counts as invalid; the signer decides."""
    proc = cpu()
    app = pending(proc)
    assert app.einit(token=EinitToken(valid=2).to_bytes()) == SgxStatus.INVALID_EINITTOKEN


# -- steps 15-20 (a token minted by a launch enclave) -----------------------------------------


def test_einit_token_from_launch_enclave_accepted() -> None:
    _proc, le, app = _token_setup()
    assert app.einit(token=_mint_for(le, app)) == SgxStatus.SUCCESS


def test_einit_step15_debug_le_token_for_production_enclave() -> None:
    _proc, le, app = _token_setup()
    token = _mint_for(le, app, maskedattributesle=Attributes(flags=DEBUG, xfrm=0))
    assert app.einit(token=token) == SgxStatus.INVALID_EINITTOKEN


def test_einit_step15_debug_le_token_accepted_for_debug_enclave() -> None:
    """A token minted by a real debug launch enclave launches a debug enclave."""
    proc = cpu()
    le = launch_le(proc, flags=DEBUG | int(AttributeFlag.EINITTOKEN_KEY))
    app = pending(proc, flags=DEBUG)
    token = _mint_for(le, app)
    assert token.maskedattributesle.flags & AttributeFlag.DEBUG
    assert app.einit(token=token) == SgxStatus.SUCCESS
    prod = pending(proc)
    prod_token = _mint_for(le, prod)
    assert prod.einit(token=prod_token) == SgxStatus.INVALID_EINITTOKEN


@pytest.mark.parametrize(
    "change",
    [
        {"valid": 3},
        {"reserved1": b"\x01" + bytes(43)},
        {"reserved2": bytes(31) + b"\x01"},
        {"reserved3": b"\x80" + bytes(31)},
        {"reserved4": b"\x01" + bytes(22)},
    ],
    ids=lambda c: next(iter(c)),
)
def test_einit_step16_token_reserved_not_zero(change: dict[str, object]) -> None:
    _proc, le, app = _token_setup()
    assert app.einit(token=_mint_for(le, app, **change)) == SgxStatus.INVALID_EINITTOKEN


def test_einit_step17_token_cpusvn_beyond_platform() -> None:
    proc, le, app = _token_setup()
    beyond = bytes([proc.cpusvn[0] + 1]) + proc.cpusvn[1:]
    assert app.einit(token=_mint_for(le, app, cpusvnle=beyond)) == SgxStatus.INVALID_CPUSVN


def test_einit_step18_token_mac_mismatch() -> None:
    _proc, le, app = _token_setup()
    token = _mint_for(le, app)
    flipped = bytes([token.mac[0] ^ 1]) + token.mac[1:]
    assert app.einit(token=token.replace(mac=flipped)) == SgxStatus.INVALID_EINITTOKEN
    # A key-derivation input altered after the MAC (KEYID) is caught here as well.
    keyid = bytes([token.keyid[0] ^ 1]) + token.keyid[1:]
    assert app.einit(token=token.replace(keyid=keyid)) == SgxStatus.INVALID_EINITTOKEN
    assert app.einit(token=token) == SgxStatus.SUCCESS


def test_einit_step18_key_derived_under_current_msr() -> None:
    proc, le, app = _token_setup()
    token = _mint_for(le, app)
    proc.set_lepubkeyhash(mrsigner("other"))
    assert app.einit(token=token) == SgxStatus.INVALID_EINITTOKEN
    proc.set_lepubkeyhash(mrsigner("le"))
    assert app.einit(token=token) == SgxStatus.SUCCESS


def test_einit_step19_token_for_another_enclave() -> None:
    _proc, le, app = _token_setup()
    other = mint(le, hashlib.sha256(b"x").digest(), app.sigstruct.mrsigner, app.attributes)
    assert app.einit(token=other) == SgxStatus.INVALID_MEASUREMENT
    wrong_signer = mint(le, app.image.mrenclave(), mrsigner("other"), app.attributes)
    assert app.einit(token=wrong_signer) == SgxStatus.INVALID_MEASUREMENT


def test_einit_step20_token_attributes_differ() -> None:
    _proc, le, app = _token_setup()
    other = mint(
        le,
        app.image.mrenclave(),
        app.sigstruct.mrsigner,
        Attributes(flags=app.attributes.flags, xfrm=0x7),
    )
    assert app.einit(token=other) == SgxStatus.INVALID_ATTRIBUTE


# -- step 21 ----------------------------------------------------------------------------------


def test_einit_step21_commit() -> None:
    proc = _with_msr_signer()
    app = pending(proc, isvprodid=0x1234, isvsvn=7)
    before = proc.secs_info(app.enclave.secs)
    assert not before["initialized"] and before["mrenclave"] == bytes(32)
    assert app.einit() == SgxStatus.SUCCESS
    info = proc.secs_info(app.enclave.secs)
    assert info["initialized"]
    assert info["attributes_flags"] == PROD | int(AttributeFlag.INIT)
    assert info["mrenclave"] == app.image.mrenclave()
    assert info["mrsigner"] == mrsigner("app")
    assert (info["isvprodid"], info["isvsvn"]) == (0x1234, 7)
    enclave = proc.state.secs_state[(app.enclave.secs - proc.epc_base) >> 12]
    assert enclave.padding == HARDCODED_PKCS1_5_PADDING


# -- which one wins: the adjacent pairs of the step list -------------------------------------


def test_einit_step04_wins_over_step05() -> None:
    """SDM EINIT: the event window and the signature (step 4) come before the SECS page check
    (step 5): with RCX on a TCS page, a pending interrupt answers SGX_UNMASKED_EVENT and a bad
    signature SGX_INVALID_SIGNATURE, not #PF; alone, the TCS operand faults."""
    proc = _with_msr_signer()
    app = pending(proc)
    tcs_page = app.enclave.tcs[0]
    region = proc.allocate(2 * 4096)
    proc.write(region, app.sigstruct.to_bytes())
    proc.pend_interrupt()
    assert proc.einit(region, tcs_page, region + 4096) == SgxStatus.UNMASKED_EVENT
    proc.write(region, app.sigstruct.replace(isvsvn=9).to_bytes())
    assert proc.einit(region, tcs_page, region + 4096) == SgxStatus.INVALID_SIGNATURE
    proc.write(region, app.sigstruct.to_bytes())
    with pytest.raises(PageFault):
        proc.einit(region, tcs_page, region + 4096)


def test_einit_step08_wins_over_step10() -> None:
    """SDM EINIT: the measurement (step 8) before EINITTOKEN_KEY's signer check (step 10)."""
    proc = cpu()  # MSRs hold Intel's hash: step 10 would fire
    wrong = hashlib.sha256(b"another image").digest()
    app = pending(proc, flags=PROD | int(AttributeFlag.EINITTOKEN_KEY), enclavehash=wrong)
    assert app.einit() == SgxStatus.INVALID_MEASUREMENT
    right = pending(proc, flags=PROD | int(AttributeFlag.EINITTOKEN_KEY))
    assert right.einit() == SgxStatus.INVALID_ATTRIBUTE  # step 10 alone


def test_einit_step08_wins_over_step11() -> None:
    """SDM EINIT: the measurement (step 8) before the attributes under ATTRIBUTEMASK (11)."""
    proc = _with_msr_signer()
    wrong = hashlib.sha256(b"another image").digest()
    both = pending(proc, secs_flags=DEBUG, flagsmask=ALL64, enclavehash=wrong)
    assert both.einit() == SgxStatus.INVALID_MEASUREMENT
    attributes_only = pending(proc, secs_flags=DEBUG, flagsmask=ALL64)
    assert attributes_only.einit() == SgxStatus.INVALID_ATTRIBUTE  # step 11 alone


def test_einit_step15_and_step16_both_answer_invalid_einittoken() -> None:
    """SDM EINIT steps 15 (a debug LE's token for a production enclave) and 16 (token reserved
    bits) share SGX_INVALID_EINITTOKEN, so their order cannot show; together they answer that
    status and nothing from a later step (the CPUSVN beyond the platform of step 17)."""
    proc, le, app = _token_setup()
    beyond = bytes([proc.cpusvn[0] + 1]) + proc.cpusvn[1:]
    debug_le = Attributes(flags=DEBUG, xfrm=0)
    for changes in (
        {"maskedattributesle": debug_le},
        {"valid": 3},
        {"maskedattributesle": debug_le, "valid": 3},
    ):
        token = _mint_for(le, app, cpusvnle=beyond, **changes)
        assert app.einit(token=token) == SgxStatus.INVALID_EINITTOKEN, changes


def test_einit_step16_wins_over_step17() -> None:
    """SDM EINIT: token reserved bytes (step 16, SGX_INVALID_EINITTOKEN) before its CPUSVN
    (step 17, SGX_INVALID_CPUSVN)."""
    proc, le, app = _token_setup()
    beyond = bytes([proc.cpusvn[0] + 1]) + proc.cpusvn[1:]
    token = _mint_for(le, app, cpusvnle=beyond, reserved2=bytes(31) + b"\x01")
    assert app.einit(token=token) == SgxStatus.INVALID_EINITTOKEN
    assert app.einit(token=_mint_for(le, app, cpusvnle=beyond)) == SgxStatus.INVALID_CPUSVN


def test_einit_step16_cet_masked_attributes_are_reserved_without_cet() -> None:
    """EINITTOKEN byte 212 (MASKEDATTRIBUTESLE's CET byte) is reserved on a part without CET
    (CPUID.(12H,1):EAX[6] = 0): step 16 answers SGX_INVALID_EINITTOKEN, before step 17's
    CPUSVN check would answer SGX_INVALID_CPUSVN."""
    proc, le, app = _token_setup()
    token = _mint_for(le, app, cet_masked_attributes_le=1)
    assert token.to_bytes()[212] == 1
    assert app.einit(token=token) == SgxStatus.INVALID_EINITTOKEN
    beyond = bytes([proc.cpusvn[0] + 1]) + proc.cpusvn[1:]
    both = _mint_for(le, app, cet_masked_attributes_le=1, cpusvnle=beyond)
    assert app.einit(token=both) == SgxStatus.INVALID_EINITTOKEN
    assert app.einit(token=_mint_for(le, app)) == SgxStatus.SUCCESS


def test_einit_step18_wins_over_step19() -> None:
    """SDM EINIT: the token MAC (step 18, SGX_INVALID_EINITTOKEN) before the token's
    MRENCLAVE (step 19, SGX_INVALID_MEASUREMENT)."""
    _proc, le, app = _token_setup()
    other = mint(le, hashlib.sha256(b"x").digest(), app.sigstruct.mrsigner, app.attributes)
    forged = other.replace(mac=bytes([other.mac[0] ^ 1]) + other.mac[1:])
    assert app.einit(token=forged) == SgxStatus.INVALID_EINITTOKEN
    assert app.einit(token=other) == SgxStatus.INVALID_MEASUREMENT


def test_einit_step19_wins_over_step20() -> None:
    """SDM EINIT: the token's MRENCLAVE/MRSIGNER (step 19) before its ATTRIBUTES (step 20)."""
    _proc, le, app = _token_setup()
    other_xfrm = Attributes(flags=app.attributes.flags, xfrm=0x7)
    both = mint(le, hashlib.sha256(b"x").digest(), app.sigstruct.mrsigner, other_xfrm)
    assert app.einit(token=both) == SgxStatus.INVALID_MEASUREMENT
    attributes_only = mint(le, app.image.mrenclave(), app.sigstruct.mrsigner, other_xfrm)
    assert app.einit(token=attributes_only) == SgxStatus.INVALID_ATTRIBUTE
