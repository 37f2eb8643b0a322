"""Attacks on attested-code grants (issue 17), each named after what it tries.

The attacker is user space: it hosts the loader, calls the ioctls with whatever bytes it likes,
hosts the launch enclave (so it can call its ECALLs directly) and may replace the owner-service
port. It cannot write the processor's owner-verdict mailbox except from the enclave that owns
the machine's counter. Every refusal leaves ``exec_grants`` unchanged; refusals the launch
enclave judged are in the launch log.
"""

from __future__ import annotations

import dataclasses
import errno

import pytest

from sgxlaunch.arch import Report
from sgxlaunch.arch.constants import PAGE_SIZE
from sgxlaunch.cpu import program_image
from sgxlaunch.driver import DriverError
from sgxlaunch.driver.grants import GrantQuery, grant_reportdata, grant_verdict
from sgxlaunch.example_loader import DYNAMIC_OFFSET, LOADER_SIZE, CodeLoader
from sgxlaunch.launch.ecalls import GrantReply, GrantRequest
from sgxlaunch.launch.log import GRANT
from tests.support.driver import expect_errno
from tests.support.grants import (
    RW,
    RX,
    Loader,
    VerdictForger,
    dynamic_policy,
    grant_platform,
    loader_rule,
    loader_sigstruct,
    start_loader,
)
from tests.support.platform import author_enclave

SECOND = DYNAMIC_OFFSET + PAGE_SIZE


def _vma_prot(loader: Loader, offset: int = DYNAMIC_OFFSET) -> int:
    found = loader.process.find_vma(loader.loaded.baseaddr + offset)
    assert found is not None
    prot: int = found[0]
    return prot


def _refused_in_log(loader: Loader, why: str) -> None:
    record = loader.platform.log_records()[-1]
    assert record["kind"] == GRANT
    assert record["verdict"] == "refused"
    assert why in record["report"]


def test_report_targeted_at_another_enclave_refused() -> None:
    """The loader's REPORT MACed for another target (the loader itself) does not verify
    under the launch enclave's report key: EPERM, logged, no grant."""
    _owner, platform, sig = grant_platform()
    loader = start_loader(platform, sig)
    loader.place()
    challenge = loader.challenge()
    le = platform.le_target_info()
    other = dataclasses.replace(le, mrenclave=sig.enclavehash)
    report, code_hash = loader.report(challenge, target=other)
    with expect_errno(errno.EPERM):
        loader.grant(challenge, code_hash, report)
    assert loader.enclave.exec_grants == {}
    _refused_in_log(loader, "MAC")


def test_report_from_another_enclave_refused() -> None:
    """Another enclave (another MRENCLAVE, also allowed attested-code) reports the loader's
    challenge and range: the launch enclave refuses a REPORT whose MRENCLAVE is not the one
    the driver names for the instance."""
    owner, platform, sig = grant_platform()
    image = dataclasses.replace(program_image(CodeLoader), size=2 * LOADER_SIZE)
    twin_sig = loader_sigstruct(image=image)
    platform.install_policy(
        dynamic_policy(
            owner, version=2, allow=[loader_rule(sig), loader_rule(twin_sig, rule_id="twin")]
        )
    )
    platform = owner.platform()
    loader = start_loader(platform, sig)
    twin = start_loader(platform, twin_sig, image)
    assert twin.enclave.mrenclave != loader.enclave.mrenclave
    loader.place()
    twin.place()
    challenge = loader.challenge()
    report, code_hash = twin.report(challenge)
    with expect_errno(errno.EPERM):
        loader.grant(challenge, code_hash, report)
    assert loader.enclave.exec_grants == {}
    _refused_in_log(loader, "another enclave")


def test_report_from_another_instance_of_same_mrenclave_refused() -> None:
    """A second instance of the same loader reports the first one's challenge and range:
    same MRENCLAVE, but its CONFIGID is not the one the driver wrote for the first: EPERM."""
    _owner, platform, sig = grant_platform()
    first, second = start_loader(platform, sig), start_loader(platform, sig)
    first.place()
    second.place()
    challenge = first.challenge()
    report, code_hash = second.report(challenge)
    assert Report.from_bytes(report).mrenclave == first.enclave.mrenclave
    with expect_errno(errno.EPERM):
        first.grant(challenge, code_hash, report)
    assert first.enclave.exec_grants == {}
    _refused_in_log(first, "another instance")


