"""The daemon's configuration: who may do what, and the bounds.

The file is JSON, kept beside the machine file (``<machine directory>/sgxlaunchd.json`` unless
``--config`` names another), never inside the home: the home is the attacker's to write, and
this file decides who is the owner. It must be a regular file owned by root, writable by nobody
else (no group or other write bit), at most 64 KiB. A missing file means the defaults: the
daemon's own uid is the only owner and nobody else may do anything.

Roles (each includes the next):

* ``owner`` — install a policy, switch the mode, set up the launch enclave: uids in
  ``owner_uids`` or processes whose groups meet ``owner_gids``;
* ``launch`` — run enclaves, mint tokens, make quotes: owners and the groups in
  ``enclave_gids`` (the group that may open ``/dev/sgx_enclave``);
* ``read`` — status, the log, the API document: the above and ``reader_gids``.

Everything else is refused (403) and recorded in the daemon's log.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sgxlaunch.errors import MalformedInput, UsageError

CONFIG_NAME = "sgxlaunchd.json"
MAX_CONFIG_BYTES = 64 << 10

OWNER, LAUNCH, READ = "owner", "launch", "read"
ROLES = (OWNER, LAUNCH, READ)


@dataclass(frozen=True, slots=True)
class Limits:
    """Every bound the daemon keeps (``limits`` in the file; all optional).

    Attributes:
        max_body_bytes: largest request body (413 past it, refused from Content-Length unread).
        max_header_bytes: largest request head (request line and headers).
        header_timeout_s: time from connection (or the previous response) to a complete head.
        body_timeout_s: time to receive a whole body once the head is in.
        max_connections: connections held at once (a new one past it gets 503 + Retry-After).
        owner_rate_per_minute: owner operations per uid per minute (429 + Retry-After past it).
        owner_burst: owner operations a uid may make at once before the rate applies.
        max_fds: file descriptors a client may pass on one connection (SCM_RIGHTS).
    """

    max_body_bytes: int = 32 << 20
    max_header_bytes: int = 16 << 10
    header_timeout_s: float = 5.0
    body_timeout_s: float = 30.0
    max_connections: int = 256
    owner_rate_per_minute: float = 60.0
    owner_burst: int = 10
    max_fds: int = 3


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """Who may do what (see the module docstring), the socket's group and the bounds."""

    owner_uids: frozenset[int]
    owner_gids: frozenset[int] = frozenset()
    enclave_gids: frozenset[int] = frozenset()
    reader_gids: frozenset[int] = frozenset()
    socket_gid: int | None = None
    limits: Limits = field(default_factory=Limits)
    source: str = "(defaults)"

    @classmethod
    def defaults(cls) -> ServiceConfig:
        """No file: the daemon's own uid is the owner; nobody else is allowed anything."""
        return cls(owner_uids=frozenset({os.geteuid()}))

    def roles(self, uid: int, gids: frozenset[int]) -> frozenset[str]:
        """The roles of a caller with ``uid`` and (primary and supplementary) ``gids``."""
        roles: set[str] = set()
        if uid in self.owner_uids or gids & self.owner_gids:
            roles.update(ROLES)
        if gids & self.enclave_gids:
            roles.update((LAUNCH, READ))
        if gids & self.reader_gids:
            roles.add(READ)
        return frozenset(roles)

    def describe_role(self, role: str) -> str:
        """Who holds ``role``, in words (for the 403 message)."""
        owners = f"owner uids {sorted(self.owner_uids)} or gids {sorted(self.owner_gids)}"
        if role == OWNER:
            return owners
        if role == LAUNCH:
            return f"{owners}, or enclave gids {sorted(self.enclave_gids)}"
        return (
            f"{owners}, enclave gids {sorted(self.enclave_gids)} or reader gids "
            f"{sorted(self.reader_gids)}"
        )

    def with_limits(self, **changes: Any) -> ServiceConfig:
        return replace(self, limits=replace(self.limits, **changes))


def default_config_path(machine: Path) -> Path:
    """``sgxlaunchd.json`` beside the machine file."""
    return machine.parent / CONFIG_NAME


