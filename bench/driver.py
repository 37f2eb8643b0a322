"""Benchmark of the emulated driver, each figure next to a limit measured in the same run.

(a) Loading a 64 MiB enclave through the ioctls (open, ENCLAVE_CREATE, ENCLAVE_ADD_PAGES with
    SGX_PAGE_MEASURE, ENCLAVE_INIT, mmap) against the processor alone doing the same leaves
    (``sgxlaunch.cpu.load_enclave``: ECREATE / EADD / EEXTEND / EINIT). Both start from the image
    in memory; both copy it into ordinary memory as part of the timed load. Target ratio ≥ 0.8.
(b) Random access with the enclave 4x the EPC: ECALLs that each read 8 bytes of a random page
    through the enclave's own memory accesses; evicted pages fault and are reloaded by the
    reclaimer (EBLOCK / ETRACK / EWB / ELDU). Prints accesses/s and the reload rate.

Run: ``.venv/bin/python bench/driver.py [--mib 64] [--repeat 3] [--epc-mib 4]``
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import struct
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from sgxlaunch.arch import Attributes, SgxStatus, Sigstruct
from sgxlaunch.arch.constants import AttributeFlag, PageType, SecinfoFlag, secinfo_flags
from sgxlaunch.cpu import (
    CpuConfig,
    EnclaveContext,
    EnclaveImage,
    EnclaveProgram,
    ImagePage,
    Processor,
    load_enclave,
    program_image,
)
from sgxlaunch.driver import SgxDriver, as_sgxs_image, load
from sgxlaunch.formats.sgxs import SgxsImage
from sgxlaunch.sigstruct import RsaKeySigner, sign

PAGE = 4096
TARGET = 0.8
KEY = Path(__file__).resolve().parent.parent.parent / "shared/vectors/kselftest/sign_key.pem"


def signer() -> RsaKeySigner:
    key = load_pem_private_key(KEY.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return RsaKeySigner(key)


def sign_image(image: EnclaveImage, flags: int) -> Sigstruct:
    body = Sigstruct(
        attributes=Attributes(flags=flags, xfrm=0x3),
        attributemask=Attributes(flags=2**64 - 1, xfrm=2**64 - 1),
        miscmask=2**32 - 1,
        enclavehash=image.mrenclave(),
    )
    return sign(body, signer())


def data_image(mib: int, *, program: type[EnclaveProgram] | None = None) -> EnclaveImage:
    """``mib`` MiB of random, fully measured RW pages (after a program's pages, if given)."""
    rng = random.Random(20261126)
    pages: list[ImagePage] = []
    if program is not None:
        pages = list(program_image(program, data_pages=0).pages)
    start = pages[-1].offset + PAGE if pages else 0
    rw = secinfo_flags(PageType.REG, SecinfoFlag.R | SecinfoFlag.W)
    n = mib * 256
    blob = rng.randbytes(n * PAGE)
    for i in range(n):
        pages.append(ImagePage(start + i * PAGE, rw, blob[i * PAGE : (i + 1) * PAGE]))
    size = 1 << (start + n * PAGE - 1).bit_length()
    return EnclaveImage(size=size, ssaframesize=1, pages=tuple(pages))


class Reader(EnclaveProgram):
    """function 1: read (u64 offset, u64 length) of its own memory."""

    def ecall(self, ctx: EnclaveContext, function: int, data: bytes) -> bytes:
        offset, length = struct.unpack_from("<QQ", data)
        return ctx.read(ctx.base_address + offset, length)


def bench_load(mib: int, repeat: int) -> float:
    image = data_image(mib)
    sig = sign_image(image, int(AttributeFlag.MODE64BIT))
    sgxs: SgxsImage = as_sgxs_image(image)
    epc = (mib + 8) << 20
    t_cpu = t_drv = float("inf")
    for _ in range(repeat):
        gc.collect()  # free the previous round's processors before timing
        cpu = Processor(CpuConfig(epc_size=epc), b"bench-seed-0123456789")
        t0 = time.perf_counter()
        cpu.set_lepubkeyhash(sig.mrsigner)  # what the driver does before EINIT, too
        loaded = load_enclave(cpu, image, sig)
        t_cpu = min(t_cpu, time.perf_counter() - t0)
        assert loaded.status == SgxStatus.SUCCESS
        del cpu, loaded
        gc.collect()
        cpu = Processor(CpuConfig(epc_size=epc), b"bench-seed-0123456789")
        driver = SgxDriver(cpu)
        process = driver.new_process()
        t0 = time.perf_counter()
        enclave = load(process, sgxs, sig)
        t_drv = min(t_drv, time.perf_counter() - t0)
        assert enclave.mrenclave == sig.enclavehash
        del cpu, driver, process, enclave
    pages = len(image.pages)
    print(f"(a) load of a {mib} MiB enclave ({pages} pages, fully measured)")
    print(f"    processor alone (limit): {t_cpu * 1e3:8.1f} ms  {mib / t_cpu:7.1f} MiB/s")
    print(f"    through the ioctls     : {t_drv * 1e3:8.1f} ms  {mib / t_drv:7.1f} MiB/s")
    print(f"    driver overhead {1e6 * (t_drv - t_cpu) / pages:.2f} µs/page")
    ratio = t_cpu / t_drv
    print(f"    ratio {ratio:.3f} (target >= {TARGET})")
    return ratio


def bench_random_access(epc_mib: int, accesses: int) -> None:
    cpu = Processor(CpuConfig(epc_size=epc_mib << 20), b"bench-seed-0123456789")
    driver = SgxDriver(cpu)
    image = data_image(4 * epc_mib, program=Reader)
    sig = sign_image(image, int(AttributeFlag.MODE64BIT | AttributeFlag.DEBUG))
    cpu.register_program(sig.enclavehash, Reader)
    enclave = load(driver.new_process(), as_sgxs_image(image), sig)
    data_pages = [p for p in image.pages if p.offset >= 0x3000]
    rng = random.Random(7)
    before = driver.stats()
    t0 = time.perf_counter()
    for _ in range(accesses):
        page = rng.choice(data_pages)
        word = 8 * rng.randrange(512)
        got = enclave.ecall(1, struct.pack("<QQ", page.offset + word, 8))
        assert got == page.data[word : word + 8]
    elapsed = time.perf_counter() - t0
    after = driver.stats()
    reloads = after.reloads - before.reloads
    print(f"(b) random access, enclave {4 * epc_mib} MiB = 4x the {epc_mib} MiB EPC")
    print(f"    {accesses} ECALL reads in {elapsed:.2f} s: {accesses / elapsed:,.0f} pages/s")
    print(
        f"    {reloads} reloads ({reloads / accesses:.0%} of accesses fault), "
        f"{after.evictions - before.evictions} write-backs, {reloads / elapsed:,.0f} ELDU/s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--epc-mib", type=int, default=4)
    parser.add_argument("--accesses", type=int, default=20000)
    args = parser.parse_args()
    ratio = bench_load(args.mib, args.repeat)
    bench_random_access(args.epc_mib, args.accesses)
    os.sync()
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
