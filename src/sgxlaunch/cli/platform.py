"""Platform commands: ``platform``, ``run`` and ``log`` over the state kept under ``--home``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from sgxlaunch.arch import Sigstruct
from sgxlaunch.cli._common import (
    HexBytesParam,
    IntParam,
    echo_json,
    handle_errors,
    home_option,
    json_option,
    read_input,
    utc_now,
    write_output,
)
from sgxlaunch.cli._keyfiles import load_private_key
from sgxlaunch.driver import LoadFailed
from sgxlaunch.errors import MalformedInput, PolicyDenied, UsageError
from sgxlaunch.formats import sgxs
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
from sgxlaunch.launch.log import LogTampered
from sgxlaunch.launch.platform import Platform, PlatformConfig
from sgxlaunch.policy import MemoryStore, Store, install_root
from sgxlaunch.sigstruct import RsaKeySigner
from sgxlaunch.store import STATE_FILE, open_store, resolve_home


@contextmanager
def _platform(home: str | None, *, maintenance: bool = False) -> Iterator[Platform]:
    path = resolve_home(home)
    if not (path / STATE_FILE).exists():
        raise UsageError(
            f"{path}: no platform here; create one with `sgxlaunch platform init` "
            "(or use `run --ephemeral` for a throwaway permissive platform)"
        )
    with open_store(path, create=False) as store:
        yield Platform.open(store, clock=utc_now, maintenance=maintenance)


def _read(path: str) -> bytes:
    try:
        return read_input(path, limit=80 << 20)
    except MalformedInput as exc:
        raise exc.with_source(path) from None


def _print_status(status: dict[str, Any]) -> None:
    click.echo(f"platform     {status['platform_id']}")
    click.echo(f"mode         {status['mode']}")
    doc = status.get("mode_document")
    if doc:
        click.echo(f"mode doc     version {doc['version']} ({doc['mode']})")
    click.echo(f"MSR hash     {status['launch_key_msrs']}")
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
            f"{root.get('threshold')} of {len(root.get('keys', []))} keys"
        )
    else:
        click.echo("owner root   none")
    policy = status.get("policy")
    if policy:
        click.echo(
            f"policy       version {policy['version']}, {policy['allow_rules']} allow / "
            f"{policy['deny_rules']} deny rules, digest {policy['digest'][:16]}…"
        )
    else:
        click.echo("policy       none")
    click.echo(f"log          {status['log_records']} records")


def _register_platform(main: click.Group) -> None:
    @main.group("platform")
    def platform_group() -> None:
        """The emulated SGX platform kept under --home: its CPU, driver and owner control.

        \b
        A typical owner setup:
          sgxlaunch owner init --keys 3 --threshold 2 --key-dir keys --out root.json
          sgxlaunch key generate le.pem                        # the launch enclave's key
          sgxlaunch platform init --root root.json --le-key le.pem
          sgxlaunch platform install-policy policy.signed.json  # see `sgxlaunch policy`
          sgxlaunch platform mode owner-mode.json               # see `sgxlaunch owner mode`
          sgxlaunch run enclave.sgxs --sig enclave.sig
          sgxlaunch log show; sgxlaunch log verify
        """

    @platform_group.command("init")
    @home_option
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
        seed = seed or os.urandom(32)
        # Dry run in memory first: nothing is written unless every step succeeds.
        scratch = MemoryStore()
        _init_into(scratch, seed, config, root_path, le_key, mode_document)
        with open_store(home_path) as store:
            if store.get("platform/seed") is not None:
                raise UsageError(f"{home_path}: a platform already exists here")
            store.commit(scratch.snapshot())
            status = Platform.open(store, clock=utc_now).status()
        click.echo(f"platform initialised under {home_path}", err=True)
        if as_json:
            echo_json(status)
        else:
            _print_status(status)

    @platform_group.command("le-sign")
    @home_option
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
    @handle_errors
    def platform_le_sign(home: str | None, key_path: str, output: str | None) -> None:
        """Build the owner launch enclave for the installed owner root, sign and install it.

        Its MRSIGNER is what a mode document naming it (le_mrsigner) puts into the
        launch-key MSRs. Prints the MRSIGNER.
        """
        key = load_private_key(key_path)
        with _platform(home, maintenance=True) as platform:
            if platform.state is None:
                raise UsageError("install an owner root first (`sgxlaunch owner install`)")
            sig = sign_launch_enclave(platform.state.root_envelope, RsaKeySigner(key))
            platform.set_launch_enclave(sig)
        if output:
            write_output(output, sig.to_bytes())
        click.echo(sig.mrsigner.hex())

    @platform_group.command("le-image")
    @home_option
    @click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
    @handle_errors
    def platform_le_image(home: str | None, output: str) -> None:
        """Write the launch enclave's SGXS image (to sign elsewhere, e.g. with gendata/catsig);
        install the result with `platform le-install`."""
        with _platform(home) as platform:
            if platform.state is None:
                raise UsageError("install an owner root first (`sgxlaunch owner install`)")
            image = launch_enclave_image(root_digest_of(platform.state.root_envelope))
        write_output(output, image.sgxs())
        click.echo(
            "sign it with these SIGSTRUCT fields (EINITTOKEN_KEY outside ATTRIBUTEMASK), e.g.:\n"
            f"  sgxlaunch gendata {output} {LE_SIGNING_OPTIONS} -o le.data\n"
            "  (sign le.data with the owner's SGX key, then `sgxlaunch catsig` and "
            "`sgxlaunch platform le-install`)",
            err=True,
        )
        click.echo(image.mrenclave().hex())

    @platform_group.command("le-install")
    @home_option
    @click.argument("sig", type=click.Path(exists=True, dir_okay=False))
    @handle_errors
    def platform_le_install(home: str | None, sig: str) -> None:
        """Install a launch-enclave SIGSTRUCT made elsewhere (checked against the root)."""
        try:
            parsed = Sigstruct.from_bytes(_read(sig))
        except MalformedInput as exc:
            raise exc.with_source(sig) from None
        with _platform(home, maintenance=True) as platform:
            platform.set_launch_enclave(parsed)
        click.echo(parsed.mrsigner.hex())

    @platform_group.command("install-policy")
    @home_option
    @click.argument("file", type=click.Path(exists=True, dir_okay=False))
    @json_option
    @handle_errors
    def platform_install_policy(home: str | None, file: str, as_json: bool) -> None:
        """Install an owner-signed launch policy: verified inside the launch enclave, which
        raises its sealed high-water mark (an older policy is refused from then on)."""
        with _platform(home) as platform:
            result = platform.install_policy(_read(file))
        if as_json:
            echo_json(result)
        else:
            click.echo(f"launch policy version {result['version']} installed ({result['digest']})")

    @platform_group.command("mode")
    @home_option
    @click.argument("file", type=click.Path(exists=True, dir_okay=False))
    @json_option
    @handle_errors
    def platform_mode(home: str | None, file: str, as_json: bool) -> None:
        """Switch launch control with an owner-signed platform-mode document.

        The document must carry a threshold of the owner root's keys; no unsigned command can
        switch modes. Make one with `sgxlaunch owner mode new` and `owner mode sign`.
        """
        with _platform(home, maintenance=True) as platform:
            result = platform.set_mode(_read(file))
        if as_json:
            echo_json(result)
        else:
            click.echo(
                f"launch control is now {result['mode']} (document version {result['version']})"
            )

    @platform_group.command("status")
    @home_option
    @json_option
    @handle_errors
    def platform_status(home: str | None, as_json: bool) -> None:
        """Show the platform: mode, MSRs, launch enclave, owner root, policy, log size."""
        with _platform(home) as platform:
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


def _init_into(
    store: Store,
    seed: bytes,
    config: PlatformConfig,
    root_path: str | None,
    le_key: str | None,
    mode_document: str | None,
) -> None:
    if root_path is not None:
        install_root(store, _read(root_path), utc_now())
    platform = Platform.create(store, seed=seed, config=config, clock=utc_now)
    if le_key is not None:
        if platform.state is None:
            raise UsageError("--le-key needs an owner root (--root)")
        sig = sign_launch_enclave(
            platform.state.root_envelope, RsaKeySigner(load_private_key(le_key))
        )
        platform.set_launch_enclave(sig)
        platform = Platform.open(store, clock=utc_now)
    if mode_document is not None:
        platform.set_mode(_read(mode_document))


def _register_run(main: click.Group) -> None:
    @main.command("run")
    @click.argument("image", type=click.Path(exists=True, dir_okay=False))
    @click.option(
        "--sig",
        "sig_path",
        required=True,
        type=click.Path(exists=True, dir_okay=False),
        help="The enclave's SIGSTRUCT.",
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
    @home_option
    @json_option
    @handle_errors
    def run(
        image: str,
        sig_path: str,
        token_path: str | None,
        size: int | None,
        ephemeral: bool,
        home: str | None,
        as_json: bool,
    ) -> None:
        """Load and initialize an enclave on the platform, or say exactly why it was refused.

        In owner mode the owner's launch enclave evaluates the policy and mints the token;
        the attempt is recorded in the launch log either way. On failure: the check in words
        (expected vs found), the errno and the SGX status; exit 1.

        \b
        Examples:
          sgxlaunch run enclave.sgxs --sig enclave.sig
          sgxlaunch run enclave.sgxs --sig enclave.sig --json
        """
        try:
            parsed_image = sgxs.parse_sgxs(_read(image), size=size)
        except MalformedInput as exc:
            raise exc.with_source(image) from None
        try:
            sig = Sigstruct.from_bytes(_read(sig_path))
        except MalformedInput as exc:
            raise exc.with_source(sig_path) from None
        token = _read(token_path) if token_path else None
        if ephemeral:
            store: Store = MemoryStore()
            platform = Platform.create(store, seed=os.urandom(32), clock=utc_now)
            _run_and_report(platform, parsed_image, sig, token, as_json)
            return
        with _platform(home) as platform:
            _run_and_report(platform, parsed_image, sig, token, as_json)


def _run_and_report(
    platform: Platform, image: sgxs.SgxsImage, sig: Sigstruct, token: bytes | None, as_json: bool
) -> None:
    try:
        result = _run(platform, image, sig, token)
    except PolicyDenied as exc:
        if as_json:
            echo_json(
                {
                    "initialized": False,
                    "mode": platform.mode,
                    "decision": "denied",
                    "rule": exc.rule,
                    "reasons": list(exc.detail),
                    "mrenclave": sig.enclavehash.hex(),
                    "mrsigner": sig.mrsigner.hex(),
                }
            )
        raise
    except LoadFailed as exc:
        if as_json:
            echo_json(
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
    if as_json:
        echo_json(result.describe())
        return
    click.echo(f"initialized: mrenclave {sig.enclavehash.hex()}")
    click.echo(f"             mrsigner  {sig.mrsigner.hex()}")
    click.echo(
        f"mode {result.mode}; decision {result.decision}"
        + (f" (rule {result.rule})" if result.rule else "")
        + (f"; token keyid {result.keyid[:16]}…" if result.keyid else "")
    )


def _run(platform: Platform, image: sgxs.SgxsImage, sig: Sigstruct, token: bytes | None) -> Any:
    try:
        return platform.run(image, sig, token=token)
    finally:
        for problem in platform.log_errors:
            click.echo(f"sgxlaunch: warning: the attempt was not logged: {problem}", err=True)


def _register_log(main: click.Group) -> None:
    @main.group("log")
    def log_group() -> None:
        """The launch log: every INIT attempt, hash-chained and MACed by the launch enclave."""

    @log_group.command("show")
    @home_option
    @json_option
    @handle_errors
    def log_show(home: str | None, as_json: bool) -> None:
        """List the launch log's records (use `log verify` to check them)."""
        with _platform(home) as platform:
            records = platform.log_records()
        if as_json:
            echo_json(records)
            return
        for r in records:
            who = (r.get("mrenclave") or "?")[:16]
            line = (
                f"{r.get('seq'):>4}  {r.get('time')}  {r.get('mode', '?'):<10} "
                f"{r.get('decision', '?'):<11} {r.get('outcome', '?'):<11} mrenclave {who}…"
            )
            if r.get("errno"):
                line += f"  {r['errno']}"
            if r.get("sgx_status") and r["sgx_status"] != "SUCCESS":
                line += f" {r['sgx_status']}"
            click.echo(line)
            for reason in r.get("reasons") or []:
                click.echo(
                    f"        {reason.get('field')}: expected {reason.get('expected')}, "
                    f"found {reason.get('found')}"
                )
        if not records:
            click.echo("(no records)", err=True)

    @log_group.command("verify")
    @home_option
    @json_option
    @handle_errors
    def log_verify(home: str | None, as_json: bool) -> None:
        """Verify the launch log inside the launch enclave; names the first bad record."""
        with _platform(home) as platform:
            try:
                count = platform.verify_log()
            except LogTampered as exc:
                if as_json:
                    echo_json(
                        {"valid": False, "first_bad_record": exc.index, "message": exc.message}
                    )
                raise
        if as_json:
            echo_json({"valid": True, "records": count})
        else:
            click.echo(f"OK: {count} records verify")


def register(main: click.Group) -> None:
    """Add the platform, run and log commands."""
    _register_platform(main)
    _register_run(main)
    _register_log(main)
