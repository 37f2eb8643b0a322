"""Attacks on the attested launch log a remote collector verifies (issue 19), at the level of the
collector's checks on a report body the verifier enclave accepted as made on this CPU for it.
The same attacks through real DCAP quotes and the command line:
``tests/cli/test_log_attest_cli.py``.

The attacker holds the home and the untrusted host (it edits the export, replays old quotes,
offers another platform's or another enclave's quote); the collector knows the nonce it asked
for, the platform id, the launch-enclave signer and the owner root, and keeps its state."""

from __future__ import annotations

import json

import pytest

from sgxlaunch.arch.constants import AttributeFlag
from sgxlaunch.cpu.machine import MemoryMachine
from sgxlaunch.errors import PlatformMismatch, VerificationFailed
from sgxlaunch.formats.quote import ReportBody
from sgxlaunch.launch.collector import (
    CollectorState,
    LaunchEnclaveMismatch,
    LogForked,
    NonceMismatch,
    StaleHead,
    verify_attested_log,
)
from sgxlaunch.launch.enclave import sign_launch_enclave
from sgxlaunch.launch.log import LogTampered, attest_reportdata
from sgxlaunch.launch.platform import Platform
from sgxlaunch.policy import MemoryStore
from tests.support.attested_log import (
    NONCE,
    Attested,
    attest,
    expectation,
    launch,
    owner_with_log,
)
from tests.support.keys import signer
from tests.support.platform import Owner


def _lines(export: bytes) -> list[bytes]:
    return export.split(b"\n")[:-1]


def _join(lines: list[bytes]) -> bytes:
    return b"\n".join(lines) + b"\n"


@pytest.fixture(scope="module")
def setup() -> tuple[Owner, Platform, Attested]:
    owner = owner_with_log(3)
    platform = owner.platform()
    return owner, platform, attest(platform)


def test_unmodified_export_verifies(setup: tuple[Owner, Platform, Attested]) -> None:
    owner, platform, attested = setup
    result = verify_attested_log(attested.body, attested.export, expectation(owner, platform))
    assert result.head == attested.attestation.head


@pytest.mark.parametrize("index", [1, 3, 6])
def test_record_removed_from_the_export_refused(
    setup: tuple[Owner, Platform, Attested], index: int
) -> None:
    owner, platform, attested = setup
    lines = _lines(attested.export)
    del lines[1 + index]
    with pytest.raises(LogTampered, match=f"record {index}: missing or out of order"):
        verify_attested_log(attested.body, _join(lines), expectation(owner, platform))


def test_last_records_removed_from_the_export_refused(
    setup: tuple[Owner, Platform, Attested],
) -> None:
    owner, platform, attested = setup
    lines = _lines(attested.export)
    with pytest.raises(LogTampered, match="do not end at the attested head"):
        verify_attested_log(attested.body, _join(lines[:-2]), expectation(owner, platform))


def test_records_reordered_in_the_export_refused(
    setup: tuple[Owner, Platform, Attested],
) -> None:
    owner, platform, attested = setup
    lines = _lines(attested.export)
    lines[2], lines[3] = lines[3], lines[2]
    with pytest.raises(LogTampered, match="record 1: missing or out of order"):
        verify_attested_log(attested.body, _join(lines), expectation(owner, platform))


def test_records_reordered_with_seq_rewritten_refused(
    setup: tuple[Owner, Platform, Attested],
) -> None:
    """Swap two records and rewrite their ``seq`` so the order looks right: the chain breaks."""
    owner, platform, attested = setup
    lines = _lines(attested.export)
    a, b = json.loads(lines[2]), json.loads(lines[3])
    a["seq"], b["seq"] = b["seq"], a["seq"]
    lines[2], lines[3] = (
        json.dumps(b, sort_keys=True, separators=(",", ":")).encode(),
        json.dumps(a, sort_keys=True, separators=(",", ":")).encode(),
    )
    with pytest.raises(LogTampered, match="does not chain"):
        verify_attested_log(attested.body, _join(lines), expectation(owner, platform))


