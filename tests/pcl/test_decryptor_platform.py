"""The decryptor on a whole emulated platform (driver, page tables, permissive mode): the
protected program runs from the RWX pages it was decrypted into, fetched through the MMU."""

from __future__ import annotations

import os

from sgxlaunch.arch import Attributes, Sigstruct
from sgxlaunch.cpu.loader import image_from_sgxs
from sgxlaunch.cpu.machine import MemoryMachine
from sgxlaunch.launch.platform import Platform, PlatformConfig
from sgxlaunch.pcl import crypto, ecalls
from sgxlaunch.pcl.decryptor import PclDecryptor
from sgxlaunch.pcl.ecalls import Call, ProgramOut, RequestIn, RequestOut, UnlockIn
from sgxlaunch.pcl.format import encrypt_image
from sgxlaunch.policy import MemoryStore
from sgxlaunch.sigstruct import sign
from tests.support.clock import Clock
from tests.support.keys import signer
from tests.support.pcl import K, Secret, plain_image


def test_protected_program_runs_through_the_driver_after_unlock() -> None:
    machine = MemoryMachine(PlatformConfig(epc_size=4 << 20).machine_state(b"pcl-platform-seed"))
    platform = Platform.open(MemoryStore(), machine, clock=Clock())
    image, header = encrypt_image(plain_image(), K, random=os.urandom)
    enclave_image = image_from_sgxs(image)
    sig = sign(
        Sigstruct(
            attributes=Attributes(flags=0x4, xfrm=0x3),
            attributemask=Attributes(flags=2**64 - 1, xfrm=2**64 - 1),
            miscmask=2**32 - 1,
            enclavehash=enclave_image.mrenclave(),
        ),
        signer("app"),
    )
    platform.cpu.register_program(enclave_image.mrenclave(), PclDecryptor)
    platform.cpu.register_code(Secret)
    enclave = platform.run(image, sig).enclave
    assert enclave is not None
    challenge = b"\x21" * 32
    raw = enclave.ecall(int(Call.REQUEST), RequestIn(bytes(512), challenge).encode())
    reply = RequestOut.decode(ecalls.decode_reply(Call.REQUEST, raw))
    box = crypto.seal_box(
        reply.ephemeral_public_key,
        K,
        domain=crypto.RELEASE_DOMAIN,
        aad=crypto.release_aad(challenge, header.key_id),
        random=os.urandom,
    )
    raw = enclave.ecall(int(Call.UNLOCK), UnlockIn(box, 1, b"via driver").encode())
    assert (
        ProgramOut.decode(ecalls.decode_reply(Call.UNLOCK, raw)).output == b"secret 1: via driver"
    )