def load_config(path: Path, *, home: Path | None = None, required: bool = False) -> ServiceConfig:
    """Read and check the configuration file (see the module docstring).

    Raises:
        UsageError: the file is inside the home, is not a regular file, is not owned by root,
            is writable by group or others, or is missing while ``required``.
        MalformedInput: naming the file and the field: not the JSON object described in
            ``docs/service.md``.
    """
    if home is not None and path.resolve().is_relative_to(home.resolve()):
        raise UsageError(
            f"{path}: the daemon's configuration must not live in the home ({home}), which is "
            "the attacker's to write"
        )
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        if required:
            raise UsageError(f"{path}: no daemon configuration here") from None
        return ServiceConfig.defaults()
    except OSError as exc:
        raise UsageError(f"{path}: cannot open the daemon configuration ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{path}: the daemon configuration is not a regular file")
        if info.st_uid != 0:
            raise UsageError(
                f"{path}: the daemon configuration must be owned by root (it is uid {info.st_uid})"
            )
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UsageError(
                f"{path}: the daemon configuration must not be writable by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o})"
            )
        data = os.read(fd, MAX_CONFIG_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise MalformedInput(f"larger than {MAX_CONFIG_BYTES} bytes", source=str(path))
    return parse_config(data, source=str(path))


_TOP = {"owner_uids", "owner_gids", "enclave_gids", "reader_gids", "socket_gid", "limits"}


def _ids(value: Any, name: str, source: str) -> frozenset[int]:
    if not isinstance(value, list) or not all(type(v) is int and 0 <= v < 1 << 32 for v in value):
        raise MalformedInput("expected a list of numeric ids", field=name, source=source)
    return frozenset(value)


def parse_config(data: bytes, *, source: str) -> ServiceConfig:
    """Parse the configuration document.

    Raises:
        MalformedInput: naming ``source`` and the field.
    """
    try:
        value = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise MalformedInput(f"not JSON ({exc})", source=source) from None
    if not isinstance(value, dict):
        raise MalformedInput("expected a JSON object", source=source)
    unknown = sorted(set(value) - _TOP)
    if unknown:
        raise MalformedInput(
            f"unknown field {unknown[0]!r} (expected {sorted(_TOP)})",
            field=unknown[0],
            source=source,
        )
    if "owner_uids" not in value:
        raise MalformedInput("owner_uids is required", field="owner_uids", source=source)
    socket_gid = value.get("socket_gid")
    if socket_gid is not None and (type(socket_gid) is not int or not 0 <= socket_gid < 1 << 32):
        raise MalformedInput("expected a numeric gid or null", field="socket_gid", source=source)
    limits = Limits()
    raw_limits = value.get("limits", {})
    if not isinstance(raw_limits, dict):
        raise MalformedInput("expected an object", field="limits", source=source)
    changes: dict[str, Any] = {}
    for name, given in raw_limits.items():
        if name not in Limits.__dataclass_fields__:
            raise MalformedInput(f"unknown limit {name!r}", field=f"limits.{name}", source=source)
        default = getattr(limits, name)
        number_ok = (
            type(given) in (int, float) if isinstance(default, float) else type(given) is int
        )
        if not number_ok or given <= 0:
            raise MalformedInput(
                f"expected a positive {type(default).__name__}",
                field=f"limits.{name}",
                source=source,
            )
        changes[name] = type(default)(given)
    return ServiceConfig(
        owner_uids=_ids(value["owner_uids"], "owner_uids", source),
        owner_gids=_ids(value.get("owner_gids", []), "owner_gids", source),
        enclave_gids=_ids(value.get("enclave_gids", []), "enclave_gids", source),
        reader_gids=_ids(value.get("reader_gids", []), "reader_gids", source),
        socket_gid=socket_gid,
        limits=replace(limits, **changes),
        source=source,
    )


__all__ = [
    "CONFIG_NAME",
    "LAUNCH",
    "OWNER",
    "READ",
    "Limits",
    "ServiceConfig",
    "default_config_path",
    "load_config",
    "parse_config",
]
