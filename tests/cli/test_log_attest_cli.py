"""``log export``, ``log attest`` and ``log verify --records`` through the command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import sgxlaunch.launch.collector as collector_module
from sgxlaunch.attest.pcs import EmulatedPcs
from sgxlaunch.cli import main
from sgxlaunch.cli._output import shaped
from sgxlaunch.store import FileMachine
from tests.conftest import shared_vectors
from tests.support.cli import run
from tests.support.cli_json import document_of, result_of

pytestmark = pytest.mark.slow  # started first under `make test` (tests/conftest.py)

GEN = shared_vectors() / "generated"


@pytest.fixture
def cli(tmp_path: Path) -> CliRunner:
    return CliRunner(env={"SGXLAUNCH_MACHINE": str(tmp_path / "machine.json")})


def go(cli: CliRunner, *args: str | Path) -> Result:
    return cli.invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def home(cli: CliRunner, tmp_path: Path) -> Path:
    """A permissive platform with one launch (two records) in its log."""
    home = tmp_path / "home"
    root = tmp_path / "root.json"
    keys = ("--keys", "3", "--threshold", "2", "--key-dir", tmp_path / "keys")
    assert go(cli, "owner", "init", *keys, "-o", root).exit_code == 0
    assert go(cli, "key", "generate", "-o", tmp_path / "le.pem").exit_code == 0
    init = ("platform", "init", "--home", home, "--root", root, "--le-key", tmp_path / "le.pem")
    assert go(cli, *init, "--epc-mib", "4").exit_code == 0
    ran = go(
        cli, "run", GEN / "case1_defaults.sgxs", "--sig", GEN / "case1_defaults.sig", "--home", home
    )
    assert ran.exit_code == 0, ran.output
    return home


def test_log_export_writes_the_header_and_each_record_body(
    cli: CliRunner, home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "log.jsonl"
    result = go(cli, "log", "export", "-o", out, "--home", home, "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(go(cli, "log", "show", "--home", home, "--json").stdout)["result"]
    lines = out.read_bytes().split(b"\n")[:-1]
    header = json.loads(lines[0])
    assert header["count"] == shown["count"] == len(lines) - 1 >= 2
    # The same records `log show --json` lists (which adds the hex spellings of attributes).
    assert shaped([json.loads(line) for line in lines[1:]]) == shown["records"]
    assert json.loads(result.stdout)["result"] == {
        "output": str(out),
        "first_seq": 0,
        "records": shown["count"],
    }
    again = go(cli, "log", "export", "-o", out, "--from", "1", "--home", home)
    assert again.exit_code == 2 and "exists" in again.stderr
    tail = tmp_path / "tail.jsonl"
    assert go(cli, "log", "export", "-o", tail, "--from", "1", "--home", home).exit_code == 0
    assert tail.read_bytes().split(b"\n")[1:] == [*lines[2:], b""]
    beyond = go(cli, "log", "export", "-o", tmp_path / "x.jsonl", "--from", "99", "--home", home)
    assert beyond.exit_code == 2 and "cannot export from record 99" in beyond.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_remote_verify_names_what_is_missing_and_uses_no_home(
    cli: CliRunner, home: Path, tmp_path: Path
) -> None:
    records = tmp_path / "log.jsonl"
    records.write_bytes(b"{}\n")
    missing = go(cli, "log", "verify", "--records", records)
    assert missing.exit_code == 2
    for option in ("--quote", "--collateral", "--nonce", "--le-mrsigner", "--owner-root"):
        assert option in missing.stderr
    alone = go(cli, "log", "verify", "--nonce", "00ff", "--home", home)
    assert alone.exit_code == 2 and "only with --records" in alone.stderr
    bad_nonce = go(cli, "log", "verify", "--records", records, "--nonce", "0g")
    assert bad_nonce.exit_code == 2 and "hex" in bad_nonce.stderr


# -- end to end: log attest on the platform, log verify --records on "another machine" ----------


@dataclass
class Site:
    """A platform on disk (home + machine file) and what its owner hands the collector."""

    base: Path
    platform_id: str
    le_mrsigner: str
    root: Path

    def where(self) -> tuple[str, ...]:
        return ("--home", str(self.base / "home"), "--machine", str(self.base / "m.json"))

    def launch(self, count: int = 1) -> None:
        for _ in range(count):
            ran = run("run", GEN / "case1_defaults.sgxs", "--sig", GEN / "case1_defaults.sig",
                      *self.where())  # fmt: skip
            assert ran.exit_code == 0, ran.output

    def attest(self, nonce: str, name: str, *extra: str) -> tuple[Path, Path]:
        quote, records = self.base / f"{name}.quote", self.base / f"{name}.jsonl"
        result = run("log", "attest", "--nonce", nonce, "-o", quote, "--records-out", records,
                     *extra, *self.where(), "--json")  # fmt: skip
        assert result.exit_code == 0, result.output
        doc = result_of(result)
        assert doc["platform_id"] == self.platform_id and doc["nonce"] == nonce
        return quote, records

    def collector_files(self, into: Path) -> tuple[Path, Path]:
        """The platform's root certificate and collateral (what `platform root` and `platform
        collateral` export), taken from the machine's PCS."""
        pcs = EmulatedPcs(FileMachine(self.base / "m.json"))
        root, collateral = into / f"{self.base.name}-root.der", into / f"{self.base.name}-c.json"
        root.write_bytes(pcs.root_der())
        collateral.write_bytes(pcs.collateral(datetime.now(UTC)))
        return root, collateral


def make_site(base: Path, owner_root: Path, keys_dir: Path) -> Site:
    """A permissive platform of the owner (launch enclave signed with the owner's key)."""
    base.mkdir(parents=True, exist_ok=True)
    init = run("platform", "init", "--root", owner_root, "--le-key", keys_dir / "le.pem",
               "--epc-mib", "8", "--home", base / "home", "--machine", base / "m.json",
               "--json")  # fmt: skip
    assert init.exit_code == 0, init.output
    status = result_of(init)
    return Site(base, status["platform_id"], status["launch_enclave"]["mrsigner"], owner_root)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> tuple[Site, Site, Path]:
    tmp = tmp_path_factory.mktemp("log-attest")
    keys_dir = tmp / "keys"
    root = tmp / "root.json"
    owner = ("--keys", "3", "--threshold", "2", "--key-dir", keys_dir, "-o", root)
    assert run("owner", "init", *owner).exit_code == 0
    assert run("key", "generate", "-o", keys_dir / "le.pem").exit_code == 0
    a = make_site(tmp / "a", root, keys_dir)
    b = make_site(tmp / "b", root, keys_dir)
    a.launch(2)
    b.launch(1)
    collector = tmp / "collector"
    collector.mkdir()
    return a, b, collector


def verify(
    site: Site, quote: Path, records: Path, nonce: str, collector: Path, *extra: str | Path
) -> Result:
    """`log verify --records` with this site's identity, root and collateral, no home."""
    root_der, collateral = site.collector_files(collector)
    return run(
        "log", "verify", "--records", records, "--quote", quote, "--collateral", collateral,
        "--root", root_der, "--nonce", nonce, "--le-mrsigner", site.le_mrsigner,
        "--owner-root", site.root, "--platform-id", site.platform_id, *extra, "--json",
    )  # fmt: skip


def test_attested_log_verifies_on_another_machine_and_state_extends(
    sites: tuple[Site, Site, Path],
) -> None:
    a, _, collector = sites
    state = collector / "state-extend.json"
    quote, records = a.attest("a1a1a1a1", "first")
    result = verify(a, quote, records, "a1a1a1a1", collector, "--state", state)
    assert result.exit_code == 0, result.output
    doc = result_of(result)
    lines = records.read_bytes().split(b"\n")[:-1]
    assert doc["count"] == len(lines) - 1 and doc["state"] == "created"
    assert doc["tcb_status"] == "UpToDate" and doc["le_mrsigner"] == a.le_mrsigner
    assert json.loads(state.read_bytes())["platforms"][a.platform_id]["count"] == doc["count"]
    a.launch(1)
    quote2, records2 = a.attest("a2a2", "second", "--from", str(doc["count"]))
    again = verify(a, quote2, records2, "a2a2", collector, "--state", state)
    assert again.exit_code == 0, again.output
    extended = result_of(again)
    assert extended["state"] == "extended" and extended["first_seq"] == doc["count"]
    # the launch (2 records) and this process's PCE and QE launches (4) before the head
    assert extended["new_records"] == extended["count"] - doc["count"] == 6
    text = run("log", "verify", "--records", records2, "--quote", quote2, "--collateral",
               a.collector_files(collector)[1], "--root", a.collector_files(collector)[0],
               "--nonce", "a2a2", "--le-mrsigner", a.le_mrsigner, "--owner-root", a.root,
               "--platform-id", a.platform_id, "--state", state)  # fmt: skip
    assert text.exit_code == 0, text.output
    assert "chain to the attested head" in text.stdout and "state: unchanged" in text.stdout
    # An export that starts after record 0 is checked only against the collector's state.
    alone = verify(a, quote2, records2, "a2a2", collector)
    assert alone.exit_code == 1 and "without this collector's state" in alone.stderr


def test_cli_refuses_a_replayed_quote(sites: tuple[Site, Site, Path]) -> None:
    a, _, collector = sites
    quote, records = a.attest("0badc0de", "replay")
    result = verify(a, quote, records, "feedface", collector)
    assert result.exit_code == 1
    assert "replayed quote" in result.stderr and "nonce" in result_of_error(result)["check"]


def test_cli_refuses_a_quote_from_another_platform(sites: tuple[Site, Site, Path]) -> None:
    a, b, collector = sites
    quote, records = b.attest("b0b0", "other")
    # B's files, A's identity: REPORTDATA names B's platform.
    root_der, collateral = b.collector_files(collector)
    result = run(
        "log", "verify", "--records", records, "--quote", quote, "--collateral", collateral,
        "--root", root_der, "--nonce", "b0b0", "--le-mrsigner", a.le_mrsigner,
        "--owner-root", a.root, "--platform-id", a.platform_id, "--json",
    )  # fmt: skip
    assert result.exit_code == 1 and "another platform" in result.stderr
    # A's root and collateral: B's quote does not even chain to A's root.
    refused = verify(a, quote, records, "b0b0", collector)
    assert refused.exit_code == 1 and result_of_error(refused)["check"] == "root"


def test_cli_refuses_an_export_with_a_record_removed(sites: tuple[Site, Site, Path]) -> None:
    a, _, collector = sites
    quote, records = a.attest("c0c0", "removed")
    lines = records.read_bytes().split(b"\n")
    del lines[2]
    records.write_bytes(b"\n".join(lines))
    state = collector / "state-removed.json"
    result = verify(a, quote, records, "c0c0", collector, "--state", state)
    assert result.exit_code == 1 and "missing or out of order" in result.stderr
    doc = document_of(result)
    assert doc["result"] == {"valid": False, "first_bad_record": 1}
    assert not state.exists()  # nothing written on a refusal


def test_cli_refuses_a_stale_head_and_a_forked_log(
    sites: tuple[Site, Site, Path], tmp_path: Path
) -> None:
    """A copy of A's machine and home (a cloned machine) extends the same head differently."""
    a, _, collector = sites
    clone = Site(tmp_path / "clone", a.platform_id, a.le_mrsigner, a.root)
    clone.base.mkdir()
    shutil.copytree(a.base / "home", clone.base / "home")
    shutil.copy(a.base / "m.json", clone.base / "m.json")
    state = collector / "state-fork.json"
    old_quote, old_records = a.attest("d0", "old")
    a.launch(1)
    quote, records = a.attest("d1", "new")
    assert verify(a, quote, records, "d1", collector, "--state", state).exit_code == 0
    stale = verify(a, old_quote, old_records, "d0", collector, "--state", state)
    assert stale.exit_code == 1 and result_of_error(stale)["check"] == "launch-log-stale"
    clone.launch(3)
    fork_quote, fork_records = clone.attest("d2", "fork")
    forked = verify(clone, fork_quote, fork_records, "d2", collector, "--state", state)
    assert forked.exit_code == 1 and result_of_error(forked)["check"] == "launch-log-fork"
    assert "forked log" in forked.stderr


def _waits_on_a_lock(pid: int) -> bool:
    """``pid`` is blocked in flock (a ``->`` line of /proc/locks names the waiters)."""
    lines = Path("/proc/locks").read_text().splitlines()
    return any("->" in line and line.split()[5:6] == [str(pid)] for line in lines)


def test_two_collectors_at_once_do_not_forget_a_platform(
    sites: tuple[Site, Site, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two collectors on one --state file at the same time: B's whole run starts while A's is
    between reading the state and writing it. Without a lock A's write drops B's entry (a lost
    update), and the collector would later take a stale log of B as new; with it B waits for A
    and both platforms are in the state."""
    a, b, collector = sites
    state = collector / "state-concurrent.json"
    quote_a, records_a = a.attest("e1e1", "concurrent-a")
    quote_b, records_b = b.attest("e2e2", "concurrent-b")
    root_b, collateral_b = b.collector_files(collector)
    second = [sys.executable, "-m", "sgxlaunch", "log", "verify", "--records", records_b,
              "--quote", quote_b, "--collateral", collateral_b, "--root", root_b,
              "--nonce", "e2e2", "--le-mrsigner", b.le_mrsigner, "--owner-root", b.root,
              "--platform-id", b.platform_id, "--state", state, "--json"]  # fmt: skip
    real = collector_module.verify_log_quote
    started: list[subprocess.Popen[bytes]] = []

    def a_lets_b_run(*args: Any, **kwargs: Any) -> Any:
        verified = real(*args, **kwargs)  # A has read the state and verified; not yet written
        proc = subprocess.Popen(
            [str(arg) for arg in second], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        started.append(proc)
        deadline = time.monotonic() + 120
        while proc.poll() is None and not _waits_on_a_lock(proc.pid):
            assert time.monotonic() < deadline, "the second collector neither ended nor waited"
            time.sleep(0.02)
        return verified

    monkeypatch.setattr(collector_module, "verify_log_quote", a_lets_b_run)
    first = verify(a, quote_a, records_a, "e1e1", collector, "--state", state)
    assert first.exit_code == 0, first.output
    (proc,) = started
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["result"]["state"] == "created"
    platforms = json.loads(state.read_bytes())["platforms"]
    assert set(platforms) == {a.platform_id, b.platform_id}
    assert (collector / "state-concurrent.json.lock").exists()


def result_of_error(result: Result) -> dict[str, Any]:
    error = document_of(result)["error"]
    assert isinstance(error, dict)
    return error
