"""Attested-code grants end to end: an owner's platform running the example loader
(:mod:`sgxlaunch.example_loader`) under a policy whose rule for it says ``attested-code``, and
the user-space side of the protocol (challenge ioctl, the loader's REPORT, grant ioctl)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from sgxlaunch.arch import Attributes, Report, Sigstruct, TargetInfo
from sgxlaunch.arch.constants import PAGE_SIZE, AttributeFlag
from sgxlaunch.cpu import EnclaveContext, EnclaveImage, EnclaveProgram, program_code_page
from sgxlaunch.cpu.machine import CounterAccessDenied
from sgxlaunch.driver import Enclave, LoadedEnclave, as_sgxs_image, uapi
from sgxlaunch.example_loader import (
    DYNAMIC_OFFSET,
    ECALL_PLACE,
    ECALL_REPORT,
    ECALL_RUN,
    ECALL_WRITE,
    CodeLoader,
    FetchedCode,
    loader_image,
)
from sgxlaunch.launch.platform import Platform
from sgxlaunch.policy import POLICY_PAYLOAD_TYPE, sign_payload
from sgxlaunch.policy._json import dumps_canonical, format_time
from sgxlaunch.sigstruct import sign
from tests.support.cpu import PROD
from tests.support.keys import signer
from tests.support.platform import Owner

KSS = int(AttributeFlag.KSS)
CODE = program_code_page(FetchedCode)
"""The fetched code: one page that runs :class:`FetchedCode`."""
RX = uapi.PROT_READ | uapi.PROT_EXEC
RW = uapi.PROT_READ | uapi.PROT_WRITE


def loader_sigstruct(
    *,
    flags: int = PROD | KSS,
    key: str = "app",
    isvprodid: int = 7,
    image: EnclaveImage | None = None,
) -> Sigstruct:
    """The loader's SIGSTRUCT (or ``image``'s): ATTRIBUTES ``flags`` (KSS by default) under a
    full mask."""
    image = image if image is not None else loader_image()
    body = Sigstruct(
        attributes=Attributes(flags=flags, xfrm=0x3),
        attributemask=Attributes(flags=2**64 - 1, xfrm=2**64 - 1),
        miscmask=2**32 - 1,
        isvprodid=isvprodid,
        isvsvn=1,
        enclavehash=image.mrenclave(),
    )
    return sign(body, signer(key))


def dynamic_policy(
    owner: Owner,
    *,
    version: int,
    allow: list[dict[str, Any]],
    deny: list[dict[str, Any]] | None = None,
) -> bytes:
    """A spec "3" policy (dynamic-memory fields), issued at the owner's clock, 2 signers."""
    doc = {
        "spec_version": "3",
        "version": version,
        "issued": format_time(owner.clock.now),
        "expires": "2027-06-01T00:00:00Z",
        "allow": allow,
        "deny": deny or [],
    }
    return sign_payload(POLICY_PAYLOAD_TYPE, dumps_canonical(doc), owner.keys[:2]).to_bytes()


def loader_rule(
    sig: Sigstruct,
    *,
    level: str = "attested-code",
    code_hashes: list[str] | str | None = "any",
    rule_id: str = "loader",
    **extra: Any,
) -> dict[str, Any]:
    """An allow rule naming the loader's MRENCLAVE, with KSS permitted."""
    rule: dict[str, Any] = {
        "id": rule_id,
        "mrenclave": sig.enclavehash.hex(),
        "kss": True,
        "dynamic_memory": level,
        **extra,
    }
    if code_hashes is not None:
        rule["code_hashes"] = code_hashes
    return rule


