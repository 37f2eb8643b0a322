"""Every ``--json`` command of the CLI, run once to succeed and once to fail, in one scenario.

Used by ``tests/cli/test_json_contract.py`` (validates every output against the shipped
schema) and by ``scripts/gen_json_docs.py`` (the examples of ``docs/json.md``).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.testing import CliRunner

from sgxlaunch.cli import load_all_commands, main
from tests.conftest import shared_vectors


@dataclass(frozen=True)
class Case:
    """One run: the command (as in the JSON ``command``), its argv, the outcome expected."""

    command: str
    argv: tuple[str, ...]
    ok: bool
    exit_code: int
    stdout: str
    stderr: str

    def document(self) -> dict[str, Any]:
        value = json.loads(self.stdout)
        assert isinstance(value, dict)
        return value


def json_commands(group: click.Group = main, prefix: str = "") -> set[str]:
    """Every command in the click tree that has a ``--json`` option."""
    load_all_commands()
    found: set[str] = set()
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            found |= json_commands(command, path + " ")
        elif any("--json" in p.opts for p in command.params if isinstance(p, click.Option)):
            found.add(path)
    return found


def run_cases(tmp: Path) -> Iterator[Case]:
    """Build a whole owner setup in ``tmp`` and run each --json command to succeed and fail."""
    tmp.mkdir(parents=True, exist_ok=True)
    gen = shared_vectors() / "generated"
    home = tmp / "home"
    garbage = tmp / "garbage.bin"
    garbage.write_bytes(b"not an sgx structure\n" * 3)
    bad_sig = tmp / "bad.sig"
    data = bytearray((gen / "case1_defaults.sig").read_bytes())
    data[200] ^= 1  # inside MODULUS: the signature no longer verifies
    bad_sig.write_bytes(bytes(data))
    keys_dir = tmp / "keys"
    root = tmp / "root.json"
    le_key = tmp / "le.pem"

    # The machine (the emulated silicon) lives outside the home, in this scenario's directory.
    runner = CliRunner(env={"SGXLAUNCH_MACHINE": str(tmp / "machine" / "machine.json")})

    def go(command: str, ok: bool, *args: str | Path | int) -> Case:
        argv = (*command.split(), *map(str, args), "--json")
        result = runner.invoke(main, list(argv), catch_exceptions=False)
        return Case(command, argv, ok, result.exit_code, result.stdout, result.stderr)

    def keys() -> list[str]:
        return sorted(str(p) for p in keys_dir.glob("*.key.pem"))

    yield go("measure", True, gen / "case1_defaults.sgxs")
    yield go("measure", False, garbage)
    yield go("verify", True, gen / "case1_defaults.sig")
    yield go("verify", False, bad_sig)
    yield go("inspect", True, gen / "case1_defaults.sig")
    yield go("inspect", False, garbage)
    yield go("key mrsigner", True, gen / "case1_defaults.key.pem")
    yield go("key mrsigner", False, garbage)

    # the author's signing, in one step and in two (gendata, a signature made elsewhere, catsig)
    case1_key = gen / "case1_defaults.key.pem"
    yield go("sign", True, gen / "case1_defaults.sgxs", "--key", case1_key, "-o", tmp / "c1.sig")
    yield go("sign", False, gen / "case1_defaults.sgxs", "--key", garbage, "-o", tmp / "x.sig")
    to_sign = tmp / "c1.data"
    yield go("gendata", True, gen / "case1_defaults.sgxs", "-o", to_sign)
    yield go("gendata", False, gen / "case1_defaults.sgxs", "-o", to_sign)  # exists: no --force
    raw, wrong = tmp / "c1.sig.raw", tmp / "wrong.sig.raw"
    raw.write_bytes(_rsa_sign(case1_key, to_sign.read_bytes()))
    wrong.write_bytes(_rsa_sign(case1_key, to_sign.read_bytes()[:-1] + b"\x01"))
    two_step = ("--key", case1_key, "-o", tmp / "c1-two-step.sig")
    yield go("catsig", True, to_sign, "--signature", raw, *two_step)
    yield go("catsig", False, to_sign, "--signature", wrong, *two_step)
    sdk_enclave = tmp / "enclave.so"
    sdk_enclave.write_bytes(_sdk_enclave())
    yield go("convert", True, sdk_enclave, "-o", tmp / "enclave-from-so.sgxs")
    yield go("convert", False, gen / "case1_defaults.sgxs", "-o", tmp / "x.sgxs")

    yield go("owner init", False, "--keys", 2, "--threshold", 3, "--key-dir", keys_dir, "-o", root)
    yield go("owner init", True, "--keys", 3, "--threshold", 2, "--key-dir", keys_dir, "-o", root)
    yield go("owner show", True, root)
    yield go("owner show", False, garbage)
    yield go(
        "owner rotate",
        True,
        root,
        "--keep-all",
        "--keys",
        1,
        "--key-dir",
        tmp / "keys2",
        "-o",
        tmp / "root-v2.json",
    )
    yield go("owner rotate", False, root, "--keep", "ffff", "-o", tmp / "root-v3.json")
    # the rotation needs signatures by the current root's keys too
    yield go("owner sign", True, tmp / "root-v2.json", "--key", keys()[0], "-o",
             tmp / "root-v2.signed.json")  # fmt: skip
    yield go("owner sign", False, garbage, "--key", keys()[0], "-o", tmp / "x.json")

    yield go("key generate", True, "-o", le_key)
    yield go("key generate", False, "-o", le_key)  # exists: a key file is never overwritten
    yield go("key public", True, le_key, "-o", tmp / "le.pub.pem")
    yield go("key public", False, garbage, "-o", tmp / "garbage.pub.pem")
    yield go("platform status", False, "--home", home)
    yield go("platform init", True, "--home", home, "--root", root, "--le-key", le_key)
    yield go("platform init", False, "--home", home)
    # the launch enclave, rebuilt: its image (to sign elsewhere), signed here, installed
    yield go("platform le-image", True, "-o", tmp / "le.sgxs", "--home", home)
    yield go("platform le-image", False, "-o", tmp / "le.sgxs", "--home", home)  # exists
    yield go("platform le-sign", True, "--key", le_key, "-o", tmp / "le.sig", "--home", home)
    yield go("platform le-sign", False, "--key", le_key, "-o", tmp / "le.sig", "--home", home)
    yield go("platform le-install", True, tmp / "le.sig", "--home", home)
    yield go("platform le-install", False, garbage, "--home", home)
    # the machine is bound to this root: the home's copy is restored; another root is refused
    yield go("platform take-ownership", True, root, "--home", home)
    yield go("platform take-ownership", False, tmp / "root-v2.signed.json", "--home", home)

    # An emulated quote of the example enclave (docs/attest.md), while the platform is permissive.
    hello, hello_sig, author = tmp / "hello.sgxs", tmp / "hello.sig", tmp / "author.pem"
    yield go("example", True, "-o", hello)
    yield go("example", False, "-o", hello)  # exists: no --force
    runner.invoke(main, ["key", "generate", "-o", str(author)], catch_exceptions=False)
    runner.invoke(
        main,
        ["sign", "--key", str(author), str(hello), "-o", str(hello_sig)],
        catch_exceptions=False,
    )
    made = ("--home", home, "-o")
    yield go(
        "quote make", True, hello, "--sig", hello_sig, "--reportdata", "00ff", *made, tmp / "q"
    )
    yield go("quote make", False, hello, "--sig", garbage, *made, tmp / "q2")
    yield go("owner install", True, root, "--home", home)
    yield go("owner install", False, garbage, "--home", home)

    policy = tmp / "policy.json"
    signed = tmp / "policy.signed.json"
    weak = tmp / "policy-one-key.signed.json"
    invoke = runner.invoke
    yield go("policy new", True, "-o", policy)
    yield go("policy new", False, "-o", policy)  # exists: no --force
    case1 = ("--id", "case1", "--sigstruct", gen / "case1_defaults.sig")
    yield go("policy allow", True, policy, *case1)
    yield go("policy allow", False, policy, *case1)  # the id is taken
    yield go("policy deny", True, policy, "--id", "revoked", "--mrenclave", "ab" * 32)
    yield go("policy deny", False, policy, "--id", "bad", "--sigstruct", garbage)
    k = keys()
    yield go("policy sign", True, policy, "--key", k[0], "--key", k[1], "-o", signed)
    yield go("policy sign", False, policy, "--key", k[0])  # a document: -o names the envelope
    invoke(main, ["policy", "sign", str(policy), "--key", k[0], "-o", str(weak)])
    yield go("policy show", True, signed)
    yield go("policy show", False, garbage)
    yield go("policy verify", True, signed, "--home", home)
    yield go("policy verify", False, weak, "--home", home)
    yield go("policy explain", True, gen / "case1_defaults.sig", "--policy", policy)
    yield go("policy explain", False, gen / "case2_prodid_svn_debug.sig", "--policy", policy)
    yield go("platform install-policy", False, weak, "--home", home)
    yield go("platform install-policy", True, signed, "--home", home)
    yield go("policy install", False, weak, "--home", home)
    yield go("policy install", True, signed, "--home", home)

    # DCAP quotes (docs/attest.md): a real quote inside its collateral window.
    phala = shared_vectors() / "dcap" / "phala"
    quote, collateral = phala / "sgx_quote", phala / "sgx_quote_collateral.json"
    at = ("--collateral", collateral, "--at", "2025-07-01T00:00:00Z")
    appraisal = tmp / "appraisal.json"
    appraisal.write_text(
        json.dumps(
            {
                "spec_version": "1",
                "type": "quote-appraisal",
                "version": 1,
                "expires": "2099-01-01T00:00:00Z",
                "identities": [
                    {
                        "id": "sample",
                        "mrsigner": "815f42f11cf64430c30bab7816ba596a"
                        "1da0130c3b028b673133a66cf9a3e0e6",
                    }
                ],
                "tcb_statuses": ["ConfigurationAndSWHardeningNeeded"],
                "denied_advisories": ["INTEL-SA-00615"],
            }
        )
    )
    signed_appraisal = tmp / "appraisal.signed.json"
    yield go("quote appraisal sign", True, appraisal, "--key", k[0], "--key", k[1], "-o",
             signed_appraisal)  # fmt: skip
    yield go("quote appraisal sign", False, appraisal, "--key", k[0])  # a document: needs -o
    yield go("quote inspect", True, quote)
    yield go("quote inspect", False, garbage)
    yield go("quote verify", True, quote, *at)
    yield go("quote verify", False, quote, *at, "--appraisal", signed_appraisal, "--home", home)
    yield go("quote appraisal install", True, signed_appraisal, "--home", home)
    yield go("quote appraisal install", False, garbage, "--home", home)

    # Protected code: the author's side (docs/pcl.md). The launch-enclave quote comes from a
    # test PCS (tests/support/pcl.py); dcap-qvl verifies it for real.
    from sgxlaunch.example import example_image
    from tests.support.pcl import le_quote

    pcl_dir = tmp / "pcl"
    pcl_dir.mkdir()
    code_key = pcl_dir / "code.key"
    code_key.write_bytes(bytes(range(32)))
    example_sgxs = pcl_dir / "enclave.sgxs"
    example_sgxs.write_bytes(example_image())
    encrypted = pcl_dir / "enclave.enc.sgxs"
    yield go("pcl encrypt", True, example_sgxs, "--code-key-file", code_key, "-o", encrypted)
    yield go("pcl encrypt", False, encrypted, "--code-key-file", code_key, "-o", pcl_dir / "x")
    files = le_quote().write(pcl_dir)
    wrap = (
        "--code-key-file", code_key, "--le-quote", files["quote"], "--le-public-key",
        files["public"], "--collateral", files["collateral"], "--root", files["root"],
        "--release", "mrsigner=" + "ab" * 32 + ",isvprodid=1", "--min-isvsvn", 1,
        "--at", "2026-11-26T13:00:00Z", "-o", pcl_dir / "wrapped.bin",
    )  # fmt: skip
    yield go("pcl wrap", True, *wrap, "--owner-root", files["owner"])
    yield go("pcl wrap", False, *wrap, "--owner-root", root, "--force")

    le_signer = json.loads(go("key mrsigner", True, le_key).stdout)["result"]["mrsigner"]
    mode = tmp / "mode.json"
    yield go(
        "owner mode new",
        True,
        "--mode",
        "owner",
        "--le-mrsigner",
        le_signer,
        "--version",
        1,
        "--any-platform",
        "-o",
        mode,
    )
    yield go(
        "owner mode new",
        False,
        "--mode",
        "owner",
        "--le-mrsigner",
        le_signer,
        "--le-sigstruct",
        gen / "case1_defaults.sig",
        "--version",
        1,
        "-o",
        tmp / "x.json",
    )
    yield go("owner mode show", True, mode)
    yield go("owner mode show", False, garbage)
    yield go("owner mode verify", False, mode, "--home", home)
    yield go("owner mode sign", True, mode, "--key", k[1], "--key", k[2])
    yield go("owner mode sign", False, garbage, "--key", k[1])
    yield go("owner mode verify", True, mode, "--home", home)
    yield go("platform mode", False, garbage, "--home", home)
    yield go("platform mode", True, mode, "--home", home)
    yield go("platform status", True, "--home", home)

    # Protected code (docs/pcl.md): the launch enclave's key quote, a key wrapped to it.
    le_quote_file, le_pub = tmp / "le.quote", tmp / "le.pub"
    yield go("platform le-key-quote", True, "-o", le_quote_file, "--public-key-out", le_pub,
             "--home", home)  # fmt: skip
    yield go("platform le-key-quote", False, "-o", le_quote_file, "--public-key-out", le_pub,
             "--home", home)  # exists: never overwritten  # fmt: skip
    wrapped = tmp / "wrapped.bin"
    wrapped.write_bytes(_wrapped_code_key(le_pub.read_bytes(), gen / "case1_defaults.sig"))
    yield go("platform add-code-key", True, wrapped, "--home", home)
    yield go("platform add-code-key", False, garbage, "--home", home)

    _lose_sealed_state(home, le_signer)  # a damaged home: the platform refuses to start
    shown = go("machine show", True)
    yield shown
    yield go("machine show", False, "--machine", tmp / "no-machine" / "machine.json")
    facts = shown.document()["result"]
    recovery = tmp / "recovery.json"
    at_counter = ("--platform-id", facts["platform_id"], "--counter", facts["counter"]["value"])
    yield go("recovery sign", True, *at_counter, "--key", k[0], "--key", k[1], "-o", recovery)
    yield go("recovery sign", False, *at_counter, "--key", k[0], "-o", recovery)  # exists
    yield go("recovery apply", True, recovery, "--home", home)
    yield go("recovery apply", False, garbage, "--home", home)

    yield go(
        "run",
        True,
        gen / "case1_defaults.sgxs",
        "--sig",
        gen / "case1_defaults.sig",
        "--home",
        home,
    )
    yield go(
        "run",
        False,
        gen / "case2_prodid_svn_debug.sgxs",
        "--sig",
        gen / "case2_prodid_svn_debug.sig",
        "--home",
        home,
    )
    yield go("log show", True, "--home", home)
    yield go("log show", False, "--home", tmp / "nowhere")
    yield go("log verify", True, "--home", home)
    yield go("log export", True, "-o", tmp / "log.jsonl", "--home", home)
    yield go("log export", False, "-o", tmp / "log.jsonl", "--home", home)  # exists: no --force
    head, attested = tmp / "head.quote", tmp / "attested.jsonl"
    yield go("log attest", True, "--nonce", "5eed", "-o", head, "--records-out", attested,
             "--home", home)  # fmt: skip
    yield go("log attest", False, "--nonce", "5eed", "-o", head, "--home", home)  # exists
    yield from _remote_verify(go, tmp, head, attested, root, le_signer, facts["platform_id"])
    _tamper_second_record(home)
    yield go("log verify", False, "--home", home)

    # the emulated PCS (docs/attest.md): the verifier's root and collateral, a TCB recovery and
    # a microcode update
    yield go("platform root", True, "-o", tmp / "pcs-root.der")
    yield go("platform root", False, "-o", tmp / "pcs-root.der")  # exists: never overwritten
    yield go("platform collateral", True, "-o", tmp / "pcs-collateral.json")
    yield go("platform collateral", False, "-o", tmp / "pcs-collateral.json")
    cpusvn = bytes.fromhex(json.loads(go("machine show", True).stdout)["result"]["cpusvn"])
    raised = bytes([cpusvn[0] + 1, *cpusvn[1:]]).hex()
    yield go("machine tcb-recovery", True, "--cpusvn", raised, "--advisory", "INTEL-SA-00615")
    yield go("machine tcb-recovery", False, "--cpusvn", cpusvn.hex())  # not above the published
    yield go("machine cpusvn-update", True, "--cpusvn", raised)
    yield go("machine cpusvn-update", False, "--cpusvn", cpusvn.hex())  # a rollback

    # a home made before the machine existed (its seed inside), moved onto a new machine
    legacy = tmp / "legacy-home"
    shutil.copytree(home, legacy)
    with sqlite3.connect(legacy / "state.sqlite3") as db:
        db.execute("INSERT INTO kv VALUES ('platform/seed', ?)", (b"old-seed-0123456789abcdef",))
    new_machine = tmp / "new-machine" / "machine.json"
    yield go("machine migrate", True, "--home", legacy, "--machine", new_machine)
    yield go("machine migrate", False, "--home", home, "--machine", tmp / "m3" / "machine.json")
    # last: the owner binding cleared (OWNEREPOCH + 1, counter 0)
    yield go("machine clear-ownership", True, "--yes")
    yield go("machine clear-ownership", False, "--yes", "--machine", tmp / "none" / "m.json")


def _rsa_sign(key: Path, data: bytes) -> bytes:
    """``data`` signed as an HSM would for ``catsig``: RSA PKCS#1 v1.5 over SHA-256, the
    384-byte big-endian signature."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    return private.sign(data, padding.PKCS1v15(), hashes.SHA256())


