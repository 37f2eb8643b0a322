"""The launch enclave trusts only what it verified (issue 11, attack classes D–I).

D. minting on an unverified SIGSTRUCT; E. a token outliving its SIGSTRUCT and its policy;
F. unsigned input moving a floor; G. a future clock poisoning the time floor; H. the
launch-enclave key launching anything; I. unbound mode documents replaying across platforms.
Each failure path that must not change state is checked to leave the home unchanged.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from sgxlaunch.arch import EinitToken, Sigstruct
from sgxlaunch.driver import LoadFailed, load
from sgxlaunch.errors import (
    Expired,
    PlatformMismatch,
    PolicyDenied,
    SgxlaunchError,
    VerificationFailed,
)
from sgxlaunch.launch.platform import Platform, PlatformConfig
from sgxlaunch.policy import (
    MODE_KEY,
    POLICY_KEY,
    POLICY_PAYLOAD_TYPE,
    PrivateKeySigner,
    sign_payload,
)
from sgxlaunch.policy._json import dumps_canonical
from sgxlaunch.policy.control import MODE_PAYLOAD_TYPE, ModeDocument
from sgxlaunch.policy.envelope import Envelope
from sgxlaunch.store.machine import FileMachine
from tests.support.cli import run as cli
from tests.support.clock import LATER, NOW
from tests.support.cpu import MemoryProgram
from tests.support.home import make_disk_home
from tests.support.platform import Owner, allow_rule, author_enclave


def owner_platform(
    allow: list[dict[str, Any]] | None = None,
    deny: list[dict[str, Any]] | None = None,
    *,
    seed: bytes = b"platform-seed-for-tests-0001",
) -> tuple[Owner, Platform]:
    """Owner mode; policy v1 allows the author's MemoryProgram (ISVPRODID 1) unless told."""
    owner = Owner(seed=seed)
    owner.set_up_launch_enclave()
    platform = owner.platform()
    _, sig = author_enclave(MemoryProgram)
    platform.install_policy(
        owner.policy(version=1, allow=allow or [allow_rule(sig)], deny=deny or [])
    )
    platform.set_mode(owner.mode("owner", version=1))
    return owner, owner.platform()


def mint(platform: Platform, sig: bytes) -> bytes | None:
    """Ask the launch enclave for a token, as the untrusted host may (its ECALL interface)."""
    return platform.mint(sig).token


def token_for(platform: Platform, sig: Sigstruct) -> bytes:
    token = mint(platform, sig.to_bytes())
    assert token is not None
    return token


def last_record(platform: Platform) -> dict[str, object]:
    return platform.log_records()[-1]


# -- D. minting on an unverified SIGSTRUCT ------------------------------------------------------


def test_mint_on_unverified_sigstruct_refused_after_cached_genuine() -> None:
    """A genuine denied SIGSTRUCT (ISVPRODID 2), verified and cached first; then the same
    SIGSTRUCT with ISVPRODID changed to the allowed 1 without re-signing: no token."""
    owner, platform = owner_platform()
    image, genuine = author_enclave(MemoryProgram, isvprodid=2)
    with pytest.raises(PolicyDenied):
        platform.run(image, genuine)  # verified (and cached) by the launch enclave
    forged = genuine.replace(isvprodid=1).to_bytes()
    before = owner.store.snapshot()
    with pytest.raises(VerificationFailed):
        mint(platform, forged)
    assert owner.store.snapshot() == before
    # The genuine one is still denied, and a zero token does not launch it.
    with pytest.raises(PolicyDenied):
        platform.run(image, genuine)


def test_mint_on_unverified_sigstruct_cannot_escape_a_deny_rule() -> None:
    _, sig1 = author_enclave(MemoryProgram)
    deny = [{"id": "old-svn", "mrsigner": sig1.mrsigner.hex(), "isvsvn": {"min": 0, "max": 4}}]
    _, platform = owner_platform(deny=deny)
    image, old = author_enclave(MemoryProgram, isvsvn=3)
    with pytest.raises(PolicyDenied):
        platform.run(image, old)
    with pytest.raises(VerificationFailed):
        mint(platform, old.replace(isvsvn=9).to_bytes())


# -- E. a token outlives its SIGSTRUCT and its policy -------------------------------------------


