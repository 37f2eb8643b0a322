"""A user-space enclave loader over the driver's ioctls, and why an INIT failed, in words.

:func:`load` does what an SGX runtime does: open ``/dev/sgx_enclave``, reserve a naturally
aligned range, ENCLAVE_CREATE with a SECS derived from the image and SIGSTRUCT (DESIGN.md "SECS
for an image"), ENCLAVE_ADD_PAGES in runs (with ``SGX_PAGE_MEASURE`` for fully measured pages,
ENCLAVE_EXTEND for partially measured ones), then ENCLAVE_INIT — or ENCLAVE_INIT_TOKEN with a
token in ``owner`` mode — and maps the pages with their permissions.

When INIT fails, :func:`explain_init_failure` names the failing check the way the processor
applied it (expected vs found), from the inputs and what the platform exposes.
"""

from __future__ import annotations

import errno
import hmac
from dataclasses import dataclass, field

from sgxlaunch.arch.constants import (
    PAGE_SIZE,
    SIGSTRUCT_HEADER,
    SIGSTRUCT_HEADER2,
    VENDOR_INTEL,
    VENDOR_NONE,
    AttributeFlag,
    PageType,
    SgxStatus,
)
from sgxlaunch.arch.structs import Attributes, EinitToken, Secs, Sigstruct
from sgxlaunch.cpu import EnclaveImage, secs_for
from sgxlaunch.driver.process import Process
from sgxlaunch.driver.uapi import (
    ADD_PAGES_ARG,
    CREATE_ARG,
    DEV_SGX_ENCLAVE,
    DEV_SGX_PROVISION,
    EXTEND_ARG,
    INIT_ARG,
    INIT_TOKEN_ARG,
    MAP_FIXED,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
    PROVISION_ARG,
    SGX_IOC_ENCLAVE_ADD_PAGES,
    SGX_IOC_ENCLAVE_CREATE,
    SGX_IOC_ENCLAVE_EXTEND,
    SGX_IOC_ENCLAVE_INIT,
    SGX_IOC_ENCLAVE_INIT_TOKEN,
    SGX_IOC_ENCLAVE_PROVISION,
    SGX_PAGE_MEASURE,
    DriverError,
)
from sgxlaunch.formats.sdk import URTS_EDMM, URTS_SGX1, SdkEnclave
from sgxlaunch.formats.sgxs import SgxsImage, SgxsPage
from sgxlaunch.measure import Measurement
from sgxlaunch.sigstruct import quotients


@dataclass
class LoadedEnclave:
    """An enclave loaded and initialized through the driver.

    Attributes:
        process: the process that owns it.
        fd: its ``/dev/sgx_enclave`` descriptor.
        baseaddr: SECS.BASEADDR.
        size: SECS.SIZE.
        tcs: linear addresses of its TCS pages.
        mrenclave: MRENCLAVE (from the SIGSTRUCT EINIT accepted).
        mrsigner: MRSIGNER.
        dynamic_pages: pages added after EINIT by the loader (``post_add``).
    """

    process: Process
    fd: int
    baseaddr: int
    size: int
    tcs: list[int] = field(default_factory=list)
    mrenclave: bytes = b""
    mrsigner: bytes = b""
    dynamic_pages: int = 0

    def ecall(self, function: int = 0, data: bytes = b"", *, thread: int = 0) -> bytes:
        """Run the enclave's program on its ``thread``-th TCS."""
        return self.process.ecall(self.tcs[thread], function, data)

    def close(self) -> None:
        """Unmap and close: the driver EREMOVEs the enclave's pages."""
        self.process.munmap(self.baseaddr, self.size)
        self.process.close(self.fd)


class LoadFailed(DriverError):
    """Loading failed; ``step`` is the ioctl that failed, ``detail`` explains why."""

    def __init__(self, step: str, cause: DriverError, detail: list[str]) -> None:
        reason = cause.message.split(": ", 1)[-1]  # without the errno name DriverError adds
        super().__init__(
            cause.errno, f"{step} failed: {reason}", status=cause.status, detail=detail
        )
        self.step = step
        self.cause = cause


