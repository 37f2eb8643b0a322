"""The encrypted enclave format and the decryptor: MRENCLAVE measures ciphertext; only the
released key decrypts in place; a tampered page in a re-signed image runs nothing."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sgxlaunch.arch import Report, SgxStatus, TargetInfo
from sgxlaunch.cpu import Processor, load_enclave
from sgxlaunch.cpu.loader import image_from_sgxs
from sgxlaunch.errors import MalformedInput, UsageError, VerificationFailed
from sgxlaunch.formats.sgxs import SgxsImage, parse_sgxs, write_sgxs
from sgxlaunch.pcl import crypto, ecalls
from sgxlaunch.pcl.decryptor import PclDecryptor
from sgxlaunch.pcl.ecalls import Call, CallIn, ProgramOut, RequestIn, RequestOut, UnlockIn
from sgxlaunch.pcl.format import (
    RWX,
    PclHeader,
    encrypt_image,
    find_header,
    page_aad,
    page_nonce,
)
from tests.support.cpu import cpu, sign_image
from tests.support.keys import mrsigner
from tests.support.pcl import K, Secret, plain_image

ROLE = "app"


def encrypted(code_pages: int = 3) -> tuple[SgxsImage, PclHeader]:
    return encrypt_image(plain_image(code_pages), K, random=os.urandom)


def test_mrenclave_measures_ciphertext_and_header_names_the_region() -> None:
    plain = plain_image()
    image, header = encrypt_image(plain, K, random=os.urandom)
    stream = write_sgxs(image)
    code_page = plain.pages[1].data
    assert code_page[:200] not in stream  # the program's code page is not in the image
    assert find_header(parse_sgxs(stream)) == header
    assert header.region_offset == 0x1000 and header.page_count == 3
    assert header.entry_offset == 0x1000
    assert header.key_id == crypto.key_id(K)
    protected = [p for p in image.pages if 0x1000 <= p.offset < 0x4000]
    assert [p.secinfo_flags for p in protected] == [RWX] * 3
    assert all(p.fully_measured for p in image.pages)
    # each page decrypts under the documented nonce and AAD with the tag from the tag pages
    tags = b"".join(
        p.data for p in image.pages if header.tags_offset <= p.offset < image.size - 4096
    )
    for i, page in enumerate(protected):
        tag = tags[16 * i : 16 * i + 16]
        out = AESGCM(K).decrypt(
            page_nonce(header.salt, i), page.data + tag, page_aad(header.salt, page.offset)
        )
        assert out == plain.pages[1 + i].data
    # the decryptor's code page is the image's only plaintext program page
    from sgxlaunch.cpu.image import program_code_page

    assert [p.data for p in image.pages if p.data[:32] == code_page[:32]] == [
        program_code_page(PclDecryptor)
    ]


def test_fresh_salt_each_encryption() -> None:
    (a, ha), (b, hb) = encrypted(), encrypted()
    assert ha.salt != hb.salt
    assert image_from_sgxs(a).mrenclave() != image_from_sgxs(b).mrenclave()


def test_encrypt_refusals() -> None:
    plain = plain_image()
    with pytest.raises(UsageError, match="already encrypted"):
        encrypt_image(encrypt_image(plain, K, random=os.urandom)[0], K, random=os.urandom)
    no_code = SgxsImage(plain.ssaframesize, plain.size, (plain.pages[0], *plain.pages[4:]))
    with pytest.raises(UsageError, match="no executable"):
        encrypt_image(no_code, K, random=os.urandom)
    gap = SgxsImage(plain.ssaframesize, plain.size, (*plain.pages[:2], *plain.pages[3:]))
    with pytest.raises(UsageError, match="consecutive"):
        encrypt_image(gap, K, random=os.urandom)
    no_program = SgxsImage(
        plain.ssaframesize,
        plain.size,
        (plain.pages[0], replace(plain.pages[1], data=bytes(4096)), *plain.pages[2:]),
    )
    with pytest.raises(UsageError, match="no program code page"):
        encrypt_image(no_program, K, random=os.urandom)
    partial = SgxsImage(
        plain.ssaframesize,
        plain.size,
        (plain.pages[0], replace(plain.pages[1], measured=0x00FF), *plain.pages[2:]),
    )
    with pytest.raises(UsageError, match="not fully measured"):
        encrypt_image(partial, K, random=os.urandom)
    with pytest.raises(MalformedInput):
        encrypt_image(plain, K[:16], random=os.urandom)


def test_header_parser_strict() -> None:
    image, header = encrypted()
    page = header.to_page()
    assert PclHeader.from_page(page, image.size) == header
    for n in (0, 100, 4095):
        with pytest.raises(MalformedInput):
            PclHeader.from_page(page[:n], image.size)
    for offset, field, value in (
        (0, "magic", 1),
        (32, "version", 2),
        (36, "page_count", 0),
        (40, "region_offset", 0x10),
        (48, "entry_offset", 0x5000),
        (56, "tags_offset", 0x7FFF000),
        (4000, "reserved", 1),
    ):
        bad = bytearray(page)
        if field in ("version", "page_count"):
            bad[offset : offset + 4] = value.to_bytes(4, "little")
        elif field in ("magic", "reserved"):
            bad[offset] ^= value
        else:
            bad[offset : offset + 8] = value.to_bytes(8, "little")
        with pytest.raises(MalformedInput) as info:
            PclHeader.from_page(bytes(bad), image.size)
        assert info.value.field == field


# -- the decryptor inside the emulated enclave -----------------------------------------------


class Run:
    """An encrypted enclave loaded on a processor, and the release the launch enclave would
    make (the box built here; the launch enclave's checks are issue 20's other half)."""

    def __init__(self, image: SgxsImage, proc: Processor | None = None) -> None:
        self.proc = proc or cpu(epc_size=4 << 20)
        enclave_image = image_from_sgxs(image)
        sig = sign_image(enclave_image, ROLE)
        self.proc.register_program(enclave_image.mrenclave(), PclDecryptor)
        self.proc.register_code(Secret)
        self.proc.set_lepubkeyhash(mrsigner(ROLE))
        loaded = load_enclave(self.proc, enclave_image, sig)
        assert loaded.status == SgxStatus.SUCCESS, loaded.status
        self.enclave = loaded
        self.mrenclave = enclave_image.mrenclave()

    def call(self, call: Call, message: bytes) -> bytes:
        return ecalls.decode_reply(call, self.enclave.enter(int(call), message))

    def request(self, challenge: bytes = b"\x33" * 32) -> RequestOut:
        return RequestOut.decode(self.call(Call.REQUEST, RequestIn(bytes(512), challenge).encode()))

    def release_box(
        self, reply: RequestOut, key: bytes = K, challenge: bytes = b"\x33" * 32
    ) -> bytes:
        return crypto.seal_box(
            reply.ephemeral_public_key,
            key,
            domain=crypto.RELEASE_DOMAIN,
            aad=crypto.release_aad(challenge, reply.key_id),
            random=os.urandom,
        )

    def unlock(self, box: bytes, function: int = 5, data: bytes = b"in") -> bytes:
        body = self.call(Call.UNLOCK, UnlockIn(box, function, data).encode())
        return ProgramOut.decode(body).output


def test_request_binds_challenge_ephemeral_key_and_key_id() -> None:
    run = Run(encrypted()[0])
    reply = run.request()
    report = Report.from_bytes(reply.report)
    assert report.mrenclave == run.mrenclave
    assert report.reportdata == crypto.release_reportdata(
        b"\x33" * 32, reply.ephemeral_public_key, crypto.key_id(K)
    )
    assert reply.key_id == crypto.key_id(K)
    assert run.request().ephemeral_public_key != reply.ephemeral_public_key  # fresh each time


def test_released_key_decrypts_in_place_and_the_program_runs() -> None:
    run = Run(encrypted()[0])
    reply = run.request()
    assert run.unlock(run.release_box(reply)) == b"secret 5: in"
    out = run.call(Call.CALL, CallIn(9, b"again").encode())
    assert ProgramOut.decode(out).output == b"secret 9: again"


def test_tampered_ciphertext_page_in_a_resigned_image_runs_nothing() -> None:
    """The author's image with one ciphertext byte changed and signed again (its MRENCLAVE
    is what the signature covers): the decryptor refuses at that page's tag and the
    protected program never runs."""
    image, header = encrypted()
    pages = list(image.pages)
    at = next(i for i, p in enumerate(pages) if p.offset == header.region_offset + 0x1000)
    data = bytearray(pages[at].data)
    data[100] ^= 1
    pages[at] = replace(pages[at], data=bytes(data))
    run = Run(replace(image, pages=tuple(pages)))
    before = Secret.runs
    with pytest.raises(VerificationFailed, match="offset 0x2000 does not verify"):
        run.unlock(run.release_box(run.request()))
    assert Secret.runs == before
    with pytest.raises(UsageError, match="still encrypted"):
        run.call(Call.CALL, CallIn(0, b"").encode())
    # the refusal used the request up; a new request and a new box meet the same page
    with pytest.raises(VerificationFailed, match="offset 0x2000 does not verify"):
        run.unlock(run.release_box(run.request()))
    assert Secret.runs == before


def test_wrong_key_released_is_refused_by_key_id() -> None:
    run = Run(encrypted()[0])
    with pytest.raises(VerificationFailed, match="key id mismatch"):
        run.unlock(run.release_box(run.request(), key=b"\x01" * 32))


def test_box_for_another_request_refused_and_each_request_unlocks_once() -> None:
    run = Run(encrypted()[0])
    first = run.request()
    second = run.request()  # replaces the first: its ephemeral key is gone
    with pytest.raises(VerificationFailed):
        run.unlock(run.release_box(first))
    with pytest.raises(UsageError, match="without a pending REQUEST"):
        run.unlock(run.release_box(second))  # the failed UNLOCK used the request up
    third = run.request()
    with pytest.raises(VerificationFailed):  # a box for another challenge
        run.unlock(run.release_box(third, challenge=b"\x44" * 32))
    before = Secret.runs
    assert run.unlock(run.release_box(run.request())) == b"secret 5: in"
    assert Secret.runs == before + 1
    with pytest.raises(UsageError, match="already decrypted"):
        run.request()


def test_target_info_is_the_callers() -> None:
    run = Run(encrypted()[0])
    reply = RequestOut.decode(
        run.call(Call.REQUEST, RequestIn(TargetInfo().to_bytes(), b"\x00" * 32).encode())
    )
    assert len(reply.report) == 432
