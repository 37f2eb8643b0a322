"""Platform commands: ``sgxlaunch platform …`` over the state kept under ``--home``."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import click

from sgxlaunch.arch import Sigstruct
from sgxlaunch.attest.pcs import ensure_provisioning
from sgxlaunch.cli._common import (
    HexBytesParam,
    about,
    echo_json,
    handle_errors,
    home_option,
    info,
    json_option,
    machine_option,
    plural,
    socket_option,
    utc_now,
    write_output,
)
from sgxlaunch.cli._daemon import daemon_client, send_file
from sgxlaunch.cli._home import open_platform, read_platform_input
from sgxlaunch.cli.policy import install_policy_file
from sgxlaunch.cpu.machine import MemoryMachine
from sgxlaunch.errors import UsageError
from sgxlaunch.launch.enclave import (
    LE_ATTRIBUTEMASK,
    LE_ATTRIBUTES,
    LE_ISVPRODID,
    LE_ISVSVN,
    LE_SWDEFINED,
    launch_enclave_image,
    root_digest_of,
    sign_launch_enclave,
)
from sgxlaunch.launch.platform import Platform, PlatformConfig, take_ownership
from sgxlaunch.policy import MemoryStore, Store
from sgxlaunch.service.client import b64
from sgxlaunch.sigstruct import RsaKeySigner
from sgxlaunch.store import FileMachine, open_store, resolve_home, resolve_machine
from sgxlaunch.store.keyfiles import load_enclave_key


def _print_status(status: dict[str, Any]) -> None:
    policy = status.get("policy")
    if policy and policy.get("expired"):
        click.echo(
            f"EXPIRED: the launch policy (version {policy['version']}) expired at "
            f"{policy['expires']}; every launch is denied until the owner installs a newer one"
        )
    for warning in (policy or {}).get("warnings") or ():
        click.echo(f"WARNING: {warning}")
    click.echo(f"platform     {status['platform_id']}")
    click.echo(f"mode         {status['mode']}")
    doc = status.get("mode_document")
    if doc:
        click.echo(f"mode doc     version {doc['version']} ({doc['mode']})")
    click.echo(f"MSR hash     {status['launch_key_msrs']}")
    if "sgx2" in status:
        click.echo(f"SGX2         {'on' if status['sgx2'] else 'off'} (EDMM: EAUG, EMODPR, EMODT)")
    le = status.get("launch_enclave")
    if le:
        state = "running" if le["running"] else "not running"
        click.echo(f"launch encl. {le['mrsigner']} ({state})")
    else:
        click.echo("launch encl. none (the launch log is off until one is set up)")
    root = status.get("owner_root")
    if root:
        click.echo(
            f"owner root   version {root.get('version')}, "
            f"{root.get('threshold')} of {plural(len(root.get('keys', [])), 'key')}"
        )
    else:
        click.echo("owner root   none")
    if policy:
        click.echo(
            f"policy       version {policy['version']} (spec_version "
            f"{policy.get('spec_version', '?')}), {policy['allow_rules']} allow / "
            f"{policy['deny_rules']} deny rules, "
            f"{'EXPIRED at' if policy.get('expired') else 'expires'} {policy['expires']}, "
            f"digest {policy['digest'][:16]}…"
        )
    else:
        click.echo("policy       none")
    count = status["log_records"]
    click.echo(f"log          {plural(count, 'record')}")


@click.group("platform")
def platform_group() -> None:
    """The emulated SGX platform kept under --home: its CPU, driver and owner control.

    \b
    A typical owner setup:
      sgxlaunch owner init --keys 3 --threshold 2 --key-dir keys -o root.json
      sgxlaunch key generate -o le.pem                        # the launch enclave's key
      sgxlaunch platform init --root root.json --le-key le.pem
      sgxlaunch platform install-policy policy.signed.json  # see `sgxlaunch policy`
      sgxlaunch platform mode owner-mode.json               # see `sgxlaunch owner mode`
      sgxlaunch run enclave.sgxs --sig enclave.sig
      sgxlaunch log show; sgxlaunch log verify
    """


@platform_group.command("init")
@home_option
@machine_option
@click.option("--seed", type=HexBytesParam(32), help="Platform seed (default: random).")
@click.option("--epc-mib", type=click.IntRange(1, 1024), default=16, show_default=True)
@click.option(
    "--locked-hash",
    type=HexBytesParam(32),
    help="Emulate firmware that locked the launch-key MSRs to this hash.",
)
@click.option(
    "--root",
    "root_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Install this owner root (signed envelope) as well.",
)
@click.option(
    "--le-key",
    type=click.Path(exists=True, dir_okay=False),
    help="Sign the owner launch enclave with this SGX key (RSA-3072, e=3).",
)
@click.option(
    "--mode",
    type=click.Choice(["permissive", "owner"]),
    default="permissive",
    show_default=True,
)
@click.option(
    "--mode-document",
    type=click.Path(exists=True, dir_okay=False),
    help="Owner-signed platform-mode document (required for --mode owner).",
)
@json_option
@handle_errors
def platform_init(
    home: str | None,
    machine: str | None,
    seed: bytes | None,
    epc_mib: int,
    locked_hash: bytes | None,
    root_path: str | None,
    le_key: str | None,
    mode: str,
    mode_document: str | None,
    as_json: bool,
) -> None:
    """Create the platform: a CPU seed (same seed = same CPU) and its configuration.

    Permissive (mainline) by default. With --root, --le-key and --mode owner
    --mode-document, the owner's launch control is set up in one step; everything is
    verified first, in a scratch copy, and only then written.

    \b
    Examples:
      sgxlaunch platform init --home home --machine machine.json
      sgxlaunch platform init --home home --machine machine.json --root root.json --le-key le.pem
    """
    if mode == "owner" and mode_document is None:
        raise UsageError("--mode owner needs --mode-document (an owner-signed document)")
    if mode_document is not None and mode != "owner":
        mode = "owner"
    config = PlatformConfig(
        epc_size=epc_mib << 20,
        firmware="locked-hash" if locked_hash else "lc-enabled",
        firmware_lepubkeyhash=locked_hash.hex() if locked_hash else None,
    )
    home_path = resolve_home(home)
    machine_path = resolve_machine(machine)
    if machine_path.exists():
        raise UsageError(f"{machine_path}: a machine already exists here (never overwritten)")
    if machine_path.resolve().is_relative_to(home_path.resolve()):
        raise UsageError(
            f"{machine_path}: the machine must live outside the home ({home_path}), "
            "which is the attacker's to read"
        )
    seed = seed or os.urandom(32)
    # Dry run in memory first: nothing is written unless every step succeeds.
    scratch = MemoryStore()
    scratch_machine = MemoryMachine(config.machine_state(seed))
    # the emulated PCS, and the PCE/QE signing key made inside the machine (issue 19)
    ensure_provisioning(scratch_machine, now=utc_now(), random=os.urandom).enclave_signer()
    # the PCE runs once (permissive: no owner yet) and the PCS issues the PCK certificate
    Platform.open(scratch, scratch_machine, clock=utc_now).quoter().provision()
    _init_into(scratch, scratch_machine, root_path, le_key, mode_document)
    with open_store(home_path) as store:
        if store.keys("platform/") or store.keys("owner/root"):
            raise UsageError(f"{home_path}: a platform already exists here")
        file_machine = FileMachine.create(machine_path, scratch_machine.load())
        store.commit(scratch.snapshot())
        status = Platform.open(store, file_machine, clock=utc_now).status()
    info(f"platform initialised: home {home_path}, machine {machine_path}")
    if as_json:
        echo_json(status)
    else:
        _print_status(status)


@platform_group.command("le-sign")
@home_option
@machine_option
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The owner's SGX key for its launch enclave (RSA-3072, e=3).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Also write the launch enclave's SIGSTRUCT here.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@socket_option
@json_option
@handle_errors
def platform_le_sign(
    home: str | None,
    machine: str | None,
    key_path: str,
    output: str | None,
    force: bool,
    socket: str | None,
    as_json: bool,
) -> None:
    """Build the owner launch enclave for the installed owner root, sign and install it.

    Its MRSIGNER is what a mode document naming it (le_mrsigner) puts into the
    launch-key MSRs. Prints the MRSIGNER.

    \b
    Examples:
      sgxlaunch platform le-sign --key owner-le.pem
      sgxlaunch platform le-sign --key owner-le.pem -o le.sig --json
    """
    key = load_enclave_key(key_path)
    if output and not force and Path(output).exists():
        # refused before the launch enclave is installed: a refusal changes nothing
        raise UsageError(f"{output}: exists; use --force to overwrite it")
    client = daemon_client(home, machine, socket)
    if client is not None:
        root = base64.b64decode(client.call("GET", "/v1/owner/root")["root"])
        sig = sign_launch_enclave(root, RsaKeySigner(key))
        client.call("POST", "/v1/launch-enclave", {"sigstruct": b64(sig.to_bytes())})
    else:
        with open_platform(home, machine, maintenance=True) as platform:
            if platform.state is None:
                raise UsageError("install an owner root first (`sgxlaunch owner install`)")
            sig = sign_launch_enclave(platform.state.root_envelope, RsaKeySigner(key))
            platform.set_launch_enclave(sig)
    if output:
        write_output(output, sig.to_bytes(), force=force)
    if as_json:
        echo_json(_le_result(sig) | {"output": output})
    else:
        click.echo(sig.mrsigner.hex())


def _le_result(sig: Sigstruct) -> dict[str, Any]:
    """What `le-sign` and `le-install` report under --json: the launch enclave installed."""
    return {"mrenclave": sig.enclavehash.hex(), "mrsigner": sig.mrsigner.hex()}


@platform_group.command("le-image")
@home_option
@machine_option
@socket_option
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@json_option
@handle_errors
def platform_le_image(
    home: str | None,
    machine: str | None,
    socket: str | None,
    output: str,
    force: bool,
    as_json: bool,
) -> None:
    """Write the launch enclave's SGXS image (to sign elsewhere, e.g. with gendata/catsig);
    install the result with `platform le-install`.

    Prints its MRENCLAVE; --json adds the SIGSTRUCT fields to sign it with (the `gendata`
    options that reproduce `le-sign`'s SIGSTRUCT).

    \b
    Examples:
      sgxlaunch platform le-image -o le.sgxs
      sgxlaunch platform le-image -o le.sgxs --json
    """
    client = daemon_client(home, machine, socket)
    if client is not None:
        root = base64.b64decode(client.call("GET", "/v1/owner/root")["root"])
    else:
        # Only the owner root is read, as `le-sign` reads it (a platform that does not start
        # normally still has one: the launch enclave is what the owner rebuilds it with).
        with open_platform(home, machine, maintenance=True) as platform:
            if platform.state is None:
                raise UsageError("install an owner root first (`sgxlaunch owner install`)")
            root = platform.state.root_envelope
    image = launch_enclave_image(root_digest_of(root))
    data = image.sgxs()
    write_output(output, data, force=force)
    info(
        "sign it with these SIGSTRUCT fields (EINITTOKEN_KEY outside ATTRIBUTEMASK), e.g.:\n"
        f"  sgxlaunch gendata {output} {LE_SIGNING_OPTIONS} -o le.data\n"
        "  (sign le.data with the owner's SGX key, then `sgxlaunch catsig` and "
        "`sgxlaunch platform le-install`)",
    )
    if as_json:
        echo_json(
            {
                "output": output,
                "mrenclave": image.mrenclave().hex(),
                "size": len(data),
                "owner_root_digest": root_digest_of(root).hex(),
                "sigstruct_fields": LE_SIGSTRUCT_FIELDS,
                "gendata_options": LE_SIGNING_OPTIONS,
            }
        )
    else:
        click.echo(image.mrenclave().hex())


@platform_group.command("le-install")
@home_option
@machine_option
@socket_option
@click.argument("sig", type=click.Path(exists=True, dir_okay=False))
@json_option
@handle_errors
def platform_le_install(
    home: str | None, machine: str | None, socket: str | None, sig: str, as_json: bool
) -> None:
    """Install a launch-enclave SIGSTRUCT made elsewhere (checked against the root).

    \b
    Examples:
      sgxlaunch platform le-install le.sig
      sgxlaunch platform le-install le.sig --json
    """
    with about(sig):
        parsed = Sigstruct.from_bytes(read_platform_input(sig))
    client = daemon_client(home, machine, socket)
    if client is not None:
        send_file(client, "/v1/launch-enclave", sig, "sigstruct")
    else:
        with (
            open_platform(home, machine, maintenance=True) as platform,
            about(sig, verification=True),
        ):
            platform.set_launch_enclave(parsed)
    if as_json:
        echo_json({"sigstruct": sig} | _le_result(parsed))
    else:
        click.echo(parsed.mrsigner.hex())


@platform_group.command("install-policy")
@home_option
@machine_option
@socket_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@json_option
@handle_errors
def platform_install_policy(
    home: str | None, machine: str | None, socket: str | None, file: str, as_json: bool
) -> None:
    """Install an owner-signed launch policy FILE: the same command as `policy install`.

    Verified inside the launch enclave, which raises its sealed high-water mark (an older
    policy is refused from then on). The policy already in force says so ("already
    installed", `installed: false` under --json, exit 0) and changes nothing.

    \b
    Example:
      sgxlaunch platform install-policy policy.signed.json
    """
    install_policy_file(file, home, machine, as_json, socket)


@platform_group.command("mode")
@home_option
@machine_option
@socket_option
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@json_option
@handle_errors
def platform_mode(
    home: str | None, machine: str | None, socket: str | None, file: str, as_json: bool
) -> None:
    """Switch launch control with an owner-signed platform-mode document.

    The document must carry a threshold of the owner root's keys; no unsigned command can
    switch modes. Make one with `sgxlaunch owner mode new` and `owner mode sign`. Exit 1 if
    it does not verify (signatures, platform, a version not above the installed one).

    \b
    Example:
      sgxlaunch platform mode mode.dsse.json --home home --machine machine.json
    """
    data = read_platform_input(file)
    client = daemon_client(home, machine, socket)
    if client is not None:
        result = send_file(client, "/v1/mode", file)
    else:
        with (
            open_platform(home, machine, maintenance=True) as platform,
            about(file, verification=True),
        ):
            result = platform.set_mode(data)
    if as_json:
        echo_json(result)
    else:
        click.echo(f"launch control is now {result['mode']} (document version {result['version']})")
    if result.get("platform_id") is None:
        # A warning, not a status line: it is printed under --json too (docs/json.md).
        click.echo(
            "sgxlaunch: warning: this document is not bound to a platform (made with "
            "--any-platform): it is valid on every platform of this owner",
            err=True,
        )


@platform_group.command("status")
@home_option
@machine_option
@socket_option
@json_option
@handle_errors
def platform_status(
    home: str | None, machine: str | None, socket: str | None, as_json: bool
) -> None:
    """Show the platform: mode, MSRs, launch enclave, owner root, policy, log size.

    \b
    Examples:
      sgxlaunch platform status --home home --machine machine.json
      sgxlaunch platform status --json
    """
    client = daemon_client(home, machine, socket)
    if client is not None:
        status = client.call("GET", "/v1/status")
    else:
        with open_platform(home, machine) as platform:
            status = platform.status()
    if as_json:
        echo_json(status)
    else:
        _print_status(status)


LE_SIGNING_OPTIONS = (
    f"--attributes 0x{LE_ATTRIBUTES.flags:x}/0x{LE_ATTRIBUTES.xfrm:x} "
    f"--attributes-mask 0x{LE_ATTRIBUTEMASK.flags:x}/0x{LE_ATTRIBUTEMASK.xfrm:x} "
    f"--misc-mask 0xffffffff --isvprodid 0x{LE_ISVPRODID:x} --isvsvn {LE_ISVSVN} "
    f"--swdefined {LE_SWDEFINED} --date 00000000"
)
"""The `sgxlaunch gendata` options that reproduce :func:`sign_launch_enclave`'s fields."""

LE_SIGSTRUCT_FIELDS: dict[str, Any] = {
    "attributes": {"flags": LE_ATTRIBUTES.flags, "xfrm": LE_ATTRIBUTES.xfrm},
    "attributemask": {"flags": LE_ATTRIBUTEMASK.flags, "xfrm": LE_ATTRIBUTEMASK.xfrm},
    "miscselect": 0,
    "miscmask": 0xFFFFFFFF,
    "isvprodid": LE_ISVPRODID,
    "isvsvn": LE_ISVSVN,
    "swdefined": LE_SWDEFINED,
    "date": "00000000",
}
"""The same fields as `le-image --json` reports them (named as `inspect` names them)."""


def _init_into(
    store: Store,
    machine: MemoryMachine,
    root_path: str | None,
    le_key: str | None,
    mode_document: str | None,
) -> None:
    if root_path is not None:
        take_ownership(store, machine, read_platform_input(root_path), utc_now())
    platform = Platform.open(store, machine, clock=utc_now)
    if le_key is not None:
        if platform.state is None:
            raise UsageError("--le-key needs an owner root (--root)")
        sig = sign_launch_enclave(
            platform.state.root_envelope, RsaKeySigner(load_enclave_key(le_key))
        )
        platform.set_launch_enclave(sig)
        platform = Platform.open(store, machine, clock=utc_now)
    if mode_document is not None:
        platform.set_mode(read_platform_input(mode_document))


def register(main: click.Group) -> None:
    """Add ``platform`` to the ``sgxlaunch`` group."""
    main.add_command(platform_group)
