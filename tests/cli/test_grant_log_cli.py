"""``sgxlaunch log show`` lists attested-code grant records with the code hash (text and
JSON, the JSON checked against the output schema by the shared runner)."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import jsonschema

from sgxlaunch.cli._output import SCHEMA_FILE
from tests.support.cli import run
from tests.support.grants import CODE, dynamic_policy, loader_rule, loader_sigstruct, start_loader
from tests.support.home import make_disk_home


def test_log_show_lists_grants_with_the_code_hash(tmp_path: Path) -> None:
    disk = make_disk_home(tmp_path)
    sig = loader_sigstruct()
    disk.open().install_policy(dynamic_policy(disk.owner, version=2, allow=[loader_rule(sig)]))
    loader = start_loader(disk.open(), sig)
    loader.place()
    loader.attested_grant()
    code_hash = hashlib.sha256(CODE).hexdigest()

    text = run("log", "show", "--home", disk.home, "--machine", disk.machine)
    assert text.exit_code == 0, text.output
    line = next(x for x in text.stdout.splitlines() if "attested-code grant" in x)
    assert "granted" in line and code_hash in line and "(rule loader)" in line

    shown = run("log", "show", "--home", disk.home, "--machine", disk.machine, "--json")
    document = json.loads(shown.stdout)
    schema = json.loads(resources.files("sgxlaunch.cli").joinpath(SCHEMA_FILE).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    assert not list(validator.iter_errors(document))
    records = document["result"]["records"]
    grant = [r for r in records if r.get("kind") == "grant"]
    assert len(grant) == 1 and grant[0]["code_hash"] == code_hash
    assert grant[0]["verdict"] == "granted"
