"""Shared builders for the policy tests: owners with real keys, signed roots, policies, modes."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from sgxlaunch.policy import (
    MODE_PAYLOAD_TYPE,
    POLICY_PAYLOAD_TYPE,
    ROOT_PAYLOAD_TYPE,
    EnclaveIdentity,
    LaunchPolicy,
    MemoryStore,
    OwnerRoot,
    PrivateKeySigner,
    TrustedState,
    install_mode,
    install_policy,
    install_root,
    sign_payload,
)
from sgxlaunch.policy._json import dumps_canonical
from tests.support.clock import LATER, NOW

SIGNER_A = bytes.fromhex("a1" * 32)
SIGNER_B = bytes.fromhex("b2" * 32)
ENCLAVE_X = bytes.fromhex("c3" * 32)
ENCLAVE_Y = bytes.fromhex("d4" * 32)
LE_SIGNER = bytes.fromhex("e5" * 32)
OTHER_LE_SIGNER = bytes.fromhex("e6" * 32)
PLATFORM = bytes.fromhex("f7" * 32)
OTHER_PLATFORM = bytes.fromhex("f8" * 32)

_DEFAULT: Any = object()


def ed25519_signer() -> PrivateKeySigner:
    return PrivateKeySigner(ed25519.Ed25519PrivateKey.generate())


@functools.cache
def ecdsa_signer() -> PrivateKeySigner:
    return PrivateKeySigner(ec.generate_private_key(ec.SECP256R1()))


@functools.cache
def rsa_signer() -> PrivateKeySigner:
    return PrivateKeySigner(rsa.generate_private_key(public_exponent=65537, key_size=3072))


def root_envelope(
    *,
    keys: Sequence[PrivateKeySigner],
    signers: Sequence[PrivateKeySigner],
    threshold: int,
    version: int = 1,
    expires: datetime = LATER,
) -> bytes:
    root = OwnerRoot.create(
        version=version,
        expires=expires,
        threshold=threshold,
        keys=[k.public_key for k in keys],
    )
    return sign_payload(ROOT_PAYLOAD_TYPE, root.to_payload(), signers).to_bytes()


def policy_doc(
    *,
    version: int = 1,
    expires: str = "2027-01-01T00:00:00Z",
    allow: list[dict[str, Any]] | None = None,
    deny: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "spec_version": "1",
        "version": version,
        "expires": expires,
        "allow": [{"id": "acme", "mrsigner": SIGNER_A.hex(), "isvprodid": 1}]
        if allow is None
        else allow,
        "deny": [] if deny is None else deny,
    }


def policy_payload(**kwargs: Any) -> bytes:
    return dumps_canonical(policy_doc(**kwargs))


def mode_doc(
    *,
    version: int = 1,
    expires: str = "2027-01-01T00:00:00Z",
    mode: str = "owner",
    le_mrsigner: Any = _DEFAULT,
    platform_id: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """A platform-mode document; ``le_mrsigner`` defaults to :data:`LE_SIGNER` in owner mode
    (pass ``None`` to leave it out), ``platform_id`` is left out unless given."""
    doc: dict[str, Any] = {
        "spec_version": "1",
        "type": "platform-mode",
        "version": version,
        "expires": expires,
        "mode": mode,
    }
    if le_mrsigner is _DEFAULT:
        le_mrsigner = LE_SIGNER.hex() if mode == "owner" else None
    if le_mrsigner is not None:
        doc["le_mrsigner"] = le_mrsigner
    if platform_id is not None:
        doc["platform_id"] = platform_id
    doc.update(extra)
    return doc


def mode_payload(**kwargs: Any) -> bytes:
    return dumps_canonical(mode_doc(**kwargs))


def identity(**changes: Any) -> EnclaveIdentity:
    fields: dict[str, Any] = {
        "mrenclave": ENCLAVE_X,
        "mrsigner": SIGNER_A,
        "isvprodid": 1,
        "isvsvn": 5,
        "flags": 0x4,
        "xfrm": 0x3,
    }
    fields.update(changes)
    return EnclaveIdentity(**fields)


@dataclass
class Owner:
    """A 2-of-3 owner with its store already holding the root."""

    keys: list[PrivateKeySigner] = field(
        default_factory=lambda: [ed25519_signer() for _ in range(3)]
    )
    threshold: int = 2
    store: MemoryStore = field(default_factory=MemoryStore)

    def __post_init__(self) -> None:
        install_root(self.store, self.root(), NOW)

    def root(self, **kwargs: Any) -> bytes:
        kwargs.setdefault("keys", self.keys)
        kwargs.setdefault("signers", self.keys[: self.threshold])
        kwargs.setdefault("threshold", self.threshold)
        return root_envelope(**kwargs)

    def sign_policy(
        self, payload: bytes, signers: Sequence[PrivateKeySigner] | None = None
    ) -> bytes:
        chosen = self.keys[: self.threshold] if signers is None else signers
        return sign_payload(POLICY_PAYLOAD_TYPE, payload, chosen).to_bytes()

    def install(self, payload: bytes, now: datetime = NOW) -> TrustedState:
        state, _ = install_policy(self.store, self.sign_policy(payload), now)
        return state

    def sign_mode(self, payload: bytes, signers: Sequence[PrivateKeySigner] | None = None) -> bytes:
        chosen = self.keys[: self.threshold] if signers is None else signers
        return sign_payload(MODE_PAYLOAD_TYPE, payload, chosen).to_bytes()

    def install_mode(
        self, payload: bytes, now: datetime = NOW, platform_id: bytes | None = None
    ) -> TrustedState:
        state, _ = install_mode(self.store, self.sign_mode(payload), now, platform_id=platform_id)
        return state


def parse_policy(**kwargs: Any) -> LaunchPolicy:
    return LaunchPolicy.from_payload(policy_payload(**kwargs))
