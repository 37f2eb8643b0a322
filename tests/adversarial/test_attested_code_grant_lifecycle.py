"""Attacks on the life of an attested-code grant (issue 17, ``docs/driver.md``
"Attested-code grants"): what user space does between asking for a grant and running the
code, and what it tries once the grant is there. The claims under attack: the driver grants
only regular pages of the instance, the grant ends when a page becomes writable anywhere (W^X
in every address space), and a granted page is never mapped writable and executable.

Errnos are the driver's (``ioctl.py``: GRANT_EXEC after ``sgx_validate_offset_length``; the
mapping checks in ``sgx_encl_may_map``, ``encl.py``); each refusal is checked for its effect —
no grant, no new log record, the mapping and PTEs unchanged.
"""

from __future__ import annotations

import errno

import pytest

from sgxlaunch.arch.constants import PAGE_SIZE
from sgxlaunch.cpu import EnclaveContext, EnclaveProgram, program_code_page
from sgxlaunch.driver import DriverError, uapi
from sgxlaunch.driver.grants import GrantQuery
from sgxlaunch.example_loader import DYNAMIC_OFFSET
from sgxlaunch.launch.ecalls import AdvanceReply, AdvanceRequest, GrantReply, GrantRequest
from sgxlaunch.launch.log import GRANT, LogTampered
from sgxlaunch.launch.platform import le_sealed_key
from tests.support.cpu import DEBUG
from tests.support.driver import expect_errno
from tests.support.grants import (
    KSS,
    RX,
    Loader,
    dynamic_policy,
    grant_platform,
    loader_rule,
    loader_sigstruct,
    start_loader,
)
from tests.support.platform import Owner

RWX = RX | uapi.PROT_WRITE


def _vma_prot(loader: Loader, offset: int) -> int:
    found = loader.process.find_vma(loader.loaded.baseaddr + offset)
    assert found is not None
    prot: int = found[0]
    return prot


def _granted_and_running() -> Loader:
    _owner, platform, sig = grant_platform()
    loader = start_loader(platform, sig)
    loader.place()
    loader.attested_grant()
    loader.mprotect(DYNAMIC_OFFSET, PAGE_SIZE, RX)
    assert loader.run(data=b"0").endswith(b"0")
    return loader


def test_page_made_a_tcs_between_challenge_and_grant_is_not_granted() -> None:
    """User space asks for a challenge over the fetched page, has the loader report it, then
    turns the page into a TCS (MODIFY_TYPES REG→TCS) before GRANT_EXEC: the driver checks the
    page type after consuming the challenge and refuses (EINVAL: not a regular page) before it
    asks the launch enclave — no grant, no grant record. Control: on a regular page the same
    REPORT would have been judged (the other tests of the protocol)."""
    _owner, platform, sig = grant_platform()
    loader = start_loader(platform, sig)
    loader.place()
    challenge = loader.challenge()
    report, code_hash = loader.report(challenge)
    out = loader.ioctl(
        uapi.SGX_IOC_ENCLAVE_MODIFY_TYPES,
        uapi.MODIFY_TYPES_ARG.pack(DYNAMIC_OFFSET, PAGE_SIZE, uapi.SGX_PAGE_TYPE_TCS, 0, 0),
    )
    assert uapi.MODIFY_TYPES_ARG.unpack(out)[4] == PAGE_SIZE  # count: the page is a TCS now
    before = len(platform.log_records())
    with expect_errno(errno.EINVAL):
        loader.grant(challenge, code_hash, report)
    assert loader.enclave.exec_grants == {}
    assert len(platform.log_records()) == before
    with expect_errno(errno.EINVAL):  # the challenge was used up by the refused attempt
        loader.grant(challenge, code_hash, report)


