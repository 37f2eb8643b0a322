"""Class L: corrupt rows crash the platform. The state database is in the attacker's home:
crafted rows (values of the wrong SQLite type or size, keys that are not text, a changed
schema, log records that are not what the launch enclave writes) must end in the project's own
error naming the key — exit 2 with one line for a damaged store, with the recovery path — and
`log show` must flag a malformed record instead of crashing. Never a traceback.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sgxlaunch.cli import main
from sgxlaunch.errors import MalformedInput
from sgxlaunch.launch.platform import legacy_config
from sgxlaunch.policy import MemoryStore
from tests.support.home import DiskHome, make_disk_home

Craft = Callable[[sqlite3.Connection], object]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> DiskHome:
    home = make_disk_home(tmp_path_factory.mktemp("template"))
    platform = home.open()
    from sgxlaunch.arch import Sigstruct
    from sgxlaunch.formats import sgxs

    platform.run(
        sgxs.parse_sgxs(home.image.read_bytes()), Sigstruct.from_bytes(home.sig.read_bytes())
    )
    return home


def _copy(template: DiskHome, tmp_path: Path) -> tuple[Path, Path]:
    home, machine = tmp_path / "home", tmp_path / "machine.json"
    shutil.copytree(template.home, home)
    shutil.copy(template.machine, machine)
    return home, machine


def _cli(home: Path, machine: Path, *args: str) -> Result:
    return CliRunner().invoke(
        main, [*args, "--home", str(home), "--machine", str(machine)], catch_exceptions=False
    )


def _log_key(db: sqlite3.Connection, index: int = 0) -> str:
    keys = [k for (k,) in db.execute("SELECT key FROM kv WHERE key LIKE 'log/%' ORDER BY key")]
    return str(keys[index])


def _set(key: str | Callable[[sqlite3.Connection], str], sql_value: str) -> Craft:
    def craft(db: sqlite3.Connection) -> None:
        name = key(db) if callable(key) else key
        db.execute(f"UPDATE kv SET value = {sql_value} WHERE key = ?", (name,))  # noqa: S608

    return craft


def _sealed(db: sqlite3.Connection) -> str:
    row = db.execute("SELECT key FROM kv WHERE key LIKE 'platform/le-sealed/%'").fetchone()
    return str(row[0])


DAMAGED: dict[str, tuple[Craft, str]] = {
    "root-stored-as-text": (_set("owner/root", "CAST(value AS TEXT)"), "owner/root"),
    "sealed-state-minus-one": (_set(_sealed, "-1"), "platform/le-sealed/"),
    "sealed-state-two-to-the-62": (_set(_sealed, str(2**62)), "platform/le-sealed/"),
    "policy-as-real": (_set("owner/policy", "1.5e300"), "owner/policy"),
    "log-record-as-text": (_set(_log_key, "'hello'"), "log/"),
    "key-not-utf8": (
        lambda db: db.execute("INSERT INTO kv VALUES (CAST(x'6c6f672fff' AS TEXT), x'00')"),
        "is not ASCII",
    ),
    "key-as-blob": (
        lambda db: db.execute("INSERT INTO kv VALUES (x'0102', x'00')"),
        "SQLite type",
    ),
    "changed-table-schema": (
        lambda db: db.executescript(
            "ALTER TABLE kv RENAME TO old; CREATE TABLE kv (key TEXT, value BLOB, extra INT);"
            "INSERT INTO kv SELECT key, value, 0 FROM old; DROP TABLE old;"
        ),
        "unexpected schema",
    ),
    "extra-trigger": (
        lambda db: db.execute(
            "CREATE TRIGGER t AFTER INSERT ON kv BEGIN DELETE FROM kv WHERE key = 'x'; END"
        ),
        "unexpected schema",
    ),
    "future-schema-version": (lambda db: db.execute("PRAGMA user_version = 7"), "version 7"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
@pytest.mark.parametrize("command", [("platform", "status"), ("log", "show"), ("log", "verify")])
def test_crafted_row_gives_one_line_exit_2_naming_it(
    template: DiskHome, tmp_path: Path, case: str, command: tuple[str, str]
) -> None:
    """L. A crafted row ends in exit 2, one line on stderr naming the key (or the schema)
    and the recovery path (before: sqlite3/TypeError/UnicodeDecodeError tracebacks)."""
    craft, named = DAMAGED[case]
    home, machine = _copy(template, tmp_path)
    with sqlite3.connect(home / "state.sqlite3") as db:
        craft(db)
    result = _cli(home, machine, *command)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sgxlaunch: error:")
    assert "damaged" in lines[0] and named in lines[0]
    assert "restore the home" in lines[0] and "recovery apply" in lines[0]


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


MALFORMED_RECORDS: dict[str, bytes] = {
    "body-is-a-list": b"[1,2,3]",
    "body-lacks-seq": b'{"kind":"attempt","prev":"00"}',
    "seq-is-null": b'{"seq":null,"prev":"00"}',
    "seq-is-a-string": b'{"seq":"0","prev":"00"}',
    "nested-30000-deep": _nested(30_000),
    "nested-100000-deep": _nested(100_000),
    "not-utf8": b'{"seq":0,"x":"\xff\xfe"}',
    "not-json": b"{",
    "too-short": b"",
}


@pytest.mark.parametrize("case", sorted(MALFORMED_RECORDS))
def test_malformed_log_record_is_flagged_by_show_and_refused_by_verify(
    template: DiskHome, tmp_path: Path, case: str
) -> None:
    """L. `log show` lists a malformed record, flagged, and the others; `log verify` names it
    (exit 1). Before: `"seq": null` and deep nesting crashed `log show`."""
    home, machine = _copy(template, tmp_path)
    with sqlite3.connect(home / "state.sqlite3") as db:
        key = _log_key(db, 0)
        body = MALFORMED_RECORDS[case]
        db.execute(
            "UPDATE kv SET value = ? WHERE key = ?", (bytes(32) + body if body else b"", key)
        )
    shown = _cli(home, machine, "log", "show", "--json")
    assert shown.exit_code == 0, shown.output
    records = json.loads(shown.stdout)["result"]["records"]
    assert records[0]["seq"] == 0 and "malformed" in records[0]
    assert records[1]["kind"] == "outcome" and "malformed" not in records[1]
    text = _cli(home, machine, "log", "show")
    assert text.exit_code == 0 and "MALFORMED" in text.stdout
    verified = _cli(home, machine, "log", "verify", "--json")
    assert verified.exit_code == 1
    assert json.loads(verified.stdout)["result"]["first_bad_record"] == 0


@pytest.mark.parametrize(
    "config",
    [
        b'{"epc_size": 1099511627776, "firmware": "lc-enabled"}',
        b'{"epc_size": 1125899906842624, "firmware": "lc-enabled"}',
        b'{"epc_size": -4096, "firmware": "lc-enabled"}',
        b'{"epc_size": "16777216", "firmware": "lc-enabled"}',
        b'{"epc_size": 16777216, "firmware": "locked-hash", "firmware_lepubkeyhash": "zz"}',
        b'{"epc_size": 16777216, "firmware": "bios"}',
        b"[]",
        b"\xff",
        _nested(100_000),
    ],
    ids=[
        "epc-2^40",
        "epc-2^50",
        "epc-negative",
        "epc-text",
        "hash-not-hex",
        "firmware-unknown",
        "list",
        "not-utf8",
        "deep",
    ],
)
def test_crafted_legacy_platform_config_is_refused_naming_it(config: bytes) -> None:
    """L. A home made before the machine existed, with a crafted ``platform/config``: the
    migration's reader refuses it naming the key (before: an EPC of 2^50 bytes was accepted
    and TypeError/ValueError escaped)."""
    store = MemoryStore({"platform/seed": b"s" * 32, "platform/config": config})
    with pytest.raises(MalformedInput) as err:
        legacy_config(store)
    assert err.value.field == "platform/config"
