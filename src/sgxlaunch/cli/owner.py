"""The platform owner's root: ``sgxlaunch owner …`` (k-of-n keys, rotation, signing)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from sgxlaunch.cli._common import (
    about,
    echo_json,
    handle_errors,
    home_option,
    info,
    json_option,
    output_option,
    plural,
    read_input,
    signing_keys_option,
    utc_now,
    write_output,
)
from sgxlaunch.cli._documents import (
    DEFAULT_ROOT_DAYS,
    expiry,
    expiry_options,
    mode_line,
    read_root,
    sign_envelope,
)
from sgxlaunch.cli.mode import mode_group
from sgxlaunch.errors import UsageError
from sgxlaunch.policy.envelope import Envelope, sign_payload
from sgxlaunch.policy.keys import ED25519, SCHEMES, PrivateKeySigner, PublicKey
from sgxlaunch.policy.root import ROOT_PAYLOAD_TYPE, OwnerRoot
from sgxlaunch.policy.state import (
    TrustedState,
    install_root,
    load_state,
)
from sgxlaunch.service.lock import refuse_if_served
from sgxlaunch.store import (
    STATE_FILE,
    generate_private_key,
    load_public_key,
    open_store,
    resolve_home,
    write_private_key,
    write_public_key,
)


def _keys_for(
    count: int | None, key_dir: str | None, scheme: str, public_keys: Sequence[str]
) -> tuple[list[PublicKey], list[PrivateKeySigner]]:
    """Public keys from files, plus ``count`` freshly generated keys (in memory: nothing is
    written until the new root is known to be valid; see :func:`_write_root_and_keys`)."""
    keys = [load_public_key(p) for p in public_keys]
    signers: list[PrivateKeySigner] = []
    if count:
        if key_dir is None:
            raise UsageError("--keys needs --key-dir, where the new private keys are written")
        if Path(key_dir).exists() and not Path(key_dir).is_dir():
            raise UsageError(f"{key_dir}: --key-dir exists and is not a directory")
        for _ in range(count):
            signer = PrivateKeySigner(generate_private_key(scheme))
            signers.append(signer)
            keys.append(signer.public_key)
    if not keys:
        raise UsageError("no keys: give --keys N with --key-dir, or --public-key FILE")
    return keys, signers


def _write_root_and_keys(
    out: str, envelope: bytes, force: bool, key_dir: str | None, signers: Sequence[PrivateKeySigner]
) -> None:
    """Write the generated private keys, then the root envelope, once both can be written.

    Every argument check (threshold, expiry, existing files) has run before this point, so a
    refused command leaves no orphan private key behind.
    """
    if Path(out).exists() and not force:
        raise UsageError(f"{out}: exists; use --force to overwrite it")
    if signers:
        assert key_dir is not None
        directory = Path(key_dir)
        stems = [f"owner-{signer.public_key.keyid[:16]}" for signer in signers]
        for stem in stems:
            for suffix in (".key.pem", ".pub.pem"):
                if (directory / f"{stem}{suffix}").exists():
                    raise UsageError(f"{directory / stem}{suffix}: exists; not overwritten")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for stem, signer in zip(stems, signers, strict=True):
            write_private_key(directory / f"{stem}.key.pem", signer.private_key)
            write_public_key(directory / f"{stem}.pub.pem", signer.public_key)
            info(f"wrote {directory / stem}.key.pem (0600) and .pub.pem")
    write_output(out, envelope, force=force)


def _print_root(
    root: OwnerRoot,
    as_json: bool,
    extra: dict[str, Any] | None = None,
    written: tuple[str, Envelope] | None = None,
) -> None:
    """Print ``root`` (and ``extra`` facts); under --json, also the file ``written`` and the
    digest of its payload (the owner root digest a machine bound to it reports)."""
    info = root.describe() | (extra or {})
    if as_json:
        if written is not None:
            out, envelope = written
            info = {"output": out, "digest": hashlib.sha256(envelope.payload).hexdigest()} | info
        echo_json(info)
        return
    click.echo(f"owner root version {root.version}, expires {info['expires']}")
    click.echo(f"threshold {root.threshold} of {len(root.keys)}")
    for key in root.keys.values():
        click.echo(f"  {key.keyid}  {key.scheme}")
    for name, value in (extra or {}).items():
        click.echo(f"{name}: {value}")


@click.group("owner")
def owner_group() -> None:
    """The platform owner's root: k-of-n policy-signing keys, versioned and expiring.

    \b
    Typical flow (two admins of three must agree):
      sgxlaunch owner init --keys 3 --threshold 2 --key-dir keys/ -o root.json
      sgxlaunch owner install root.json
      sgxlaunch owner show root.json

    Launch-control mode switches are owner-signed too: see `sgxlaunch owner mode`.
    """


@owner_group.command("init")
@output_option("Root envelope to write.", dest="out")
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
@expiry_options(DEFAULT_ROOT_DAYS)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
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
      sgxlaunch owner init --keys 3 --threshold 2 --key-dir keys/ -o root.json
      sgxlaunch owner init --public-key alice.pub.pem --public-key bob.pub.pem \\
          --threshold 2 --valid-days 730 -o root.json
      sgxlaunch owner sign root.json --key alice.key.pem   # each holder, in turn
    """
    keys, signers = _keys_for(count, key_dir, scheme, public_keys)
    root = OwnerRoot.create(
        version=1,
        expires=expiry(expires, valid_days, DEFAULT_ROOT_DAYS, what="the owner root"),
        threshold=threshold,
        keys=keys,
    )
    envelope = sign_payload(ROOT_PAYLOAD_TYPE, root.to_payload(), signers)
    _write_root_and_keys(out, envelope.to_bytes(), force, key_dir, signers)
    _print_root(root, as_json, {"signatures": len(envelope.signatures)}, (out, envelope))