def test_replayed_report_with_old_challenge_refused() -> None:
    """A REPORT that won a grant is replayed: with its old challenge (none outstanding, or
    not the one issued) → EINVAL; with the new challenge → its REPORTDATA binds the old one:
    EPERM. Neither grants anything."""
    _owner, platform, sig = grant_platform()
    loader = start_loader(platform, sig)
    loader.place()
    old = loader.challenge()
    report, code_hash = loader.report(old)
    loader.grant(old, code_hash, report)
    loader.write(DYNAMIC_OFFSET, b"\x00")  # ends the grant (a writable PTE)
    assert loader.enclave.exec_grants == {}
    with expect_errno(errno.EINVAL):
        loader.grant(old, code_hash, report)
    loader.challenge()
    with expect_errno(errno.EINVAL):  # the old challenge is not the one issued now
        loader.grant(old, code_hash, report)
    new = loader.challenge()
    with expect_errno(errno.EPERM):
        loader.grant(new, code_hash, report)
    assert loader.enclave.exec_grants == {}
    _refused_in_log(loader, "REPORTDATA")


def test_report_for_another_range_refused() -> None:
    """A REPORT made for one page is submitted for another page (with that page's own
    challenge): REPORTDATA binds the range: EPERM."""
    _owner, platform, sig = grant_platform()
    loader = start_loader(platform, sig)
    loader.place(DYNAMIC_OFFSET)
    loader.place(SECOND)
    challenge = loader.challenge(SECOND)
    report, code_hash = loader.report(challenge, DYNAMIC_OFFSET)
    with expect_errno(errno.EPERM):
        loader.grant(challenge, code_hash, report, SECOND)
    assert loader.enclave.exec_grants == {}
    _refused_in_log(loader, "REPORTDATA")


def test_forged_reportdata_refused() -> None:
    """User space rewrites REPORTDATA to bind other code (the MAC breaks), or passes another
    code hash than the one the REPORT binds (REPORTDATA mismatch): EPERM both ways."""
    _owner, platform, sig = grant_platform()
    loader = start_loader(platform, sig)
    loader.place()
    challenge = loader.challenge()
    report, _hash = loader.report(challenge)
    other_hash = bytes(32)
    forged = Report.from_bytes(report).replace(
        reportdata=grant_reportdata(challenge, DYNAMIC_OFFSET, PAGE_SIZE, other_hash)
    )
    with expect_errno(errno.EPERM):
        loader.grant(challenge, other_hash, forged.to_bytes())
    _refused_in_log(loader, "MAC")
    challenge = loader.challenge()
    report, _code_hash = loader.report(challenge)
    with expect_errno(errno.EPERM):
        loader.grant(challenge, other_hash, report)
    _refused_in_log(loader, "REPORTDATA")
    assert loader.enclave.exec_grants == {}


def test_write_to_granted_page_then_execute_without_new_grant_refused() -> None:
    """After a grant ran, user space makes the page writable (the grant ends everywhere), the
    enclave patches the code, the page is made R-X again: the mapping is refused (EACCES) and
    the patched code never runs; only a new challenge and grant bring execution back."""
    _owner, platform, sig = grant_platform()
    loader = start_loader(platform, sig)
    loader.place()
    loader.attested_grant()
    loader.mprotect(DYNAMIC_OFFSET, PAGE_SIZE, RX)
    assert loader.run(data=b"1").endswith(b"1")
    loader.mprotect(DYNAMIC_OFFSET, PAGE_SIZE, RW)
    assert loader.enclave.exec_grants == {}
    loader.write(DYNAMIC_OFFSET + 4000, b"patched")
    with expect_errno(errno.EACCES):  # sgx_vma_mprotect → sgx_encl_may_map: no grant
        loader.mprotect(DYNAMIC_OFFSET, PAGE_SIZE, RX)
    assert _vma_prot(loader) == RW  # the refusal changed nothing
    with pytest.raises(DriverError, match="EFAULT"):
        loader.run()
    loader.attested_grant()
    loader.mprotect(DYNAMIC_OFFSET, PAGE_SIZE, RX)
    assert loader.run(data=b"2").endswith(b"2")


