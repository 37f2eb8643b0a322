"""The owner's launch policy: ``sgxlaunch policy …`` (write, sign, verify, install, explain).

Thin: read files, call :mod:`sgxlaunch.policy` (the sans-IO core) and :mod:`sgxlaunch.store`
(the SQLite state under ``--home``), print, map errors to exit codes (0 ok, 1 refused or
denied, 2 usage or malformed input). See ``docs/policy.md``.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from sgxlaunch.cli._common import (
    HexBytesParam,
    IntParam,
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
    socket_option,
    utc_now,
    write_output,
)
from sgxlaunch.cli._documents import (
    DEFAULT_POLICY_DAYS,
    document_facts,
    expiry,
    expiry_options,
    read_envelope,
    read_policy_file,
    read_root,
    sign_envelope,
    signed_result,
    warn_payload_expiry,
)
from sgxlaunch.cli._output import set_failure_result
from sgxlaunch.errors import PolicyDenied, UsageError
from sgxlaunch.policy import _json
from sgxlaunch.policy.envelope import MAX_ENVELOPE_SIZE, sign_payload
from sgxlaunch.policy.evaluate import (
    Decision,
    EnclaveIdentity,
    PolicyIndex,
    Reason,
    explain_dynamic_memory,
    legacy_spec_warning,
)
from sgxlaunch.policy.model import POLICY_PAYLOAD_TYPE, SPEC_VERSION_DYNAMIC, LaunchPolicy
from sgxlaunch.policy.state import (
    TrustedState,
    check_envelope,
    check_not_expired,
    check_signatures,
    install_policy,
    load_state,
)
from sgxlaunch.store import (
    FileMachine,
    load_signer,
    open_store,
    resolve_home,
    resolve_machine,
)


class SvnRangeParam(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """``N`` (exactly), ``MIN..MAX`` or ``MIN..`` (up to 65535)."""

    name = "MIN..MAX"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        text = str(value)
        low_text, sep, high_text = text.partition("..")
        number = IntParam(16)
        low = number.convert(low_text, param, ctx)
        high = number.convert(high_text, param, ctx) if high_text else (0xFFFF if sep else low)
        if low > high:
            self.fail(f"{text!r}: MIN is above MAX", param, ctx)
        return (low, high)


def _identity_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--id", "rule_id", required=True, help="Rule id (A-Z a-z 0-9 . _ : -)."),
        click.option("--mrsigner", type=HexBytesParam(32), help="MRSIGNER (64 hex digits)."),
        click.option("--mrenclave", type=HexBytesParam(32), help="MRENCLAVE (64 hex digits)."),
        click.option("--isvprodid", type=IntParam(16), help="ISVPRODID."),
        click.option("--isvsvn", type=SvnRangeParam(), help="ISVSVN: N, MIN..MAX or MIN.."),
        click.option("--isvfamilyid", type=HexBytesParam(16), help="ISVFAMILYID (32 hex)."),
        click.option("--isvextprodid", type=HexBytesParam(16), help="ISVEXTPRODID (32 hex)."),
        click.option(
            "--sigstruct",
            "--enclave",
            "sigstruct",
            type=click.Path(exists=True, dir_okay=False),
            help="Take the --match fields from this SIGSTRUCT, or from the SIGSTRUCT of this "
            "Intel SDK enclave (.so).",
        ),
        click.option(
            "--match",
            default="mrsigner,isvprodid",
            show_default=True,
            help="With --sigstruct: comma-separated fields to take from it "
            "(mrsigner, mrenclave, isvprodid, isvsvn (as MIN..), isvfamilyid, isvextprodid).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


_MATCHABLE = ("mrsigner", "mrenclave", "isvprodid", "isvsvn", "isvfamilyid", "isvextprodid")


def _rule_doc(
    rule_id: str, given: dict[str, Any], sigstruct: str | None, match: str
) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": rule_id}
    if sigstruct is not None:
        identity = EnclaveIdentity.from_sigstruct(read_sigstruct(sigstruct))
        for name in (m.strip() for m in match.split(",") if m.strip()):
            if name not in _MATCHABLE:
                raise UsageError(f"--match: unknown field {name!r}")
            value = getattr(identity, name)
            doc[name] = (value, 0xFFFF) if name == "isvsvn" else value
    for name in _MATCHABLE:
        if given.get(name) is not None:
            doc[name] = given[name]
    for name in ("mrsigner", "mrenclave", "isvfamilyid", "isvextprodid"):
        if name in doc:
            doc[name] = doc[name].hex()
    if "isvsvn" in doc:
        doc["isvsvn"] = {"min": doc["isvsvn"][0], "max": doc["isvsvn"][1]}
    return doc


def _add_rule(path: str, doc: dict[str, Any], effect: str, as_json: bool) -> None:
    policy, envelope = read_policy_file(path)
    if envelope is not None:
        raise UsageError(f"{path}: is a signed envelope; edit the policy document instead")
    policy = policy.with_rule(doc, effect)
    payload = policy.to_payload()
    write_output(path, payload, force=True)
    info(f"{path}: {effect} rule {doc['id']} added")
    if as_json:
        added = (policy.allow if effect == "allow" else policy.deny)[-1]
        echo_json(
            {
                "output": path,
                "effect": effect,
                "rule": added.to_doc(policy.spec_version),
                "version": policy.version,
                "allow_rules": len(policy.allow),
                "deny_rules": len(policy.deny),
                "digest": hashlib.sha256(payload).hexdigest(),
            }
        )


def _identity_json(identity: EnclaveIdentity) -> dict[str, Any]:
    """The enclave's identity in the JSON contract's types (integers, attributes object)."""
    out = identity.describe()
    out.pop("flags", None)
    out.pop("xfrm", None)
    out["attributes"] = {"flags": identity.flags, "xfrm": identity.xfrm}
    out["miscselect"] = identity.miscselect
    return out


def _expired_reason(decision: Decision) -> Reason | None:
    """The reason saying the policy itself has expired, if that is why it denies."""
    return next((r for r in decision.reasons if r.rule is None and r.field == "expires"), None)


def _report_decision(
    decision: Decision,
    identity: EnclaveIdentity,
    as_json: bool,
    dynamic: dict[str, Any] | None = None,
    source: str | None = None,
) -> None:
    """Print the verdict (expiry first) and, given ``dynamic``
    (:func:`~sgxlaunch.policy.evaluate.explain_dynamic_memory`), what it means for the
    enclave's dynamic memory; a denial exits 1 (with --json: the one JSON object)."""
    expired = _expired_reason(decision)
    if decision.allowed:
        head = f"ALLOWED by rule {decision.rule}"
    elif expired is not None:
        head = f"DENIED: the launch policy EXPIRED ({expired.found})"
    elif decision.rule:
        head = f"DENIED by rule {decision.rule}"
    else:
        head = "DENIED: no rule allows it"
    head += f" (policy version {decision.policy_version})"
    result = decision.describe() | {"enclave": _identity_json(identity)}
    result["policy_expired"] = expired is not None
    if source is not None:
        result["policy_source"] = source
    if dynamic is not None:
        result["dynamic_memory"] = dynamic
    if as_json:
        if decision.allowed:
            echo_json(result)
            return
        set_failure_result(result)
        raise PolicyDenied(
            "launch denied" + head.removeprefix("DENIED"),
            rule=decision.rule,
            detail=[str(r) for r in decision.reasons],
            reasons=[r.describe() for r in decision.reasons],
        )
    click.echo(head)
    for reason in decision.reasons:
        click.echo(f"  {reason}")
    if dynamic is not None:
        if dynamic["meaning"]:
            click.echo(f"dynamic memory (policy spec_version {dynamic['spec_version']}):")
            for line in dynamic["meaning"]:
                click.echo(f"  {line}")
        for warning in dynamic["warnings"]:
            click.echo(f"WARNING: {warning}")
    if not decision.allowed:
        sys.exit(1)


