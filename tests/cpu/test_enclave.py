"""Enclave execution: program images, EENTER/EEXIT, enclave memory, EREPORT, EGETKEY, sealing."""

from __future__ import annotations

import hashlib
import struct

import pytest

from sgxlaunch.arch import Attributes, KeyRequest, Report, SgxStatus, TargetInfo
from sgxlaunch.arch.constants import AttributeFlag, KeyName, KeyPolicy, PageType
from sgxlaunch.cpu import (
    EnclaveContext,
    EnclaveProgram,
    GeneralProtection,
    PageFault,
    image_from_sgxs,
    program_image,
)
from sgxlaunch.cpu.image import PROGRAM_PAGE_MAGIC
from sgxlaunch.cpu.keys import cmac128
from sgxlaunch.errors import UsageError
from sgxlaunch.formats.sgxs import parse_sgxs
from tests.support.cpu import (
    PROD,
    KeyProbe,
    KeyProbeTwin,
    Launched,
    MemoryProgram,
    cpu,
    launch,
    pending,
)
from tests.support.keys import mrsigner

PAGE = 4096


# -- images -----------------------------------------------------------------------------------


def test_program_image_is_deterministic_and_binds_the_source() -> None:
    one, two = program_image(KeyProbe), program_image(KeyProbe)
    assert one == two and one.sgxs() == two.sgxs()
    assert hashlib.sha256(one.sgxs()).digest() == one.mrenclave()
    code = one.pages[1].data
    assert code.startswith(PROGRAM_PAGE_MAGIC)
    assert code[32:64] == hashlib.sha256(KeyProbe.source().encode()).digest()
    assert program_image(KeyProbeTwin).mrenclave() != one.mrenclave()
    assert program_image(KeyProbe, data_pages=2).mrenclave() != one.mrenclave()


def test_program_image_layout_round_trips_through_sgxs() -> None:
    image = program_image(MemoryProgram, data_pages=3, nssa=2)
    parsed = image_from_sgxs(parse_sgxs(image.sgxs()))
    assert parsed.pages == image.pages and parsed.size == image.size
    assert parsed.tcs_offsets == (0,)
    # TCS, code, 2 SSA frames, 3 data pages = 0x7000 → SIZE 0x8000.
    assert [p.offset for p in image.pages] == [k * PAGE for k in range(7)]
    assert image.size == 0x8000


def test_program_image_size_is_the_next_power_of_two() -> None:
    assert program_image(KeyProbe).size == 0x4000  # 4 pages
    assert program_image(KeyProbe, data_pages=0).size == 0x4000  # 3 pages
    assert program_image(KeyProbe, data_pages=3).size == 0x8000  # 6 pages


# -- EENTER / EEXIT / memory --------------------------------------------------------------------


def _memory_enclave() -> Launched:
    proc = cpu()
    return launch(proc, MemoryProgram, "app", data_pages=2)


def test_enclave_memory_round_trip_across_pages() -> None:
    enc = _memory_enclave()
    data_offset = 0x3000  # first data page (TCS, code, SSA before it)
    payload = bytes(range(256)) * 20  # spans two pages
    enc.call(0, struct.pack("<Q", data_offset + 100) + payload)
    assert enc.call(1, struct.pack("<QQ", data_offset + 100, len(payload))) == payload
    # The code page holds the program's source hash and is readable.
    code = enc.call(1, struct.pack("<QQ", 0x1000, 64))
    assert code[32:64] == MemoryProgram.source_hash()


def test_enclave_memory_faults() -> None:
    enc = _memory_enclave()
    with pytest.raises(PageFault):  # the code page is R-X
        enc.call(0, struct.pack("<Q", 0x1000) + b"x")
    with pytest.raises(PageFault):  # the TCS is not a regular page
        enc.call(1, struct.pack("<QQ", 0, 8))
    with pytest.raises(PageFault):  # inside ELRANGE but never added
        enc.call(1, struct.pack("<QQ", 0x5000, 8))
    with pytest.raises(PageFault):  # outside ELRANGE
        enc.call(1, struct.pack("<QQ", enc.enclave.size, 8))
    # The TCS is free again after each faulting call.
    assert enc.call(1, struct.pack("<QQ", 0x3000, 4)) == bytes(4)


