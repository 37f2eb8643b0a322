"""Owner and launch-policy commands: ``sgxlaunch owner …`` and ``sgxlaunch policy …``.

Thin: read files, call :mod:`sgxlaunch.policy` (the sans-IO core) and :mod:`sgxlaunch.store`
(the SQLite state under ``--home``), print, map errors to exit codes (0 ok, 1 refused or
denied, 2 usage or malformed input). See ``docs/policy.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click

from sgxlaunch.arch import Sigstruct
from sgxlaunch.cli._common import (
    HexBytesParam,
    IntParam,
    echo_json,
    handle_errors,
    home_option,
    json_option,
    read_input,
    signing_keys_option,
    utc_now,
    write_output,
)
from sgxlaunch.errors import MalformedInput, UsageError, VerificationFailed
from sgxlaunch.policy import _json
from sgxlaunch.policy.control import (
    MAX_MODE_ENVELOPE_SIZE,
    MODE_PAYLOAD_TYPE,
    MODES,
    ModeDocument,
)
from sgxlaunch.policy.envelope import MAX_ENVELOPE_SIZE, Envelope, sign_payload
from sgxlaunch.policy.evaluate import EnclaveIdentity, PolicyIndex
from sgxlaunch.policy.keys import ED25519, SCHEMES, PrivateKeySigner, PublicKey
from sgxlaunch.policy.model import POLICY_PAYLOAD_TYPE, LaunchPolicy
from sgxlaunch.policy.root import ROOT_PAYLOAD_TYPE, OwnerRoot
from sgxlaunch.policy.state import (
    TrustedState,
    check_envelope,
    check_not_expired,
    check_signatures,
    install_policy,
    install_root,
    load_state,
)
from sgxlaunch.store import (
    generate_private_key,
    load_public_key,
    load_signer,
    open_store,
    resolve_home,
    write_private_key,
    write_public_key,
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


class SvnRangeParam(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """``N`` (exactly), ``MIN..MAX`` or ``MIN..`` (up to 65535)."""

    name = "MIN..MAX"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        text = str(value)
        low_text, sep, high_text = text.partition("..")
        number = IntParam(16)
        low = number.convert(low_text, param, ctx)
        high = number.convert(high_text, param, ctx) if high_text else (0xFFFF if sep else low)
        if low > high:
            self.fail(f"{text!r}: MIN is above MAX", param, ctx)
        return (low, high)


def _expiry(expires: datetime | None, days: int | None, default_days: int) -> datetime:
    if expires is not None and days is not None:
        raise UsageError("give --expires or --valid-days, not both")
    if expires is not None:
        return expires
    return utc_now() + timedelta(days=default_days if days is None else days)


def _expiry_options(default_days: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
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


@contextlib.contextmanager
def _about(path: str) -> Iterator[None]:
    """Name ``path`` in any malformed-input or verification error raised inside."""
    try:
        yield
    except MalformedInput as exc:
        raise exc.with_source(path) from None
    except VerificationFailed as exc:
        exc.message = f"{path}: {exc.message}"
        raise


def _read_envelope(path: str, payload_type: str) -> Envelope:
    data = read_input(path, limit=MAX_ENVELOPE_SIZE)
    try:
        return check_envelope(data, payload_type, max_size=MAX_ENVELOPE_SIZE)
    except MalformedInput as exc:
        raise exc.with_source(path) from None


def _read_policy_file(path: str) -> tuple[LaunchPolicy, Envelope | None]:
    """A policy from a draft payload file or from a signed envelope (signatures not checked)."""
    data = read_input(path, limit=MAX_ENVELOPE_SIZE)
    try:
        envelope = None
        if b'"payloadType"' in data:
            envelope = check_envelope(data, POLICY_PAYLOAD_TYPE, max_size=MAX_ENVELOPE_SIZE)
            data = envelope.payload
        return LaunchPolicy.from_payload(data), envelope
    except MalformedInput as exc:
        raise exc.with_source(path) from None


def _read_root(path: str) -> tuple[OwnerRoot, Envelope]:
    envelope = _read_envelope(path, ROOT_PAYLOAD_TYPE)
    try:
        return OwnerRoot.from_payload(envelope.payload), envelope
    except MalformedInput as exc:
        raise exc.with_source(path) from None


def _read_sigstruct(path: str) -> Sigstruct:
    data = read_input(path)
    try:
        return Sigstruct.from_bytes(data)
    except MalformedInput as exc:
        raise exc.with_source(path) from None


def _keys_for(
    count: int | None, key_dir: str | None, scheme: str, public_keys: Sequence[str]
) -> tuple[list[PublicKey], list[PrivateKeySigner]]:
    """Public keys from files, plus ``count`` freshly generated keys written to ``key_dir``."""
    keys = [load_public_key(p) for p in public_keys]
    signers: list[PrivateKeySigner] = []
    if count:
        if key_dir is None:
            raise UsageError("--keys needs --key-dir, where the new private keys are written")
        directory = Path(key_dir)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for _ in range(count):
            signer = PrivateKeySigner(generate_private_key(scheme))
            stem = f"owner-{signer.public_key.keyid[:16]}"
            write_private_key(directory / f"{stem}.key.pem", signer.private_key)
            write_public_key(directory / f"{stem}.pub.pem", signer.public_key)
            click.echo(f"wrote {directory / stem}.key.pem (0600) and .pub.pem", err=True)
            signers.append(signer)
            keys.append(signer.public_key)
    if not keys:
        raise UsageError("no keys: give --keys N with --key-dir, or --public-key FILE")
    return keys, signers


def _print_root(root: OwnerRoot, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    info = root.describe() | (extra or {})
    if as_json:
        echo_json(info)
        return
    click.echo(f"owner root version {root.version}, expires {info['expires']}")
    click.echo(f"threshold {root.threshold} of {len(root.keys)}")
    for key in root.keys.values():
        click.echo(f"  {key.keyid}  {key.scheme}")
    for name, value in (extra or {}).items():
        click.echo(f"{name}: {value}")


def _sign_envelope(path: str, keys: Sequence[str], out: str | None) -> Envelope:
    data = read_input(path, limit=MAX_ENVELOPE_SIZE)
    try:
        envelope = Envelope.from_bytes(data)
    except MalformedInput as exc:
        raise exc.with_source(path) from None
    if envelope.payload_type not in (ROOT_PAYLOAD_TYPE, POLICY_PAYLOAD_TYPE, MODE_PAYLOAD_TYPE):
        raise UsageError(f"{path}: not an owner root, launch policy or platform-mode envelope")
    if envelope.payload_type == MODE_PAYLOAD_TYPE:
        try:
            document = ModeDocument.from_payload(envelope.payload)
        except MalformedInput as exc:
            raise exc.with_source(path) from None
        click.echo(f"signing {_mode_line(document)}", err=True)
    for key_path in keys:
        signer = load_signer(key_path)
        envelope = envelope.signed_by(signer)
        click.echo(f"signed with {signer.public_key.keyid}", err=True)
    write_output(out or path, envelope.to_bytes(), force=out is None)
    return envelope


# --- owner -------------------------------------------------------------------------------------


def _register_owner(main: click.Group) -> None:
    @main.group("owner")
    def owner_group() -> None:
        """The platform owner's root: k-of-n policy-signing keys, versioned and expiring.

        \b
        Typical flow (two admins of three must agree):
          sgxlaunch owner init --keys 3 --threshold 2 --key-dir keys/ --out root.json
          sgxlaunch owner install root.json
          sgxlaunch owner show root.json

        Launch-control mode switches are owner-signed too: see `sgxlaunch owner mode`.
        """

    @owner_group.command("init")
    @click.option(
        "--out", required=True, type=click.Path(dir_okay=False), help="Root envelope to write."
    )
    @click.option("--threshold", required=True, type=click.IntRange(1, 32), help="K of N.")
    @click.option("--keys", "count", type=click.IntRange(1, 32), help="Generate N new keys.")
    @click.option(
        "--key-dir", type=click.Path(file_okay=False), help="Where generated keys are written."
    )
    @click.option(
        "--scheme",
        type=click.Choice(SCHEMES),
        default=ED25519,
        show_default=True,
        help="Scheme of generated keys.",
    )
    @click.option(
        "--public-key",
        "public_keys",
        multiple=True,
        type=click.Path(exists=True, dir_okay=False),
        help="Include an existing public key (PEM); repeatable.",
    )
    @_expiry_options(DEFAULT_ROOT_DAYS)
    @click.option("--force", is_flag=True, help="Overwrite OUT.")
    @json_option
    @handle_errors
    def owner_init(
        out: str,
        threshold: int,
        count: int | None,
        key_dir: str | None,
        scheme: str,
        public_keys: tuple[str, ...],
        expires: datetime | None,
        valid_days: int | None,
        force: bool,
        as_json: bool,
    ) -> None:
        """Create the first owner root (version 1).

        Generated keys sign the new root straight away; roots listing only --public-key keys
        come out unsigned, for their holders to sign with `sgxlaunch owner sign`.

        \b
        Examples:
          sgxlaunch owner init --keys 3 --threshold 2 --key-dir keys/ --out root.json
          sgxlaunch owner init --public-key alice.pub.pem --public-key bob.pub.pem \\
              --threshold 2 --valid-days 730 --out root.json
          sgxlaunch owner sign root.json --key alice.key.pem   # each holder, in turn
        """
        keys, signers = _keys_for(count, key_dir, scheme, public_keys)
        root = OwnerRoot.create(
            version=1,
            expires=_expiry(expires, valid_days, DEFAULT_ROOT_DAYS),
            threshold=threshold,
            keys=keys,
        )
        envelope = sign_payload(ROOT_PAYLOAD_TYPE, root.to_payload(), signers)
        write_output(out, envelope.to_bytes(), force=force)
        _print_root(root, as_json, {"signatures": len(envelope.signatures)})

    @owner_group.command("rotate")
    @click.argument("current", type=click.Path(exists=True, dir_okay=False))
    @click.option(
        "--out", required=True, type=click.Path(dir_okay=False), help="New root envelope."
    )
    @click.option("--threshold", type=click.IntRange(1, 32), help="New K (default: unchanged).")
    @click.option("--keys", "count", type=click.IntRange(1, 32), help="Generate N new keys.")
    @click.option("--key-dir", type=click.Path(file_okay=False), help="Where new keys go.")
    @click.option("--scheme", type=click.Choice(SCHEMES), default=ED25519, show_default=True)
    @click.option(
        "--public-key",
        "public_keys",
        multiple=True,
        type=click.Path(exists=True, dir_okay=False),
        help="Include this public key (PEM); repeatable.",
    )
    @click.option(
        "--keep",
        "keep",
        multiple=True,
        metavar="KEYID",
        help="Keep this key of the current root (a key id or a unique prefix); repeatable.",
    )
    @click.option("--keep-all", is_flag=True, help="Keep every key of the current root.")
    @_expiry_options(DEFAULT_ROOT_DAYS)
    @click.option("--force", is_flag=True, help="Overwrite OUT.")
    @json_option
    @handle_errors
    def owner_rotate(
        current: str,
        out: str,
        threshold: int | None,
        count: int | None,
        key_dir: str | None,
        scheme: str,
        public_keys: tuple[str, ...],
        keep: tuple[str, ...],
        keep_all: bool,
        expires: datetime | None,
        valid_days: int | None,
        force: bool,
        as_json: bool,
    ) -> None:
        """Write the next owner root (version + 1) from CURRENT.

        The new root must be signed by K keys of the CURRENT root and by K keys of the new
        root itself before `owner install` accepts it; newly generated keys sign at once,
        the others add signatures with `sgxlaunch owner sign`.

        \b
        Example (replace a lost key, keep the other two, stay 2-of-3):
          sgxlaunch owner rotate root.json --keep 1f2e… --keep 9a0b… \\
              --keys 1 --key-dir keys/ --out root-v2.json
          sgxlaunch owner sign root-v2.json --key keys/owner-1f2e….key.pem
          sgxlaunch owner sign root-v2.json --key keys/owner-9a0b….key.pem
          sgxlaunch owner install root-v2.json
        """
        old, _ = _read_root(current)
        kept: list[PublicKey] = list(old.keys.values()) if keep_all else []
        for prefix in keep:
            matches = [k for k in old.keys.values() if k.keyid.startswith(prefix.lower())]
            if len(matches) != 1:
                raise UsageError(f"--keep {prefix}: matches {len(matches)} keys of {current}")
            if matches[0] not in kept:
                kept.append(matches[0])
        keys, signers = _keys_for(count, key_dir, scheme, public_keys)
        all_keys = kept + [k for k in keys if k.keyid not in {c.keyid for c in kept}]
        root = OwnerRoot.create(
            version=old.version + 1,
            expires=_expiry(expires, valid_days, DEFAULT_ROOT_DAYS),
            threshold=old.threshold if threshold is None else threshold,
            keys=all_keys,
        )
        envelope = sign_payload(ROOT_PAYLOAD_TYPE, root.to_payload(), signers)
        write_output(out, envelope.to_bytes(), force=force)
        _print_root(root, as_json, {"signatures": len(envelope.signatures)})
        click.echo(
            f"needs {old.threshold} signatures by keys of version {old.version} and "
            f"{root.threshold} by keys of version {root.version}",
            err=True,
        )

    @owner_group.command("sign")
    @click.argument("envelope", type=click.Path(exists=True, dir_okay=False))
    @signing_keys_option()
    @click.option("--out", type=click.Path(dir_okay=False), help="Write here, not in place.")
    @handle_errors
    def owner_sign(envelope: str, keys: tuple[str, ...], out: str | None) -> None:
        """Add signatures to a root, policy or platform-mode ENVELOPE, in place unless --out.

        \b
        Example:
          sgxlaunch owner sign root-v2.json --key keys/owner-1f2e….key.pem
        """
        _sign_envelope(envelope, keys, out)

    @owner_group.command("show")
    @click.argument("root", type=click.Path(exists=True, dir_okay=False), required=False)
    @home_option
    @json_option
    @handle_errors
    def owner_show(root: str | None, home: str | None, as_json: bool) -> None:
        """Show a ROOT envelope (and who signed it), or the installed root, policy, mode.

        \b
        Examples:
          sgxlaunch owner show root.json --json
          sgxlaunch owner show --home /var/lib/sgxlaunch
        """
        if root is not None:
            parsed, envelope = _read_root(root)
            signed = [s.keyid for s in envelope.signatures]
            _print_root(parsed, as_json, {"signed_by": signed})
            return
        with open_store(resolve_home(home), create=False) as store:
            state = load_state(store)
        if as_json:
            echo_json(state.describe())
            return
        _print_root(state.root, False)
        info = state.describe()["policy"]
        if info is None:
            click.echo("no launch policy installed")
        else:
            click.echo(
                f"launch policy version {info['version']}, expires {info['expires']}, "
                f"{info['allow_rules']} allow / {info['deny_rules']} deny rules"
                + ("" if info["in_force"] else " (NOT in force: signed under an earlier root)")
            )
        if state.mode is None:
            click.echo("no platform-mode document installed")
        else:
            click.echo(
                _mode_line(state.mode)
                + ("" if state.mode_in_force else " (NOT in force: signed under an earlier root)")
            )

    @owner_group.command("install")
    @click.argument("root", type=click.Path(exists=True, dir_okay=False))
    @home_option
    @json_option
    @handle_errors
    def owner_install(root: str, home: str | None, as_json: bool) -> None:
        """Trust ROOT: the first root (self-signed by K of its keys) or a rotation.

        A rotation needs K signatures by the installed root's keys and K by the new root's
        keys, a higher version, and a future expiry. Nothing is written unless every check
        passes.

        \b
        Example:
          sgxlaunch owner install root.json --home /var/lib/sgxlaunch
        """
        data = read_input(root)
        with open_store(resolve_home(home)) as store, _about(root):
            state, update = install_root(store, data, utc_now())
        if as_json:
            echo_json(
                {"installed": bool(update.changes), "summary": update.summary} | state.describe()
            )
        else:
            click.echo(update.summary)

    _register_mode(owner_group)


# --- owner mode (platform-control documents) ----------------------------------------------------


def _mode_line(document: ModeDocument) -> str:
    text = f"platform-mode version {document.version}: {document.mode}"
    if document.le_mrsigner is not None:
        text += f", launch enclave MRSIGNER {document.le_mrsigner.hex()}"
    if document.platform_id is not None:
        text += f", platform {document.platform_id.hex()}"
    return text + f", expires {_json.format_time(document.expires)}"


def _read_mode_file(path: str) -> tuple[ModeDocument, Envelope | None]:
    """A mode document from a bare payload file or an envelope (signatures not checked)."""
    data = read_input(path, limit=MAX_MODE_ENVELOPE_SIZE)
    try:
        envelope = None
        if b'"payloadType"' in data:
            envelope = check_envelope(data, MODE_PAYLOAD_TYPE, max_size=MAX_MODE_ENVELOPE_SIZE)
            data = envelope.payload
        return ModeDocument.from_payload(data), envelope
    except MalformedInput as exc:
        raise exc.with_source(path) from None


def _mode_expiry_options(fn: Callable[..., Any]) -> Callable[..., Any]:
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


def _register_mode(owner_group: click.Group) -> None:
    @owner_group.group("mode")
    def mode_group() -> None:
        """Owner-signed platform-control documents: launch-control mode and LE signer.

        Switching the platform to `owner` launch control, back to `permissive`, or to a new
        launch-enclave signer takes a document signed by K of the owner root's keys; the
        platform installs it with `sgxlaunch platform mode FILE`.

        \b
        Typical flow (two admins of three must agree):
          sgxlaunch owner mode new --mode owner --le-mrsigner 5e1f… --version 1 -o mode.json
          sgxlaunch owner mode sign mode.json --key keys/a.key.pem
          sgxlaunch owner mode sign mode.json --key keys/b.key.pem
          sgxlaunch owner mode verify mode.json
        """

    @mode_group.command("new")
    @click.option(
        "--mode", "mode", required=True, type=click.Choice(MODES), help="Launch-control mode."
    )
    @click.option(
        "--le-mrsigner",
        type=HexBytesParam(32),
        help="MRSIGNER of the owner's launch enclave (owner mode; 64 hex digits).",
    )
    @click.option(
        "--le-sigstruct",
        type=click.Path(exists=True, dir_okay=False),
        help="Take --le-mrsigner from the launch enclave's SIGSTRUCT.",
    )
    @click.option(
        "--version",
        "version",
        required=True,
        type=click.IntRange(1, (1 << 63) - 1),
        help="Document version: above the installed mode document's.",
    )
    @_mode_expiry_options
    @click.option(
        "--platform-id", type=HexBytesParam(32), help="Bind the document to this platform."
    )
    @click.option(
        "-o", "--out", required=True, type=click.Path(dir_okay=False), help="Envelope to write."
    )
    @signing_keys_option(
        required=False, help="Sign at once with this private key (PEM); repeatable."
    )
    @click.option("--force", is_flag=True, help="Overwrite OUT.")
    @json_option
    @handle_errors
    def mode_new(
        mode: str,
        le_mrsigner: bytes | None,
        le_sigstruct: str | None,
        version: int,
        expires: datetime | None,
        valid_days: int | None,
        platform_id: bytes | None,
        out: str,
        keys: tuple[str, ...],
        force: bool,
        as_json: bool,
    ) -> None:
        """Write a platform-mode envelope OUT (unsigned unless --key is given).

        Each key holder then adds a signature with `sgxlaunch owner mode sign OUT --key …`
        (or `sgxlaunch owner sign`). The document can be installed until it expires
        (default: in 7 days); once installed, the mode stays in force.

        \b
        Examples:
          sgxlaunch owner mode new --mode owner --le-sigstruct le.sig --version 1 -o mode.json
          sgxlaunch owner mode new --mode permissive --version 2 --expires-in 1 \\
              --platform-id 3c9a… -o back.json
        """
        if le_sigstruct is not None:
            if le_mrsigner is not None:
                raise UsageError("give --le-mrsigner or --le-sigstruct, not both")
            le_mrsigner = EnclaveIdentity.from_sigstruct(_read_sigstruct(le_sigstruct)).mrsigner
        document = ModeDocument.create(
            version=version,
            expires=_expiry(expires, valid_days, DEFAULT_MODE_DAYS),
            mode=mode,
            le_mrsigner=le_mrsigner,
            platform_id=platform_id,
        )
        signers = [load_signer(k) for k in keys]
        envelope = sign_payload(MODE_PAYLOAD_TYPE, document.to_payload(), signers)
        write_output(out, envelope.to_bytes(), force=force)
        click.echo(f"wrote {out}: {_mode_line(document)}", err=True)
        for signer in signers:
            click.echo(f"signed with {signer.public_key.keyid}", err=True)
        if as_json:
            echo_json(document.describe() | {"signed_by": [s.keyid for s in envelope.signatures]})

    @mode_group.command("sign")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False))
    @signing_keys_option()
    @click.option(
        "--out",
        type=click.Path(dir_okay=False),
        help="Write here, not in place (required when FILE is a bare document).",
    )
    @click.option("--force", is_flag=True, help="Overwrite OUT.")
    @handle_errors
    def mode_sign(file: str, keys: tuple[str, ...], out: str | None, force: bool) -> None:
        """Add signatures to a platform-mode envelope FILE (in place unless --out).

        FILE may also be a bare mode document; then --out names the envelope. The signature
        covers the document's exact bytes; check what you sign (printed on stderr).

        \b
        Examples:
          sgxlaunch owner mode sign mode.json --key keys/a.key.pem
          sgxlaunch owner mode sign mode.json --key keys/b.key.pem --key keys/c.key.pem
        """
        document, envelope = _read_mode_file(file)
        if envelope is None:
            if out is None:
                raise UsageError(
                    f"{file} is a bare mode document: say where the envelope goes (--out)"
                )
            envelope = Envelope(MODE_PAYLOAD_TYPE, read_input(file, limit=MAX_MODE_ENVELOPE_SIZE))
        click.echo(f"signing {_mode_line(document)}", err=True)
        for key_path in keys:
            signer = load_signer(key_path)
            envelope = envelope.signed_by(signer)
            click.echo(f"signed with {signer.public_key.keyid}", err=True)
        target = out or file
        write_output(target, envelope.to_bytes(), force=force or out is None)

    @mode_group.command("show")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False), required=False)
    @home_option
    @json_option
    @handle_errors
    def mode_show(file: str | None, home: str | None, as_json: bool) -> None:
        """Show a platform-mode FILE (signatures listed, not checked), or the installed one.

        \b
        Examples:
          sgxlaunch owner mode show mode.json --json
          sgxlaunch owner mode show --home /var/lib/sgxlaunch
        """
        if file is not None:
            document, envelope = _read_mode_file(file)
            signed = [] if envelope is None else [s.keyid for s in envelope.signatures]
            if as_json:
                echo_json(document.describe() | {"signed_by": signed})
                return
            click.echo(_mode_line(document))
            click.echo(f"signed by {len(signed)} key(s):")
            for keyid in signed:
                click.echo(f"  {keyid}")
            return
        with open_store(resolve_home(home), create=False) as store:
            state = load_state(store)
        info = state.describe()["mode"]
        if as_json:
            echo_json({"mode": info})
        elif state.mode is None:
            click.echo("no platform-mode document installed")
        else:
            click.echo(
                _mode_line(state.mode)
                + ("" if state.mode_in_force else " (NOT in force: signed under an earlier root)")
            )

    @mode_group.command("verify")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False))
    @click.option(
        "--root",
        type=click.Path(exists=True, dir_okay=False),
        help="Verify against this root envelope instead of the installed state.",
    )
    @click.option(
        "--platform-id",
        type=HexBytesParam(32),
        help="The platform's id (needed when the document is bound to one).",
    )
    @home_option
    @json_option
    @handle_errors
    def mode_verify(
        file: str, root: str | None, platform_id: bytes | None, home: str | None, as_json: bool
    ) -> None:
        """Check a signed platform-mode FILE as installing it would, without installing it.

        Against the installed state (--home): K distinct keys of the installed root signed
        it, it has not expired, its platform binding (if any) names --platform-id, and its
        version is above the installed mode document's. Against --root (self-signed by K of
        its keys): the same but the version. Exit 0 if acceptable, 1 naming the failed check,
        2 if malformed or used wrongly.

        \b
        Examples:
          sgxlaunch owner mode verify mode.json
          sgxlaunch owner mode verify mode.json --root root.json --platform-id 3c9a… --json
        """
        data = read_input(file, limit=MAX_MODE_ENVELOPE_SIZE)
        now = utc_now()
        with _about(file):
            if root is not None:
                root_data = read_input(root)
                with _about(root):
                    state, _ = TrustedState.bootstrap(root_data, now)
                checks = ["threshold", "expiry", "platform_id"]
            else:
                with open_store(resolve_home(home), create=False) as store:
                    state = load_state(store)
                checks = ["threshold", "expiry", "platform_id", "version"]
            document = state.verify_mode(data, now, platform_id=platform_id)
        envelope = Envelope.from_bytes(data)
        installed = state.mode_digest is not None and hmac.compare_digest(
            state.mode_digest, hashlib.sha256(envelope.payload).digest()
        )
        if as_json:
            echo_json(
                {"valid": True, "checks": checks, "already_installed": installed}
                | document.describe()
            )
        else:
            note = " (already installed)" if installed else ""
            click.echo(f"OK: {_mode_line(document)}: {', '.join(checks)} verified{note}")


# --- policy ------------------------------------------------------------------------------------


def _identity_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--id", "rule_id", required=True, help="Rule id (A-Z a-z 0-9 . _ : -)."),
        click.option("--mrsigner", type=HexBytesParam(32), help="MRSIGNER (64 hex digits)."),
        click.option("--mrenclave", type=HexBytesParam(32), help="MRENCLAVE (64 hex digits)."),
        click.option("--isvprodid", type=IntParam(16), help="ISVPRODID."),
        click.option("--isvsvn", type=SvnRangeParam(), help="ISVSVN: N, MIN..MAX or MIN.."),
        click.option("--isvfamilyid", type=HexBytesParam(16), help="ISVFAMILYID (32 hex)."),
        click.option("--isvextprodid", type=HexBytesParam(16), help="ISVEXTPRODID (32 hex)."),
        click.option(
            "--sigstruct",
            type=click.Path(exists=True, dir_okay=False),
            help="Take the --match fields from this SIGSTRUCT.",
        ),
        click.option(
            "--match",
            default="mrsigner,isvprodid",
            show_default=True,
            help="With --sigstruct: comma-separated fields to take from it "
            "(mrsigner, mrenclave, isvprodid, isvsvn (as MIN..), isvfamilyid, isvextprodid).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


_MATCHABLE = ("mrsigner", "mrenclave", "isvprodid", "isvsvn", "isvfamilyid", "isvextprodid")


def _rule_doc(
    rule_id: str, given: dict[str, Any], sigstruct: str | None, match: str
) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": rule_id}
    if sigstruct is not None:
        identity = EnclaveIdentity.from_sigstruct(_read_sigstruct(sigstruct))
        for name in (m.strip() for m in match.split(",") if m.strip()):
            if name not in _MATCHABLE:
                raise UsageError(f"--match: unknown field {name!r}")
            value = getattr(identity, name)
            doc[name] = (value, 0xFFFF) if name == "isvsvn" else value
    for name in _MATCHABLE:
        if given.get(name) is not None:
            doc[name] = given[name]
    for name in ("mrsigner", "mrenclave", "isvfamilyid", "isvextprodid"):
        if name in doc:
            doc[name] = doc[name].hex()
    if "isvsvn" in doc:
        doc["isvsvn"] = {"min": doc["isvsvn"][0], "max": doc["isvsvn"][1]}
    return doc


def _add_rule(path: str, doc: dict[str, Any], effect: str) -> None:
    policy, envelope = _read_policy_file(path)
    if envelope is not None:
        raise UsageError(f"{path}: is a signed envelope; edit the policy document instead")
    policy = policy.with_rule(doc, effect)
    write_output(path, policy.to_payload(), force=True)
    click.echo(f"{path}: {effect} rule {doc['id']} added", err=True)


def _print_decision(decision: Any, identity: EnclaveIdentity, as_json: bool) -> None:
    if as_json:
        echo_json(decision.describe() | {"enclave": identity.describe()})
        return
    if decision.allowed:
        click.echo(f"ALLOWED by rule {decision.rule} (policy version {decision.policy_version})")
        return
    head = f"DENIED by rule {decision.rule}" if decision.rule else "DENIED: no rule allows it"
    click.echo(f"{head} (policy version {decision.policy_version})")
    for reason in decision.reasons:
        click.echo(f"  {reason}")


def _rule_field_text(name: str, value: Any) -> str:
    if name == "isvsvn":
        return f"isvsvn={value['min']}..{value['max']}"
    if name == "id":
        return ""
    if isinstance(value, bool):
        return name
    if name.endswith("_mask"):
        return f"{name}=0x{value:x}"
    return f"{name}={value}"


def _register_policy(main: click.Group) -> None:
    @main.group("policy")
    def policy_group() -> None:
        """Write, sign, verify, install and explain the owner's launch policy.

        \b
        Typical flow:
          sgxlaunch policy new policy.json --valid-days 90
          sgxlaunch policy allow policy.json --id acme --sigstruct acme.sig --isvsvn 3..
          sgxlaunch policy deny policy.json --id acme-cve --sigstruct acme.sig --isvsvn 0..2
          sgxlaunch policy sign policy.json --key keys/a.key.pem --key keys/b.key.pem \\
              --out policy.dsse.json
          sgxlaunch policy install policy.dsse.json
          sgxlaunch policy explain other.sig
        """

    @policy_group.command("new")
    @click.argument("out", type=click.Path(dir_okay=False))
    @click.option(
        "--version",
        "version",
        type=click.IntRange(1, (1 << 63) - 1),
        help="Policy version (default 1, or FROM's version + 1).",
    )
    @click.option(
        "--from",
        "source",
        type=click.Path(exists=True, dir_okay=False),
        help="Start from the rules of this policy (document or envelope).",
    )
    @_expiry_options(DEFAULT_POLICY_DAYS)
    @click.option("--force", is_flag=True, help="Overwrite OUT.")
    @handle_errors
    def policy_new(
        out: str,
        version: int | None,
        source: str | None,
        expires: datetime | None,
        valid_days: int | None,
        force: bool,
    ) -> None:
        """Write a new (unsigned) policy document OUT with no rules, or FROM's rules.

        An empty allow list denies every launch. Versions only go up: each policy you
        install must carry a higher version than the installed one.

        \b
        Examples:
          sgxlaunch policy new policy.json --valid-days 90
          sgxlaunch policy new policy-v8.json --from policy.dsse.json --valid-days 90
        """
        allow: tuple[Any, ...] = ()
        deny: tuple[Any, ...] = ()
        next_version = 1
        if source is not None:
            old, _ = _read_policy_file(source)
            allow, deny, next_version = old.allow, old.deny, old.version + 1
        policy = LaunchPolicy(
            next_version if version is None else version,
            _expiry(expires, valid_days, DEFAULT_POLICY_DAYS),
            allow,
            deny,
        )
        write_output(out, policy.to_payload(), force=force)
        click.echo(
            f"wrote {out}: version {policy.version}, expires {_json.format_time(policy.expires)}",
            err=True,
        )

    @policy_group.command("allow")
    @click.argument("policy", type=click.Path(exists=True, dir_okay=False))
    @_identity_options
    @click.option("--debug", is_flag=True, help="Permit ATTRIBUTES.DEBUG.")
    @click.option("--provisionkey", is_flag=True, help="Permit ATTRIBUTES.PROVISIONKEY.")
    @click.option("--kss", is_flag=True, help="Permit ATTRIBUTES.KSS.")
    @click.option("--xfrm-mask", type=IntParam(64), help="XFRM must lie within this mask.")
    @click.option("--miscselect-mask", type=IntParam(32), help="MISCSELECT within this mask.")
    @handle_errors
    def policy_allow(
        policy: str,
        rule_id: str,
        sigstruct: str | None,
        match: str,
        debug: bool,
        provisionkey: bool,
        kss: bool,
        xfrm_mask: int | None,
        miscselect_mask: int | None,
        **given: Any,
    ) -> None:
        """Append an allow rule to the POLICY document.

        Every field given must match; a rule must name an MRSIGNER or an MRENCLAVE (there are
        no wildcards). DEBUG, PROVISIONKEY and KSS enclaves are refused unless the rule
        permits them.

        \b
        Examples:
          sgxlaunch policy allow policy.json --id acme --mrsigner 8381…f3b2 --isvprodid 3 \\
              --isvsvn 2..
          sgxlaunch policy allow policy.json --id acme-dev --sigstruct dev.sig \\
              --match mrenclave --debug
        """
        doc = _rule_doc(rule_id, given, sigstruct, match)
        for name, flag in (("debug", debug), ("provisionkey", provisionkey), ("kss", kss)):
            if flag:
                doc[name] = True
        if xfrm_mask is not None:
            doc["xfrm_mask"] = xfrm_mask
        if miscselect_mask is not None:
            doc["miscselect_mask"] = miscselect_mask
        _add_rule(policy, doc, "allow")

    @policy_group.command("deny")
    @click.argument("policy", type=click.Path(exists=True, dir_okay=False))
    @_identity_options
    @handle_errors
    def policy_deny(
        policy: str, rule_id: str, sigstruct: str | None, match: str, **given: Any
    ) -> None:
        """Append a deny rule to the POLICY document; a matching deny rule beats any allow.

        \b
        Example (revoke versions with a known bug):
          sgxlaunch policy deny policy.json --id acme-cve-2026-1 --sigstruct acme.sig \\
              --isvsvn 0..4
        """
        _add_rule(policy, _rule_doc(rule_id, given, sigstruct, match), "deny")

    @policy_group.command("show")
    @click.argument("policy", type=click.Path(exists=True, dir_okay=False))
    @json_option
    @handle_errors
    def policy_show(policy: str, as_json: bool) -> None:
        """Show a policy document or envelope (signatures are listed, not checked).

        \b
        Example:
          sgxlaunch policy show policy.dsse.json --json
        """
        parsed, envelope = _read_policy_file(policy)
        info = parsed.describe()
        if envelope is not None:
            info["signed_by"] = [s.keyid for s in envelope.signatures]
        if as_json:
            echo_json(info)
            return
        click.echo(f"launch policy version {parsed.version}, expires {info['expires']}")
        for effect, rules in (("allow", parsed.allow), ("deny", parsed.deny)):
            click.echo(f"{effect} ({len(rules)}):")
            for rule in rules:
                fields = " ".join(_rule_field_text(k, v) for k, v in rule.to_doc().items())
                click.echo(f"  {rule.id}: {fields}")
        if envelope is not None:
            click.echo(f"signed by {len(envelope.signatures)} key(s):")
            for sig in envelope.signatures:
                click.echo(f"  {sig.keyid}")

    @policy_group.command("sign")
    @click.argument("policy", type=click.Path(exists=True, dir_okay=False))
    @signing_keys_option()
    @click.option(
        "--out",
        type=click.Path(dir_okay=False),
        help="Envelope to write (required when POLICY is a document).",
    )
    @click.option("--force", is_flag=True, help="Overwrite OUT.")
    @handle_errors
    def policy_sign(policy: str, keys: tuple[str, ...], out: str | None, force: bool) -> None:
        """Sign a POLICY document into an envelope, or add signatures to an envelope.

        The signature covers the document's exact bytes (DSSE PAE); never re-format a signed
        policy.

        \b
        Examples:
          sgxlaunch policy sign policy.json --key keys/a.key.pem --out policy.dsse.json
          sgxlaunch policy sign policy.dsse.json --key keys/b.key.pem
        """
        data = read_input(policy, limit=MAX_ENVELOPE_SIZE)
        if b'"payloadType"' in data:
            _read_envelope(policy, POLICY_PAYLOAD_TYPE)
            _sign_envelope(policy, keys, out)
            return
        if out is None:
            raise UsageError(f"{policy} is a policy document: say where the envelope goes (--out)")
        try:
            LaunchPolicy.from_payload(data)
        except MalformedInput as exc:
            raise exc.with_source(policy) from None
        signers = [load_signer(k) for k in keys]
        envelope = sign_payload(POLICY_PAYLOAD_TYPE, data, signers)
        write_output(out, envelope.to_bytes(), force=force)
        for signer in signers:
            click.echo(f"signed with {signer.public_key.keyid}", err=True)

    @policy_group.command("verify")
    @click.argument("envelope", type=click.Path(exists=True, dir_okay=False))
    @click.option(
        "--root",
        type=click.Path(exists=True, dir_okay=False),
        help="Verify against this root envelope instead of the installed state.",
    )
    @home_option
    @json_option
    @handle_errors
    def policy_verify(envelope: str, root: str | None, home: str | None, as_json: bool) -> None:
        """Check a signed policy ENVELOPE as `policy install` would, without installing it.

        Against the installed state (--home): threshold of the owner's keys, expiry, and a
        version above the installed policy. Against --root: threshold and expiry only.
        Exit 0 if acceptable, 1 naming the failed check, 2 if malformed.

        \b
        Examples:
          sgxlaunch policy verify policy.dsse.json
          sgxlaunch policy verify policy.dsse.json --root root.json --json
        """
        data = read_input(envelope, limit=MAX_ENVELOPE_SIZE)
        now = utc_now()
        with _about(envelope):
            if root is not None:
                owner, _ = _read_root(root)
                env = check_envelope(data, POLICY_PAYLOAD_TYPE, max_size=MAX_ENVELOPE_SIZE)
                check_signatures(env, owner, "launch policy")
                parsed = LaunchPolicy.from_payload(env.payload)
                check_not_expired(parsed.expires, now, "launch policy")
                checks = ["threshold", "expiry"]
            else:
                with open_store(resolve_home(home), create=False) as store:
                    state = load_state(store)
                parsed, _digest, _same = state.verify_policy(data, now)
                checks = ["threshold", "expiry", "version"]
        if as_json:
            echo_json(
                {
                    "valid": True,
                    "checks": checks,
                    "version": parsed.version,
                    "expires": _json.format_time(parsed.expires),
                }
            )
        else:
            click.echo(f"OK: launch policy version {parsed.version}: {', '.join(checks)} verified")

    @policy_group.command("install")
    @click.argument("envelope", type=click.Path(exists=True, dir_okay=False))
    @home_option
    @json_option
    @handle_errors
    def policy_install(envelope: str, home: str | None, as_json: bool) -> None:
        """Install a signed policy ENVELOPE as the one in force (after every check passes).

        \b
        Example:
          sgxlaunch policy install policy.dsse.json --home /var/lib/sgxlaunch
        """
        data = read_input(envelope, limit=MAX_ENVELOPE_SIZE)
        with open_store(resolve_home(home), create=False) as store, _about(envelope):
            state, update = install_policy(store, data, utc_now())
        if as_json:
            echo_json(
                {"installed": bool(update.changes), "summary": update.summary} | state.describe()
            )
        else:
            click.echo(update.summary)

    @policy_group.command("explain")
    @click.argument("sig", type=click.Path(exists=True, dir_okay=False))
    @click.option(
        "--policy",
        "policy_file",
        type=click.Path(exists=True, dir_okay=False),
        help="Use this policy (a draft document, or an envelope with --root).",
    )
    @click.option(
        "--root",
        type=click.Path(exists=True, dir_okay=False),
        help="Root envelope that must have signed --policy.",
    )
    @home_option
    @json_option
    @handle_errors
    def policy_explain(
        sig: str, policy_file: str | None, root: str | None, home: str | None, as_json: bool
    ) -> None:
        """Say whether the policy allows the enclave of SIGSTRUCT file SIG, and why.

        Uses the installed policy unless --policy is given. Exit 0 if allowed, 1 if denied
        (every reason listed: rule, field, expected vs found), 2 on bad input.

        \b
        Examples:
          sgxlaunch policy explain enclave.sig
          sgxlaunch policy explain enclave.sig --policy policy.json --json
          sgxlaunch policy explain enclave.sig --policy policy.dsse.json --root root.json
        """
        identity = EnclaveIdentity.from_sigstruct(_read_sigstruct(sig))
        now = utc_now()
        if policy_file is not None:
            parsed, envelope = _read_policy_file(policy_file)
            if envelope is not None:
                if root is None:
                    raise UsageError("a signed --policy needs --root to check its signatures")
                owner, _ = _read_root(root)
                with _about(policy_file):
                    check_signatures(envelope, owner, "launch policy")
            else:
                click.echo(f"note: {policy_file} is an unsigned draft", err=True)
            decision = PolicyIndex(parsed).evaluate(identity, now)
        else:
            with open_store(resolve_home(home), create=False) as store:
                state: TrustedState = load_state(store)
            decision = state.evaluate(identity, now)
        _print_decision(decision, identity, as_json)
        if not decision.allowed:
            sys.exit(1)


def register(main: click.Group) -> None:
    """Add the ``owner`` and ``policy`` command groups to the ``sgxlaunch`` group."""
    _register_owner(main)
    _register_policy(main)