def test_token_for_one_sigstruct_refused_for_another_of_same_code_and_signer() -> None:
    _, sig1 = author_enclave(MemoryProgram)
    allow = [allow_rule(sig1, isvsvn={"min": 1, "max": 1})]
    _, platform = owner_platform(allow=allow)
    image, svn1 = author_enclave(MemoryProgram, isvsvn=1)
    _, svn2 = author_enclave(MemoryProgram, isvsvn=2)  # same MRENCLAVE and MRSIGNER, denied
    assert (svn1.enclavehash, svn1.mrsigner) == (svn2.enclavehash, svn2.mrsigner)
    token = token_for(platform, svn1)
    with pytest.raises(PolicyDenied):
        platform.run(image, svn2)
    with pytest.raises(LoadFailed) as err:
        platform.run(image, svn2, token=token)
    assert err.value.errno == 1  # EPERM: the driver's owner-mode INIT check
    assert last_record(platform)["outcome"] == "refused"
    # The token launches the SIGSTRUCT it was minted for.
    result = platform.run(image, svn1, token=token)
    assert result.enclave is not None


def test_token_minted_before_policy_install_refused_after() -> None:
    owner, platform = owner_platform()
    image, sig = author_enclave(MemoryProgram)
    token = token_for(platform, sig)
    # v2 revokes the enclave: the old token must not launch it.
    platform.install_policy(owner.policy(version=2, allow=[{"id": "x", "mrenclave": "ab" * 32}]))
    with pytest.raises(LoadFailed):
        platform.run(image, sig, token=token)
    with pytest.raises(PolicyDenied):
        platform.run(image, sig)
    # v3 allows it again: the token minted under v1 still does not launch; a new one does.
    platform.install_policy(owner.policy(version=3, allow=[allow_rule(sig)]))
    with pytest.raises(LoadFailed):
        owner.platform().run(image, sig, token=token)
    assert owner.platform().run(image, sig).enclave is not None


def test_tokens_for_the_same_sigstruct_are_distinct() -> None:
    _, platform = owner_platform()
    _, sig = author_enclave(MemoryProgram)
    a, b = token_for(platform, sig), token_for(platform, sig)
    assert a != b
    assert EinitToken.from_bytes(a).keyid != EinitToken.from_bytes(b).keyid


# -- F. unsigned input moves a floor ------------------------------------------------------------


def unsigned_policy(version: int) -> bytes:
    doc = {
        "spec_version": "1",
        "version": version,
        "expires": "2027-06-01T00:00:00Z",
        "allow": [],
        "deny": [],
    }
    return sign_payload(POLICY_PAYLOAD_TYPE, dumps_canonical(doc), []).to_bytes()


def test_unsigned_policy_in_the_home_does_not_raise_the_floor() -> None:
    """Before any policy is committed, an unsigned policy of version 2^63 − 1 is written into
    the home; the platform is opened and used; the owner's policies must still install."""
    owner = Owner()
    owner.set_up_launch_enclave()
    owner.store.commit({POLICY_KEY: unsigned_policy(2**63 - 1)})
    image, sig = author_enclave(MemoryProgram)
    owner.platform().run(image, sig)  # permissive; the log commits the launch enclave's state
    owner.store.commit({POLICY_KEY: None})
    platform = owner.platform()
    platform.install_policy(owner.policy(version=1, allow=[allow_rule(sig)]))
    assert owner.platform().state is not None


def test_policy_signed_by_strangers_in_the_home_does_not_raise_the_floor() -> None:
    owner = Owner()
    owner.set_up_launch_enclave()
    strangers = [PrivateKeySigner(ed25519.Ed25519PrivateKey.generate()) for _ in range(2)]
    doc = {
        "spec_version": "1",
        "version": 2**63 - 1,
        "expires": "2027-06-01T00:00:00Z",
        "allow": [],
        "deny": [],
    }
    forged = sign_payload(POLICY_PAYLOAD_TYPE, dumps_canonical(doc), strangers).to_bytes()
    owner.store.commit({POLICY_KEY: forged})
    image, sig = author_enclave(MemoryProgram)
    owner.platform().run(image, sig)
    owner.store.commit({POLICY_KEY: None})
    owner.platform().install_policy(owner.policy(version=1, allow=[allow_rule(sig)]))


def test_mode_document_below_threshold_in_the_home_does_not_raise_the_mode_floor() -> None:
    """A mode document of version 2^63 − 1 signed by one key (below the threshold) written
    over the owner's: the platform refuses to start, and opening it (also in maintenance, where
    the launch enclave runs) moves no floor — with the owner's document back, the owner's
    version 2 installs."""
    owner, _platform = owner_platform()
    original = owner.store.get(MODE_KEY)
    assert original is not None
    forged = owner.mode("permissive", version=2**63 - 1, signers=1)
    owner.store.commit({MODE_KEY: forged})
    with pytest.raises(VerificationFailed):
        owner.platform()
    blocked = owner.platform(maintenance=True)
    assert blocked.blocked is not None
    owner.store.commit({MODE_KEY: original})
    platform = owner.platform()
    assert platform.mode == "owner"
    assert platform.set_mode(owner.mode("owner", version=2))["version"] == 2
    assert owner.platform().mode == "owner"


