"""Attested-code grants end to end (issue 17): the instance identity (KSS CONFIGID written by
the driver at ECREATE), the challenge and grant ioctls, the launch enclave's GRANT (REPORT,
REPORTDATA, CONFIGID, the rule's code hashes, the log record) and what a grant allows and how
it ends (W^X in every address space)."""

from __future__ import annotations

import errno
import hashlib

import pytest

from sgxlaunch._api import run
from sgxlaunch.arch.constants import PAGE_SIZE
from sgxlaunch.cpu import program_code_page
from sgxlaunch.driver import as_sgxs_image, uapi
from sgxlaunch.driver.grants import grant_reportdata
from sgxlaunch.driver.owner import DynamicMemory
from sgxlaunch.errors import UsageError
from sgxlaunch.example_loader import DYNAMIC_OFFSET, FetchedCode, loader_image
from sgxlaunch.launch.log import GRANT
from tests.support.cpu import PROD
from tests.support.driver import expect_errno
from tests.support.grants import (
    CODE,
    RW,
    RX,
    dynamic_policy,
    grant_platform,
    loader_rule,
    loader_sigstruct,
    start_loader,
)


def test_limits_reach_the_driver_and_without_kss_there_is_no_grant() -> None:
    """The rule's attested-code level is the enclave's owner limit; a loader whose SIGSTRUCT
    does not set KSS has no CONFIGID, so it cannot ask for a grant (EPERM)."""
    owner, platform, sig = grant_platform()
    loader = start_loader(platform, sig)
    assert loader.enclave.owner_limits.dynamic_memory == DynamicMemory.ATTESTED_CODE
    plain = loader_sigstruct(flags=PROD, isvprodid=8)
    platform.install_policy(
        dynamic_policy(owner, version=2, allow=[loader_rule(sig), loader_rule(plain, rule_id="p")])
    )
    no_kss = start_loader(owner.platform(), plain)
    assert no_kss.enclave.configid == bytes(64)
    with expect_errno(errno.EPERM):
        no_kss.challenge()


def test_grant_lets_the_loader_run_its_fetched_code_and_is_logged() -> None:
    """Challenge → the loader's REPORT → GRANT: exactly the range's pages are granted, the
    loader runs the code through an R-X mapping, and the launch log holds the grant with the
    instance, the range, the code hash and the verdict; the log verifies."""
    _owner, platform, sig = grant_platform()
    loader = start_loader(platform, sig)
    code_hash = loader.place()
    assert code_hash == hashlib.sha256(CODE).digest()
    assert loader.attested_grant() == code_hash
    grants = loader.enclave.exec_grants
    assert sorted(grants) == [DYNAMIC_OFFSET]
    assert grants[DYNAMIC_OFFSET].code_hash == code_hash
    loader.mprotect(DYNAMIC_OFFSET, PAGE_SIZE, RX)
    assert loader.run(data=b"x") == b"fetched code ran inside the loader: x"
    *_, record, mapped = platform.log_records()
    assert record["kind"] == GRANT
    # then the driver's record of the R-X mapping the grant allowed (forwarded by the Platform)
    assert (mapped["kind"], mapped["action"], mapped["prot"], mapped["outcome"]) == (
        "dynamic",
        "mprotect",
        "r-x",
        "allowed",
    )
    assert mapped["code_hash"] == code_hash.hex() and mapped["level"] == "attested-code"
    assert record["verdict"] == "granted"
    assert record["code_hash"] == code_hash.hex()
    assert record["configid"] == loader.enclave.configid.hex()
    assert record["mrenclave"] == sig.enclavehash.hex()
    assert (record["offset"], record["length"]) == (DYNAMIC_OFFSET, PAGE_SIZE)
    assert record["rule"] == "loader"
    assert platform.verify_log() == len(platform.log_records())


def test_code_hashes_list_allows_only_listed_code() -> None:
    """A rule listing code hashes grants listed code and refuses (EPERM, logged with the
    hash) other code."""
    listed = hashlib.sha256(CODE).digest().hex()
    _owner, platform, sig = grant_platform(code_hashes=[listed])
    loader = start_loader(platform, sig)
    loader.place()
    loader.attested_grant()
    other = program_code_page(FetchedCode)[:-1] + b"\x01"
    loader.place(DYNAMIC_OFFSET + PAGE_SIZE, other)
    with expect_errno(errno.EPERM):
        loader.attested_grant(DYNAMIC_OFFSET + PAGE_SIZE)
    assert DYNAMIC_OFFSET + PAGE_SIZE not in loader.enclave.exec_grants
    record = platform.log_records()[-1]
    assert record["verdict"] == "refused"
    assert record["code_hash"] == hashlib.sha256(other).hexdigest()
    assert record["reasons"][0]["field"] == "code_hashes"


def test_a_challenge_is_used_once() -> None:
    """A grant consumes its challenge: the same request again is EINVAL (none outstanding)
    and grants nothing new."""
    _owner, platform, sig = grant_platform()
    loader = start_loader(platform, sig)
    loader.place()
    challenge = loader.challenge()
    report, code_hash = loader.report(challenge)
    loader.grant(challenge, code_hash, report)
    before = len(platform.log_records())
    with expect_errno(errno.EINVAL):
        loader.grant(challenge, code_hash, report)
    assert len(platform.log_records()) == before


