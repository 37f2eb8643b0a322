"""Protected-code test support: a launch-enclave quote made by a test PCS (dcap-qvl verifies
it for real), the owner root it is for, and the key-agreement key it vouches for."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from cryptography.hazmat.primitives.asymmetric import ec

from sgxlaunch.arch.structs import Tcs
from sgxlaunch.attest import VerifiedQuote
from sgxlaunch.attest.pcs import EmulatedPcs
from sgxlaunch.cpu import EnclaveContext, EnclaveProgram, program_image
from sgxlaunch.formats.sgxs import SgxsImage, parse_sgxs
from sgxlaunch.launch.enclave import LE_ISVPRODID
from sgxlaunch.pcl import crypto
from sgxlaunch.pcl.wrap import expected_le_mrenclave
from tests.support.clock import NOW
from tests.support.pcs import certify, make_quote, new_pcs, report_body, verify
from tests.support.policy import ed25519_signer, root_envelope

PAGE = 4096
LE_FLAGS = 0x25  # INIT | MODE64BIT | EINITTOKEN_KEY (not DEBUG)
LE_MRSIGNER = b"\x4c" * 32


@functools.cache
def pcs_and_pck() -> tuple[EmulatedPcs, ec.EllipticCurvePrivateKey]:
    pcs = new_pcs()
    key, _der = certify(pcs)
    return pcs, key


@functools.cache
def owner_root() -> bytes:
    key = ed25519_signer()
    return root_envelope(keys=[key], signers=[key], threshold=1)


@dataclass(frozen=True)
class LeQuote:
    quote: bytes
    public_key: bytes
    private_key: bytes
    root: bytes

    def verified(self) -> VerifiedQuote:
        pcs, _ = pcs_and_pck()
        return verify(pcs, self.quote)

    def write(self, tmp: Path) -> dict[str, Path]:
        """The files ``pcl wrap`` reads (quote, public key, collateral, PCS root, owner root)."""
        pcs, _ = pcs_and_pck()
        files = {
            "quote": (tmp / "le.quote", self.quote),
            "public": (tmp / "le.pub", self.public_key),
            "collateral": (tmp / "collateral.json", pcs.collateral(NOW)),
            "root": (tmp / "pcs-root.der", pcs.root_der()),
            "owner": (tmp / "owner-root.json", self.root),
        }
        for path, data in files.values():
            path.write_bytes(data)
        return {name: path for name, (path, _data) in files.items()}


def le_quote(
    *,
    flags: int = LE_FLAGS,
    mrenclave: bytes | None = None,
    mrsigner: bytes = LE_MRSIGNER,
    isvprodid: int = LE_ISVPRODID,
    reportdata: bytes | None = None,
    root: bytes | None = None,
) -> LeQuote:
    """A verified-by-dcap-qvl quote of the owner's launch enclave (or of something that
    differs in one field) vouching for a fresh X25519 key."""
    pcs, pck = pcs_and_pck()
    owner = owner_root() if root is None else root
    private = crypto.private_key(os.urandom)
    public = crypto.public_key(private)
    cpusvn = pcs.machine.load().cpusvn
    body = report_body(
        cpusvn=cpusvn,
        flags=flags,
        mrenclave=expected_le_mrenclave(owner) if mrenclave is None else mrenclave,
        mrsigner=mrsigner,
        isvprodid=isvprodid,
        isvsvn=1,
        reportdata=crypto.le_key_reportdata(public) if reportdata is None else reportdata,
    )
    quote = make_quote(pcs, pck, cpusvn=cpusvn, isv_body=body)
    return LeQuote(quote, public, private, owner)


# -- protected programs and images -------------------------------------------------------------

K = bytes.fromhex("5a" * 32)
"""The code key of the format and decryptor tests."""


class Secret(EnclaveProgram):
    """A protected program: its answer (and its run count) proves it ran."""

    runs: ClassVar[int] = 0

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        Secret.runs += 1
        return b"secret %d: " % function + data


def code_region_image(
    program: type[EnclaveProgram],
    code_pages: int,
    filler: Callable[[int], bytes] = lambda k: bytes([k % 256]) * PAGE,
) -> SgxsImage:
    """``program``'s image (``program_image``) with ``code_pages - 1`` more R-X pages after
    its code page (contents ``filler(k)``), the SSA and data pages moved up behind them."""
    base = parse_sgxs(program_image(program).sgxs())
    code = base.pages[1]
    extra = tuple(
        replace(code, offset=code.offset + PAGE * k, data=filler(k)) for k in range(1, code_pages)
    )
    shift = PAGE * (code_pages - 1)
    rest = tuple(replace(p, offset=p.offset + shift) for p in base.pages[2:])
    tcs = replace(
        base.pages[0], data=Tcs(ossa=0x2000 + shift, nssa=1, oentry=code.offset).to_bytes()
    )
    size = 8192
    while size < rest[-1].offset + PAGE:
        size *= 2
    return SgxsImage(base.ssaframesize, size, (tcs, code, *extra, *rest))


def plain_image(code_pages: int = 3) -> SgxsImage:
    """:class:`Secret`'s image with a three-page code region."""
    return code_region_image(Secret, code_pages)
