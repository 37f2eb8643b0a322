"""Protected code end to end through the command line (issue 20), built once per test session:
the owner's platform, the author's encrypted example enclave and wrapped key, and every
command's output (text and ``--json``, stdout and stderr) for the acceptance tests
(``tests/cli/test_pcl_owner_cli.py``) and the secret scan
(``tests/adversarial/test_pcl_code_key_secrecy.py``)."""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from sgxlaunch.cli import main


@dataclass
class Scenario:
    """The files of one owner and one author, and everything the CLI printed."""

    tmp: Path
    runner: CliRunner
    outputs: list[str] = field(default_factory=list)
    results: dict[str, Result] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.tmp / "home"

    @property
    def code_key(self) -> bytes:
        return (self.tmp / "code.key").read_bytes()

    def records(self, name: str) -> list[dict[str, Any]]:
        """The records a ``log show --json`` run printed."""
        records = json.loads(self.results[name].stdout)["result"]["records"]
        assert isinstance(records, list)
        return records

    def run(self, name: str, *args: str | Path | int, expect: int = 0) -> Result:
        result = self.runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        self.outputs += [result.stdout, result.stderr]
        self.results[name] = result
        assert result.exit_code == expect, (name, result.stdout, result.stderr)
        return result

    def json(self, name: str, *args: str | Path | int, expect: int = 0) -> Any:
        return json.loads(self.run(name, *args, "--json", expect=expect).stdout)


def _policy(s: Scenario, version: int, author_mrsigner: str, **fields: str) -> Path:
    """The owner's policy ``version`` (spec 3, with the PCE/QE rules of ``policy new``)
    allowing the author's enclaves with ``fields``, signed by two of the three keys."""
    doc_path = s.tmp / f"policy-v{version}.json"
    s.run(f"policy new v{version}", "policy", "new", "-o", doc_path, "--version", version,
          "--force")  # fmt: skip
    doc = json.loads(doc_path.read_text())
    doc["spec_version"] = "3"
    doc["allow"].append({"id": "author", "mrsigner": author_mrsigner, "isvprodid": 0, **fields})
    doc_path.write_text(json.dumps(doc))
    keys = sorted(str(p) for p in (s.tmp / "keys").glob("*.key.pem"))
    signed = s.tmp / f"policy-v{version}.signed.json"
    s.run(f"policy sign v{version}", "policy", "sign", doc_path, "--key", keys[0], "--key",
          keys[1], "-o", signed)  # fmt: skip
    return signed


@functools.cache
def pcl_scenario() -> Scenario:
    """Run the whole story once (a temporary directory removed at exit)."""
    tmp = Path(tempfile.mkdtemp(prefix="sgxlaunch-pcl-cli-"))
    atexit.register(shutil.rmtree, tmp, True)
    s = Scenario(tmp, CliRunner(env={"SGXLAUNCH_MACHINE": str(tmp / "machine.json")}))
    home = ("--home", s.home)
    # The owner: a 2-of-3 root, the platform with its launch enclave.
    s.run("owner init", "owner", "init", "--keys", 3, "--threshold", 2, "--key-dir",
          tmp / "keys", "-o", tmp / "root.json")  # fmt: skip
    le_signer = s.run("le key", "key", "generate", "-o", tmp / "le.pem").stdout.strip()
    s.run("platform init", "platform", "init", *home, "--root", tmp / "root.json", "--le-key",
          tmp / "le.pem")  # fmt: skip
    # The author: the example enclave, encrypted, then signed.
    s.run("example", "example", "-o", tmp / "hello.sgxs")
    (tmp / "code.key").write_bytes(os.urandom(32))
    os.chmod(tmp / "code.key", 0o600)
    s.run("pcl encrypt", "pcl", "encrypt", tmp / "hello.sgxs", "--code-key-file",
          tmp / "code.key", "-o", tmp / "hello.enc.sgxs")  # fmt: skip
    author = s.run("author key", "key", "generate", "-o", tmp / "author.pem").stdout.strip()
    s.run("sign", "sign", "--key", tmp / "author.pem", tmp / "hello.enc.sgxs", "-o",
          tmp / "hello.enc.sig")  # fmt: skip
    # The owner allows it, with protected code and the RWX pages in-place decryption needs.
    signed = _policy(s, 1, author, protected_code="allow", rwx_pages="allow")
    s.run("install v1", "platform", "install-policy", signed, *home)
    keys = sorted(str(p) for p in (tmp / "keys").glob("*.key.pem"))
    s.run("mode new", "owner", "mode", "new", "--mode", "owner", "--le-mrsigner", le_signer,
          "--version", 1, "--any-platform", "--key", keys[1], "--key", keys[2], "-o",
          tmp / "mode.json")  # fmt: skip
    s.run("platform mode", "platform", "mode", tmp / "mode.json", *home)
    # The owner exports the launch enclave's key quote and the verifier's root and collateral.
    s.json("le-key-quote", "platform", "le-key-quote", "-o", tmp / "le.quote",
           "--public-key-out", tmp / "le.pub", *home)  # fmt: skip
    s.run("root", "platform", "root", "-o", tmp / "pcs-root.der")
    s.run("collateral", "platform", "collateral", "-o", tmp / "collateral.json")
    # The author verifies the quote and wraps the key to the launch enclave.
    s.run("pcl wrap", "pcl", "wrap", "--code-key-file", tmp / "code.key", "--le-quote",
          tmp / "le.quote", "--le-public-key", tmp / "le.pub", "--collateral",
          tmp / "collateral.json", "--root", tmp / "pcs-root.der", "--owner-root",
          tmp / "root.json", "--release", f"mrsigner={author},isvprodid=0", "--min-isvsvn", 0,
          "-o", tmp / "wrapped.bin")  # fmt: skip
    # The owner installs it; the enclave runs.
    s.json("add-code-key", "platform", "add-code-key", tmp / "wrapped.bin", *home)
    s.run("add-code-key text", "platform", "add-code-key", tmp / "wrapped.bin", *home)
    enclave = (tmp / "hello.enc.sgxs", "--sig", tmp / "hello.enc.sig", *home)
    s.run("run", "run", *enclave, "--input", "owner")
    s.json("run json", "run", *enclave, "--input", "json")
    s.json("log after release", "log", "show", *home)
    # The owner revokes: policy 2 has no protected_code (default deny).
    s.run("install v2", "platform", "install-policy", _policy(s, 2, author, rwx_pages="allow"),
          *home)  # fmt: skip
    s.run("run revoked", "run", *enclave, expect=1)
    s.json("run revoked json", "run", *enclave, expect=1)
    s.json("log after revocation", "log", "show", *home)
    s.run("log text", "log", "show", *home)
    # Policy 3 allows protected code again but not RWX pages: EINIT is refused.
    s.run("install v3", "platform", "install-policy",
          _policy(s, 3, author, protected_code="allow"), *home)  # fmt: skip
    s.run("run rwx denied", "run", *enclave, expect=1)
    s.json("run rwx denied json", "run", *enclave, expect=1)
    s.run("log verify", "log", "verify", *home)
    return s
