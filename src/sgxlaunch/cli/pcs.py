"""The emulated PCS's commands: what a verifier needs (``platform root``, ``platform
collateral``) and what stands for Intel and for a microcode update (``machine tcb-recovery``,
``machine cpusvn-update``).

The PCS lives in the machine (:mod:`sgxlaunch.attest.pcs`); these commands read or change the
machine file only, never the home. The machine's PCS is made on first use if a machine made
before it has none.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from typing import Any

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sgxlaunch.attest.pcs import (
    DEFAULT_PCESVN,
    EmulatedPcs,
    ensure_provisioning,
    update_cpusvn,
)
from sgxlaunch.cli._common import (
    HexBytesParam,
    IntParam,
    echo_json,
    handle_errors,
    info,
    json_option,
    machine_option,
    output_option,
    utc_now,
    write_output,
)
from sgxlaunch.cli._documents import TimeParam
from sgxlaunch.cli.machine import machine_group
from sgxlaunch.cli.platform import platform_group
from sgxlaunch.cpu.provisioning import TcbLevel
from sgxlaunch.store import FileMachine, resolve_machine


def _pcs(machine: str | None, now: datetime) -> EmulatedPcs:
    return ensure_provisioning(FileMachine(resolve_machine(machine)), now=now, random=os.urandom)


def _levels(levels: tuple[TcbLevel, ...]) -> list[dict[str, Any]]:
    return [
        {
            "cpusvn": bytes(level.components).hex(),
            "pcesvn": level.pcesvn,
            "status": level.status,
            "date": level.date,
            "advisories": list(level.advisories),
        }
        for level in sorted(levels, key=lambda lv: (lv.components, lv.pcesvn), reverse=True)
    ]


@platform_group.command("root")
@machine_option
@output_option("Where to write the root CA certificate.")
@click.option("--pem", is_flag=True, help="Write PEM instead of DER.")
@click.option("--force", is_flag=True, help="Overwrite the output file.")
@json_option
@handle_errors
def platform_root(machine: str | None, output: str, pem: bool, force: bool, as_json: bool) -> None:
    """Write the emulated PCS's root CA certificate (the verifier's trust anchor).

    Quotes of this platform verify against it (`sgxlaunch quote verify --root FILE`), never
    against Intel's root. Prints the SHA-256 of its public key (what a verifier pins).

    \b
    Examples:
      sgxlaunch platform root -o root.der
      sgxlaunch quote verify q.quote --collateral c.json --root root.der
    """
    der = _pcs(machine, utc_now()).root_der()
    cert = x509.load_der_x509_certificate(der)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    data = cert.public_bytes(serialization.Encoding.PEM) if pem else der
    write_output(output, data, force=force)
    facts = {
        "output": output,
        "format": "pem" if pem else "der",
        "subject": cert.subject.rfc4514_string(),
        "spki_sha256": hashlib.sha256(spki).hexdigest(),
        "certificate_sha256": hashlib.sha256(der).hexdigest(),
        "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if as_json:
        echo_json(facts)
        return
    info(f"root CA certificate written to {output}")
    click.echo(facts["spki_sha256"])


@platform_group.command("collateral")
@machine_option
@output_option("Where to write the collateral JSON.")
@click.option("--at", "at", type=TimeParam(), help="Issue it as of this UTC time (default: now).")
@click.option("--force", is_flag=True, help="Overwrite the output file.")
@json_option
@handle_errors
def platform_collateral(
    machine: str | None, output: str, at: datetime | None, force: bool, as_json: bool
) -> None:
    """Write the emulated PCS's collateral: CRLs, TCB info v3, QE identity and their chains.

    The JSON is dcap-qvl's QuoteCollateralV3 form (what `quote verify --collateral` reads),
    signed now (or --at) and valid 30 days: the CRLs' and documents' nextUpdate.

    \b
    Examples:
      sgxlaunch platform collateral -o collateral.json
      sgxlaunch quote verify q.quote --collateral collateral.json --root root.der
    """
    now = at if at is not None else utc_now()
    pcs = _pcs(machine, now)
    data = pcs.collateral(now)
    write_output(output, data, force=force)
    doc = json.loads(data)
    tcb_info = json.loads(doc["tcb_info"])
    facts = {
        "output": output,
        "issue_date": tcb_info["issueDate"],
        "next_update": tcb_info["nextUpdate"],
        "fmspc": pcs.fmspc.hex(),
        "pceid": pcs.pceid.hex(),
        "tcb_evaluation_data_number": tcb_info["tcbEvaluationDataNumber"],
        "tcb_levels": _levels(pcs.tcb_levels),
        "qe_mrsigner": pcs.qe_mrsigner.hex(),
        "revoked_pck_certificates": sum(
            1 for _ in x509.load_der_x509_crl(bytes.fromhex(doc["pck_crl"]))
        ),
    }
    if as_json:
        echo_json(facts)
        return
    info(f"collateral written to {output}")
    click.echo(f"valid {facts['issue_date']} to {facts['next_update']}")


@machine_group.command("cpusvn-update")
@machine_option
@click.option(
    "--cpusvn",
    required=True,
    type=HexBytesParam(16),
    help="The new CPUSVN (32 hex digits; no component lower than now).",
)
@json_option
@handle_errors
def machine_cpusvn_update(machine: str | None, cpusvn: bytes, as_json: bool) -> None:
    """A microcode update: raise the emulated CPU's CPUSVN.

    Keys derived with the new CPUSVN change; sealed data and the launch log stay readable
    (they record the CPUSVN they were derived with). The PCK certificate for the new TCB is
    issued when the PCE next provisions (the next quote). Whether the platform is then
    UpToDate depends on the TCB levels the PCS publishes (`machine tcb-recovery`).

    \b
    Example:
      sgxlaunch machine cpusvn-update --cpusvn 09080204018000000000000000000000
    """
    file_machine = FileMachine(resolve_machine(machine))
    before = file_machine.load().cpusvn
    after = update_cpusvn(file_machine, cpusvn).cpusvn
    facts = {"cpusvn_before": before.hex(), "cpusvn": after.hex()}
    if as_json:
        echo_json(facts)
        return
    click.echo(f"CPUSVN {before.hex()} -> {after.hex()}")


@machine_group.command("tcb-recovery")
@machine_option
@click.option(
    "--cpusvn",
    required=True,
    type=HexBytesParam(16),
    help="The TCB the recovery makes UpToDate (32 hex digits).",
)
@click.option(
    "--pcesvn",
    type=IntParam(16),
    default=DEFAULT_PCESVN,
    show_default=True,
    help="The PCESVN of that level.",
)
@click.option(
    "--advisory",
    "advisories",
    multiple=True,
    help="Advisory the recovery fixes (e.g. INTEL-SA-00615); repeatable.",
)
@json_option
@handle_errors
def machine_tcb_recovery(
    machine: str | None, cpusvn: bytes, pcesvn: int, advisories: tuple[str, ...], as_json: bool
) -> None:
    """Publish a TCB recovery in the emulated PCS, as Intel does with a microcode update.

    The level (--cpusvn, --pcesvn) becomes UpToDate; every level that was UpToDate becomes
    OutOfDate, naming the --advisory IDs; tcbEvaluationDataNumber rises. Platforms still at an
    older TCB then verify as OutOfDate until they update (`machine cpusvn-update`).

    \b
    Example:
      sgxlaunch machine tcb-recovery --cpusvn 09080204018000000000000000000000 \\
          --advisory INTEL-SA-00615
    """
    now = utc_now()
    pcs = _pcs(machine, now)
    pcs.publish_tcb_recovery(cpusvn, pcesvn, now=now, advisories=advisories)
    facts = {"tcb_levels": _levels(pcs.tcb_levels)}
    if as_json:
        echo_json(facts)
        return
    for level in facts["tcb_levels"]:
        click.echo(f"{level['cpusvn']} pcesvn {level['pcesvn']}: {level['status']}")


def register(main: click.Group) -> None:
    """The commands are added to ``platform`` and ``machine`` on import."""