def test_eexit_from_deep_inside() -> None:
    enc = _memory_enclave()
    assert enc.call(3) == b"left early"


def test_context_dies_with_the_ecall() -> None:
    enc = _memory_enclave()
    enc.call(2)
    program = enc.enclave.processor.state.secs_state[
        (enc.enclave.secs - enc.enclave.processor.epc_base) >> 12
    ].program
    assert isinstance(program, MemoryProgram) and program.saved is not None
    saved: EnclaveContext = program.saved
    with pytest.raises(GeneralProtection):
        saved.egetkey(KeyRequest(keyname=KeyName.REPORT))
    with pytest.raises(GeneralProtection):
        saved.ereport(bytes(512))
    with pytest.raises(GeneralProtection):
        saved.read(saved_base(enc), 1)


def saved_base(enc: Launched) -> int:
    return enc.enclave.baseaddr


def test_eenter_checks() -> None:
    proc = cpu()
    proc.set_lepubkeyhash(mrsigner("app"))
    app = pending(proc)
    with pytest.raises(GeneralProtection):  # not initialized
        proc.eenter(app.enclave.tcs[0])
    assert app.einit() == SgxStatus.SUCCESS
    with pytest.raises(GeneralProtection):
        proc.eenter(app.enclave.tcs[0] + 64)
    regular = next(
        epc for epc in app.enclave.pages.values() if proc.epcm(epc).page_type == PageType.REG
    )
    with pytest.raises(PageFault):
        proc.eenter(regular)
    with pytest.raises(PageFault):
        proc.eenter(proc.allocate(PAGE))


def test_eenter_needs_a_registered_program() -> None:
    class Unregistered(EnclaveProgram):
        def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
            return b""

    from sgxlaunch.cpu import load_enclave
    from tests.support.cpu import sign_image

    proc = cpu()
    proc.set_lepubkeyhash(mrsigner("app"))
    image = program_image(Unregistered)
    loaded = load_enclave(proc, image, sign_image(image, "app"))
    assert loaded.status == SgxStatus.SUCCESS
    with pytest.raises(UsageError):
        loaded.enter()


def test_busy_tcs_cannot_be_entered_twice() -> None:
    class Reenter(EnclaveProgram):
        def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
            proc, tcs = HOLDER
            proc.eenter(tcs)
            return b""

    proc = cpu()
    enc = launch(proc, Reenter, "app")
    HOLDER[:] = [proc, enc.enclave.tcs[0]]
    with pytest.raises(GeneralProtection):
        enc.call()
    HOLDER.clear()


HOLDER: list = []  # type: ignore[type-arg]


# -- EREPORT ----------------------------------------------------------------------------------


def _target_of(enc: Launched) -> TargetInfo:
    info = enc.enclave.processor.secs_info(enc.enclave.secs)
    return TargetInfo(
        mrenclave=info["mrenclave"],
        attributes=Attributes(flags=info["attributes_flags"], xfrm=info["attributes_xfrm"]),
        miscselect=info["miscselect"],
    )


def test_report_fields_and_mac_verified_by_the_target() -> None:
    proc = cpu()
    a = launch(proc, KeyProbe, "app", isvprodid=5, isvsvn=2)
    b = launch(proc, KeyProbeTwin, "app")
    reportdata = bytes(range(64))
    report = Report.from_bytes(a.call(1, _target_of(b).to_bytes() + reportdata))
    assert report.mrenclave == a.image.mrenclave()
    assert report.mrsigner == mrsigner("app")
    assert (report.isvprodid, report.isvsvn) == (5, 2)
    assert report.attributes.flags == PROD | int(AttributeFlag.INIT)
    assert report.cpusvn == proc.cpusvn and report.reportdata == reportdata
    assert b.call(2, report.to_bytes()) == b"\x01"
    # Any altered body byte breaks the MAC.
    tampered = report.replace(isvsvn=3)
    assert b.call(2, tampered.to_bytes()) == b"\x00"
    # A report for someone else is not verifiable by b; a can't verify its report for b.
    assert a.call(2, report.to_bytes()) == b"\x00"