def _rule_field_text(name: str, value: Any) -> str:
    if name == "isvsvn":
        return f"isvsvn={value['min']}..{value['max']}"
    if name == "id":
        return ""
    if isinstance(value, bool):
        return name
    if name.endswith("_mask"):
        return f"{name}=0x{value:x}"
    if isinstance(value, list):
        return f"{name}={','.join(str(v) for v in value)}"
    return f"{name}={value}"


@click.group("policy")
def policy_group() -> None:
    """Write, sign, verify, install and explain the owner's launch policy.

    \b
    Typical flow:
      sgxlaunch policy new -o policy.json --valid-days 90
      sgxlaunch policy allow policy.json --id acme --sigstruct acme.sig --isvsvn 3..
      sgxlaunch policy deny policy.json --id acme-cve --sigstruct acme.sig --isvsvn 0..2
      sgxlaunch policy sign policy.json --key keys/a.key.pem --key keys/b.key.pem \\
          -o policy.signed.json
      sgxlaunch policy install policy.signed.json
      sgxlaunch policy explain other.sig
    """


@policy_group.command("new")
@output_option("The policy document to write.", dest="out")
@click.option(
    "--version",
    "version",
    type=click.IntRange(1, (1 << 63) - 1),
    help="Policy version (default 1, or FROM's version + 1).",
)
@click.option(
    "--from",
    "source",
    type=click.Path(exists=True, dir_okay=False),
    help="Start from the rules of this policy (document or envelope).",
)
@expiry_options(DEFAULT_POLICY_DAYS)
@click.option(
    "--quoting-signer",
    type=HexBytesParam(32),
    help="MRSIGNER of the platform's PCE/QE key for the quoting rules (default: the "
    "machine's, --machine or $SGXLAUNCH_MACHINE).",
)
@click.option(
    "--no-quoting",
    is_flag=True,
    help="Leave out the rules that allow the platform's PCE and QE (quotes).",
)
@machine_option
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@json_option
@handle_errors
def policy_new(
    out: str,
    version: int | None,
    source: str | None,
    expires: datetime | None,
    valid_days: int | None,
    quoting_signer: bytes | None,
    no_quoting: bool,
    machine: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Write a new (unsigned) policy document OUTPUT, or one with FROM's rules.

    The policy is of spec_version 3: an allow rule without dynamic-memory fields means
    dynamic_memory data (pages may be added after EINIT, never run as code),
    unmeasured_exec deny and rwx_pages deny (see `policy allow --help`); rules taken
    --from an older policy keep their old meaning (code, allow, allow), written out.

    A new policy holds the two rules quoting needs in owner mode: platform-pce and
    platform-qe allow the platform's PCE and QE (signed by the machine's own PCE/QE key,
    by ISVPRODID, with PROVISIONKEY, never DEBUG, dynamic_memory none); their MRSIGNER
    comes from the machine file (or --quoting-signer). --no-quoting leaves them out. The
    owner's launch enclave needs no rule (it launches without a token, with the strictest
    limits). Without an allow rule every launch is denied. Versions only go up: each
    policy you install must carry a higher version than the installed one.

    \b
    Examples:
      sgxlaunch policy new -o policy.json --valid-days 90
      sgxlaunch policy new -o policy-v8.json --from policy.signed.json --valid-days 90
      sgxlaunch policy new -o policy.json --quoting-signer 5e1f… --json
    """
    allow: tuple[Any, ...] = ()
    deny: tuple[Any, ...] = ()
    next_version = 1
    if quoting_signer is not None and no_quoting:
        raise UsageError("give --quoting-signer or --no-quoting, not both")
    if source is not None:
        old, _ = read_policy_file(source)
        allow, deny, next_version = old.allow, old.deny, old.version + 1
        if old.dynamic_code_unrestricted and old.allow:
            info(
                f"note: {source} is of spec_version {old.spec_version!r}; its allow rules keep "
                "their meaning in the new spec_version "
                f"{SPEC_VERSION_DYNAMIC!r} policy: dynamic_memory code, unmeasured_exec allow, "
                "rwx_pages allow are written out — tighten them (e.g. dynamic_memory data) to "
                "restrict dynamic code",
            )
    until = expiry(expires, valid_days, DEFAULT_POLICY_DAYS, what="the launch policy")
    policy = LaunchPolicy(
        next_version if version is None else version,
        until,
        allow,
        deny,
        issued=min(utc_now(), until),
    )
    signer = None
    if source is None and not no_quoting:
        policy, signer = _with_quoting_rules(policy, quoting_signer, machine)
    payload = policy.to_payload()
    write_output(out, payload, force=force)
    info(
        f"wrote {out}: version {policy.version}, expires {_json.format_time(policy.expires)}",
    )
    if as_json:
        echo_json(
            {
                "output": out,
                "digest": hashlib.sha256(payload).hexdigest(),
                "quoting_signer": None if signer is None else signer.hex(),
            }
            | policy.describe()
        )


def _with_quoting_rules(
    policy: LaunchPolicy, signer: bytes | None, machine: str | None
) -> tuple[LaunchPolicy, bytes | None]:
    """``policy`` with the PCE/QE rules (:func:`~sgxlaunch.attest.quoting.quoting_rules`) for
    ``signer`` or the machine's PCE/QE key, and the signer used; without either, unchanged,
    ``None`` and a note on stderr."""
    from sgxlaunch.attest.quoting import machine_quoting_signer, quoting_rules

    if signer is None:
        path = resolve_machine(machine)
        if not path.exists():
            info(
                f"note: no machine at {path}: the PCE/QE rules (quoting in owner mode) are left "
                "out; give --quoting-signer (or --machine), or --no-quoting to silence this",
            )
            return policy, None
        try:
            with about(str(path)):
                signer = machine_quoting_signer(FileMachine(path))
        except UsageError as exc:
            info(f"note: {exc.message}: the PCE/QE rules are left out")
            return policy, None
        info(f"quoting rules for the PCE/QE signer of {path}: {signer.hex()}")
    for doc in quoting_rules(signer):
        if policy.spec_version == SPEC_VERSION_DYNAMIC:
            doc["dynamic_memory"] = "none"  # the PCE and QE never add pages after EINIT
        policy = policy.with_rule(doc, "allow")
    return policy, signer


@policy_group.command("allow")
@click.argument("policy", type=click.Path(exists=True, dir_okay=False))
@_identity_options
@click.option("--debug", is_flag=True, help="Permit ATTRIBUTES.DEBUG.")
@click.option("--provisionkey", is_flag=True, help="Permit ATTRIBUTES.PROVISIONKEY.")
@click.option("--kss", is_flag=True, help="Permit ATTRIBUTES.KSS.")
@click.option("--xfrm-mask", type=IntParam(64), help="XFRM must lie within this mask.")
@click.option("--miscselect-mask", type=IntParam(32), help="MISCSELECT within this mask.")
@click.option(
    "--dynamic-memory",
    type=click.Choice(["none", "data", "attested-code", "code"]),
    help="What the enclave may do after EINIT (spec_version 3; default data).",
)
@click.option(
    "--code-hash",
    "code_hashes",
    multiple=True,
    type=HexBytesParam(32),
    help="With --dynamic-memory attested-code: SHA-256 of code that may be granted (repeatable).",
)
@click.option(
    "--any-code",
    is_flag=True,
    help="With --dynamic-memory attested-code: grant any reported code (each grant logged).",
)
@click.option(
    "--unmeasured-exec",
    type=click.Choice(["deny", "allow"]),
    help="Executable pages added without SGX_PAGE_MEASURE (default deny).",
)
@click.option(
    "--rwx-pages",
    type=click.Choice(["deny", "allow"]),
    help="Measured writable and executable pages (default deny).",
)
@click.option(
    "--protected-code",
    type=click.Choice(["deny", "allow"]),
    help="Whether the launch enclave may release protected-code keys to enclaves this rule "
    "matches first (spec_version 3; default deny).",
)
@json_option
@handle_errors
def policy_allow(
    policy: str,
    rule_id: str,
    sigstruct: str | None,
    match: str,
    debug: bool,
    provisionkey: bool,
    kss: bool,
    xfrm_mask: int | None,
    miscselect_mask: int | None,
    dynamic_memory: str | None,
    code_hashes: tuple[bytes, ...],
    any_code: bool,
    unmeasured_exec: str | None,
    rwx_pages: str | None,
    protected_code: str | None,
    as_json: bool,
    **given: Any,
) -> None:
    """Append an allow rule to the POLICY document.

    Every field given must match; a rule must name an MRSIGNER or an MRENCLAVE (there are
    no wildcards). DEBUG, PROVISIONKEY and KSS enclaves are refused unless the rule
    permits them. In a spec_version 3 policy the rule also says what the enclave may do
    with memory after EINIT: --dynamic-memory none | data (default) | attested-code (with
    --code-hash ... or --any-code; the enclave needs KSS, so also --kss) | code (mainline),
    and whether unmeasured executable pages (--unmeasured-exec; the Intel SDK's
    ReservedMemExecutable and Gramine's non-EDMM free area need allow) and measured RWX
    pages (--rwx-pages) may be loaded, and whether the owner's launch enclave may release
    protected-code keys (`pcl`) to the enclaves it matches first (--protected-code; an
    encrypted image also needs --rwx-pages allow for its in-place decryption).

    \b
    Examples:
      sgxlaunch policy allow policy.json --id acme --mrsigner 8381…f3b2 --isvprodid 3 \\
          --isvsvn 2..
      sgxlaunch policy allow policy.json --id acme-dev --sigstruct dev.sig \\
          --match mrenclave --debug
      sgxlaunch policy allow policy.json --id jit --sigstruct loader.sig --kss \\
          --dynamic-memory attested-code --code-hash 5d41…9c2a
      sgxlaunch policy allow policy.json --id acme --sigstruct acme.sig --json
    """
    doc = _rule_doc(rule_id, given, sigstruct, match)
    if code_hashes and any_code:
        raise UsageError("give --code-hash or --any-code, not both")
    if dynamic_memory is not None:
        doc["dynamic_memory"] = dynamic_memory
    if any_code:
        doc["code_hashes"] = "any"
    elif code_hashes:
        doc["code_hashes"] = [h.hex() for h in code_hashes]
    if unmeasured_exec is not None:
        doc["unmeasured_exec"] = unmeasured_exec
    if rwx_pages is not None:
        doc["rwx_pages"] = rwx_pages
    for name, flag in (("debug", debug), ("provisionkey", provisionkey), ("kss", kss)):
        if flag:
            doc[name] = True
    if xfrm_mask is not None:
        doc["xfrm_mask"] = xfrm_mask
    if miscselect_mask is not None:
        doc["miscselect_mask"] = miscselect_mask
    if protected_code is not None:
        doc["protected_code"] = protected_code
    _add_rule(policy, doc, "allow", as_json)


@policy_group.command("deny")
@click.argument("policy", type=click.Path(exists=True, dir_okay=False))
@_identity_options
@json_option
@handle_errors
def policy_deny(
    policy: str, rule_id: str, sigstruct: str | None, match: str, as_json: bool, **given: Any
) -> None:
    """Append a deny rule to the POLICY document; a matching deny rule beats any allow.

    \b
    Example (revoke versions with a known bug):
      sgxlaunch policy deny policy.json --id acme-cve-2026-1 --sigstruct acme.sig \\
          --isvsvn 0..4
    """
    _add_rule(policy, _rule_doc(rule_id, given, sigstruct, match), "deny", as_json)


@policy_group.command("show")
@click.argument("policy", type=click.Path(exists=True, dir_okay=False))
@json_option
@handle_errors
def policy_show(policy: str, as_json: bool) -> None:
    """Show a policy document or envelope (signatures are listed, not checked).

    \b
    Example:
      sgxlaunch policy show policy.signed.json --json
    """
    parsed, envelope = read_policy_file(policy)
    info = parsed.describe()
    if envelope is not None:
        info["signed_by"] = [s.keyid for s in envelope.signatures]
    if as_json:
        echo_json(info)
        return
    click.echo(
        f"launch policy version {parsed.version} (spec_version {parsed.spec_version}), "
        f"expires {info['expires']}"
    )
    for effect, rules in (("allow", parsed.allow), ("deny", parsed.deny)):
        click.echo(f"{effect} ({len(rules)}):")
        for rule in rules:
            doc = rule.to_doc(parsed.spec_version)
            fields = " ".join(_rule_field_text(k, v) for k, v in doc.items())
            click.echo(f"  {rule.id}: {fields}")
    warning = legacy_spec_warning(parsed)
    if warning is not None:
        click.echo(f"WARNING: {warning}")
    if envelope is not None:
        click.echo(f"signed by {plural(len(envelope.signatures), 'key')}:")
        for sig in envelope.signatures:
            click.echo(f"  {sig.keyid}")


@policy_group.command("sign")
@click.argument("policy", type=click.Path(exists=True, dir_okay=False))
@signing_keys_option()
@output_option(
    "Envelope to write (required when POLICY is a document).", required=False, dest="out"
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@json_option
@handle_errors
def policy_sign(
    policy: str, keys: tuple[str, ...], out: str | None, force: bool, as_json: bool
) -> None:
    """Sign a POLICY document into an envelope, or add signatures to an envelope.

    The signature covers the document's exact bytes (DSSE PAE); never re-format a signed
    policy.

    \b
    Examples:
      sgxlaunch policy sign policy.json --key keys/a.key.pem -o policy.signed.json
      sgxlaunch policy sign policy.signed.json --key keys/b.key.pem --json
    """
    data = read_input(policy, limit=MAX_ENVELOPE_SIZE)
    if b'"payloadType"' in data:
        read_envelope(policy, POLICY_PAYLOAD_TYPE)
        result = sign_envelope(policy, keys, out, force=force)
    else:
        with about(policy):
            LaunchPolicy.from_payload(data)
        if out is None:
            raise UsageError(
                f"{policy} is a policy document: say where the envelope goes (-o/--output)"
            )
        warn_payload_expiry(POLICY_PAYLOAD_TYPE, data, policy)
        signers = [load_signer(k) for k in keys]
        envelope = sign_payload(POLICY_PAYLOAD_TYPE, data, signers)
        write_output(out, envelope.to_bytes(), force=force)
        for signer in signers:
            info(f"signed with {signer.public_key.keyid}")
        result = signed_result(
            out,
            envelope,
            [s.public_key.keyid for s in signers],
            document_facts(POLICY_PAYLOAD_TYPE, data, policy),
        )
    if as_json:
        echo_json(result)


@policy_group.command("verify")
@click.argument("envelope", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--root",
    type=click.Path(exists=True, dir_okay=False),
    help="Verify against this root envelope instead of the installed state.",
)
@home_option
@json_option
@handle_errors
def policy_verify(envelope: str, root: str | None, home: str | None, as_json: bool) -> None:
    """Check a signed policy ENVELOPE as `policy install` would, without installing it.

    Against the installed state (--home): threshold of the owner's keys, expiry, and a
    version above the installed policy. Against --root: threshold and expiry only.
    Exit 0 if acceptable, 1 naming the failed check, 2 if malformed.

    \b
    Examples:
      sgxlaunch policy verify policy.signed.json
      sgxlaunch policy verify policy.signed.json --root root.json --json
    """
    data = read_input(envelope, limit=MAX_ENVELOPE_SIZE)
    now = utc_now()
    with about(envelope, verification=True):
        if root is not None:
            owner, _ = read_root(root)
            env = check_envelope(data, POLICY_PAYLOAD_TYPE, max_size=MAX_ENVELOPE_SIZE)
            check_signatures(env, owner, "launch policy")
            parsed = LaunchPolicy.from_payload(env.payload)
            check_not_expired(parsed.expires, now, "launch policy")
            checks = ["threshold", "expiry"]
        else:
            with open_store(resolve_home(home), create=False) as store:
                state = load_state(store)
            parsed, _digest, _same = state.verify_policy(data, now)
            checks = ["threshold", "expiry", "version"]
    if as_json:
        echo_json(
            {
                "valid": True,
                "checks": checks,
                "version": parsed.version,
                "expires": _json.format_time(parsed.expires),
            }
        )
    else:
        click.echo(f"OK: launch policy version {parsed.version}: {', '.join(checks)} verified")


@policy_group.command("install")
@click.argument("envelope", type=click.Path(exists=True, dir_okay=False))
@home_option
@machine_option
@socket_option
@json_option
@handle_errors
def policy_install(
    envelope: str, home: str | None, machine: str | None, socket: str | None, as_json: bool
) -> None:
    """Install a signed policy ENVELOPE as the one in force (after every check passes).

    On a platform (`platform init`), the owner's launch enclave verifies the policy and raises
    its sealed high-water mark, so an older policy is refused from then on; without one, the
    owner state under --home takes it. `platform install-policy` is the same command. The
    policy already in force says so ("already installed", `installed: false` under --json,
    exit 0) and changes nothing.

    \b
    Example:
      sgxlaunch policy install policy.signed.json --home /var/lib/sgxlaunch
    """
    install_policy_file(envelope, home, machine, as_json, socket)


def install_policy_file(
    envelope: str, home: str | None, machine: str | None, as_json: bool, socket: str | None = None
) -> None:
    """The one policy installation, for `policy install` and `platform install-policy`."""
    from sgxlaunch.cli._daemon import daemon_client, opened
    from sgxlaunch.cli._home import open_platform, platform_exists

    data = read_input(envelope, limit=MAX_ENVELOPE_SIZE)
    client = daemon_client(home, machine, socket)
    if client is not None:
        with opened(envelope) as fds:
            body = {"document_fd": 0, "source": envelope}
            out = client.call("POST", "/v1/policy", body, fds=fds)
    elif platform_exists(home, machine):
        with open_platform(home, machine) as platform, about(envelope, verification=True):
            result = platform.install_policy(data)
        out = {
            "installed": result["installed"],
            "summary": result["summary"],
            "launch_enclave": True,
            "version": result["version"],
            "digest": result["digest"],
        }
    else:
        with (
            open_store(resolve_home(home), create=False) as store,
            about(envelope, verification=True),
        ):
            if store.keys("platform/le-sigstruct/"):
                raise UsageError(
                    "this home has a launch enclave, which commits the policy itself, but its "
                    "machine was not found: give --machine (or $SGXLAUNCH_MACHINE)"
                )
            state, update = install_policy(store, data, utc_now())
        policy = state.describe(utc_now())["policy"]
        out = {
            "installed": bool(update.changes),
            "summary": update.summary,
            "launch_enclave": False,
            "version": policy["version"],
            "digest": policy["digest"],
        }
    if as_json:
        echo_json(out)
    else:
        click.echo(out["summary"])


@policy_group.command("explain")
@click.argument("sig", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Use this policy (a draft document, or an envelope with --root).",
)
@click.option(
    "--root",
    type=click.Path(exists=True, dir_okay=False),
    help="Root envelope that must have signed --policy.",
)
@home_option
@json_option
@handle_errors
def policy_explain(
    sig: str, policy_file: str | None, root: str | None, home: str | None, as_json: bool
) -> None:
    """Say whether the policy allows the enclave of SIGSTRUCT file SIG, and why.

    Uses the installed policy unless --policy is given. Exit 0 if allowed, 1 if denied
    (every reason listed: rule, field, expected vs found), 2 on bad input. For an allowed
    enclave it also says what the rule lets it do with dynamic memory (dynamic_memory,
    code_hashes, unmeasured_exec, rwx_pages) and warns when that cannot work (attested-code
    for an enclave that cannot run with KSS) or when the policy's spec_version predates the
    limits (dynamic code is then unrestricted).

    \b
    Examples:
      sgxlaunch policy explain enclave.sig
      sgxlaunch policy explain enclave.sig --policy policy.json --json
      sgxlaunch policy explain enclave.sig --policy policy.signed.json --root root.json
    """
    sigstruct = read_sigstruct(sig)
    identity = EnclaveIdentity.from_sigstruct(sigstruct)
    now = utc_now()
    source = "installed"
    if policy_file is not None:
        parsed, envelope = read_policy_file(policy_file)
        source = "draft" if envelope is None else "signed"
        if envelope is not None:
            if root is None:
                raise UsageError("a signed --policy needs --root to check its signatures")
            owner, _ = read_root(root)
            with about(policy_file, verification=True):
                check_signatures(envelope, owner, "launch policy")
        else:
            info(f"note: {policy_file} is an unsigned draft")
        decision = PolicyIndex(parsed).evaluate(identity, now)
    else:
        with open_store(resolve_home(home), create=False) as store:
            state: TrustedState = load_state(store)
        decision = state.evaluate(identity, now)
        assert state.policy is not None  # evaluate raised otherwise
        parsed = state.policy
    dynamic = explain_dynamic_memory(parsed, decision, sigstruct)
    _report_decision(decision, identity, as_json, dynamic, source)


def register(main: click.Group) -> None:
    """Add ``policy`` to the ``sgxlaunch`` group."""
    main.add_command(policy_group)
