"""Attacks on where trust lives (issue: the machine boundary). The attacker holds the home (the
``Store``) — reads and writes every key — and the CLI / API; the machine (seed, OWNEREPOCH,
owner binding, monotonic counter) is out of reach. Classes: A (the fused secret in the home),
B (deleting state is a fresh start), C (rollback).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from sgxlaunch.arch import Attributes, EinitToken
from sgxlaunch.cpu import Processor
from sgxlaunch.cpu.keys import cmac128
from sgxlaunch.cpu.machine import (
    CounterAccessDenied,
    MachineState,
    MemoryMachine,
    counter_compare_and_set,
    counter_read,
)
from sgxlaunch.driver import LoadFailed
from sgxlaunch.errors import (
    PolicyDenied,
    Rollback,
    SgxlaunchError,
    ThresholdNotMet,
    UsageError,
    VerificationFailed,
)
from sgxlaunch.launch.enclave import (
    LE_ISVPRODID,
    RECOVERY_PAYLOAD_TYPE,
    recovery_payload,
    root_digest_of,
    sign_launch_enclave,
)
from sgxlaunch.launch.platform import (
    Platform,
    PlatformConfig,
    le_sealed_key,
    log_prefix,
    migrate_legacy_home,
    take_ownership,
)
from sgxlaunch.policy import (
    MODE_KEY,
    POLICY_KEY,
    ROOT_KEY,
    ROOT_PAYLOAD_TYPE,
    MemoryStore,
    OwnerRoot,
    PrivateKeySigner,
    sign_payload,
)
from sgxlaunch.policy.control import MODE_PAYLOAD_TYPE, ModeDocument
from sgxlaunch.sigstruct import mrsigner_of
from tests.support.clock import LATER, NOW
from tests.support.cpu import KeyProbe, MemoryProgram
from tests.support.keys import signer
from tests.support.platform import Owner, allow_rule, author_enclave


def owner_platform() -> tuple[Owner, Platform]:
    owner = Owner()
    owner.set_up_launch_enclave()
    _, sig = author_enclave(MemoryProgram)
    owner.platform().install_policy(owner.policy(version=1, allow=[allow_rule(sig)]))
    owner.platform().set_mode(owner.mode("owner", version=1))
    return owner, owner.platform()


def refuses_to_start(owner: Owner, match: str) -> None:
    with pytest.raises(VerificationFailed, match=match):
        owner.platform()
    blocked = owner.platform(maintenance=True)
    image, sig = author_enclave(MemoryProgram)
    with pytest.raises(SgxlaunchError):
        blocked.run(image, sig)


# -- A: the CPU's fused secret ----------------------------------------------------------------


def test_seed_read_from_the_home_cannot_mint_tokens_offline() -> None:
    """A. The attacker tries every value in the home as the platform seed, rebuilds the CPU
    offline, MACs an EINITTOKEN for an enclave the policy denies, and offers it."""
    owner, platform = owner_platform()
    image, sig = author_enclave(KeyProbe, isvprodid=7)  # denied: the policy allows ISVPRODID 1
    with pytest.raises(PolicyDenied):
        platform.run(image, sig)
    tokens: list[bytes] = []
    platform.driver.observers.append(lambda a: tokens.append(a.token or b""))
    allowed_image, allowed_sig = author_enclave(MemoryProgram)
    platform.run(allowed_image, allowed_sig)
    genuine = EinitToken.from_bytes(tokens[-1])
    seed = owner.machine.load().seed
    values = [owner.store.get(k) or b"" for k in owner.store.keys("")]
    assert not any(seed in v for v in values), "the platform seed is in the home"
    accepted = []
    for candidate in (v for v in values if 16 <= len(v) <= 64):
        offline = Processor(PlatformConfig(epc_size=4 << 20).cpu_config(), candidate)
        offline.set_lepubkeyhash(platform.le_signer or b"")
        forged = replace(
            genuine,
            mrenclave=sig.enclavehash,
            mrsigner=sig.mrsigner,
            attributes=Attributes(flags=genuine.attributes.flags, xfrm=genuine.attributes.xfrm),
        )
        forged = forged.replace(
            mac=cmac128(offline._einit.launch_key(forged), forged.maced_bytes())
        )
        try:
            owner.platform().run(image, sig, token=forged.to_bytes())
            accepted.append(candidate)
        except LoadFailed:
            pass
    assert accepted == []


def test_log_rewritten_offline_with_a_seed_from_the_home_refused() -> None:
    """A. The attacker tries every value in the home as the platform seed: rebuilds the CPU
    offline over a copy of the home without the log and sealed state, replays a harmless
    history (one permissive-looking launch), and writes the records and the sealed head back."""
    owner, platform = owner_platform()
    image, sig = author_enclave(KeyProbe, isvprodid=7)
    with pytest.raises(PolicyDenied):
        platform.run(image, sig)  # the denial the attacker wants to erase
    signer_hex = platform.le_signer or b""
    erased = [le_sealed_key(signer_hex), *owner.store.keys(log_prefix(signer_hex))]
    values = [owner.store.get(k) or b"" for k in owner.store.keys("")]
    rewritten = []
    for candidate in (v for v in values if 16 <= len(v) <= 64):
        copy = MemoryStore({k: v for k, v in owner.store.snapshot().items() if k not in erased})
        offline = Platform.open(
            copy,
            MemoryMachine(PlatformConfig(epc_size=4 << 20).machine_state(candidate)),
            clock=owner.clock,
            maintenance=True,
        )
        if offline.le is None:
            continue
        allowed_image, allowed_sig = author_enclave(MemoryProgram)
        offline.run(allowed_image, allowed_sig)
        forged = {k: copy.get(k) for k in copy.keys("") if k in erased or k.startswith("log/")}
        home = MemoryStore(owner.store.snapshot())
        home.commit({k: None for k in erased} | forged)
        try:
            # the offline launch: its attempt and outcome records
            ok = Platform.open(home, owner.machine, clock=owner.clock).verify_log() == 2
        except VerificationFailed:
            ok = False
        if ok:
            rewritten.append(candidate)
    assert rewritten == []


# -- B: deleting state is not a fresh start ---------------------------------------------------


def test_deleting_mode_document_and_active_launch_enclave_does_not_give_permissive() -> None:
    """B. Delete ``owner/mode`` and ``platform/le-active``: the counter's owner still starts
    and refuses a home whose mode document is gone."""
    owner, _ = owner_platform()
    owner.store.commit({MODE_KEY: None, "platform/le-active": None})
    refuses_to_start(owner, "platform-mode document in the home is not the one")


def test_deleting_sealed_state_and_log_then_older_policy_refused() -> None:
    """B. Delete the sealed state and the log, put an older signed policy back."""
    owner, platform = owner_platform()
    v1 = owner.store.get(POLICY_KEY)
    _, sig = author_enclave(MemoryProgram)
    platform.install_policy(owner.policy(version=2, allow=[allow_rule(sig, "v2")]))
    signer_hex = platform.le_signer or b""
    owner.store.commit(
        {le_sealed_key(signer_hex): None, POLICY_KEY: v1}
        | {k: None for k in owner.store.keys(log_prefix(signer_hex))}
    )
    refuses_to_start(owner, "sealed state is missing while the monotonic counter is at")


def test_grafted_root_launch_enclave_policy_and_mode_refused() -> None:
    """B. Graft the attacker's own 1-of-1 root, launch enclave, policy and mode document."""
    owner, _ = owner_platform()
    from cryptography.hazmat.primitives.asymmetric import ed25519

    attacker = PrivateKeySigner(ed25519.Ed25519PrivateKey.generate())
    root = OwnerRoot.create(version=1, expires=LATER, threshold=1, keys=[attacker.public_key])
    root_env = sign_payload(ROOT_PAYLOAD_TYPE, root.to_payload(), [attacker]).to_bytes()
    graft = MemoryStore()  # built like a fresh platform of the attacker's, then copied over
    graft_machine = MemoryMachine(PlatformConfig(epc_size=4 << 20).machine_state(b"x" * 32))
    take_ownership(graft, graft_machine, root_env, NOW)
    le = sign_launch_enclave(root_env, signer("other"))
    Platform.open(graft, graft_machine, clock=owner.clock).set_launch_enclave(le)
    doc = ModeDocument.create(
        version=5,
        expires=LATER,
        mode="owner",
        le_mrsigner=mrsigner_of(signer("other").public_key()),
    )
    changes: dict[str, bytes | None] = {k: None for k in owner.store.keys("")}
    changes |= graft.snapshot()
    changes[MODE_KEY] = sign_payload(MODE_PAYLOAD_TYPE, doc.to_payload(), [attacker]).to_bytes()
    owner.store.commit(changes)
    refuses_to_start(owner, "not the one this machine is bound to")
    assert owner.machine.load().owner_binding == root_digest_of(owner.root)


