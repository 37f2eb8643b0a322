"""Reading, signing and dating the owner's signed documents (roots, policies, mode documents)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import click

from sgxlaunch.cli._common import (
    about,
    info,
    read_input,
    utc_now,
    write_output,
)
from sgxlaunch.errors import MalformedInput, UsageError
from sgxlaunch.policy import _json
from sgxlaunch.policy.control import (
    MAX_MODE_ENVELOPE_SIZE,
    MODE_PAYLOAD_TYPE,
    ModeDocument,
)
from sgxlaunch.policy.envelope import MAX_ENVELOPE_SIZE, Envelope
from sgxlaunch.policy.model import POLICY_PAYLOAD_TYPE, LaunchPolicy
from sgxlaunch.policy.root import ROOT_PAYLOAD_TYPE, OwnerRoot
from sgxlaunch.policy.state import (
    check_envelope,
)
from sgxlaunch.store import (
    load_signer,
)

DEFAULT_ROOT_DAYS = 365
DEFAULT_POLICY_DAYS = 90
DEFAULT_MODE_DAYS = 7
"""A platform-mode document is meant to be installed soon after it is signed."""


class TimeParam(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """An RFC 3339 UTC time, ``2027-01-31T00:00:00Z``."""

    name = "TIME"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return _json.parse_time(str(value), "time")
        except MalformedInput:
            self.fail(f"{value!r}: expected an RFC 3339 UTC time like 2027-01-31T00:00:00Z")


EXPIRY_WARNING = timedelta(days=1)
"""Making or signing a document that expires sooner than this (or has expired) warns."""


def warn_expiry(what: str, expires: datetime, now: datetime | None = None) -> None:
    """Warn on stderr when ``what`` has already expired or expires within a day."""
    now = now or utc_now()
    when = _json.format_time(expires)
    if expires <= now:
        click.echo(
            f"sgxlaunch: warning: {what} has already EXPIRED (at {when}); "
            "no platform will accept it",
            err=True,
        )
    elif expires - now < EXPIRY_WARNING:
        click.echo(f"sgxlaunch: warning: {what} expires within a day (at {when})", err=True)


def expiry(expires: datetime | None, days: int | None, default_days: int, *, what: str) -> datetime:
    """The expiry of a new document ``what`` from --expires / --valid-days (warns when it is
    already past or less than a day away)."""
    if expires is not None and days is not None:
        raise UsageError("give --expires or --valid-days, not both")
    now = utc_now()
    value = (
        expires
        if expires is not None
        else now + timedelta(days=default_days if days is None else days)
    )
    warn_expiry(what, value, now)
    return value


def warn_payload_expiry(payload_type: str, payload: bytes, path: str) -> None:
    """Warn when the document about to be signed has expired or expires within a day."""
    with about(path):
        if payload_type == ROOT_PAYLOAD_TYPE:
            warn_expiry(f"{path}: the owner root", OwnerRoot.from_payload(payload).expires)
        elif payload_type == POLICY_PAYLOAD_TYPE:
            warn_expiry(f"{path}: the launch policy", LaunchPolicy.from_payload(payload).expires)
        elif payload_type == MODE_PAYLOAD_TYPE:
            document = ModeDocument.from_payload(payload)
            warn_expiry(f"{path}: the platform-mode document", document.expires)


def expiry_options(default_days: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = click.option(
            "--valid-days",
            type=click.IntRange(1, 36500),
            help=f"Expire this many days from now (default {default_days}).",
        )(fn)
        return click.option(
            "--expires", type=TimeParam(), help="Expire at this UTC time (2027-01-31T00:00:00Z)."
        )(fn)

    return decorate


def read_envelope(path: str, payload_type: str) -> Envelope:
    data = read_input(path, limit=MAX_ENVELOPE_SIZE)
    with about(path):
        return check_envelope(data, payload_type, max_size=MAX_ENVELOPE_SIZE)


def read_policy_file(path: str) -> tuple[LaunchPolicy, Envelope | None]:
    """A policy from a draft payload file or from a signed envelope (signatures not checked)."""
    data = read_input(path, limit=MAX_ENVELOPE_SIZE)
    with about(path):
        envelope = None
        if b'"payloadType"' in data:
            envelope = check_envelope(data, POLICY_PAYLOAD_TYPE, max_size=MAX_ENVELOPE_SIZE)
            data = envelope.payload
        return LaunchPolicy.from_payload(data), envelope


def read_root(path: str) -> tuple[OwnerRoot, Envelope]:
    envelope = read_envelope(path, ROOT_PAYLOAD_TYPE)
    with about(path):
        return OwnerRoot.from_payload(envelope.payload), envelope


def mode_line(document: ModeDocument) -> str:
    text = f"platform-mode version {document.version}: {document.mode}"
    if document.le_mrsigner is not None:
        text += f", launch enclave MRSIGNER {document.le_mrsigner.hex()}"
    if document.platform_id is not None:
        text += f", platform {document.platform_id.hex()}"
    return text + f", expires {_json.format_time(document.expires)}"


def read_mode_file(path: str) -> tuple[ModeDocument, Envelope | None]:
    """A mode document from a bare payload file or an envelope (signatures not checked)."""
    data = read_input(path, limit=MAX_MODE_ENVELOPE_SIZE)
    with about(path):
        envelope = None
        if b'"payloadType"' in data:
            envelope = check_envelope(data, MODE_PAYLOAD_TYPE, max_size=MAX_MODE_ENVELOPE_SIZE)
            data = envelope.payload
        return ModeDocument.from_payload(data), envelope


def mode_expiry_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option(
        "--valid-days",
        "--expires-in",
        "valid_days",
        type=click.IntRange(1, 36500),
        help=f"Expire this many days from now (default {DEFAULT_MODE_DAYS}).",
    )(fn)
    return click.option(
        "--expires", type=TimeParam(), help="Expire at this UTC time (2027-01-31T00:00:00Z)."
    )(fn)


_PAYLOAD_TYPE_PREFIX = "application/vnd.sgxlaunch."


def signed_result(
    output: str, envelope: Envelope, signed_with: Sequence[str], facts: dict[str, Any]
) -> dict[str, Any]:
    """The ``--json`` result of a command that signs a document: the envelope written
    (``output``), the document's ``type`` (its payload type without the vendor prefix and
    ``+json``: ``launch-policy``, ``owner-root``, ``platform-mode``, ``quote-appraisal``,
    ``recovery``), ``facts`` about it (version, expiry...), its ``digest`` (SHA-256 of the exact
    payload bytes the signatures cover: the digest installing it reports), the key ids that
    signed in this run (``signed_with``) and every key id now on the envelope (``signed_by``)."""
    kind = envelope.payload_type.removeprefix(_PAYLOAD_TYPE_PREFIX).removesuffix("+json")
    return (
        {"output": output, "type": kind}
        | facts
        | {
            "digest": hashlib.sha256(envelope.payload).hexdigest(),
            "signed_with": list(signed_with),
            "signed_by": [s.keyid for s in envelope.signatures],
        }
    )


def document_facts(payload_type: str, payload: bytes, path: str) -> dict[str, Any]:
    """The version and expiry of an owner root or launch policy payload, every field of a
    platform-mode payload (for :func:`signed_result`).

    Raises:
        MalformedInput: the payload is not a valid document of its type (naming ``path``).
    """
    with about(path):
        if payload_type == ROOT_PAYLOAD_TYPE:
            root = OwnerRoot.from_payload(payload)
            version, expires = root.version, root.expires
        elif payload_type == POLICY_PAYLOAD_TYPE:
            policy = LaunchPolicy.from_payload(payload)
            version, expires = policy.version, policy.expires
        else:  # what the mode document says, as `owner mode show` shows it
            facts = ModeDocument.from_payload(payload).describe()
            del facts["type"]
            return facts
    return {"version": version, "expires": _json.format_time(expires)}


def sign_envelope(
    path: str, keys: Sequence[str], out: str | None, *, force: bool = False
) -> dict[str, Any]:
    """Add the signatures of ``keys`` to the owner root, launch policy or platform-mode
    envelope ``path``; write it to ``out`` (or back to ``path``). Returns the ``--json``
    result (:func:`signed_result`)."""
    data = read_input(path, limit=MAX_ENVELOPE_SIZE)
    with about(path):
        envelope = Envelope.from_bytes(data)
    if envelope.payload_type not in (ROOT_PAYLOAD_TYPE, POLICY_PAYLOAD_TYPE, MODE_PAYLOAD_TYPE):
        raise UsageError(f"{path}: not an owner root, launch policy or platform-mode envelope")
    if envelope.payload_type == MODE_PAYLOAD_TYPE:
        with about(path):
            document = ModeDocument.from_payload(envelope.payload)
        info(f"signing {mode_line(document)}")
    warn_payload_expiry(envelope.payload_type, envelope.payload, path)
    facts = document_facts(envelope.payload_type, envelope.payload, path)
    signed_with = []
    for key_path in keys:
        signer = load_signer(key_path)
        envelope = envelope.signed_by(signer)
        signed_with.append(signer.public_key.keyid)
        info(f"signed with {signer.public_key.keyid}")
    target = out or path
    write_output(target, envelope.to_bytes(), force=force or out is None)
    return signed_result(target, envelope, signed_with, facts)