def test_report_key_is_per_cpu() -> None:
    reports = []
    for seed in (b"cpu-A-seed-0123456789", b"cpu-B-seed-0123456789"):
        proc = cpu(seed)
        a = launch(proc, KeyProbe, "app")
        b = launch(proc, KeyProbeTwin, "app")
        reports.append((a.call(1, _target_of(b).to_bytes() + bytes(64)), b))
    # CPU B's target cannot verify CPU A's report (same enclaves, same signer).
    assert reports[1][1].call(2, reports[0][0]) == b"\x00"
    assert reports[1][1].call(2, reports[1][0]) == b"\x01"


# -- EGETKEY ----------------------------------------------------------------------------------


def _getkey(enc: Launched, **fields: object) -> tuple[SgxStatus, bytes]:
    out = enc.call(0, KeyRequest(**fields).to_bytes())  # type: ignore[arg-type]
    return SgxStatus(struct.unpack_from("<H", out)[0]), out[2:]


@pytest.fixture(scope="module")
def probe() -> Launched:
    return launch(cpu(), KeyProbe, "app", isvsvn=3)


def test_egetkey_every_key_name_allowed(probe: Launched) -> None:
    proc = cpu()
    privileged = launch(
        proc,
        KeyProbe,
        "le",
        flags=PROD | int(AttributeFlag.PROVISIONKEY | AttributeFlag.EINITTOKEN_KEY),
    )
    keys = set()
    for name in KeyName:
        status, key = _getkey(privileged, keyname=name, cpusvn=proc.cpusvn)
        assert status == SgxStatus.SUCCESS and len(key) == 16
        keys.add(key)
    assert len(keys) == len(KeyName)


def test_einittoken_key_is_the_sdm_dependency_set() -> None:
    """EGETKEY(EINITTOKEN_KEY) is derive_key over the SDM's EINITTOKEN dependencies (ISVPRODID,
    ISVSVN, OWNEREPOCH, masked ATTRIBUTES, MRSIGNER, KEYID, the seal fuses, CPUSVN, masked
    MISCSELECT, SECS.PADDING; every other field zero): the one-step packing the fast path uses
    is the KeyDependencies serialization, and every KEYID gives another key."""
    from sgxlaunch.cpu.keys import KeyDependencies, einittoken_dependencies

    proc = cpu()
    le = launch(proc, KeyProbe, "le", isvsvn=2, flags=PROD | int(AttributeFlag.EINITTOKEN_KEY))
    info = proc.secs_info(le.enclave.secs)
    secs = proc.state.secs_state[(le.enclave.secs - proc.epc_base) >> 12]
    keys = set()
    for keyid in (bytes(32), bytes(range(32)), b"\xff" * 32):
        request = {
            "keyname": KeyName.EINITTOKEN,
            "isvsvn": 1,
            "cpusvn": proc.cpusvn,
            "keyid": keyid,
            "attributemask": Attributes(flags=2**64 - 1, xfrm=0x3),
            "miscmask": 0xFFFFFFFF,
        }
        status, key = _getkey(le, **request)
        assert status == SgxStatus.SUCCESS
        fields = {
            "isvprodid": info["isvprodid"],
            "isvsvn": 1,
            "sgxownerepoch": proc.config.owner_epoch,
            "attributes_flags": info["attributes_flags"],
            "attributes_xfrm": info["attributes_xfrm"] & 0x3,
            "mrsigner": info["mrsigner"],
            "keyid": keyid,
            "seal_key_fuses": proc._fuses.seal_fuses,
            "cpusvn": proc.cpusvn,
            "miscselect": info["miscselect"],
            "padding": secs.padding,
        }
        reference = KeyDependencies(keyname=KeyName.EINITTOKEN, **fields).to_bytes()
        assert einittoken_dependencies(**fields) == reference
        assert key == proc._fuses.derive_bytes(reference)
        keys.add(key)
    assert len(keys) == 3
    with pytest.raises(UsageError, match="keyid must be 32 bytes"):
        einittoken_dependencies(**{**fields, "keyid": bytes(31)})