@pytest.mark.parametrize("where", ["middle", "last"])
def test_record_edited_in_the_export_refused(
    setup: tuple[Owner, Platform, Attested], where: str
) -> None:
    """Turn a denial into "allowed" (or change an MRENCLAVE) in one exported record."""
    owner, platform, attested = setup
    lines = _lines(attested.export)
    index = 2 if where == "middle" else len(lines) - 1
    record = json.loads(lines[index])
    record["time"] = "2020-01-01T00:00:00Z"
    lines[index] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    expected = "does not chain" if where == "middle" else "do not end at the attested head"
    with pytest.raises(LogTampered, match=expected):
        verify_attested_log(attested.body, _join(lines), expectation(owner, platform))


def test_quote_from_another_platform_refused(setup: tuple[Owner, Platform, Attested]) -> None:
    """The same owner's other platform (same root, same launch enclave): its attestation is
    offered as this platform's."""
    owner, platform, _ = setup
    other_owner = Owner(keys=owner.keys, seed=b"another-platform-seed-000002")
    assert other_owner.root == owner.root
    other_owner.set_up_launch_enclave()
    other = other_owner.platform()
    assert other.platform_id != platform.platform_id and other.le_signer == platform.le_signer
    foreign = attest(other)
    with pytest.raises(PlatformMismatch, match="another platform"):
        verify_attested_log(foreign.body, foreign.export, expectation(owner, platform))
    # Without the exporting host's header claims the refusal cannot say which value differs.
    lines = _lines(foreign.export)
    header = json.loads(lines[0])
    del header["attested"]
    lines[0] = json.dumps(header).encode()
    with pytest.raises(VerificationFailed, match="another platform"):
        verify_attested_log(foreign.body, _join(lines), expectation(owner, platform))


def test_quote_from_another_launch_enclave_refused(
    setup: tuple[Owner, Platform, Attested],
) -> None:
    """Another signer's launch enclave (same owner root), another owner root's launch enclave
    (same signer), any other enclave writing the same REPORTDATA, and a DEBUG launch enclave."""
    owner, platform, attested = setup
    expect = expectation(owner, platform)
    # Another launch-enclave signer on this platform (set up but never named by a mode doc).
    twin = Platform.open(
        MemoryStore(owner.store.snapshot()), MemoryMachine(owner.machine.load()), clock=owner.clock
    )
    twin.set_launch_enclave(sign_launch_enclave(owner.root, signer("fourth")))
    twin.set_mode(owner.mode("owner", version=2, le="fourth"))
    other_signer = Platform.open(twin.store, twin.machine, clock=owner.clock)
    foreign = attest(other_signer)
    with pytest.raises(LaunchEnclaveMismatch, match="another enclave signer"):
        verify_attested_log(foreign.body, foreign.export, expect)
    # Another owner root, the same launch-enclave key: a different launch enclave image.
    stranger = Owner()
    stranger.set_up_launch_enclave()
    theirs = attest(stranger.platform())
    with pytest.raises(LaunchEnclaveMismatch, match="not the launch enclave of this owner root"):
        verify_attested_log(theirs.body, theirs.export, expect)
    # Any other enclave (here: the body of another signer's enclave carrying the right data).
    fake = ReportBody.from_bytes(
        attested.body.replace(mrsigner=bytes(32), reportdata=attested.body.reportdata).to_bytes()
    )
    with pytest.raises(LaunchEnclaveMismatch, match="MRSIGNER"):
        verify_attested_log(fake, attested.export, expect)
    debug = attested.body.replace(
        attributes=attested.body.attributes.replace(
            flags=attested.body.attributes.flags | int(AttributeFlag.DEBUG)
        )
    )
    with pytest.raises(LaunchEnclaveMismatch, match="DEBUG"):
        verify_attested_log(debug, attested.export, expect)