@dataclass
class Loader:
    """One running loader instance and the user-space side of the grant protocol."""

    platform: Platform
    loaded: LoadedEnclave
    sig: Sigstruct

    @property
    def process(self) -> Any:
        return self.loaded.process

    @property
    def enclave(self) -> Enclave:
        """The driver's ``struct sgx_encl`` of this instance."""
        return self.loaded.process._enclave_of(self.loaded.fd)

    def mmap(self, offset: int, length: int, prot: int, process: Any = None) -> int:
        """Map enclave offsets ``[offset, offset + length)`` with ``prot`` (MAP_FIXED)."""
        proc = process if process is not None else self.process
        fd = self.loaded.fd if process is None else process.open(uapi.DEV_SGX_ENCLAVE)
        address = self.loaded.baseaddr + offset
        flags = uapi.MAP_SHARED | uapi.MAP_FIXED
        proc.mmap(address, length, prot, flags, fd)
        return address

    def mprotect(self, offset: int, length: int, prot: int) -> None:
        self.process.mprotect(self.loaded.baseaddr + offset, length, prot)

    def place(self, offset: int = DYNAMIC_OFFSET, code: bytes = CODE) -> bytes:
        """Map the range RW and have the loader fetch ``code`` into it; its SHA-256."""
        self.mmap(offset, len(code), RW)
        return self.loaded.ecall(ECALL_PLACE, struct.pack("<Q", offset) + code)

    def write(self, offset: int, data: bytes) -> None:
        self.loaded.ecall(ECALL_WRITE, struct.pack("<Q", offset) + data)

    def ioctl(self, cmd: int, payload: bytes) -> bytes:
        """The ioctl with ``payload`` in user memory; the struct as the driver left it."""
        proc = self.process
        arg = proc.alloc(max(PAGE_SIZE, len(payload)))
        try:
            proc.write(arg, payload)
            proc.ioctl(self.loaded.fd, cmd, arg)
            return bytes(proc.read(arg, len(payload)))
        finally:
            proc.free(arg)

    def challenge(self, offset: int = DYNAMIC_OFFSET, length: int = PAGE_SIZE) -> bytes:
        out = self.ioctl(
            uapi.SGX_IOC_ENCLAVE_GRANT_CHALLENGE,
            uapi.GRANT_CHALLENGE_ARG.pack(offset, length, bytes(32)),
        )
        challenge: bytes = uapi.GRANT_CHALLENGE_ARG.unpack(out)[2]
        return challenge

    def report(
        self,
        challenge: bytes,
        offset: int = DYNAMIC_OFFSET,
        length: int = PAGE_SIZE,
        target: TargetInfo | None = None,
    ) -> tuple[bytes, bytes]:
        """The loader's REPORT for the launch enclave (or ``target``) and its code hash."""
        info = target if target is not None else self.platform.le_target_info()
        out = self.loaded.ecall(
            ECALL_REPORT, struct.pack("<512s32sQQ", info.to_bytes(), challenge, offset, length)
        )
        return out[: Report.SIZE], out[Report.SIZE :]

    def grant(
        self,
        challenge: bytes,
        code_hash: bytes,
        report: bytes,
        offset: int = DYNAMIC_OFFSET,
        length: int = PAGE_SIZE,
    ) -> None:
        self.ioctl(
            uapi.SGX_IOC_ENCLAVE_GRANT_EXEC,
            uapi.GRANT_EXEC_ARG.pack(offset, length, challenge, code_hash, report),
        )

    def attested_grant(self, offset: int = DYNAMIC_OFFSET, length: int = PAGE_SIZE) -> bytes:
        """Challenge → the loader's REPORT → grant. Returns the code hash granted."""
        challenge = self.challenge(offset, length)
        report, code_hash = self.report(challenge, offset, length)
        self.grant(challenge, code_hash, report, offset, length)
        return code_hash

    def run(self, offset: int = DYNAMIC_OFFSET, data: bytes = b"hi") -> bytes:
        """Have the loader jump to the code at ``offset``."""
        return self.loaded.ecall(ECALL_RUN, struct.pack("<QQ", offset, 0) + data)


def start_loader(platform: Platform, sig: Sigstruct, image: EnclaveImage | None = None) -> Loader:
    """Run the loader (or ``image`` of it) through the launch enclave's MINT on ``platform``."""
    image = image if image is not None else loader_image()
    platform.cpu.register_program(image.mrenclave(), CodeLoader)
    platform.cpu.register_code(FetchedCode)
    result = platform.run(as_sgxs_image(image), sig)
    assert result.enclave is not None
    return Loader(platform, result.enclave, sig)


def grant_platform(
    *, level: str = "attested-code", code_hashes: list[str] | str | None = "any"
) -> tuple[Owner, Platform, Sigstruct]:
    """An owner platform with its launch enclave and a policy whose rule for the loader has
    ``dynamic_memory`` ``level`` (KSS permitted)."""
    owner = Owner()
    owner.set_up_launch_enclave()
    platform = owner.platform()
    sig = loader_sigstruct()
    platform.install_policy(
        dynamic_policy(
            owner,
            version=1,
            allow=[loader_rule(sig, level=level, code_hashes=code_hashes)],
        )
    )
    platform.set_mode(owner.mode("owner", version=1))
    return owner, owner.platform(), sig


class VerdictForger(EnclaveProgram):
    """ECALL 0: try to post the 32 bytes given as an owner verdict."""

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        try:
            ctx.owner_verdict_post(data)
        except CounterAccessDenied:
            return b"denied"
        return b"posted"
