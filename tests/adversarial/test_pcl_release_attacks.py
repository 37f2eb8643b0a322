"""Attacks on the owner-gated release of protected-code keys (issue 20): the launch enclave
releases a code key only to a non-debug enclave that proves itself by a fresh local
attestation, matches the author's release constraint, and whose first matching allow rule in
the owner's policy in force says ``protected_code: allow``; the key it keeps in the home is
sealed so that only its own image opens it.

The home and the host process are the attacker's: it chooses what to pass to every ECALL, can
run enclaves of its own, replay old messages and restore old copies of the home.
"""

from __future__ import annotations

import struct

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sgxlaunch.arch import Attributes, EinitToken, KeyRequest, Sigstruct, TargetInfo
from sgxlaunch.arch.constants import KeyName, KeyPolicy
from sgxlaunch.cpu import EnclaveContext, EnclaveProgram, program_image
from sgxlaunch.driver import LoadFailed, as_sgxs_image, load
from sgxlaunch.errors import PolicyDenied, Rollback, VerificationFailed
from sgxlaunch.launch import enclave as le
from sgxlaunch.launch.platform import LE_KX_KEY, code_key_key, le_sealed_key
from sgxlaunch.pcl import crypto
from sgxlaunch.policy import POLICY_KEY
from sgxlaunch.sigstruct import sign
from tests.support.codekeys import (
    ECALL_RAW_REPORT,
    Installed,
    ask,
    by_signer,
    code_key,
    installed,
    pcl_owner,
    policy3,
    release,
    requester,
    wrap,
)
from tests.support.cpu import DEBUG
from tests.support.keys import signer
from tests.support.platform import allow_rule


def _refused(inst: Installed) -> dict[str, object]:
    """The last log record: a refused release of the installed key."""
    record = inst.owner.platform().log_records()[-1]
    assert record["kind"] == "code-key-release" and record["outcome"] == "refused", record
    assert record["key_id"] == inst.key_id.hex()
    return record


def _field(record: dict[str, object]) -> object:
    reasons = record["reasons"]
    assert isinstance(reasons, list) and len(reasons) == 1
    return reasons[0]["field"]


def test_the_allowed_requester_gets_the_key_and_the_release_is_logged() -> None:
    """The control for every attack below: the same set-up releases to the right enclave."""
    inst = installed(b"pcl-attack-control-seed-0001")
    platform = inst.owner.platform()
    image, sig = requester(platform)
    enclave = platform.run(image, sig).enclave
    assert enclave is not None
    assert release(platform, ask(platform, enclave, inst.key_id), inst.key_id) == inst.key_id
    record = platform.log_records()[-1]
    assert record["kind"] == "code-key-release" and record["outcome"] == "released"
    assert record["rule"] == "protected" and record["policy_version"] == 2
    assert platform.verify_log() == len(platform.log_records())


def test_debug_build_of_the_protected_enclave_asking_is_refused() -> None:
    """The owner's rule even permits DEBUG launches and the author's constraint names the
    signer; the launch enclave still never releases into a DEBUG enclave (its memory is
    readable with EDBGRD)."""
    inst = installed(b"pcl-attack-debug-seed-000001", debug_rule=True)
    platform = inst.owner.platform()
    image, sig = requester(platform, flags=DEBUG)
    enclave = platform.run(image, sig).enclave  # the policy lets it launch
    assert enclave is not None
    with pytest.raises(VerificationFailed, match="refused to release"):
        release(platform, ask(platform, enclave, inst.key_id), inst.key_id)
    record = _refused(inst)
    assert _field(record) == "attributes.debug" and record["debug"] is True


def test_another_enclaves_report_asking_is_refused() -> None:
    """An enclave the owner allows to launch, signed by another author, asks with a REPORT
    that is perfectly valid — for itself: the author's constraint refuses it."""
    inst = installed(b"pcl-attack-other-seed-000001")
    platform = inst.owner.platform()
    image, sig = requester(platform)
    other_sig = sign(
        Sigstruct(
            attributes=sig.attributes,
            attributemask=sig.attributemask,
            miscmask=sig.miscmask,
            isvprodid=sig.isvprodid,
            isvsvn=sig.isvsvn,
            enclavehash=sig.enclavehash,
        ),
        signer("other"),
    )
    allow = [allow_rule(inst.sig, "protected", protected_code="allow")]
    allow.append(allow_rule(other_sig, "other", protected_code="allow"))
    platform.install_policy(policy3(inst.owner, version=3, allow=allow))
    enclave = platform.run(image, other_sig).enclave
    assert enclave is not None
    with pytest.raises(VerificationFailed, match="refused to release"):
        release(platform, ask(platform, enclave, inst.key_id), inst.key_id)
    record = _refused(inst)
    assert _field(record) == "release constraint"
    assert record["mrsigner"] == other_sig.mrsigner.hex()


