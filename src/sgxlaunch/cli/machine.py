"""The machine's commands: physical presence (``machine …``), taking ownership and owner
recovery (``platform take-ownership``, ``recovery sign|apply``).

``machine …`` commands need the machine file itself (``--machine``; in the attacker model it
belongs to another user) and stand for someone at the machine; they never go through a daemon,
and the two that change the machine or the home under it (``clear-ownership``, ``migrate``)
refuse while sgxlaunchd holds them. ``platform take-ownership`` and ``recovery apply`` are the
owner's operations on the platform: they go to sgxlaunchd when it serves the platform
(docs/service.md).
"""

from __future__ import annotations

import os
from pathlib import Path

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
    signing_keys_option,
    socket_option,
    utc_now,
    write_output,
)
from sgxlaunch.cli._daemon import daemon_client, send_file
from sgxlaunch.cli._documents import signed_result
from sgxlaunch.cli._home import open_platform, read_platform_input
from sgxlaunch.cli.platform import platform_group
from sgxlaunch.errors import UsageError
from sgxlaunch.launch.enclave import (
    RECOVERY_PAYLOAD_TYPE,
    recovery_fields,
    recovery_payload,
    root_digest_of,
)
from sgxlaunch.launch.platform import (
    PlatformConfig,
    check_ownership_open,
    legacy_config,
    migrate_legacy_home,
    take_ownership,
)
from sgxlaunch.policy.envelope import sign_payload
from sgxlaunch.policy.state import TrustedState, check_envelope
from sgxlaunch.service.lock import refuse_if_served, served_by
from sgxlaunch.store import (
    STATE_FILE,
    FileMachine,
    load_signer,
    open_store,
    resolve_home,
    resolve_machine,
)


def _describe(machine: FileMachine) -> dict[str, object]:
    state = machine.load()
    return {
        "machine": str(machine.path),
        "platform_id": state.platform_id.hex(),
        "epc_size": state.epc_size,
        "firmware": state.firmware,
        "firmware_lepubkeyhash": None
        if state.firmware_lepubkeyhash is None
        else state.firmware_lepubkeyhash.hex(),
        "owner_epoch": state.owner_epoch,
        "cpusvn": state.cpusvn.hex(),
        "owner_root_digest": None if state.owner_binding is None else state.owner_binding.hex(),
        "counter": {
            "value": state.counter.value,
            "owner_mrsigner": state.counter.owner_mrsigner.hex() if state.counter.owned else None,
        },
    }


@click.group("machine")
def machine_group() -> None:
    """The machine: seed, OWNEREPOCH, firmware configuration, owner binding and monotonic
    counter (physical presence: these commands need the machine file itself)."""


@machine_group.command("show")
@machine_option
@json_option
@handle_errors
def machine_show(machine: str | None, as_json: bool) -> None:
    """Print the machine's public facts (never the seed).

    \b
    Example:
      sgxlaunch machine show --machine /var/lib/sgxlaunch/machine.json
    """
    facts = _describe(FileMachine(resolve_machine(machine)))
    if as_json:
        echo_json(facts)
        return
    counter = facts.pop("counter")
    assert isinstance(counter, dict)
    owner = counter["owner_mrsigner"]
    held = f"owned by the launch enclave of MRSIGNER {owner}" if owner else "not owned"
    facts["counter"] = f"{counter['value']} ({held})"
    for key, value in facts.items():
        click.echo(f"{key:<22}{'none' if value is None else value}")


@machine_group.command("clear-ownership")
@machine_option
@click.option("--yes", is_flag=True, required=True, help="Confirm: every sealed blob dies.")
@json_option
@handle_errors
def machine_clear_ownership(machine: str | None, yes: bool, as_json: bool) -> None:
    """Clear the owner binding: OWNEREPOCH + 1 (every sealed blob and token made before is
    dead) and the monotonic counter back to 0. Then take ownership again.

    Refused while sgxlaunchd serves the machine: stop it first.

    \b
    Examples:
      sgxlaunch machine clear-ownership --yes --machine machine.json
      sgxlaunch machine clear-ownership --yes --machine machine.json --json
    """
    machine_path = resolve_machine(machine)
    _refuse_if_served(
        "machine clear-ownership",
        None,
        machine_path,
        "clearing ownership kills the running launch enclave's sealed state under it, and it "
        "is the machine administrator's act at the machine, never a request to the daemon",
    )
    file_machine = FileMachine(machine_path)
    state = file_machine.load()
    cleared = state.cleared()
    file_machine.swap(state, cleared)
    info(
        f"ownership cleared; OWNEREPOCH is now {cleared.owner_epoch}, counter 0. Next: "
        "`sgxlaunch platform take-ownership ROOT --home NEW_HOME --machine "
        f"{file_machine.path}`",
    )
    if as_json:
        binding = state.owner_binding
        echo_json(
            {
                "machine": str(file_machine.path),
                "platform_id": cleared.platform_id.hex(),
                "owner_epoch": cleared.owner_epoch,
                "counter": cleared.counter.value,
                "cleared_owner_root_digest": None if binding is None else binding.hex(),
            }
        )