def test_egetkey_refuses_unknown_keyname(probe: Launched) -> None:
    assert _getkey(probe, keyname=5)[0] == SgxStatus.INVALID_KEYNAME


def test_egetkey_refuses_einittoken_key_without_attribute(probe: Launched) -> None:
    assert _getkey(probe, keyname=KeyName.EINITTOKEN)[0] == SgxStatus.INVALID_ATTRIBUTE


def test_egetkey_refuses_provision_key_without_attribute(probe: Launched) -> None:
    assert _getkey(probe, keyname=KeyName.PROVISION)[0] == SgxStatus.INVALID_ATTRIBUTE


def test_egetkey_refuses_provision_seal_key_without_attribute(probe: Launched) -> None:
    assert _getkey(probe, keyname=KeyName.PROVISION_SEAL)[0] == SgxStatus.INVALID_ATTRIBUTE


def test_egetkey_refuses_cpusvn_beyond_platform(probe: Launched) -> None:
    cpusvn = probe.enclave.processor.cpusvn
    beyond = cpusvn[:15] + bytes([cpusvn[15] + 1])
    assert _getkey(probe, keyname=KeyName.SEAL, cpusvn=beyond)[0] == SgxStatus.INVALID_CPUSVN
    # Lower is fine (sealing for an older TCB).
    assert _getkey(probe, keyname=KeyName.SEAL, cpusvn=bytes(16))[0] == SgxStatus.SUCCESS


def test_egetkey_refuses_isvsvn_above_the_enclave(probe: Launched) -> None:
    assert _getkey(probe, keyname=KeyName.SEAL, isvsvn=4)[0] == SgxStatus.INVALID_ISVSVN
    assert _getkey(probe, keyname=KeyName.SEAL, isvsvn=3)[0] == SgxStatus.SUCCESS


def test_egetkey_configsvn_without_kss_is_gp(probe: Launched) -> None:
    """SDM EGETKEY: KEYREQUEST.CONFIGSVN > 0 on an enclave without ATTRIBUTES.KSS → #GP
    (before any per-KEYNAME status), whatever the key name."""
    for name in (KeyName.SEAL, KeyName.REPORT):
        with pytest.raises(GeneralProtection, match="CONFIGSVN"):
            _getkey(probe, keyname=name, configsvn=1)
    assert _getkey(probe, keyname=KeyName.SEAL, configsvn=0)[0] == SgxStatus.SUCCESS


def test_egetkey_refuses_configsvn_above_the_enclave_with_kss() -> None:
    """SDM EGETKEY, SEAL_KEY: KEYREQUEST.CONFIGSVN > SECS.CONFIGSVN → SGX_INVALID_ISVSVN."""
    enc = _kss_enclave(configsvn=2)
    assert _getkey(enc, keyname=KeyName.SEAL, configsvn=3)[0] == SgxStatus.INVALID_ISVSVN
    assert _getkey(enc, keyname=KeyName.SEAL, configsvn=2)[0] == SgxStatus.SUCCESS