def test_a_report_made_for_another_enclave_is_refused() -> None:
    """The host hands the launch enclave a REPORT the allowed requester made for a different
    target (here: targeted at itself): its MAC does not verify under the launch enclave's
    report key."""
    inst = installed(b"pcl-attack-target-seed-00001")
    platform = inst.owner.platform()
    image, sig = requester(platform)
    enclave = platform.run(image, sig).enclave
    assert enclave is not None
    asked = ask(platform, enclave, inst.key_id)
    me = TargetInfo(mrenclave=sig.enclavehash, attributes=sig.attributes, miscselect=0)
    reportdata = crypto.release_reportdata(asked.challenge, asked.ephemeral_key, inst.key_id)
    wrong = enclave.ecall(ECALL_RAW_REPORT, me.to_bytes() + reportdata)
    with pytest.raises(VerificationFailed, match="refused to release"):
        platform.release_code_key(wrong, asked.ephemeral_key, asked.challenge, inst.key_id)
    assert _field(_refused(inst)) == "report"


def test_a_report_binding_another_ephemeral_key_is_refused() -> None:
    """The host swaps in its own ephemeral key: REPORTDATA no longer matches."""
    inst = installed(b"pcl-attack-ephemeral-seed-01")
    platform = inst.owner.platform()
    image, sig = requester(platform)
    enclave = platform.run(image, sig).enclave
    assert enclave is not None
    asked = ask(platform, enclave, inst.key_id)
    mine = crypto.public_key(crypto.private_key(lambda n: b"\x42" * n))
    with pytest.raises(VerificationFailed, match="refused to release"):
        platform.release_code_key(asked.report, mine, asked.challenge, inst.key_id)
    assert _field(_refused(inst)) == "reportdata"


def test_a_replayed_request_with_an_old_challenge_is_refused() -> None:
    """A request that was answered once (the challenge is used up) is refused when replayed,
    as is a challenge the launch enclave never issued."""
    inst = installed(b"pcl-attack-replay-seed-00001")
    platform = inst.owner.platform()
    image, sig = requester(platform)
    enclave = platform.run(image, sig).enclave
    assert enclave is not None
    asked = ask(platform, enclave, inst.key_id)
    assert release(platform, asked, inst.key_id) == inst.key_id
    with pytest.raises(VerificationFailed, match="refused to release"):
        platform.release_code_key(asked.report, asked.ephemeral_key, asked.challenge, inst.key_id)
    assert _field(_refused(inst)) == "challenge"
    reopened = inst.owner.platform()  # a new launch-enclave instance issued nothing
    with pytest.raises(VerificationFailed, match="refused to release"):
        reopened.release_code_key(asked.report, asked.ephemeral_key, asked.challenge, inst.key_id)
    assert _field(_refused(inst)) == "challenge"


def test_a_request_below_the_authors_minimum_isvsvn_is_refused() -> None:
    inst = installed(b"pcl-attack-isvsvn-seed-00001", min_isvsvn=4)
    platform = inst.owner.platform()
    image, sig = requester(platform, isvsvn=3)  # the owner's rule allows any ISVSVN
    enclave = platform.run(image, sig).enclave
    assert enclave is not None
    with pytest.raises(VerificationFailed, match="refused to release"):
        release(platform, ask(platform, enclave, inst.key_id), inst.key_id)
    record = _refused(inst)
    assert _field(record) == "release constraint" and record["isvsvn"] == 3
    image, sig = requester(platform, isvsvn=4)
    enclave = platform.run(image, sig).enclave
    assert enclave is not None
    assert release(platform, ask(platform, enclave, inst.key_id), inst.key_id) == inst.key_id


def test_a_policy_rollback_to_re_allow_a_revoked_release_is_refused() -> None:
    """The owner revokes (version 3 has no ``protected_code: allow``): the next request is
    refused at release and logged. Re-installing version 2 is a rollback; restoring the home's
    copy of version 2 with the launch enclave's old sealed state makes the platform refuse to
    start (the machine's monotonic counter has moved on)."""
    inst = installed(b"pcl-attack-rollback-seed-001")
    owner = inst.owner
    platform = owner.platform()
    old_policy = owner.store.get(POLICY_KEY)
    signer_key = platform.le_signer
    assert old_policy is not None and signer_key is not None
    old_sealed = owner.store.get(le_sealed_key(signer_key))
    platform.install_policy(policy3(owner, version=3, allow=[allow_rule(inst.sig, "protected")]))
    image, sig = requester(platform)
    enclave = platform.run(image, sig).enclave
    assert enclave is not None
    with pytest.raises(PolicyDenied, match="rule protected"):
        release(platform, ask(platform, enclave, inst.key_id), inst.key_id)
    record = _refused(inst)
    assert _field(record) == "protected_code" and record["policy_version"] == 3
    with pytest.raises(Rollback):
        platform.install_policy(old_policy)
    owner.store.commit({POLICY_KEY: old_policy, le_sealed_key(signer_key): old_sealed})
    with pytest.raises(VerificationFailed, match="refusing to start"):
        owner.platform()