@machine_group.command("migrate")
@home_option
@machine_option
@click.option("--seed", type=HexBytesParam(32), help="New platform seed (default: random).")
@json_option
@handle_errors
def machine_migrate(
    home: str | None, machine: str | None, seed: bytes | None, as_json: bool
) -> None:
    """Move a home made before the machine existed (its seed inside) onto a NEW machine with a
    NEW seed (the old one must be assumed read), and print what the owner runs next.

    \b
    Examples:
      sgxlaunch machine migrate --home home --machine machine.json
      sgxlaunch machine migrate --home home --machine machine.json --json
    """
    home_path = resolve_home(home)
    machine_path = resolve_machine(machine)
    _refuse_if_served(
        "machine migrate",
        home_path,
        machine_path,
        "migrating rewrites the home the daemon has open, and it is the machine "
        "administrator's act at the machine, never a request to the daemon",
    )
    with open_store(home_path, create=False) as store:
        config = legacy_config(store)
        if config is None:
            raise UsageError(f"{home_path}: holds no platform seed; nothing to migrate")
        state = PlatformConfig(
            epc_size=config.epc_size,
            firmware=config.firmware,
            firmware_lepubkeyhash=config.firmware_lepubkeyhash,
        ).machine_state(seed or os.urandom(32))
        file_machine = FileMachine.create(machine_path, state)
        try:
            archived = migrate_legacy_home(store, file_machine, utc_now())
        except BaseException:
            machine_path.unlink(missing_ok=True)
            raise
        root = store.get("owner/root")
    h, m = home_path, machine_path
    digest = None if root is None else root_digest_of(root).hex()
    next_steps = [
        f"sgxlaunch platform le-sign --key LE_KEY.pem --home {h} --machine {m}",
        f"sgxlaunch platform install-policy POLICY.json --home {h} --machine {m}",
        f"sgxlaunch platform mode MODE.json --home {h} --machine {m}",
    ]
    if as_json:
        echo_json(
            {
                "home": str(h),
                "machine": str(m),
                "platform_id": state.platform_id.hex(),
                "owner_root_digest": digest,
                "archived": len(archived),
                "next": next_steps,
            }
        )
        return
    click.echo(f"migrated: new machine {m} (platform id {state.platform_id.hex()})")
    if digest is not None:
        click.echo(f"owner root digest bound: {digest} (check it is yours)")
    click.echo(f"archived under archive/legacy/: {len(archived)} entries")
    click.echo("the owner runs next:")
    for step in next_steps[:-1]:
        click.echo(f"  {step}")
    click.echo(
        f"  {next_steps[-1]}   (re-sign a mode document bound to the old platform id for "
        f"{state.platform_id.hex()})"
    )


@platform_group.command("take-ownership")
@click.argument("root", type=click.Path(exists=True, dir_okay=False))
@home_option
@machine_option
@socket_option
@json_option
@handle_errors
def platform_take_ownership(
    root: str, home: str | None, machine: str | None, socket: str | None, as_json: bool
) -> None:
    """Take ownership of a machine without an owner (or restore the home's copy of the root
    the machine is bound to); prints the bound root digest.

    \b
    Examples:
      sgxlaunch platform take-ownership root.json --home home --machine machine.json
      sgxlaunch platform take-ownership root.json --json
    """
    data = read_platform_input(root)
    client = daemon_client(home, machine, socket)
    if client is not None:
        send_file(client, "/v1/ownership", root)
    else:
        home_path, machine_path = resolve_home(home), resolve_machine(machine)
        refuse_if_served(home_path, machine_path)
        file_machine = FileMachine(machine_path)  # no machine here: refused before a home is made
        if not (home_path / STATE_FILE).exists():
            with about(root, verification=True):
                TrustedState.bootstrap(data, utc_now())  # a bad root: no home is made either
            # nor for a machine another root owns (take_ownership's check, made first)
            check_ownership_open(file_machine, root_digest_of(data))
        with open_store(home_path) as store, about(root):
            take_ownership(store, file_machine, data, utc_now())
    digest = root_digest_of(data).hex()
    if as_json:
        echo_json({"root": root, "owner_root_digest": digest})
    else:
        click.echo(digest)


