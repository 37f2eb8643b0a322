"""``sgxlaunch log …``: the launch log, shown and verified inside the launch enclave."""

from __future__ import annotations

from typing import Any

import click

from sgxlaunch.cli._common import (
    echo_json,
    handle_errors,
    home_option,
    json_option,
    machine_option,
    plural,
    socket_option,
)
from sgxlaunch.cli._daemon import daemon_client
from sgxlaunch.cli._home import open_platform
from sgxlaunch.cli._output import set_failure_result
from sgxlaunch.launch.log import LogTampered


@click.group("log")
def log_group() -> None:
    """The launch log: every INIT attempt, hash-chained and MACed by the launch enclave."""


@log_group.command("show")
@home_option
@machine_option
@socket_option
@json_option
@handle_errors
def log_show(home: str | None, machine: str | None, socket: str | None, as_json: bool) -> None:
    """List the launch log's records (use `log verify` to check them)."""
    client = daemon_client(home, machine, socket)
    if client is not None:
        records: list[dict[str, Any]] = []
        start: int | None = 0
        while start is not None:
            page = client.call("GET", f"/v1/log/records?start={start}")
            records.extend(page["records"])
            start = page["next"]
    else:
        with open_platform(home, machine) as platform:
            records = platform.log_records()
    if as_json:
        echo_json({"count": len(records), "records": records})
        return
    for r in records:
        seq = r.get("seq")
        if "malformed" in r:
            click.echo(f"{seq!s:>4}  MALFORMED: {r['malformed']}")
            if len(r) <= 2:
                continue
        if r.get("kind") == "outcome":
            line = f"{seq!s:>4}  {r.get('time')}  outcome of {r.get('attempt')}: {r.get('outcome')}"
            if r.get("errno"):
                line += f"  {r['errno']}"
            if r.get("sgx_status") and r["sgx_status"] != "SUCCESS":
                line += f" {r['sgx_status']}"
            click.echo(line)
            continue
        who = str(r.get("mrenclave") or "?")[:16]
        if r.get("kind") == "teardown":
            click.echo(
                f"{seq!s:>4}  {r.get('time')}  teardown of mrenclave {who}…: "
                f"{r.get('pages_added_after_einit')} pages added after EINIT, "
                f"{r.get('pages_removed')} removed"
            )
            continue
        click.echo(
            f"{seq!s:>4}  {r.get('time')}  {r.get('mode', '?')!s:<10} "
            f"{r.get('decision', '?')!s:<11} {r.get('kind', 'attempt')!s:<11} mrenclave {who}…"
        )
        listed = r.get("reasons")
        reasons: list[Any] = listed if isinstance(listed, list) else []
        for reason in reasons:
            if isinstance(reason, dict):
                click.echo(
                    f"        {reason.get('field')}: expected {reason.get('expected')}, "
                    f"found {reason.get('found')}"
                )
        total = r.get("reasons_total")
        if isinstance(total, int) and total > len(reasons):
            click.echo(
                f"        … {total - len(reasons)} more reasons ({r.get('reasons_by_field')})"
            )
    if not records:
        click.echo("(no records)", err=True)


@log_group.command("verify")
@home_option
@machine_option
@socket_option
@json_option
@handle_errors
def log_verify(home: str | None, machine: str | None, socket: str | None, as_json: bool) -> None:
    """Verify the launch log inside the launch enclave; names the first bad record."""
    client = daemon_client(home, machine, socket)
    if client is not None:
        count = client.call("POST", "/v1/log/verify")["records"]
    else:
        with open_platform(home, machine) as platform:
            try:
                count = platform.verify_log()
            except LogTampered as exc:
                set_failure_result({"valid": False, "first_bad_record": exc.index})
                raise
    if as_json:
        echo_json({"valid": True, "records": count})
    else:
        click.echo(f"OK: {plural(count, 'record verifies', 'records verify')}")


def register(main: click.Group) -> None:
    """Add ``log`` to the ``sgxlaunch`` group."""
    main.add_command(log_group)
