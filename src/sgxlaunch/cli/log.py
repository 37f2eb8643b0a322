"""``sgxlaunch log …``: the launch log, shown and verified inside the launch enclave; exported
and attested for a remote collector, and verified there with no home and no MAC key
(``docs/launch.md``, "The attested log and the remote collector")."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

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
    socket_option,
    utc_now,
    write_output,
)
from sgxlaunch.cli._daemon import daemon_client
from sgxlaunch.cli._documents import TimeParam
from sgxlaunch.cli._home import open_platform
from sgxlaunch.cli._output import set_failure_result
from sgxlaunch.errors import UsageError
from sgxlaunch.launch.log import MAX_NONCE, LogHead, LogTampered

_NONCE_HELP = "The collector's nonce: 1 to 64 bytes as hex (a fresh one for every attestation)."


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
    """List the launch log's records (use `log verify` to check them).

    \b
    Examples:
      sgxlaunch log show --home home --machine machine.json
      sgxlaunch log show --json
    """
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
        if r.get("kind") == "epoch":
            click.echo(
                f"{seq!s:>4}  {r.get('time')}  epoch {r.get('epoch')} opened by the owner's "
                f"{r.get('cause')} document (launch-enclave signer "
                f"{str(r.get('le_mrsigner'))[:16]}…)"
            )
            continue
        if r.get("kind") == "outcome":
            line = f"{seq!s:>4}  {r.get('time')}  outcome of {r.get('attempt')}: {r.get('outcome')}"
            if r.get("errno"):
                line += f"  {r['errno']}"
            if r.get("sgx_status") and r["sgx_status"] != "SUCCESS":
                line += f" {r['sgx_status']}"
            click.echo(line)
            pages = r.get("refused_pages")
            if isinstance(pages, dict):  # the owner's EINIT-time page checks (issue 17)
                click.echo(f"        {pages.get('count')} pages refused: {r.get('reason')}")
            continue
        if r.get("kind") == "code-key-added":
            click.echo(
                f"{seq!s:>4}  {r.get('time')}  code key {str(r.get('key_id'))[:16]}… added; "
                f"released only to {_constraint_text(r.get('constraint'))}"
            )
            continue
        who = str(r.get("mrenclave") or "?")[:16]
        if r.get("kind") == "grant":
            span = _span(r)
            click.echo(
                f"{seq!s:>4}  {r.get('time')}  attested-code grant {r.get('verdict', '?')}: "
                f"mrenclave {who}… instance {str(r.get('configid') or '?')[:16]}… pages {span} "
                f"code {r.get('code_hash')}" + (f" (rule {r['rule']})" if r.get("rule") else "")
            )
            _echo_reasons(r)
            continue
        if r.get("kind") == "code-key-release":
            outcome = "released" if r.get("outcome") == "released" else "REFUSED"
            rule = f" (rule {r['rule']})" if r.get("rule") else ""
            click.echo(
                f"{seq!s:>4}  {r.get('time')}  code key {str(r.get('key_id'))[:16]}… {outcome} "
                f"to mrenclave {who}… isvsvn {r.get('isvsvn')}{rule}"
            )
            _echo_reasons(r)
            continue
        if r.get("kind") == "dynamic":
            click.echo(_dynamic_line(seq, r, who))
            if r.get("code_hash"):
                click.echo(f"        code sha256 {r['code_hash']}")
            continue
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
        limits = r.get("token_limits")
        if isinstance(limits, dict):  # what the token lets the enclave do after EINIT
            click.echo(
                f"        dynamic_memory {limits.get('dynamic_memory')}, unmeasured_exec "
                f"{limits.get('unmeasured_exec')}, rwx_pages {limits.get('rwx_pages')}"
            )
        _echo_reasons(r)
    if not records:
        info("(no records)")


def _echo_reasons(r: dict[str, Any]) -> None:
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
        click.echo(f"        … {total - len(reasons)} more reasons ({r.get('reasons_by_field')})")


def _constraint_text(constraint: Any) -> str:
    """A release constraint as logged: who may receive the code key."""
    if not isinstance(constraint, dict):
        return "?"
    if "mrenclave" in constraint:
        who = f"mrenclave {str(constraint['mrenclave'])[:16]}…"
    else:
        who = (
            f"mrsigner {str(constraint.get('mrsigner'))[:16]}… "
            f"isvprodid {constraint.get('isvprodid')}"
        )
    return f"{who}, ISVSVN >= {constraint.get('min_isvsvn')}, non-debug"


def _span(r: dict[str, Any]) -> str:
    """A grant's or dynamic record's page range: ``0xOFFSET+0xLENGTH``."""
    offset, length = r.get("offset"), r.get("length")
    if isinstance(offset, int) and isinstance(length, int):
        return f"0x{offset:x}+0x{length:x}"
    return "?"


def _dynamic_line(seq: object, r: dict[str, Any], who: str) -> str:
    """One ``dynamic`` record (the driver's decision about dynamic memory, issue 17)."""
    head = f"{seq!s:>4}  {r.get('time')}  dynamic"
    if r.get("outcome") == "dropped":
        return f"{head}  the driver's event queue dropped {r.get('dropped')} events"
    line = (
        f"{head}  {r.get('level', '?')!s:<13} {r.get('action')} {r.get('prot')} {_span(r)} "
        f"{r.get('outcome')}"
    )
    if r.get("errno") or r.get("signal"):
        line += f" {r.get('errno') or r.get('signal')}"
    return line + f"  mrenclave {who}…"


@log_group.command("export")
@output_option("File to write the records to (JSON lines).")
@click.option(
    "--from",
    "first_seq",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="First record to export (a collector that holds the head before it).",
)
@click.option("--force", is_flag=True, help="Overwrite the output file.")
@home_option
@machine_option
@socket_option
@json_option
@handle_errors
def log_export(
    output: str,
    first_seq: int,
    force: bool,
    home: str | None,
    machine: str | None,
    socket: str | None,
    as_json: bool,
) -> None:
    """Export the launch log's records for a remote collector (JSON lines, no MAC key).

    Line 1 is a header (format, first_seq, count, head, platform_id, le_mrsigner); every other
    line is one record body exactly as the launch enclave chained it (SHA-256 of the line is the
    record's hash). Nothing is verified here: `log verify --records` on the collector does it,
    against a head the launch enclave attests (`log attest`).

    \b
    Examples:
      sgxlaunch log export -o log.jsonl
      sgxlaunch log export --from 120 -o new.jsonl
    """
    client = daemon_client(home, machine, socket)
    if client is not None:
        data = base64.b64decode(client.call("GET", f"/v1/log/export?from={first_seq}")["export"])
    else:
        with open_platform(home, machine) as platform:
            data = platform.export_log(first_seq)
    write_output(output, data, force=force)
    count = data.count(b"\n") - 1
    if as_json:
        echo_json({"output": output, "first_seq": first_seq, "records": count})
    else:
        info(f"wrote {plural(count, 'record')} to {output}")


@log_group.command("attest")
@click.option(
    "--nonce", required=True, type=HexBytesParam(MAX_NONCE, allow_shorter=True), help=_NONCE_HELP
)
@output_option("The quote file to write (the launch enclave's quote of the log head).")
@click.option(
    "--records-out",
    type=click.Path(dir_okay=False),
    help="Where the attested records go (JSON lines; default: OUTPUT.records.jsonl).",
)
@click.option(
    "--from",
    "first_seq",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="First record to write (a collector that holds the head before it).",
)
@click.option("--force", is_flag=True, help="Overwrite the output files.")
@home_option
@machine_option
@socket_option
@json_option
@handle_errors
def log_attest(
    nonce: bytes,
    output: str,
    records_out: str | None,
    first_seq: int,
    force: bool,
    home: str | None,
    machine: str | None,
    socket: str | None,
    as_json: bool,
) -> None:
    """Quote the launch log's head for a remote collector, and write the records it attests.

    The launch enclave makes a REPORT for the platform's quoting enclave whose REPORTDATA is
    SHA-256(domain tag, nonce, the machine's platform id, record count, chain head); the QE
    quotes it (a DCAP quote v3). The records go to --records-out in the `log export` format,
    with the attested head in the header. The PCE and QE are launched first when they are not
    running (in owner mode the policy must allow them: `sgxlaunch policy new` adds the rules).
    Check it anywhere with `sgxlaunch log verify --records … --quote …`.

    \b
    Examples:
      sgxlaunch log attest --nonce 5f1c0a9e77d2c4b8 -o head.quote --records-out log.jsonl
      sgxlaunch log attest --nonce 5f1c0a9e77d2c4b8 -o head.quote --from 120 --json
    """
    records_path = records_out if records_out is not None else f"{output}.records.jsonl"
    for path in (output, records_path):
        if Path(path).exists() and not force:
            raise UsageError(f"{path}: exists; use --force to overwrite it")
    client = daemon_client(home, machine, socket)
    if client is not None:
        body = {"nonce": nonce.hex(), "from": first_seq}
        answer = client.call("POST", "/v1/log/attest", body)
        quote, export = base64.b64decode(answer["quote"]), base64.b64decode(answer["export"])
        platform_id = bytes.fromhex(answer["platform_id"])
        signer = None if answer["le_mrsigner"] is None else bytes.fromhex(answer["le_mrsigner"])
        head = LogHead(answer["count"], bytes.fromhex(answer["head"]))
    else:
        with open_platform(home, machine) as platform:
            quote, attestation = platform.attest_log_quote(nonce, first_seq=first_seq)
            platform_id = platform.platform_id
            signer = platform.le_signer
        export, head = attestation.export, attestation.head
    write_output(records_path, export, force=force)
    write_output(output, quote, force=force)
    result = {
        "output": output,
        "records_out": records_path,
        "nonce": nonce.hex(),
        "platform_id": platform_id.hex(),
        "le_mrsigner": None if signer is None else signer.hex(),
        "count": head.count,
        "head": head.hash.hex(),
        "first_seq": first_seq,
    }
    if as_json:
        echo_json(result)
        return
    click.echo(f"platform_id: {platform_id.hex()}")
    click.echo(f"le_mrsigner: {result['le_mrsigner']}")
    click.echo(f"attested head: {plural(head.count, 'record')} ending {head.hash.hex()}")
    info(f"wrote {output} and {records_path}")


@log_group.command("verify")
@click.option(
    "--records",
    type=click.Path(exists=True, dir_okay=False),
    help="Verify an exported log remotely (no home, no MAC key) instead of the local one.",
)
@click.option(
    "--quote",
    type=click.Path(exists=True, dir_okay=False),
    help="The launch enclave's quote of the log head (`log attest -o`).",
)
@click.option(
    "--collateral",
    type=click.Path(exists=True, dir_okay=False),
    help="The platform's collateral JSON (`platform collateral -o`).",
)
@click.option(
    "--root",
    type=click.Path(exists=True, dir_okay=False),
    help="The root certificate to trust (`platform root -o`; default Intel's SGX Root CA).",
)
@click.option("--nonce", type=HexBytesParam(MAX_NONCE, allow_shorter=True), help=_NONCE_HELP)
@click.option(
    "--le-mrsigner",
    type=HexBytesParam(32),
    help="MRSIGNER of the owner's launch enclave (64 hex digits).",
)
@click.option(
    "--owner-root",
    type=click.Path(exists=True, dir_okay=False),
    help="The owner root envelope (fixes the launch enclave's MRENCLAVE).",
)
@click.option(
    "--platform-id",
    type=HexBytesParam(32),
    help="The platform the log is from (64 hex digits, as `platform status` shows).",
)
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False),
    help=(
        "The collector's state file: (epoch, count, head) per platform; updated on success. "
        "Held locked (FILE.lock) while in use: collectors sharing it run one after another."
    ),
)
@click.option(
    "--at", "at", type=TimeParam(), help="Check the collateral at this UTC time (default: now)."
)
@home_option
@machine_option
@socket_option
@json_option
@handle_errors
def log_verify(
    records: str | None,
    quote: str | None,
    collateral: str | None,
    root: str | None,
    nonce: bytes | None,
    le_mrsigner: bytes | None,
    owner_root: str | None,
    platform_id: bytes | None,
    state_path: str | None,
    at: datetime | None,
    home: str | None,
    machine: str | None,
    socket: str | None,
    as_json: bool,
) -> None:
    """Verify the launch log: locally inside the launch enclave, or remotely with --records.

    Local (no --records): every record's MAC and the chain, against the head the launch enclave
    sealed; names the first bad record.

    Remote (--records, on another machine, no home and no MAC key): the quote (collateral, the
    pinned root, dcap-qvl); the quoted enclave is the owner's launch enclave (MRSIGNER named,
    MRENCLAVE of the launch enclave for that owner root, not DEBUG); REPORTDATA binds the nonce,
    the platform id and the head the exported records chain to; an epoch record (after owner
    recovery or a new launch-enclave signer) carries an owner-signed document; with --state the
    records extend the head verified before for this platform, or open a later epoch. The
    state file is written only when everything verifies. Exit 0 verified, 1 refused, 2
    malformed.

    \b
    Examples:
      sgxlaunch log verify
      sgxlaunch log verify --records log.jsonl --quote head.quote --collateral C.json \\
          --root R.der --nonce 5f1c… --le-mrsigner 9a0b… --owner-root root.json \\
          --platform-id 3c9a… --state collector.json
    """
    remote = {
        "--quote": quote,
        "--collateral": collateral,
        "--nonce": nonce,
        "--le-mrsigner": le_mrsigner,
        "--owner-root": owner_root,
        "--platform-id": platform_id,
    }
    if records is None:
        given = [name for name, value in remote.items() if value is not None]
        given += [n for n, v in (("--root", root), ("--state", state_path), ("--at", at)) if v]
        if given:
            raise UsageError(f"{', '.join(given)}: only with --records (remote verification)")
        _verify_local(home, machine, socket, as_json)
        return
    missing = [name for name, value in remote.items() if value is None]
    if missing:
        raise UsageError(f"remote verification (--records) needs {', '.join(missing)}")
    if home is not None or machine is not None or socket is not None:
        raise UsageError("remote verification (--records) uses no --home, --machine or --socket")
    assert quote and collateral and owner_root
    assert nonce is not None and le_mrsigner is not None and platform_id is not None
    _verify_remote(
        records,
        quote,
        collateral,
        root,
        nonce,
        le_mrsigner,
        owner_root,
        platform_id,
        state_path,
        at,
        as_json,
    )


