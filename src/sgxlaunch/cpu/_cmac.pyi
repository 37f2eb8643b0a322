"""Type stub for the optional native AES-128-CMAC (see _cmac.c and sgxlaunch.cpu.keys)."""

from typing_extensions import Buffer

def cmac128(key: Buffer, data: Buffer, /) -> bytes: ...
def einittoken_key(
    keyrequest: bytes,
    root_key: bytes,
    seal_fuses: bytes,
    owner_epoch: bytes,
    cpu_cpusvn: bytes,
    attributes: int,
    xfrm: int,
    isvprodid: int,
    isvsvn: int,
    mrsigner: bytes,
    miscselect: int,
    padding: bytes,
    /,
) -> bytes | None: ...
