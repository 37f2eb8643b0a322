"""Protected code (issue 20) on the launch enclave's side: an owner-mode platform, a requester
enclave standing in for the decryptor where a test needs to craft its REQUEST, and wrapped
keys made as ``pcl wrap`` makes them."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from sgxlaunch.arch import Report, Sigstruct, TargetInfo
from sgxlaunch.cpu import EnclaveContext, EnclaveProgram
from sgxlaunch.driver import LoadedEnclave
from sgxlaunch.formats.sgxs import SgxsImage
from sgxlaunch.launch.platform import Platform
from sgxlaunch.pcl import crypto
from sgxlaunch.policy import POLICY_PAYLOAD_TYPE, sign_payload
from sgxlaunch.policy._json import dumps_canonical, format_time
from tests.support.platform import Owner, author_enclave

ECALL_REQUEST = 0
ECALL_OPEN = 1
ECALL_RAW_REPORT = 2


class Requester(EnclaveProgram):
    """Asks the launch enclave for a code key as the decryptor does (ECALL 0: TARGETINFO ‖
    challenge ‖ key id → REPORT ‖ ephemeral public key; ECALL 1: the release box → the key
    id of the key inside, so a test sees which key came without the key leaving);
    ECALL 2: TARGETINFO ‖ REPORTDATA → a REPORT with any REPORTDATA (to craft bad requests)."""

    def __init__(self) -> None:
        self.private: bytes | None = None
        self.aad = b""

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        if function == ECALL_REQUEST:
            target, challenge, key_id = data[:512], data[512:544], data[544:576]
            self.private = crypto.private_key(ctx.rdrand)
            public = crypto.public_key(self.private)
            self.aad = crypto.release_aad(challenge, key_id)
            reportdata = crypto.release_reportdata(challenge, public, key_id)
            return ctx.ereport(TargetInfo.from_bytes(target), reportdata).to_bytes() + public
        if function == ECALL_OPEN:
            assert self.private is not None
            key = crypto.open_box(self.private, data, domain=crypto.RELEASE_DOMAIN, aad=self.aad)
            return crypto.key_id(key)
        return ctx.ereport(TargetInfo.from_bytes(data[:512]), data[512:576]).to_bytes()


def code_key(label: bytes = b"code-key") -> bytes:
    """A deterministic 32-byte code key for tests (never printed by anything under test)."""
    return hashlib.sha256(b"sgxlaunch tests " + label).digest()


def requester(
    platform: Platform, *, isvprodid: int = 7, isvsvn: int = 3, flags: int | None = None
) -> tuple[SgxsImage, Sigstruct]:
    """The requester's image and SIGSTRUCT (author key ``app``), its program registered."""
    kwargs: dict[str, Any] = {"isvprodid": isvprodid, "isvsvn": isvsvn}
    if flags is not None:
        kwargs["flags"] = flags
    image, sig = author_enclave(Requester, **kwargs)
    platform.cpu.register_program(sig.enclavehash, Requester)
    return image, sig


@dataclass
class Asked:
    """One REQUEST made by a requester enclave."""

    enclave: LoadedEnclave
    targetinfo: bytes
    challenge: bytes
    report: bytes
    ephemeral_key: bytes


def ask(platform: Platform, enclave: LoadedEnclave, key_id: bytes) -> Asked:
    """A fresh challenge from the launch enclave, and the requester's REPORT for it."""
    targetinfo, challenge = platform.release_challenge()
    out = enclave.ecall(ECALL_REQUEST, targetinfo + challenge + key_id)
    return Asked(enclave, targetinfo, challenge, out[:432], out[432:])


def release(platform: Platform, asked: Asked, key_id: bytes) -> bytes:
    """Ask the launch enclave to release; returns the key id the requester found in the box."""
    boxed = platform.release_code_key(asked.report, asked.ephemeral_key, asked.challenge, key_id)
    return asked.enclave.ecall(ECALL_OPEN, boxed)


def wrap(
    platform: Platform,
    key: bytes,
    constraint: crypto.ReleaseConstraint,
    *,
    le_public_key: bytes | None = None,
) -> bytes:
    """``key`` wrapped for the platform's launch enclave (the author's side, quote unchecked)."""
    public = le_public_key if le_public_key is not None else platform.le_public_key()
    return crypto.WrappedKey.wrap(key, public, constraint, random=os.urandom).to_bytes()


def by_signer(sig: Sigstruct, min_isvsvn: int = 0) -> crypto.ReleaseConstraint:
    return crypto.ReleaseConstraint(None, sig.mrsigner, sig.isvprodid, min_isvsvn)


def policy3(
    owner: Owner,
    *,
    version: int,
    allow: list[dict[str, Any]],
    deny: list[dict[str, Any]] | None = None,
) -> bytes:
    """A spec "3" policy (issued at the clock's time) signed by two of the owner's keys."""
    doc: dict[str, Any] = {
        "spec_version": "3",
        "version": version,
        "issued": format_time(owner.clock.now),
        "expires": "2027-06-01T00:00:00Z",
        "allow": allow,
        "deny": deny or [],
    }
    return sign_payload(POLICY_PAYLOAD_TYPE, dumps_canonical(doc), owner.keys[:2]).to_bytes()


def report_of(asked: Asked) -> Report:
    return Report.from_bytes(asked.report)


SEED = b"pcl-platform-seed-for-tests-01"


def pcl_owner(
    *, quoting: bool = False, seed: bytes = SEED, allow: list[dict[str, Any]] | None = None
) -> Owner:
    """An owner-mode platform (memory store) with the launch enclave set up, policy version 1
    (spec "2", ``allow`` plus the PCE/QE rules when ``quoting``: the machine is then
    provisioned as ``platform init`` provisions it)."""
    owner = Owner(seed=seed)
    rules = list(allow or [])
    if quoting:
        from sgxlaunch.attest.pcs import EmulatedPcs
        from sgxlaunch.attest.quoting import quoting_rules
        from tests.support.quoting import provision

        provision(owner.machine)
        rules += quoting_rules(EmulatedPcs(owner.machine).qe_mrsigner)
        owner.platform().quoter().provision()
    owner.set_up_launch_enclave()
    platform = owner.platform()
    platform.install_policy(owner.policy(version=1, allow=rules))
    platform.set_mode(owner.mode("owner", version=1))
    return owner


def protected_rule(sig: Sigstruct, rule_id: str = "protected", **extra: Any) -> dict[str, Any]:
    """An allow rule for ``sig``'s MRSIGNER and ISVPRODID saying ``protected_code: allow``."""
    return {
        "id": rule_id,
        "mrsigner": sig.mrsigner.hex(),
        "isvprodid": sig.isvprodid,
        "protected_code": "allow",
        **extra,
    }


@dataclass
class Installed:
    """A platform holding one code key released to requesters of key ``app``, ISVPRODID 7,
    ISVSVN ≥ ``min_isvsvn``; the policy in force (version 2) allows them protected code."""

    owner: Owner
    key: bytes
    key_id: bytes
    sig: Sigstruct


def installed(seed: bytes, *, min_isvsvn: int = 0, debug_rule: bool = False) -> Installed:
    owner = pcl_owner(seed=seed)
    platform = owner.platform()
    _image, sig = requester(platform)
    extra: dict[str, Any] = {"debug": True} if debug_rule else {}
    platform.install_policy(policy3(owner, version=2, allow=[protected_rule(sig, **extra)]))
    key = code_key(seed)
    platform.add_code_key(wrap(platform, key, by_signer(sig, min_isvsvn)))
    return Installed(owner, key, crypto.key_id(key), sig)
