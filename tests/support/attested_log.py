"""The attested launch log without a quoting enclave: the launch enclave's REPORT is targeted at
a small verifier enclave on the same CPU, which checks its MAC (as the QE does) before the
report body is handed to the collector's checks."""

from __future__ import annotations

from dataclasses import dataclass

from sgxlaunch.arch import Report, TargetInfo
from sgxlaunch.cpu import EnclaveContext, EnclaveProgram
from sgxlaunch.driver import LoadedEnclave
from sgxlaunch.formats.quote import ReportBody
from sgxlaunch.launch.collector import Expectation
from sgxlaunch.launch.platform import LogAttestation, Platform
from tests.support.platform import Owner, allow_rule, author_enclave

NONCE = bytes.fromhex("6e6f6e63652d30303031")


class ReportTarget(EnclaveProgram):
    """ECALL 0: this enclave's TARGETINFO. ECALL 1: 1 if the REPORT given was made for this
    enclave on this CPU (its MAC verifies under this enclave's report key), else 0."""

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        if function == 0:
            me = ctx.ereport(bytes(512))
            return TargetInfo(
                mrenclave=me.mrenclave, attributes=me.attributes, miscselect=me.miscselect
            ).to_bytes()
        return b"\x01" if ctx.verify_report(data) else b"\x00"


@dataclass
class Attested:
    """One attestation: the report body the verifier enclave accepted, and the export."""

    body: ReportBody
    export: bytes
    attestation: LogAttestation


def owner_with_log(launches: int = 2, *, seed: bytes = b"platform-seed-for-tests-0001") -> Owner:
    """An owner-mode platform whose launch log holds ``launches`` attempt/outcome pairs."""
    owner = Owner(seed=seed)
    owner.set_up_launch_enclave()
    _, app = author_enclave()
    _, target = author_enclave(ReportTarget, isvprodid=9)
    allow = [allow_rule(app), allow_rule(target, "report-target")]
    owner.platform().install_policy(owner.policy(version=1, allow=allow))
    owner.platform().set_mode(owner.mode("owner", version=1))
    launch(owner.platform(), launches)
    return owner


def launch(platform: Platform, count: int) -> None:
    """``count`` allowed launches (two records each)."""
    image, sig = author_enclave()
    for _ in range(count):
        result = platform.run(image, sig)
        assert result.decision == "allowed" and result.enclave is not None
        result.enclave.close()


def _target(platform: Platform) -> LoadedEnclave:
    image, sig = author_enclave(ReportTarget, isvprodid=9)
    result = platform.run(image, sig)
    assert result.enclave is not None
    platform.cpu.register_program(sig.enclavehash, ReportTarget)
    return result.enclave


def attest(platform: Platform, nonce: bytes = NONCE, *, first_seq: int = 0) -> Attested:
    """Load the verifier enclave (which logs its own launch), then attest the log for it."""
    target = _target(platform)
    attestation = platform.attest_log(nonce, target.ecall(0), first_seq=first_seq)
    assert target.ecall(1, attestation.report) == b"\x01", "the REPORT does not verify"
    # (the target stays loaded: closing it would append a teardown record after the head)
    body = ReportBody.from_bytes(Report.from_bytes(attestation.report).body_bytes())
    return Attested(body, attestation.export, attestation)


def expectation(owner: Owner, platform: Platform, nonce: bytes = NONCE) -> Expectation:
    signer = platform.le_signer
    assert signer is not None
    return Expectation(
        nonce=nonce, platform_id=platform.platform_id, le_mrsigner=signer, owner_root=owner.root
    )