# -- C: rollback --------------------------------------------------------------------------------


def test_older_sealed_blob_with_log_tail_deleted_refused() -> None:
    """C. Put back only an older sealed blob and delete the log records after it."""
    owner, platform = owner_platform()
    image, sig = author_enclave(MemoryProgram)
    platform.run(image, sig)
    signer_hex = platform.le_signer or b""
    old_sealed = owner.store.get(le_sealed_key(signer_hex))
    kept = set(owner.store.keys(log_prefix(signer_hex)))
    reopened = owner.platform()
    reopened.run(image, sig)
    reopened.run(image, sig)
    tail = [k for k in owner.store.keys(log_prefix(signer_hex)) if k not in kept]
    assert tail
    owner.store.commit({le_sealed_key(signer_hex): old_sealed} | {k: None for k in tail})
    refuses_to_start(owner, "rollback")


def test_whole_older_copy_of_the_home_refused() -> None:
    """C. Keep a whole copy of the home, revoke (a new policy denies everything), put the
    copy back."""
    owner, platform = owner_platform()
    copy = owner.store.snapshot()
    platform.install_policy(owner.policy(version=2, allow=[]))
    restore: dict[str, bytes | None] = {k: None for k in owner.store.keys("")}
    owner.store.commit(restore | copy)
    refuses_to_start(owner, "rollback")


