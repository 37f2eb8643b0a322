"""Attested-code grants (issue 17, ``dynamic_memory: attested-code``): the driver's side.

An enclave whose owner limits say :attr:`~sgxlaunch.driver.owner.DynamicMemory.ATTESTED_CODE`
may execute code in dynamic pages only after the owner's launch enclave granted exactly those
pages. The protocol (``docs/driver.md`` "Attested-code grants"):

1. ``SGX_IOC_ENCLAVE_GRANT_CHALLENGE`` {offset, length}: the driver draws a one-time 32-byte
   challenge for that page range of that enclave and keeps it (:meth:`Grants.challenge`).
2. The enclave (its measured loader) hashes the code bytes it placed there and makes an EREPORT
   targeted at the launch enclave with REPORTDATA = :func:`grant_reportdata` (SHA-256 of a
   domain tag, the challenge, the range and the code hash; the upper 32 bytes zero).
3. ``SGX_IOC_ENCLAVE_GRANT_EXEC`` {offset, length, challenge, code hash, REPORT}: the driver
   consumes the challenge (one attempt per challenge, granted or not), zaps the range's PTEs in
   every address space that maps the enclave, and asks the owner's launch enclave through the
   registered owner-service port (:attr:`Grants.service`) with what *it* knows of the
   instance: the SECS.CONFIGID it wrote at ECREATE (KSS), the MRENCLAVE, the range, the
   challenge.
4. The launch enclave verifies the REPORT with its report key, the REPORTDATA, that the
   REPORT's CONFIGID is the one the driver named, and the policy on the REPORT's identity;
   records the event in the launch log; and, once the record is committed (its ADVANCE), posts
   :func:`grant_verdict` into the processor's owner-verdict mailbox
   (:meth:`sgxlaunch.cpu.EnclaveContext.owner_verdict_post`: an emulator extension only the
   enclave owning the machine's monotonic counter may write, as only it may set the counter
   slot's policy digest).
5. The driver takes that exact verdict from the mailbox (:meth:`Processor.owner_verdict_take`);
   what the port returned is never trusted. With it, ``enclave.exec_grants`` maps every page of
   the range to one :class:`~sgxlaunch.driver.owner.ExecGrant` and the range's PTEs are zapped
   again (none installed while the launch enclave judged survives); without it, EPERM and
   nothing changes.

W^X across address spaces: a grant ends (:func:`revoke`: all its pages, PTEs zapped in every
mm of ``enclave.mm_list``) when any of its pages is mapped or mprotected writable in any mm, when
a fault installs a writable PTE on it (a VMA that was writable before the grant), or when it is
trimmed, made a TCS or removed. Executing it again needs a new challenge and a new grant.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from sgxlaunch.arch.constants import PAGE_SIZE, AttributeFlag, PageType
from sgxlaunch.cpu import Processor
from sgxlaunch.driver.encl import Enclave
from sgxlaunch.driver.owner import DynamicMemory, ExecGrant
from sgxlaunch.driver.uapi import DriverError
from sgxlaunch.errors import SgxlaunchError, UsageError

GRANT_REPORTDATA_DOMAIN = b"sgxlaunch/attested-code-grant/reportdata/v1\x00"
"""Domain tag of an attested-code grant's REPORTDATA."""
GRANT_VERDICT_DOMAIN = b"sgxlaunch/attested-code-grant/verdict/v1\x00"
"""Domain tag of the verdict the launch enclave posts for the driver."""
MAX_OUTSTANDING_CHALLENGES = 1024
"""Challenges the driver keeps at once (then the oldest are forgotten)."""


def _range_bytes(offset: int, length: int) -> bytes:
    return offset.to_bytes(8, "little") + length.to_bytes(8, "little")


def grant_reportdata(challenge: bytes, offset: int, length: int, code_hash: bytes) -> bytes:
    """REPORTDATA of a grant request: SHA-256(:data:`GRANT_REPORTDATA_DOMAIN` ‖ challenge (32)
    ‖ offset (u64 LE) ‖ length (u64 LE) ‖ code hash (32)) ‖ 32 zero bytes.

    Raises:
        UsageError: the challenge or the code hash is not 32 bytes.
    """
    if len(challenge) != 32 or len(code_hash) != 32:
        raise UsageError("a grant's challenge and code hash are 32 bytes each")
    h = hashlib.sha256(GRANT_REPORTDATA_DOMAIN)
    h.update(challenge)
    h.update(_range_bytes(offset, length))
    h.update(code_hash)
    return h.digest() + bytes(32)


