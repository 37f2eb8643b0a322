"""SGX signing-key files at the CLI edge: PEM in, key objects out (never paths into the core)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sgxlaunch.cli._common import read_input, write_output
from sgxlaunch.errors import MalformedInput
from sgxlaunch.sigstruct import check_signing_key

KEY_FILE_LIMIT = 1 << 20


def write_private_key(path: str | Path, key: rsa.RSAPrivateKey, *, force: bool) -> None:
    """Write an unencrypted PKCS#8 PEM with mode 0600 (refusing to overwrite without force)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_output(path, pem, mode=0o600, force=force)


def load_private_key(path: str | Path) -> rsa.RSAPrivateKey:
    """Load an RSA-3072, e=3 private key from a PEM file.

    Raises:
        MalformedInput: not a PEM private key (names the file).
        UsageError: not RSA-3072 with e = 3.
    """
    data = read_input(path, limit=KEY_FILE_LIMIT)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise MalformedInput(
            f"not an unencrypted PEM private key ({exc})", source=str(path)
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise MalformedInput("the key is not an RSA key", source=str(path))
    check_signing_key(key.public_key())
    return key


def load_public_key(path: str | Path) -> rsa.RSAPublicKey:
    """Load an RSA-3072, e=3 public key from a PEM file (a private key PEM also works).

    Raises:
        MalformedInput: neither a PEM public nor private key (names the file).
        UsageError: not RSA-3072 with e = 3.
    """
    data = read_input(path, limit=KEY_FILE_LIMIT)
    key: object
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError) as exc:
            raise MalformedInput(
                f"not a PEM public or private key ({exc})", source=str(path)
            ) from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise MalformedInput("the key is not an RSA key", source=str(path))
    check_signing_key(key)
    return key
