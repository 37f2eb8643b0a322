"""A provisioned platform (the machine's emulated PCS, the PCK certificate issued as at
``platform init``), the example enclave signed for it, and quotes verified with dcap-qvl."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa

from sgxlaunch.arch import Attributes, Report, Sigstruct, TargetInfo
from sgxlaunch.attest import Collateral, TrustAnchor, VerifiedQuote, verify_quote
from sgxlaunch.attest.pcs import EmulatedPcs, ensure_provisioning
from sgxlaunch.cpu import program_image
from sgxlaunch.cpu.machine import MemoryMachine
from sgxlaunch.driver import LoadedEnclave, as_sgxs_image
from sgxlaunch.example import ECALL_REPORT, HelloEnclave
from sgxlaunch.launch.platform import Platform, PlatformConfig
from sgxlaunch.policy import MemoryStore
from sgxlaunch.sigstruct import generate_key, sign
from tests.support.clock import NOW, Clock
from tests.support.cpu import DEBUG, PROD
from tests.support.keys import signer


@functools.cache
def platform_signing_key() -> rsa.RSAPrivateKey:
    """The PCE/QE signing key of the test machines (made once per session: no vector key is
    free for this role)."""
    return generate_key()


def provision(machine: MemoryMachine) -> EmulatedPcs:
    """The machine's emulated PCS, made as ``platform init`` makes it."""
    return ensure_provisioning(
        machine, now=NOW, random=os.urandom, enclave_signing_key=platform_signing_key()
    )


@dataclass
class QuotingPlatform:
    """A permissive platform on a provisioned machine, with its PCK certificate issued."""

    seed: bytes = b"quoting-platform-seed-0001"
    store: MemoryStore = field(default_factory=MemoryStore)
    clock: Clock = field(default_factory=Clock)
    machine: MemoryMachine = field(init=False)
    platform: Platform = field(init=False)

    def __post_init__(self) -> None:
        self.machine = MemoryMachine(PlatformConfig(epc_size=8 << 20).machine_state(self.seed))
        provision(self.machine)
        self.platform = self.open()
        self.platform.quoter().provision()

    def open(self) -> Platform:
        return Platform.open(self.store, self.machine, clock=self.clock)

    @property
    def pcs(self) -> EmulatedPcs:
        return EmulatedPcs(self.machine)

    def collateral(self) -> Collateral:
        return Collateral.from_bytes(self.pcs.collateral(self.clock.now))

    def anchor(self) -> TrustAnchor:
        return TrustAnchor.from_certificate(self.pcs.root_der())

    def verify(self, quote: bytes) -> VerifiedQuote:
        """dcap-qvl's verdict on ``quote`` under this machine's root, at the clock's time."""
        return verify_quote(quote, self.collateral(), self.clock.now, anchor=self.anchor())


def example(*, flags: int = PROD, key: str = "app") -> tuple[bytes, Sigstruct]:
    """The example enclave's SGXS image and a SIGSTRUCT for it (``flags``: DEBUG or not)."""
    image = program_image(HelloEnclave)
    body = Sigstruct(
        attributes=Attributes(flags=flags, xfrm=0x3),
        attributemask=Attributes(flags=2**64 - 1, xfrm=2**64 - 1),
        miscmask=2**32 - 1,
        isvprodid=5,
        isvsvn=3,
        enclavehash=image.mrenclave(),
    )
    return image.sgxs(), sign(body, signer(key))


def launch_example(platform: Platform, *, flags: int = PROD) -> LoadedEnclave:
    """The example enclave, launched on ``platform`` (its program registered)."""
    data, sig = example(flags=flags)
    image = program_image(HelloEnclave)
    platform.cpu.register_program(image.mrenclave(), HelloEnclave)
    enclave = platform.run(as_sgxs_image(image), sig).enclave
    assert enclave is not None and data
    return enclave


def report_for(enclave: LoadedEnclave, target: TargetInfo, reportdata: bytes) -> bytes:
    """The example enclave's REPORT for ``target`` (ECALL 1)."""
    report = enclave.ecall(ECALL_REPORT, target.to_bytes() + reportdata)
    assert len(report) == Report.SIZE, report
    return report


__all__ = [
    "DEBUG",
    "PROD",
    "QuotingPlatform",
    "example",
    "launch_example",
    "platform_signing_key",
    "provision",
    "report_for",
]