def _kss_enclave(
    *, configsvn: int = 0, isvfamilyid: bytes = bytes(16), isvextprodid: bytes = bytes(16)
) -> Launched:
    """A KSS enclave (PROVISIONKEY too) on a KSS part; CONFIGSVN set in its SECS."""
    from sgxlaunch.cpu import load_enclave
    from tests.support.cpu import sign_image

    proc = cpu(kss=True)
    flags = PROD | int(AttributeFlag.KSS | AttributeFlag.PROVISIONKEY)
    image = program_image(KeyProbe)
    sig = sign_image(
        image,
        "app",
        flags=flags,
        isvprodid=7,
        isvsvn=1,
        isvfamilyid=isvfamilyid,
        isvextprodid=isvextprodid,
    )
    proc.register_program(image.mrenclave(), KeyProbe)
    proc.set_lepubkeyhash(mrsigner("app"))
    loaded = load_enclave(proc, image, sig, configsvn=configsvn)
    assert loaded.status == SgxStatus.SUCCESS
    return Launched(loaded, image, sig)


def test_egetkey_refuses_reserved_fields(probe: Launched) -> None:
    with pytest.raises(GeneralProtection):
        _getkey(probe, keyname=KeyName.SEAL, reserved1=b"\x00\x01")
    with pytest.raises(GeneralProtection):
        _getkey(probe, keyname=KeyName.SEAL, reserved2=b"\x01" + bytes(433))


def test_egetkey_refuses_reserved_keypolicy_bits(probe: Launched) -> None:
    with pytest.raises(GeneralProtection):
        _getkey(probe, keyname=KeyName.SEAL, keypolicy=1 << 6)


def test_egetkey_refuses_kss_policies_without_kss(probe: Launched) -> None:
    """SDM EGETKEY: a KSS KEYPOLICY bit (0x04, 0x08, 0x10, 0x20) without ATTRIBUTES.KSS → #GP."""
    for bit in (
        KeyPolicy.NOISVPRODID,
        KeyPolicy.CONFIGID,
        KeyPolicy.ISVFAMILYID,
        KeyPolicy.ISVEXTPRODID,
    ):
        with pytest.raises(GeneralProtection, match="KSS"):
            _getkey(probe, keyname=KeyName.SEAL, keypolicy=int(bit))


def test_egetkey_kss_policies_with_kss() -> None:
    proc = cpu(kss=True)
    enc = launch(proc, KeyProbe, "app", flags=PROD | int(AttributeFlag.KSS), isvprodid=1)
    base = _getkey(enc, keyname=KeyName.SEAL, keypolicy=int(KeyPolicy.MRSIGNER))
    noprod = _getkey(
        enc, keyname=KeyName.SEAL, keypolicy=int(KeyPolicy.MRSIGNER | KeyPolicy.NOISVPRODID)
    )
    assert base[0] == noprod[0] == SgxStatus.SUCCESS and base[1] != noprod[1]


# -- sealing ----------------------------------------------------------------------------------

SIGNER_POLICY: dict[str, object] = {"keyname": KeyName.SEAL, "keypolicy": int(KeyPolicy.MRSIGNER)}
ENCLAVE_POLICY: dict[str, object] = {"keyname": KeyName.SEAL, "keypolicy": int(KeyPolicy.MRENCLAVE)}


def test_sealing_keys() -> None:
    proc = cpu()
    a = launch(proc, KeyProbe, "app")
    twin = launch(proc, KeyProbeTwin, "app")
    stranger = launch(proc, KeyProbeTwin, "other")
    same_cpu_again = cpu()  # same seed: the same CPU rebuilt
    a_again = launch(same_cpu_again, KeyProbe, "app")
    other_cpu = launch(cpu(b"cpu-B-seed-0123456789"), KeyProbe, "app")

    def key(enc: Launched, policy: dict[str, object]) -> bytes:
        status, value = _getkey(enc, **policy)
        assert status == SgxStatus.SUCCESS
        return value

    # MRSIGNER policy: equal for two enclaves of one signer, different across signers / CPUs.
    assert key(a, SIGNER_POLICY) == key(twin, SIGNER_POLICY)
    assert key(a, SIGNER_POLICY) != key(stranger, SIGNER_POLICY)
    assert key(a, SIGNER_POLICY) != key(other_cpu, SIGNER_POLICY)
    assert key(a, SIGNER_POLICY) == key(a_again, SIGNER_POLICY)
    # MRENCLAVE policy: different between the two enclaves.
    assert key(a, ENCLAVE_POLICY) != key(twin, ENCLAVE_POLICY)
    assert key(a, ENCLAVE_POLICY) == key(a_again, ENCLAVE_POLICY)
    # KEYID is a wear-out nonce: a different KEYID gives a different key.
    assert key(a, SIGNER_POLICY) != key(a, {**SIGNER_POLICY, "keyid": b"\x01" * 32})


