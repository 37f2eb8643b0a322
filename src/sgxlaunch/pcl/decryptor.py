"""The measured decryptor every protected enclave runs first (docs/pcl.md).

:class:`PclDecryptor` is the :class:`~sgxlaunch.cpu.EnclaveProgram` whose code page
:func:`sgxlaunch.pcl.format.encrypt_image` adds to an encrypted image, so it is what EENTER
runs for that MRENCLAVE. Its ECALLs are :mod:`sgxlaunch.pcl.ecalls`'s: REQUEST (a REPORT for
the launch enclave binding a one-time challenge, a fresh ephemeral X25519 key and the image's
key id), UNLOCK (open the launch enclave's release box, check the key id, decrypt every
protected page and check every tag before writing any plaintext, then run the protected
program's first ECALL through :meth:`EnclaveContext.execute`), and CALL (later ECALLs of the
protected program).

The header it trusts is the last page of its own ELRANGE, which MRENCLAVE measured: the
untrusted host names nothing but the launch enclave's TARGETINFO, the challenge and the box.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from sgxlaunch.arch.structs import TargetInfo
from sgxlaunch.cpu.enclave import EnclaveContext, EnclaveProgram
from sgxlaunch.errors import MacInvalid, SgxlaunchError, UsageError
from sgxlaunch.pcl import ecalls
from sgxlaunch.pcl.crypto import (
    RELEASE_DOMAIN,
    TAG_SIZE,
    check_key_id,
    open_box,
    private_key,
    public_key,
    release_aad,
    release_reportdata,
)
from sgxlaunch.pcl.ecalls import Call, CallIn, ProgramOut, RequestIn, RequestOut, UnlockIn
from sgxlaunch.pcl.format import PAGE, PclHeader, page_aads, page_nonces


class PclDecryptor(EnclaveProgram):
    """REQUEST → UNLOCK → CALL…: get the code key from the launch enclave, decrypt the
    protected region in place, run the protected program (see the module)."""

    def __init__(self) -> None:
        self._pending: tuple[bytes, bytes] | None = None  # (challenge, ephemeral private key)
        self._entry: int | None = None  # the protected program's code page, once unlocked

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        try:
            if function == Call.REQUEST:
                return ecalls.encode_ok(self._request(ctx, RequestIn.decode(data)).encode())
            if function == Call.UNLOCK:
                return ecalls.encode_ok(self._unlock(ctx, UnlockIn.decode(data)).encode())
            if function == Call.CALL:
                request = CallIn.decode(data)
                if self._entry is None:
                    raise UsageError("the protected code is still encrypted: UNLOCK first")
                output = ctx.execute(self._entry, request.function, request.data)
                return ecalls.encode_ok(ProgramOut(output).encode())
            raise UsageError(f"unknown decryptor ECALL {function} (0 REQUEST, 1 UNLOCK, 2 CALL)")
        except SgxlaunchError as exc:
            return ecalls.encode_error(exc)

    @staticmethod
    def _header(ctx: EnclaveContext) -> PclHeader:
        page = ctx.read(ctx.base_address + ctx.size - PAGE, PAGE)
        return PclHeader.from_page(page, ctx.size)

    def _request(self, ctx: EnclaveContext, request: RequestIn) -> RequestOut:
        if self._entry is not None:
            raise UsageError("the protected code is already decrypted; use CALL")
        header = self._header(ctx)
        ephemeral = private_key(ctx.rdrand)
        ephemeral_public = public_key(ephemeral)
        reportdata = release_reportdata(request.challenge, ephemeral_public, header.key_id)
        report = ctx.ereport(TargetInfo.from_bytes_raw(request.targetinfo), reportdata)
        self._pending = (request.challenge, ephemeral)
        return RequestOut(report.to_bytes(), ephemeral_public, header.key_id)

    def _unlock(self, ctx: EnclaveContext, request: UnlockIn) -> ProgramOut:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        pending, self._pending = self._pending, None  # an ephemeral key opens one box
        if self._entry is not None:
            raise UsageError("the protected code is already decrypted; use CALL")
        if pending is None:
            raise UsageError("UNLOCK without a pending REQUEST (each REQUEST allows one UNLOCK)")
        challenge, ephemeral = pending
        header = self._header(ctx)
        code_key = open_box(
            ephemeral, request.box, domain=RELEASE_DOMAIN, aad=release_aad(challenge, header.key_id)
        )
        check_key_id(code_key, header.key_id)
        base = ctx.base_address
        count = header.page_count
        tags = ctx.read(base + header.tags_offset, count * TAG_SIZE)
        region = ctx.read(base + header.region_offset, count * PAGE)
        aead = AESGCM(code_key)
        del code_key
        # ciphertext ‖ tag of each page side by side (one vectorised copy), so that each
        # page is one decrypt_into without per-page copies
        sealed = np.empty((count, PAGE + TAG_SIZE), dtype=np.uint8)
        sealed[:, :PAGE] = np.frombuffer(region, dtype=np.uint8).reshape(count, PAGE)
        sealed[:, PAGE:] = np.frombuffer(tags, dtype=np.uint8).reshape(count, TAG_SIZE)
        plain = np.empty(count * PAGE, dtype=np.uint8)
        step = PAGE + TAG_SIZE
        whole = sealed.reshape(-1).data
        out = plain.data
        nonces = page_nonces(header.salt, count).tobytes()
        aads = page_aads(header.salt, header.region_offset, count).tobytes()
        arguments = (
            [nonces[12 * i : 12 * i + 12] for i in range(count)],
            [whole[step * i : step * i + step] for i in range(count)],
            [aads[40 * i : 40 * i + 40] for i in range(count)],
            [out[PAGE * i : PAGE * i + PAGE] for i in range(count)],
        )
        try:
            deque(map(aead.decrypt_into, *arguments), maxlen=0)  # no bytecode per page
        except InvalidTag:
            # find the first page that does not verify, to name it (nothing is written)
            bad = next(i for i in range(count) if not self._opens(aead, arguments, i))
            page = header.region_offset + PAGE * bad
            raise MacInvalid(
                f"protected page at enclave offset 0x{page:x} does not verify "
                "(altered ciphertext or tag); nothing was decrypted, nothing runs"
            ) from None
        offset = header.region_offset
        ctx.write(base + offset, plain.data)
        self._entry = base + header.entry_offset
        return ProgramOut(ctx.execute(self._entry, request.function, request.data))

    @staticmethod
    def _opens(aead: Any, arguments: tuple[list[Any], ...], i: int) -> bool:
        from cryptography.exceptions import InvalidTag

        try:
            aead.decrypt_into(*(column[i] for column in arguments))
        except InvalidTag:
            return False
        return True


__all__ = ["PclDecryptor"]