def _runs(pages: tuple[SgxsPage, ...]) -> list[list[SgxsPage]]:
    """Group pages into ADD_PAGES runs: contiguous, same SECINFO, all or nothing measured."""
    runs: list[list[SgxsPage]] = []
    for page in pages:
        partial = page.measured not in (0, 0xFFFF)
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and not partial
            and last.measured == page.measured
            and last.secinfo_flags == page.secinfo_flags
            and last.offset + PAGE_SIZE == page.offset
        ):
            runs[-1].append(page)
        else:
            runs.append([page])
    return runs


def _chunk_runs(mask: int) -> list[tuple[int, int]]:
    """(first chunk, count) of each run of set bits in a 16-bit measured mask."""
    out = []
    i = 0
    while i < 16:
        if mask & (1 << i):
            j = i
            while j < 16 and mask & (1 << j):
                j += 1
            out.append((i, j - i))
            i = j
        else:
            i += 1
    return out


def as_sgxs_image(image: SgxsImage | EnclaveImage) -> SgxsImage:
    """An :class:`SgxsImage` for a program image built by :func:`sgxlaunch.cpu.program_image`."""
    if isinstance(image, SgxsImage):
        return image
    pages = tuple(SgxsPage(p.offset, p.secinfo_flags, p.data, p.measured) for p in image.pages)
    return SgxsImage(image.ssaframesize, image.size, pages)