def grant_verdict(
    configid: bytes, challenge: bytes, offset: int, length: int, code_hash: bytes
) -> bytes:
    """The verdict the launch enclave posts for one grant: SHA-256(:data:`GRANT_VERDICT_DOMAIN`
    ‖ CONFIGID (64) ‖ challenge (32) ‖ offset ‖ length ‖ code hash (32)). It names the instance,
    the one-time challenge and exactly the range and code granted, so it grants nothing else."""
    h = hashlib.sha256(GRANT_VERDICT_DOMAIN)
    h.update(configid)
    h.update(challenge)
    h.update(_range_bytes(offset, length))
    h.update(code_hash)
    return h.digest()


@dataclass(frozen=True, slots=True)
class GrantQuery:
    """What the driver asks the owner's launch enclave (through the owner-service port).

    Attributes:
        pid: the process making the ioctl.
        mrenclave: the enclave's MRENCLAVE (as EINIT accepted it).
        configid: SECS.CONFIGID the driver wrote at ECREATE (the instance).
        offset, length: the page range (enclave offsets).
        challenge: the one-time challenge the driver issued for it.
        code_hash: SHA-256 of the code bytes, as user space passed it.
        report: the 432-byte REPORT, as user space passed it.
    """

    pid: int
    mrenclave: bytes
    configid: bytes
    offset: int
    length: int
    challenge: bytes
    code_hash: bytes
    report: bytes


OwnerService = Callable[[GrantQuery], None]
"""The owner-service port: runs the launch enclave's GRANT (and commits its log record). It
may raise :class:`~sgxlaunch.errors.SgxlaunchError` with the launch enclave's reasons; its
return is ignored — only the verdict in the processor's mailbox grants."""


def granted(enclave: Enclave, offset: int) -> bool:
    """Whether the page at enclave offset ``offset`` is covered by a live grant."""
    return offset in enclave.exec_grants


def revoke(enclave: Enclave, start: int, end: int) -> int:
    """Drop every grant with a page in enclave offsets ``[start, end)``: all of its pages leave
    ``enclave.exec_grants`` and their PTEs are zapped in every mm mapping the enclave. Returns
    how many grants ended."""
    grants = enclave.exec_grants
    if not grants:
        return 0
    ended: dict[tuple[int, int], ExecGrant] = {}
    first = start & ~(PAGE_SIZE - 1)
    if (end - first) // PAGE_SIZE <= len(grants):
        for offset in range(first, end, PAGE_SIZE):
            grant = grants.get(offset)
            if grant is not None:
                ended[(grant.start, grant.end)] = grant
    else:
        for offset, grant in grants.items():
            if start <= offset < end:
                ended[(grant.start, grant.end)] = grant
    for grant in ended.values():
        for offset in range(grant.start, grant.end, PAGE_SIZE):
            if grants.get(offset) is grant:
                del grants[offset]
        enclave.zap(enclave.base + grant.start, enclave.base + grant.end)
    return len(ended)


def revoke_linear(enclave: Enclave, start: int, end: int) -> int:
    """:func:`revoke` for the linear range ``[start, end)``."""
    if not enclave.exec_grants:
        return 0
    return revoke(enclave, max(start, enclave.base) - enclave.base, end - enclave.base)


