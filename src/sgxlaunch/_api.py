"""The task-level Python API behind ``import sgxlaunch`` (see ``docs/api.md``).

This module is an edge (DESIGN.md layer 8): it may open files, read the clock and draw
randomness, and turns paths into the bytes, file objects and key objects the core takes. The
command line calls the same functions, so a script and ``sgxlaunch`` behave alike.

Verification raises (never a bare ``False``): every failure is a
:class:`~sgxlaunch.errors.SgxlaunchError` subclass naming what was expected and found.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from sgxlaunch._images import summary_of
from sgxlaunch.arch import AttributeFlag, Attributes, Sigstruct
from sgxlaunch.arch.constants import VENDOR_NONE
from sgxlaunch.cpu.machine import MemoryMachine
from sgxlaunch.errors import MalformedInput, UsageError
from sgxlaunch.formats import sdk, sgxs
from sgxlaunch.launch.enclave import sign_launch_enclave as _sign_launch_enclave
from sgxlaunch.launch.platform import Platform, PlatformConfig, RunResult, take_ownership
from sgxlaunch.policy import (
    MODE_PAYLOAD_TYPE,
    POLICY_PAYLOAD_TYPE,
    ROOT_PAYLOAD_TYPE,
    LaunchPolicy,
    MemoryStore,
    ModeDocument,
    OwnerRoot,
    PolicySigner,
    PrivateKeySigner,
    sign_payload,
)
from sgxlaunch.policy._json import dumps_canonical
from sgxlaunch.sigstruct import (
    DEFAULT_ATTRIBUTEMASK,
    DEFAULT_ATTRIBUTES,
    DEFAULT_MISCMASK,
    EnclaveSigner,
    RsaKeySigner,
    check_mrenclave,
    check_mrsigner,
    generate_key,
    mrsigner_of,
)
from sgxlaunch.sigstruct import sign as _sign
from sgxlaunch.sigstruct import verify as _verify
from sgxlaunch.store import (
    STATE_FILE,
    FileMachine,
    open_store,
    resolve_home,
    resolve_machine,
)
from sgxlaunch.store.keyfiles import load_enclave_key, load_enclave_public_key

ImageSource = str | os.PathLike[str] | BinaryIO
"""An SGXS image: a path, or a binary file object positioned at its start."""

SigstructSource = Sigstruct | bytes | str | os.PathLike[str]
"""A SIGSTRUCT: parsed, its 1808 bytes, or a path to them."""

MAX_SIGSTRUCT_FILE = 1 << 20


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _today() -> int:
    """SIGSTRUCT.DATE for today: the u32 0xYYYYMMDD (BCD-looking, as the SDK writes it)."""
    return int(dt.date.today().strftime("%Y%m%d"), 16)


# -- images ----------------------------------------------------------------------------------


def _sdk_bytes(image: ImageSource) -> bytes | None:
    """The whole file if ``image`` is an Intel SDK enclave (ELF magic), else ``None``.

    A file object is peeked at and rewound; one that cannot seek is left to the SGXS reader.
    """
    if isinstance(image, str | os.PathLike):
        with open(image, "rb") as fh:
            if not sdk.looks_like_elf(fh.read(4)):
                return None
            fh.seek(0)
            return fh.read()
    if not image.seekable():
        return None
    start = image.tell()
    head = image.read(4)
    image.seek(start)
    return image.read() if sdk.looks_like_elf(head) else None


def _sdk(image: ImageSource, data: bytes, size: int | None) -> sdk.SdkEnclave:
    if size is not None:
        raise UsageError("size applies to an UNSIZED SGXS stream, not to an SDK enclave")
    try:
        return sdk.parse_sdk(data)
    except MalformedInput as exc:
        if isinstance(image, str | os.PathLike):
            raise exc.with_source(os.fspath(image)) from None
        raise


def _with_image(image: ImageSource, reader: Any, **kwargs: Any) -> Any:
    if isinstance(image, str | os.PathLike):
        with open(image, "rb", buffering=0) as fh:
            try:
                return reader(fh, **kwargs)
            except MalformedInput as exc:
                raise exc.with_source(os.fspath(image)) from None
    return reader(image, **kwargs)


def measure_image(
    image: ImageSource, *, size: int | None = None, progress: sgxs.ProgressFn | None = None
) -> bytes:
    """MRENCLAVE of an SGXS image, streamed in constant memory with every canonical check, or
    of an Intel SDK enclave (``enclave.signed.so``), re-measured from its pages.

    Args:
        image: a path or a binary file object.
        size: the enclave size of an UNSIZED (enhanced) SGXS stream.
        progress: called with the number of bytes read after each read.

    Raises:
        MalformedInput: not canonical SGXS, naming the file, record index and offset; or a
            malformed SDK enclave, naming the structure or entry and offset.
        UsageError: an UNSIZED stream without ``size`` (or a ``size`` a sized one contradicts).
        OSError: the file cannot be read.
    """
    data = _sdk_bytes(image)
    if data is not None:
        return _sdk(image, data, size).plan().mrenclave()
    result: bytes = _with_image(image, sgxs.measure_stream, size=size, progress=progress)
    return result


def read_image(image: ImageSource, *, size: int | None = None) -> sgxs.SgxsImage:
    """Parse an SGXS image into its pages (linear time; memory in proportion to the file).

    An Intel SDK enclave gives the pages its loader adds on an SGX1 platform (urts 1.5).

    Raises:
        MalformedInput, UsageError, OSError: as :func:`measure_image`.
    """
    data = _sdk_bytes(image)
    if data is not None:
        enclave = _sdk(image, data, size)
        return enclave.plan(enclave.select(sdk.URTS_SGX1)).to_image()
    result: sgxs.SgxsImage = _with_image(image, sgxs.parse_stream, size=size)
    return result


def read_sigstruct(source: SigstructSource) -> Sigstruct:
    """A SIGSTRUCT parsed strictly (every constant and reserved byte checked).

    Raises:
        MalformedInput: not a SIGSTRUCT, naming the file and field.
        OSError: the file cannot be read.
    """
    if isinstance(source, Sigstruct):
        return source
    if isinstance(source, bytes):
        return Sigstruct.from_bytes(source)
    path = Path(source)
    if path.stat().st_size > MAX_SIGSTRUCT_FILE:
        raise MalformedInput(
            f"file is {path.stat().st_size} bytes; a SIGSTRUCT is {Sigstruct.SIZE}",
            source=str(path),
        )
    try:
        return Sigstruct.from_bytes(path.read_bytes())
    except MalformedInput as exc:
        raise exc.with_source(str(path)) from None


# -- the author: keys, signing, verifying ----------------------------------------------------


def load_key(path: str | os.PathLike[str]) -> rsa.RSAPrivateKey:
    """An enclave-signing private key (RSA-3072, e = 3) from a PEM file.

    Raises:
        MalformedInput: not a PEM RSA private key. UsageError: not RSA-3072 with e = 3.
    """
    return load_enclave_key(Path(path))


def load_public_key(path: str | os.PathLike[str]) -> rsa.RSAPublicKey:
    """An enclave-signing public key from a PEM file (a private key PEM also works)."""
    return load_enclave_public_key(Path(path))


def sigstruct_body(
    mrenclave: bytes,
    *,
    isvprodid: int = 0,
    isvsvn: int = 0,
    debug: bool = False,
    attributes: Attributes | None = None,
    attributemask: Attributes | None = None,
    miscselect: int = 0,
    miscmask: int = DEFAULT_MISCMASK,
    date: int | None = None,
    vendor: int = VENDOR_NONE,
    swdefined: int = 0,
    isvfamilyid: bytes = bytes(16),
    isvextprodid: bytes = bytes(16),
) -> Sigstruct:
    """The unsigned SIGSTRUCT for ``mrenclave`` (defaults: Fortanix ``sgxs-sign``'s).

    ``attributes`` and ``attributemask`` are written verbatim when given; ``debug`` adds
    ATTRIBUTES.DEBUG to the default attributes. ``date`` defaults to today.

    Raises:
        UsageError: ``debug`` together with explicit attributes that lack DEBUG.
    """
    if attributes is None:
        attributes = DEFAULT_ATTRIBUTES
        if debug:
            attributes = attributes | Attributes(flags=int(AttributeFlag.DEBUG), xfrm=0)
    elif debug and not attributes.debug:
        raise UsageError(
            "debug contradicts explicit attributes without the DEBUG bit (0x2); explicit "
            "attributes are written verbatim"
        )
    return Sigstruct(
        vendor=vendor,
        date=_today() if date is None else date,
        swdefined=swdefined,
        miscselect=miscselect,
        miscmask=miscmask,
        isvfamilyid=isvfamilyid,
        attributes=attributes,
        attributemask=attributemask or DEFAULT_ATTRIBUTEMASK,
        enclavehash=mrenclave,
        isvextprodid=isvextprodid,
        isvprodid=isvprodid,
        isvsvn=isvsvn,
    )


def sign(
    key: rsa.RSAPrivateKey | EnclaveSigner,
    *,
    image: ImageSource | None = None,
    mrenclave: bytes | None = None,
    size: int | None = None,
    **fields: Any,
) -> Sigstruct:
    """Sign an enclave: measure ``image`` (or take ``mrenclave``) and return its SIGSTRUCT.

    ``fields`` are :func:`sigstruct_body`'s keyword arguments (``isvprodid``, ``isvsvn``,
    ``debug``, ``attributes`` …). The result is verified before it is returned.

    Raises:
        UsageError: neither or both of ``image`` and ``mrenclave``; the key is not RSA-3072
            with e = 3. MalformedInput: the image is not canonical SGXS.
    """
    if (image is None) == (mrenclave is None):
        raise UsageError("give either an image or an mrenclave (exactly one)")
    if mrenclave is None:
        assert image is not None
        mrenclave = measure_image(image, size=size)
    signer = RsaKeySigner(key) if isinstance(key, rsa.RSAPrivateKey) else key
    return _sign(sigstruct_body(mrenclave, **fields), signer)


def verify(
    sigstruct: SigstructSource,
    *,
    image: ImageSource | None = None,
    size: int | None = None,
    mrenclave: bytes | None = None,
    mrsigner: bytes | None = None,
) -> Sigstruct:
    """Verify a SIGSTRUCT as EINIT does, and optionally what it is for and who signed it.

    Checks, in order: the signature, Q1 and Q2 (SDM EINIT steps 3-4, see
    :func:`sgxlaunch.sigstruct.verify`); ENCLAVEHASH against ``image`` measured (or
    ``mrenclave``); MRSIGNER against ``mrsigner``.

    Returns:
        The verified SIGSTRUCT.

    Raises:
        SignatureInvalid, QuotientInvalid: the signature does not verify.
        MeasurementMismatch: the image measures to another MRENCLAVE.
        SignerMismatch: another key signed it.
        MalformedInput: a file is malformed (named).
    """
    sig = read_sigstruct(sigstruct)
    _verify(sig)
    if image is not None:
        check_mrenclave(sig, measure_image(image, size=size))
    if mrenclave is not None:
        check_mrenclave(sig, mrenclave)
    if mrsigner is not None:
        check_mrsigner(sig, mrsigner)
    return sig


def inspect_image(image: ImageSource, *, size: int | None = None) -> dict[str, Any]:
    """A JSON-ready summary of an SGXS image: MRENCLAVE, SIZE, SSAFRAMESIZE, every page.

    One pass over the file (pages and MRENCLAVE together), linear in its length. An Intel SDK
    enclave gives its metadata records, layout and recomputed MRENCLAVE instead
    (``type`` "sdk").
    """
    data = _sdk_bytes(image)
    if data is not None:
        return summary_of(_sdk(image, data, size))
    parsed, mrenclave = _with_image(image, sgxs.load_stream, size=size)
    pages = []
    for page in parsed.pages:
        perms = "".join(
            c if page.secinfo_flags & bit else "-" for c, bit in (("r", 1), ("w", 2), ("x", 4))
        )
        pages.append(
            {
                "offset": page.offset,
                "type": {1: "tcs", 2: "reg"}.get(page.page_type, str(page.page_type)),
                "permissions": perms,
                "measured": f"{page.measured:04x}",
                "unmeasured": f"{page.unmeasured:04x}",
            }
        )
    return {
        "type": "sgxs",
        "mrenclave": mrenclave.hex(),
        "size": parsed.size,
        "ssaframesize": parsed.ssaframesize,
        "pages": pages,
    }


# -- the owner: root, policy, mode, launch enclave -------------------------------------------


def generate_owner_key() -> PrivateKeySigner:
    """A fresh owner policy-signing key (Ed25519)."""
    return PrivateKeySigner(ed25519.Ed25519PrivateKey.generate())


def owner_root(
    keys: Sequence[PolicySigner],
    *,
    threshold: int,
    expires: dt.datetime,
    version: int = 1,
    signers: Sequence[PolicySigner] | None = None,
) -> bytes:
    """A signed owner root (DSSE envelope bytes): ``keys`` are the owner's keys, of which
    ``threshold`` must sign every document; ``signers`` (default: all ``keys``) sign this one.

    Raises:
        UsageError: a bound is out of range or a key repeats.
    """
    root = OwnerRoot.create(
        version=version, expires=expires, threshold=threshold, keys=[k.public_key for k in keys]
    )
    return sign_payload(ROOT_PAYLOAD_TYPE, root.to_payload(), signers or keys).to_bytes()


def sign_policy(document: Mapping[str, Any], signers: Sequence[PolicySigner]) -> bytes:
    """A signed launch policy (DSSE envelope bytes) from its JSON document.

    The document is checked as the platform will check it before anything is signed.

    Raises:
        MalformedInput: the document breaks the policy schema (names the field).
    """
    payload = dumps_canonical(dict(document))
    LaunchPolicy.from_payload(payload)
    return sign_payload(POLICY_PAYLOAD_TYPE, payload, signers).to_bytes()


def sign_mode(
    mode: str,
    signers: Sequence[PolicySigner],
    *,
    version: int,
    expires: dt.datetime,
    le_mrsigner: bytes | None = None,
    platform_id: bytes | None = None,
) -> bytes:
    """A signed platform-mode document (``owner`` names the launch enclave's MRSIGNER).

    Raises:
        UsageError: a value out of bounds, or ``le_mrsigner`` missing for ``owner``.
    """
    doc = ModeDocument.create(
        version=version,
        expires=expires,
        mode=mode,
        le_mrsigner=le_mrsigner,
        platform_id=platform_id,
    )
    return sign_payload(MODE_PAYLOAD_TYPE, doc.to_payload(), signers).to_bytes()


def sign_launch_enclave(root: bytes, key: rsa.RSAPrivateKey | EnclaveSigner) -> Sigstruct:
    """The owner's SIGSTRUCT for its launch enclave, built for the owner root ``root``."""
    signer = RsaKeySigner(key) if isinstance(key, rsa.RSAPrivateKey) else key
    return _sign_launch_enclave(root, signer)


# -- the platform ----------------------------------------------------------------------------


def _paths(
    home: str | os.PathLike[str] | None, machine: str | os.PathLike[str] | None
) -> tuple[Path, Path]:
    return (
        resolve_home(None if home is None else Path(home)),
        resolve_machine(None if machine is None else Path(machine)),
    )


@contextmanager
def create_platform(
    home: str | os.PathLike[str] | None = None,
    machine: str | os.PathLike[str] | None = None,
    *,
    seed: bytes | None = None,
    root: bytes | None = None,
    epc_size: int | None = None,
) -> Iterator[Platform]:
    """Create an emulated platform and yield it, open.

    The *machine* file holds what silicon would (the CPU seed, counters, the owner binding)
    and must live outside the *home*, which holds the owner's documents and the launch log.
    ``home`` defaults to ``$SGXLAUNCH_HOME``, then ``~/.local/share/sgxlaunch``; ``machine`` to
    ``$SGXLAUNCH_MACHINE``, then ``~/.local/state/sgxlaunch/machine.json``.

    Args:
        seed: the CPU's seed (same seed = same CPU); default: fresh randomness.
        root: a signed owner root: the owner takes ownership of the new machine (owner mode
            needs it).
        epc_size: bytes of EPC (default 32 MiB).

    Raises:
        UsageError: a machine or platform already exists there, or the machine file is
            inside the home.
        MalformedInput, VerificationFailed: ``root`` is refused (nothing is written).
    """
    home_path, machine_path = _paths(home, machine)
    if machine_path.exists():
        raise UsageError(f"{machine_path}: a machine already exists here (never overwritten)")
    if machine_path.resolve().is_relative_to(home_path.resolve()):
        raise UsageError(f"{machine_path}: the machine must live outside the home ({home_path})")
    if (home_path / STATE_FILE).exists():
        raise UsageError(f"{home_path}: a platform already exists here")
    config = PlatformConfig() if epc_size is None else PlatformConfig(epc_size=epc_size)
    # Every step is checked on a scratch store and machine before anything is written.
    scratch = MemoryStore()
    scratch_machine = MemoryMachine(config.machine_state(seed or os.urandom(32)))
    # the emulated PCS with the PCE/QE signing key, and the PCK certificate (the PCE runs once)
    from sgxlaunch.attest.pcs import ensure_provisioning

    ensure_provisioning(scratch_machine, now=_utc_now(), random=os.urandom)
    Platform.open(scratch, scratch_machine, clock=_utc_now).quoter().provision()
    if root is not None:
        take_ownership(scratch, scratch_machine, root, _utc_now())
    Platform.open(scratch, scratch_machine, clock=_utc_now)
    with open_store(home_path) as store:
        file_machine = FileMachine.create(machine_path, scratch_machine.load())
        store.commit(scratch.snapshot())
        yield Platform.open(store, file_machine, clock=_utc_now)


@contextmanager
def open_platform(
    home: str | os.PathLike[str] | None = None,
    machine: str | os.PathLike[str] | None = None,
    *,
    maintenance: bool = False,
) -> Iterator[Platform]:
    """Open the platform of ``machine`` over ``home`` (resolved as :func:`create_platform`).

    Raises:
        UsageError: there is no platform there (nothing is created); sgxlaunchd holds it
            (the message names its socket).
        VerificationFailed: the home does not verify against the machine (the platform
            refuses to start).
    """
    home_path, machine_path = _paths(home, machine)
    for path, what in ((home_path / STATE_FILE, home_path), (machine_path, machine_path)):
        if not path.exists():
            raise UsageError(
                f"{what}: no platform here; create one with `sgxlaunch platform init` "
                "(or sgxlaunch.create_platform)"
            )
    from sgxlaunch.service.lock import refuse_if_served

    refuse_if_served(home_path, machine_path)  # sgxlaunchd holds it: use its socket
    file_machine = FileMachine(machine_path)
    with file_machine.session(), open_store(home_path, create=False) as store:
        yield Platform.open(store, file_machine, clock=_utc_now, maintenance=maintenance)


def ephemeral_platform(*, seed: bytes | None = None) -> Platform:
    """A throwaway permissive platform in memory (nothing is written anywhere)."""
    return Platform.create(MemoryStore(), seed=seed or os.urandom(32), clock=_utc_now)


@dataclass(frozen=True)
class Launch:
    """What :func:`run` did: the platform's decision and, for a program that ships with
    sgxlaunch, the answer of one ECALL.

    Attributes:
        result: the platform's :class:`~sgxlaunch.launch.platform.RunResult` (the enclave,
            mode, decision, rule, token KEYID).
        ecall_output: the bytes the enclave's ECALL returned, or ``None`` when the image runs
            no program shipped with sgxlaunch (it was initialized, but there is no code to
            enter).
    """

    result: RunResult
    ecall_output: bytes | None

    def describe(self) -> dict[str, Any]:
        """The JSON-ready summary (``RunResult.describe()`` plus ``ecall_output``)."""
        out = self.result.describe()
        out["ecall_output"] = (
            None
            if self.ecall_output is None
            else self.ecall_output.decode("utf-8", errors="replace")
        )
        return out


def run(
    platform: Platform,
    image: ImageSource | sgxs.SgxsImage,
    sigstruct: SigstructSource,
    *,
    token: bytes | None = None,
    size: int | None = None,
    ecall_input: bytes = b"",
) -> Launch:
    """Load and initialize an enclave on ``platform`` (in owner mode through the owner's
    launch enclave, logged either way); if the image runs a program that ships with
    sgxlaunch (the example enclave), make ECALL 0 with ``ecall_input`` (the example loader:
    fetch code, ask for a grant where the driver offers one, map it R-X and run it). A protected
    image (``pcl encrypt``) gets its code key from the owner's launch enclave first
    (:meth:`Platform.unlock_protected`: REQUEST → RELEASE → UNLOCK, the release logged). What
    the driver decided meanwhile about the enclave's dynamic memory under the owner's limits is
    in the launch log before this returns or raises (``dynamic`` records).

    Raises:
        PolicyDenied: the owner's policy refuses it (the attempt is logged), or refuses to
            release a protected image's code key (logged).
        VerificationFailed: the launch enclave (logged) or the decryptor refused a protected
            image's key.
        LoadFailed: the driver or EINIT refused it (errno, SGX status, why).
        DriverError: the driver refused a step of the example loader (EACCES for the R-X
            mapping under ``dynamic_memory: data``, EPERM for a refused grant).
        MalformedInput: a file is malformed (named).
    """
    from sgxlaunch.example import SHIPPED_PROGRAMS, shipped_program
    from sgxlaunch.example_loader import CodeLoader, fetch_and_run
    from sgxlaunch.pcl.format import find_header

    parsed = image if isinstance(image, sgxs.SgxsImage) else read_image(image, size=size)
    sig = read_sigstruct(sigstruct)
    result = platform.run(parsed, sig, token=token)
    if find_header(parsed) is not None and result.enclave is not None:
        # A protected image (`pcl encrypt`): its decryptor asks the owner's launch enclave for
        # the code key (REQUEST → RELEASE → UNLOCK), then runs the shipped program it hides.
        from sgxlaunch.pcl.decryptor import PclDecryptor

        platform.cpu.register_program(result.enclave.mrenclave, PclDecryptor)
        for shipped in SHIPPED_PROGRAMS:
            platform.cpu.register_code(shipped)
        return Launch(result, platform.unlock_protected(result.enclave, 0, ecall_input))
    program = shipped_program(parsed)
    output = None
    if program is not None and result.enclave is not None:
        platform.cpu.register_program(result.enclave.mrenclave, program)
        try:
            if program is CodeLoader:  # the example loader: fetch code, get it granted, run it
                output = fetch_and_run(platform, result.enclave, ecall_input)
            else:
                output = result.enclave.ecall(0, ecall_input)
        finally:  # what the driver decided about dynamic memory meanwhile: into the log
            platform.forward_driver_events()
    return Launch(result, output)


def make_quote(
    platform: Platform,
    image: ImageSource | sgxs.SgxsImage,
    sigstruct: SigstructSource,
    *,
    reportdata: bytes = bytes(64),
    token: bytes | None = None,
    size: int | None = None,
) -> bytes:
    """Launch an enclave whose program ships with sgxlaunch (the example enclave), have it
    make EREPORT for the platform's quoting enclave with ``reportdata``, and quote it.

    Your own :class:`~sgxlaunch.cpu.EnclaveProgram` does the same in two calls: hand it
    :meth:`Platform.qe_target_info` and let it call ``ctx.ereport(target_info, reportdata)``,
    then pass the 432-byte REPORT to :meth:`Platform.quote`.

    Returns:
        A DCAP ECDSA quote v3 (certification data type 5: the platform's PCK chain), which
        :func:`sgxlaunch.attest.verify_quote` verifies against the platform's collateral and
        root (``sgxlaunch platform collateral`` / ``platform root``).

    Raises:
        UsageError: ``reportdata`` is not 64 bytes; the SIGSTRUCT asks for DEBUG (quoted
            enclaves must be non-debug); the image runs no program shipped with sgxlaunch.
        PolicyDenied, LoadFailed: the enclave (or the PCE / QE) was not launched.
        ReportRefused, VerificationFailed: see :meth:`Platform.quote`.
    """
    from sgxlaunch.example import ECALL_REPORT, shipped_program

    if len(reportdata) != 64:
        raise UsageError(f"REPORTDATA is 64 bytes, got {len(reportdata)}")
    sig = read_sigstruct(sigstruct)
    if sig.attributes.flags & int(AttributeFlag.DEBUG):
        raise UsageError(
            f"enclave {sig.enclavehash.hex()} is signed as a DEBUG enclave: quoted enclaves "
            "must be non-debug (verifiers refuse DEBUG quotes)"
        )
    parsed = image if isinstance(image, sgxs.SgxsImage) else read_image(image, size=size)
    program = shipped_program(parsed)
    if program is None:
        raise UsageError(
            "the image runs no program shipped with sgxlaunch, so nothing can make its REPORT "
            "here; use the example enclave (`sgxlaunch example`), or from Python let your "
            "program EREPORT for Platform.qe_target_info() and call Platform.quote()"
        )
    target = platform.qe_target_info()
    enclave = platform.run(parsed, sig, token=token).enclave
    assert enclave is not None  # run raises when it does not initialize
    platform.cpu.register_program(enclave.mrenclave, program)
    report = enclave.ecall(ECALL_REPORT, target.to_bytes() + reportdata)
    if len(report) != 432:
        raise UsageError(
            f"the enclave's program does not answer ECALL {ECALL_REPORT} with a REPORT "
            f"(got {len(report)} bytes)"
        )
    return platform.quote(report)


__all__ = [
    "ImageSource",
    "Launch",
    "SigstructSource",
    "create_platform",
    "ephemeral_platform",
    "generate_key",
    "generate_owner_key",
    "inspect_image",
    "load_key",
    "load_public_key",
    "make_quote",
    "measure_image",
    "mrsigner_of",
    "open_platform",
    "owner_root",
    "read_image",
    "read_sigstruct",
    "run",
    "sign",
    "sign_launch_enclave",
    "sign_mode",
    "sign_policy",
    "sigstruct_body",
    "verify",
]