def load(
    process: Process,
    image: SgxsImage | EnclaveImage,
    sig: Sigstruct,
    *,
    token: EinitToken | bytes | None = None,
    provision: bool = False,
    attributes: Attributes | None = None,
    post_add: tuple[tuple[int, int], ...] = (),
    premap: int | None = None,
) -> LoadedEnclave:
    """Create, add, measure and initialize an enclave through the ioctls.

    Args:
        process: the process to load into.
        image: the enclave image.
        sig: its SIGSTRUCT.
        token: an EINITTOKEN: then INIT goes through ENCLAVE_INIT_TOKEN (owner mode).
        provision: open ``/dev/sgx_provision`` and grant PROVISIONKEY through
            ENCLAVE_PROVISION.
        attributes: SECS.ATTRIBUTES to request instead of the SIGSTRUCT's (bits outside
            its ATTRIBUTEMASK may differ, e.g. EINITTOKEN_KEY for a launch enclave).
        post_add: ``(offset, pages)`` ranges to add after EINIT (an SDK enclave's POST_ADD
            layout, SGX2): each is mapped RW (as the PSW's ``enclave_alloc``) and its pages
            faulted in, which EAUGs them; they stay PENDING until the enclave EACCEPTs them.
        premap: map the whole ELRANGE with these PROT_* bits before ECREATE, as Gramine's
            ``create_enclave`` maps it RWX (``../shared/reference/sgx2-spec.md`` §6.2: before
            INIT nothing exists to refuse it); the added pages are mapped over it after INIT
            as usual, and the holes stay in that mapping.

    Raises:
        LoadFailed: naming the failed step and why (errno, SGX status, the check in words).
    """
    cpu = process.cpu
    image = as_sgxs_image(image)
    fd = process.open(DEV_SGX_ENCLAVE)
    scratch: list[int] = []
    try:
        base = process.reserve(image.size)
        if premap is not None:
            try:
                process.mmap(base, image.size, premap, MAP_SHARED | MAP_FIXED, fd)
            except DriverError as exc:
                raise LoadFailed(
                    "mmap", exc, [f"mapping ELRANGE before ECREATE: {exc.message}"]
                ) from None
        secs = secs_for(
            sig,
            size=image.size,
            ssaframesize=image.ssaframesize,
            baseaddr=base,
            xfrm_allowed=cpu.config.xfrm_allowed,
        )
        if attributes is not None:
            secs = secs.replace(attributes=attributes)
        arg = process.alloc(PAGE_SIZE)
        secs_page = process.alloc(PAGE_SIZE)
        scratch += [arg, secs_page]
        process.write(secs_page, secs.to_bytes())
        process.write(arg, CREATE_ARG.pack(secs_page))
        _call(process, fd, SGX_IOC_ENCLAVE_CREATE, arg, "ENCLAVE_CREATE", sig, secs, token)
        if provision:
            pfd = process.open(DEV_SGX_PROVISION)
            process.write(arg, PROVISION_ARG.pack(pfd))
            _call(
                process, fd, SGX_IOC_ENCLAVE_PROVISION, arg, "ENCLAVE_PROVISION", sig, secs, token
            )
            process.close(pfd)
        if image.pages:
            data = process.alloc(len(image.pages) * PAGE_SIZE)
            secinfo = process.alloc(PAGE_SIZE)
            scratch += [data, secinfo]
            for i, page in enumerate(image.pages):
                process.write(data + i * PAGE_SIZE, page.data)
            index = {p.offset: i for i, p in enumerate(image.pages)}
            for run in _runs(image.pages):
                first = run[0]
                src = data + index[first.offset] * PAGE_SIZE
                process.write(secinfo, first.secinfo_flags.to_bytes(8, "little") + bytes(56))
                flags = SGX_PAGE_MEASURE if first.measured == 0xFFFF else 0
                process.write(
                    arg,
                    ADD_PAGES_ARG.pack(src, first.offset, len(run) * PAGE_SIZE, secinfo, flags, 0),
                )
                _call(
                    process,
                    fd,
                    SGX_IOC_ENCLAVE_ADD_PAGES,
                    arg,
                    "ENCLAVE_ADD_PAGES",
                    sig,
                    secs,
                    token,
                )
                if first.measured not in (0, 0xFFFF):
                    for chunk, count in _chunk_runs(first.measured):
                        process.write(arg, EXTEND_ARG.pack(first.offset + 256 * chunk, 256 * count))
                        _call(
                            process,
                            fd,
                            SGX_IOC_ENCLAVE_EXTEND,
                            arg,
                            "ENCLAVE_EXTEND",
                            sig,
                            secs,
                            token,
                        )
        sig_page = process.alloc(PAGE_SIZE)
        scratch.append(sig_page)
        process.write(sig_page, sig.to_bytes())
        if token is None:
            process.write(arg, INIT_ARG.pack(sig_page))
            cmd, name = SGX_IOC_ENCLAVE_INIT, "ENCLAVE_INIT"
        else:
            token_bytes = token.to_bytes() if isinstance(token, EinitToken) else bytes(token)
            process.write(sig_page + 2048, token_bytes)
            process.write(arg, INIT_TOKEN_ARG.pack(sig_page, sig_page + 2048, 0))
            cmd, name = SGX_IOC_ENCLAVE_INIT_TOKEN, "ENCLAVE_INIT_TOKEN"
        _call(process, fd, cmd, arg, name, sig, secs, token, image=image)
        loaded = LoadedEnclave(
            process, fd, base, image.size, mrenclave=sig.enclavehash, mrsigner=sig.mrsigner
        )
        _map_pages(process, fd, base, image.pages)
        for offset, count in post_add:
            _add_after_init(process, fd, base, offset, count, sig, secs, token)
            loaded.dynamic_pages += count
        tcs = int(PageType.TCS)
        loaded.tcs = [base + p.offset for p in image.pages if (p.secinfo_flags >> 8) & 0xFF == tcs]
        return loaded
    except BaseException:
        process.close(fd)
        raise
    finally:
        for address in scratch:
            process.free(address)


