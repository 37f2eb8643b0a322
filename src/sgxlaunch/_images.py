"""Enclave image files by format: SGXS streams and Intel SDK enclaves (``enclave.signed.so``).

The one place that looks at a file's first bytes and sends it to the right reader, shared by
the public API and the command line. An SGXS file is streamed (constant memory); an SDK
enclave is an ELF that needs random access, so it is read whole and parsed by
:mod:`sgxlaunch.formats.sdk`.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Any

from sgxlaunch.arch import Sigstruct
from sgxlaunch.arch.constants import PageType
from sgxlaunch.errors import MalformedInput, UsageError
from sgxlaunch.formats import sdk, sgxs

PathLike = str | os.PathLike[str]


def is_sdk_file(path: PathLike) -> bool:
    """True if the file starts with the ELF magic (an SDK enclave, by the SGX file types)."""
    with open(path, "rb") as fh:
        return sdk.looks_like_elf(fh.read(4))


def _named(path: PathLike, exc: MalformedInput) -> MalformedInput:
    return exc if exc.source else exc.with_source(os.fspath(path))


def read_sdk(path: PathLike) -> sdk.SdkEnclave:
    """Parse the SDK enclave at ``path`` (its bytes are read into memory).

    Raises:
        MalformedInput: naming the file, the structure or entry and the offset.
    """
    data = Path(path).read_bytes()
    try:
        return sdk.parse_sdk(data)
    except MalformedInput as exc:
        raise _named(path, exc) from None


def sdk_plan(path: PathLike, urts: tuple[int, int] = sdk.URTS_EDMM) -> sdk.LoadPlan:
    """The loader's operations for the SDK enclave at ``path`` (metadata as ``urts`` picks).

    Raises:
        MalformedInput: as :func:`read_sdk`, or a layout the loader refuses.
        UsageError: no metadata that loader accepts.
    """
    enclave = read_sdk(path)
    try:
        return enclave.plan(enclave.select(urts))
    except MalformedInput as exc:
        raise _named(path, exc) from None


def measure_sdk_file(path: PathLike) -> bytes:
    """MRENCLAVE of the SDK enclave at ``path``, recomputed from its pages."""
    enclave = read_sdk(path)
    try:
        return enclave.plan().mrenclave()
    except MalformedInput as exc:
        raise _named(path, exc) from None


def sdk_sigstruct(path: PathLike, *, strict: bool = True) -> Sigstruct:
    """The SIGSTRUCT in the note of the SDK enclave at ``path`` (the loader's metadata).

    Raises:
        MalformedInput: the file is malformed, or the enclave is not signed yet.
    """
    meta = read_sdk(path).select()
    if not strict:
        return Sigstruct.from_bytes_raw(meta.enclave_css)
    try:
        return meta.sigstruct
    except MalformedInput as exc:
        raise _named(path, exc) from None


def load_image(path: PathLike, *, size: int | None = None) -> sgxs.SgxsImage:
    """The pages to load: an SGXS file parsed, or an SDK enclave's plan for an SGX1 loader.

    Raises:
        MalformedInput: naming the file.
        UsageError: ``size`` given for an SDK enclave, or one with only 3.x metadata.
    """
    if is_sdk_file(path):
        if size is not None:
            raise UsageError("--size applies to an UNSIZED SGXS stream, not to an SDK enclave")
        return sdk_plan(path, sdk.URTS_SGX1).to_image()
    with open(path, "rb", buffering=0) as fh:
        try:
            return sgxs.parse_stream(fh, size=size)
        except MalformedInput as exc:
            raise _named(path, exc) from None


def sdk_summary(path: PathLike) -> dict[str, Any]:
    """What ``sgx_sign dump`` shows, plus the recomputed MRENCLAVE of every metadata record.

    Keys: ``type`` ("sdk"), ``mrenclave`` (recomputed, from the record the loader selects),
    ``enclavehash`` (stored in the SIGSTRUCT), ``matches``, ``selected`` (its version),
    ``segments`` and ``metadata`` (one object per record, in file order, each with its own
    recomputed ``mrenclave`` and layout table).
    """
    try:
        return summary_of(read_sdk(path))
    except MalformedInput as exc:
        raise _named(path, exc) from None


def summary_of(enclave: sdk.SdkEnclave) -> dict[str, Any]:
    """:func:`sdk_summary` of a parsed enclave."""
    selected = enclave.select()
    records = []
    mrenclave = b""
    for meta in enclave.copies:
        plan = enclave.plan(meta)
        measured = plan.mrenclave()
        if meta is selected:
            mrenclave = measured
        summary = sdk.summarize(meta)
        records.append(
            {
                "version": meta.version,
                "file_offset": meta.file_offset,
                "size": meta.size,
                "tcs_policy": {0: "bind", 1: "unbind"}[meta.tcs_policy],
                "ssa_frame_size": meta.ssa_frame_size,
                "max_save_buffer_size": meta.max_save_buffer_size,
                "desired_misc_select": meta.desired_misc_select,
                "tcs_min_pool": meta.tcs_min_pool,
                "enclave_size": meta.enclave_size,
                "secs_size": meta.secs_size,
                "attributes": {"flags": meta.attributes_flags, "xfrm": meta.attributes_xfrm},
                "tcs_count": summary.tcs_count,
                "stack_size": summary.stack_bytes,
                "heap_size": summary.heap_bytes,
                "eadd_pages": plan.page_count,
                "measured_pages": plan.measured_page_count,
                "dynamic_pages": summary.dynamic_pages,
                "enclavehash": meta.enclave_css[960:992].hex(),
                "mrenclave": measured.hex(),
                "layout": [_layout_row(r) for r in meta.layout],
                "patches": [{"dst": p.dst, "src": p.src, "size": p.size} for p in meta.patches],
            }
        )
    segments = [
        {
            "index": s.index,
            "offset": s.offset,
            "vaddr": s.vaddr,
            "filesz": s.filesz,
            "memsz": s.memsz,
            "permissions": s.permissions,
        }
        for s in enclave.segments
    ]
    stored = selected.enclave_css[960:992]
    return {
        "type": "sdk",
        "selected": selected.version,
        "mrenclave": mrenclave.hex(),
        "enclavehash": stored.hex(),
        "matches": hmac.compare_digest(stored, mrenclave),
        "segments": segments,
        "metadata": records,
    }


def _layout_row(record: sdk.LayoutEntry | sdk.LayoutGroup) -> dict[str, Any]:
    if isinstance(record, sdk.LayoutGroup):
        return {
            "id": record.name,
            "entry_count": record.entry_count,
            "load_times": record.load_times,
            "load_step": record.load_step,
        }
    kind = (record.si_flags >> 8) & 0xFF
    return {
        "id": record.name,
        "attributes": record.attributes,
        "page_count": record.page_count,
        "rva": record.rva,
        "content_size": record.content_size,
        "content_offset": record.content_offset,
        "si_flags": record.si_flags,
        "page_type": {int(PageType.TCS): "tcs", int(PageType.REG): "reg"}.get(kind, "-"),
    }