class SealProbe(EnclaveProgram):
    """An enclave the owner's launch-enclave key signed too (same MRSIGNER and ISVPRODID,
    another MRENCLAVE). ECALL 0: KEYID (32) ‖ u16 len ‖ AAD prefix ‖ u16 len ‖ AAD suffix ‖
    u8 len ‖ magic ‖ blob → one byte per KEYPOLICY tried (MRENCLAVE, MRSIGNER): 1 where the
    blob opened with the seal key this enclave derives."""

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        keyid, rest = data[:32], data[32:]
        (n,) = struct.unpack_from("<H", rest)
        prefix, rest = rest[2 : 2 + n], rest[2 + n :]
        (n,) = struct.unpack_from("<H", rest)
        suffix, rest = rest[2 : 2 + n], rest[2 + n :]
        magic, blob = rest[1 : 1 + rest[0]], rest[1 + rest[0] :]
        head, body = blob[: len(magic) + 16], blob[len(magic) + 16 :]
        me = ctx.ereport(bytes(512))
        out = b""
        for policy in (KeyPolicy.MRENCLAVE, KeyPolicy.MRSIGNER):
            key = ctx.egetkey(
                KeyRequest(
                    keyname=KeyName.SEAL,
                    keypolicy=int(policy),
                    isvsvn=me.isvsvn,
                    cpusvn=head[len(magic) :],
                    attributemask=le.SEAL_ATTRIBUTE_MASK,
                    keyid=keyid,
                    miscmask=2**32 - 1,
                )
            )
            try:
                AESGCM(key).decrypt(body[:12], body[12:], prefix + head + suffix)
                out += b"\x01"
            except InvalidTag:
                out += b"\x00"
        return out


def test_another_enclave_signed_by_the_owners_launch_enclave_key_cannot_unseal_the_key() -> None:
    """An enclave signed with the owner's launch-enclave key (same MRSIGNER and ISVPRODID as
    the launch enclave) tries both seal-key policies on the stored code key and key-agreement
    key: neither opens. Control: the same enclave opens the launch enclave's
    state, which is sealed with the MRSIGNER policy — exactly what the MRENCLAVE policy keeps
    the code keys out of."""
    owner = pcl_owner(seed=b"pcl-attack-unseal-seed-00001")
    platform = owner.platform()
    _image, requester_sig = requester(platform)
    key = code_key(b"unseal")
    key_id = crypto.key_id(key)
    platform.add_code_key(wrap(platform, key, by_signer(requester_sig)))
    image = program_image(SealProbe)
    body = Sigstruct(
        swdefined=le.LE_SWDEFINED,
        attributes=Attributes(flags=le.LE_ATTRIBUTES.flags & ~0x20, xfrm=0x3),
        attributemask=le.LE_ATTRIBUTEMASK,
        miscmask=2**32 - 1,
        isvprodid=le.LE_ISVPRODID,
        isvsvn=le.LE_ISVSVN,
        enclavehash=image.mrenclave(),
    )
    sig = sign(body, signer("owner-le"))
    le_sig = platform.le_sigstruct
    assert le_sig is not None
    assert sig.mrsigner == le_sig.mrsigner and sig.enclavehash != le_sig.enclavehash
    # In owner mode the driver's owner extension already refuses it ...
    with pytest.raises(LoadFailed, match="launches only the launch enclave"):
        load(platform.new_process(), as_sgxs_image(image), sig, token=bytes(EinitToken.SIZE))
    # ... so the owner turns the platform permissive (the home, with its sealed keys, stays),
    # where mainline's driver launches any signed enclave.
    platform.set_mode(owner.mode("permissive", version=2))
    platform = owner.platform()
    assert platform.mode == "permissive"
    platform.cpu.register_program(sig.enclavehash, SealProbe)
    probe = load(platform.new_process(), as_sgxs_image(image), sig)

    def tries(keyid: bytes, prefix: bytes, suffix: bytes, magic: bytes, blob: bytes) -> bytes:
        message = (
            keyid
            + struct.pack("<H", len(prefix))
            + prefix
            + struct.pack("<H", len(suffix))
            + suffix
            + bytes([len(magic)])
            + magic
            + blob
        )
        return probe.ecall(0, message)

    code_blob = owner.store.get(code_key_key(key_id))
    kx_blob = owner.store.get(LE_KX_KEY)
    state = owner.store.get(le_sealed_key(sig.mrsigner))
    assert code_blob is not None and kx_blob is not None and state is not None
    magic = le.CODE_KEY_SEALED_MAGIC
    assert tries(le.CODE_KEYID, b"", key_id, magic, code_blob) == b"\x00\x00"
    assert tries(le.KX_KEYID, b"", b"", le.KX_SEALED_MAGIC, kx_blob) == b"\x00\x00"
    state_keyid = le._STATE_KEYID  # the control: MRSIGNER policy opens for any such enclave
    assert tries(state_keyid, le._SEAL_AAD, b"", le._SEALED_MAGIC, state) == b"\x00\x01"