def load_sdk(
    process: Process,
    enclave: SdkEnclave,
    *,
    token: EinitToken | bytes | None = None,
    provision: bool = False,
) -> LoadedEnclave:
    """Load an Intel SDK enclave as the SDK's uRTS does on this part.

    The uRTS loads the 3.x (EDMM) metadata only where the part has SGX2 (CPUID.(12H,0):EAX[1])
    and the 1.x otherwise (:func:`sgxlaunch.formats.sdk.select`); the SIGSTRUCT is that
    record's ``enclave_css``. With the EDMM record, the POST_ADD layout entries (dynamic heap,
    dynamic thread contexts) are added after EINIT: mapped RW and faulted in, so the driver
    EAUGs each page, and they wait PENDING for the enclave's runtime to EACCEPT them. (The
    SDK's trts commits them from inside the enclave, on demand; SDK code does not run in the
    emulator, so the loader commits them all at load — the kernel path and the resulting
    EPCM state are the same.)

    Raises:
        UsageError: no metadata record this uRTS loads (a 3.x-only enclave on an SGX1 part).
        MalformedInput: the record's layout or SIGSTRUCT is refused.
        LoadFailed: as :func:`load`; step ``POST_ADD`` for a dynamic page that could not be
            added.
    """
    sgx2 = bool(process.cpu.cpuid(0x12, 0)[0] & 0x2)
    metadata = enclave.select(URTS_EDMM if sgx2 else URTS_SGX1)
    plan = enclave.plan(metadata)
    return load(
        process,
        plan.to_image(),
        metadata.sigstruct,
        token=token,
        provision=provision,
        post_add=plan.post_add if sgx2 else (),
    )


def _add_after_init(
    process: Process,
    fd: int,
    base: int,
    offset: int,
    count: int,
    sig: Sigstruct,
    secs: Secs,
    token: EinitToken | bytes | None,
) -> None:
    """Map ``count`` pages at ``offset`` RW and fault each in (EAUG on an SGX2 part)."""
    start = base + offset
    try:
        process.mmap(start, count * PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd)
        for k in range(count):
            process.touch(start + k * PAGE_SIZE)
    except DriverError as exc:
        raise LoadFailed(
            "POST_ADD",
            exc,
            [f"adding {count} page(s) at offset 0x{offset:x} after EINIT: {exc.message}"],
        ) from None


def _map_pages(process: Process, fd: int, base: int, pages: tuple[SgxsPage, ...]) -> None:
    """mmap each run of pages with the permissions their SECINFO allows (TCS: RW)."""
    run_start: int | None = None
    run_prot = 0
    run_end = 0
    tcs = int(PageType.TCS)
    for page in pages:
        flags = page.secinfo_flags
        prot = 0x3 if (flags >> 8) & 0xFF == tcs else flags & 0x7
        if run_start is not None and page.offset == run_end and prot == run_prot:
            run_end += PAGE_SIZE
            continue
        if run_start is not None:
            process.mmap(
                base + run_start, run_end - run_start, run_prot, MAP_SHARED | MAP_FIXED, fd
            )
        run_start, run_end, run_prot = page.offset, page.offset + PAGE_SIZE, prot
    if run_start is not None:
        process.mmap(base + run_start, run_end - run_start, run_prot, MAP_SHARED | MAP_FIXED, fd)


def _call(
    process: Process,
    fd: int,
    cmd: int,
    arg: int,
    step: str,
    sig: Sigstruct,
    secs: Secs,
    token: EinitToken | bytes | None,
    *,
    image: SgxsImage | None = None,
) -> None:
    try:
        process.ioctl(fd, cmd, arg)
    except DriverError as exc:
        detail = [f"errno {exc.errno_name} ({exc.errno})"]
        if exc.status is not None:
            detail.append(f"SGX status {exc.status.name} ({int(exc.status)})")
        if cmd in (SGX_IOC_ENCLAVE_INIT, SGX_IOC_ENCLAVE_INIT_TOKEN):
            detail += explain_init_failure(
                exc,
                sig=sig,
                secs=secs,
                token=token,
                lepubkeyhash=process.cpu.lepubkeyhash,
                cpusvn=process.cpu.cpusvn,
                image=image,
                mode=process.driver.mode,
            )
        raise LoadFailed(step, exc, detail) from None


