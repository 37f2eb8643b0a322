"""The one JSON contract: every command with --json, on one success and one failure, prints
exactly one JSON object that the schema shipped in the package accepts (docs/json.md)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sgxlaunch.cli._output import SCHEMA, SCHEMA_FILE
from tests.support.json_cases import Case, json_commands, run_cases


def shipped_schema() -> dict[str, Any]:
    text = resources.files("sgxlaunch.cli").joinpath(SCHEMA_FILE).read_text()
    value = json.loads(text)
    assert isinstance(value, dict)
    return value


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    return list(run_cases(tmp_path_factory.mktemp("json")))


def test_the_schema_is_a_valid_json_schema() -> None:
    schema = shipped_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema"]["const"] == SCHEMA


def test_every_json_command_is_run_on_a_success_and_a_failure(cases: list[Case]) -> None:
    ran = {(c.command, c.ok) for c in cases}
    for command in json_commands():
        assert (command, True) in ran, f"{command}: no success case"
        assert (command, False) in ran, f"{command}: no failure case"


def test_every_output_is_one_object_the_schema_accepts(cases: list[Case]) -> None:
    validator = jsonschema.Draft202012Validator(shipped_schema())
    for case in cases:
        where = f"{' '.join(case.argv)}\nstdout: {case.stdout}\nstderr: {case.stderr}"
        document = case.document()  # json.loads of the whole stdout: exactly one object
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
        assert not errors, f"{where}\n{errors[0].message} at {list(errors[0].path)}"
        assert document["command"] == case.command, where
        assert document["ok"] is case.ok, where
        assert (case.exit_code == 0) is case.ok, where
        if not case.ok:
            assert document["error"]["exit_code"] == case.exit_code, where
            assert "sgxlaunch: " in case.stderr or "Error:" in case.stderr, where


def test_stderr_under_json_is_warnings_on_success_and_the_error_on_failure(
    cases: list[Case],
) -> None:
    """docs/json.md: status lines (``wrote FILE``, notes) are not printed under --json; a
    warning is; a failure prints its message, the JSON ``error.message``, as text too."""
    for case in cases:
        where = f"{' '.join(case.argv)}\nstderr: {case.stderr}"
        if case.ok:
            for line in case.stderr.splitlines():
                assert line.startswith("sgxlaunch: warning: "), where
        else:
            message = case.document()["error"]["message"]
            assert message.splitlines()[0] in case.stderr, where


def test_the_schema_rejects_what_the_contract_forbids(cases: list[Case]) -> None:
    validator = jsonschema.Draft202012Validator(shipped_schema())
    explain = next(c for c in cases if c.command == "policy explain" and not c.ok).document()
    bare_reasons = json.loads(json.dumps(explain))
    bare_reasons["result"]["reasons"] = ["policy: mrsigner: expected a, found b"]
    assert not validator.is_valid(bare_reasons)  # reasons are objects, never strings
    no_error = {k: v for k, v in explain.items() if k != "error"}
    assert not validator.is_valid(no_error)  # a failure always says what failed
    log = next(c for c in cases if c.command == "log show" and c.ok).document()
    assert not validator.is_valid(log | {"result": log["result"]["records"]})  # never a bare array


def test_reasons_have_one_shape_in_run_log_and_explain(cases: list[Case]) -> None:
    run = next(c for c in cases if c.command == "run" and not c.ok).document()["result"]
    explain = next(c for c in cases if c.command == "policy explain" and not c.ok).document()
    records = next(c for c in cases if c.command == "log show" and c.ok).document()
    logged = [r for r in records["result"]["records"] if r.get("reasons")]  # attempts
    shapes = {
        "run": run["reasons"][0],
        "explain": explain["result"]["reasons"][0],
        "log": logged[0]["reasons"][0],
    }
    for name, reason in shapes.items():
        assert set(reason) == {"rule", "field", "expected", "found"}, name
    assert run["reasons"] == logged[-1]["reasons"]  # the denial as run said it, as logged


def test_json_examples_in_docs_cover_every_command() -> None:
    text = (Path(__file__).parents[2] / "docs" / "json.md").read_text()
    for command in sorted(json_commands()):
        assert f"### `sgxlaunch {command}`" in text, command