def _sdk_enclave() -> bytes:
    """A small unsigned Intel SDK enclave (``tests.support.sdk``)."""
    from tests.support.sdk import PF_R, PF_W, Seg, Spec, build

    segment = Seg(0x3000, b"\x42" * 900, 0x2000, PF_R | PF_W)
    return build(Spec(version=(2, 1), compat=((1, 4),), data_segments=[segment])).data


def _wrapped_code_key(le_public_key: bytes, sigstruct: Path) -> bytes:
    """A code key wrapped for ``le_public_key``, released only to the enclave of ``sigstruct``
    (as ``pcl wrap`` makes it, without the quote check)."""
    import os

    from sgxlaunch.arch import Sigstruct
    from sgxlaunch.pcl.crypto import ReleaseConstraint, WrappedKey

    sig = Sigstruct.from_bytes(sigstruct.read_bytes())
    constraint = ReleaseConstraint(None, sig.mrsigner, sig.isvprodid, 0)
    return WrappedKey.wrap(os.urandom(32), le_public_key, constraint, random=os.urandom).to_bytes()


def _remote_verify(
    go: Any, tmp: Path, quote: Path, records: Path, root: Path, le_signer: str, platform_id: str
) -> Iterator[Case]:
    """``log verify --records`` on the collector's side (no home): once right, once with a
    nonce the quote does not answer."""
    from datetime import UTC, datetime

    from sgxlaunch.attest.pcs import EmulatedPcs
    from sgxlaunch.store import FileMachine

    pcs = EmulatedPcs(FileMachine(tmp / "machine" / "machine.json"))
    root_der, collateral = tmp / "collector-root.der", tmp / "collector-collateral.json"
    root_der.write_bytes(pcs.root_der())
    collateral.write_bytes(pcs.collateral(datetime.now(UTC)))
    common = ("--records", records, "--quote", quote, "--collateral", collateral,
              "--root", root_der, "--le-mrsigner", le_signer, "--owner-root", root,
              "--platform-id", platform_id, "--state", tmp / "collector.json")  # fmt: skip
    yield go("log verify", True, *common, "--nonce", "5eed")
    yield go("log verify", False, *common, "--nonce", "0001")


def _lose_sealed_state(home: Path, le_signer: str) -> None:
    """Delete the launch enclave's sealed state from the home (what owner recovery repairs)."""
    import sqlite3

    from sgxlaunch.launch.platform import le_sealed_key

    with sqlite3.connect(home / "state.sqlite3") as db:
        db.execute("DELETE FROM kv WHERE key = ?", (le_sealed_key(bytes.fromhex(le_signer)),))


def _tamper_second_record(home: Path) -> None:
    """Change one byte of the second launch-log record, as an attacker with the home can."""
    import sqlite3

    with sqlite3.connect(home / "state.sqlite3") as db:
        key, value = db.execute(
            "SELECT key, value FROM kv WHERE key LIKE 'log/%' ORDER BY key LIMIT 1 OFFSET 1"
        ).fetchone()
        edited = bytearray(value)
        edited[-2] ^= 0x01  # one bit of the record's JSON, as an edit would change it
        db.execute("UPDATE kv SET value = ? WHERE key = ?", (bytes(edited), key))