@owner_group.command("rotate")
@click.argument("current", type=click.Path(exists=True, dir_okay=False))
@output_option("New root envelope to write.", dest="out")
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
@expiry_options(DEFAULT_ROOT_DAYS)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
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
          --keys 1 --key-dir keys/ -o root-v2.json
      sgxlaunch owner sign root-v2.json --key keys/owner-1f2e….key.pem
      sgxlaunch owner sign root-v2.json --key keys/owner-9a0b….key.pem
      sgxlaunch owner install root-v2.json
    """
    old, _ = read_root(current)
    kept: list[PublicKey] = list(old.keys.values()) if keep_all else []
    for prefix in keep:
        matches = [k for k in old.keys.values() if k.keyid.startswith(prefix.lower())]
        if len(matches) != 1:
            raise UsageError(f"--keep {prefix}: matches {plural(len(matches), 'key')} of {current}")
        if matches[0] not in kept:
            kept.append(matches[0])
    keys, signers = _keys_for(count, key_dir, scheme, public_keys)
    all_keys = kept + [k for k in keys if k.keyid not in {c.keyid for c in kept}]
    root = OwnerRoot.create(
        version=old.version + 1,
        expires=expiry(expires, valid_days, DEFAULT_ROOT_DAYS, what="the owner root"),
        threshold=old.threshold if threshold is None else threshold,
        keys=all_keys,
    )
    envelope = sign_payload(ROOT_PAYLOAD_TYPE, root.to_payload(), signers)
    _write_root_and_keys(out, envelope.to_bytes(), force, key_dir, signers)
    _print_root(root, as_json, {"signatures": len(envelope.signatures)}, (out, envelope))
    info(
        f"needs {old.threshold} signatures by keys of version {old.version} and "
        f"{root.threshold} by keys of version {root.version}",
    )


@owner_group.command("sign")
@click.argument("envelope", type=click.Path(exists=True, dir_okay=False))
@signing_keys_option()
@output_option("Write here, not in place.", required=False, dest="out")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@json_option
@handle_errors
def owner_sign(
    envelope: str, keys: tuple[str, ...], out: str | None, force: bool, as_json: bool
) -> None:
    """Add signatures to a root, policy or platform-mode ENVELOPE, in place unless -o.

    \b
    Examples:
      sgxlaunch owner sign root-v2.json --key keys/owner-1f2e….key.pem
      sgxlaunch owner sign root-v2.json --key keys/owner-9a0b….key.pem --json
    """
    result = sign_envelope(envelope, keys, out, force=force)
    if as_json:
        echo_json(result)


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
        parsed, envelope = read_root(root)
        signed = [s.keyid for s in envelope.signatures]
        _print_root(parsed, as_json, {"signed_by": signed})
        return
    with open_store(resolve_home(home), create=False) as store:
        state = load_state(store)
    if as_json:
        echo_json(state.describe(utc_now()))
        return
    info = state.describe(utc_now())["policy"]
    if info is not None and info["expired"]:
        click.echo(
            f"EXPIRED: the launch policy (version {info['version']}) expired at "
            f"{info['expires']}; every launch is denied until a newer one is installed"
        )
    _print_root(state.root, False)
    if info is None:
        click.echo("no launch policy installed")
    else:
        when = "EXPIRED at" if info["expired"] else "expires"
        click.echo(
            f"launch policy version {info['version']}, {when} {info['expires']}, "
            f"{info['allow_rules']} allow / {info['deny_rules']} deny rules"
            + (
                " (NOT in force: signed under an earlier root)"
                if not info["in_force"] and not info["expired"]
                else ""
            )
        )
    if state.mode is None:
        click.echo("no platform-mode document installed")
    else:
        click.echo(
            mode_line(state.mode)
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
    path = resolve_home(home)
    # The daemon keeps the home's state open; a root written behind it would fork that state.
    refuse_if_served(path, None)
    if not (path / STATE_FILE).exists():
        # The first root: every check passes before the home (and its state file) is created.
        with about(root, verification=True):
            TrustedState.bootstrap(data, utc_now())
    with open_store(path) as store, about(root, verification=True):
        state, update = install_root(store, data, utc_now())
    if as_json:
        echo_json(
            {"installed": bool(update.changes), "summary": update.summary}
            | state.describe(utc_now())
        )
    else:
        click.echo(update.summary)


owner_group.add_command(mode_group)


def register(main: click.Group) -> None:
    """Add ``owner`` (with its ``mode`` subgroup) to the ``sgxlaunch`` group."""
    main.add_command(owner_group)
