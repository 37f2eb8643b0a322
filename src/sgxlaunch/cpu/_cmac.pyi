"""Type stub for the optional native AES-128-CMAC (see _cmac.c and sgxlaunch.cpu.keys)."""

from typing_extensions import Buffer

def cmac128(key: Buffer, data: Buffer, /) -> bytes: ...
