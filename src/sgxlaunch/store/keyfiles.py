"""Key files (PEM), read and written at the edge: the owner's policy-signing keys and the
SGX enclave-signing keys (RSA-3072, e = 3) of authors and of the owner's launch enclave.

Private keys are PKCS#8 PEM, unencrypted, created with mode 0600; public keys are
SubjectPublicKeyInfo PEM. A key file is never overwritten unless the caller says ``force``
(policy keys: never); every write goes to a temporary file first, so a failed write leaves
nothing behind. Key generation uses the operating system's randomness, which is why it lives
here and not in the core. The core sees key objects only.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from sgxlaunch.errors import MalformedInput, UsageError
from sgxlaunch.policy.keys import (
    ECDSA_P256,
    ED25519,
    RSA_EXPONENT,
    RSA_MIN_BITS,
    RSA_PSS,
    SCHEMES,
    PrivateKeyObject,
    PrivateKeySigner,
    PublicKey,
)
from sgxlaunch.sigstruct import check_signing_key

MAX_KEY_FILE = 64 << 10


def generate_private_key(scheme: str = ED25519) -> PrivateKeyObject:
    """A fresh private key for ``scheme`` (RSA: 3072 bits, e = 65537).

    Raises:
        UsageError: the scheme is unknown.
    """
    if scheme == ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    if scheme == ECDSA_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if scheme == RSA_PSS:
        return rsa.generate_private_key(public_exponent=RSA_EXPONENT, key_size=RSA_MIN_BITS)
    raise UsageError(f"unknown key scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")


def _write_new(path: Path, data: bytes, mode: int, *, force: bool = False, hint: str = "") -> None:
    """Write ``data`` to a temporary file beside ``path`` (mode set first), then move it in:
    ``os.replace`` with ``force``, otherwise ``os.link``, which refuses an existing file
    atomically.

    Raises:
        UsageError: ``path`` exists and ``force`` is false.
    """
    if not force and path.exists():
        raise UsageError(f"{path}: exists; refusing to overwrite a key file{hint}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise UsageError(
                    f"{path}: exists; refusing to overwrite a key file{hint}"
                ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_private_key(path: Path, key: PrivateKeyObject) -> None:
    """Write ``key`` as PKCS#8 PEM to a new file with mode 0600.

    Raises:
        UsageError: the file already exists.
    """
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new(path, pem, 0o600)


def write_public_key(path: Path, key: PublicKey) -> None:
    """Write ``key`` as SubjectPublicKeyInfo PEM to a new file (mode 0644).

    Raises:
        UsageError: the file already exists.
    """
    _write_new(path, key.to_pem(), 0o644)


def _read(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_KEY_FILE:
        raise MalformedInput(f"key file is {size} bytes; too large", source=str(path))
    return path.read_bytes()


def load_signer(path: str | Path) -> PrivateKeySigner:
    """A signer for the PEM private key in ``path``.

    Raises:
        MalformedInput: not an unencrypted PEM private key of an accepted scheme.
        OSError: unreadable (mapped by the CLI).
    """
    path = Path(path)
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise MalformedInput(
            "not an unencrypted PEM private key", source=str(path), field="key"
        ) from None
    if not isinstance(
        key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    ):
        raise MalformedInput(f"unsupported key type {type(key).__name__}", source=str(path))
    try:
        return PrivateKeySigner(key)
    except UsageError as exc:
        raise MalformedInput(exc.message, source=str(path)) from None


def load_public_key(path: str | Path) -> PublicKey:
    """The public key in ``path`` (a PEM public key, or the public half of a PEM private key).

    Raises:
        MalformedInput: neither, or not an accepted scheme.
    """
    path = Path(path)
    data = _read(path)
    if b"PRIVATE KEY" in data:
        return load_signer(path).public_key
    try:
        return PublicKey.from_pem(data)
    except MalformedInput as exc:
        raise exc.with_source(str(path)) from None


# -- SGX enclave-signing keys (RSA-3072, e = 3) -------------------------------------------------


_FORCE_HINT = " (--force replaces it)"


def write_enclave_key(path: str | Path, key: rsa.RSAPrivateKey, *, force: bool = False) -> None:
    """Write an enclave-signing key as unencrypted PKCS#8 PEM, mode 0600.

    Raises:
        UsageError: the file exists and ``force`` is false.
    """
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new(Path(path), pem, 0o600, force=force, hint=_FORCE_HINT)


def write_enclave_public_key(
    path: str | Path, key: rsa.RSAPublicKey, *, force: bool = False
) -> None:
    """Write the public half of an enclave-signing key as SubjectPublicKeyInfo PEM, mode 0644.

    Raises:
        UsageError: the file exists and ``force`` is false.
    """
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(Path(path), pem, 0o644, force=force, hint=_FORCE_HINT)


def load_enclave_key(path: str | Path) -> rsa.RSAPrivateKey:
    """Load an RSA-3072, e = 3 private key from a PEM file.

    Raises:
        MalformedInput: not an unencrypted PEM private key, or not RSA (names the file).
        UsageError: not RSA-3072 with e = 3.
        OSError: unreadable (mapped by the CLI).
    """
    path = Path(path)
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise MalformedInput(
            f"not an unencrypted PEM private key ({exc})", source=str(path)
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise MalformedInput("the key is not an RSA key", source=str(path))
    check_signing_key(key.public_key())
    return key


def load_enclave_public_key(path: str | Path) -> rsa.RSAPublicKey:
    """Load an RSA-3072, e = 3 public key from a PEM file (a private key PEM also works).

    Raises:
        MalformedInput: neither a PEM public nor private key, or not RSA (names the file).
        UsageError: not RSA-3072 with e = 3.
        OSError: unreadable (mapped by the CLI).
    """
    path = Path(path)
    data = _read(path)
    key: object
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        try:
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise MalformedInput(
                f"not a PEM public or private key ({exc})", source=str(path)
            ) from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise MalformedInput("the key is not an RSA key", source=str(path))
    check_signing_key(key)
    return key