# -- the counter's owner, handover, recovery, migration, clearing ------------------------------


def test_counter_handover_to_a_new_launch_enclave_signer() -> None:
    """The counter belongs to the launch enclave's (MRSIGNER, ISVPRODID); a mode document naming
    another signer hands it over with the same compare-and-set; the old signer loses it and the
    rollback floor carries over."""
    owner, platform = owner_platform()
    old = platform.le_signer or b""
    sig2 = sign_launch_enclave(owner.root, signer("fourth"))
    platform.set_launch_enclave(sig2)
    v1 = owner.store.get(POLICY_KEY)
    owner.platform().set_mode(owner.mode("owner", version=2, le="fourth"))
    reopened = owner.platform()
    slot = owner.machine.load().counter
    assert slot.owner_mrsigner == sig2.mrsigner and reopened.le_signer == sig2.mrsigner
    with pytest.raises(CounterAccessDenied):
        counter_read(owner.machine, old, LE_ISVPRODID)
    with pytest.raises(CounterAccessDenied):
        counter_compare_and_set(
            owner.machine,
            old,
            LE_ISVPRODID,
            value=slot.value,
            digest=slot.digest,
            new_digest=bytes(32),
        )
    image, sig = author_enclave(MemoryProgram)
    assert reopened.run(image, sig).decision == "allowed"
    # The new signer's segment opens with its epoch record (the mode document naming it),
    # then the attempt and its outcome.
    assert owner.platform().verify_log() == 3
    epoch = owner.platform().log_records()[0]
    assert (epoch["kind"], epoch["cause"], epoch["le_mrsigner"]) == (
        "epoch",
        "handover",
        sig2.mrsigner.hex(),
    )
    reopened.install_policy(owner.policy(version=2, allow=[allow_rule(sig, "v2")]))
    owner.store.commit({POLICY_KEY: v1})
    refuses_to_start(owner, "rollback")


def test_handover_interrupted_after_the_home_commit_is_finished_at_open() -> None:
    owner, platform = owner_platform()
    sig2 = sign_launch_enclave(owner.root, signer("fourth"))
    platform.set_launch_enclave(sig2)
    p = owner.platform()
    p._le_call = _skip_advance(p._le_call)  # type: ignore[method-assign, no-untyped-call]
    p.set_mode(owner.mode("owner", version=2, le="fourth"))
    assert owner.machine.load().counter.owner_mrsigner != sig2.mrsigner
    assert owner.platform().le_signer == sig2.mrsigner
    assert owner.machine.load().counter.owner_mrsigner == sig2.mrsigner


def _skip_advance(call):  # type: ignore[no-untyped-def]
    from sgxlaunch.launch.ecalls import AdvanceReply, AdvanceRequest

    def wrapped(request, reply_type):  # type: ignore[no-untyped-def]
        if isinstance(request, AdvanceRequest):
            return AdvanceReply(counter=0)
        return call(request, reply_type)

    return wrapped