def _verify_local(home: str | None, machine: str | None, socket: str | None, as_json: bool) -> None:
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


@contextlib.contextmanager
def _collector_lock(state_path: str | None) -> Iterator[None]:
    """Hold ``<state>.lock`` exclusively from reading the collector's state file to writing it.

    Two collectors given the same ``--state`` then run one after the other: neither writes a
    state read before the other's write (a lost update would make the collector forget a
    platform's head and accept a stale log of it as new).

    Raises:
        UsageError: the lock file cannot be opened (names it).
    """
    if state_path is None:
        yield
        return
    path = Path(state_path)
    lock = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UsageError(
            f"{lock}: cannot open the collector's lock file ({exc.strerror})",
            detail=["--state needs a directory it can write the state and its .lock file in"],
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _verify_remote(
    records: str,
    quote: str,
    collateral: str,
    root: str | None,
    nonce: bytes,
    le_mrsigner: bytes,
    owner_root: str,
    platform_id: bytes,
    state_path: str | None,
    at: datetime | None,
    as_json: bool,
) -> None:
    from sgxlaunch.attest import Collateral, TrustAnchor
    from sgxlaunch.attest.roots import MAX_ROOT_SIZE
    from sgxlaunch.attest.verify import MAX_COLLATERAL_SIZE
    from sgxlaunch.formats.quote import MAX_QUOTE_SIZE, parse_quote
    from sgxlaunch.launch.collector import CollectorState, Expectation, verify_log_quote
    from sgxlaunch.launch.collector import owner_root as check_owner_root

    now = at if at is not None else utc_now()
    quote_data = read_input(quote, limit=MAX_QUOTE_SIZE)
    with about(quote):
        parse_quote(quote_data)
    collateral_data = read_input(collateral, limit=MAX_COLLATERAL_SIZE)
    with about(collateral):
        parsed_collateral = Collateral.from_bytes(collateral_data)
    anchor = TrustAnchor.intel()
    if root is not None:
        root_data = read_input(root, limit=MAX_ROOT_SIZE)
        with about(root):
            anchor = TrustAnchor.from_certificate(root_data)
    root_envelope = read_input(owner_root)
    export = read_input(records)
    with _collector_lock(state_path):
        state = None
        if state_path is not None:
            state = CollectorState()
            if Path(state_path).exists():
                state_data = read_input(state_path)
                with about(state_path):
                    state = CollectorState.from_bytes(state_data)
        expect = Expectation(
            nonce=nonce, platform_id=platform_id, le_mrsigner=le_mrsigner, owner_root=root_envelope
        )
        try:
            with about(owner_root, verification=True):
                check_owner_root(root_envelope)
            with about(records):
                verified, quoted = verify_log_quote(
                    quote_data,
                    parsed_collateral,
                    now,
                    export,
                    expect,
                    anchor=anchor,
                    state=state,
                )
        except LogTampered as exc:
            set_failure_result({"valid": False, "first_bad_record": exc.index})
            raise
        if state_path is not None and verified.state is not None:
            write_output(state_path, verified.state.to_bytes(), force=True)
    result = verified.describe() | {
        "tcb_status": quoted.tcb_status,
        "advisory_ids": list(quoted.advisory_ids),
    }
    if as_json:
        echo_json(result)
        return
    click.echo(
        f"OK: {plural(verified.head.count, 'record')} of platform {platform_id.hex()[:16]}… "
        f"(epoch {verified.epoch}) chain to the attested head {verified.head.hash.hex()[:16]}…"
    )
    click.echo(f"launch enclave: MRENCLAVE {verified.le_mrenclave.hex()}, not DEBUG")
    click.echo(f"tcb_status: {quoted.tcb_status}")
    if verified.change is not None:
        click.echo(f"state: {verified.change} (+{plural(verified.new_records, 'new record')})")


def register(main: click.Group) -> None:
    """Add ``log`` to the ``sgxlaunch`` group."""
    main.add_command(log_group)