def _flag_names(bits: int) -> str:
    names = [f.name or "" for f in AttributeFlag if f & bits]
    rest = bits & ~sum(int(f) for f in AttributeFlag)
    if rest:
        names.append(f"0x{rest:x}")
    return "|".join(names) or "0"


def _mrenclave_of(image: SgxsImage) -> bytes:
    m = Measurement()
    m.ecreate(image.ssaframesize, image.size)
    for page in image.pages:
        m.eadd(page.offset, page.secinfo_flags)
        if page.measured == 0xFFFF:
            m.eextend_page(page.offset, page.data)
        else:
            for i in range(16):
                if page.measured & (1 << i):
                    m.eextend(page.offset + 256 * i, page.data[256 * i : 256 * (i + 1)])
    return m.mrenclave()


def explain_init_failure(
    exc: DriverError,
    *,
    sig: Sigstruct,
    secs: Secs,
    token: EinitToken | bytes | None,
    lepubkeyhash: bytes,
    cpusvn: bytes,
    image: SgxsImage | None,
    mode: str,
) -> list[str]:
    """The failing check in words (expected vs found), re-derived from the inputs.

    It follows EINIT's order (spec §4.2) and the driver's own checks, and reports the first
    check that the inputs fail; it never decides anything the platform did not.
    """
    out: list[str] = []
    tok: EinitToken | None = None
    if token is not None:
        raw = token.to_bytes() if isinstance(token, EinitToken) else bytes(token)
        if len(raw) == EinitToken.SIZE:
            tok = EinitToken.from_bytes_raw(raw)
    mrsigner = sig.mrsigner
    if exc.status is None:
        if exc.errno == errno.EACCES:
            privileged = _flag_names(secs.attributes.flags & 0x30)
            out.append(
                f"the driver does not grant attribute(s) {privileged} to this enclave"
                " (PROVISIONKEY needs /dev/sgx_provision; EINITTOKEN_KEY only "
                "the owner's launch enclave in owner mode)"
            )
        elif exc.errno == errno.EPERM and mode == "owner" and token is None:
            out.append("owner launch control is on: the enclave needs a launch token")
        return out
    status = exc.status
    if status == SgxStatus.INVALID_SIG_STRUCT:
        if sig.header != SIGSTRUCT_HEADER:
            out.append(
                f"SIGSTRUCT.HEADER: expected {SIGSTRUCT_HEADER.hex()}, found {sig.header.hex()}"
                + (" (the Intel SDK's typed header)" if sig.header_type == "sdk-debug" else "")
            )
        elif sig.vendor not in (VENDOR_NONE, VENDOR_INTEL):
            out.append(f"SIGSTRUCT.VENDOR: expected 0 or 0x8086, found 0x{sig.vendor:x}")
        elif sig.header2 != SIGSTRUCT_HEADER2:
            out.append("SIGSTRUCT.HEADER2 is not the SGX constant")
        elif sig.exponent != 3:
            out.append(f"SIGSTRUCT.EXPONENT: expected 3, found {sig.exponent}")
        elif sig.nonzero_reserved() or sig.cet_attributes or sig.cet_attributes_mask:
            out.append(f"SIGSTRUCT reserved field {sig.nonzero_reserved() or 'CET'} is not zero")
        elif any(sig.isvfamilyid) and not secs.attributes.flags & AttributeFlag.KSS:
            out.append("SIGSTRUCT.ISVFAMILYID is set but the enclave does not use KSS")
    elif status == SgxStatus.INVALID_SIGNATURE:
        n, s = sig.modulus_int, sig.signature_int
        if n and (int.from_bytes(sig.q1, "little"), int.from_bytes(sig.q2, "little")) != (
            quotients(s, n)
        ):
            out.append("SIGSTRUCT.Q1/Q2 are inconsistent with SIGNATURE and MODULUS")
        else:
            out.append("the author's signature does not verify over the signed fields")
    elif status == SgxStatus.INVALID_MEASUREMENT:
        found = _mrenclave_of(image) if image is not None else None
        if found is not None and not hmac.compare_digest(found, sig.enclavehash):
            out.append(
                f"MRENCLAVE: SIGSTRUCT.ENCLAVEHASH expects {sig.enclavehash.hex()}, the loaded "
                f"pages measure {found.hex()}"
            )
        elif tok is not None and not hmac.compare_digest(tok.mrenclave, sig.enclavehash):
            out.append(
                f"token MRENCLAVE: expected {sig.enclavehash.hex()}, found {tok.mrenclave.hex()}"
                " (the token was minted for another enclave)"
            )
        elif tok is not None and not hmac.compare_digest(tok.mrsigner, mrsigner):
            out.append(f"token MRSIGNER: expected {mrsigner.hex()}, found {tok.mrsigner.hex()}")
    elif status == SgxStatus.INVALID_ATTRIBUTE:
        secs_attr = secs.attributes
        if secs_attr.flags & AttributeFlag.EINITTOKEN_KEY and mrsigner != lepubkeyhash:
            out.append(
                "EINITTOKEN_KEY is reserved for the launch-enclave signer in "
                f"IA32_SGXLEPUBKEYHASH ({lepubkeyhash.hex()}); this enclave's MRSIGNER is "
                f"{mrsigner.hex()}"
            )
        elif (secs_attr & sig.attributemask) != (sig.attributes & sig.attributemask):
            diff = (secs_attr.flags ^ sig.attributes.flags) & sig.attributemask.flags
            out.append(
                f"ATTRIBUTES under ATTRIBUTEMASK: SIGSTRUCT expects {sig.attributes}, the SECS "
                f"has {secs_attr} (differing bits: {_flag_names(diff)})"
            )
        elif (secs.miscselect & sig.miscmask) != (sig.miscselect & sig.miscmask):
            out.append(
                f"MISCSELECT under MISCMASK: expected 0x{sig.miscselect:x}, found "
                f"0x{secs.miscselect:x}"
            )
        elif tok is not None and (tok.attributes.flags, tok.attributes.xfrm) != (
            secs_attr.flags,
            secs_attr.xfrm,
        ):
            diff = tok.attributes.flags ^ secs_attr.flags
            out.append(
                f"token ATTRIBUTES: expected {secs_attr} (the enclave's), found "
                f"{tok.attributes} (differing bits: {_flag_names(diff)})"
            )
    elif status == SgxStatus.INVALID_EINITTOKEN:
        if tok is None or not tok.valid & 1:
            out.append(
                f"no valid launch token, and MRSIGNER {mrsigner.hex()} is not the launch-enclave "
                f"signer in IA32_SGXLEPUBKEYHASH ({lepubkeyhash.hex()})"
            )
        elif tok.maskedattributesle.flags & AttributeFlag.DEBUG and not secs.attributes.debug:
            out.append("the token was minted by a debug launch enclave for a production enclave")
        elif tok.valid & ~1 or tok.nonzero_reserved():
            out.append("token reserved bytes are not zero")
        else:
            out.append(
                "the token's MAC does not verify under the launch key of this CPU and the "
                f"launch-enclave signer now in IA32_SGXLEPUBKEYHASH ({lepubkeyhash.hex()}): it "
                "was minted on another CPU, by another launch enclave, or altered"
            )
    elif status == SgxStatus.INVALID_CPUSVN and tok is not None:
        out.append(
            f"token CPUSVNLE {tok.cpusvnle.hex()} is beyond this CPU's CPUSVN {cpusvn.hex()}"
        )
    if not out:
        out.append(f"EINIT refused the enclave with {status.name}")
    return out