class Grants:
    """The driver's grant state: outstanding challenges and the owner-service port.

    Args:
        cpu: the processor (its randomness source and owner-verdict mailbox).
        random: the kernel's ``get_random_bytes`` (the processor's injected source).
    """

    def __init__(self, cpu: Processor, random: Callable[[int], bytes]) -> None:
        self.cpu = cpu
        self.random = random
        self.service: OwnerService | None = None
        """The owner-service port (the Platform registers the launch enclave's GRANT)."""
        self._challenges: dict[tuple[int, int, int], bytes] = {}

    def check_ready(self, enclave: Enclave, owner_mode: bool) -> None:
        """The checks both grant ioctls make first.

        Raises:
            DriverError: EINVAL outside owner mode or for an enclave not initialized; EPERM
                when the enclave's owner limits are not attested-code, or it has no instance
                identity (SECS.ATTRIBUTES.KSS clear: no CONFIGID).
        """
        if not owner_mode:
            raise DriverError(errno.EINVAL, "attested-code grants need owner launch control")
        if not enclave.initialized:
            raise DriverError(errno.EINVAL, "attested-code grants need an initialized enclave")
        level = enclave.owner_limits.dynamic_memory
        if level != DynamicMemory.ATTESTED_CODE:
            raise DriverError(
                errno.EPERM,
                f"the owner's policy gives this enclave dynamic_memory {level.label}, "
                "not attested-code",
            )
        if not enclave.attributes & AttributeFlag.KSS or not any(enclave.configid):
            raise DriverError(
                errno.EPERM,
                "the enclave has no instance identity: its SECS.ATTRIBUTES.KSS is clear "
                "(its SIGSTRUCT must allow KSS to use attested-code)",
            )

    def challenge(self, enclave: Enclave, offset: int, length: int) -> bytes:
        """A fresh one-time challenge for ``[offset, offset + length)`` of ``enclave``."""
        value = bytes(self.random(32))
        key = (enclave.eid, offset, length)
        challenges = self._challenges
        challenges.pop(key, None)
        challenges[key] = value
        while len(challenges) > MAX_OUTSTANDING_CHALLENGES:
            del challenges[next(iter(challenges))]
        return value

    def forget(self, enclave: Enclave) -> None:
        """Drop the outstanding challenges of an enclave being released."""
        for key in [k for k in self._challenges if k[0] == enclave.eid]:
            del self._challenges[key]

    def grant(
        self,
        pid: int,
        enclave: Enclave,
        offset: int,
        length: int,
        challenge: bytes,
        code_hash: bytes,
        report: bytes,
    ) -> ExecGrant:
        """The GRANT_EXEC ioctl's work after its argument checks (see the module docstring).

        Raises:
            DriverError: EINVAL — no challenge outstanding for this range (never issued, or
                already used), or another one; a page of the range missing or not a regular
                page. EPERM — no owner service, the service refused, or no verdict of the
                owner's launch enclave for exactly this request.
        """
        expected = self._challenges.pop((enclave.eid, offset, length), None)
        if expected is None:
            raise DriverError(
                errno.EINVAL,
                f"no challenge outstanding for 0x{offset:x}+0x{length:x}: ask for one "
                "(GRANT_CHALLENGE); each is used once",
            )
        if not hmac.compare_digest(expected, challenge):
            raise DriverError(
                errno.EINVAL, "the challenge is not the one issued for this range (now used up)"
            )
        for page_offset in range(offset, offset + length, PAGE_SIZE):
            page = enclave.pages.get(page_offset)
            if page is None or page.page_type != PageType.REG:
                raise DriverError(
                    errno.EINVAL, f"no regular enclave page at offset 0x{page_offset:x}"
                )
        # Whatever was mapped there before the verdict faults again (a writable PTE left in any
        # mm would be installed anew through the fault path, which ends the grant).
        revoke(enclave, offset, offset + length)
        enclave.zap(enclave.base + offset, enclave.base + offset + length)
        service = self.service
        if service is None:
            raise DriverError(errno.EPERM, "no owner service is registered to judge the grant")
        query = GrantQuery(
            pid=pid,
            mrenclave=enclave.mrenclave,
            configid=enclave.configid,
            offset=offset,
            length=length,
            challenge=bytes(challenge),
            code_hash=bytes(code_hash),
            report=bytes(report),
        )
        try:
            service(query)
        except DriverError:
            raise
        except SgxlaunchError as exc:
            raise DriverError(
                errno.EPERM, f"the owner's launch enclave refused: {exc.message}", detail=exc.detail
            ) from None
        verdict = grant_verdict(enclave.configid, challenge, offset, length, code_hash)
        if not self.cpu.owner_verdict_take(verdict):
            raise DriverError(
                errno.EPERM, "no verdict of the owner's launch enclave grants this request"
            )
        grant = ExecGrant(offset, offset + length, bytes(code_hash), bytes(challenge))
        for page_offset in range(offset, offset + length, PAGE_SIZE):
            enclave.exec_grants[page_offset] = grant
        # Zap again now that the grant is in place: a PTE installed while the launch enclave
        # judged (a store through a writable VMA, when there was no grant yet to end) must not
        # outlive it — the next writable fault sees the grant and ends it (W^X).
        enclave.zap(enclave.base + offset, enclave.base + offset + length)
        return grant


__all__ = [
    "GRANT_REPORTDATA_DOMAIN",
    "GRANT_VERDICT_DOMAIN",
    "GrantQuery",
    "Grants",
    "OwnerService",
    "grant_reportdata",
    "grant_verdict",
    "granted",
    "revoke",
    "revoke_linear",
]