@click.group("recovery")
def recovery_group() -> None:
    """Owner recovery from a refused start (lost or damaged home): a document signed by a
    threshold of the owner's keys, bound to the platform and the monotonic counter's value."""


@recovery_group.command("sign")
@click.option("--platform-id", type=HexBytesParam(32), required=True)
@click.option("--counter", type=click.IntRange(0), required=True)
@signing_keys_option()
@output_option("The recovery document to write.", dest="out")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@json_option
@handle_errors
def recovery_sign(
    platform_id: bytes,
    counter: int,
    keys: tuple[str, ...],
    out: str,
    force: bool,
    as_json: bool,
) -> None:
    """Sign a recovery document (the refusal message names the platform id and counter).

    \b
    Example:
      sgxlaunch recovery sign --platform-id 3c9a… --counter 6 --key keys/a.key.pem \\
          --key keys/b.key.pem -o recovery.json
    """
    signers = [load_signer(k) for k in keys]
    envelope = sign_payload(RECOVERY_PAYLOAD_TYPE, recovery_payload(platform_id, counter), signers)
    write_output(out, envelope.to_bytes(), force=force)
    if as_json:
        facts = {"platform_id": platform_id.hex(), "counter": counter}
        keyids = [s.public_key.keyid for s in signers]
        echo_json(signed_result(out, envelope, keyids, facts))


@recovery_group.command("apply")
@click.argument("document", type=click.Path(exists=True, dir_okay=False))
@home_option
@machine_option
@socket_option
@json_option
@handle_errors
def recovery_apply(
    document: str, home: str | None, machine: str | None, socket: str | None, as_json: bool
) -> None:
    """Commit the documents now in the home as the launch enclave's state (counter + 1).

    DOCUMENT is `recovery sign`'s output for this platform and the counter's value. Exit 0
    recovered; 1 if it does not verify (signatures under the owner root, the platform, the
    counter value); 2 if it is malformed, the home has no owner root, or the platform started
    normally (recovery is for a refused start). A refused DOCUMENT is refused before a launch
    enclave starts: nothing in the home or the machine changes.

    \b
    Example:
      sgxlaunch recovery apply recovery.json --home home --machine machine.json
    """
    data = read_platform_input(document)
    # A malformed document is refused here, before the launch enclave is started over the home
    # (a start appends its own records to the log and moves the counter).
    with about(document):
        recovery_fields(check_envelope(data, RECOVERY_PAYLOAD_TYPE, max_size=64 << 10).payload)
    client = daemon_client(home, machine, socket)
    if client is not None:
        result = send_file(client, "/v1/recovery", document)
    else:
        with open_platform(home, machine, maintenance=True) as platform, about(document):
            result = platform.recover(data)
    if as_json:
        echo_json(result)
    else:
        click.echo(f"recovered at counter {result['counter']}")


def _refuse_if_served(command: str, home: Path | None, machine: Path, why: str) -> None:
    """Refuse a physical-presence command while sgxlaunchd holds the machine (or home).

    Raises:
        UsageError: naming the daemon, why, and what to do instead.
    """
    holder = served_by(home, machine)
    if holder is not None:
        pid = holder.get("pid")
        raise UsageError(
            f"{command}: sgxlaunchd (pid {pid}, socket {holder.get('socket')}) holds this "
            f"platform; {why}. Stop the daemon first (`systemctl stop sgxlaunchd`, or "
            f"`kill -TERM {pid}`), run this again, then start the daemon"
        )


def register(main: click.Group) -> None:
    """Add ``machine`` and ``recovery`` (and ``platform take-ownership``)."""
    main.add_command(machine_group)
    main.add_command(recovery_group)
