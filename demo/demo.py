"""The sgxlaunch demo: the whole story, told through the real command line.

An author signs two enclaves. On a permissive (mainline) platform both launch. The owner (2 of 3
keys) installs a launch policy allowing one, and switches the platform to owner launch control.
Then the allowed enclave launches, the other is refused with its reason, a debug build of the
allowed one is refused, an older policy is refused, a switch back to permissive with only one
signature is refused; the author's loader fetches code after EINIT, which the driver refuses to
map executable under dynamic_memory data (the refusal is logged) and which runs only after the
owner's launch enclave granted it (dynamic_memory attested-code) and recorded the code hash;
the launch log shows every attempt and verifies. Protected code: the author encrypts the
example enclave and wraps its key to the owner's launch enclave after checking its quote; the
enclave runs while the owner's rule says protected_code: allow and is refused at release after
the owner revokes it (both decisions in the log). A tampered log fails naming the record.

Each step runs ``sgxlaunch`` as a user would, shows what it printed and asserts the outcome; the
demo exits non-zero as soon as any outcome differs.

With ``--service`` (``make demo-service``) the same story goes through sgxlaunchd: once the
platform exists the demo starts ``sgxlaunch serve`` on a socket in its directory, every platform
command goes to it (``SGXLAUNCH_SOCKET``), and the demo stops it with SIGTERM at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from sgxlaunch.arch.constants import PAGE_SIZE, PageType, secinfo_flags
from sgxlaunch.cpu import program_code_page
from sgxlaunch.example_loader import FetchedCode
from sgxlaunch.formats.sgxs import SgxsImage, SgxsPage, write_sgxs

STEP = 0
WORK = Path(".")
SOCKET: Path | None = None
"""sgxlaunchd's socket while the demo runs through the daemon (``--service``)."""
DAEMON: subprocess.Popen[str] | None = None


def say(text: str) -> None:
    global STEP
    STEP += 1
    print(f"\n== {STEP}. {text}")


def sgxlaunch(*args: str | Path, expect: int, show: bool = True) -> str:
    """Run the CLI (from the work directory), echo it, and check its exit code.

    With ``show=False`` (JSON read only for the demo's own checks) stdout is not echoed.
    """
    argv = [sys.executable, "-m", "sgxlaunch", *map(str, args)]
    print("$ sgxlaunch " + " ".join(str(a) for a in args))
    env = dict(os.environ)
    if DAEMON is not None and SOCKET is not None:
        env["SGXLAUNCH_SOCKET"] = str(SOCKET)
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=WORK, env=env)
    shown = (proc.stdout if show else "") + proc.stderr
    for line in shown.rstrip().splitlines():
        print(textwrap.indent(line, "  "))
    if proc.returncode != expect:
        print(f"DEMO FAILED: exit code {proc.returncode}, expected {expect}", file=sys.stderr)
        sys.exit(1)
    return proc.stdout


def json_result(stdout: str) -> Any:
    """The ``result`` of the one JSON object a ``--json`` command prints (docs/json.md)."""
    return json.loads(stdout)["result"]


def start_daemon(home: str, machine: str) -> None:
    """``sgxlaunch serve`` in the background; wait for its readiness line."""
    global DAEMON
    assert SOCKET is not None
    argv = [sys.executable, "-m", "sgxlaunch", "serve", home, machine, f"--socket={SOCKET}"]
    print("$ sgxlaunch " + " ".join(argv[3:]) + " &")
    log = open(WORK / "sgxlaunchd.log", "a")  # noqa: SIM115 - kept open by the daemon
    DAEMON = subprocess.Popen(argv, cwd=WORK, stdout=subprocess.PIPE, stderr=log, text=True)
    assert DAEMON.stdout is not None
    line = DAEMON.stdout.readline()
    if not line:
        print("DEMO FAILED: sgxlaunchd did not start; see sgxlaunchd.log", file=sys.stderr)
        sys.exit(1)
    print(textwrap.indent(line.rstrip(), "  "))
    check(json.loads(line).get("ready") is True, "sgxlaunchd is ready; the commands now use it")