def test_granted_page_mapped_writable_and_executable_is_refused_and_nothing_changes() -> None:
    """W+X over a granted page: mprotect RWX (``sgx_vma_mprotect`` → ``sgx_encl_may_map``) and
    mmap RWX with MAP_FIXED are EACCES; the VMA keeps R-X, the grant stays and the code still
    runs (a refusal changes nothing). Control: the same page in a ``code`` enclave may be RWX."""
    loader = _granted_and_running()
    grant = loader.enclave.exec_grants[DYNAMIC_OFFSET]
    with expect_errno(errno.EACCES):
        loader.mprotect(DYNAMIC_OFFSET, PAGE_SIZE, RWX)
    with expect_errno(errno.EACCES):
        loader.mmap(DYNAMIC_OFFSET, PAGE_SIZE, RWX)
    assert _vma_prot(loader, DYNAMIC_OFFSET) == RX
    assert loader.enclave.exec_grants == {DYNAMIC_OFFSET: grant}
    assert loader.run(data=b"1").endswith(b"1")
    _owner, platform, sig = grant_platform(level="code", code_hashes=None)
    control = start_loader(platform, sig)
    control.place()
    control.mprotect(DYNAMIC_OFFSET, PAGE_SIZE, RWX)
    assert _vma_prot(control, DYNAMIC_OFFSET) == RWX


def test_trimmed_granted_page_cannot_be_mapped_or_run_again() -> None:
    """MODIFY_TYPES TRIM on a granted, running page: the grant ends and the page's PTEs go
    (the loader's next jump there faults: EFAULT), and mapping it R-X again is EACCES (no
    grant: ``sgx_encl_may_map``'s owner check)."""
    loader = _granted_and_running()
    page = loader.loaded.baseaddr + DYNAMIC_OFFSET
    assert page in loader.process.ptes
    loader.ioctl(
        uapi.SGX_IOC_ENCLAVE_MODIFY_TYPES,
        uapi.MODIFY_TYPES_ARG.pack(DYNAMIC_OFFSET, PAGE_SIZE, uapi.SGX_PAGE_TYPE_TRIM, 0, 0),
    )
    assert loader.enclave.exec_grants == {}
    assert page not in loader.process.ptes
    with pytest.raises(DriverError, match="EFAULT"):
        loader.run()
    loader.mprotect(DYNAMIC_OFFSET, PAGE_SIZE, uapi.PROT_READ)
    with expect_errno(errno.EACCES):
        loader.mprotect(DYNAMIC_OFFSET, PAGE_SIZE, RX)


def test_writable_pte_made_while_the_grant_is_judged_does_not_outlive_the_grant() -> None:
    """The race between the driver's zap (step 4) and the verdict (step 7): while the launch
    enclave judges the grant, user space (here the owner-service port it controls, standing
    for a second thread) writes to the page through its RW mapping, which installs a writable
    PTE — there is no grant yet to end. Once the grant lands, no address space may still hold
    a writable PTE for it: otherwise a second process maps it R-X and runs what the first
    keeps writing. Control: the write during judgement did install a writable PTE."""
    _owner, platform, sig = grant_platform()
    loader = start_loader(platform, sig)
    loader.place()  # mapped RW in the loader's process
    page = loader.loaded.baseaddr + DYNAMIC_OFFSET
    service = platform.driver.owner_service
    assert service is not None
    seen: list[int] = []

    def racing_port(query: GrantQuery) -> None:
        loader.process.touch(page, write=True)  # the other thread's store
        seen.append(loader.process.ptes[page])
        service(query)

    platform.driver.owner_service = racing_port
    loader.attested_grant()
    assert seen and seen[0] & uapi.PROT_WRITE  # control: a writable PTE existed mid-grant
    assert DYNAMIC_OFFSET in loader.enclave.exec_grants
    assert not loader.process.ptes.get(page, 0) & uapi.PROT_WRITE
    # The next store through the RW mapping faults, installs a writable PTE and ends the grant.
    loader.process.touch(page, write=True)
    assert loader.enclave.exec_grants == {}
    record = platform.log_records()[-1]
    assert record["kind"] == GRANT and record["verdict"] == "granted"


