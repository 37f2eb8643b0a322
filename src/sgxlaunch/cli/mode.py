"""Owner-signed platform-mode documents: ``sgxlaunch owner mode …``."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

import click

from sgxlaunch.cli._common import (
    HexBytesParam,
    about,
    echo_json,
    handle_errors,
    home_option,
    info,
    json_option,
    machine_option,
    output_option,
    plural,
    read_input,
    read_sigstruct,
    signing_keys_option,
    utc_now,
    write_output,
)
from sgxlaunch.cli._documents import (
    DEFAULT_MODE_DAYS,
    document_facts,
    expiry,
    mode_expiry_options,
    mode_line,
    read_mode_file,
    signed_result,
    warn_expiry,
)
from sgxlaunch.errors import UsageError
from sgxlaunch.policy.control import (
    MAX_MODE_ENVELOPE_SIZE,
    MODE_PAYLOAD_TYPE,
    MODES,
    ModeDocument,
)
from sgxlaunch.policy.envelope import Envelope, sign_payload
from sgxlaunch.policy.evaluate import EnclaveIdentity
from sgxlaunch.policy.state import (
    TrustedState,
    load_state,
)
from sgxlaunch.store import (
    load_signer,
    open_store,
    resolve_home,
)
from sgxlaunch.store.machine import FileMachine, resolve_machine


@click.group("mode")
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
@mode_expiry_options
@click.option(
    "--platform-id",
    type=HexBytesParam(32),
    help="Bind the document to this platform (`sgxlaunch machine show` prints its id).",
)
@click.option(
    "--any-platform",
    is_flag=True,
    help="Make the document valid on every platform of this owner (not bound to one).",
)
@output_option("Envelope to write.", dest="out")
@signing_keys_option(required=False, help="Sign at once with this private key (PEM); repeatable.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@machine_option
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
    any_platform: bool,
    out: str,
    keys: tuple[str, ...],
    force: bool,
    machine: str | None,
    as_json: bool,
) -> None:
    """Write a platform-mode envelope OUTPUT (unsigned unless --key is given).

    Each key holder then adds a signature with `sgxlaunch owner mode sign OUTPUT --key …`
    (or `sgxlaunch owner sign`). The document can be installed until it expires
    (default: in 7 days); once installed, the mode stays in force. The document is bound to
    one platform (--platform-id, the id the machine reports; by default the platform of the
    machine file, --machine or $SGXLAUNCH_MACHINE) unless --any-platform says it
    may switch every platform of this owner. It carries the signed time it was made
    (`issued`): the launch enclave's clock never runs earlier than that.

    \b
    Examples:
      sgxlaunch owner mode new --mode owner --le-sigstruct le.sig --version 1 \\
          --platform-id 3c9a… -o mode.json
      sgxlaunch owner mode new --mode permissive --version 2 --expires-in 1 \\
          --platform-id 3c9a… -o back.json
    """
    if platform_id is not None and any_platform:
        raise UsageError("give --platform-id or --any-platform, not both")
    if platform_id is None and not any_platform:
        path = resolve_machine(machine)
        if not path.exists():
            raise UsageError(
                "say which platform the document is for: --platform-id ID (the id `sgxlaunch "
                "machine show` prints), --machine FILE (this machine's id), or --any-platform "
                "to make it valid on every platform",
                detail=[f"no machine file at {path}"],
            )
        platform_id = FileMachine(path).load().platform_id
        info(f"bound to the platform of {path}: {platform_id.hex()}")
    if le_sigstruct is not None:
        if le_mrsigner is not None:
            raise UsageError("give --le-mrsigner or --le-sigstruct, not both")
        le_mrsigner = EnclaveIdentity.from_sigstruct(read_sigstruct(le_sigstruct)).mrsigner
    until = expiry(expires, valid_days, DEFAULT_MODE_DAYS, what="the platform-mode document")
    document = ModeDocument.create(
        version=version,
        expires=until,
        mode=mode,
        le_mrsigner=le_mrsigner,
        platform_id=platform_id,
        issued=min(utc_now(), until),  # an already expired document: issued at its expiry
    )
    signers = [load_signer(k) for k in keys]
    envelope = sign_payload(MODE_PAYLOAD_TYPE, document.to_payload(), signers)
    write_output(out, envelope.to_bytes(), force=force)
    info(f"wrote {out}: {mode_line(document)}")
    for signer in signers:
        info(f"signed with {signer.public_key.keyid}")
    if as_json:
        echo_json(
            {"output": out, "digest": hashlib.sha256(envelope.payload).hexdigest()}
            | document.describe()
            | {"signed_by": [s.keyid for s in envelope.signatures]}
        )


@mode_group.command("sign")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@signing_keys_option()
@output_option(
    "Write here, not in place (required when FILE is a bare document).",
    required=False,
    dest="out",
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@json_option
@handle_errors
def mode_sign(
    file: str, keys: tuple[str, ...], out: str | None, force: bool, as_json: bool
) -> None:
    """Add signatures to a platform-mode envelope FILE (in place unless -o).

    FILE may also be a bare mode document; then -o names the envelope. The signature
    covers the document's exact bytes; check what you sign (printed on stderr; with --json,
    the document's fields are in the result).

    \b
    Examples:
      sgxlaunch owner mode sign mode.json --key keys/a.key.pem
      sgxlaunch owner mode sign mode.json --key keys/b.key.pem --key keys/c.key.pem --json
    """
    document, envelope = read_mode_file(file)
    if envelope is None:
        if out is None:
            raise UsageError(
                f"{file} is a bare mode document: say where the envelope goes (-o/--output)"
            )
        envelope = Envelope(MODE_PAYLOAD_TYPE, read_input(file, limit=MAX_MODE_ENVELOPE_SIZE))
    info(f"signing {mode_line(document)}")
    warn_expiry(f"{file}: the platform-mode document", document.expires)
    signed_with = []
    for key_path in keys:
        signer = load_signer(key_path)
        envelope = envelope.signed_by(signer)
        signed_with.append(signer.public_key.keyid)
        info(f"signed with {signer.public_key.keyid}")
    target = out or file
    write_output(target, envelope.to_bytes(), force=force or out is None)
    if as_json:
        facts = document_facts(MODE_PAYLOAD_TYPE, envelope.payload, file)
        echo_json(signed_result(target, envelope, signed_with, facts))


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
        document, envelope = read_mode_file(file)
        signed = [] if envelope is None else [s.keyid for s in envelope.signatures]
        if as_json:
            echo_json(document.describe() | {"signed_by": signed})
            return
        click.echo(mode_line(document))
        click.echo(f"signed by {plural(len(signed), 'key')}:")
        for keyid in signed:
            click.echo(f"  {keyid}")
        return
    with open_store(resolve_home(home), create=False) as store:
        state = load_state(store)
    info = state.describe(utc_now())["mode"]
    if as_json:
        echo_json({"mode": info})
    elif state.mode is None:
        click.echo("no platform-mode document installed")
    else:
        click.echo(
            mode_line(state.mode)
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
    with about(file, verification=True):
        if root is not None:
            root_data = read_input(root)
            with about(root, verification=True):
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
            {"valid": True, "checks": checks, "already_installed": installed} | document.describe()
        )
    else:
        note = " (already installed)" if installed else ""
        click.echo(f"OK: {mode_line(document)}: {', '.join(checks)} verified{note}")