def stop_daemon() -> None:
    """SIGTERM: the daemon finishes what is in flight and exits 0."""
    global DAEMON
    if DAEMON is None:
        return
    print(f"$ kill -TERM {DAEMON.pid}")
    DAEMON.send_signal(signal.SIGTERM)
    code = DAEMON.wait(60)
    DAEMON = None
    check(code == 0, "sgxlaunchd stopped cleanly")


def check(condition: bool, what: str) -> None:
    if not condition:
        print(f"DEMO FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"  ✓ {what}")


def build_enclave(path: Path, message: bytes) -> None:
    """A small enclave image: TCS, code, data and an SSA page, every page measured."""
    tcs = bytearray(PAGE_SIZE)
    tcs[16:24] = (3 * PAGE_SIZE).to_bytes(8, "little")  # OSSA
    tcs[28:32] = (1).to_bytes(4, "little")  # NSSA
    tcs[32:40] = PAGE_SIZE.to_bytes(8, "little")  # OENTRY
    code = hashlib.sha256(message).digest().ljust(PAGE_SIZE, b"\x90")
    data = message.ljust(PAGE_SIZE, b"\x00")
    pages = (
        SgxsPage(0, secinfo_flags(PageType.TCS), bytes(tcs), 0xFFFF),
        SgxsPage(PAGE_SIZE, secinfo_flags(PageType.REG, 0b101), code, 0xFFFF),
        SgxsPage(2 * PAGE_SIZE, secinfo_flags(PageType.REG, 0b011), data, 0xFFFF),
        SgxsPage(3 * PAGE_SIZE, secinfo_flags(PageType.REG, 0b011), bytes(PAGE_SIZE), 0xFFFF),
    )
    path.write_bytes(write_sgxs(SgxsImage(ssaframesize=1, size=0x10000, pages=pages)))


def protected_code(home: str, machine: str, keys: list[str], author: str) -> None:
    """Protected code (docs/pcl.md): the author encrypts the example enclave and wraps its key
    to the owner's launch enclave after checking its quote; the launch enclave releases the key
    only under the author's constraint and the owner's rule, and logs each decision."""
    say(
        "Protected code: the author encrypts the example enclave; the key is the author's "
        "alone (a file, never an argument)"
    )
    key_file = WORK / "code.key"
    key_file.write_bytes(os.urandom(32))
    key_file.chmod(0o600)
    sgxlaunch("pcl", "encrypt", "hello.sgxs", "--code-key-file", "code.key", "-o",
              "hello.enc.sgxs", expect=0)  # fmt: skip
    sgxlaunch("sign", "--key", "author.pem", "hello.enc.sgxs", "-o", "hello.enc.sig", expect=0)

    say(
        "The owner allows it (protected_code: allow, and the RWX pages in-place decryption "
        "needs) and exports the launch enclave's key-agreement key in a quote"
    )
    sgxlaunch("policy", "new", "-o", "policy-v5.json", "--from", "policy-v4.signed.json", expect=0)
    sgxlaunch("policy", "new", "-o", "quoting.json", machine, expect=0, show=False)
    document = json.loads((WORK / "policy-v5.json").read_text())
    known = {rule["id"] for rule in document["allow"]}
    document["allow"] += [
        rule
        for rule in json.loads((WORK / "quoting.json").read_text())["allow"]
        if rule["id"] not in known
    ]  # the PCE and QE rules: the quote is made by the platform's quoting enclave
    (WORK / "policy-v5.json").write_text(json.dumps(document, indent=1))
    sgxlaunch("policy", "allow", "policy-v5.json", "--id", "protected-hello", "--mrsigner",
              author, "--isvprodid", "0", "--protected-code", "allow", "--rwx-pages", "allow",
              expect=0)  # fmt: skip
    sgxlaunch("policy", "sign", "policy-v5.json", "--key", keys[0], "--key", keys[2], "-o",
              "policy-v5.signed.json", expect=0)  # fmt: skip
    sgxlaunch("platform", "install-policy", "policy-v5.signed.json", home, machine, expect=0)
    sgxlaunch("platform", "le-key-quote", "-o", "le.quote", "--public-key-out", "le.pub",
              home, machine, expect=0)  # fmt: skip
    sgxlaunch("platform", "root", "-o", "pcs-root.der", machine, expect=0)
    sgxlaunch("platform", "collateral", "-o", "collateral.json", machine, expect=0)

    say(
        "The author verifies the quote (the owner's launch enclave for this owner root, not "
        "DEBUG, binding that key) and wraps the code key to it, for its own signer only"
    )
    sgxlaunch("pcl", "wrap", "--code-key-file", "code.key", "--le-quote", "le.quote",
              "--le-public-key", "le.pub", "--collateral", "collateral.json", "--root",
              "pcs-root.der", "--owner-root", "root.json", "--release",
              f"mrsigner={author},isvprodid=0", "--min-isvsvn", "0", "-o", "wrapped.bin",
              expect=0)  # fmt: skip

    say("The owner hands the wrapped key to the launch enclave, which keeps it sealed")
    out = sgxlaunch("platform", "add-code-key", "wrapped.bin", home, machine, expect=0)
    check("installed" in out, "the launch enclave unwrapped and sealed the key")
    check(
        key_file.read_bytes().hex() not in (WORK / "home" / "state.sqlite3").read_bytes().hex(),
        "the key is nowhere in the home in clear",
    )

    say("The protected enclave runs: its decryptor gets the key from the launch enclave")
    out = sgxlaunch("run", "hello.enc.sgxs", "--sig", "hello.enc.sig", "--input", "secret",
                    home, machine, expect=0)  # fmt: skip
    check("ecall 0: hello, secret, from inside enclave" in out, "the decrypted program answers")

    say("The owner revokes protected code (policy v6): the next launch is refused at release")
    document = json.loads((WORK / "policy-v5.json").read_text())
    for rule in document["allow"]:
        rule.pop("protected_code", None)
    document["version"] = 6
    (WORK / "policy-v6.json").write_text(json.dumps(document, indent=1))
    sgxlaunch("policy", "sign", "policy-v6.json", "--key", keys[1], "--key", keys[2], "-o",
              "policy-v6.signed.json", expect=0)  # fmt: skip
    sgxlaunch("platform", "install-policy", "policy-v6.signed.json", home, machine, expect=0)
    sgxlaunch("run", "hello.enc.sgxs", "--sig", "hello.enc.sig", home, machine, expect=1)
    records = json_result(sgxlaunch("log", "show", home, machine, "--json", expect=0, show=False))[
        "records"
    ]
    releases = [r["outcome"] for r in records if r["kind"] == "code-key-release"]
    check(releases == ["released", "refused"], "the launch log holds the release and the refusal")


def main() -> int:
    try:
        return story()
    finally:
        if DAEMON is not None:
            DAEMON.kill()


def story() -> int:
    global WORK, SOCKET
    started = time.perf_counter()
    # A directory of its own, kept afterwards: the keys, images, SIGSTRUCTs, documents, the
    # home and the machine the demo made stay there to look at (or to continue from).
    WORK = Path(tempfile.mkdtemp(prefix="sgxlaunch-demo-"))
    print(f"The demo works in {WORK} and leaves everything it makes there.")
    if "--service" in sys.argv[1:]:
        SOCKET = WORK / "sgxlaunchd.sock"
        print("It tells the story through sgxlaunchd (--service).")
    home = "--home=home"
    machine = "--machine=machine/machine.json"  # the emulated silicon, outside the home

    say("The enclave author makes a signing key and signs two enclaves")
    author = sgxlaunch("key", "generate", "-o", "author.pem", expect=0).strip()
    build_enclave(WORK / "payments.sgxs", b"payments service")
    build_enclave(WORK / "miner.sgxs", b"something the owner never approved")
    sgxlaunch(
        "sign",
        "--key",
        "author.pem",
        "payments.sgxs",
        "--isvprodid",
        "1",
        "--isvsvn",
        "3",
        "-o",
        "payments.sig",
        expect=0,
    )
    sgxlaunch(
        "sign",
        "--key",
        "author.pem",
        "miner.sgxs",
        "--isvprodid",
        "2",
        "-o",
        "miner.sig",
        expect=0,
    )
    sgxlaunch(
        "sign",
        "--key",
        "author.pem",
        "payments.sgxs",
        "--isvprodid",
        "1",
        "--isvsvn",
        "3",
        "--debug",
        "-o",
        "payments-debug.sig",
        expect=0,
    )
    shown = sgxlaunch(
        "verify", "payments.sig", "--image", "payments.sgxs", "--mrsigner", author, expect=0
    )
    check("mrenclave" in shown, "the first factor holds: the author's signature verifies")

    say("The example enclave shipped with sgxlaunch: write it, sign it, run it, call it")
    sgxlaunch("example", "-o", "hello.sgxs", expect=0)
    sgxlaunch("sign", "--key", "author.pem", "hello.sgxs", "-o", "hello.sig", expect=0)
    shown = sgxlaunch(
        "run", "hello.sgxs", "--sig", "hello.sig", "--ephemeral", "--input", "demo", expect=0
    )
    check("ecall 0: hello, demo, from inside enclave" in shown, "the enclave answers its ECALL")

    say("The platform owner: three policy keys, any two must agree (2 of 3)")
    sgxlaunch(
        "owner",
        "init",
        "--keys",
        "3",
        "--threshold",
        "2",
        "--key-dir",
        "keys",
        "-o",
        "root.json",
        expect=0,
    )
    keys = sorted(str(p.relative_to(WORK)) for p in (WORK / "keys").glob("*.key.pem"))
    check(len(keys) == 3, "three owner keys were generated")
    le_signer = sgxlaunch("key", "generate", "-o", "owner-le.pem", expect=0).strip()

    say("The owner sets up the platform (permissive, like mainline) and its launch enclave")
    sgxlaunch(
        "platform",
        "init",
        home,
        machine,
        "--root",
        "root.json",
        "--le-key",
        "owner-le.pem",
        expect=0,
    )

    if SOCKET is not None:
        say("The platform as a service: sgxlaunchd holds it and serves it on a Unix socket")
        start_daemon(home, machine)

    say("Permissive mode: any correctly signed enclave launches")
    out = sgxlaunch("run", "payments.sgxs", "--sig", "payments.sig", home, machine, expect=0)
    check("decision permissive" in out, "payments launches")
    out = sgxlaunch("run", "miner.sgxs", "--sig", "miner.sig", home, machine, expect=0)
    check("decision permissive" in out, "so does the miner: nothing stops it")

    say("The owner writes a policy allowing only the payments service, signed by 2 of 3")
    sgxlaunch("policy", "new", "-o", "policy-v1.json", "--version", "1", expect=0)
    sgxlaunch(
        "policy",
        "allow",
        "policy-v1.json",
        "--id",
        "payments",
        "--mrsigner",
        author,
        "--isvprodid",
        "1",
        "--isvsvn",
        "3..",
        expect=0,
    )
    sgxlaunch(
        "policy",
        "sign",
        "policy-v1.json",
        "--key",
        keys[0],
        "--key",
        keys[1],
        "-o",
        "policy-v1.signed.json",
        expect=0,
    )
    sgxlaunch("platform", "install-policy", "policy-v1.signed.json", home, machine, expect=0)

    say("The owner switches the platform to owner launch control (2 of 3 signatures)")
    platform_id = json_result(
        sgxlaunch("platform", "status", home, machine, "--json", expect=0, show=False)
    )["platform_id"]
    sgxlaunch(
        "owner",
        "mode",
        "new",
        "--mode",
        "owner",
        "--le-mrsigner",
        le_signer,
        "--version",
        "1",
        "--platform-id",
        platform_id,
        "--key",
        keys[0],
        "--key",
        keys[2],
        "-o",
        "owner-mode.json",
        expect=0,
    )
    sgxlaunch("platform", "mode", "owner-mode.json", home, machine, expect=0)
    status = json_result(
        sgxlaunch("platform", "status", home, machine, "--json", expect=0, show=False)
    )
    check(status["mode"] == "owner", "launch control is owner mode")
    check(
        status["launch_key_msrs"] == le_signer,
        "the launch-key MSRs hold the owner's launch-enclave signer",
    )

    say("Owner mode: the allowed enclave launches with a token from the launch enclave")
    out = json_result(
        sgxlaunch(
            "run",
            "payments.sgxs",
            "--sig",
            "payments.sig",
            home,
            machine,
            "--json",
            expect=0,
            show=False,
        )
    )
    check(out["initialized"] and out["decision"] == "allowed", "payments launches")
    check(
        out["rule"] == "payments" and bool(out["token_keyid"]),
        "allowed by rule 'payments', with a freshly minted token",
    )

    say("The miner is refused, with the reason")
    sgxlaunch("run", "miner.sgxs", "--sig", "miner.sig", home, machine, expect=1)

    say("A debug build of the allowed enclave is refused (the rule does not permit DEBUG)")
    sgxlaunch("run", "payments.sgxs", "--sig", "payments-debug.sig", home, machine, expect=1)

    say("The owner publishes policy v2; the older v1 can no longer be installed")
    sgxlaunch("policy", "new", "-o", "policy-v2.json", "--from", "policy-v1.signed.json", expect=0)
    sgxlaunch(
        "policy",
        "sign",
        "policy-v2.json",
        "--key",
        keys[1],
        "--key",
        keys[2],
        "-o",
        "policy-v2.signed.json",
        expect=0,
    )
    sgxlaunch("platform", "install-policy", "policy-v2.signed.json", home, machine, expect=0)
    sgxlaunch("platform", "install-policy", "policy-v1.signed.json", home, machine, expect=1)

    say("Going back to permissive with a single signature is refused")
    sgxlaunch(
        "owner",
        "mode",
        "new",
        "--mode",
        "permissive",
        "--version",
        "2",
        "--platform-id",
        platform_id,
        "--key",
        keys[0],
        "-o",
        "back.json",
        expect=0,
    )
    sgxlaunch("platform", "mode", "back.json", home, machine, expect=1)
    status = json_result(
        sgxlaunch("platform", "status", home, machine, "--json", expect=0, show=False)
    )
    check(status["mode"] == "owner", "the platform is still in owner mode")

    say(
        "The author's loader fetches code after EINIT. Under the new policy default, "
        "dynamic_memory data, it may grow but the driver never maps its dynamic pages "
        "executable: the fetched code is refused (EACCES), and the refusal is in the log"
    )
    loader_mrenclave = sgxlaunch("example", "--loader", "-o", "loader.sgxs", expect=0).strip()
    sgxlaunch(
        "sign",
        "--key",
        "author.pem",
        "loader.sgxs",
        "--isvprodid",
        "4",
        "--attributes",
        "0x84/0x3",  # MODE64BIT | KSS: the driver gives each instance its own CONFIGID
        "-o",
        "loader.sig",
        expect=0,
    )

    def install_loader_policy(version: int, base: str, rule: dict[str, Any]) -> None:
        """Policy v``version`` from ``base`` with ``rule`` as its loader rule, signed by 2
        of 3 and installed (each dynamic-memory level is one more scene: add a call)."""
        name = f"policy-v{version}"
        sgxlaunch("policy", "new", "-o", f"{name}.json", "--from", base, expect=0)
        document = json.loads((WORK / f"{name}.json").read_text())
        document["allow"] = [r for r in document["allow"] if r.get("id") != rule["id"]]
        document["allow"].append(rule)
        (WORK / f"{name}.json").write_text(json.dumps(document, indent=1))
        sgxlaunch(
            "policy",
            "sign",
            f"{name}.json",
            "--key",
            keys[0],
            "--key",
            keys[1],
            "-o",
            f"{name}.signed.json",
            expect=0,
        )
        sgxlaunch("platform", "install-policy", f"{name}.signed.json", home, machine, expect=0)

    def log_records() -> list[dict[str, Any]]:
        shown = sgxlaunch("log", "show", home, machine, "--json", expect=0, show=False)
        records: list[dict[str, Any]] = json_result(shown)["records"]
        return records

    loader_rule = {"id": "loader", "mrenclave": loader_mrenclave, "kss": True}
    install_loader_policy(3, "policy-v2.signed.json", {**loader_rule, "dynamic_memory": "data"})
    sgxlaunch(
        "run", "loader.sgxs", "--sig", "loader.sig", "--input", "demo", home, machine, expect=1
    )
    dynamic = [r for r in log_records() if r["kind"] == "dynamic"]
    check(
        [(r["level"], r["action"], r["prot"], r["outcome"], r["errno"]) for r in dynamic]
        == [("data", "mprotect", "r-x", "refused", "EACCES")],
        "the driver refused the R-X mapping of the fetched code (EACCES); the log records it",
    )

    say(
        "The owner allows the loader under dynamic_memory attested-code: the loader reports "
        "the code to the launch enclave, which records the grant with the code hash before "
        "the driver maps it executable"
    )
    install_loader_policy(
        4,
        "policy-v3.signed.json",
        {**loader_rule, "dynamic_memory": "attested-code", "code_hashes": "any"},
    )
    out = json_result(
        sgxlaunch(
            "run",
            "loader.sgxs",
            "--sig",
            "loader.sig",
            "--input",
            "demo",
            home,
            machine,
            "--json",
            expect=0,
        )
    )
    check(
        out["ecall_output"] == "fetched code ran inside the loader: demo",
        "the fetched code ran, after the launch enclave granted it",
    )
    records = json_result(sgxlaunch("log", "show", home, machine, "--json", expect=0, show=False))[
        "records"
    ]
    grants = [r for r in records if r["kind"] == "grant"]
    fetched = hashlib.sha256(program_code_page(FetchedCode)).hexdigest()
    check(
        len(grants) == 1
        and grants[0]["verdict"] == "granted"
        and grants[0]["code_hash"] == fetched,
        "the launch log holds the grant with the fetched code's hash",
    )

    say("The launch log shows every attempt, and verifies")
    records = json_result(sgxlaunch("log", "show", home, machine, "--json", expect=0, show=False))[
        "records"
    ]
    sgxlaunch("log", "show", home, machine, expect=0)
    decisions = [r["decision"] for r in records if r["kind"] == "attempt"]
    check(
        [r["attempt"] for r in records if r["kind"] == "outcome"]
        == [r["seq"] for r in records if r["kind"] == "attempt"],
        "each attempt has its outcome record",
    )
    check(
        decisions
        == ["permissive", "permissive", "allowed", "denied", "denied", "allowed", "allowed"],
        "seven INIT attempts: 2 permissive, 3 allowed, 2 denied",
    )
    sgxlaunch("log", "verify", home, machine, expect=0)

    protected_code(home, machine, keys, author)

    say("Someone with write access to the state edits a record: verification names it")
    database = WORK / "home" / "state.sqlite3"
    with sqlite3.connect(database) as db:
        key, value = db.execute(
            "SELECT key, value FROM kv WHERE key LIKE 'log/%' ORDER BY key LIMIT 1 OFFSET 6"
        ).fetchone()
        db.execute(
            "UPDATE kv SET value = ? WHERE key = ?",
            (bytes(value).replace(b'"decision":"denied"', b'"decision":"allowed"'), key),
        )
    out = sgxlaunch("log", "verify", home, machine, "--json", expect=1)
    check(json_result(out)["first_bad_record"] == 6, "record 6 is named as the first bad one")

    say(
        "Someone with write access to the home deletes the mode document and the active "
        "launch enclave, hoping for a fresh permissive start: the platform refuses to start"
    )
    with sqlite3.connect(database) as db:
        db.execute("DELETE FROM kv WHERE key IN ('owner/mode', 'platform/le-active')")
    if SOCKET is not None:  # the running daemon holds its verified state: start it again
        stop_daemon()
        start_daemon(home, machine)
    sgxlaunch("run", "miner.sgxs", "--sig", "miner.sig", home, machine, expect=1)
    check(True, "no fresh start: the machine's counter owner refused the home (class B)")

    stop_daemon()
    print(
        f"\nDemo complete in {time.perf_counter() - started:.1f} s: every outcome was as expected."
        f"\nIts artifacts are in {WORK}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