def test_mode_document_below_threshold_before_the_first_commit_does_not_raise_the_floor() -> None:
    """As above before the launch enclave has committed anything: the forged document sits in
    the home while the platform is opened and used (its first commit); the owner's mode
    documents still install afterwards."""
    owner = Owner()
    owner.set_up_launch_enclave()
    owner.store.commit({MODE_KEY: owner.mode("permissive", version=2**63 - 1, signers=1)})
    with contextlib.suppress(SgxlaunchError):
        owner.platform().run(*author_enclave(MemoryProgram))
    blocked = owner.platform(maintenance=True)
    with contextlib.suppress(SgxlaunchError):
        blocked.run(*author_enclave(MemoryProgram))
    owner.store.commit({MODE_KEY: None})
    platform = owner.platform()
    assert platform.set_mode(owner.mode("permissive", version=1))["version"] == 1
    assert owner.platform().set_mode(owner.mode("owner", version=2))["version"] == 2


# -- G. a future clock poisons the time floor --------------------------------------------------


def test_future_clock_does_not_poison_the_time_floor() -> None:
    owner, platform = owner_platform()
    image, sig = author_enclave(MemoryProgram)
    owner.clock.now = datetime(9999, 12, 31, 0, 0, tzinfo=UTC)
    with pytest.raises(PolicyDenied):  # everything is expired at that instant
        owner.platform().run(image, sig)
    owner.clock.now = NOW
    platform = owner.platform()
    result = platform.run(image, sig)
    assert result.decision == "allowed" and result.enclave is not None
    platform.install_policy(owner.policy(version=2, allow=[allow_rule(sig)]))


