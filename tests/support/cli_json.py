"""Reading the CLI's one JSON contract in tests (see docs/json.md)."""

from __future__ import annotations

import json
from typing import Any, Protocol


class _Result(Protocol):
    @property
    def stdout(self) -> str: ...

    @property
    def exit_code(self) -> int: ...


def document_of(result: _Result) -> dict[str, Any]:
    """The one JSON object a ``--json`` command printed, with the envelope's invariants checked."""
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    assert document["schema"] == "sgxlaunch/1"
    assert document["ok"] is (result.exit_code == 0)
    if not document["ok"]:
        assert document["error"]["exit_code"] == result.exit_code
    return document


def result_of(result: _Result) -> Any:
    """The ``result`` of a ``--json`` command (success, or a failure that reports one)."""
    return document_of(result)["result"]
