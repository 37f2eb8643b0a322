"""``sgxlaunch run``: load and initialize an enclave, or say exactly why it was refused."""

from __future__ import annotations

import os
from typing import Any

import click

from sgxlaunch._images import is_sdk_file, sdk_sigstruct
from sgxlaunch.arch import Sigstruct
from sgxlaunch.cli._common import (
    IntParam,
    about,
    echo_json,
    handle_errors,
    home_option,
    json_option,
    machine_option,
    socket_option,
    utc_now,
)
from sgxlaunch.cli._daemon import daemon_client, opened
from sgxlaunch.cli._home import open_platform, read_platform_input
from sgxlaunch.cli._output import set_failure_result
from sgxlaunch.driver import LoadFailed
from sgxlaunch.errors import PolicyDenied, UsageError
from sgxlaunch.formats import sgxs
from sgxlaunch.launch.platform import Platform
from sgxlaunch.policy import MemoryStore, Store
from sgxlaunch.service.client import RemoteError, b64
from sgxlaunch.service.results import denial_result, log_warnings, refusal_result


@click.command("run")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--sig",
    "sig_path",
    type=click.Path(exists=True, dir_okay=False),
    help="The enclave's SIGSTRUCT (an SDK enclave's own is used when omitted).",
)
@click.option(
    "--token",
    "token_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Use this EINITTOKEN instead of asking the owner's launch enclave.",
)
@click.option("--size", type=IntParam(64), help="Enclave size for an UNSIZED SGXS image.")
@click.option(
    "--ephemeral",
    is_flag=True,
    help="Run on a throwaway permissive platform instead of the one in --home.",
)
@click.option(
    "--input",
    "ecall_input",
    default="",
    help="What to pass to ECALL 0 of an enclave whose program ships with sgxlaunch "
    "(the example enclave).",
)
@home_option
@machine_option
@socket_option
@json_option
@handle_errors
def run(
    image: str,
    sig_path: str | None,
    token_path: str | None,
    size: int | None,
    ephemeral: bool,
    ecall_input: str,
    home: str | None,
    machine: str | None,
    socket: str | None,
    as_json: bool,
) -> None:
    """Load and initialize an enclave on the platform, or say exactly why it was refused.

    In owner mode the owner's launch enclave evaluates the policy and mints the token;
    the attempt is recorded in the launch log either way. On failure: the check in words
    (expected vs found), the errno and the SGX status; exit 1. An enclave whose program ships
    with sgxlaunch (`sgxlaunch example`) is then entered: ECALL 0 with --input, and its
    answer is printed.

    An Intel SDK enclave (enclave.signed.so) is loaded page by page as the SDK's loader
    builds it, with the SIGSTRUCT of its note unless --sig is given. Its code is native x86,
    which the emulated platform does not execute: it stops after EINIT and says so, having
    proved the measurement and the launch decision.

    \b
    Examples:
      sgxlaunch run enclave.sgxs --sig enclave.sig
      sgxlaunch run enclave.sgxs --sig enclave.sig --json
      sgxlaunch run enclave.signed.so
    """
    from sgxlaunch._api import read_image  # streams an SGXS image in fixed-size reads

    native = is_sdk_file(image)
    parsed_image = read_image(image, size=size)  # an SDK enclave: the pages its loader adds
    if sig_path is None:
        if not native:
            raise UsageError("--sig is required for an SGXS image")
        sig = sdk_sigstruct(image)
    else:
        with about(sig_path):
            sig = Sigstruct.from_bytes(read_platform_input(sig_path))
    token = read_platform_input(token_path) if token_path else None
    client = None if ephemeral else daemon_client(home, machine, socket)
    if ephemeral:
        store: Store = MemoryStore()
        platform = Platform.create(store, seed=os.urandom(32), clock=utc_now)
        _run_and_report(platform, parsed_image, sig, token, ecall_input, as_json)
    elif client is not None:
        # The files go to the daemon as open descriptors; an SDK enclave's own SIGSTRUCT as bytes.
        with opened(image, sig_path, token_path) as fds:
            body: dict[str, Any] = {"image_fd": 0, "size": size, "input": ecall_input}
            if sig_path is None:
                body["sigstruct"] = b64(sig.to_bytes())
            else:
                body["sigstruct_fd"] = 1
            if token_path is not None:
                body["token_fd"] = len(fds) - 1
            try:
                result, warnings = client.call_warned("POST", "/v1/run", body, fds=fds)
            except RemoteError as exc:
                _warn(exc.warnings)
                raise
            _warn(warnings)
            _report(result, sig, as_json)
    else:
        with open_platform(home, machine) as platform:
            _run_and_report(platform, parsed_image, sig, token, ecall_input, as_json)
    if native:
        click.echo(
            f"sgxlaunch: {image} is an Intel SDK enclave: its code is native x86, which the "
            "emulated platform does not run; stopped after EINIT",
            err=True,
        )


def _run_and_report(
    platform: Platform,
    image: sgxs.SgxsImage,
    sig: Sigstruct,
    token: bytes | None,
    ecall_input: str,
    as_json: bool,
) -> None:
    try:
        launch = _run(platform, image, sig, token, ecall_input.encode())
    except PolicyDenied as exc:
        set_failure_result(denial_result(exc, platform.mode, sig))
        raise
    except LoadFailed as exc:
        set_failure_result(refusal_result(exc, platform.mode, sig))
        raise
    _report(launch.describe(), sig, as_json)


def _report(result: dict[str, Any], sig: Sigstruct, as_json: bool) -> None:
    """Print a launch's ``describe()`` (from this process or from sgxlaunchd)."""
    if as_json:
        echo_json(result)
        return
    click.echo(f"initialized: mrenclave {sig.enclavehash.hex()}")
    click.echo(f"             mrsigner  {sig.mrsigner.hex()}")
    rule, keyid = result.get("rule"), result.get("token_keyid")
    click.echo(
        f"mode {result['mode']}; decision {result['decision']}"
        + (f" (rule {rule})" if rule else "")
        + (f"; token keyid {keyid[:16]}…" if keyid else "")
    )
    if result.get("ecall_output") is not None:
        click.echo(f"ecall 0: {result['ecall_output']}")


def _run(
    platform: Platform,
    image: sgxs.SgxsImage,
    sig: Sigstruct,
    token: bytes | None,
    ecall_input: bytes,
) -> Any:
    from sgxlaunch._api import run

    try:
        return run(platform, image, sig, token=token, ecall_input=ecall_input)
    finally:
        _warn(log_warnings(platform.log_errors))


def _warn(warnings: list[str]) -> None:
    """A launch's warnings on stderr (made here, or sent by sgxlaunchd: the same words)."""
    for warning in warnings:
        click.echo(f"sgxlaunch: warning: {warning}", err=True)


def register(main: click.Group) -> None:
    """Add ``run`` to the ``sgxlaunch`` group."""
    main.add_command(run)