def test_owner_epoch_changes_seal_keys_but_not_the_provision_key() -> None:
    def keys(epoch: bytes) -> tuple[bytes, bytes]:
        proc = cpu(owner_epoch=epoch)
        enc = launch(proc, KeyProbe, "app", flags=PROD | int(AttributeFlag.PROVISIONKEY))
        seal = _getkey(enc, **SIGNER_POLICY)[1]
        provision = _getkey(enc, keyname=KeyName.PROVISION)[1]
        return seal, provision

    seal_a, prov_a = keys(bytes(16))
    seal_b, prov_b = keys(b"\x01" * 16)
    assert seal_a != seal_b
    assert prov_a == prov_b


def _provision_seal_reference(enc: Launched, policy: int, **changes: object) -> bytes:
    """PROVISION_SEAL_KEY as the SDM's key-derivation table builds it (no OWNEREPOCH, the seal
    fuses, KEYPOLICY applied and itself a dependency), derived with the CPU's root key."""
    from sgxlaunch.cpu.keys import KeyDependencies

    proc = enc.enclave.processor
    info = proc.secs_info(enc.enclave.secs)
    secs = proc.state.secs_state[(enc.enclave.secs - proc.epc_base) >> 12]
    deps = KeyDependencies(
        keyname=KeyName.PROVISION_SEAL,
        isvfamilyid=info["isvfamilyid"] if policy & KeyPolicy.ISVFAMILYID else bytes(16),
        isvextprodid=info["isvextprodid"] if policy & KeyPolicy.ISVEXTPRODID else bytes(16),
        isvprodid=0 if policy & KeyPolicy.NOISVPRODID else info["isvprodid"],
        isvsvn=0,
        sgxownerepoch=bytes(16),
        attributes_flags=info["attributes_flags"] & 0x3,
        attributes_xfrm=0,
        mrsigner=info["mrsigner"],
        seal_key_fuses=proc._fuses.seal_fuses,
        cpusvn=bytes(16),
        miscselect=0,
        miscmask=0xFFFFFFFF,
        padding=secs.padding,
        keypolicy=policy,
        configid=info["configid"] if policy & KeyPolicy.CONFIGID else bytes(64),
        configsvn=0,
        **changes,  # type: ignore[arg-type]
    )
    return proc._fuses.derive(deps)


def test_provision_seal_key_has_no_owner_epoch_but_the_seal_fuses() -> None:
    """SDM EGETKEY, PROVISION_SEAL_KEY: OWNEREPOCH is not a dependency (the key survives an
    owner change), CR_SEAL_FUSES is (another CPU gets another key)."""

    def key(epoch: bytes, seed: bytes = b"cpu-A-seed-0123456789") -> bytes:
        proc = cpu(seed, owner_epoch=epoch)
        enc = launch(proc, KeyProbe, "app", flags=PROD | int(AttributeFlag.PROVISIONKEY))
        status, value = _getkey(enc, keyname=KeyName.PROVISION_SEAL)
        assert status == SgxStatus.SUCCESS
        assert value == _provision_seal_reference(enc, 0)
        return value

    assert key(bytes(16)) == key(b"\x01" * 16)
    assert key(bytes(16)) != key(bytes(16), seed=b"cpu-B-seed-0123456789")


