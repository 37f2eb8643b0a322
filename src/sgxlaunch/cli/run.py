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
    utc_now,
)
from sgxlaunch.cli._home import open_platform, read_platform_input
from sgxlaunch.cli._output import set_failure_result
from sgxlaunch.driver import LoadFailed
from sgxlaunch.errors import PolicyDenied, UsageError
from sgxlaunch.formats import sgxs
from sgxlaunch.launch.platform import Platform
from sgxlaunch.policy import MemoryStore, Store


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
    if ephemeral:
        store: Store = MemoryStore()
        platform = Platform.create(store, seed=os.urandom(32), clock=utc_now)
        _run_and_report(platform, parsed_image, sig, token, ecall_input, as_json)
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
        set_failure_result(
            {
                "initialized": False,
                "mode": platform.mode,
                "decision": "denied",
                "rule": exc.rule,
                "reasons": [dict(r) for r in exc.reasons],
                "mrenclave": sig.enclavehash.hex(),
                "mrsigner": sig.mrsigner.hex(),
            }
        )
        raise
    except LoadFailed as exc:
        set_failure_result(
            {
                "initialized": False,
                "mode": platform.mode,
                "decision": "refused",
                "step": exc.step,
                "errno": exc.errno_name,
                "sgx_status": None if exc.status is None else exc.status.name,
                "why": list(exc.detail),
                "mrenclave": sig.enclavehash.hex(),
                "mrsigner": sig.mrsigner.hex(),
            }
        )
        raise
    result = launch.result
    if as_json:
        echo_json(launch.describe())
        return
    click.echo(f"initialized: mrenclave {sig.enclavehash.hex()}")
    click.echo(f"             mrsigner  {sig.mrsigner.hex()}")
    click.echo(
        f"mode {result.mode}; decision {result.decision}"
        + (f" (rule {result.rule})" if result.rule else "")
        + (f"; token keyid {result.keyid[:16]}…" if result.keyid else "")
    )
    if launch.ecall_output is not None:
        click.echo(f"ecall 0: {launch.ecall_output.decode('utf-8', errors='replace')}")


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
        for problem in platform.log_errors:
            click.echo(f"sgxlaunch: warning: the attempt was not logged: {problem}", err=True)


def register(main: click.Group) -> None:
    """Add ``run`` to the ``sgxlaunch`` group."""
    main.add_command(run)
