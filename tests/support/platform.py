"""An owner with a whole platform in a memory store, and an author's enclave (fixed clock)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from sgxlaunch.arch import Attributes, Sigstruct
from sgxlaunch.cpu import program_image
from sgxlaunch.cpu.machine import MemoryMachine
from sgxlaunch.driver import as_sgxs_image
from sgxlaunch.formats.sgxs import SgxsImage
from sgxlaunch.launch.enclave import sign_launch_enclave
from sgxlaunch.launch.platform import Platform, PlatformConfig, take_ownership
from sgxlaunch.policy import (
    POLICY_PAYLOAD_TYPE,
    ROOT_PAYLOAD_TYPE,
    MemoryStore,
    OwnerRoot,
    PrivateKeySigner,
    sign_payload,
)
from sgxlaunch.policy._json import dumps_canonical, format_time
from sgxlaunch.policy.control import MODE_PAYLOAD_TYPE, ModeDocument
from sgxlaunch.sigstruct import sign
from tests.support.clock import LATER, NOW, Clock
from tests.support.cpu import PROD, MemoryProgram
from tests.support.keys import mrsigner, signer


def author_enclave(
    program: type = MemoryProgram,
    *,
    key: str = "app",
    flags: int = PROD,
    isvprodid: int = 1,
    isvsvn: int = 1,
) -> tuple[SgxsImage, Sigstruct]:
    image = program_image(program)
    body = Sigstruct(
        attributes=Attributes(flags=flags, xfrm=0x3),
        attributemask=Attributes(flags=2**64 - 1, xfrm=2**64 - 1),
        miscmask=2**32 - 1,
        isvprodid=isvprodid,
        isvsvn=isvsvn,
        enclavehash=image.mrenclave(),
    )
    return as_sgxs_image(image), sign(body, signer(key))


@dataclass
class Owner:
    """A 2-of-3 owner with a platform in a memory store."""

    keys: list[PrivateKeySigner] = field(
        default_factory=lambda: [
            PrivateKeySigner(ed25519.Ed25519PrivateKey.generate()) for _ in range(3)
        ]
    )
    store: MemoryStore = field(default_factory=MemoryStore)
    clock: Clock = field(default_factory=Clock)
    seed: bytes = b"platform-seed-for-tests-0001"
    root: bytes = b""
    machine: MemoryMachine = field(init=False)

    def __post_init__(self) -> None:
        root = OwnerRoot.create(
            version=1, expires=LATER, threshold=2, keys=[k.public_key for k in self.keys]
        )
        self.root = sign_payload(ROOT_PAYLOAD_TYPE, root.to_payload(), self.keys[:2]).to_bytes()
        self.machine = MemoryMachine(PlatformConfig(epc_size=4 << 20).machine_state(self.seed))
        take_ownership(self.store, self.machine, self.root, NOW)

    def platform(self, *, maintenance: bool = False) -> Platform:
        return Platform.open(self.store, self.machine, clock=self.clock, maintenance=maintenance)

    def set_up_launch_enclave(self, key: str = "owner-le") -> Sigstruct:
        sig = sign_launch_enclave(self.root, signer(key))
        self.platform().set_launch_enclave(sig)
        return sig

    def policy(
        self,
        *,
        version: int,
        allow: list[dict[str, Any]],
        deny: list[dict[str, Any]] | None = None,
        signers: int = 2,
        expires: str = "2027-06-01T00:00:00Z",
        issued: bool = True,
        spec_version: str | None = None,
    ) -> bytes:
        """A policy signed by ``signers`` keys, ``issued`` at the clock's time unless told;
        ``spec_version`` "2" when issued (else "1") unless told (e.g. "3")."""
        doc: dict[str, Any] = {
            "spec_version": "1",
            "version": version,
            "expires": expires,
            "allow": allow,
            "deny": deny or [],
        }
        if issued:
            doc["spec_version"] = "2"
            doc["issued"] = min(format_time(self.clock.now), expires)  # same format: ordered
        if spec_version is not None:
            doc["spec_version"] = spec_version
        return sign_payload(
            POLICY_PAYLOAD_TYPE, dumps_canonical(doc), self.keys[:signers]
        ).to_bytes()

    def mode(
        self,
        mode: str,
        *,
        version: int,
        le: str = "owner-le",
        signers: int = 2,
        platform_id: bytes | None = None,
        issued: bool = True,
    ) -> bytes:
        """A mode document (unbound unless ``platform_id``), issued at the clock's time."""
        doc = ModeDocument.create(
            version=version,
            expires=LATER,
            mode=mode,
            le_mrsigner=mrsigner(le) if mode == "owner" else None,
            platform_id=platform_id,
            issued=self.clock.now if issued else None,
        )
        return sign_payload(MODE_PAYLOAD_TYPE, doc.to_payload(), self.keys[:signers]).to_bytes()


def allow_rule(sig: Sigstruct, rule_id: str = "author-app", **extra: Any) -> dict[str, Any]:
    return {"id": rule_id, "mrsigner": sig.mrsigner.hex(), "isvprodid": sig.isvprodid, **extra}