def test_granting_pages_of_another_enclave_refused() -> None:
    """User space takes instance A's grant material to instance B's fd: A's challenge is not
    outstanding for B (EINVAL); B's challenge reported by A carries A's CONFIGID, not B's
    (EPERM). B gets no grant."""
    _owner, platform, sig = grant_platform()
    a, b = start_loader(platform, sig), start_loader(platform, sig)
    a.place()
    b.place()
    a_challenge = a.challenge()
    a_report, code_hash = a.report(a_challenge)
    with expect_errno(errno.EINVAL):
        b.grant(a_challenge, code_hash, a_report)
    b_challenge = b.challenge()
    report, code_hash = a.report(b_challenge)
    with expect_errno(errno.EPERM):
        b.grant(b_challenge, code_hash, report)
    assert b.enclave.exec_grants == {} and a.enclave.exec_grants == {}
    _refused_in_log(b, "another instance")


def test_forged_verdict_from_a_fake_owner_service_grants_nothing() -> None:
    """User space replaces the owner-service port with one that says yes without asking the
    launch enclave: the driver finds no verdict in the processor's mailbox: EPERM."""
    _owner, platform, sig = grant_platform()
    loader = start_loader(platform, sig)
    loader.place()
    calls: list[GrantQuery] = []
    platform.driver.owner_service = calls.append  # "yes" (returns, raises nothing)
    with expect_errno(errno.EPERM):
        loader.attested_grant()
    assert len(calls) == 1
    assert loader.enclave.exec_grants == {}


def test_forged_verdict_posted_by_another_enclave_refused() -> None:
    """An enclave other than the counter's owner (allowed to run by the policy) posts the
    exact verdict the driver would look for: the processor refuses it, the fake port says
    yes, and the driver still finds no verdict: EPERM, no grant."""
    owner, platform, sig = grant_platform()
    image, forger_sig = author_enclave(VerdictForger)
    platform.install_policy(
        dynamic_policy(
            owner,
            version=2,
            allow=[
                loader_rule(sig),
                {"id": "forger", "mrenclave": forger_sig.enclavehash.hex()},
            ],
        )
    )
    platform = owner.platform()
    loader = start_loader(platform, sig)
    platform.cpu.register_program(forger_sig.enclavehash, VerdictForger)
    forger = platform.run(image, forger_sig).enclave
    assert forger is not None
    loader.place()
    challenge = loader.challenge()
    report, code_hash = loader.report(challenge)
    verdict = grant_verdict(
        loader.enclave.configid, challenge, DYNAMIC_OFFSET, PAGE_SIZE, code_hash
    )
    assert forger.ecall(0, verdict) == b"denied"
    platform.driver.owner_service = lambda query: None
    with expect_errno(errno.EPERM):
        loader.grant(challenge, code_hash, report)
    assert loader.enclave.exec_grants == {}


def test_direct_grant_call_with_forged_report_posts_no_verdict() -> None:
    """User space calls the launch enclave's GRANT itself with a made-up REPORT for a
    challenge the driver issued: the launch enclave refuses (and ADVANCE posts nothing), so
    the driver's grant still fails."""
    _owner, platform, sig = grant_platform()
    loader = start_loader(platform, sig)
    loader.place()
    challenge = loader.challenge()
    code_hash = bytes(32)
    fake = Report(mrenclave=sig.enclavehash, configid=loader.enclave.configid).to_bytes()
    reply = platform._le_call(
        GrantRequest(
            configid=loader.enclave.configid,
            mrenclave=sig.enclavehash,
            offset=DYNAMIC_OFFSET,
            length=PAGE_SIZE,
            challenge=challenge,
            code_hash=code_hash,
            report=fake,
            now=0,
        ),
        GrantReply,
    )
    assert reply.allowed == 0
    platform.driver.owner_service = lambda query: None
    with expect_errno(errno.EPERM):
        loader.grant(challenge, code_hash, fake)
    assert loader.enclave.exec_grants == {}


def test_emodpe_without_a_grant_cannot_fetch() -> None:
    """The enclave EMODPEs X onto its fetched page without asking for a grant: the EPCM has X,
    but the mapping is RW, so the fetch faults, and without a grant the driver refuses to map
    the page R-X (EACCES) — the page tables decide (spec §6.6)."""
    _owner, platform, sig = grant_platform()
    loader = start_loader(platform, sig)
    loader.place()  # EACCEPT, code, EMODPE +X
    with pytest.raises(DriverError, match="EFAULT"):
        loader.run()
    with expect_errno(errno.EACCES):  # no grant: the dynamic page is never mapped R-X
        loader.mprotect(DYNAMIC_OFFSET, PAGE_SIZE, RX)  # (sgx_encl_may_map's owner check)
    assert _vma_prot(loader) == RW and loader.enclave.exec_grants == {}
