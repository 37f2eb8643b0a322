"""What kind of image a file holds, from its first bytes (cheap: no parser is imported).

The command line asks this before it chooses a reader, so that ``inspect x.sig`` starts
without loading the SGXS scanner and its numpy validation.
"""

from __future__ import annotations

from sgxlaunch.measure import TAG_ECREATE

TAG_UNSIZED = b"UNSIZED\x00"
"""The tag of an enhanced (UNSIZED) SGXS stream's first record."""

ELF_MAGIC = b"\x7fELF"
ELF_REFUSAL = (
    "an Intel SDK enclave (ELF), not an SGXS stream: read it with sgxlaunch.formats.sdk "
    "(the API and the command line do so by themselves), or `sgxlaunch convert` it"
)
"""What the SGXS readers say when handed an ELF file (``docs/sdk.md``)."""


def looks_like_elf(head: bytes) -> bool:
    """True if ``head`` starts with the ELF magic (an Intel SDK ``enclave.signed.so``)."""
    return head[:4] == ELF_MAGIC


def looks_like_sgxs(head: bytes) -> bool:
    """True if ``head`` starts with an ECREATE or UNSIZED record tag."""
    return head[:8] in (TAG_ECREATE, TAG_UNSIZED)