def test_grant_ioctls_need_owner_mode_and_check_the_range() -> None:
    """Outside the range, unaligned or empty → EINVAL (as the SGX2 ioctls); a range with a
    hole → EINVAL at GRANT_EXEC (only pages the enclave has are granted)."""
    _owner, platform, sig = grant_platform()
    loader = start_loader(platform, sig)
    for offset, length in ((DYNAMIC_OFFSET + 1, PAGE_SIZE), (DYNAMIC_OFFSET, 0), (0, 1 << 30)):
        with expect_errno(errno.EINVAL):
            loader.challenge(offset, length)
    challenge = loader.challenge(DYNAMIC_OFFSET, PAGE_SIZE)
    before = len(platform.log_records())
    with expect_errno(errno.EINVAL):  # nothing was placed there: a hole (checked before the LE)
        loader.grant(challenge, bytes(32), bytes(432))
    assert len(platform.log_records()) == before


def test_mprotect_write_in_another_mm_ends_the_grant_everywhere() -> None:
    """W^X across address spaces: a second process holding the enclave fd (SCM_RIGHTS) maps
    the granted page read-only; making it writable there ends the grant and zaps its PTEs in
    both address spaces, so the loader's next fetch faults again."""
    _owner, platform, sig = grant_platform()
    loader = start_loader(platform, sig)
    loader.place()
    loader.attested_grant()
    loader.mprotect(DYNAMIC_OFFSET, PAGE_SIZE, RX)
    loader.run()
    page = loader.loaded.baseaddr + DYNAMIC_OFFSET
    assert page in loader.process.ptes
    other = platform.new_process()
    fd = loader.process.send_fd(loader.loaded.fd, other)
    other.mmap(page, PAGE_SIZE, uapi.PROT_READ, uapi.MAP_SHARED | uapi.MAP_FIXED, fd)
    other.touch(page)
    assert page in other.ptes
    other.mprotect(page, PAGE_SIZE, RW)
    assert loader.enclave.exec_grants == {}
    assert page not in loader.process.ptes
    assert page not in other.ptes


def test_writable_pte_from_an_older_mapping_ends_the_grant() -> None:
    """A writable mapping that existed before the grant: the grant zapped its PTEs, and the
    first access through it installs a writable PTE, which ends the grant."""
    _owner, platform, sig = grant_platform()
    loader = start_loader(platform, sig)
    loader.place()  # mapped RW in the loader's process
    loader.attested_grant()
    assert DYNAMIC_OFFSET in loader.enclave.exec_grants
    loader.write(DYNAMIC_OFFSET + 64, b"patched")  # through the old RW mapping
    assert loader.enclave.exec_grants == {}


def test_trim_and_remove_end_the_grant() -> None:
    """MODIFY_TYPES to TRIM on a granted page ends its grant (PTEs zapped) before EMODT;
    REMOVE_PAGES of a granted page would too (it must be trimmed first)."""
    _owner, platform, sig = grant_platform()
    loader = start_loader(platform, sig)
    loader.place()
    loader.attested_grant()
    out = loader.ioctl(
        uapi.SGX_IOC_ENCLAVE_MODIFY_TYPES,
        uapi.MODIFY_TYPES_ARG.pack(DYNAMIC_OFFSET, PAGE_SIZE, uapi.SGX_PAGE_TYPE_TRIM, 0, 0),
    )
    assert uapi.MODIFY_TYPES_ARG.unpack(out)[4] == PAGE_SIZE
    assert loader.enclave.exec_grants == {}


def test_grant_reportdata_is_domain_separated() -> None:
    """REPORTDATA binds challenge, offset, length and code hash (any change changes it) and
    leaves the upper 32 bytes zero."""
    base = grant_reportdata(bytes(32), 0x4000, 0x1000, bytes(32))
    assert base[32:] == bytes(32)
    assert grant_reportdata(b"\x01" * 32, 0x4000, 0x1000, bytes(32)) != base
    assert grant_reportdata(bytes(32), 0x5000, 0x1000, bytes(32)) != base
    assert grant_reportdata(bytes(32), 0x4000, 0x2000, bytes(32)) != base
    assert grant_reportdata(bytes(32), 0x4000, 0x1000, b"\x01" * 32) != base
    with pytest.raises(UsageError):
        grant_reportdata(bytes(31), 0, 0, bytes(32))


def test_run_of_the_example_loader_fetches_gets_a_grant_and_runs() -> None:
    """``sgxlaunch run`` of the shipped loader (``_api.run``): under attested-code the fetched
    code runs after a logged grant; the grant record carries its hash."""
    _owner, platform, sig = grant_platform()
    launch = run(platform, as_sgxs_image(loader_image()), sig, ecall_input=b"cli")
    assert launch.ecall_output == b"fetched code ran inside the loader: cli"
    *_, record, mapped = platform.log_records()  # the grant, then the R-X mapping it allowed
    assert record["kind"] == GRANT and record["verdict"] == "granted"
    assert (mapped["kind"], mapped["outcome"], mapped["code_hash"]) == (
        "dynamic",
        "allowed",
        record["code_hash"],
    )
    assert record["code_hash"] == hashlib.sha256(CODE).hexdigest()
