"""DCAP quote commands: ``sgxlaunch quote inspect|verify`` and the owner's appraisal documents.

Thin: read files, call :mod:`sgxlaunch.formats.quote` and :mod:`sgxlaunch.attest`, print. Exit
codes: 0 acceptable, 1 not (verification failed or the appraisal refuses), 2 malformed input
or usage. ``--json`` output follows the one contract of ``docs/json.md``; a refused appraisal
still reports its ``result`` (the verification and every finding) beside the error. See
``docs/attest.md``.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from typing import Any

import click

from sgxlaunch.attest import (
    APPRAISAL_KEY,
    APPRAISAL_PAYLOAD_TYPE,
    Collateral,
    QuoteAppraisal,
    TrustAnchor,
    Verdict,
    VerifiedQuote,
    appraise,
    install_appraisal,
    load_appraisal,
    verify_quote,
)
from sgxlaunch.attest.appraisal import MAX_APPRAISAL_ENVELOPE_SIZE, is_envelope
from sgxlaunch.attest.roots import MAX_ROOT_SIZE
from sgxlaunch.attest.verify import MAX_COLLATERAL_SIZE
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
    read_input,
    signing_keys_option,
    socket_option,
    utc_now,
    write_output,
)
from sgxlaunch.cli._documents import TimeParam, signed_result
from sgxlaunch.cli._output import set_failure_result
from sgxlaunch.errors import UsageError
from sgxlaunch.formats.quote import MAX_QUOTE_SIZE, Quote, ReportBody, parse_quote
from sgxlaunch.policy import _json
from sgxlaunch.policy.envelope import Envelope, sign_payload
from sgxlaunch.policy.state import load_state
from sgxlaunch.store import load_signer, open_store, resolve_home


def _read_quote(path: str) -> tuple[bytes, Quote]:
    data = read_input(path, limit=MAX_QUOTE_SIZE)
    with about(path):
        return data, parse_quote(data)


def _print_fields(prefix: str, value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _print_fields(f"{prefix}.{key}" if prefix else key, item)
    elif isinstance(value, str) and "\n" in value:
        count = value.count("-----BEGIN CERTIFICATE-----")
        click.echo(f"{prefix}: ({count} PEM certificates, {len(value)} characters)")
    else:
        click.echo(f"{prefix}: {value}")


def register(main: click.Group) -> None:
    main.add_command(quote_group)


@click.group("quote")
def quote_group() -> None:
    """Read, verify and appraise Intel DCAP ECDSA quotes (v3, v4, v5; SGX and TDX).

    Verification uses the dcap-qvl library with Intel's SGX Root CA pinned (either of its two
    certificates); the owner's appraisal decides which enclaves, TCB statuses and advisories
    are acceptable. See docs/attest.md.
    """


@quote_group.command("inspect")
@click.argument("quote", type=click.Path(exists=True, dir_okay=False))
@json_option
@handle_errors
def quote_inspect(quote: str, as_json: bool) -> None:
    """Parse QUOTE strictly and print every field (names as in Intel's headers).

    Nothing is verified. Exit 0 if it parses, 2 naming the field and byte offset if not.

    \b
    Examples:
      sgxlaunch quote inspect quote.bin
      sgxlaunch quote inspect quote.bin --json
    """
    _, parsed = _read_quote(quote)
    fields = parsed.to_dict()
    if as_json:
        echo_json(fields)
        return
    _print_fields("", fields)


def _anchor(root: str | None) -> TrustAnchor:
    if root is None:
        return TrustAnchor.intel()
    data = read_input(root, limit=MAX_ROOT_SIZE)
    with about(root):
        return TrustAnchor.from_certificate(data)


def _appraisal(path: str, home: str | None, now: datetime) -> tuple[QuoteAppraisal, bool]:
    data = read_input(path, limit=MAX_APPRAISAL_ENVELOPE_SIZE)
    if not is_envelope(data):
        with about(path):
            return load_appraisal(data, now, root=None)
    with open_store(resolve_home(home), create=False) as store:
        state = load_state(store)
        installed = store.get(APPRAISAL_KEY)
    with about(path, verification=True):
        return load_appraisal(data, now, root=state.root, installed=installed)


def _print_verdict(verified: VerifiedQuote, verdict: Verdict | None) -> None:
    body = verified.quote.body
    click.echo(f"tcb_status: {verified.tcb_status}")
    click.echo(f"advisory_ids: {', '.join(verified.advisory_ids) or '-'}")
    if isinstance(body, ReportBody):
        click.echo(f"mrenclave: {body.mrenclave.hex()}")
        click.echo(f"mrsigner: {body.mrsigner.hex()}")
        click.echo(f"isvprodid: {body.isvprodid}  isvsvn: {body.isvsvn}")
    else:
        click.echo(f"mrtd: {body.mrtd.hex()}")
    click.echo(f"checked at: {_json.format_time(verified.at)} under {verified.root}")
    if verdict is None:
        click.echo("appraisal: none given (verification only)")
        return
    kind = "owner-signed" if verdict.signed else "unsigned local file"
    result = "acceptable" if verdict.acceptable else "NOT acceptable"
    click.echo(f"appraisal ({kind}, version {verdict.version}): {result}")
    for item in verdict.findings:
        mark = "ok  " if item.ok else "FAIL"
        click.echo(f"  {mark} {item.field}: expected {item.expected}; found {item.found}")


@quote_group.command("verify")
@click.argument("quote", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--collateral",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Collateral JSON (dcap-qvl's QuoteCollateralV3 form, as PCS/PCCS serve it).",
)
@click.option(
    "--at", "at", type=TimeParam(), help="Check validity at this UTC time (default: now)."
)
@click.option(
    "--root",
    type=click.Path(exists=True, dir_okay=False),
    help="Trust this root certificate (DER or PEM) instead of Intel's SGX Root CA.",
)
@click.option(
    "--appraisal",
    type=click.Path(exists=True, dir_okay=False),
    help="Owner appraisal: a signed envelope (checked against --home) or an unsigned document.",
)
@home_option
@json_option
@handle_errors
def quote_verify(
    quote: str,
    collateral: str,
    at: datetime | None,
    root: str | None,
    appraisal: str | None,
    home: str | None,
    as_json: bool,
) -> None:
    """Verify QUOTE against its collateral, then appraise it.

    Verification: strict parse, every chain ends in the pinned root, then dcap-qvl (PCK chain
    and CRLs, TCB info and QE identity at --at, quote and QE signatures, TCB level). Appraisal
    (with --appraisal): identity, minimum ISVSVN, acceptable TCB statuses, denied advisories;
    a signed appraisal is checked at the real time (--at moves only the collateral's clock).
    Exit 0 acceptable, 1 not, 2 malformed.

    \b
    Examples:
      sgxlaunch quote verify quote.bin --collateral collateral.json
      sgxlaunch quote verify quote.bin --collateral c.json --at 2025-07-01T00:00:00Z \\
          --appraisal appraisal.json --json
      sgxlaunch quote verify quote.dat --collateral c.json --root test-root.pem
    """
    now = at if at is not None else utc_now()
    data, _ = _read_quote(quote)
    anchor = _anchor(root)
    collateral_data = read_input(collateral, limit=MAX_COLLATERAL_SIZE)
    with about(collateral):
        parsed_collateral = Collateral.from_bytes(collateral_data)
    document = None
    if appraisal is not None:  # the owner's document is judged at the real time, never --at
        document = _appraisal(appraisal, home, utc_now())
    verified = verify_quote(data, parsed_collateral, now, anchor=anchor)
    verdict = None if document is None else appraise(document[0], verified, signed=document[1])
    result: dict[str, Any] = {
        "verification": verified.describe(),
        "appraisal": None if verdict is None else verdict.describe(),
    }
    if not as_json:
        _print_verdict(verified, verdict)
    if verdict is not None and not verdict.acceptable:
        set_failure_result(result)
        verdict.check()  # raises PolicyDenied naming the first failed rule (exit 1)
    if as_json:
        echo_json(result)


@quote_group.command("make")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--sig",
    "sig_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The enclave's SIGSTRUCT (non-debug).",
)
@click.option(
    "--reportdata",
    type=HexBytesParam(64, allow_shorter=True),
    default="",
    help="REPORTDATA, up to 64 bytes as hex (zero-padded on the right; default all zero).",
)
@output_option("The quote file to write.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@home_option
@machine_option
@socket_option
@json_option
@handle_errors
def quote_make(
    image: str,
    sig_path: str,
    reportdata: bytes,
    output: str,
    force: bool,
    home: str | None,
    machine: str | None,
    socket: str | None,
    as_json: bool,
) -> None:
    """Quote an enclave: it makes a REPORT for the platform's quoting enclave, which returns a
    DCAP ECDSA quote v3 with the platform's PCK certificate chain.

    IMAGE must run the example enclave (`sgxlaunch example`), which answers ECALL 1 with its
    REPORT; from Python, any enclave program can (sgxlaunch.make_quote, Platform.quote). The
    PCE and QE are launched like any enclave: in owner mode the owner's policy must allow
    them (`sgxlaunch policy new` adds the rules). Verify the quote anywhere with the
    platform's root and collateral: `sgxlaunch platform root`, `platform collateral`, then
    `sgxlaunch quote verify QUOTE --collateral C.json --root R.der`.

    \b
    Examples:
      sgxlaunch quote make enclave.sgxs --sig enclave.sig --reportdata 00ff -o quote.bin
      sgxlaunch quote make enclave.sgxs --sig enclave.sig -o quote.bin --json
    """
    from sgxlaunch._api import make_quote, read_image, read_sigstruct
    from sgxlaunch.cli._daemon import daemon_client, opened
    from sgxlaunch.cli._home import open_platform, read_platform_input

    parsed_image = read_image(image)
    with about(sig_path):
        sig = read_sigstruct(read_platform_input(sig_path))
    client = daemon_client(home, machine, socket)
    if client is not None:
        with opened(image, sig_path) as fds:
            request = {"image_fd": 0, "sigstruct_fd": 1, "reportdata": reportdata.hex()}
            data = base64.b64decode(client.call("POST", "/v1/quote", request, fds=fds)["quote"])
    else:
        with open_platform(home, machine) as platform:
            data = make_quote(platform, parsed_image, sig, reportdata=reportdata.ljust(64, b"\0"))
    quote = parse_quote(data)
    write_output(output, data, force=force)
    body = quote.body
    assert isinstance(body, ReportBody)
    qe = quote.signature_data.qe_report
    result = {
        "output": output,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "version": quote.version,
        "mrenclave": body.mrenclave.hex(),
        "mrsigner": body.mrsigner.hex(),
        "isvprodid": body.isvprodid,
        "isvsvn": body.isvsvn,
        "reportdata": body.reportdata.hex(),
        "qe": {"mrenclave": qe.mrenclave.hex(), "mrsigner": qe.mrsigner.hex(), "isvsvn": qe.isvsvn},
        "pce_svn": quote.header.pce_svn,
        "cpusvn": body.cpusvn.hex(),
        "certification_data_type": quote.signature_data.certification_data.cert_type,
    }
    if as_json:
        echo_json(result)
        return
    info(f"wrote {output}: quote v{quote.version}, {len(data)} bytes")
    click.echo(f"mrenclave:  {result['mrenclave']}")
    click.echo(f"mrsigner:   {result['mrsigner']}")
    click.echo(f"reportdata: {result['reportdata']}")
    click.echo(
        f"qe:         {qe.mrenclave.hex()} (isvsvn {qe.isvsvn}), pce svn {quote.header.pce_svn}"
    )


@quote_group.group("appraisal")
def appraisal_group() -> None:
    """The owner's quote-appraisal documents (signed by a threshold of the owner's keys)."""


@appraisal_group.command("sign")
@click.argument("document", type=click.Path(exists=True, dir_okay=False))
@signing_keys_option()
@output_option("Envelope to write (required when DOCUMENT is a bare document).", required=False)
@click.option("--force", is_flag=True, help="Overwrite the output file.")
@json_option
@handle_errors
def appraisal_sign(
    document: str, keys: tuple[str, ...], output: str | None, force: bool, as_json: bool
) -> None:
    """Sign an appraisal DOCUMENT into an envelope, or add signatures to an envelope.

    \b
    Examples:
      sgxlaunch quote appraisal sign appraisal.json --key keys/a.key.pem -o appraisal.dsse.json
      sgxlaunch quote appraisal sign appraisal.dsse.json --key keys/b.key.pem --json
    """
    data = read_input(document, limit=MAX_APPRAISAL_ENVELOPE_SIZE)
    signers = [load_signer(k) for k in keys]
    with about(document):
        if is_envelope(data):
            envelope = Envelope.from_bytes(data, max_size=MAX_APPRAISAL_ENVELOPE_SIZE)
            if envelope.payload_type != APPRAISAL_PAYLOAD_TYPE:
                raise UsageError(f"{document}: not a quote-appraisal envelope")
            appraisal = QuoteAppraisal.from_payload(envelope.payload)
            for signer in signers:
                envelope = envelope.signed_by(signer)
        else:
            appraisal = QuoteAppraisal.from_payload(data)
            if output is None:
                raise UsageError(f"{document} is a document: say where the envelope goes (-o)")
            envelope = sign_payload(APPRAISAL_PAYLOAD_TYPE, data, signers)
    target = output or document
    write_output(target, envelope.to_bytes(), force=force or output is None)
    for signer in signers:
        info(f"signed with {signer.public_key.keyid}")
    if as_json:
        described = appraisal.describe()
        facts = {"version": described["version"], "expires": described["expires"]}
        keyids = [s.public_key.keyid for s in signers]
        echo_json(signed_result(target, envelope, keyids, facts))


@appraisal_group.command("install")
@click.argument("envelope", type=click.Path(exists=True, dir_okay=False))
@home_option
@json_option
@handle_errors
def appraisal_install(envelope: str, home: str | None, as_json: bool) -> None:
    """Install a signed appraisal ENVELOPE as the rollback floor (after every check passes).

    Checks: a threshold of the installed owner root's keys, not expired, version above the
    installed appraisal's.

    \b
    Example:
      sgxlaunch quote appraisal install appraisal.dsse.json --home /var/lib/sgxlaunch
    """
    data = read_input(envelope, limit=MAX_APPRAISAL_ENVELOPE_SIZE)
    with open_store(resolve_home(home), create=False) as store, about(envelope, verification=True):
        state = load_state(store)
        summary = install_appraisal(store, state.root, data, utc_now())
    if as_json:
        echo_json({"installed": True, "summary": summary})
    else:
        click.echo(summary)
