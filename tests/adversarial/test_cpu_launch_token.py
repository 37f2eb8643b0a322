"""Attacks on the launch token: a token minted by the owner's launch enclave (EGETKEY inside an
enclave signed by the key whose hash is in the MSRs, itself initialized with a zero token) is
accepted by EINIT; the same token elsewhere, later or altered is refused by the step that
catches it (spec §4.2)."""

from __future__ import annotations

import pytest

from sgxlaunch.arch import Attributes, EinitToken, SgxStatus
from sgxlaunch.arch.constants import AttributeFlag
from sgxlaunch.cpu import cpusvn_beyond
from tests.support.cpu import LE_FLAGS, PROD, KeyProbe, KeyProbeTwin, cpu, launch_le, mint, pending
from tests.support.keys import mrsigner


def _platform(seed: bytes = b"cpu-A-seed-0123456789"):  # type: ignore[no-untyped-def]
    proc = cpu(seed)
    le = launch_le(proc)  # MSRs := LE signer; the LE itself runs on a zero token
    return proc, le


def _token(le, app) -> EinitToken:  # type: ignore[no-untyped-def]
    return mint(le, app.image.mrenclave(), app.sigstruct.mrsigner, app.attributes)


def test_le_minted_token_accepted() -> None:
    proc, le = _platform()
    app = pending(proc, "app")
    assert proc.lepubkeyhash == mrsigner("le") != app.sigstruct.mrsigner
    assert app.einit() == SgxStatus.INVALID_EINITTOKEN  # no token: refused
    assert app.einit(token=_token(le, app)) == SgxStatus.SUCCESS
    # The token's KEYIDs are fresh per request.
    again = pending(proc, "app")
    assert _token(le, again).keyid != _token(le, app).keyid


def test_token_from_other_cpu_rejected() -> None:
    _, le_a = _platform(b"cpu-A-seed-0123456789")
    proc_b, _ = _platform(b"cpu-B-seed-0123456789")
    app_on_a = pending(le_a.enclave.processor, "app")
    token = _token(le_a, app_on_a)
    app_on_b = pending(proc_b, "app")
    assert app_on_b.einit(token=token) == SgxStatus.INVALID_EINITTOKEN  # step 18
    assert app_on_a.einit(token=token) == SgxStatus.SUCCESS


def test_token_after_msr_change_rejected() -> None:
    proc, le = _platform()
    app = pending(proc, "app")
    token = _token(le, app)
    proc.set_lepubkeyhash(mrsigner("other"))
    assert app.einit(token=token) == SgxStatus.INVALID_EINITTOKEN  # step 18


def test_token_after_owner_epoch_change_rejected() -> None:
    proc, le = _platform()
    app = pending(proc, "app")
    token = _token(le, app)
    rebuilt = cpu(owner_epoch=b"\x01" * 16)  # same seed, owner changed the epoch
    rebuilt.set_lepubkeyhash(mrsigner("le"))
    app2 = pending(rebuilt, "app")
    assert app2.einit(token=token) == SgxStatus.INVALID_EINITTOKEN


def test_token_for_other_enclave_rejected() -> None:
    proc, le = _platform()
    app = pending(proc, "app", KeyProbe)
    twin = pending(proc, "app", KeyProbeTwin)
    assert twin.einit(token=_token(le, app)) == SgxStatus.INVALID_MEASUREMENT  # step 19


def test_token_for_other_attributes_rejected() -> None:
    proc, le = _platform()
    app = pending(proc, "app")
    debug_app = pending(proc, "app", flags=PROD | int(AttributeFlag.DEBUG), flagsmask=2**64 - 1)
    token = _token(le, app)
    assert debug_app.einit(token=token) == SgxStatus.INVALID_ATTRIBUTE  # step 20


def test_token_minted_by_a_non_le_enclave_is_useless() -> None:
    """An enclave not signed by the MSR key cannot get EINITTOKEN_KEY at all: EINIT refuses
    the attribute (step 10), so it never runs to derive a launch key."""
    proc, _ = _platform()
    rogue = pending(proc, "other", flags=LE_FLAGS)
    assert rogue.einit() == SgxStatus.INVALID_ATTRIBUTE


def _expected_for_bit(field: str, flipped: EinitToken, platform_cpusvn: bytes) -> SgxStatus:
    if field == "cpusvnle" and cpusvn_beyond(flipped.cpusvnle, platform_cpusvn):
        return SgxStatus.INVALID_CPUSVN  # step 17, before the MAC
    # VALID bit 0 cleared → step 14 (signer ≠ MSR); reserved → 16; DEBUG in the LE attributes
    # of a production enclave → 15; every other field is MACed or a key input → 18.
    return SgxStatus.INVALID_EINITTOKEN


def test_every_bit_of_the_token_is_protected() -> None:
    proc, le = _platform()
    app = pending(proc, "app")
    good = _token(le, app).to_bytes()
    region = proc.allocate(2 * 4096)
    proc.write(region, app.sigstruct.to_bytes())
    seen: dict[SgxStatus, int] = {}
    for field in EinitToken.FIELDS:
        for bit in range(field.offset * 8, field.end * 8):
            data = bytearray(good)
            data[bit // 8] ^= 1 << (bit % 8)
            flipped = EinitToken.from_bytes_raw(bytes(data))
            proc.write(region + 4096, bytes(data))
            status = proc.einit(region, app.enclave.secs, region + 4096)
            assert status == _expected_for_bit(field.name, flipped, proc.cpusvn), (field.name, bit)
            seen[status] = seen.get(status, 0) + 1
    assert set(seen) == {SgxStatus.INVALID_EINITTOKEN, SgxStatus.INVALID_CPUSVN}
    proc.write(region + 4096, good)
    assert proc.einit(region, app.enclave.secs, region + 4096) == SgxStatus.SUCCESS


@pytest.mark.parametrize(
    ("field", "value", "status"),
    [
        ("valid", 0, SgxStatus.INVALID_EINITTOKEN),  # step 14
        ("maskedattributesle", Attributes(flags=PROD | 2, xfrm=0), SgxStatus.INVALID_EINITTOKEN),
        ("reserved2", b"\x01" * 32, SgxStatus.INVALID_EINITTOKEN),  # step 16
        ("cpusvnle", b"\xff" * 16, SgxStatus.INVALID_CPUSVN),  # step 17
        ("isvsvnle", 1, SgxStatus.INVALID_EINITTOKEN),  # step 18
        ("mrenclave", b"\x00" * 32, SgxStatus.INVALID_EINITTOKEN),  # step 18 (MACed)
    ],
)
def test_altered_field_refused_by_its_step(field: str, value: object, status: SgxStatus) -> None:
    proc, le = _platform()
    app = pending(proc, "app")
    assert app.einit(token=_token(le, app).replace(**{field: value})) == status