def test_document_without_issued_time_does_not_move_the_time_floor() -> None:
    """A spec_version "1" policy (no signed `issued`) installed while the host clock is two
    months ahead does not carry that clock into the floor: with the clock back, a policy
    expiring one month from now still installs and launches."""
    owner, _platform = owner_platform()
    image, sig = author_enclave(MemoryProgram)
    owner.clock.now = NOW + timedelta(days=60)
    owner.platform().install_policy(owner.policy(version=2, allow=[allow_rule(sig)], issued=False))
    owner.clock.now = NOW
    soon = (NOW + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    owner.platform().install_policy(owner.policy(version=3, allow=[allow_rule(sig)], expires=soon))
    result = owner.platform().run(image, sig)
    assert result.decision == "allowed" and result.enclave is not None


def test_document_without_issued_time_expired_before_the_floor_refused() -> None:
    """A spec_version "1" policy counts as issued no later than the latest signed `issued`:
    once a document issued after its expiry was verified, it is expired whatever the host
    clock says, and nothing is stored."""
    owner, _platform = owner_platform()
    _, sig = author_enclave(MemoryProgram)
    soon = (NOW + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    old_style = owner.policy(version=2, allow=[allow_rule(sig)], expires=soon, issued=False)
    owner.clock.now = NOW + timedelta(days=60)
    owner.platform().set_mode(owner.mode("owner", version=2))  # issued after that expiry
    owner.clock.now = NOW  # the host turns its clock back
    before = owner.store.snapshot()
    with pytest.raises(Expired):
        owner.platform().install_policy(old_style)
    assert owner.store.snapshot() == before


# -- H. the launch-enclave key launches anything ------------------------------------------------


def test_launch_enclave_key_launches_only_the_launch_enclave() -> None:
    """An enclave signed with the owner's launch-enclave key needs no token in hardware
    (MRSIGNER equals IA32_SGXLEPUBKEYHASH); in owner mode the driver refuses it."""
    _, platform = owner_platform()
    image, sig = author_enclave(MemoryProgram, key="owner-le")
    with pytest.raises(LoadFailed) as err:
        load(platform.new_process(), image, sig, token=bytes(EinitToken.SIZE))
    assert err.value.errno == 1  # EPERM (the owner-mode INIT check)
    with pytest.raises(PolicyDenied):
        platform.run(image, sig)
    records = platform.log_records()
    attempt, outcome = records[-2], records[-1]  # the attempt, then its outcome
    assert attempt["decision"] == "denied" and outcome["outcome"] == "refused"
    outcomes = {r["attempt"]: r["outcome"] for r in records if r.get("kind") == "outcome"}
    for rec in records:
        if rec.get("decision") == "denied":
            assert outcomes.get(rec["seq"]) != "initialized"


# -- I. unbound mode documents replay across platforms -----------------------------------------


def test_mode_document_for_another_platform_refused() -> None:
    """The owner's document for platform B does not switch platform A, even when the host
    hands the launch enclave B's platform id."""
    owner_a, platform_a = owner_platform(seed=b"platform-A-seed-000000000000")
    owner_b = Owner(seed=b"platform-B-seed-000000000000", keys=owner_a.keys)
    doc = ModeDocument.create(
        version=2,
        expires=LATER,
        mode="permissive",
        platform_id=owner_b.platform().platform_id,
    )
    data = sign_payload(MODE_PAYLOAD_TYPE, doc.to_payload(), owner_a.keys[:2]).to_bytes()
    before = owner_a.store.snapshot()
    with pytest.raises(PlatformMismatch):
        platform_a.set_mode(data)
    platform_a.platform_id = owner_b.platform().platform_id  # a lying host
    with pytest.raises(PlatformMismatch):
        platform_a.set_mode(data)
    assert owner_a.store.snapshot() == before
    assert owner_a.platform().mode == "owner"


def test_owner_mode_new_binds_to_a_platform_by_default(tmp_path: Path) -> None:
    """`owner mode new` binds the document to a platform unless told --any-platform: to
    --platform-id, or by default to the machine's own id; with neither it refuses."""
    new = ("owner", "mode", "new", "--mode", "permissive", "--version", "2")
    out = tmp_path / "mode.json"
    result = cli(*new, "--machine", tmp_path / "no-machine.json", "-o", out)
    assert result.exit_code == 2, result.output
    assert "--any-platform" in result.output
    assert not out.exists()
    assert cli(*new, "--any-platform", "-o", out).exit_code == 0
    assert (
        ModeDocument.from_payload(Envelope.from_bytes(out.read_bytes()).payload).platform_id is None
    )
    machine = tmp_path / "machine.json"
    state = PlatformConfig().machine_state(b"platform-A-seed-000000000000")
    FileMachine.create(machine, state)
    bound = tmp_path / "bound.json"
    result = cli(*new, "--machine", machine, "-o", bound)
    assert result.exit_code == 0, result.output
    doc = ModeDocument.from_payload(Envelope.from_bytes(bound.read_bytes()).payload)
    assert doc.platform_id == state.platform_id and doc.issued is not None


def test_platform_mode_says_when_the_document_is_unbound(tmp_path: Path) -> None:
    """`platform mode` with an unbound document (made with --any-platform) says on stderr that
    it is valid on every platform of the owner; a document bound to this machine installs
    without that note. Both take effect (the status shows the new version)."""
    disk = make_disk_home(tmp_path)
    where = ("--home", disk.home, "--machine", disk.machine)
    platform_id = FileMachine(disk.machine).load().platform_id
    bound = tmp_path / "bound.json"
    bound.write_bytes(disk.owner.mode("owner", version=2, platform_id=platform_id))
    unbound = tmp_path / "unbound.json"
    unbound.write_bytes(disk.owner.mode("owner", version=3))
    note = "not bound to a platform"

    result = cli("platform", "mode", bound, *where)
    assert result.exit_code == 0, result.output
    assert note not in result.stderr
    assert "document version 2" in result.stdout

    result = cli("platform", "mode", unbound, *where, "--json")
    assert result.exit_code == 0, result.output
    assert note in result.stderr and "valid on every platform" in result.stderr
    assert json.loads(result.stdout)["result"]["platform_id"] is None
    status = cli("platform", "status", *where, "--json")
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["result"]["mode_document"] == {"version": 3, "mode": "owner"}


def test_expired_policy_refused_after_a_later_signed_document_with_clock_turned_back() -> None:
    """The clock-turned-back case with signed time: once the launch enclave has verified a
    document issued after a policy's expiry, that policy is expired whatever the host clock."""
    owner, platform = owner_platform()
    _, sig = author_enclave(MemoryProgram)
    data = owner.policy(version=2, allow=[allow_rule(sig)], expires="2026-12-01T00:00:00Z")
    owner.clock.now += timedelta(days=30)  # past the policy's expiry
    platform = owner.platform()
    platform.set_mode(owner.mode("owner", version=2))  # issued now: after the expiry
    owner.clock.now -= timedelta(days=30)  # the host turns its clock back
    before = owner.store.snapshot()
    with pytest.raises(Expired):
        owner.platform().install_policy(data)
    assert owner.store.snapshot() == before