def test_provision_seal_key_applies_keypolicy_and_depends_on_it() -> None:
    """SDM EGETKEY, PROVISION_SEAL_KEY: ISVFAMILYID, ISVEXTPRODID, NOISVPRODID and CONFIGID in
    KEYPOLICY select those fields, and KEYPOLICY itself is in the dependencies (so MRSIGNER
    and MRENCLAVE policies, which select nothing here, still give different keys)."""
    enc = _kss_enclave(isvfamilyid=b"\xfa" * 16, isvextprodid=b"\xe1" * 16)
    keys = {}
    for policy in (
        0,
        int(KeyPolicy.MRSIGNER),
        int(KeyPolicy.MRENCLAVE),
        int(KeyPolicy.NOISVPRODID),
        int(KeyPolicy.ISVFAMILYID),
        int(KeyPolicy.ISVEXTPRODID),
        int(KeyPolicy.CONFIGID),
    ):
        status, value = _getkey(enc, keyname=KeyName.PROVISION_SEAL, keypolicy=policy)
        assert status == SgxStatus.SUCCESS
        assert value == _provision_seal_reference(enc, policy), policy
        keys[policy] = value
    assert len(set(keys.values())) == len(keys)


def test_einit_commits_isvfamilyid_and_isvextprodid_to_the_secs() -> None:
    """SDM EINIT step 21: SECS.ISVFAMILYID := SIGSTRUCT.ISVFAMILYID, SECS.ISVEXTPRODID :=
    SIGSTRUCT.ISVEXTPRODID; the REPORT carries them."""
    enc = _kss_enclave(isvfamilyid=b"\xfa" * 16, isvextprodid=b"\xe1" * 16, configsvn=4)
    info = enc.enclave.processor.secs_info(enc.enclave.secs)
    assert (info["isvfamilyid"], info["isvextprodid"]) == (b"\xfa" * 16, b"\xe1" * 16)
    assert info["configsvn"] == 4
    report = Report.from_bytes(enc.call(1, bytes(512) + bytes(64)))
    assert (report.isvfamilyid, report.isvextprodid) == (b"\xfa" * 16, b"\xe1" * 16)


def test_ereport_refuses_targetinfo_reserved_bytes() -> None:
    """SDM EREPORT: TARGETINFO reserved fields not zero → #GP; all zero is accepted."""
    proc = cpu()
    a = launch(proc, KeyProbe, "app")
    b = launch(proc, KeyProbeTwin, "app")
    target = _target_of(b).to_bytes()
    for offset in (49, 56, 128, 511):  # RESERVED1, RESERVED2, RESERVED3 (first and last)
        bad = bytearray(target)
        bad[offset] = 1
        with pytest.raises(GeneralProtection, match="TARGETINFO"):
            a.call(1, bytes(bad) + bytes(64))
    assert Report.from_bytes(a.call(1, target + bytes(64))).mrenclave == a.image.mrenclave()


def test_report_key_matches_ereport_mac() -> None:
    """The REPORT MAC is the CMAC under the target's REPORT key, as EGETKEY derives it."""
    proc = cpu()
    a = launch(proc, KeyProbe, "app")
    b = launch(proc, KeyProbeTwin, "app")
    report = Report.from_bytes(a.call(1, _target_of(b).to_bytes() + bytes(64)))
    status, key = _getkey(b, keyname=KeyName.REPORT, keyid=report.keyid)
    assert status == SgxStatus.SUCCESS
    assert cmac128(key, report.body_bytes()) == report.mac


def test_program_source_can_be_supplied() -> None:
    namespace: dict[str, object] = {"EnclaveProgram": EnclaveProgram}
    exec("class Generated(EnclaveProgram):\n    pass\n", namespace)  # noqa: S102 - no source file
    generated = namespace["Generated"]
    assert isinstance(generated, type) and issubclass(generated, EnclaveProgram)
    with pytest.raises(UsageError):
        program_image(generated)

    class Explicit(EnclaveProgram):
        @classmethod
        def source(cls) -> str:
            return "def ecall(): return b''"

    image = program_image(Explicit)
    assert image.pages[1].data[32:64] == hashlib.sha256(b"def ecall(): return b''").digest()