def test_owner_recovery_needs_a_threshold_and_the_current_counter() -> None:
    owner, platform = owner_platform()
    signer_hex = platform.le_signer or b""
    owner.store.commit({le_sealed_key(signer_hex): None})
    refuses_to_start(owner, "sealed state is missing")
    counter = owner.machine.load().counter.value
    pid = platform.platform_id

    def doc(n: int, keys: int) -> bytes:
        return sign_payload(
            RECOVERY_PAYLOAD_TYPE, recovery_payload(pid, n), owner.keys[:keys]
        ).to_bytes()

    with pytest.raises(ThresholdNotMet):
        owner.platform(maintenance=True).recover(doc(counter, 1))
    with pytest.raises(Rollback):
        owner.platform(maintenance=True).recover(doc(counter - 1, 2))
    owner.platform(maintenance=True).recover(doc(counter, 2))
    assert owner.machine.load().counter.value == counter + 1
    image, sig = author_enclave(MemoryProgram)
    assert owner.platform().run(image, sig).decision == "allowed"
    with pytest.raises(Rollback):  # the same document again: the counter moved on
        owner.platform(maintenance=True).recover(doc(counter, 2))


def test_legacy_home_with_seed_is_refused_and_migrates_to_a_new_seed() -> None:
    owner, _ = owner_platform()
    legacy = MemoryStore(owner.store.snapshot() | {"platform/seed": b"s" * 32})
    with pytest.raises(UsageError, match="machine migrate"):
        Platform.open(legacy, owner.machine, clock=owner.clock)
    fresh = MemoryMachine(PlatformConfig(epc_size=4 << 20).machine_state(b"n" * 32))
    migrate_legacy_home(legacy, fresh, NOW)
    assert legacy.get("platform/seed") is None
    assert legacy.get(ROOT_KEY) == owner.root
    assert fresh.load().owner_binding == root_digest_of(owner.root)
    platform = Platform.open(legacy, fresh, clock=owner.clock)
    assert platform.le is None and platform.mode == "permissive"
    assert legacy.keys("archive/legacy/")


def test_clearing_ownership_bumps_owner_epoch_and_kills_sealed_state() -> None:
    owner, platform = owner_platform()
    sealed_key = le_sealed_key(platform.le_signer or b"")
    before = owner.machine.load()
    owner.machine.swap(before, before.cleared())
    assert owner.machine.load().owner_epoch == before.owner_epoch + 1
    refuses_to_start(owner, "no owner")
    take_ownership(owner.store, owner.machine, owner.root, NOW)
    other = Owner()
    with pytest.raises(UsageError, match="already has an owner"):
        take_ownership(owner.store, owner.machine, other.root, NOW)
    fresh = owner.platform()  # the old sealed state no longer unseals: a fresh start
    assert fresh.status()["counter"] == 0
    assert owner.store.get(sealed_key) is not None


def test_root_rotation_interrupted_before_the_binding_moved_is_finished_at_open() -> None:
    """A rotation is committed to the home (with the launch enclave re-signed for the new root)
    but the process dies before the machine's binding moves: the next open checks the rotation
    against the bound root's keys and finishes it (a root that is not such a rotation is a
    graft, refused above)."""
    owner, platform = owner_platform()
    root = OwnerRoot.create(
        version=2, expires=LATER, threshold=2, keys=[k.public_key for k in owner.keys]
    )
    rotated = sign_payload(ROOT_PAYLOAD_TYPE, root.to_payload(), owner.keys[:2]).to_bytes()
    resigned = sign_launch_enclave(rotated, signer("owner-le"))
    bound = owner.machine.load().owner_binding
    platform.machine = _DiesBeforeWriting(owner.machine)  # the crash
    platform.rotate_root(rotated, [resigned])
    assert owner.machine.load().owner_binding == bound
    reopened = owner.platform()
    assert owner.machine.load().owner_binding == root_digest_of(rotated)
    image, sig = author_enclave(MemoryProgram)
    assert reopened.run(image, sig).decision == "allowed"


class _DiesBeforeWriting:
    """A machine whose writes are lost (the process died before them)."""

    def __init__(self, inner: MemoryMachine) -> None:
        self.inner = inner

    def load(self) -> MachineState:
        return self.inner.load()

    def swap(self, expected: MachineState, new: MachineState) -> None:
        del expected, new