def test_host_dropping_the_grant_record_gets_the_grant_but_the_log_no_longer_verifies() -> None:
    """The owner-service port is user space: it runs GRANT, stores the launch enclave's new
    state but not the grant record, and calls ADVANCE. The verdict is posted (the record is
    committed in the counter-backed head) and the driver grants; the host cannot hide it: the
    sealed head counts the record, so the log no longer verifies. Control: it verified
    before."""
    owner, platform, sig = grant_platform()
    loader = start_loader(platform, sig)
    loader.place()
    count = platform.verify_log()
    le = platform.le_sigstruct
    assert le is not None

    def dropping_port(query: GrantQuery) -> None:
        reply = platform._le_call(
            GrantRequest(
                configid=query.configid,
                mrenclave=query.mrenclave,
                offset=query.offset,
                length=query.length,
                challenge=query.challenge,
                code_hash=query.code_hash,
                report=query.report,
                now=0,
            ),
            GrantReply,
        )
        assert reply.allowed == 1
        platform.store.commit({le_sealed_key(le.mrsigner): reply.sealed})
        platform._le_call(AdvanceRequest(), AdvanceReply)

    platform.driver.owner_service = dropping_port
    loader.attested_grant()
    assert DYNAMIC_OFFSET in loader.enclave.exec_grants
    reopened = owner.platform()
    assert len(reopened.log_records()) >= count
    assert not [r for r in reopened.log_records()[count:] if r.get("kind") == GRANT]
    with pytest.raises(LogTampered):
        reopened.verify_log()


class _Injected(EnclaveProgram):
    """Code the host writes into a granted page through the debugger."""

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        return b"injected code ran: " + data


def _debug_loader() -> Loader:
    """A DEBUG loader under an attested-code rule that permits debug, its fetched code granted,
    mapped R-X and running."""
    owner = Owner()
    owner.set_up_launch_enclave()
    platform = owner.platform()
    sig = loader_sigstruct(flags=DEBUG | KSS)
    platform.install_policy(dynamic_policy(owner, version=1, allow=[loader_rule(sig, debug=True)]))
    platform.set_mode(owner.mode("owner", version=1))
    platform = owner.platform()
    platform.cpu.register_code(_Injected)
    loader = start_loader(platform, sig)
    assert loader.enclave.debug
    loader.place()
    loader.attested_grant()
    loader.mprotect(DYNAMIC_OFFSET, PAGE_SIZE, RX)
    assert loader.run(data=b"0") == b"fetched code ran inside the loader: 0"
    return loader


def test_debugger_write_into_a_granted_page_ends_the_grant() -> None:
    """The host of a DEBUG loader (the owner's rule allows debug) writes other code into the
    granted page through ptrace (``sgx_vma_access`` → EDBGWR) instead of a writable mapping:
    the write ends the grant and zaps the page's PTEs, so the loader's jump there faults
    (EFAULT) and the injected code never runs without the launch enclave judging it. Control:
    the write did land (EDBGRD reads it back), and a new challenge and grant over the new
    contents let it run — so the refusal is the grant's end, not a broken page."""
    loader = _debug_loader()
    page = loader.loaded.baseaddr + DYNAMIC_OFFSET
    injected = program_code_page(_Injected)
    loader.process.debug_write(page, injected)
    assert loader.process.debug_read(page, len(injected)) == injected
    assert loader.enclave.exec_grants == {}
    assert page not in loader.process.ptes
    with pytest.raises(DriverError, match="EFAULT"):
        loader.run(data=b"1")
    loader.attested_grant()
    assert loader.run(data=b"2") == b"injected code ran: 2"


def test_debugger_write_outside_granted_pages_keeps_the_grant() -> None:
    """A debugger write elsewhere in the enclave (its data page) leaves the grant alone: the
    fetched code keeps running without a new grant."""
    loader = _debug_loader()
    grant = loader.enclave.exec_grants[DYNAMIC_OFFSET]
    data_page = next(
        offset
        for offset, page in sorted(loader.enclave.pages.items())
        if offset != DYNAMIC_OFFSET and offset not in loader.enclave.exec_grants
    )
    loader.process.debug_write(loader.loaded.baseaddr + data_page + 8, b"12345678")
    assert loader.enclave.exec_grants == {DYNAMIC_OFFSET: grant}
    assert loader.run(data=b"3") == b"fetched code ran inside the loader: 3"