def test_replayed_quote_with_an_old_nonce_refused(
    setup: tuple[Owner, Platform, Attested],
) -> None:
    owner, platform, attested = setup
    with pytest.raises(NonceMismatch, match="replayed quote"):
        verify_attested_log(
            attested.body, attested.export, expectation(owner, platform, b"fresh-nonce")
        )


def test_stale_head_with_state_refused() -> None:
    """The collector verified a later head; an earlier attestation (its own nonce, its own
    records) is offered again."""
    owner = owner_with_log(1)
    platform = owner.platform()
    early = attest(platform, b"early")
    launch(platform, 2)
    late = attest(platform, b"late")
    result = verify_attested_log(
        late.body, late.export, expectation(owner, platform, b"late"), state=CollectorState()
    )
    assert result.state is not None
    verify_attested_log(early.body, early.export, expectation(owner, platform, b"early"))
    with pytest.raises(StaleHead, match="stale head"):
        verify_attested_log(
            early.body, early.export, expectation(owner, platform, b"early"), state=result.state
        )


def test_forked_log_refused() -> None:
    """The platform's machine and home copied at one head (a cloned machine): the two copies
    extend the same head differently; the collector accepts one and refuses the other."""
    owner = owner_with_log(1)
    clone = Platform.open(
        MemoryStore(owner.store.snapshot()), MemoryMachine(owner.machine.load()), clock=owner.clock
    )
    platform = owner.platform()
    common = attest(platform, b"common")
    state = verify_attested_log(
        common.body, common.export, expectation(owner, platform, b"common"), state=CollectorState()
    ).state
    assert state is not None
    launch(platform, 1)
    mine = attest(platform, b"mine")
    launch(clone, 2)
    theirs = attest(clone, b"theirs")
    assert theirs.attestation.head.hash != mine.attestation.head.hash
    state = verify_attested_log(
        mine.body, mine.export, expectation(owner, platform, b"mine"), state=state
    ).state
    assert state is not None
    with pytest.raises(LogForked, match="forked log"):
        verify_attested_log(
            theirs.body, theirs.export, expectation(owner, clone, b"theirs"), state=state
        )
    # From the common head alone, each extension alone verifies (neither is tampered).
    verify_attested_log(theirs.body, theirs.export, expectation(owner, clone, b"theirs"))


def test_restarted_log_without_an_epoch_record_refused() -> None:
    """A log that starts again from the genesis hash without an owner-signed epoch record
    (here: another machine of the same owner claiming this platform's history) does not extend
    the verified head."""
    owner = owner_with_log(2)
    platform = owner.platform()
    long = attest(platform, b"long")
    state = verify_attested_log(
        long.body, long.export, expectation(owner, platform, b"long"), state=CollectorState()
    ).state
    assert state is not None
    fresh = Owner(keys=owner.keys, seed=owner.seed)
    fresh.set_up_launch_enclave()
    launch_platform = fresh.platform()
    restarted = attest(launch_platform, b"restart")
    assert restarted.attestation.head.count < long.attestation.head.count
    with pytest.raises((StaleHead, LogForked)):
        verify_attested_log(
            restarted.body,
            restarted.export,
            expectation(owner, launch_platform, b"restart"),
            state=state,
        )


def test_reportdata_binds_every_input() -> None:
    """Each of the nonce, the platform id, the count and the head changes REPORTDATA."""
    from sgxlaunch.launch.log import LogHead

    base = attest_reportdata(NONCE, bytes(32), LogHead(3, bytes(32)))
    assert base != attest_reportdata(NONCE + b"x", bytes(32), LogHead(3, bytes(32)))
    assert base != attest_reportdata(NONCE, b"\x01" + bytes(31), LogHead(3, bytes(32)))
    assert base != attest_reportdata(NONCE, bytes(32), LogHead(4, bytes(32)))
    assert base != attest_reportdata(NONCE, bytes(32), LogHead(3, b"\x01" + bytes(31)))
